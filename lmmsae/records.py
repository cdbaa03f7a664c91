"""Records that flow between stages in memory: a feature with its examples, and an explanation.

Light on purpose (numpy and PIL objects only), so explainers and scorers can be written and tested
without a model. The on-disk forms are in docs/artifacts.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FeatureExample:
    """One image where a latent fires (or a negative where it does not).

    `activation_map` is the latent's activation over the base view's patch grid (rows x cols);
    `views` holds every view's map when the model has tiles; `rendered` is what an explainer sees.
    """

    sample_index: int
    sample_id: str
    activation: float
    image: Any = None                      # PIL.Image, the original unmasked image
    activation_map: Any = None             # numpy [rows, cols], base view
    views: dict[str, Any] = field(default_factory=dict)
    rendered: Any = None                   # PIL.Image, e.g. the masked view
    truth: dict[str, Any] | None = None    # dataset ground truth when known


@dataclass
class FeatureRecord:
    """A latent with its chosen examples, negatives and statistics, as explainers and scorers get it."""

    latent: int
    hookpoint: str
    examples: list[FeatureExample]
    negatives: list[FeatureExample] = field(default_factory=list)
    held_out: list[FeatureExample] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Explanation:
    """An explainer's answer for one latent; `status` is "ok" or "failed" (with `reason`), never silent."""

    latent: int
    hookpoint: str
    explainer: str
    text: str | None
    status: str = "ok"
    reason: str | None = None
    label: str | None = None              # refined short noun phrase, when a refiner ran
    meta: dict[str, Any] = field(default_factory=dict)
