"""What the report shows, gathered from a run directory into plain Python values.

Reads only files other stages wrote (metrics.json, curve.jsonl, scores, explanations, categories,
features.h5, steering, compare), and with `include` only those outputs (run-relative unit paths: the
ones current for the run's config); writes nothing. features.h5 is read through FeatureStore: per
latent its statistics (firing frequency over images and tokens), the pooled activations of its top
examples and of a uniform sample of the images where it fires (the activation histogram), and over
all latents the firing frequencies (the feature-density histogram)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmmsae import artifacts
from lmmsae.jsonl import read_jsonl


@dataclass
class Feature:
    """One latent as its pages show it."""

    latent: int
    explanations: dict[str, dict[str, Any]] = field(default_factory=dict)   # explainer -> explanation record
    scores: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # explainer -> scorer -> record
    categories: dict[str, list[str]] = field(default_factory=dict)           # explainer -> categories
    stats: dict[str, Any] | None = None       # FeatureStore.stats
    top_activations: list[float] = field(default_factory=list)
    sampled_activations: list[float] = field(default_factory=list)   # uniform sample of activating images
    steering: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunData:
    name: str
    hookpoint: str = ""
    sae: dict[str, Any] = field(default_factory=dict)                 # hookpoint -> metrics.json
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)   # sae folder -> curve points
    scores: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # scorer -> explainer -> records
    categories: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    explainers: list[str] = field(default_factory=list)   # the run's, then compare's as "<id> (compare)"
    scorers: list[str] = field(default_factory=list)
    features: dict[int, Feature] = field(default_factory=dict)
    density: list[float] = field(default_factory=list)    # firing frequency over images of every cached latent
    n_images: int = 0
    n_cached: int = 0
    compare: dict[str, Any] | None = None                 # compare/summary.json
    steering_files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- single files

Allowed = Callable[[str], bool]


def everything(relative: str) -> bool:
    return True



def read_sae_metrics(run_dir: Path, allowed: Allowed = everything) -> dict[str, Any]:
    """hookpoint -> the SAE's metrics.json (as written by the train stage)."""
    out: dict[str, Any] = {}
    if not allowed(artifacts.SAE_DIR):
        return out
    for path in sorted(Path(run_dir, artifacts.SAE_DIR).glob(f"**/{artifacts.SAE_METRICS}")):
        hookpoint = str(path.parent.relative_to(Path(run_dir, artifacts.SAE_DIR)))
        try:
            out[hookpoint] = json.loads(path.read_text())
        except ValueError:
            out[hookpoint] = {"error": f"unreadable {path.name}"}
    return out


