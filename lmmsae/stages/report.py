"""Stage `report`: report/summary.json and a self-contained report/index.html for a run, and the summary
table in the terminal.

summary.json holds: the run's components, the SAE metrics of every hookpoint (sae/<hookpoint>/metrics.json),
per scorer and explainer the mean score with its confidence interval beside the random baseline (overall
and per concept category, lmmsae.summary), and the definitions used. index.html adds pictures: for the
first `features` scored features, the top images masked as the explainer saw them, with the explanation.
The report is rebuilt whenever its inputs changed since it was written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmmsae import artifacts


@dataclass
class Options:
    features: int = 24         # features pictured in index.html
    images: int = 5            # images per pictured feature
    confidence: float = 0.95   # of the bootstrap intervals
    image_px: int = 128        # displayed size of each picture


def units(ctx) -> list:
    """report/: summary.json and the HTML pages, made from every score of the run and, where they are
    current, the SAE metrics, explanations, features and steering results."""
    from lmmsae.plan import Unit

    reads = {"score": "required", "train": "optional", "cache": "optional", "explain": "optional",
             "steer": "optional"}
    required, optional = [], []
    for stage, how in reads.items():
        paths = [u.path for u in _stage_units(ctx, stage)]
        (required if how == "required" else optional).extend(paths)
    if not required:  # no scorers: the explanations are what there is to report
        required, optional = [p for p in optional if p.startswith(artifacts.EXPLANATIONS_DIR)], \
            [p for p in optional if not p.startswith(artifacts.EXPLANATIONS_DIR)]
    opts = ctx.stage_options("report", Options)
    return [Unit("report", artifacts.REPORT_DIR, {"report": opts.__dict__, "components": _components(ctx.config)},
                 tuple(required), tuple(optional))]


def _stage_units(ctx, stage: str) -> list:
    from lmmsae.plan import stage_module

    return stage_module(stage).units(ctx)


def run(ctx) -> None:
    opts = ctx.stage_options("report", Options)
    (unit,) = ctx.units("report")
    if ctx.start(unit):
        dataset = None
        try:
            dataset = ctx.build("dataset")
        except Exception as exc:  # noqa: BLE001 - pictures are optional; the numbers are not
            ctx.log("report-no-dataset", reason=str(exc))
        include = {p for p in (*unit.inputs, *unit.optional) if _readable(ctx, p)}
        summary = build_report(ctx.run.path, opts, dataset, components=_components(ctx.config),
                               include=include, timings=timings(ctx))
        ctx.finish(unit)
    else:
        summary = json.loads(ctx.run.file(artifacts.SUMMARY).read_text())
    print_summary(summary)


def _readable(ctx, path: str) -> bool:
    """An input the report may show: complete, and made by this config."""
    state = ctx.run.state(path)
    return bool(state and state.get("status") == "complete" and state.get("fingerprint") == ctx.unit(path).fingerprint)


def timings(ctx) -> dict[str, float]:
    """Seconds each stage took to make its current outputs (its last uninterrupted attempt)."""
    out: dict[str, float] = {}
    for unit in ctx.plan.units:
        state = ctx.run.state(unit.path) if unit.stage != "report" else None
        if state and state.get("status") == "complete" and state.get("fingerprint") == unit.fingerprint:
            out[unit.stage] = round(out.get(unit.stage, 0.0) + float(state.get("seconds") or 0.0), 3)
    return out


def _components(config) -> dict[str, Any]:
    return {"model": config.model.to_dict(), "dataset": config.dataset.to_dict(), "sae": config.sae.to_dict(),
            "explainer": config.explainer.to_dict(), "scorers": [s.to_dict() for s in config.scorers],
            "hookpoints": list(config.hookpoints), "seed": config.seed}


# ----------------------------------------------------------------------------- gathering


def _allowed(run_dir: Path, path: Path, include: set[str] | None, prefix: str | None = None) -> bool:
    """Whether the report may read `path`: with `include`, only current outputs of this config."""
    if include is None:
        return True
    rel = str(path.relative_to(run_dir))
    return (prefix or rel) in include


def read_sae_metrics(run_dir: Path, include: set[str] | None = None) -> dict[str, Any]:
    """hookpoint -> the SAE's metrics.json (as written by the train stage)."""
    out = {}
    if include is not None and artifacts.SAE_DIR not in include:
        return out
    for path in sorted(Path(run_dir, artifacts.SAE_DIR).glob("**/metrics.json")):
        hookpoint = str(path.parent.relative_to(Path(run_dir, artifacts.SAE_DIR)))
        try:
            out[hookpoint] = json.loads(path.read_text())
        except ValueError:
            out[hookpoint] = {"error": f"unreadable {path.name}"}
    return out


