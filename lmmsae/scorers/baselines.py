"""Random baselines shared by scorers: draws of random dataset images and of other features' labels."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def image_draws(rng: np.random.Generator, population: int, draws: int, k: int,
                exclude: Sequence[int] = ()) -> list[list[int]]:
    """`draws` sets of `k` distinct dataset indices, avoiding `exclude` (the feature's own images)."""
    excluded = {int(i) for i in exclude}
    if population - len(excluded) < k:
        raise ValueError(f"the dataset has {population - len(excluded)} images besides the feature's own; "
                         f"a baseline draw needs {k}")
    out = []
    for _ in range(draws):
        chosen: list[int] = []
        while len(chosen) < k:
            i = int(rng.integers(population))
            if i not in excluded and i not in chosen:
                chosen.append(i)
        out.append(chosen)
    return out


def label_draws(rng: np.random.Generator, labels: dict[int, str], latent: int, draws: int) -> list[str]:
    """`draws` labels of other features (same explainer), uniformly with replacement."""
    others = [text for other, text in sorted(labels.items()) if other != latent and text]
    if not others:
        return []
    return [others[int(i)] for i in rng.integers(len(others), size=draws)]


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and (population) standard deviation, None for no values."""
    if len(values) == 0:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def over_draws(draws: Sequence, score: Callable[[object], float]) -> tuple[float | None, float | None, list[float]]:
    """Score every draw; (mean, std, per-draw values)."""
    values = [float(score(d)) for d in draws]
    mean, std = mean_std(values)
    return mean, std, values
