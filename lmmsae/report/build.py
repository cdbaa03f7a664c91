"""Build the report site of a run: report/{index.html, run.html, features/<latent>.html, img/, assets/,
summary.json}, and compare/index.html when the run has a comparison.

The site is written to report.partial/ and swapped in whole, so an interrupted build leaves the
previous report intact and no page of an old build lingers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lmmsae import artifacts


def build(run_dir: str | Path, opts, dataset=None, components: dict[str, Any] | None = None,
          include: set[str] | None = None, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Write the site from a run directory (`opts`: lmmsae.stages.report.Options); return summary.json's
    contents. Without `dataset`, pages have no pictures; `include`: the run-relative outputs it may
    read (None: all there are); `timings`: seconds per stage."""
    from lmmsae.atomic import atomic_write_text
    from lmmsae.report.assets import copy_assets
    from lmmsae.report.compare import write_compare_page
    from lmmsae.report.data import gather
    from lmmsae.report.feature import feature_page
    from lmmsae.report.index import index_page
    from lmmsae.report.run_page import run_page

    run_dir = Path(run_dir)
    final = run_dir / artifacts.REPORT_DIR
    tmp = run_dir / f"{artifacts.REPORT_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "features").mkdir(parents=True)
    data = gather(run_dir, opts.features, include)
    summary = make_summary(run_dir, data, opts, components, timings)
    atomic_write_text(tmp / Path(artifacts.SUMMARY).name, json.dumps(summary, indent=2, default=str) + "\n")
    copy_assets(tmp / "assets")
    gallery = write_images(run_dir, data, dataset, tmp / "img", opts)
    compare_href = "../compare/index.html" if data.compare is not None else None
    latents = list(data.features)
    for i, latent in enumerate(latents):
        neighbours = (latents[i - 1] if i else None, latents[i + 1] if i + 1 < len(latents) else None)
        html = feature_page(data, data.features[latent], gallery.get(latent, []), neighbours, compare_href,
                            opts.image_px)
        (tmp / "features" / f"{latent}.html").write_text(html, encoding="utf-8")
    (tmp / "run.html").write_text(run_page(data, summary, compare_href), encoding="utf-8")
    (tmp / "index.html").write_text(index_page(data, gallery, summary, compare_href), encoding="utf-8")
    _swap(tmp, final)
    if data.compare is not None:
        write_compare_page(run_dir, set(latents))
    return summary


def make_summary(run_dir: Path, data, opts, components: dict[str, Any] | None,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    from lmmsae.summary import DEFINITIONS, HEADER, rows, summarise_scores

    table = summarise_scores(data.scores, data.categories, opts.confidence)
    return {"run": run_dir.name, "components": components or {}, "sae": data.sae, "seconds": timings or {},
            "scores": table, "table": {"header": HEADER, "rows": rows(table)},
            "definitions": {**DEFINITIONS, "confidence": opts.confidence}}


def write_images(run_dir: Path, data, dataset, folder: Path, opts) -> dict[int, list[dict[str, Any]]]:
    """latent -> its top examples' PNG files (see images.py); empty without a dataset or cache."""
    features = run_dir / artifacts.FEATURES
    if dataset is None or data.n_cached == 0 or opts.images <= 0:
        return {}
    from lmmsae.errors import UserError
    from lmmsae.progress import track
    from lmmsae.report.images import write_feature_images
    from lmmsae.stores.features import FeatureStore

    out, failed = {}, []
    with FeatureStore(features) as store:
        for latent in track(list(data.features), description="report", unit="features"):
            try:
                out[latent] = write_feature_images(store, latent, dataset, folder / str(latent), opts.images,
                                                   opts.image_px)
            except UserError as exc:  # e.g. a dataset other than the cache's: pages without pictures
                out[latent] = []
                failed.append(str(exc))
    if failed:
        import sys

        print(f"report: {len(failed)} features without pictures, e.g.: {failed[0]}", file=sys.stderr)
    return out


def _swap(new: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)
