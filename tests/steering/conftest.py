"""A tiny random LLaVA (adapter) and a tiny random SAE at one of its layers, shared by the steering tests."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory):
    import torch

    from lmmsae import plugins
    from tiny import build_llava

    torch.set_num_threads(1)
    path = build_llava(tmp_path_factory.mktemp("llava") / "ckpt")
    comp = plugins.get("models", "llava")
    return comp.load()(comp.options({"checkpoint": str(path)}))


@pytest.fixture(scope="session")
def tiny_samples():
    from lmmsae.datasets.shapes import ShapesDataset

    ds = ShapesDataset(ShapesDataset.Options(n=8, image_size=32))
    return [ds.sample(i) for i in range(5)]
