"""Stage `explain`: the run's explainer describes each chosen feature from its top masked images.

Reads `cache/features.h5`, writes `explanations/<explainer>.jsonl` (one Explanation per feature,
appended as answers arrive; a failed feature is recorded with its reason), a sidecar
`explanations/<explainer>.json` naming the explainer and its options, and answers in the response
cache `explanations/responses.sqlite`. A re-run resumes: features already recorded are skipped
(failed ones too when the model answered, unless `retry_failed`; those that got no answer are asked
again), and answers already paid for come from the cache.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import click

from lmmsae import artifacts
from lmmsae.errors import UserError


@dataclass
class Options:
    n_features: int = 200               # how many latents to explain (0 = every alive one)
    order: Literal["first", "random", "frequent"] = "first"   # first = lowest ids (the paper's "first N")
    latents: list[int] = field(default_factory=list)          # explicit latents (overrides n_features/order)
    min_images: int = 1                 # alive = fires on at least this many images
    min_active_share: float = 0.0       # skip latents lit on less than this share of their top images (mean over them)
    examples: int = 0                   # examples fetched per feature (0 = the explainer's n_images, else 5)
    selection: Literal["top", "stratified", "random"] = "top"  # which activating images are shown
    retry_failed: bool = False          # ask again for features recorded as failed
    refiner: str = ""                   # "" = no label refining; "self" = the explainer's backend; or a backend name
    refiner_options: dict[str, Any] = field(default_factory=dict)
    label_words: int = 6                # refined labels have at most this many words
    features: str = ""                  # another features.h5 (default: this run's cache/features.h5)
    cache_responses: bool = True        # keep every model answer in explanations/responses.sqlite

    def __post_init__(self):
        if self.n_features < 0 or self.examples < 0 or self.min_images < 0:
            raise ValueError("explain.n_features, examples and min_images must be >= 0")
        if not 0.0 <= self.min_active_share <= 1.0:
            raise ValueError("explain.min_active_share must be between 0 and 1")


CLI_PARAMS = [
    click.Option(["--n-features"], type=int, help="How many features to explain (0 = all alive)."),
    click.Option(["--latents"], type=int, multiple=True, help="Explain exactly these latents (repeatable)."),
    click.Option(["--retry-failed"], is_flag=True, help="Ask again for features recorded as failed."),
    click.Option(["--refiner"], help="Refine explanations into short labels with this backend ('self' = the explainer's)."),
]


def output_path(explainer_id: str, folder: str = artifacts.EXPLANATIONS_DIR) -> str:
    return f"{folder}/{explainer_id}.jsonl"


EXTENT = ("n_features", "order", "latents", "min_images", "retry_failed")  # a change adds or retries records


def features_input(explicit: str = "") -> tuple[tuple[str, ...], dict[str, str]]:
    """(run inputs, external inputs) for the features a stage reads: this run's cache, or a file."""
    from lmmsae.fingerprint import path_fingerprint

    if explicit:
        return (), {"features": path_fingerprint(explicit, "features file")}
    return (artifacts.FEATURES,), {}


def units(ctx) -> list:
    """explanations/<explainer>.jsonl: one record per feature, made from the features, the explainer
    and these options; asking for more features extends it."""
    from lmmsae.fingerprint import without
    from lmmsae.plan import Unit

    c = ctx.config
    opts = ctx.stage_options("explain", Options)
    inputs, external = features_input(opts.features)
    options = {"explainer": c.explainer.to_dict(), "dataset": c.dataset.to_dict(), "seed": c.seed,
               "explain": without(opts, *EXTENT, "cache_responses")}
    return [Unit("explain", output_path(c.explainer.name), options, inputs, external=external,
                 extent={k: getattr(opts, k) for k in EXTENT}, extensible=True)]


