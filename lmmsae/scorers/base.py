"""The scorer interface: (feature record, explanation) -> one score record with its random baseline.

A score record is a JSON-ready dict. Every scorer fills at least::

    score          the explanation's score (None when it could not be scored, see status)
    baseline_mean  the same scorer's random baseline (how it is drawn: `baseline`)
    baseline_std
    baseline       {"kind": ..., "draws": ..., ...}: exactly what the baseline compares against
    n              number of images scored
    images         sample ids of the scored images
    model          the model that scored (name, weights), or the ground truth used
    status         "ok" or "skipped" (with `reason`)

The score stage adds latent, hookpoint, explainer, scorer, label and the scorer's options.
Implementations may import torch at module level; this module does not.
"""

from __future__ import annotations

import dataclasses
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmmsae.errors import UserError
from lmmsae.records import Explanation, FeatureExample, FeatureRecord


@dataclass
class ScoringContext:
    """What scorers share beyond one feature: the dataset (random baselines, negatives), a seed, the
    device, every explained label (random-label baselines), the default judge, and the run's response
    cache, through which every judge's and labeller's answer goes (a rerun pays nothing again)."""

    dataset: Any = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    labels: dict[int, str] = field(default_factory=dict)   # latent -> label of the same explainer
    judge: Any = None          # default judge: the run's explainer (a ComponentConfig: its backend is asked) or a Backend
    cache: Any = None          # a ResponseCache (explanations/responses.sqlite), or None
    _backends: dict[str, Any] = field(default_factory=dict, repr=False)

    def rng(self, latent: int, salt: str) -> np.random.Generator:
        """A generator fixed by (seed, latent, salt): baselines are reproducible and independent per scorer."""
        return np.random.default_rng([int(self.seed), int(latent), zlib.crc32(salt.encode())])

    def image(self, index: int):
        """The dataset image at `index` (PIL)."""
        return self.dataset.sample(int(index)).image

    def backend(self, name: str = "", options: dict[str, Any] | None = None):
        """A judge or labeller: the backend `name`, or ("") the default judge with `options` over its
        own; built once per name and options, with the run's response cache."""
        import json

        from lmmsae import backends

        if not name:
            if self.judge is None:
                raise UserError("no judge to ask: name a backend, e.g. -o scorers.N.judge=anthropic")
            if hasattr(self.judge, "complete"):
                return self.judge  # a Backend given directly
        key = f"{name}:{json.dumps(options or {}, sort_keys=True, default=str)}"
        if key not in self._backends:
            if name:
                self._backends[key] = backends.build(name, options, cache=self.cache)
            else:
                self._backends[key] = backends.of_explainer(self.judge.name, self.judge.options, cache=self.cache,
                                                            **(options or {}))
        return self._backends[key]


class Scorer(ABC):
    """Scores one explanation of one feature. Subclasses define `Options` and `score`."""

    @dataclass
    class Options:
        pass

    def __init__(self, options: "Scorer.Options | None" = None):
        self.options = options if options is not None else self.Options()

    @classmethod
    def preflight(cls, options, dataset=None) -> None:
        """Cheap checks, before any stage starts, of what this component will need (an API key, a
        checkpoint, a folder): raise UserError saying what is missing. No model loads here.
        `dataset` is the run's Dataset class (None when the run names none yet), for needs that depend
        on the images, such as a segmenter only for images without masks (`Dataset.region_masks`)."""

    @abstractmethod
    def score(self, record: FeatureRecord, explanation: Explanation, ctx: ScoringContext) -> dict[str, Any]:
        """The score record (see module docstring)."""

    def record_request(self) -> dict[str, Any]:
        """Keyword arguments for `FeatureStore.record`: which examples this scorer needs per feature."""
        return {"n": int(getattr(self.options, "k", 5)), "render": None}

    def identity(self) -> dict[str, Any]:
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}", **dataclasses.asdict(self.options)}


def label_of(explanation: Explanation) -> str | None:
    """What gets scored: the refined label when a refiner ran, else the explanation text."""
    if explanation.status != "ok":
        return None
    text = (explanation.label or explanation.text or "").strip()
    return text or None


def skipped(reason: str, **extra: Any) -> dict[str, Any]:
    """A record for an explanation that could not be scored; it is kept, never dropped silently."""
    return {"score": None, "baseline_mean": None, "baseline_std": None, "n": 0, "images": [],
            "status": "skipped", "reason": reason, **extra}


def example_image(example: FeatureExample, ctx: ScoringContext):
    """The unmasked image of an example, loaded from the dataset when the record carries none."""
    if example.image is not None:
        return example.image
    if ctx.dataset is None:
        raise ValueError(f"example {example.sample_id!r} has no image and no dataset was given")
    return ctx.image(example.sample_index)


def example_truth(example: FeatureExample, ctx: ScoringContext) -> dict[str, Any] | None:
    if example.truth is not None:
        return example.truth
    if ctx.dataset is None:
        return None
    return ctx.dataset.sample(int(example.sample_index)).truth
