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
    labeller: str = "keywords"                           # keywords | none | an explainer name (asked per label)
    categories: list[str] = field(default_factory=lambda: list(PAPER_CATEGORIES))  # for an explainer labeller
    features: str = ""                                   # another features.h5 (default: this run's cache)


CLI_PARAMS = [
    click.Option(["--max-latents"], type=int, help="Score at most this many explained features (0 = all)."),
    click.Option(["--labeller"], help="Concept categories by 'keywords' (default), 'none', or an explainer name."),
]


def run(ctx) -> None:
    from lmmsae.scorers.base import ScoringContext, label_of
    from lmmsae.stores.features import FeatureStore
    from lmmsae.explainers.store import read_explanations

    opts = ctx.stage_options("score", Options)
    from lmmsae.stages.explain import features_path

    features = features_path(ctx, opts.features)
    component, ds_options = ctx.component("dataset")
    dataset = component.load()(ds_options)
    scorers = [(name, component.load()(options)) for name, (component, options) in
               zip(scorer_names([s.name for s in ctx.config.scorers]),
                   (ctx.component("scorers", s) for s in ctx.config.scorers))]
    with FeatureStore(features) as store:
        for explainer in opts.explainers or [ctx.config.explainer.name]:
            path = ctx.run.file(f"{artifacts.EXPLANATIONS_DIR}/{explainer}.jsonl")
            if not path.exists():
                raise UserError(f"no explanations at {path}: run `lmmsae explain --explainer {explainer}` first")
            explanations = [e for _, e in sorted(read_explanations(path).items())]
            if opts.max_latents:
                explanations = explanations[:opts.max_latents]
            labels = {int(e.latent): label_of(e) for e in explanations if label_of(e)}
            scoring = ScoringContext(dataset=dataset, seed=ctx.config.seed, device=ctx.config.device,
                                     dtype=ctx.config.dtype, labels=labels, judge=ctx.config.explainer)
            for name, scorer in scorers:
                rel = f"{artifacts.SCORES_DIR}/{name}/{explainer}.jsonl"
                if ctx.run.is_complete(rel):
                    continue
                ctx.log("score", scorer=name, explainer=explainer, features=len(explanations))
                n = score_explanations(scorer, name, explanations, store_records(store, scorer, dataset, ctx.config.seed),
                                       scoring, ctx.run.file(rel))
                ctx.run.mark_complete(rel, scored=n)
            rel = f"{artifacts.CATEGORIES_DIR}/{explainer}.jsonl"
            if opts.labeller != "none" and not ctx.run.is_complete(rel):
                write_categories(explanations, categorizer(opts, scoring), ctx.run.file(rel))
                ctx.run.mark_complete(rel, labeller=opts.labeller)


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
                       ctx, out: str | Path) -> int:
    """Score each explanation not yet in `out` (JSONL, appended); returns how many records `out` holds."""
    from lmmsae.progress import track
    from lmmsae.scorers.base import label_of, skipped
    from lmmsae.jsonl import JsonlWriter
    from lmmsae.scorers.store import read_scores

    explanations = list(explanations)
    done = read_scores(out)
    todo = [e for e in explanations if (e.hookpoint, int(e.latent)) not in done]
    identity = scorer.identity()
    with JsonlWriter(out) as writer:
        for e in track(todo, total=len(todo), description=f"score {scorer_name}", unit="features"):
            label = label_of(e)
            result = scorer.score(record_for(int(e.latent)), e, ctx) if label else \
                skipped(f"explanation status {e.status!r}: {e.reason or 'no text'}")
            writer.write({"latent": int(e.latent), "hookpoint": e.hookpoint, "explainer": e.explainer,
                          "scorer": scorer_name, "label": label, **result, "scorer_options": identity})
    return len(done) + len(todo)


def categorizer(opts: Options, scoring) -> Callable[[str], list[str]]:
    """label -> categories, by keywords or by asking an explainer backend."""
    from lmmsae.scorers.categories import ask_category, keyword_categories

    if opts.labeller == "keywords":
        return keyword_categories
    judge = scoring.explainer(opts.labeller)
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
