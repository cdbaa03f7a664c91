"""Measure the shipped toy models on held-out images (split "test"), through their public loading paths.

    python -m lmmsae.toyworld.evaluate [--images 1000] [--out eval.json]

Captioning: per-attribute accuracy (colour, size, position, shape) over ground-truth objects, object
count accuracy, exact caption match by number of objects. Masked views (one object kept, the rest
dimmed to 12%): highlighted object described exactly, non-highlighted objects mentioned; for pixel
masks and for masks grown to whole patches. Background-only views: the background named exactly ("a
striped background"), an object described. Yes/no probes, whole-image ("is there a red circle ?") and
positional ("is there a red circle at the top left ?"), accuracy on present and on absent objects.
CLIP: image-to-caption (and caption-to-image) top-1 retrieval among groups of 64.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import numpy as np

from lmmsae.datasets.shapes import (ShapesDataset, background_view, describe_background, describe_object, object_view,
                                    parse_background, parse_caption, probe, question_for)
from lmmsae.toyworld import (CLIP_DIR, IMAGE_SIZE, LLAVA_DIR, PATCH_SIZE, QUESTION_TEMPLATE, caption, load_clip,
                             load_llava)

ATTRS = ("color", "size", "position", "shape")


def _batched(items, n):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _generate(model, processor, images, prompt="<image>", batch=64, max_new_tokens=40):
    out = []
    for chunk in _batched(images, batch):
        out.extend(caption(model, processor, chunk, max_new_tokens=max_new_tokens, prompt=prompt))
    return out


def _align(pred, truth):
    """Pair each truth object with a predicted one: by index when the counts agree, else by position."""
    if pred is None:
        return [None] * len(truth)
    if len(pred) == len(truth):
        return list(pred)
    by_pos = {p["position"]: p for p in pred}
    return [by_pos.get(t["position"]) for t in truth]


def caption_metrics(texts, samples):
    hits = {a: [] for a in ATTRS}
    shape_by_size = {"small": [], "large": []}
    exact_by_n, count_ok, parse_fail, background = {}, [], 0, []
    for text, s in zip(texts, samples):
        truth = s.truth["objects"]
        background.append(parse_background(text) == s.truth["background"])
        pred = parse_caption(text)
        parse_fail += pred is None
        count_ok.append(pred is not None and len(pred) == len(truth))
        exact_by_n.setdefault(len(truth), []).append(text == s.truth["caption"])
        for t, p in zip(truth, _align(pred, truth)):
            for a in ATTRS:
                hits[a].append(p is not None and p[a] == t[a])
            shape_by_size[t["size"]].append(p is not None and p["shape"] == t["shape"])
    all_exact = [x for v in exact_by_n.values() for x in v]
    return {
        "images": len(samples),
        "attribute_accuracy": {a: round(float(np.mean(v)), 4) for a, v in hits.items()},
        "background_accuracy": round(float(np.mean(background)), 4),
        "shape_accuracy_by_size": {k: round(float(np.mean(v)), 4) for k, v in shape_by_size.items() if v},
        "object_count_accuracy": round(float(np.mean(count_ok)), 4),
        "exact_caption": round(float(np.mean(all_exact)), 4),
        "exact_caption_by_objects": {str(k): round(float(np.mean(v)), 4) for k, v in sorted(exact_by_n.items())},
        "unparseable": parse_fail,
    }


def masked_metrics(texts, samples, ks):
    exact, other, multi = [], [], []
    for text, s, k in zip(texts, samples, ks):
        objs = s.truth["objects"]
        target = objs[k]
        exact.append(text == describe_object(target))
        pred = parse_caption(text) or []
        multi.append(len(pred) > 1)
        others = [o for j, o in enumerate(objs) if j != k]
        mentioned = False
        for p in pred:
            for o in others:
                if p["position"] == o["position"] and p["position"] != target["position"]:
                    mentioned = True
                if (p["color"], p["shape"]) == (o["color"], o["shape"]) != (target["color"], target["shape"]):
                    mentioned = True
        other.append(mentioned)
    multi_object = [s for s in samples if len(s.truth["objects"]) > 1]
    return {
        "views": len(samples),
        "views_with_other_objects": len(multi_object),
        "highlighted_exact": round(float(np.mean(exact)), 4),
        "other_object_mentioned": round(float(np.mean(other)), 4),
        "more_than_one_object_described": round(float(np.mean(multi)), 4),
    }


def answer_probes(model, processor, images, questions, batch=64, max_new_tokens=3,
                  template: str = QUESTION_TEMPLATE) -> list[str]:
    """The toy LLaVA's replies to yes/no probes (QUESTION_TEMPLATE), batching images that share a question."""
    by_question: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_question.setdefault(q, []).append(i)
    replies: list[str] = [""] * len(questions)
    for q, idx in by_question.items():
        for chunk in _batched(idx, batch):
            out = caption(model, processor, [images[i] for i in chunk], max_new_tokens=max_new_tokens,
                          prompt=template.format(question=q))
            for i, r in zip(chunk, out):
                replies[i] = r
    return replies


