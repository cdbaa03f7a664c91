"""IoU between where a feature fires and where its explanation's label is, beside a random baseline.

Activation mask: the base view's activation map binarised (> threshold) and upsampled bilinearly
to the image size, kept where the upsampled value is >= 0.5 (the paper's rendering, as a mask).
Label region: the union of ground-truth object masks the label names (see lmmsae.scorers.truth)
when the dataset has them, else Grounding-DINO + SAM (lmmsae.scorers.segmenter). A label that
names nothing, or that the detector does not find, has IoU 0 (a detection failure, as the paper).

Random baselines (`baseline` option):
* "labels" (default): the feature's own activation masks against the regions named by labels of
  `baseline_draws` random *other* features of the same explainer (one label per draw, scored like
  the explanation). It asks: does this explanation find this feature's region better than some other
  feature's explanation would?
* "images": the same label's region in random dataset images against the feature's activation
  masks (image i's mask paired with the i-th random image), per draw. It asks: is the feature
  where the label is, rather than where such things usually are?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from lmmsae.errors import UserError
from lmmsae.records import Explanation, FeatureRecord
from lmmsae.scorers.base import Scorer, ScoringContext, example_image, example_truth, label_of, skipped
from lmmsae.scorers.baselines import image_draws, label_draws, over_draws
from lmmsae.scorers.truth import has_masks, truth_region


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two bool masks; 0 when both are empty (no evidence of agreement)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def activation_mask(activation_map: np.ndarray, size: tuple[int, int], threshold: float = 0.0,
                    box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Bool HxW mask (size = (width, height)) of where the latent is > threshold: the binary patch grid
    upsampled bilinearly as lmmsae.render draws it (grid over `box`, default the whole image), >= 0.5."""
    from lmmsae.render import active, upsample

    return upsample(active(activation_map, threshold).astype(np.float64), tuple(size), box) >= 0.5


class IoUScorer(Scorer):
    @dataclass
    class Options:
        k: int = 5                      # top images scored
        threshold: float = 0.0          # activation > threshold counts as active
        baseline: Literal["labels", "images"] = "labels"
        baseline_draws: int = 10        # the paper's 10 trials
        regions: Literal["auto", "truth", "segmenter"] = "auto"  # auto: ground truth when the images have masks
        detector: str = "IDEA-Research/grounding-dino-tiny"
        sam: str = "facebook/sam-vit-base"
        box_threshold: float = 0.3
        text_threshold: float = 0.25

    @classmethod
    def preflight(cls, options, dataset=None) -> None:
        masked = dataset is None or dataset.region_masks  # None: validation names the missing dataset
        if options.regions == "segmenter" or (options.regions == "auto" and not masked):
            from lmmsae.checkpoints import check_checkpoint

            check_checkpoint(options.detector, "scorers.N.detector")
            check_checkpoint(options.sam, "scorers.N.sam")

    def __init__(self, options: "IoUScorer.Options | None" = None):
        super().__init__(options)
        self._segmenter = None

    def score(self, record: FeatureRecord, explanation: Explanation, ctx: ScoringContext) -> dict[str, Any]:
        o = self.options
        label = label_of(explanation)
        examples = [e for e in record.examples[:o.k] if e.activation_map is not None]
        if label is None:
            return skipped(f"explanation status {explanation.status!r}: {explanation.reason or 'no text'}")
        if not examples:
            return skipped("the feature has no examples with activation maps")
        images = [example_image(e, ctx) for e in examples]
        truths = [example_truth(e, ctx) for e in examples]
        masks = [activation_mask(e.activation_map, im.size, o.threshold) for e, im in zip(examples, images)]
        use_truth = self._use_truth(truths)
        region = (lambda text, im, tr: self._truth_region(text, tr, im.size)) if use_truth else \
            (lambda text, im, tr: self._segment(ctx.device).region(im, text))
        per_image = [iou(m, r) if (r := region(label, im, tr)) is not None else 0.0
                     for m, im, tr in zip(masks, images, truths)]
        model = {"regions": "ground truth masks"} if use_truth else {"regions": "grounding-sam", **self._segment(ctx.device).identity}
        out: dict[str, Any] = {
            "score": float(np.mean(per_image)), "per_image": per_image, "n": len(examples),
            "images": [e.sample_id for e in examples], "model": model, "status": "ok",
            "active_fraction": float(np.mean([m.mean() for m in masks])),
        }
        out.update(self._baseline(record, label, examples, images, truths, masks, ctx, region))
        return out

    def _use_truth(self, truths) -> bool:
        available = all(has_masks(t) for t in truths)
        if self.options.regions == "truth" and not available:
            raise UserError("iou scorer: regions=truth but the dataset has no ground-truth masks; use regions=auto")
        return available and self.options.regions != "segmenter"

    @staticmethod
    def _truth_region(label: str, truth: dict, size: tuple[int, int]) -> np.ndarray | None:
        region = truth_region(label, truth)
        if region is not None and region.shape != (size[1], size[0]):
            region = np.asarray(Image.fromarray(region).resize(size, Image.NEAREST), dtype=bool)
        return region

    def _segment(self, device: str):
        if self._segmenter is None:
            from lmmsae.scorers.segmenter import GroundingSam

            o = self.options
            self._segmenter = GroundingSam(o.detector, o.sam, o.box_threshold, o.text_threshold, device)
        return self._segmenter

    def _baseline(self, record, label, examples, images, truths, masks, ctx, region) -> dict[str, Any]:
        """The baseline over exactly the scored examples (`masks[i]` belongs to `examples[i]`, whose
        image and truth are `images[i]`, `truths[i]`)."""
        o = self.options
        rng = ctx.rng(record.latent, "iou")
        info = {"kind": f"random-{o.baseline}", "draws": o.baseline_draws}

        def mean_iou(text, images, truths):
            return np.mean([iou(m, r) if (r := region(text, im, tr)) is not None else 0.0
                            for m, im, tr in zip(masks, images, truths)])

        if o.baseline == "labels":
            labels = label_draws(rng, ctx.labels, record.latent, o.baseline_draws)
            mean, std, _ = over_draws(labels, lambda text: mean_iou(text, images, truths))
            info["what"] = "this feature's activation masks against the regions of other features' labels"
            info["draws"] = len(labels)
        else:
            if ctx.dataset is None:
                return {"baseline_mean": None, "baseline_std": None, "baseline": {**info, "draws": 0}}
            draws = image_draws(rng, len(ctx.dataset), o.baseline_draws, len(masks),
                                exclude=[e.sample_index for e in examples])

            def one(draw):
                samples = [ctx.dataset.sample(i) for i in draw]
                return mean_iou(label, [s.image for s in samples], [s.truth for s in samples])

            mean, std, _ = over_draws(draws, one)
            info["what"] = "the label's region in random dataset images against this feature's activation masks"
        return {"baseline_mean": mean, "baseline_std": std, "baseline": info}