def read_curves(run_dir: Path, allowed: Allowed = everything) -> dict[str, list[dict[str, Any]]]:
    """sae folder -> curve points by step (the last record of a repeated step wins)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not allowed(artifacts.SAE_DIR):
        return out
    for path in sorted(Path(run_dir, artifacts.SAE_DIR).glob(f"**/{artifacts.SAE_CURVE}")):
        points = {int(r["step"]): r for r in read_jsonl(path) if isinstance(r.get("step"), int)}
        out[str(path.parent.relative_to(Path(run_dir, artifacts.SAE_DIR)))] = [points[s] for s in sorted(points)]
    return out


def read_all_scores(run_dir: Path, folder: str = artifacts.SCORES_DIR,
                    allowed: Allowed = everything) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """scores[scorer][explainer] = score records (latest per feature, in feature order)."""
    from lmmsae.scorers.store import read_scores

    out: dict[str, dict[str, list]] = {}
    for path in sorted(Path(run_dir, folder).glob("*/*.jsonl")):
        if not allowed(str(path.relative_to(run_dir))):
            continue
        out.setdefault(path.parent.name, {})[path.stem] = [r for _, r in sorted(read_scores(path).items())]
    return out


def read_categories(run_dir: Path, allowed: Allowed = everything) -> dict[str, dict[int, list[str]]]:
    """categories[explainer][latent] = concept categories."""
    out: dict[str, dict[int, list[str]]] = {}
    for path in sorted(Path(run_dir, artifacts.CATEGORIES_DIR).glob("*.jsonl")):
        if not allowed(str(path.relative_to(run_dir))):
            continue
        cats = {}
        for row in read_jsonl(path):
            try:
                cats[int(row["latent"])] = [str(c) for c in row["categories"]]
            except (KeyError, TypeError, ValueError):
                continue
        out[path.stem] = cats
    return out


def read_explanation_files(run_dir: Path, folder: str = artifacts.EXPLANATIONS_DIR,
                           allowed: Allowed = everything) -> dict[str, dict[tuple[str, int], dict[str, Any]]]:
    """explainer -> (hookpoint, latent) -> explanation as a dict."""
    import dataclasses

    from lmmsae.explainers.store import read_explanations

    return {path.stem: {key: dataclasses.asdict(e) for key, e in read_explanations(path).items()}
            for path in sorted(Path(run_dir, folder).glob("*.jsonl")) if allowed(str(path.relative_to(run_dir)))}


def read_steering(run_dir: Path, allowed: Allowed = everything) -> dict[str, list[dict[str, Any]]]:
    """steering name -> records."""
    return {p.stem: list(read_jsonl(p)) for p in sorted(Path(run_dir, artifacts.STEERING_DIR).glob("*.jsonl"))
            if allowed(str(p.relative_to(run_dir)))}


# ----------------------------------------------------------------------------- the whole run


def gather(run_dir: str | Path, max_features: int = 0, include: set[str] | None = None) -> RunData:
    """Everything the pages show. Features: those explained or scored (all of them, or the first
    `max_features` by latent); with none, the first alive latents of the cache. `include`: the
    run-relative outputs it may read (None: all there are)."""
    run_dir = Path(run_dir)
    allowed: Allowed = everything if include is None else include.__contains__
    data = RunData(run_dir.name, sae=read_sae_metrics(run_dir, allowed), curves=read_curves(run_dir, allowed),
                   scores=read_all_scores(run_dir, allowed=allowed), categories=read_categories(run_dir, allowed))
    features_path = run_dir / artifacts.FEATURES
    store = None
    if features_path.is_file() and allowed(artifacts.FEATURES):
        from lmmsae.stores.features import FeatureStore

        store = FeatureStore(features_path)
        data.hookpoint = store.hookpoint
    try:
        scored = {e for by in data.scores.values() for e in by} | set(data.categories)  # score read their files
        explanations = read_explanation_files(run_dir, allowed=lambda rel: allowed(rel) or Path(rel).stem in scored)
        latents = _feature_latents(data, explanations, store, max_features)
        data.features = {lat: Feature(lat) for lat in latents}
        data.explainers = sorted({*explanations, *(e for by in data.scores.values() for e in by)})
        data.scorers = sorted(data.scores)
        for explainer, records in explanations.items():
            for (hookpoint, latent), rec in records.items():
                if latent in data.features and _same(hookpoint, data.hookpoint):
                    data.features[latent].explanations[explainer] = rec
        for scorer, by_explainer in data.scores.items():
            for explainer, records in by_explainer.items():
                for rec in records:
                    f = data.features.get(int(rec["latent"]))
                    if f is not None and _same(rec.get("hookpoint"), data.hookpoint):
                        f.scores.setdefault(explainer, {})[scorer] = rec
        for explainer, cats in data.categories.items():
            for latent, categories in cats.items():
                if latent in data.features:
                    data.features[latent].categories[explainer] = categories
        _add_compare(run_dir, data, allowed)
        _add_steering(run_dir, data, allowed)
        if store is not None:
            _add_statistics(store, data)
    finally:
        if store is not None:
            store.close()
    return data


def _same(hookpoint: Any, cached: str) -> bool:
    return not cached or not hookpoint or str(hookpoint) == cached


def _feature_latents(data: RunData, explanations, store, max_features: int) -> list[int]:
    latents = {lat for records in explanations.values() for (hp, lat) in records if _same(hp, data.hookpoint)}
    latents |= {int(r["latent"]) for by in data.scores.values() for records in by.values() for r in records
                if _same(r.get("hookpoint"), data.hookpoint)}
    if store is not None:
        cached = set(store.latents)
        latents = {lat for lat in latents if lat in cached}
        if not latents:
            latents = set(store.alive_latents()[:max_features or 200])
    latents = sorted(latents)
    return latents[:max_features] if max_features else latents


def _add_compare(run_dir: Path, data: RunData, allowed: Allowed) -> None:
    """compare's explainers join the run's, named "<id> (compare)", on the features the report shows."""
    path = run_dir / artifacts.COMPARE_SUMMARY
    if not path.is_file() or not allowed(artifacts.COMPARE_SUMMARY):
        return
    try:
        data.compare = json.loads(path.read_text())
    except ValueError:
        return
    names = set()
    for entrant, records in read_explanation_files(run_dir, f"{artifacts.COMPARE_DIR}/explanations", allowed).items():
        for (hookpoint, latent), rec in records.items():
            if latent in data.features and _same(hookpoint, data.hookpoint):
                data.features[latent].explanations[compared(entrant)] = rec
                names.add(compared(entrant))
    for scorer, by_entrant in read_all_scores(run_dir, f"{artifacts.COMPARE_DIR}/scores", allowed).items():
        for entrant, records in by_entrant.items():
            for rec in records:
                f = data.features.get(int(rec["latent"]))
                if f is not None and _same(rec.get("hookpoint"), data.hookpoint):
                    f.scores.setdefault(compared(entrant), {})[scorer] = rec
                    names.add(compared(entrant))
                    if scorer not in data.scorers:
                        data.scorers.append(scorer)
    data.explainers += sorted(names)


def compared(entrant: str) -> str:
    return f"{entrant} (compare)"


def _add_steering(run_dir: Path, data: RunData, allowed: Allowed) -> None:
    steering = read_steering(run_dir, allowed)
    data.steering_files = sorted(steering)
    for name, records in steering.items():
        for rec in records:
            feats = rec.get("feature")
            for latent in feats if isinstance(feats, list) else [feats]:
                if isinstance(latent, int) and latent in data.features:
                    data.features[latent].steering.append({**rec, "file": name})


def _add_statistics(store, data: RunData) -> None:
    import h5py
    import numpy as np

    data.n_images = store.n_images
    data.n_cached = len(store.latents)
    with h5py.File(store.path, "r") as f:  # one read of a documented dataset, not a stats() call per latent
        data.density = (f["stats/images_active"][...] / max(store.n_images, 1)).astype(float).tolist()
    for latent, feature in data.features.items():
        feature.stats = store.stats(latent)
        feature.top_activations = [float(x) for x in store.entries(latent, "top")["score"]]
        sample = store.entries(latent, "random")["score"]
        feature.sampled_activations = [float(x) for x in np.sort(sample)]
