"""Collection throughput against a bare forward pass of the same model on the same batches.

    python benchmarks/bench_collect.py                 # tiny random LLaVA shaped like the toy model
    python benchmarks/bench_collect.py --model toy     # the shipped toy LLaVA (when its weights exist)

"bare" = processor + model(**inputs) under no_grad (what any user must run); "collect" = the whole
`collect` path: processor, token map, forward with capture hooks, token selection, h5 writes. Both
see the same pre-drawn samples in the same batches; runs alternate and the best of --repeats counts.
Prints tokens/s of each and the overhead of collect over bare (target <= 10%), once with
stop_early=False (like for like: every block runs) and once with the default early stop.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Frozen:
    """A dataset over pre-drawn samples, so drawing costs neither side anything."""

    def __init__(self, samples):
        self._samples = samples

    def iter_from(self, start, stop=None):
        return iter(self._samples[start:stop])

    def identity(self):
        return {"name": "frozen", "n": len(self._samples)}

    def __len__(self):
        return len(self._samples)

    def sample(self, i):
        return self._samples[i]


def build_tiny(path: Path) -> Path:
    """A random LLaVA with the toy model's shapes (96 px, patch 12, 4+4 layers)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    import tiny

    torch.manual_seed(0)
    vision = CLIPVisionConfig(image_size=96, patch_size=12, hidden_size=192, intermediate_size=768,
                              num_hidden_layers=4, num_attention_heads=4)
    text = LlamaConfig(vocab_size=len(tiny.VOCAB), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tiny.VOCAB["<image>"],
                         image_seq_length=64, vision_feature_select_strategy="default", vision_feature_layer=-1)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    ip = CLIPImageProcessor(size={"shortest_edge": 96}, crop_size={"height": 96, "width": 96})
    LlavaProcessor(image_processor=ip, tokenizer=tiny.tokenizer(), patch_size=12, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (random, toy-shaped), 'toy', or a checkpoint path")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--hookpoint", default="layers.2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.models.llava import LlavaAdapter
    from lmmsae.stages.collect import Options, collect

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-collect-"))
    checkpoint = str(build_tiny(tmp / "tiny")) if args.model == "tiny" else args.model
    ds = ShapesDataset(ShapesDataset.Options(n=args.samples))
    data = Frozen([ds.sample(i) for i in range(args.samples)])
    batches = [data._samples[i:i + args.batch_size] for i in range(0, args.samples, args.batch_size)]

    def bare(adapter) -> tuple[float, int]:
        n_tokens, t0 = 0, time.perf_counter()
        proc = adapter.processor
        for chunk in batches:
            inputs = proc(text=[adapter.text_for(s.prompt or adapter.options.prompt, True) for s in chunk],
                          images=[s.image for s in chunk], return_tensors="pt", padding=True).to(adapter.device)
            with torch.no_grad():
                adapter.model(**inputs, use_cache=False)
            n_tokens += int(inputs["attention_mask"].sum())
        return time.perf_counter() - t0, n_tokens

    def collected(adapter, k) -> tuple[float, int]:
        out = tmp / f"a{k}.h5"
        t0 = time.perf_counter()
        info = collect(adapter, data, [args.hookpoint], out, Options(batch_size=args.batch_size, kinds=["text", "image", "image_newline", "special"]))
        elapsed = time.perf_counter() - t0
        out.unlink()
        return elapsed, info["n_tokens"]

    print(f"model={args.model} samples={args.samples} batch={args.batch_size} hookpoint={args.hookpoint} "
          f"threads={args.threads} device={args.device}")
    for stop_early in (False, True):
        adapter = LlavaAdapter(LlavaAdapter.Options(checkpoint="toy" if args.model == "toy" else checkpoint,
                                                    stop_early=stop_early), device=args.device)
        bare(adapter)  # warm up
        b_best = c_best = float("inf")
        for k in range(args.repeats):
            tb, nb = bare(adapter)
            tc, nc = collected(adapter, k)
            b_best, c_best = min(b_best, tb), min(c_best, tc)
        rb, rc = nb / b_best, nc / c_best
        print(f"stop_early={stop_early!s:5}  bare {rb:10.0f} tokens/s   collect {rc:10.0f} tokens/s   "
              f"ratio collect/bare = {rc / rb:.3f}   overhead = {100 * (b_best and (c_best / b_best - 1)):+.1f}%")


if __name__ == "__main__":
    main()
