"""Shared fixtures for scorer tests: a tiny random open_clip model loaded through the real file path,
toy-world samples turned into feature records from their ground-truth masks."""

from __future__ import annotations

import pytest

from scorer_helpers import make_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(model name, weights file) of a random tiny open_clip model, saved and loaded like real weights."""
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def shapes():
    from lmmsae.datasets.shapes import ShapesDataset

    return ShapesDataset(ShapesDataset.Options(n=300, image_size=48, seed=3))
