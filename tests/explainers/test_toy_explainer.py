"""The shipped toy LLaVA as the explainer: it names the colour / shape of oracle features.

Oracle features (tests/stages/truth_features.py): latent j fires exactly on the pixels of objects with
attribute j (or on the background of images with background j). Their top-5 masked views go through the `toy-llava` explainer (per-image descriptions,
then the words shared by >= 80% of them). The toy weights ship with the package: missing, the test fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.usefixtures("toy_weights")  # core data: fail, never skip, without it

sys.path.insert(0, str(Path(__file__).parents[1] / "stages"))


def test_toy_llava_names_the_attribute_of_oracle_features(tmp_path):
    import torch

    from lmmsae import plugins
    from lmmsae.datasets.shapes import BACKGROUND_ADJECTIVES, BACKGROUNDS, COLORS, SHAPES, ShapesDataset
    from lmmsae.stores.features import FeatureStore
    from truth_features import write_truth_features

    torch.set_num_threads(1)
    attributes = ([("color", c) for c in COLORS] + [("shape", s) for s in SHAPES]
                  + [("background", b) for b in BACKGROUNDS])
    dataset = ShapesDataset(ShapesDataset.Options(n=240, seed=5, split="test"))
    write_truth_features(tmp_path / "features.h5", dataset, attributes)
    component = plugins.get("explainers", "toy-llava")
    explainer = component.load()(component.options(), name="toy-llava")
    with FeatureStore(tmp_path / "features.h5") as store:
        records = [store.record(j, n=5, dataset=dataset, render="mask") for j in range(len(attributes))]
    out = {e.latent: e for e in explainer.explain(records)}
    word = lambda key, value: BACKGROUND_ADJECTIVES[value] if key == "background" else value  # noqa: E731
    hits = {j: out[j].status == "ok" and word(*attributes[j]) in out[j].text.split() for j in out}
    share = {kind: sum(hits[j] for j, (key, _) in enumerate(attributes) if key == kind)
             / sum(key == kind for key, _ in attributes) for kind in ("color", "shape", "background")}
    report = {attributes[j][1]: out[j].text if out[j].status == "ok" else f"FAILED {out[j].reason}" for j in out}
    print(f"toy-llava named the colour of {share['color']:.0%}, the shape of {share['shape']:.0%} and the "
          f"background of {share['background']:.0%} of oracle features: {report}")
    assert share["color"] >= 6 / 7 and share["shape"] >= 3 / 5 and share["background"] >= 5 / 6, report
