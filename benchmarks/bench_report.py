"""How fast a run's report opens from disk in headless Chromium (navigation timing), and its size.

Target: index.html of the default run (200 features) loads in under 1 s. Each load is cold for the
page (about:blank in between; the browser itself is warmed on run.html first).
Run: python benchmarks/bench_report.py runs/<name> [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

TIMING = ("const t = performance.getEntriesByType('navigation')[0];"
          "return [t.domContentLoadedEventEnd - t.startTime, t.loadEventEnd - t.startTime];")


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    from lmmsae.report.chromium import headless_chromium

    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    report = Path(args.run_dir) / "report"
    first = sorted(report.glob("features/*.html"), key=lambda p: int(p.stem))[0]
    pages = [report / "index.html", first, report / "run.html"]
    print(f"report: {size(report) / 1e6:.1f} MB in {sum(1 for _ in report.rglob('*.png'))} PNGs and "
          f"{sum(1 for _ in report.rglob('*.html'))} pages; index.html {size(report / 'index.html') / 1e3:.0f} kB")
    print(f"{'page':28s} {'DOMContentLoaded ms':>20s} {'load ms':>9s}  (median of {args.repeat})")
    with headless_chromium() as driver:
        driver.get((report / "run.html").resolve().as_uri())
        for page in pages:
            times = []
            for _ in range(args.repeat):
                driver.get("about:blank")
                driver.get(page.resolve().as_uri())
                times.append(driver.execute_script(TIMING))
            dom, load = (statistics.median(t[i] for t in times) for i in range(2))
            print(f"{str(page.relative_to(report)):28s} {dom:20.0f} {load:9.0f}")


if __name__ == "__main__":
    main()
