"""Stage `compare`: several explainers on the same features and examples, scored by the same scorers.

Every explainer sees exactly the same records (same latents, same seeded example choice, same
rendering) and every scorer scores every explainer's labels the same way. Writes
`compare/explanations/<id>.jsonl`, `compare/scores/<scorer>/<id>.jsonl`, `compare/summary.json`
(one row per explainer: explained / failed counts and, per scorer, the mean score and random baseline
over the features *every* explainer explained, plus over its own) and `compare/index.html` (written by
lmmsae.report.compare). Answers come from and go to the run's response cache, so an explainer already
run by `explain` costs nothing here. Each file is a unit of the plan (lmmsae.plan): a re-run with more
explainers or scorers makes only the files that are not current, then re-summarises;
`cache/features.h5` must be current.

    lmmsae compare --resume --name myrun --explainers toy-llava --explainers anthropic
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from lmmsae import artifacts
from lmmsae.errors import UserError
from lmmsae.stages import explain as explain_stage


@dataclass
class Options(explain_stage.Options):
    explainers: list[Any] = field(default_factory=list)   # names, or {name, id, ...options} mappings
    scorers: list[Any] = field(default_factory=list)      # names or {name, ...options}; [] = the run's scorers


CLI_PARAMS = [
    click.Option(["--explainers"], multiple=True, help="Explainer to compare (repeatable; options via the config file)."),
    click.Option(["--n-features"], type=int, help="How many features (0 = all alive)."),
    click.Option(["--latents"], type=int, multiple=True, help="Compare on exactly these latents (repeatable)."),
]


@dataclass
class Entrant:
    id: str
    name: str
    options: dict[str, Any]


def entrants(specs: list[Any]) -> list[Entrant]:
    """Explainer specs -> (id, registered name, options); ids name the output files and must be unique."""
    out = []
    for spec in specs:
        if isinstance(spec, str):
            out.append(Entrant(spec, spec, {}))
        elif isinstance(spec, dict) and spec.get("name"):
            options = {k: v for k, v in spec.items() if k not in ("name", "id")}
            out.append(Entrant(str(spec.get("id") or spec["name"]), str(spec["name"]), options))
        else:
            raise UserError(f"compare.explainers entry {spec!r} must be a name or a mapping with a name")
    ids = [e.id for e in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise UserError(f"compare.explainers has the id {dupes[0]!r} twice: give each entry its own `id`")
    return out


def units(ctx) -> list:
    """Per explainer compare/explanations/<id>.jsonl (extends like explain), per scorer and explainer
    compare/scores/<scorer>/<id>.jsonl, and compare/summary.json over all of them."""
    from lmmsae.fingerprint import without
    from lmmsae.plan import Unit
    from lmmsae.stages.score import scorer_names

    c = ctx.config
    opts = ctx.stage_options("compare", Options)
    if not opts.explainers:
        return []
    chosen = entrants(opts.explainers)
    specs = scorer_specs(ctx, opts)
    features, external = explain_stage.features_input(opts.features)
    shared = {"dataset": c.dataset.to_dict(), "seed": c.seed}
    extent = {k: getattr(opts, k) for k in explain_stage.EXTENT}
    out: list = []
    for e in chosen:
        rel = f"{artifacts.COMPARE_DIR}/explanations/{e.id}.jsonl"
        out.append(Unit("compare", rel, {**shared, "explainer": [e.name, e.options], "compare": without(
            opts, *explain_stage.EXTENT, "explainers", "scorers", "cache_responses")},
            features, external=external, extent=extent, extensible=True))
        for name, spec in zip(scorer_names([s.name for s in specs]), specs):
            out.append(Unit("compare", f"{artifacts.COMPARE_DIR}/scores/{name}/{e.id}.jsonl",
                            {**shared, "scorer": spec.to_dict(), "judge": c.explainer.to_dict()},
                            (rel, *features), external=external))
    out.append(Unit("compare", artifacts.COMPARE_SUMMARY, {"explainers": [e.id for e in chosen]},
                    tuple(u.path for u in out)))
    return out


def scorer_specs(ctx, opts: Options) -> list:
    from lmmsae.config import ComponentConfig

    return [ComponentConfig(s, {}) if isinstance(s, str) else ComponentConfig(s["name"], {
        k: v for k, v in s.items() if k != "name"}) for s in opts.scorers] or list(ctx.config.scorers)


def run(ctx) -> None:
    from lmmsae import plugins

    opts = ctx.stage_options("compare", Options)
    if not opts.explainers:
        raise UserError("compare needs explainers: --explainers toy-llava --explainers anthropic "
                        "(or compare.explainers in the config file)")
    chosen = entrants(opts.explainers)
    for e in chosen:  # fail on a typo before any work
        plugins.get("explainers", e.name).options(e.options)
    units = ctx.units("compare")
    summary_unit = ctx.unit(artifacts.COMPARE_SUMMARY)
    if summary_unit.todo:
        summary = compare(ctx, opts, chosen)
        ctx.start(summary_unit)
        from lmmsae.atomic import atomic_write_text
        from lmmsae.report.compare import write_compare_page

        atomic_write_text(ctx.run.file(artifacts.COMPARE_SUMMARY), json.dumps(summary, indent=2) + "\n")
        write_compare_page(ctx.run.path)
        ctx.finish(summary_unit, explainers=[e.id for e in chosen], scorers=summary["scorers"])
    else:
        ctx.log("stage-skip", stage="compare", reason="current", units=len(units))
        summary = json.loads(ctx.run.file(artifacts.COMPARE_SUMMARY).read_text())
    _print_table(summary)


def compare(ctx, opts: Options, chosen: list[Entrant]) -> dict[str, Any]:
    """Explain and score with every entrant, each explanation and score file made only when its unit
    is not current; returns the summary over all of them."""
    from lmmsae import plugins
    from lmmsae.backends.cache import ResponseCache
    from lmmsae.explainers.store import read_explanations
    from lmmsae.scorers.base import ScoringContext, label_of
    from lmmsae.stages.score import score_explanations, scorer_names, store_records
    from lmmsae.stores.features import FeatureStore

    features = explain_stage.features_path(ctx, opts.features)
    dataset = ctx.build("dataset")
    cache = ResponseCache(ctx.run.file(artifacts.RESPONSE_CACHE)) if opts.cache_responses else None
    specs = scorer_specs(ctx, opts)
    names = scorer_names([s.name for s in specs])
    built: dict[str, Any] = {}
    rows = []
    try:
        with FeatureStore(features) as store:
            latents = explain_stage.choose_latents(store, opts, ctx.config.seed)
            hookpoint = store.hookpoint
            for entrant in chosen:
                unit = ctx.unit(f"{artifacts.COMPARE_DIR}/explanations/{entrant.id}.jsonl")
                out = ctx.run.file(unit.path)
                if ctx.start(unit):
                    component = plugins.get("explainers", entrant.name)
                    explainer = component.load()(component.options(entrant.options), name=entrant.id, cache=cache)
                    refiner = explain_stage.make_refiner(opts, explainer, cache)
                    try:
                        counts = explain_stage.explain_features(store, explainer, out, latents, dataset=dataset,
                                                                opts=opts, seed=ctx.config.seed, refiner=refiner,
                                                                log=ctx.log)
                    finally:
                        explainer.close()
                    ctx.finish(unit, latents=latents, **counts)
                else:
                    counts = explain_stage.summarize(out, latents, hookpoint)
                current = read_explanations(out)
                explanations = [current[(hookpoint, lat)] for lat in latents if (hookpoint, lat) in current]
                labels = {int(e.latent): label_of(e) for e in explanations if label_of(e)}
                scoring = ScoringContext(dataset=dataset, seed=ctx.config.seed, device=ctx.config.device,
                                         dtype=ctx.config.dtype, labels=labels, judge=ctx.config.explainer,
                                         cache=cache)
                for name, spec in zip(names, specs):
                    score_unit = ctx.unit(f"{artifacts.COMPARE_DIR}/scores/{name}/{entrant.id}.jsonl")
                    if not ctx.start(score_unit):
                        continue
                    if name not in built:
                        component, options = ctx.component("scorers", spec)
                        built[name] = component.load()(options)
                    result = score_explanations(built[name], name, explanations,
                                                store_records(store, built[name], dataset, ctx.config.seed),
                                                scoring, ctx.run.file(score_unit.path))
                    ctx.finish(score_unit, **result)
                rows.append({"id": entrant.id, "explainer": entrant.name, "options": entrant.options, **counts})
    finally:
        if cache is not None:
            cache.close()
    return summarize(ctx.run.path, rows, names, latents, hookpoint)


def summarize(run_path: Path, rows: list[dict[str, Any]], scorers: list[str], latents: list[int],
              hookpoint: str) -> dict[str, Any]:
    """Per explainer and scorer: means over the features all explainers explained, and over its own."""
    from lmmsae.scorers.store import read_scores

    scores = {(r["id"], s): {lat: rec for (hp, lat), rec in read_scores(
        Path(run_path) / artifacts.COMPARE_DIR / "scores" / s / f"{r['id']}.jsonl").items()
        if hp == hookpoint and rec.get("status", "ok") == "ok" and rec.get("score") is not None}
        for r in rows for s in scorers}
    for row in rows:
        row["scores"] = {}
    for s in scorers:
        common = set(latents)
        for row in rows:
            common &= set(scores[(row["id"], s)])
        for row in rows:
            mine = scores[(row["id"], s)]
            row["scores"][s] = {"all": _stats(list(mine.values())),
                                "common": _stats([mine[lat] for lat in sorted(common)])}
    return {"features": len(latents), "hookpoint": hookpoint, "scorers": scorers, "explainers": rows,
            "definition": "score/baseline: means over scored features; 'common' = features every explainer "
                          "explained and every scorer scored; beats_baseline = share with score > baseline_mean"}


def _stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    if not records:
        return {"n": 0, "score": None, "baseline": None, "delta": None, "beats_baseline": None}
    score = [float(r["score"]) for r in records]
    base = [float(r["baseline_mean"]) for r in records if r.get("baseline_mean") is not None]
    mean = sum(score) / len(score)
    mean_base = sum(base) / len(base) if base else None
    beats = [float(r["score"]) > float(r["baseline_mean"]) for r in records if r.get("baseline_mean") is not None]
    return {"n": len(score), "score": mean, "score_se": _se(score), "baseline": mean_base,
            "delta": None if mean_base is None else mean - mean_base,
            "beats_baseline": sum(beats) / len(beats) if beats else None}


def _se(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def _cells(summary: dict[str, Any], row: dict[str, Any]) -> list[str]:
    cells = [row["id"], str(row["ok"]), str(row["failed"])]
    for s in summary["scorers"]:
        c = row["scores"][s]["common"]
        if c["score"] is None:
            cells.append("-")
        elif c["baseline"] is None:
            cells.append(f"{c['score']:.3g}")
        else:
            cells.append(f"{c['score']:.3g} ({c['baseline']:.3g})")
    return cells


def _print_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"explainers on {summary['features']} features ({summary['hookpoint']}); "
                        f"scores over features all explained")
    table.add_column("explainer")
    table.add_column("explained", justify="right")
    table.add_column("failed", justify="right")
    for s in summary["scorers"]:
        table.add_column(f"{s} (baseline)", justify="right")
    for row in summary["explainers"]:
        table.add_row(*_cells(summary, row))
    Console(stderr=True).print(table)
