"""Detection: a judge model says whether an explanation applies to held-out images (delphi's detection).

The judge is any backend (lmmsae.backends); each request asks for the first answer token's
log-probabilities. The answer is parsed as yes/no (balanced accuracy, F1), so a judge without
log-probabilities works; where the backend returns them (the local transformers backend, an
OpenAI-compatible server sending `logprobs`), P(yes) gives AUROC too, else `auroc` is null and
`auroc_reason` says why.

Images judged (unmasked, one per request, in a seeded shuffled order):
* positives: `n_positive` held-out activating examples (the ranks after the `skip_top` the explainer saw);
* negatives: `n_negatives` images where the latent never fires, from the cache: `negatives="random"`,
  or "similar" (closest to the shown examples by a CLIP image embedding, `embed_model`). Without cached
  negatives, random dataset images outside the feature's examples (not checked for activation;
  their kind is then "random-unchecked").

Score = balanced accuracy. Baseline = the same judge and images with labels of `baseline_draws`
random other features (balanced accuracy; chance is 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from lmmsae.records import Explanation, FeatureRecord
from lmmsae.scorers.base import Scorer, ScoringContext, example_image, label_of, skipped
from lmmsae.scorers.baselines import image_draws, label_draws, mean_std
from lmmsae.text import parse_yes_no, yes_probability

DEFAULT_PROMPT = ("Here is a description of a visual feature: \"{label}\". Does this image contain it? "
                  "Answer with one word: yes or no.")


def balanced_accuracy(truth: Sequence[bool], predicted: Sequence[bool]) -> float | None:
    """(TPR + TNR) / 2; None unless there are both positives and negatives."""
    y, p = np.asarray(truth, bool), np.asarray(predicted, bool)
    if y.all() or not y.any():
        return None
    return float(((p & y).sum() / y.sum() + (~p & ~y).sum() / (~y).sum()) / 2)


def f1(truth: Sequence[bool], predicted: Sequence[bool]) -> float:
    """2TP / (2TP + FP + FN); 0 when there is nothing to find and nothing found."""
    y, p = np.asarray(truth, bool), np.asarray(predicted, bool)
    tp, fp, fn = (p & y).sum(), (p & ~y).sum(), (~p & y).sum()
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0


def auroc(truth: Sequence[bool], scores: Sequence[float]) -> float | None:
    """P(score of a positive > score of a negative), ties counting half; None without both classes."""
    y, s = np.asarray(truth, bool), np.asarray(scores, np.float64)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


class DetectionScorer(Scorer):
    @dataclass
    class Options:
        judge: str = ""                  # backend asked; "" = the run's explainer's backend
        judge_options: dict = field(default_factory=dict)   # its options (over the explainer's, for "")
        n_positive: int = 5              # held-out activating images
        n_negatives: int = 5             # images where the latent never fires
        negatives: Literal["random", "similar"] = "random"
        skip_top: int = 5                # examples the explainer saw; never judged
        baseline_draws: int = 1          # random other labels judged on the same images
        prompt: str = DEFAULT_PROMPT
        embed_model: str = "toy"         # CLIP for negatives="similar" (see the clip scorer)
        embed_pretrained: str = ""

    @classmethod
    def preflight(cls, options, dataset=None) -> None:
        if options.judge:  # "" = the run's explainer's backend, checked with the explainer
            from lmmsae import plugins

            judge = plugins.get("backends", options.judge)
            judge.load().preflight(judge.options(options.judge_options))
        if options.negatives == "similar":
            from lmmsae.scorers.clip import check_clip_weights

            check_clip_weights(options.embed_model, options.embed_pretrained)

    def record_request(self) -> dict[str, Any]:
        o = self.options
        request = {"n": o.skip_top, "held_out": o.n_positive, "n_negatives": o.n_negatives,
                   "negatives": o.negatives, "render": None}
        if o.negatives == "similar":
            from lmmsae.scorers.clip import ClipEmbedder

            embedder = ClipEmbedder(o.embed_model, o.embed_pretrained)
            request["embed"] = embedder.images
        return request

    def score(self, record: FeatureRecord, explanation: Explanation, ctx: ScoringContext) -> dict[str, Any]:
        o = self.options
        label = label_of(explanation)
        if label is None:
            return skipped(f"explanation status {explanation.status!r}: {explanation.reason or 'no text'}")
        items = self._items(record, ctx)
        if not any(kind == "positive" for kind, _, _ in items):
            return skipped("no held-out activating examples: cache more examples than the explainer sees")
        judge = ctx.backend(o.judge, o.judge_options)
        result = self._judge_all(judge, label, items)
        labels = label_draws(ctx.rng(record.latent, "detection-labels"), ctx.labels, record.latent, o.baseline_draws)
        base = [self._judge_all(judge, other, items)["balanced_accuracy"] for other in labels]
        base_mean, base_std = mean_std([b for b in base if b is not None])
        return {
            "score": result.pop("balanced_accuracy"), **result,
            "n": len(items), "images": [sid for _, sid, _ in items], "kinds": [k for k, _, _ in items],
            "model": {"judge": judge.name, **o.judge_options},
            "baseline_mean": base_mean, "baseline_std": base_std,
            "baseline": {"kind": "random-labels", "draws": len(labels), "chance": 0.5,
                         "what": "balanced accuracy of the same judge on the same images with other features' labels"},
            "status": "ok",
        }

    def _items(self, record: FeatureRecord, ctx: ScoringContext) -> list[tuple[str, str, Any]]:
        """(kind, sample id, image) of positives, similar and random negatives, in a seeded order."""
        o = self.options
        positives = record.held_out or record.examples[o.skip_top:]
        items = [("positive", e.sample_id, example_image(e, ctx)) for e in positives[:o.n_positive]]
        items += [(o.negatives, e.sample_id, example_image(e, ctx)) for e in record.negatives[:o.n_negatives]]
        if not record.negatives and ctx.dataset is not None and o.n_negatives:
            used = [e.sample_index for e in (*record.examples, *record.held_out)]
            rng = ctx.rng(record.latent, "detection")
            for i in image_draws(rng, len(ctx.dataset), 1, o.n_negatives, exclude=used)[0]:
                sample = ctx.dataset.sample(i)
                items.append(("random-unchecked", sample.id, sample.image))
        order = ctx.rng(record.latent, "detection-order").permutation(len(items))
        return [items[i] for i in order]

    def _judge_all(self, judge, label: str, items) -> dict[str, Any]:
        """One request per image (answer and first-token log-probabilities); a failed request raises."""
        from lmmsae.backends.base import Query

        prompt = self.options.prompt.format(label=label)
        truth = [kind == "positive" for kind, _, _ in items]
        answers = judge.complete(Query([image], prompt, logprobs=True) for _, _, image in items)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        parsed = [parse_yes_no(a.text) for a in answers]
        predicted = [bool(p) for p in parsed]
        probs = [yes_probability(a.logprobs) for a in answers]
        missing = sum(p is None for p in probs)
        result = {
            "balanced_accuracy": balanced_accuracy(truth, predicted),
            "f1": f1(truth, predicted),
            "auroc": None if missing else auroc(truth, probs),
            "unparsed": sum(p is None for p in parsed),
            "answers": [a.text for a in answers],
            "p_yes": probs,
        }
        if missing:
            result["auroc_reason"] = (f"backend {judge.name!r} returns no log-probabilities"
                                      if not judge.offers_logprobs or all(a.logprobs is None for a in answers)
                                      else f"neither yes nor no among the top log-probabilities for {missing} "
                                           f"of {len(answers)} images")
        return result
