"""Every shipped example config resolves and validates: a user copying one must not hit a typo of ours."""

from pathlib import Path

import pytest

from lmmsae import config as cfg
from lmmsae.context import RunContext

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"paper-llava-next.yaml", "toy-quick.yaml", "compare-explainers.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path, external_plugins):  # the paper example reads images with imagefolder
    config = cfg.resolve(file=cfg.load_yaml(path))
    RunContext(config, run=None).validate()
    assert config.to_dict() == cfg.resolve(file=config.to_dict()).to_dict()  # run.yaml round-trips


def test_paper_example_is_the_papers_setting():
    config = cfg.resolve(file=cfg.load_yaml(Path(EXAMPLES[0]).with_name("paper-llava-next.yaml")))
    assert config.model.options["checkpoint"] == "llava-hf/llama3-llava-next-8b-hf"
    assert config.sae.options == {"n_latents": 131072, "k": 256, "init_b_dec": "geometric_median"}
    assert config.hookpoints == ["layers.24"]
