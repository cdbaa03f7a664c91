"""Feature records drawn with PIL, for explainer tests and benchmarks/bench_explain.py."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fake_lmm_server import COLOURS
from lmmsae.records import FeatureExample, FeatureRecord


def shape_image(colour: str, seed: int, size: int = 48) -> Image.Image:
    """A coloured disc on a grey background, at a seeded position."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), (120, 120, 120))
    cx, cy = rng.integers(12, size - 12, 2)
    ImageDraw.Draw(image).ellipse([cx - 9, cy - 9, cx + 9, cy + 9], fill=COLOURS[colour])
    return image


def make_record(latent: int, colour: str, n: int = 5, hookpoint: str = "layers.2") -> FeatureRecord:
    examples = []
    for i in range(n):
        image = shape_image(colour, seed=latent * 100 + i)
        amap = np.zeros((6, 6), np.float32)
        amap[1:5, 1:5] = 1.0 + i
        examples.append(FeatureExample(sample_index=latent * 100 + i, sample_id=f"s{latent}-{i}",
                                       activation=float(5 - i), image=image, activation_map=amap, rendered=image))
    return FeatureRecord(latent=latent, hookpoint=hookpoint, examples=examples)


def make_records(colours: list[str], start: int = 0) -> list[FeatureRecord]:
    return [make_record(start + i, c) for i, c in enumerate(colours)]
