"""Object hallucination: POPE-style yes/no probes and a CHAIR-style caption rate, with and without
steering or ablating features.

POPE (Li et al. 2023) asks "is there a <object> in the image?" for objects that are and are not
present; the hallucination rate is the share of "yes" for absent objects. CHAIR (Rohrbach et al.
2018) counts objects a caption mentions that the image does not hold: CHAIR_i per mention, CHAIR_s
per caption. Real models read a user's POPE-format JSONL file (`read_pope`); on the toy world the
ground truth writes the questions (`toy_questions`) and captions parse exactly (`toy_mentions`).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from lmmsae.errors import UserError
from lmmsae.text import parse_yes_no, words


@dataclass
class Question:
    """One yes/no probe about one image. `image` is a PIL image or a path; `label` is 'yes' or 'no'."""

    question_id: str
    image: Any
    text: str
    label: str
    object: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def read_pope(path: str | Path, image_root: str | Path | None = None) -> list[Question]:
    """Questions from a POPE-format file: one JSON object per line with question_id, image, text and
    label ('yes'/'no'; 'answer' is accepted too). Images are paths relative to `image_root`
    (default: the file's folder); they are opened lazily by `load_image`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"POPE file {str(path)!r} does not exist")
    root = Path(image_root) if image_root is not None else path.parent
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{n} is not valid JSON ({exc.msg}): POPE files hold one JSON object per line") from None
        missing = [k for k in ("image", "text") if k not in row]
        label = str(row.get("label", row.get("answer", ""))).strip().lower()
        if missing or label not in ("yes", "no"):
            what = f"missing {', '.join(missing)}" if missing else f"label {label!r} is not yes/no"
            raise UserError(f"{path}:{n}: {what}; POPE lines look like "
                            '{"question_id": 1, "image": "x.jpg", "text": "Is there a dog in the image?", "label": "yes"}')
        out.append(Question(str(row.get("question_id", n)), root / row["image"], row["text"], label,
                            row.get("object"), {k: v for k, v in row.items()
                                                if k not in ("question_id", "image", "text", "label", "answer")}))
    return out


def load_image(image: Any):
    """A PIL image from a PIL image or a path (RGB)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        p = Path(image)
        if not p.is_file():
            raise UserError(f"image {str(p)!r} of the POPE file does not exist: pass the right --image-root")
        return Image.open(p).convert("RGB")
    return image


def pope_metrics(answers: Sequence[str | None], labels: Sequence[str]) -> dict[str, float]:
    """POPE's numbers; an answer without yes/no counts as 'no' (as in POPE's own scoring) and is counted.

    hallucination_rate = share of 'yes' among questions whose label is 'no' (the false positive rate).
    """
    pred = [{True: "yes", False: "no", None: None}[parse_yes_no(a)] for a in answers]
    unparsed = sum(p is None for p in pred)
    pred = [p or "no" for p in pred]
    tp = sum(p == "yes" and l == "yes" for p, l in zip(pred, labels))
    fp = sum(p == "yes" and l == "no" for p, l in zip(pred, labels))
    tn = sum(p == "no" and l == "no" for p, l in zip(pred, labels))
    fn = sum(p == "no" and l == "yes" for p, l in zip(pred, labels))
    n = len(labels)

    def div(a, b):
        return a / b if b else math.nan

    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    return {
        "n": n,
        "accuracy": div(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": div(2 * precision * recall, precision + recall) if tp else 0.0,
        "yes_ratio": div(tp + fp, n),
        "hallucination_rate": div(fp, fp + tn),
        "unparsed": unparsed,
    }


# ----------------------------------------------------------------------------- toy world


def toy_objects(truth: dict[str, Any]) -> set[tuple[str, str]]:
    """The (colour, shape) pairs an image of the toy world holds."""
    return {(o["color"], o["shape"]) for o in truth["objects"]}


STRATEGIES = ("random", "popular", "adversarial")


def toy_questions(samples: Iterable, n_per_image: int = 3, strategy: str = "random",
                  seed: int = 0) -> list[Question]:
    """POPE's balanced probes from ground truth: per image up to `n_per_image` (colour, shape) pairs it
    holds ('yes') and as many it does not hold ('no'), the negatives chosen as in POPE's three splits:

    * random: absent pairs drawn uniformly (`lmmsae.datasets.shapes.probe`, as training draws them);
    * popular: the absent pairs most frequent over these images;
    * adversarial: the absent pairs most often seen together with the image's own pairs. Toy objects
      are drawn independently, so co-occurrence alone is nearly flat; the confusable pairs are those
      sharing a colour or a shape with a present object (a red square beside a red circle), so those
      come first, ranked by co-occurrence.
    Ties in a ranking are broken at random (seeded)."""
    from collections import Counter

    from lmmsae.datasets.shapes import PAIRS, probe, question_for

    if strategy not in STRATEGIES:
        raise UserError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    samples = list(samples)
    rng = random.Random(seed)
    held = [sorted(toy_objects(s.truth)) for s in samples]
    frequency = Counter(p for pairs in held for p in pairs)
    together = Counter((a, b) for pairs in held for a in pairs for b in pairs if a != b)
    out = []
    for sample, present in zip(samples, held):
        pos = rng.sample(present, min(n_per_image, len(present)))
        absent = [p for p in PAIRS if p not in present]
        tie = {p: rng.random() for p in absent}
        if strategy == "random":
            neg = []
            while len(neg) < len(pos):
                pair = probe(sample.truth, rng, present=False)[:2]
                if pair not in neg:
                    neg.append(pair)
        elif strategy == "popular":
            neg = sorted(absent, key=lambda p: (-frequency[p], tie[p]))[:len(pos)]
        else:
            def near(p):
                return any(p[0] == c or p[1] == sh for c, sh in present)

            neg = sorted(absent, key=lambda p: (not near(p), -sum(together[(q, p)] for q in present), tie[p]))[:len(pos)]
        for label, pairs in (("yes", pos), ("no", neg)):
            for color, shape in pairs:
                out.append(Question(f"{sample.id}:{color}-{shape}", sample.image, question_for(color, shape),
                                    label, f"{color} {shape}", {"sample_id": sample.id, "split": strategy}))
    return out


def toy_mentions(caption: str) -> list[tuple[str, str]]:
    """(colour, shape) pairs a toy caption mentions: each shape word with the colour word before it.
    Works on captions outside the grammar too (e.g. steered ones)."""
    from lmmsae.datasets.shapes import COLORS, SHAPES

    w = words(caption)
    out = []
    for i, word in enumerate(w):
        if word in SHAPES:
            color = w[i - 1] if i > 0 and w[i - 1] in COLORS else None
            out.append((color, word))
    return out


def chair(mentions: Sequence[Sequence[Any]], present: Sequence[Iterable[Any]],
          match: Callable[[Any, set], bool] | None = None) -> dict[str, float]:
    """CHAIR: CHAIR_i = hallucinated mentions / mentions, CHAIR_s = captions with one / captions.

    mentions[i]: objects caption i names; present[i]: objects image i holds. `match(mention, present)`
    decides whether a mention is real (default: membership)."""
    match = match or (lambda m, objs: m in objs)
    n_mentions = n_halluc = n_caps_halluc = 0
    for ms, objs in zip(mentions, present):
        objs = set(objs)
        bad = [m for m in ms if not match(m, objs)]
        n_mentions += len(ms)
        n_halluc += len(bad)
        n_caps_halluc += bool(bad)
    return {
        "n_captions": len(mentions),
        "n_mentions": n_mentions,
        "chair_i": n_halluc / n_mentions if n_mentions else math.nan,
        "chair_s": n_caps_halluc / len(mentions) if mentions else math.nan,
    }


def toy_match(mention: tuple[str | None, str], objs: set[tuple[str, str]]) -> bool:
    """A toy mention is real when an object of that shape (and colour, when one is named) is present."""
    color, shape = mention
    return any(s == shape and (color is None or c == color) for c, s in objs)


def toy_chair(captions: Sequence[str], truths: Sequence[dict[str, Any]]) -> dict[str, float]:
    """CHAIR on toy captions against the ground-truth objects."""
    return chair([toy_mentions(c) for c in captions], [toy_objects(t) for t in truths], toy_match)


# ----------------------------------------------------------------------------- with a model


def answer_questions(adapter, questions: Sequence[Question], template: str = "<image> {question}",
                     batch_size: int = 8, max_new_tokens: int = 3, steer=None) -> list[str]:
    """The model's answers to the probes, optionally under a steering edit (`steer`: a
    lmmsae.steering.sweep.SteerSpec, or None for the plain model)."""
    from lmmsae.datasets.base import Sample
    from lmmsae.steering.sweep import generate

    samples = [Sample(q.question_id, load_image(q.image), template.format(question=q.text)) for q in questions]
    return generate(adapter, samples, None, steer=steer, batch_size=batch_size, max_new_tokens=max_new_tokens)


def pope_eval(adapter, questions: Sequence[Question], steers: dict[str, Any] | None = None,
              template: str = "<image> {question}", batch_size: int = 8, max_new_tokens: int = 3) -> dict[str, Any]:
    """POPE metrics for the plain model ('baseline') and for each named steering/ablation in `steers`."""
    labels = [q.label for q in questions]
    out = {}
    for name, steer in {"baseline": None, **(steers or {})}.items():
        answers = answer_questions(adapter, questions, template, batch_size, max_new_tokens, steer)
        out[name] = pope_metrics(answers, labels)
    return out


def variants(hookpoint: str | None, sae, ablate: Sequence[int] = (), features: Sequence[int] = (),
             strength: float = 10.0, mode: str = "clamp") -> dict[str, Any]:
    """Named interventions to compare with the plain model: 'ablate' and/or 'steer'."""
    from lmmsae.steering.steer import Steering, ablation
    from lmmsae.steering.sweep import SteerSpec

    out: dict[str, Any] = {}
    if ablate:
        out["ablate"] = SteerSpec(hookpoint, sae, ablation(list(ablate)))
    if features:
        out["steer"] = SteerSpec(hookpoint, sae, Steering(list(features), [strength], mode))
    return out


def run_checks(adapter, hookpoint: str | None, sae, dataset=None, pope_file: str | None = None,
               image_root: str | None = None, template: str = "<image> {question}", n_images: int = 50,
               strategy: str = "random", ablate: Sequence[int] = (), features: Sequence[int] = (),
               strength: float = 10.0, mode: str = "clamp", caption_prompt: str | None = None,
               batch_size: int = 8, seed: int = 0) -> dict[str, Any]:
    """POPE (from a file, or the toy world's ground truth) and, on the toy world, CHAIR; for the plain
    model and each intervention."""
    from lmmsae.steering.sweep import generate

    steers = variants(hookpoint, sae, ablate, features, strength, mode)
    samples = [] if dataset is None else [dataset.sample(i) for i in range(min(n_images, len(dataset)))]
    if pope_file:
        questions = read_pope(pope_file, image_root)
    else:
        if not samples or not _toy(samples[0]):
            raise UserError("no --pope file given and the dataset has no object ground truth to ask about: "
                            "pass a POPE-format file with --pope")
        questions = toy_questions(samples, strategy=strategy, seed=seed)
    out: dict[str, Any] = {
        "settings": {"ablate": list(ablate), "features": list(features), "strength": strength, "mode": mode,
                     "template": template, "hookpoint": hookpoint, "pope_file": pope_file, "strategy": strategy},
        "n_questions": len(questions),
        "pope": pope_eval(adapter, questions, steers, template, batch_size),
    }
    if samples and _toy(samples[0]):
        truths = [s.truth for s in samples]
        out["chair"] = {name: toy_chair(generate(adapter, samples, caption_prompt, steer, batch_size), truths)
                        for name, steer in {"baseline": None, **steers}.items()}
    return out


def _toy(sample) -> bool:
    objs = (sample.truth or {}).get("objects")
    return bool(objs) and all("color" in o and "shape" in o for o in objs)
