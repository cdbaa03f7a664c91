"""collect -> train -> cache on LLaVA-NeXT-8B's architecture (random weights), with per-stage figures.

    bash benchmarks/gpu_check.sh                                  # full size, on a GPU machine (< 8 min)
    SCALE=0.015625 IMAGES=4 bash benchmarks/gpu_check.sh          # tiny, on CPU (what the tests run)

Every stage runs as `lmmsae <stage>` in its own process (the CLI a user runs, on one run folder), so
its peak memory is its own: peak RSS, and on a GPU the peak CUDA memory torch allocated. Prints
tokens/s, images/s and peak memory per stage. The SAE has the paper's shape relative to the model
(32 x d latents, k = 256 x scale); images are toy shapes at twice the tile side (base view + 2x2 tiles,
~2,900 tokens per image at full size); the cache keeps latents 0:5000 as in examples/paper-llava-next.yaml.
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

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "llama3-llava-next-8b.json"
STAGES = ("collect", "train", "cache")
MARK = "GPU_CHECK "


def stage_child(args: list[str]) -> None:
    """Run one `lmmsae` command in this process; print its wall time and peak memory as JSON."""
    from lmmsae.cli import cli

    start = time.perf_counter()
    try:
        cli.main(args=args, prog_name="lmmsae", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001 - reported by the parent with the stage's name
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(1)
        raise
    out = {"seconds": time.perf_counter() - start,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_peak_mib"] = max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**20
    print(MARK + json.dumps(out), flush=True)


def shapes(scale: float) -> tuple[int, int]:
    """(d_model, image side for base view + 2x2 tiles) of the scaled architecture."""
    from lmmsae.models.random_init import byte_tokenizer, read_config, scale_config

    config = scale_config(read_config(str(CONFIG)), scale, vocab_min=len(byte_tokenizer()))
    return config.text_config.hidden_size, 2 * config.vision_config.image_size


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="")
    p.add_argument("--stage-child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage_child is not None:
        stage_child(args.stage_child)
        return 0
    d, side = shapes(args.scale)
    n_latents, k = 32 * d, max(1, round(256 * args.scale))
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu-check-"))
    config = [
        "--out", str(out), "--name", "gpu-check", "--device", args.device, "--dtype", args.dtype,
        "--model", "llava-next", "-o", f"model.config={CONFIG}", "-o", "model.random_init=true",
        "-o", f"model.scale={args.scale}", "--hookpoint", "layers.24",
        "--dataset", "shapes", "-o", f"dataset.n={args.images}", "-o", f"dataset.image_size={side}",
        "--sae", "topk", "-o", f"sae.n_latents={n_latents}", "-o", f"sae.k={k}",
        "-o", f"collect.batch_size={args.batch_size}", "-o", "collect.dtype=bfloat16",
        "-o", f"train.batch_size={max(64, round(4096 * args.scale))}", "-o", "train.eval_samples=16", "-o", f"train.model_batch_size={args.batch_size}",
        "-o", f"cache.batch_size={args.batch_size}", "-o", f"cache.latents=0:{min(5000, n_latents)}",
    ]
    print(f"LLaVA-NeXT-8B architecture x{args.scale:g} (random weights, d={d}), {args.images} images of {side}px, "
          f"TopK SAE {n_latents} latents k={k}, device {args.device}, dtype {args.dtype}; run folder {out / 'gpu-check'}",
          flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    figures = {}
    t0 = time.perf_counter()
    for i, stage in enumerate(STAGES):
        cmd = [sys.executable, __file__, "--stage-child", stage, *(config if i == 0 else
                                                                  ["--out", str(out), "--name", "gpu-check", "--resume"])]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{stage} failed (exit {done.returncode}):\n{done.stderr[-4000:]}", file=sys.stderr)
            return 1
        line = [x for x in done.stdout.splitlines() if x.startswith(MARK)][-1]
        figures[stage] = json.loads(line[len(MARK):])
    run = out / "gpu-check"
    tokens = {"collect": _collected_tokens(run), "train": _trained_tokens(run)}
    tokens["cache"] = tokens["collect"]  # the cache encodes every non-padding token of the same images
    print(f"{'stage':8s} {'seconds':>8s} {'tokens/s':>10s} {'images/s':>9s} {'peak RSS':>10s} {'peak CUDA':>10s}")
    for stage in STAGES:
        f = figures[stage]
        images = args.images if stage != "train" else float("nan")
        cuda = f"{f['cuda_peak_mib'] / 1024:8.1f} GiB" if "cuda_peak_mib" in f else f"{'-':>10s}"
        print(f"{stage:8s} {f['seconds']:8.1f} {tokens[stage] / f['seconds']:10.0f} {images / f['seconds']:9.2f} "
              f"{f['peak_rss_mib'] / 1024:6.1f} GiB {cuda}")
    print(f"total {time.perf_counter() - t0:.0f} s (target: under 480 s at full size on one GPU)")
    (run / "gpu_check.json").write_text(json.dumps({"scale": args.scale, "images": args.images, "tokens": tokens,
                                                    "stages": figures}, indent=2) + "\n")
    return 0


def _collected_tokens(run: Path) -> int:
    from lmmsae.stores.activations import ActivationReader

    return int(ActivationReader(run / "collect" / "activations.h5").n_tokens)


def _trained_tokens(run: Path) -> int:
    metrics = next((run / "sae").glob("*/metrics.json"))
    return int(json.loads(metrics.read_text())["training"]["tokens"])


if __name__ == "__main__":
    sys.exit(main())
