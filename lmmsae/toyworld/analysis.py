"""Why a toy-world run's IoU is what it is: where the explained features fire, and what the best
possible label would have scored.

    python -m lmmsae.toyworld.analysis runs/<name> [--json analysis.json]

For every explained feature of a finished run on the `shapes` dataset, over the same top images the
IoU scorer scores (its `k`, `threshold`, selection and activation masks):

* object share: the share of the feature's active pixels that lie on objects (rest: background);
  a feature is an *object* feature when that share is >= 0.5, else a *background* feature;
* active area: the share of the image its activation mask covers;
* said: the IoU of the explainer's label (the IoU scorer's number, recomputed);
* oracle: the best mean IoU any one label of the toy grammar reaches on those images (labels built
  from the attributes, positions and backgrounds present in them: what a perfect explainer with
  the toy vocabulary could say);
* per-image oracle: the best region per image, the label allowed to change from image to image
  (what no single explanation can beat).

The table groups features by the keyword category of their label (colour, shape, position,
background, texture, ...; a label counts under each category it names) and by feature kind.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from lmmsae.datasets.shapes import BACKGROUND_ADJECTIVES

KINDS = ("object", "background")


def candidate_labels(truths: list[dict[str, Any]]) -> list[str]:
    """Every label of the toy grammar built from what the images hold: object phrases (any subset of
    size / colour / shape / position of an object present), optionally with a background phrase."""
    objects = [o for t in truths for o in t["objects"]]
    parts: set[str] = set()
    for o in objects:
        attrs = (o["size"], o["color"], o["shape"], o["position"])
        for r in range(1, 5):
            for combo in itertools.combinations(attrs, r):
                parts.add(" ".join(combo))
    backgrounds = {"background"} | {f"{BACKGROUND_ADJECTIVES[t['background']]} background" for t in truths}
    labels = set(parts) | backgrounds
    labels |= {f"{p} on a {b}" for p in parts for b in backgrounds}
    return sorted(labels)


def feature_analysis(masks: list[np.ndarray], truths: list[dict[str, Any]], label: str | None) -> dict[str, Any]:
    """Object share, area, the label's IoU and the oracle IoUs of one feature's scored top images."""
    from lmmsae.scorers.iou import iou
    from lmmsae.scorers.truth import truth_region

    def mean_iou(text):
        per = [iou(m, r) if (r := truth_region(text, t)) is not None else 0.0 for m, t in zip(masks, truths)]
        return float(np.mean(per)), per

    on_objects, active = 0, 0
    for m, t in zip(masks, truths):
        anything = np.any([o["mask"] for o in t["objects"]], axis=0)
        on_objects += int((m & anything).sum())
        active += int(m.sum())
    best_label, best, per_image_best = None, -1.0, np.zeros(len(masks))
    for text in candidate_labels(truths):
        score, per = mean_iou(text)
        per_image_best = np.maximum(per_image_best, per)
        if score > best:
            best_label, best = text, score
    share = on_objects / active if active else 0.0
    return {
        "object_share": share, "kind": KINDS[0] if share >= 0.5 else KINDS[1],
        "active_area": float(np.mean([m.mean() for m in masks])),
        "said": mean_iou(label)[0] if label else 0.0,
        "oracle": best, "oracle_label": best_label, "oracle_per_image": float(per_image_best.mean()),
    }


def analyse(run: str | Path, limit: int = 0) -> dict[str, Any]:
    """Per-feature rows and grouped means for a finished run (see the module docstring)."""
    from lmmsae import artifacts, plugins
    from lmmsae.config import load_yaml
    from lmmsae.explainers.store import read_explanations
    from lmmsae.options import parse_options
    from lmmsae.scorers.base import label_of
    from lmmsae.scorers.categories import keyword_categories
    from lmmsae.scorers.iou import IoUScorer, activation_mask
    from lmmsae.scorers.store import read_scores
    from lmmsae.stores.features import FeatureStore

    run = Path(run)
    config = load_yaml(run / artifacts.RUN_CONFIG)
    explainer = config["explainer"]["name"]
    ds_cfg = dict(config["dataset"])
    component = plugins.get("datasets", ds_cfg.pop("name"))
    dataset = component.load()(component.options(ds_cfg))
    iou_cfg = next((dict(s) for s in config.get("scorers", []) if s.get("name") == "iou"), {"name": "iou"})
    iou_cfg.pop("name")
    iou_opts = parse_options(IoUScorer.Options, iou_cfg, where="iou")
    explanations = [e for _, e in sorted(read_explanations(run / artifacts.EXPLANATIONS_DIR / f"{explainer}.jsonl").items())]
    if limit:
        explanations = explanations[:limit]
    scores = read_scores(run / artifacts.SCORES_DIR / "iou" / f"{explainer}.jsonl")
    rows = []
    with FeatureStore(run / artifacts.FEATURES) as store:
        for e in explanations:
            record = store.record(int(e.latent), n=iou_opts.k, dataset=dataset, seed=int(config.get("seed", 0)),
                                  render=None)
            examples = [x for x in record.examples if x.activation_map is not None]
            masks = [activation_mask(x.activation_map, x.image.size, iou_opts.threshold) for x in examples]
            label = label_of(e)
            row = {"latent": int(e.latent), "label": label,
                   "categories": keyword_categories(label) if label else ["unexplained"],
                   **feature_analysis(masks, [x.truth for x in examples], label)}
            score = scores.get((e.hookpoint, int(e.latent)))
            row["baseline"] = score.get("baseline_mean") if score else None
            rows.append(row)
    return {"run": str(run), "hookpoint": rows and explanations[0].hookpoint, "features": len(rows),
            "groups": group(rows), "rows": rows}


def group(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Means per label category, per feature kind, and over all features."""
    buckets: dict[str, list[dict[str, Any]]] = {"all": rows}
    for r in rows:
        for c in r["categories"]:
            buckets.setdefault(f"category:{c}", []).append(r)
        buckets.setdefault(f"kind:{r['kind']}", []).append(r)
    out = {}
    for name, rs in buckets.items():
        base = [r["baseline"] for r in rs if r["baseline"] is not None]
        out[name] = {"n": len(rs), "object_features": sum(r["kind"] == "object" for r in rs),
                     "active_area": _mean(r["active_area"] for r in rs), "said": _mean(r["said"] for r in rs),
                     "baseline": _mean(base) if base else None, "oracle": _mean(r["oracle"] for r in rs),
                     "oracle_per_image": _mean(r["oracle_per_image"] for r in rs)}
    return out


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def markdown(result: dict[str, Any]) -> str:
    """The grouped table as Markdown (what docs/toyworld.md shows)."""
    lines = ["| features | n | object features | active area | IoU said | random | oracle label | oracle per image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = ["all"] + sorted(k for k in result["groups"] if k.startswith("kind:")) + \
        sorted(k for k in result["groups"] if k.startswith("category:"))
    for name in order:
        g = result["groups"][name]
        base = "-" if g["baseline"] is None else f"{g['baseline']:.3f}"
        lines.append(f"| {name} | {g['n']} | {g['object_features']} | {g['active_area']:.3f} | {g['said']:.3f} | "
                     f"{base} | {g['oracle']:.3f} | {g['oracle_per_image']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished run directory (runs/<name>)")
    p.add_argument("--json", type=Path, default=None, help="write every feature's row and the groups here")
    p.add_argument("--limit", type=int, default=0, help="analyse only the first N explained features")
    args = p.parse_args(argv)
    result = analyse(args.run, args.limit)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['features']} features at {result['hookpoint']} of {result['run']}")
    print(markdown(result))


if __name__ == "__main__":
    main()
