"""Stage `score`: every configured scorer on every explained feature, each beside its random baseline.

Reads explanations/<explainer>.jsonl and cache/features.h5; writes scores/<scorer>/<explainer>.jsonl
(resumable by latent) and categories/<explainer>.jsonl (concept category per explained latent, for the
summary's split). Two scorers of the same name write to <name>, <name>-1, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from lmmsae import artifacts
from lmmsae.errors import UserError

PAPER_CATEGORIES = ["scene", "object", "part", "material", "texture", "colour"]


@dataclass
class Options:
    explainers: list[str] = field(default_factory=list)  # explanation files to score; [] = the run's explainer
    max_latents: int = 0                                 # 0 = every explained latent
    labeller: str = "keywords"                           # keywords | none | a backend name (asked per label)
    categories: list[str] = field(default_factory=lambda: list(PAPER_CATEGORIES))  # for a backend labeller
    features: str = ""                                   # another features.h5 (default: this run's cache)


CLI_PARAMS = [
    click.Option(["--max-latents"], type=int, help="Score at most this many explained features (0 = all)."),
    click.Option(["--labeller"], help="Concept categories by 'keywords' (default), 'none', or a backend name."),
]


def units(ctx) -> list:
    """scores/<scorer>/<explainer>.jsonl per scorer and explained file, and categories/<explainer>.jsonl:
    made from the explanations, the features, the dataset, the scorer and these options."""
    from lmmsae.fingerprint import canonical
    from lmmsae.plan import Unit
    from lmmsae.stages.explain import features_input

    c = ctx.config
    opts = ctx.stage_options("score", Options)
    features, external = features_input(opts.features)
    common = {"dataset": c.dataset.to_dict(), "seed": c.seed, "judge": c.explainer.to_dict(),
              "max_latents": opts.max_latents}
    out = []
    for explainer in opts.explainers or [c.explainer.name]:
        inputs, outside = explanations_input(ctx, explainer)
        for name, spec in zip(scorer_names([s.name for s in c.scorers]), c.scorers):
            out.append(Unit("score", f"{artifacts.SCORES_DIR}/{name}/{explainer}.jsonl",
                            {**common, "scorer": spec.to_dict()}, (*inputs, *features),
                            external={**external, **outside}))
        if opts.labeller != "none":
            out.append(Unit("score", f"{artifacts.CATEGORIES_DIR}/{explainer}.jsonl",
                            {"labeller": opts.labeller, "categories": canonical(opts.categories),
                             "judge": c.explainer.to_dict()}, inputs, external=outside))
    return out


def explanations_input(ctx, explainer: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The run's explain output for its own explainer; another explainer's file is an external input."""
    from lmmsae.fingerprint import digest, path_fingerprint
    from lmmsae.stages.explain import output_path

    rel = output_path(explainer)
    if explainer == ctx.config.explainer.name:
        return (rel,), {}
    if ctx.run is None or not ctx.run.file(rel).exists():
        return (), {rel: "absent"}
    state = ctx.run.state(rel)
    made = digest([state.get("fingerprint"), state.get("instance")]) if state else path_fingerprint(ctx.run.file(rel))
    return (), {rel: made}


def run(ctx) -> None:
    from lmmsae.backends.cache import ResponseCache
    from lmmsae.explainers.store import read_explanations
    from lmmsae.scorers.base import ScoringContext, label_of
    from lmmsae.stages.explain import explained_latents, features_path, output_path
    from lmmsae.stores.features import FeatureStore

    opts = ctx.stage_options("score", Options)
    todo = [u for u in ctx.units("score") if u.todo]
    if not todo:
        return
    features = features_path(ctx, opts.features)
    dataset = ctx.build("dataset")
    names = scorer_names([s.name for s in ctx.config.scorers])
    specs = dict(zip(names, ctx.config.scorers))
    built: dict[str, Any] = {}
    with FeatureStore(features) as store:
        for explainer in opts.explainers or [ctx.config.explainer.name]:
            units = [u for u in todo if u.path.endswith(f"/{explainer}.jsonl")]
            if not units:
                continue
            path = ctx.run.file(output_path(explainer))
            if not path.exists():
                raise UserError(f"no explanations at {path}: run `lmmsae explain --explainer {explainer}` first")
            wanted = explained_latents(ctx.run, output_path(explainer))
            explanations = [e for (_, lat), e in sorted(read_explanations(path).items())
                            if wanted is None or lat in set(wanted)]
            if opts.max_latents:
                explanations = explanations[:opts.max_latents]
            labels = {int(e.latent): label_of(e) for e in explanations if label_of(e)}
            scoring = ScoringContext(dataset=dataset, seed=ctx.config.seed, device=ctx.config.device,
                                     dtype=ctx.config.dtype, labels=labels, judge=ctx.config.explainer,
                                     cache=ResponseCache(ctx.run.file(artifacts.RESPONSE_CACHE)))
            for unit in units:
                if unit.path.startswith(artifacts.CATEGORIES_DIR):
                    categorize = categorizer(opts, scoring)
                    ctx.start(unit)
                    write_categories(explanations, categorize, ctx.run.file(unit.path))
                    ctx.finish(unit, labeller=opts.labeller)
                    continue
                name = Path(unit.path).parent.name
                if name not in built:
                    component, options = ctx.component("scorers", specs[name])
                    built[name] = component.load()(options)
                scorer = built[name]
                ctx.start(unit)
                ctx.log("score", scorer=name, explainer=explainer, features=len(explanations))
                counts = score_explanations(scorer, name, explanations, store_records(store, scorer, dataset,
                                            ctx.config.seed), scoring, ctx.run.file(unit.path))
                if counts["failed"] and not counts["ok"]:
                    raise UserError(f"score {name}: every one of {counts['failed']} features failed "
                                    f"({counts['reason']}); fix the cause and rerun with --resume")
                ctx.finish(unit, **counts)