def probe_batch(samples, rng=None, positional=False):
    """(images, questions, present): one present and one absent probe per sample, drawn by
    `lmmsae.datasets.shapes.probe` with `rng` (default `random.Random(0)`)."""
    rng = rng or random.Random(0)
    questions, labels, images = [], [], []
    for s in samples:
        for present in (True, False):
            questions.append(question_for(*probe(s.truth, rng, present, positional)))
            labels.append(present)
            images.append(s.image)
    return images, questions, labels


def yes_no_metrics(model, processor, samples, seed=0, template: str = QUESTION_TEMPLATE) -> dict:
    """Accuracy on present and on absent objects, for whole-image probes ('is there a red circle ?', one
    present and one absent per image, drawn by `lmmsae.datasets.shapes.probe`) and for probes at a grid
    position ('... at the top left ?'), asked as `template`."""
    from lmmsae.text import parse_yes_no

    out = {}
    for kind, positional in (("whole_image", False), ("positional", True)):
        images, questions, labels = probe_batch(samples, random.Random(seed), positional)
        replies = answer_probes(model, processor, images, questions, template=template)
        out[kind] = yes_no_scores([parse_yes_no(r) for r in replies], labels)
    return out


def yes_no_scores(said: list[bool | None], present: list[bool]) -> dict:
    """Accuracy overall, on present and on absent objects, from parsed verdicts (None: neither yes nor no,
    wrong on both sides)."""
    return {
        "questions": len(said),
        "accuracy": round(float(np.mean([a is t for a, t in zip(said, present)])), 4),
        "accuracy_present": round(float(np.mean([a is True for a, t in zip(said, present) if t])), 4),
        "accuracy_absent": round(float(np.mean([a is False for a, t in zip(said, present) if not t])), 4),
        "yes_rate": round(float(np.mean([a is True for a in said])), 4),
        "other_replies": int(sum(a is None for a in said)),
    }


def evaluate_llava(llava_dir, n_images=1000, seed=0, log=print, question_template: str = QUESTION_TEMPLATE):
    t0 = time.time()
    model, processor = load_llava(llava_dir)
    data = ShapesDataset(ShapesDataset.Options(n=n_images, seed=seed, split="test", image_size=IMAGE_SIZE))
    samples = [data.sample(i) for i in range(n_images)]
    texts = _generate(model, processor, [s.image for s in samples])
    results = {"captioning": caption_metrics(texts, samples)}
    results["captioning"]["examples"] = [{"truth": s.truth["caption"], "output": t}
                                         for s, t in list(zip(samples, texts))[:5]]
    log(f"captioning: {json.dumps({k: v for k, v in results['captioning'].items() if k != 'examples'})}")

    ks = [i % len(s.truth["objects"]) for i, s in enumerate(samples)]
    for name, patch in (("masked_pixels", None), ("masked_patches", PATCH_SIZE)):
        views = [object_view(s, k, patch=patch) for s, k in zip(samples, ks)]
        out = _generate(model, processor, views)
        results[name] = masked_metrics(out, samples, ks)
        # the same metrics restricted to images with several objects (where confusion is possible)
        multi = [(t, s, k) for t, s, k in zip(out, samples, ks) if len(s.truth["objects"]) > 1]
        results[name]["multi_object_images"] = masked_metrics(*zip(*multi)) if multi else None
        log(f"{name}: {json.dumps(results[name])}")

    rng = np.random.default_rng(seed)
    views = [background_view(s, rng, PATCH_SIZE) for s in samples]
    out = _generate(model, processor, views)
    results["masked_background"] = {
        "views": len(views),
        "background_exact": round(float(np.mean([t == describe_background(s.truth["background"])
                                                  for t, s in zip(out, samples)])), 4),
        "object_mentioned": round(float(np.mean([bool(parse_caption(t)) for t in out])), 4)}
    log(f"masked_background: {json.dumps(results['masked_background'])}")

    results["yes_no"] = yes_no_metrics(model, processor, samples, seed, question_template)
    results["yes_no"]["template"] = question_template
    log(f"yes_no: {json.dumps(results['yes_no'])}")
    results["llava_eval_seconds"] = round(time.time() - t0, 1)
    return results


