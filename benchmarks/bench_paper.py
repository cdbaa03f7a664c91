"""The paper's proportions: collect and cache overhead and memory on a scaled LLaVA-NeXT-8B, side by side.

    python benchmarks/bench_paper.py                  # the table of docs/benchmarks.md ("paper proportions")
    python benchmarks/bench_paper.py --quick          # a small run that checks the script (~minutes)

The model is LLaVA-NeXT-8B's architecture (benchmarks/configs/llama3-llava-next-8b.json) with random
weights, scaled by --scale (default 1/8) keeping its proportions (lmmsae.models.random_init: widths x
scale, all 32 blocks, image tokens per view x ~scale). The SAE is a random TopK SAE of the paper's
shape relative to the model: 32 x d latents and k = 256 x scale (the paper: 131,072 latents, k=256 on
d=4,096), so SAE encode / forward-to-block-24 costs what it costs at full size (~0.09 in weights).
Images are the toy shapes at twice the scaled tile side, so each has the base view and 2x2 tiles, as
a square photo has at full size.

Speed, in one process on the same pre-drawn images and batches, alternating, best of --repeats:
  bare    = adapter.prepare + adapter.forward to the hookpoint (the forward stops after block 24);
  cache   = `lmmsae cache`'s whole path (encode every token, maps, top-N/random/negative tracking,
            statistics, features.h5);
  collect = `lmmsae collect`'s whole path (token map, capture, every non-padding token to activations.h5).
Overhead = time / bare - 1 (targets: cache <= 20%, collect <= 10%), by wall time (the figure, measured
alone) and by this process's CPU time (steadier on a shared machine). The cache's trackers fill during
the first n_top images (every active latent enters), so use several times n_top images (default 64).

Memory, each run in a fresh process: peak RSS during the run (VmHWM reset after the model is built;
peak CUDA memory on a GPU) of cache and of collect on 1x, 4x and 16x --memory-images images (target:
flat). Working memory = peak - RSS with model and SAE loaded; per image = the growth of the working
memory from one batch to a batch twice as large, divided by the batch size. Full-size estimate = the weights at full size (counted from the config) + the
measured working memory x 1/scale^2 (activations, the SAE's buffers and the cache's maps all grow as
tokens x width or latents x map size, each ~1/scale of the scaled run's): an estimate, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONFIG = HERE / "configs" / "llama3-llava-next-8b.json"
HOOKPOINT = "layers.24"
PAPER = {"d": 4096, "n_latents": 131072, "k": 256}


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Start the peak RSS (VmHWM) afresh, so it measures the run and not the model's construction."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args):
    """(adapter, sae, hookpoint): the scaled architecture and its proportionally sized TopK SAE."""
    import torch

    from lmmsae.models import load_adapter
    from bench_cache import make_sae

    adapter = load_adapter("llava-next", {"config": args.config, "random_init": True, "scale": args.scale},
                           device=args.device, dtype=args.dtype)
    hookpoint = adapter.resolve_hookpoints([HOOKPOINT])[0]
    d = adapter.d_model(hookpoint)
    n_latents = d * PAPER["n_latents"] // PAPER["d"]
    k = max(1, round(PAPER["k"] * args.scale))
    sae = make_sae(d, n_latents, k).to(adapter.device)
    torch.set_num_threads(args.threads)
    return adapter, sae, hookpoint


def samples(adapter, n: int, seed: int = 0):
    """Pre-drawn shapes images at twice the tile side: base view + 2x2 tiles each."""
    from bench_collect import Frozen

    from lmmsae.datasets.shapes import ShapesDataset

    side = 2 * int(adapter.config.vision_config.image_size)
    ds = ShapesDataset(ShapesDataset.Options(n=n, image_size=side, seed=seed))
    return Frozen([ds.sample(i) for i in range(n)])


class Clock:
    """Wall time and this process's CPU time (all threads): on a shared machine the CPU time is the
    steadier measure of the work each side does."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_bare(adapter, data, hookpoint, bs) -> Clock:
    import torch

    with Clock() as clock, torch.no_grad():
        for a in range(0, len(data), bs):
            adapter.forward(adapter.prepare([data.sample(i) for i in range(a, min(a + bs, len(data)))]), [hookpoint])
        _sync(adapter)
    return clock


def run_cache(adapter, sae, data, hookpoint, bs, tmp: Path, n_top: int) -> Clock:
    from lmmsae.stages.cache import Options, cache_features

    out = tmp / f"features-{time.monotonic_ns()}.h5"
    with Clock() as clock:
        cache_features(adapter, sae, data, hookpoint, out, Options(batch_size=bs, n_top=n_top, checkpoint_every=10**9))
        _sync(adapter)
    out.unlink()
    return clock