def scorer_names(names: list[str]) -> list[str]:
    """Unique output names: a repeated scorer name gets -1, -2, ..."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        out.append(name if name not in seen else f"{name}-{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return out


def store_records(store, scorer, dataset, seed: int) -> Callable[[int], Any]:
    """latent -> the FeatureRecord this scorer asks for (images and ground truth from `dataset`)."""
    request = scorer.record_request()
    return lambda latent: store.record(latent, dataset=dataset, seed=seed, **request)


def score_explanations(scorer, scorer_name: str, explanations: Iterable, record_for: Callable[[int], Any],
                       ctx, out: str | Path) -> dict[str, Any]:
    """Score each explanation not yet in `out` (JSONL, appended; records that failed are tried again).
    A scorer error on one feature becomes a `failed` record for it; returns the counts over `out`."""
    from lmmsae.jsonl import JsonlWriter
    from lmmsae.progress import track
    from lmmsae.scorers.base import label_of, skipped
    from lmmsae.scorers.store import read_scores

    explanations = list(explanations)
    done = {k for k, r in read_scores(out).items() if r.get("status") != "failed"}
    todo = [e for e in explanations if (e.hookpoint, int(e.latent)) not in done]
    identity = scorer.identity()
    with JsonlWriter(out) as writer:
        for e in track(todo, total=len(todo), description=f"score {scorer_name}", unit="features"):
            label = label_of(e)
            if label:
                try:
                    result = scorer.score(record_for(int(e.latent)), e, ctx)
                except UserError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one feature's failure is recorded, not fatal
                    result = {"score": None, "status": "failed",
                              "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            else:
                result = skipped(f"explanation status {e.status!r}: {e.reason or 'no text'}")
            writer.write({"latent": int(e.latent), "hookpoint": e.hookpoint, "explainer": e.explainer,
                          "scorer": scorer_name, "label": label, **result, "scorer_options": identity})
    wanted = {(e.hookpoint, int(e.latent)) for e in explanations}
    records = [r for k, r in read_scores(out).items() if k in wanted]
    failed = [r for r in records if r.get("status") == "failed"]
    return {"scored": len(records), "ok": sum(r.get("status") == "ok" for r in records), "failed": len(failed),
            "retry": len(failed), "reason": failed[-1].get("reason") if failed else None}


def categorizer(opts: Options, scoring) -> Callable[[str], list[str]]:
    """label -> categories, by keywords or by asking an explainer backend."""
    from lmmsae.scorers.categories import ask_category, keyword_categories

    if opts.labeller == "keywords":
        return keyword_categories
    judge = scoring.backend(opts.labeller)
    return lambda label: ask_category(judge, label, opts.categories)


def write_categories(explanations: Iterable, categorize: Callable[[str], list[str]], out: str | Path) -> None:
    import json

    from lmmsae.atomic import atomic_write_text
    from lmmsae.scorers.base import label_of

    lines = []
    for e in explanations:
        label = label_of(e)
        if label:
            lines.append(json.dumps({"latent": int(e.latent), "hookpoint": e.hookpoint, "label": label,
                                     "categories": categorize(label)}))
    atomic_write_text(out, "".join(line + "\n" for line in lines))
