"""Screenshots of a run's report (its index and one feature page) with headless Chromium, for the docs.

    python -m lmmsae.report.screenshots runs/<name> [--out docs/img] [--feature LATENT]

Writes <out>/report-index.png, <out>/report-feature.png (default feature: the one furthest above
its random baseline on the first scorer) and <out>/report-run.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmmsae import artifacts


def pick_feature(report: Path) -> int:
    """The feature scoring furthest above its random baseline on the first scorer, else the first page."""
    pages = sorted(int(p.stem) for p in (report / "features").glob("*.html") if p.stem.isdigit())
    if not pages:
        from lmmsae.errors import UserError

        raise UserError(f"{report} has no feature pages: build the report first (`lmmsae report --resume --name ...`)")
    from lmmsae.report.data import read_all_scores
    from lmmsae.report.index import score_parts

    scores = read_all_scores(report.parent)
    first = scores[min(scores)] if scores else {}
    records = first[min(first)] if first else []
    deltas = [(score_parts(r)[2], int(r["latent"])) for r in records
              if score_parts(r)[2] is not None and int(r["latent"]) in pages]
    return max(deltas)[1] if deltas else pages[0]


def take(run_dir: str | Path, out: str | Path, feature: int | None = None, width: int = 1280) -> list[Path]:
    from lmmsae.report.chromium import headless_chromium

    report = Path(run_dir) / artifacts.REPORT_DIR
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    feature = pick_feature(report) if feature is None else feature
    shots = [("report-index.png", report / "index.html", 820),
             ("report-feature.png", report / "features" / f"{feature}.html", 1000),
             ("report-run.png", report / "run.html", 1000)]
    written = []
    with headless_chromium(width, 900) as driver:
        for name, page, height in shots:
            driver.set_window_size(width, height)
            driver.get(page.resolve().as_uri())
            driver.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
            driver.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "Promise.all([...document.images].map(i => i.complete ? 1 : new Promise(r => i.onload = i.onerror = r)))"
                ".then(done);")
            driver.save_screenshot(str(out / name))
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmmsae.report.screenshots", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder holding report/ (runs/<name>)")
    parser.add_argument("--out", default="docs/img", help="where the PNGs go (default docs/img)")
    parser.add_argument("--feature", type=int, help="latent of the feature page to show")
    args = parser.parse_args(argv)
    for path in take(args.run_dir, args.out, args.feature):
        print(path, file=sys.stderr)


if __name__ == "__main__":
    main()
