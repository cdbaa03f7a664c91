"""Stage `report`: report/summary.json, the report site (report/index.html and its pages, see
lmmsae.report) and the summary table in the terminal.

summary.json holds: the run's components, the SAE metrics of every hookpoint (sae/<hookpoint>/metrics.json),
seconds per stage, per scorer and explainer the mean score with its confidence interval beside the
random baseline (overall and per concept category, lmmsae.summary), and the definitions used. The
site adds a sortable, filterable index of the features, a page per feature (top images as mask /
heatmap / crop, activation histogram, every explanation and score, steering), a run page (every SAE
metric, training curves, feature density, score distributions) and compare/index.html. It reads only
outputs that are current for this config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lmmsae import artifacts

SITE_VERSION = 2  # part of the report's fingerprint: a new lmmsae whose pages changed rebuilds old reports


@dataclass
class Options:
    features: int = 0          # features with a page (0 = every explained or scored one)
    images: int = 6            # top images per feature page
    confidence: float = 0.95   # of the bootstrap intervals
    image_px: int = 128        # longest side of each picture (pixels)


def _open_when_done(click_ctx, param, value) -> None:
    """--open is no config option (it would persist in run.yaml): the command opens the report as it ends."""
    if value:
        click_ctx.meta[OPEN_REPORT] = True


OPEN_REPORT = "lmmsae.open_report"  # click context meta key read by lmmsae.commands.common.echo_done
CLI_PARAMS = [click.Option(["--open"], is_flag=True, expose_value=False, callback=_open_when_done,
                           help="Open the report in a web browser when the command ends.")]


def units(ctx) -> list:
    """report/: summary.json and the site, made from every score of the run and, where they are
    current, the SAE metrics and curves, explanations, features, steering results and the comparison."""
    from lmmsae.plan import Unit

    reads = {"score": "required", "train": "optional", "cache": "optional", "explain": "optional",
             "steer": "optional", "compare": "optional"}
    required, optional = [], []
    for stage, how in reads.items():
        paths = [u.path for u in _stage_units(ctx, stage)]
        (required if how == "required" else optional).extend(paths)
    if not required:  # no scorers: the explanations are what there is to report
        required, optional = [p for p in optional if p.startswith(artifacts.EXPLANATIONS_DIR)], \
            [p for p in optional if not p.startswith(artifacts.EXPLANATIONS_DIR)]
    opts = ctx.stage_options("report", Options)
    return [Unit("report", artifacts.REPORT_DIR, {"report": opts.__dict__, "site": SITE_VERSION,
                                                  "components": _components(ctx.config)},
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
    return ctx.run.is_current(path, ctx.unit(path).fingerprint)


def timings(ctx) -> dict[str, float]:
    """Seconds each stage took to make its current outputs (its last uninterrupted attempt)."""
    out: dict[str, float] = {}
    for unit in ctx.plan.units:
        if unit.stage != "report" and ctx.run.is_current(unit.path, unit.fingerprint):
            seconds = ctx.run.state(unit.path).get("seconds") or 0.0
            out[unit.stage] = round(out.get(unit.stage, 0.0) + float(seconds), 3)
    return out


def _components(config) -> dict[str, Any]:
    return {"model": config.model.to_dict(), "dataset": config.dataset.to_dict(), "sae": config.sae.to_dict(),
            "explainer": config.explainer.to_dict(), "scorers": [s.to_dict() for s in config.scorers],
            "hookpoints": list(config.hookpoints), "seed": config.seed}


def build_report(run_dir: str | Path, opts: Options | None = None, dataset=None,
                 components: dict[str, Any] | None = None, include: set[str] | None = None,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Write report/ (summary.json and the site) from a run directory; return the summary.
    `include`: the run-relative outputs it may read (None: all there are); `timings`: seconds per stage."""
    from lmmsae.report.build import build

    return build(run_dir, opts or Options(), dataset, components, include, timings)


def print_summary(summary: dict[str, Any]) -> None:
    import sys

    from rich.console import Console

    from lmmsae.report.run_page import HEADLINE, lookup
    from lmmsae.summary import table

    console = Console(width=None if sys.stdout.isatty() else 150)
    for hookpoint, metrics in summary.get("sae", {}).items():
        shown = [f"{k}={_short(v)}" for k, v in metrics.items() if isinstance(v, (int, float))]
        shown += [f"{title}={_short(lookup(metrics, path))}" for title, path in HEADLINE
                  if isinstance(lookup(metrics, path), (int, float))]
        console.print(f"SAE {hookpoint}: {', '.join(shown)}", soft_wrap=True)
    if summary.get("scores"):
        console.print(table(summary["scores"]))
    else:
        console.print("no scores yet: run `lmmsae score`")


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
