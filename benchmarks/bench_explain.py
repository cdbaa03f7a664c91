"""Explanations per minute of the API explainers against a local server with injected latency.

Starts the fake Anthropic/OpenAI-compatible server of the tests on 127.0.0.1 with 200 ms per request,
and explains features (5 masked 48 px images each, base64 PNG, real client libraries) at concurrency
1 and 16. Target: concurrency 16 is at least 12x faster than concurrency 1.

    python benchmarks/bench_explain.py [--latency 0.2] [--backend anthropic] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "explainers"))

from records import make_records  # noqa: E402


class ServerProcess:
    """The fake server in its own process, so its CPU time is not the client's (as with a real server)."""

    def __init__(self, latency: float):
        script = ROOT / "tests" / "explainers" / "fake_lmm_server.py"
        self.proc = subprocess.Popen([sys.executable, str(script), "--latency", str(latency), "--constant"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def stats(self) -> dict:
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def explainer(backend: str, url: str, concurrency: int):
    """The registered explainer `backend` (the paper's prompt over that API backend)."""
    from lmmsae import plugins

    options = {"base_url": url, "api_key_env": "BENCH_KEY", "concurrency": concurrency}
    if backend == "openai-compatible":
        options.update(model="bench", base_url=url + "/v1")
    component = plugins.get("explainers", backend)
    return component.load()(component.options(options), name=backend)


def measure(server: ServerProcess, backend: str, concurrency: int, n_features: int) -> dict:
    colours = ["red", "green", "blue", "yellow", "orange"]
    records = make_records([colours[i % len(colours)] for i in range(n_features)])
    x = explainer(backend, server.url, concurrency)
    server.stats()  # reset the counters
    start = time.perf_counter()
    out = list(x.explain(records))
    seconds = time.perf_counter() - start
    assert len(out) == n_features and all(e.status == "ok" for e in out)
    stats = server.stats()
    assert stats["requests"] == n_features
    return {"backend": backend, "concurrency": concurrency, "features": n_features, "seconds": seconds,
            "per_minute": 60.0 * n_features / seconds, "max_inflight": stats["max_inflight"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--backend", choices=["anthropic", "openai-compatible"], default="openai-compatible")
    parser.add_argument("--features", type=int, default=160, help="features at concurrency 16 (1/8 of it at 1)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_KEY", "bench-key")
    server = ServerProcess(args.latency)
    try:
        measure(server, args.backend, 4, 8)  # warm-up: imports, first connections
        serial = measure(server, args.backend, 1, max(args.features // 8, 5))
        parallel = measure(server, args.backend, 16, args.features)
    finally:
        server.stop()
    speedup = parallel["per_minute"] / serial["per_minute"]
    for r in (serial, parallel):
        print(f"{r['backend']:18s} concurrency {r['concurrency']:2d}: {r['features']:4d} features in "
              f"{r['seconds']:6.2f} s = {r['per_minute']:7.1f} explanations/min (max in flight {r['max_inflight']})")
    print(f"speed-up {speedup:.1f}x (target >= 12x) at {args.latency * 1000:.0f} ms latency")
    if args.json:
        Path(args.json).write_text(json.dumps({"latency": args.latency, "runs": [serial, parallel],
                                               "speedup": speedup}, indent=2) + "\n")


if __name__ == "__main__":
    main()
