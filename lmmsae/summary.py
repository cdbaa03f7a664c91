"""The Table-1 style summary: per scorer and explainer, the mean score with a confidence interval beside
the random baseline, overall and per concept category.

Definitions (also written into summary.json):
* mean: mean score over scored features (status ok); `skipped` counts the others.
* ci: percentile bootstrap interval of that mean (`confidence`, 2,000 resamples, seeded).
* baseline_mean: mean over features of each feature's random-baseline mean (same scorer).
* delta: mean of (score - baseline_mean) per feature, with its paired bootstrap interval.
* above_baseline: fraction of features whose score exceeds their own baseline mean.
A feature with several categories counts in each of them.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

DEFINITIONS = {
    "mean": "mean score over scored features (status ok)",
    "ci": "percentile bootstrap interval of the mean (2000 resamples, seed 0)",
    "baseline_mean": "mean over features of each feature's random-baseline mean, same scorer",
    "delta": "mean per-feature (score - baseline_mean), with a paired bootstrap interval",
    "above_baseline": "fraction of features scoring above their own baseline mean",
    "categories": "a feature with several categories counts in each",
}


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> list[float] | None:
    """[low, high] percentile bootstrap interval of the mean; None for no values."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]


def summarise(records: list[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """One row: mean with CI, baseline, delta, for the records of one scorer and explainer."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("score") is not None]
    scores = [float(r["score"]) for r in ok]
    paired = [(float(r["score"]), float(r["baseline_mean"])) for r in ok if r.get("baseline_mean") is not None]
    row: dict[str, Any] = {"n": len(ok), "skipped": len(records) - len(ok),
                           "mean": float(np.mean(scores)) if scores else None,
                           "ci": bootstrap_ci(scores, confidence)}
    if paired:
        s, b = np.asarray(paired).T
        row.update(baseline_mean=float(b.mean()), baseline_ci=bootstrap_ci(b, confidence),
                   baseline_std=float(np.mean([r.get("baseline_std") or 0.0 for r in ok if r.get("baseline_mean") is not None])),
                   delta=float((s - b).mean()), delta_ci=bootstrap_ci(s - b, confidence),
                   above_baseline=float((s > b).mean()))
    else:
        row.update(baseline_mean=None, baseline_ci=None, baseline_std=None, delta=None, delta_ci=None,
                   above_baseline=None)
    return row


def summarise_split(records: list[dict[str, Any]], categories: dict[int, list[str]] | None = None,
                    confidence: float = 0.95) -> dict[str, Any]:
    """{"all": row, "by_category": {category: row}} (by_category empty without categories)."""
    out: dict[str, Any] = {"all": summarise(records, confidence), "by_category": {}}
    if categories:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in records:
            for category in categories.get(int(r["latent"]), []):
                groups.setdefault(category, []).append(r)
        out["by_category"] = {c: summarise(rs, confidence) for c, rs in sorted(groups.items())}
    return out


def summarise_scores(scores: dict[str, dict[str, list[dict[str, Any]]]],
                     categories: dict[str, dict[int, list[str]]] | None = None,
                     confidence: float = 0.95) -> dict[str, Any]:
    """scores[scorer][explainer] = records; categories[explainer][latent] = categories."""
    categories = categories or {}
    return {scorer: {explainer: summarise_split(records, categories.get(explainer), confidence)
                     for explainer, records in sorted(by_explainer.items())}
            for scorer, by_explainer in sorted(scores.items())}


def _fmt(value) -> str:
    """CLIP-score-sized numbers with 2 decimals, IoU and accuracies with 3."""
    return "-" if value is None else f"{value:.2f}" if abs(value) >= 10 else f"{value:.3f}"


def _interval(ci) -> str:
    return "" if not ci else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def rows(summary: dict[str, Any]) -> list[list[str]]:
    """Table rows: scorer, explainer, category, n, score [CI], random baseline (std), delta [CI], above."""
    out = []
    for scorer, by_explainer in summary.items():
        for explainer, split in by_explainer.items():
            for category, row in [("all", split["all"]), *split["by_category"].items()]:
                above = "-" if row["above_baseline"] is None else f"{100 * row['above_baseline']:.0f}%"
                base = _fmt(row["baseline_mean"]) + ("" if row["baseline_std"] is None else f" ±{_fmt(row['baseline_std'])}")
                out.append([scorer, explainer, category, str(row["n"]), _fmt(row["mean"]) + _interval(row["ci"]),
                            base, _fmt(row["delta"]) + _interval(row["delta_ci"]), above])
    return out


HEADER = ["scorer", "explainer", "category", "n", "score [95% CI]", "random baseline (±std)", "delta [95% CI]",
          "above baseline"]


TERMINAL_HEADER = ["explainer", "n", "score [95% CI]", "random ±std", "delta", "above"]


def table(summary: dict[str, Any], title: str = "explanation scores vs random baselines"):
    """For the terminal: one rich table per scorer that fits 80 columns, each explainer's overall row
    followed by its categories (indented, dimmed). The delta's interval is left to summary.json and
    index.html, which hold the full `rows`."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    tables = []
    for scorer, by_explainer in summary.items():
        t = Table(title=f"{scorer}: {title}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  title_justify="left")
        for i, name in enumerate(TERMINAL_HEADER):
            t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
        for explainer, split in by_explainer.items():
            for category, row in [("all", split["all"]), *split["by_category"].items()]:
                above = "-" if row["above_baseline"] is None else f"{100 * row['above_baseline']:.0f}%"
                base = _fmt(row["baseline_mean"]) + ("" if row["baseline_std"] is None else f" ±{_fmt(row['baseline_std'])}")
                t.add_row(explainer if category == "all" else f"  {category}", str(row["n"]),
                          _fmt(row["mean"]) + _interval(row["ci"]), base, _fmt(row["delta"]), above,
                          style=None if category == "all" else "dim")
        tables.append(t)
    return Group(*tables)
