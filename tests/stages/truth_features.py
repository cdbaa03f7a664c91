"""A features.h5 of an oracle SAE on the toy world, written by the real cache writer: latent j fires on
the pixels of objects with attribute ATTRIBUTES[j], or ("background", name) on the object-free patches
of images with that background (each patch's value = the fraction of its pixels)."""

from __future__ import annotations

import numpy as np

ATTRIBUTES = [("color", "red"), ("shape", "circle"), ("color", "blue"), ("position", "top left")]
GRID = 8


def attribute_maps(sample, attributes=ATTRIBUTES) -> np.ndarray:
    """[GRID*GRID, latents] patch fractions of the matching objects' pixels."""
    h, w = sample.image.size[::-1]
    out = np.zeros((GRID * GRID, len(attributes)), np.float32)
    for j, (key, value) in enumerate(attributes):
        mask = np.zeros((h, w), bool)
        for obj in sample.truth["objects"]:
            if key == "background" or obj[key] == value:
                mask |= obj["mask"]
        if key == "background":  # ("background", name): every pixel off the objects, on that background
            mask = ~mask if sample.truth["background"] == value else np.zeros((h, w), bool)
        frac = mask.reshape(GRID, h // GRID, GRID, w // GRID).mean(axis=(1, 3)).ravel()
        out[:, j] = np.floor(frac) if key == "background" else frac  # background: whole free patches only
    return out


def write_truth_features(path, dataset, attributes=ATTRIBUTES, hookpoint="layers.2") -> None:
    import torch

    from lmmsae.cache.layout import MapLayout, ViewGeometry
    from lmmsae.cache.state import FeatureCache, ImageBatch, SampleInfo
    from lmmsae.stores.features import write_cache

    size = dataset.options.image_size
    layout = MapLayout(((GRID, GRID),))
    cache = FeatureCache(range(len(attributes)), n_top=12, n_random=4, n_negatives=8, layout=layout)
    samples, maps = [], []
    for i in range(len(dataset)):
        s = dataset.sample(i)
        samples.append(SampleInfo(i, s.id, i + 1, [ViewGeometry(GRID, GRID, (0.0, 0.0, float(size), float(size)))]))
        maps.append(attribute_maps(s, attributes))
    cache.add(ImageBatch(samples, torch.from_numpy(np.stack(maps)), layout))
    write_cache(cache, path, attrs={"hookpoint": hookpoint})


RIGHT = ["red", "circles", "blue", "top left"]
WRONG = ["green", "square", "yellow", "bottom right"]
DATASET = {"name": "shapes", "n": 160, "image_size": 48, "seed": 3}


def make_run(root, scorers, explainers=("right", "wrong")):
    """A RunContext whose run holds the oracle features.h5 and explanations "right" (the true attribute)
    and "wrong" (another attribute of the same kind), plus one failed explanation each."""
    from lmmsae import artifacts
    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.explainers.store import ExplanationWriter
    from lmmsae.records import Explanation
    from lmmsae.rundir import RunDir

    config = resolve(overrides=[("dataset", dict(DATASET)), ("scorers", scorers),
                                ("score.explainers", list(explainers))])
    run = RunDir.create(root / "runs", "r")
    options = {k: v for k, v in DATASET.items() if k != "name"}
    write_truth_features(run.file(artifacts.FEATURES), ShapesDataset(ShapesDataset.Options(**options)))
    for explainer, labels in (("right", RIGHT), ("wrong", WRONG)):
        with ExplanationWriter(run.file(f"{artifacts.EXPLANATIONS_DIR}/{explainer}.jsonl")) as w:
            for latent, label in enumerate(labels):
                w.write(Explanation(latent, "layers.2", explainer, text=f"The regions are {label}.", label=label))
            w.write(Explanation(len(labels), "layers.2", explainer, text=None, status="failed", reason="no answer"))
    ctx = RunContext(config, run)
    ctx.adopt(artifacts.FEATURES)
    return ctx
