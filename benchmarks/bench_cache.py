"""Feature-cache benchmark: throughput against a bare model forward, and peak memory vs. images.

    python benchmarks/bench_cache.py                       # both parts, toy world sizes
    python benchmarks/bench_cache.py --part speed --n-images 512 --latents 16384
    python benchmarks/bench_cache.py --part memory --memory-images 256

Speed: on the same images in one process, alternating, (a) the bare pipeline: dataset sample +
adapter.prepare + adapter.forward to the hookpoint (the adapter stops after that block), and (b) the
same plus `lmmsae cache`'s work (SAE encode of every token, maps, pooling, top-N / sample / negatives
tracking, statistics, checkpoints). Overhead = time(b) / time(a) - 1 (target <= 20% at 16k latents).
A full forward (logits, all blocks) is timed too, for reference.

Memory: `cache_features` in a fresh process on 1x, 4x and 16x the images; peak RSS (ru_maxrss) of
each, and the growth over the 1x run (target: flat).

Uses the shipped toy LLaVA when its weights exist, else a random model of the same shape. The SAE is a
random TopK SAE (k=32) with the requested number of latents on the LM's residual stream.
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


def load_model(tmp: Path, device: str = "cpu"):
    """(adapter, hookpoint, description): the toy LLaVA, or a random one of its shape."""
    from lmmsae import toyworld
    from lmmsae.models.llava import LlavaAdapter

    if (toyworld.LLAVA_DIR / "model.safetensors").is_file():
        path, what = str(toyworld.LLAVA_DIR), "toy LLaVA (trained)"
    else:
        from lmmsae.toyworld import train
        from lmmsae.toyworld.vocab import VOCAB

        path = tmp / "random-toy-llava"
        if not (path / "config.json").is_file():
            train.build_llava(len(VOCAB)).save_pretrained(path)
            train.build_processor().save_pretrained(path)
        what = "random LLaVA of the toy's shape (toy weights absent)"
    adapter = LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)), device=device)
    return adapter, adapter.resolve_hookpoints(["layers.2"])[0], what


def make_sae(d_in: int, n_latents: int, k: int = 32):
    import torch

    from lmmsae.saes.io import sae_class

    cls = sae_class("topk")
    torch.manual_seed(0)
    return cls(d_in, cls.Options(n_latents=n_latents, k=k)).eval()


def dataset(n: int):
    from lmmsae import toyworld
    from lmmsae.datasets.shapes import ShapesDataset

    return ShapesDataset(ShapesDataset.Options(n=n, image_size=toyworld.IMAGE_SIZE))


def speed(args) -> dict:
    import torch

    from lmmsae.stages.cache import Options, cache_features

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    adapter, hookpoint, what = load_model(tmp)
    sae = make_sae(adapter.d_model(hookpoint), args.latents)
    ds = dataset(args.n_images)
    bs = args.batch_size

    def bare(full: bool = False) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for a in range(0, len(ds), bs):
                batch = adapter.prepare([ds.sample(i) for i in range(a, min(a + bs, len(ds)))])
                adapter.logits(batch) if full else adapter.forward(batch, [hookpoint])
        return time.perf_counter() - start

    def cached() -> float:
        out = tmp / f"features-{time.monotonic_ns()}.h5"
        opts = Options(batch_size=bs, n_top=args.n_top, checkpoint_every=args.checkpoint_every)
        start = time.perf_counter()
        cache_features(adapter, sae, ds, hookpoint, out, opts)
        elapsed = time.perf_counter() - start
        size = out.stat().st_size
        out.unlink()
        return elapsed, size

    bare(), cached()  # warm-up
    runs = {"bare": [], "cache": [], "full": []}
    for _ in range(args.repeats):
        runs["bare"].append(bare())
        t, size = cached()
        runs["cache"].append(t)
        runs["full"].append(bare(full=True))
    best = {k: min(v) for k, v in runs.items()}
    return {
        "model": what, "hookpoint": hookpoint, "images": len(ds), "latents": args.latents, "n_top": args.n_top,
        "batch_size": bs, "threads": args.threads, "repeats": args.repeats,
        "bare_forward_images_per_s": len(ds) / best["bare"], "cache_images_per_s": len(ds) / best["cache"],
        "full_forward_images_per_s": len(ds) / best["full"],
        "overhead_vs_bare_forward": best["cache"] / best["bare"] - 1,
        "features_h5_mb": size / 2**20, "seconds": runs,
    }


def memory_child(args) -> None:
    """One cache run; prints its peak RSS in MiB as JSON (run in a fresh process)."""
    import torch

    from lmmsae.stages.cache import Options, cache_features

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-mem-"))
    adapter, hookpoint, _ = load_model(Path(args.model_tmp))
    sae = make_sae(adapter.d_model(hookpoint), args.latents)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    cache_features(adapter, sae, dataset(args.child_images), hookpoint, tmp / "f.h5",
                   Options(batch_size=args.batch_size, n_top=args.n_top, checkpoint_every=args.checkpoint_every))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": args.child_images, "peak_rss_mib": peak, "rss_before_cache_mib": before,
                      "seconds": time.perf_counter() - start}))


def memory(args) -> dict:
    model_tmp = tempfile.mkdtemp(prefix="bench-cache-model-")
    rows = []
    for factor in (1, 4, 16):
        n = args.memory_images * factor
        cmd = [sys.executable, __file__, "--part", "memory-child", "--child-images", str(n), "--model-tmp", model_tmp,
               "--latents", str(args.latents), "--batch-size", str(args.batch_size), "--n-top", str(args.n_top),
               "--threads", str(args.threads), "--checkpoint-every", str(args.checkpoint_every)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append({"factor": factor, **json.loads(out)})
    base = rows[0]["peak_rss_mib"]
    for r in rows:
        r["growth_over_1x_mib"] = r["peak_rss_mib"] - base
    return {"latents": args.latents, "n_top": args.n_top, "runs": rows}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["speed", "memory", "both", "memory-child"], default="both")
    p.add_argument("--n-images", type=int, default=512)
    p.add_argument("--memory-images", type=int, default=256)
    p.add_argument("--latents", type=int, default=16384)
    p.add_argument("--n-top", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--checkpoint-every", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", 2)))
    p.add_argument("--child-images", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--model-tmp", default="", help=argparse.SUPPRESS)
    p.add_argument("--json", help="Also write the results to this file.")
    args = p.parse_args(argv)
    if args.part == "memory-child":
        return memory_child(args)
    results = {}
    if args.part in ("speed", "both"):
        results["speed"] = speed(args)
        s = results["speed"]
        print(f"[speed] {s['model']}, {s['images']} images, {s['latents']} latents, batch {s['batch_size']}, "
              f"{s['threads']} threads")
        print(f"  bare forward to {s['hookpoint']}: {s['bare_forward_images_per_s']:.1f} img/s; "
              f"cache: {s['cache_images_per_s']:.1f} img/s; overhead {100 * s['overhead_vs_bare_forward']:.1f}% "
              f"(full forward: {s['full_forward_images_per_s']:.1f} img/s)")
    if args.part in ("memory", "both"):
        results["memory"] = memory(args)
        for r in results["memory"]["runs"]:
            print(f"[memory] {r['factor']:>2}x = {r['images']:>5} images: peak RSS {r['peak_rss_mib']:.0f} MiB "
                  f"(+{r['growth_over_1x_mib']:.0f} over 1x), {r['seconds']:.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
