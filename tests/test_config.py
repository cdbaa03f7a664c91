"""Config layers: defaults < YAML file < flags < -o overrides, and the saved config reproduces the run."""

import pytest
import yaml

from lmmsae import config as cfg
from lmmsae.errors import UserError


def test_defaults_are_the_toy_world():
    c = cfg.resolve()
    assert (c.model.name, c.dataset.name, c.explainer.name) == ("toy-llava", "shapes", "toy-llava")
    assert [s.name for s in c.scorers] == ["clip", "iou"]
    assert c.hookpoints == ["layers.2"] and c.seed == 0


def test_precedence_file_then_flags_then_overrides():
    file = {"seed": 1, "sae": {"name": "topk", "k": 8, "n_latents": 512}, "train": {"lr": 1e-3}}
    c = cfg.resolve(file=file)
    assert c.seed == 1 and c.sae.options == {"k": 8, "n_latents": 512} and c.stages["train"] == {"lr": 1e-3}
    c = cfg.resolve(file=file, flags={"seed": 2})
    assert c.seed == 2 and c.sae.options["k"] == 8
    c = cfg.resolve(file=file, flags={"seed": 2}, overrides=[("seed", 3), ("sae.k", 16), ("train.lr", 5e-4)])
    assert c.seed == 3 and c.sae.options == {"k": 16, "n_latents": 512} and c.stages["train"]["lr"] == 5e-4


def test_changing_a_component_name_drops_the_old_components_options():
    file = {"sae": {"name": "topk", "k": 8}}
    c = cfg.resolve(file=file, flags={"sae": "relu"})
    assert c.sae.name == "relu" and c.sae.options == {}
    c = cfg.resolve(file=file, overrides=[("sae.name", "gated"), ("sae.l1", 0.1)])
    assert c.sae.name == "gated" and c.sae.options == {"l1": 0.1}


def test_list_sections_by_index():
    c = cfg.resolve(overrides=[("scorers.0.k", 3)])
    assert c.scorers[0].options == {"k": 3}
    with pytest.raises(UserError, match="'7' is not an index of a list of 2"):
        cfg.resolve(overrides=[("scorers.7.k", 3)])


def test_saved_config_round_trips(tmp_path):
    c = cfg.resolve(file={"sae": {"name": "topk", "k": 8}}, overrides=[("cache.n_top", 20)])
    cfg.save_yaml(c, tmp_path / "run.yaml")
    again = cfg.resolve(file=cfg.load_yaml(tmp_path / "run.yaml"))
    assert again == c


@pytest.mark.parametrize("override, message", [
    ("sea.k=3", "unknown config section 'sea' in override 'sea.k'. Did you mean 'sae'?"),
    ("seed", "override 'seed' must look like section.key=value"),
    ("dtype=float8", "dtype 'float8' is not supported."),
    ("seed=abc", "config.seed = 'abc' should be an integer"),
])
def test_bad_overrides(override, message):
    with pytest.raises(UserError) as err:
        cfg.resolve(overrides=[cfg.parse_override(override)])
    assert message in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cfg.load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        cfg.load_yaml(bad)
    bad.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserError, match="must hold a mapping"):
        cfg.load_yaml(bad)