def evaluate_clip(clip_dir, n_images=1024, seed=0, group=64, log=print):
    import torch

    model, preprocess, tokenizer = load_clip(clip_dir)
    n = (n_images // group) * group
    data = ShapesDataset(ShapesDataset.Options(n=n, seed=seed, split="test", image_size=IMAGE_SIZE))
    samples = [data.sample(i) for i in range(n)]
    i2t, t2i = [], []
    with torch.no_grad():
        for chunk in _batched(samples, group):
            img = model.encode_image(torch.stack([preprocess(s.image) for s in chunk]), normalize=True)
            txt = model.encode_text(tokenizer([s.truth["caption"] for s in chunk]), normalize=True)
            sim = img @ txt.t()
            caps = [s.truth["caption"] for s in chunk]
            # a retrieval counts as right if it picks a caption identical to the true one
            i2t += [caps[int(j)] == caps[i] for i, j in enumerate(sim.argmax(1))]
            t2i += [caps[int(j)] == caps[i] for i, j in enumerate(sim.argmax(0))]
    res = {"images": n, "group": group, "image_to_caption_top1": round(float(np.mean(i2t)), 4),
           "caption_to_image_top1": round(float(np.mean(t2i)), 4)}
    log(f"clip: {json.dumps(res)}")
    return res


def evaluate(llava_dir=LLAVA_DIR, clip_dir=CLIP_DIR, n_images=1000, seed=0, log=print,
             question_template: str = QUESTION_TEMPLATE):
    results = evaluate_llava(llava_dir, n_images, seed, log, question_template)
    results["clip"] = evaluate_clip(clip_dir, max(n_images, 640), seed, log=log)
    c, m = results["captioning"], results["masked_pixels"]
    results["summary"] = {
        **{f"caption_{a}_acc": c["attribute_accuracy"][a] for a in ATTRS},
        "caption_background_acc": c["background_accuracy"],
        "caption_exact": c["exact_caption"],
        "caption_exact_by_objects": c["exact_caption_by_objects"],
        "masked_highlighted_exact": m["highlighted_exact"],
        "masked_other_mentioned": m["other_object_mentioned"],
        "masked_patches_highlighted_exact": results["masked_patches"]["highlighted_exact"],
        "masked_patches_other_mentioned": results["masked_patches"]["other_object_mentioned"],
        "masked_background_exact": results["masked_background"]["background_exact"],
        "yes_no_accuracy_present": results["yes_no"]["whole_image"]["accuracy_present"],
        "yes_no_accuracy_absent": results["yes_no"]["whole_image"]["accuracy_absent"],
        "yes_no_positional_accuracy": results["yes_no"]["positional"]["accuracy"],
        "clip_image_to_caption_top1_of_64": results["clip"]["image_to_caption_top1"],
    }
    targets = {
        "attributes_ge_0.97": all(c["attribute_accuracy"][a] >= 0.97 for a in ATTRS),
        "masked_exact_ge_0.95": m["highlighted_exact"] >= 0.95,
        "masked_other_lt_0.02": m["other_object_mentioned"] < 0.02,
        "clip_top1_ge_0.90": results["clip"]["image_to_caption_top1"] >= 0.90,
    }
    results["targets_met"] = targets
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llava", type=Path, default=LLAVA_DIR)
    p.add_argument("--clip", type=Path, default=CLIP_DIR)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--question-template", default=QUESTION_TEMPLATE, help="how yes/no probes are asked")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = evaluate(args.llava, args.clip, args.images, args.seed, question_template=args.question_template)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(json.dumps(results["targets_met"], indent=2))


if __name__ == "__main__":
    main()