def run(ctx) -> None:
    opts = ctx.stage_options("explain", Options)
    (unit,) = ctx.units("explain")
    if not ctx.wants(unit):
        return
    name = ctx.config.explainer.name
    features = features_path(ctx, opts.features)
    from lmmsae.backends.cache import ResponseCache
    from lmmsae.stores.features import FeatureStore

    with FeatureStore(features) as store:
        latents = choose_latents(store, opts, ctx.config.seed)
        component, explainer_options = ctx.component("explainer")
        dataset = ctx.build("dataset")
        cache = ResponseCache(ctx.run.file(artifacts.RESPONSE_CACHE)) if opts.cache_responses else None
        explainer = component.load()(explainer_options, name=name, cache=cache)
        refiner = make_refiner(opts, explainer, cache)
        ctx.start(unit)
        try:
            summary = explain_features(store, explainer, ctx.run.file(unit.path), latents, dataset=dataset, opts=opts,
                                       seed=ctx.config.seed, refiner=refiner, log=ctx.log)
        finally:
            explainer.close()
            if cache is not None:
                cache.close()
    ctx.log("explain-done", explainer=name, **{k: v for k, v in summary.items() if k != "reasons"})
    line = (f"explained {summary['ok']} of {summary['features']} features with {name} "
            f"({summary['failed']} failed){_reasons_line(summary['reasons'])}")
    if summary["features"] and not summary["ok"]:
        raise UserError(f"{line}: every feature failed, so explain is not complete; fix the cause and rerun "
                        f"with --resume (answers already received are not asked again)")
    ctx.finish(unit, latents=latents, **summary)
    click.echo(line, err=True)


def explained_latents(run, path: str) -> list[int] | None:
    """The features a complete explain output was made for (it may hold records of more)."""
    if run.is_complete(path):
        latents = (run.state(path).get("info") or {}).get("latents")
        return [int(x) for x in latents] if latents is not None else None
    return None


def features_path(ctx, explicit: str = "") -> Path:
    """The features.h5 to read: this run's (the plan checked it is current), or another one
    (`features: path`), which must be complete (its `complete` attribute, or for a file without
    one, a state record beside it)."""
    if not explicit:
        return ctx.run.file(artifacts.FEATURES)
    from lmmsae.stores.features import FeatureStore

    path = Path(explicit)
    with FeatureStore(path) as store:
        complete = store.complete
    if complete is None:
        from lmmsae.rundir import RunDir

        complete = RunDir(path.parent).is_complete(path.name)
    if not complete:
        run = path.resolve().parent.parent if path.parent.name == Path(artifacts.FEATURES).parent.name else None
        how = (f"lmmsae cache --resume --name {run.name} --out {run.parent}" if run is not None
               else "lmmsae cache --resume --name <its run>")
        raise UserError(f"features file {str(path)!r} is incomplete (a cache stopped part-way): run `{how}` first")
    return path


def make_refiner(opts: Options, explainer, cache):
    """The label refiner's backend (with the run's response cache), or None."""
    if not opts.refiner:
        return None
    if opts.refiner == "self":
        if explainer.backend is None:
            raise UserError(f"explain.refiner: explainer {explainer.name!r} has no backend; name one instead")
        return explainer.backend
    from lmmsae import backends

    return backends.build(opts.refiner, opts.refiner_options, cache=cache)


def choose_latents(store, opts: Options, seed: int) -> list[int]:
    """The latents to explain: explicit ones, else `n_features` alive ones (lit on at least
    `min_active_share` of their top images) in the chosen order."""
    if opts.latents:
        missing = [lat for lat in opts.latents if lat not in set(store.latents)]
        if missing:
            raise UserError(f"latents {missing[:5]} are not in {store.path}; it caches {len(store.latents)} latents")
        return [int(x) for x in opts.latents]
    alive = store.alive_latents(opts.min_images)
    if opts.min_active_share:
        shown = opts.examples or 5
        alive = [lat for lat in alive if active_share(store, lat, shown) >= opts.min_active_share]
    if opts.order == "random":
        import numpy as np

        alive = [int(x) for x in np.random.default_rng([int(seed), 7]).permutation(alive)]
    elif opts.order == "frequent":
        alive = sorted(alive, key=lambda lat: (-store.stats(lat)["images_active"], lat))
    return alive[: opts.n_features] if opts.n_features else alive


