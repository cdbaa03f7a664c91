"""CLI start-up time: `lmmsae --help` and `lmmsae plugins` against `python -c "import click"`.

Target: within 2x. Run: python benchmarks/bench_cli.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def best_of(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    py = sys.executable
    base = best_of([py, "-c", "import click"], args.repeat)
    rows = [("python -c 'import click'", base)]
    for label, cmd in [("lmmsae --help", [py, "-m", "lmmsae", "--help"]),
                       ("lmmsae plugins", [py, "-m", "lmmsae", "plugins"]),
                       ("lmmsae plugins --json", [py, "-m", "lmmsae", "plugins", "--json"])]:
        rows.append((label, best_of(cmd, args.repeat)))
    print(f"{'command':28s} {'median s':>9s} {'ratio':>6s}")
    for label, t in rows:
        print(f"{label:28s} {t:9.3f} {t / base:6.2f}x")


if __name__ == "__main__":
    main()