def read_all_scores(run_dir: Path, include: set[str] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """scores[scorer][explainer] = score records."""
    from lmmsae.scorers.store import read_scores

    out: dict[str, dict[str, list]] = {}
    for path in sorted(Path(run_dir, artifacts.SCORES_DIR).glob("*/*.jsonl")):
        if not _allowed(Path(run_dir), path, include):
            continue
        out.setdefault(path.parent.name, {})[path.stem] = [r for _, r in sorted(read_scores(path).items())]
    return out


def read_categories(run_dir: Path, include: set[str] | None = None) -> dict[str, dict[int, list[str]]]:
    """categories[explainer][latent] = concept categories."""
    out: dict[str, dict[int, list[str]]] = {}
    for path in sorted(Path(run_dir, artifacts.CATEGORIES_DIR).glob("*.jsonl")):
        if not _allowed(Path(run_dir), path, include):
            continue
        cats = {}
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                cats[int(row["latent"])] = list(row["categories"])
            except (ValueError, KeyError, TypeError):
                continue
        out[path.stem] = cats
    return out


def build_report(run_dir: str | Path, opts: Options | None = None, dataset=None,
                 components: dict[str, Any] | None = None, include: set[str] | None = None,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Write report/summary.json and report/index.html from a run directory; return the summary.
    `include`: the run-relative outputs it may read (None: all there are); `timings`: seconds per stage."""
    from lmmsae.atomic import atomic_write_text
    from lmmsae.summary import DEFINITIONS, HEADER, rows, summarise_scores

    run_dir = Path(run_dir)
    opts = opts or Options()
    scores = read_all_scores(run_dir, include)
    table = summarise_scores(scores, read_categories(run_dir, include), opts.confidence)
    summary = {
        "run": run_dir.name, "components": components or {}, "sae": read_sae_metrics(run_dir, include),
        "seconds": timings or {},
        "scores": table, "table": {"header": HEADER, "rows": rows(table)},
        "definitions": {**DEFINITIONS, "confidence": opts.confidence},
    }
    atomic_write_text(run_dir / artifacts.SUMMARY, json.dumps(summary, indent=2, default=str) + "\n")
    features_ok = include is None or artifacts.FEATURES in include
    pictures = feature_pictures(run_dir, scores, opts, dataset if features_ok else None)
    atomic_write_text(run_dir / artifacts.REPORT_HTML, render_html(summary, pictures, opts))
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console

    from lmmsae.summary import table

    import sys

    console = Console(width=None if sys.stdout.isatty() else 150)
    for hookpoint, metrics in summary.get("sae", {}).items():
        shown = ", ".join(f"{k}={_short(v)}" for k, v in metrics.items() if isinstance(v, (int, float)))
        console.print(f"SAE {hookpoint}: {shown}")
    if summary.get("scores"):
        console.print(table(summary["scores"]))
    else:
        console.print("no scores yet: run `lmmsae score`")


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- pictures


def feature_pictures(run_dir: Path, scores, opts: Options, dataset) -> list[dict[str, Any]]:
    """Per pictured feature: latent, label, per-scorer score and baseline, and masked images (base64 PNG)."""
    features_path = run_dir / artifacts.FEATURES
    if dataset is None or not features_path.exists() or opts.features <= 0:
        return []
    from lmmsae.errors import UserError
    from lmmsae.stores.features import FeatureStore

    by_latent: dict[tuple[str, int], dict[str, Any]] = {}
    for scorer, by_explainer in scores.items():
        for explainer, records in by_explainer.items():
            for r in records:
                if r.get("status") != "ok":
                    continue
                entry = by_latent.setdefault((explainer, int(r["latent"])), {"labels": r.get("label"), "scores": {}})
                entry["scores"][scorer] = (r.get("score"), r.get("baseline_mean"))
    out = []
    with FeatureStore(features_path) as store:
        for (explainer, latent), entry in sorted(by_latent.items())[:opts.features]:
            try:
                record = store.record(latent, n=opts.images, dataset=dataset, render=None)
            except UserError:  # scored from another cache
                continue
            images = [_png(_masked(e)) for e in record.examples]
            out.append({"latent": latent, "explainer": explainer, "label": entry["labels"],
                        "scores": entry["scores"], "images": images,
                        "activations": [round(e.activation, 3) for e in record.examples]})
    return out


def _masked(example):
    """The example as the explainer saw it: inactive patches dimmed (the paper's mask view)."""
    from lmmsae.render import mask_image

    return mask_image(example.image, example.activation_map)


def _png(image) -> str:
    import base64
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------- html

CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child,td.l{text-align:left}
tr.cat td{color:#666}.feature{margin:1em 0;padding:.5em;border-top:1px solid #ddd}
.feature img{image-rendering:pixelated;margin-right:4px;border:1px solid #999}.label{font-weight:bold}
.scores{color:#555;font-size:90%}"""


def render_html(summary: dict[str, Any], pictures: list[dict[str, Any]], opts: Options) -> str:
    from html import escape

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lmmsae report: {escape(summary['run'])}</title>",
             f"<style>{CSS}</style></head><body><h1>lmmsae report: {escape(summary['run'])}</h1>"]
    comps = summary.get("components") or {}
    if comps:
        names = ", ".join(f"{k}: {escape(str(v.get('name')))}" for k, v in comps.items() if isinstance(v, dict))
        parts.append(f"<p>{names}; hookpoints: {escape(', '.join(comps.get('hookpoints', [])))}</p>")
    parts.append("<h2>SAE metrics</h2>")
    if summary["sae"]:
        keys = sorted({k for m in summary["sae"].values() for k, v in m.items() if isinstance(v, (int, float))})
        parts.append("<table><tr><th>hookpoint</th>" + "".join(f"<th>{escape(k)}</th>" for k in keys) + "</tr>")
        for hookpoint, m in summary["sae"].items():
            parts.append(f"<tr><td>{escape(hookpoint)}</td>" + "".join(f"<td>{escape(_short(m.get(k, '')))}</td>" for k in keys) + "</tr>")
        parts.append("</table>")
    else:
        parts.append("<p>no sae/&lt;hookpoint&gt;/metrics.json in this run.</p>")
    parts.append("<h2>Explanation scores vs random baselines</h2><table><tr>"
                 + "".join(f"<th>{escape(h)}</th>" for h in summary["table"]["header"]) + "</tr>")
    for row in summary["table"]["rows"]:
        cls = "" if row[2] == "all" else " class='cat'"
        parts.append(f"<tr{cls}>" + "".join(f"<td class='l'>{escape(c)}</td>" if i < 3 else f"<td>{escape(c)}</td>"
                                           for i, c in enumerate(row)) + "</tr>")
    parts.append("</table><p class='scores'>" + "<br>".join(f"{escape(k)}: {escape(str(v))}"
                                                             for k, v in summary["definitions"].items()) + "</p>")
    if pictures:
        parts.append("<h2>Features</h2><p>Top images, inactive patches dimmed as the explainer saw them.</p>")
    for p in pictures:
        scores = "; ".join(f"{escape(s)} {_num(v)} (random {_num(b)})" for s, (v, b) in sorted(p["scores"].items()))
        imgs = "".join(f"<img width='{opts.image_px}' height='{opts.image_px}' title='activation {a}' "
                       f"src='data:image/png;base64,{b64}'>" for b64, a in zip(p["images"], p["activations"]))
        parts.append(f"<div class='feature'><div>latent {p['latent']} ({escape(p['explainer'])}): "
                     f"<span class='label'>{escape(str(p['label'] or '(no explanation)'))}</span></div>"
                     f"<div class='scores'>{scores}</div><div>{imgs}</div></div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"