def active_share(store, latent: int, n: int = 5) -> float:
    """Mean share of the map where `latent` fires (> 0) over its `n` top images: how much of an image
    an explainer is shown lit. A feature lit on a patch or two ("some stripes") has no region a label
    can name (see docs/toyworld.md)."""
    maps = store.entries(latent, "top")["maps"][:n]
    return float((maps > 0).mean()) if maps.size else 0.0


def records_for(store, latents: Iterable[int], n: int, selection: str, dataset, render: str, seed: int) -> Iterator:
    """FeatureRecords read lazily (only as the explainer asks for them: images are not all held at once)."""
    for latent in latents:
        yield store.record(latent, n=n, selection=selection, dataset=dataset,
                           render=None if render == "original" else render, seed=seed)


def explain_features(store, explainer, out_path: str | Path, latents: list[int], dataset=None, opts: Options | None = None,
                     seed: int = 0, refiner=None, log=None) -> dict[str, Any]:
    """Explain `latents` from `store` into `out_path` (JSONL), resuming; returns counts and failure reasons.

    Plain function of its inputs: usable without a run directory.
    """
    from lmmsae.explainers.refine import refine
    from lmmsae.explainers.store import ExplanationWriter, read_explanations, rewrite
    from lmmsae.progress import track

    opts = opts or Options()
    out_path = Path(out_path)
    hookpoint = store.hookpoint
    done = {lat for (hp, lat), e in read_explanations(out_path).items()
            if hp == hookpoint and (e.status == "ok" or answered(e) and not opts.retry_failed)}
    todo = [lat for lat in latents if lat not in done]
    request = explainer.record_request()
    records = records_for(store, todo, opts.examples or request["n"], opts.selection, dataset, request["render"],
                          seed)
    _write_identity(out_path, explainer)
    if log:
        log("explain-start", explainer=explainer.name, features=len(latents), todo=len(todo))
    with ExplanationWriter(out_path) as writer:
        for explanation in track(explainer.explain(records), total=len(todo), description=f"explain ({explainer.name})",
                                 unit="features"):
            writer.write(explanation)
    if refiner is not None:
        current = read_explanations(out_path)
        refined = refine(list(current.values()), refiner, max_words=opts.label_words)
        if refined != list(current.values()):
            rewrite(out_path, refined)
    return summarize(out_path, latents, hookpoint)


def summarize(out_path: str | Path, latents: list[int], hookpoint: str) -> dict[str, Any]:
    from lmmsae.explainers.store import read_explanations

    records = read_explanations(out_path)
    wanted = [records.get((hookpoint, lat)) for lat in latents]
    ok = sum(1 for e in wanted if e is not None and e.status == "ok")
    failed = [e for e in wanted if e is not None and e.status != "ok"]
    reasons = Counter(_reason_kind(e.reason) for e in failed)
    return {"features": len(latents), "ok": ok, "failed": len(failed),
            "retry": sum(1 for e in failed if not answered(e)),
            "missing": sum(1 for e in wanted if e is None), "reasons": dict(reasons.most_common(10))}


def answered(explanation) -> bool:
    """Whether a failed feature got an answer (unusable, or "cannot explain"): asking again gives the
    same. One that got none (a request error) is asked again whenever the stage runs (--resume)."""
    meta = explanation.meta or {}
    return "answer" in meta or "descriptions" in meta or bool(meta.get("unexplainable"))


def _reason_kind(reason: str | None) -> str:
    return (reason or "unknown").split(":")[0][:80]


def _reasons_line(reasons: dict[str, int]) -> str:
    return "; " + ", ".join(f"{k}: {v}" for k, v in reasons.items()) if reasons else ""


def _write_identity(out_path: Path, explainer) -> None:
    """explanations/<explainer>.json: which component, version and options made the records."""
    from lmmsae import __version__
    from lmmsae.atomic import atomic_write_text

    identity = {**explainer.identity(), "lmmsae_version": __version__}
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(identity, indent=2, default=str) + "\n")