def run_collect(adapter, data, hookpoint, bs, tmp: Path) -> tuple[Clock, int]:
    from lmmsae.stages.collect import Options, collect

    out = tmp / f"activations-{time.monotonic_ns()}.h5"
    with Clock() as clock:
        info = collect(adapter, data, [hookpoint], out, Options(batch_size=bs))
        _sync(adapter)
    out.unlink()
    return clock, int(info["n_tokens"])


def _sync(adapter) -> None:
    import torch

    if adapter.device.type == "cuda":
        torch.cuda.synchronize(adapter.device)


def speed(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-paper-"))
    adapter, sae, hookpoint = build(args)
    data = samples(adapter, args.images)
    bs = args.batch_size
    warm = samples(adapter, bs, seed=1)
    run_bare(adapter, warm, hookpoint, bs), run_cache(adapter, sae, warm, hookpoint, bs, tmp, args.n_top)
    runs: dict[str, list[Clock]] = {"bare": [], "cache": [], "collect": []}
    tokens = 0
    for _ in range(args.repeats):
        runs["bare"].append(run_bare(adapter, data, hookpoint, bs))
        runs["cache"].append(run_cache(adapter, sae, data, hookpoint, bs, tmp, args.n_top))
        clock, tokens = run_collect(adapter, data, hookpoint, bs, tmp)
        runs["collect"].append(clock)
    wall = {k: min(c.wall for c in v) for k, v in runs.items()}
    cpu = {k: min(c.cpu for c in v) for k, v in runs.items()}
    return {
        "hookpoint": hookpoint, "images": len(data), "tokens": tokens, "tokens_per_image": tokens / len(data),
        "d_model": adapter.d_model(hookpoint), "n_latents": int(sae.cfg["n_latents"]), "k": int(sae.cfg["k"]),
        "images_per_s": {k: len(data) / v for k, v in wall.items()},
        "overhead": {k: wall[k] / wall["bare"] - 1 for k in ("cache", "collect")},
        "overhead_cpu_time": {k: cpu[k] / cpu["bare"] - 1 for k in ("cache", "collect")},
        "seconds": {k: [c.wall for c in v] for k, v in runs.items()},
        "cpu_seconds": {k: [c.cpu for c in v] for k, v in runs.items()},
    }


def memory_child(args) -> None:
    """One cache or collect run in this fresh process; prints its memory figures as JSON."""
    import torch

    baseline = rss_mib()
    adapter, sae, hookpoint = build(args)
    data = samples(adapter, args.child_images)
    loaded = rss_mib()
    if adapter.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(adapter.device)
        cuda_loaded = torch.cuda.memory_allocated(adapter.device) / 2**20
    tmp = Path(tempfile.mkdtemp(prefix="bench-paper-mem-"))
    reset_peak_rss()
    start = time.perf_counter()
    if args.part == "cache-child":
        run_cache(adapter, sae, data, hookpoint, args.batch_size, tmp, args.n_top)
    else:
        run_collect(adapter, data, hookpoint, args.batch_size, tmp)
    out = {"images": args.child_images, "rss_baseline_mib": baseline, "rss_loaded_mib": loaded,
           "peak_rss_mib": peak_rss_mib(), "seconds": time.perf_counter() - start}
    if adapter.device.type == "cuda":
        out.update(cuda_loaded_mib=cuda_loaded, cuda_peak_mib=torch.cuda.max_memory_allocated(adapter.device) / 2**20)
    print(json.dumps(out))


def memory(args) -> dict:
    """Per tool: 1x, 4x, 16x images at the batch size (flatness), and one run at twice the batch size
    (the per-image slope)."""
    def child(tool: str, images: int, batch_size: int) -> dict:
        cmd = [sys.executable, __file__, "--part", f"{tool}-child", "--child-images", str(images),
               *child_args(args, batch_size)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    rows = {}
    for tool in ("cache", "collect"):
        rows[tool] = [{"factor": f, "batch_size": args.batch_size, **child(tool, args.memory_images * f, args.batch_size)}
                      for f in (1, 4, 16)]
        double = 2 * args.batch_size
        rows[tool].append({"factor": None, "batch_size": double, **child(tool, double, double)})
    return rows


def child_args(args, batch_size: int) -> list[str]:
    return ["--config", args.config, "--scale", str(args.scale), "--batch-size", str(batch_size),
            "--n-top", str(args.n_top), "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]


def weights(config_path: str, scale: float) -> tuple[int, int]:
    """(parameters of the full-size model, of the scaled one), counted on the meta device."""
    import torch
    import transformers

    from lmmsae.models.random_init import byte_tokenizer, read_config, scale_config

    def count(config) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in transformers.LlavaNextForConditionalGeneration._from_config(config).parameters())

    full = read_config(config_path)
    return count(full), count(scale_config(full, scale, vocab_min=len(byte_tokenizer())))


def extrapolate(args, mem: dict, bytes_per_weight: int) -> dict:
    """Per image and full-size estimates from the 1x memory runs (see the module docstring)."""
    full_params, scaled_params = weights(args.config, args.scale)
    sae_full = 2 * PAPER["n_latents"] * PAPER["d"] * 4  # encoder + decoder, fp32
    out = {"full_params": full_params, "scaled_params": scaled_params}
    for tool, rows in mem.items():
        one, sixteen, double = rows[0], rows[2], rows[3]
        working = one["peak_rss_mib"] - one["rss_loaded_mib"]
        per_image = max(0.0, (double["peak_rss_mib"] - double["rss_loaded_mib"]) - working) / args.batch_size
        full_weights = full_params * bytes_per_weight / 2**20 + (sae_full / 2**20 if tool == "cache" else 0)
        out[tool] = {
            "working_mib": working, "per_image_mib": per_image, "full_per_image_mib": per_image / args.scale ** 2,
            "full_peak_estimate_gib": (one["rss_baseline_mib"] + full_weights + working / args.scale ** 2) / 1024,
            "growth_16x_over_1x_mib": sixteen["peak_rss_mib"] - one["peak_rss_mib"],
        }
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["all", "speed", "memory", "cache-child", "collect-child"], default="all")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--scale", type=float, default=1 / 8)
    p.add_argument("--images", type=int, default=64, help="images of the speed comparison")
    p.add_argument("--memory-images", type=int, default=8, help="images of the 1x memory run (then 4x, 16x)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n-top", type=int, default=32)
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", 2)))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--quick", action="store_true", help="scale 1/32, few images: checks the script")
    p.add_argument("--child-images", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", help="Also write the results to this file.")
    args = p.parse_args(argv)
    from lmmsae.models.devices import resolve_device

    args.device = resolve_device(args.device)
    if args.quick:
        args.scale, args.images, args.memory_images, args.batch_size, args.repeats = 1 / 32, 8, 2, 2, 1
    if args.part.endswith("-child"):
        return memory_child(args)
    results = {"scale": args.scale, "batch_size": args.batch_size, "threads": args.threads, "device": args.device,
               "dtype": args.dtype}
    if args.part in ("all", "speed"):
        s = results["speed"] = speed(args)
        print(f"[speed] LLaVA-NeXT-8B architecture x{args.scale:g} (d={s['d_model']}, {s['tokens_per_image']:.0f} "
              f"tokens/image), TopK SAE {s['n_latents']} latents k={s['k']}, {s['images']} images, batch "
              f"{args.batch_size}, {args.threads} threads, {args.device}")
        for k, v in s["images_per_s"].items():
            extra = (f"  overhead {100 * s['overhead'][k]:+.1f}% (by CPU time {100 * s['overhead_cpu_time'][k]:+.1f}%)"
                     if k in s["overhead"] else "")
            print(f"  {k:8s} {v:8.2f} images/s{extra}")
    if args.part in ("all", "memory"):
        mem = results["memory"] = memory(args)
        for tool, rows in mem.items():
            for r in rows:
                gpu = f", CUDA peak {r['cuda_peak_mib']:.0f} MiB" if "cuda_peak_mib" in r else ""
                what = f"{r['factor']:>2}x" if r["factor"] else "   "
                print(f"[memory] {tool:7s} {what} {r['images']:>4} images, batch {r['batch_size']}: peak RSS "
                      f"{r['peak_rss_mib']:.0f} MiB (model+SAE loaded {r['rss_loaded_mib']:.0f}){gpu}")
        est = results["full_size"] = extrapolate(args, mem, 2 if args.dtype != "float32" else 4)
        for tool in ("cache", "collect"):
            e = est[tool]
            print(f"[per image] {tool:7s} working memory {e['working_mib']:.0f} MiB at batch {args.batch_size}, "
                  f"{e['per_image_mib']:.1f} MiB/image at x{args.scale:g}; full size ~{e['full_per_image_mib']:.0f} "
                  f"MiB/image, peak ~{e['full_peak_estimate_gib']:.1f} GiB ({args.dtype}); 16x vs 1x images: "
                  f"{e['growth_16x_over_1x_mib']:+.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
