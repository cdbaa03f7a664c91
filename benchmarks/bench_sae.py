"""TopK SAE training throughput and final FVU: lmmsae vs sparsify vs SAELens (issue 5).

    python benchmarks/bench_sae.py                  # full size, a few minutes on 2 cores
    python benchmarks/bench_sae.py --quick          # tiny sizes, < 1 min: checks the script works
    python benchmarks/bench_sae.py --sparsify-python /path/to/venv/bin/python --saelens-python ...

Every contender trains one TopK SAE (d=768, 12,288 latents, k=32, batch 4,096, fp32, Adam at
lr = 2e-4 / sqrt(12288 / 2^14), constant, no AuxK) for one epoch over the same 2^18 tokens in the
same order, in a fresh subprocess with 2 threads, then reconstructs 16,384 held-out tokens; FVU
is computed by the same code for all. tokens/s leaves out the first 2 (warm-up) steps.

The activations are synthetic, made once per run (seeded) and saved to a temporary .npy: each
token is a sum of 24 unit atoms out of 8,192 (Zipf-distributed frequencies, exponential
coefficients) plus an offset and Gaussian noise.

Contenders, each with its own initialisation and its own decoder-norm handling:
  ours      lmmsae.trainer.Trainer + TopKSAE (b_dec = batch mean like sparsify, warmup off).
  sparsify  `eai-sparsify` SparseCoder with sparsify's Trainer inner loop replayed on in-memory
            batches (b_dec = first-batch mean, unit-norm W_dec before each forward, loss = fvu,
            parallel gradient removed, Adam step). Its LR schedule (1,000 warm-up steps, linear
            decay) is replaced by the common constant LR; SPARSIFY_DISABLE_TRITON=1 (CPU run).
  saelens   `sae-lens` TopKTrainingSAE through SAETrainer.step (its own loss, grad clip 1.0,
            dead-latent bookkeeping), constant LR, aux_loss_coefficient=0, autocast off; its b_dec
            starts at the first-batch mean like the others (SAELens itself starts it at zero).
  limit     the dense encoder forward alone, addmm(b_enc, x, W_enc^T) for a 4,096-token batch:
            no trainer can beat it, since every token needs all 12,288 pre-activations.

sparsify and SAELens run under their own interpreters (venvs made with --system-site-packages
so they share the system torch); a contender whose python is missing is reported "not installed".
Results: a table on stdout and benchmarks/results/bench_sae.json (or --json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHENV = Path(os.environ.get("LMMSAE_BENCHENV", "/work/.benchenv"))

FULL = dict(d=768, n_latents=12288, k=32, batch=4096, n_train=2**18, n_eval=16384,
            n_atoms=8192, k_true=24, noise=0.1)
QUICK = dict(d=64, n_latents=512, k=32, batch=512, n_train=2**13, n_eval=2048,
             n_atoms=256, k_true=8, noise=0.1)
WARMUP_STEPS = 2
SEED = 1234


# ---- data ---------------------------------------------------------------------------------
def make_data(cfg: dict, path: Path, seed: int = SEED) -> None:
    """[n_train + n_eval, d] float32 activations, deterministic for a seed, written to `path`."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(seed)
    d, n_atoms, k_true = cfg["d"], cfg["n_atoms"], cfg["k_true"]
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    freq = 1.0 / torch.arange(1, n_atoms + 1, dtype=torch.float64) ** 0.8
    freq = freq[torch.randperm(n_atoms, generator=g)]
    offset = torch.randn(d, generator=g) * 2.0 / math.sqrt(d) * math.sqrt(k_true)
    n = cfg["n_train"] + cfg["n_eval"]
    out = np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float32, shape=(n, d))
    chunk = 8192
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        idx = torch.multinomial(freq, m * k_true, replacement=True, generator=g).view(m, k_true)
        coef = torch.empty(m, k_true, dtype=torch.float64).exponential_(generator=g).float()
        x = torch.nn.functional.embedding_bag(idx, atoms, per_sample_weights=coef, mode="sum")
        x += offset + cfg["noise"] * torch.randn(m, d, generator=g) * math.sqrt(k_true / d)
        out[start:start + m] = x.numpy()
    out.flush()
    del out


# ---- workers (each runs in a fresh subprocess; only torch, numpy and its library) -----------
def _load(data: str, cfg: dict):
    import numpy as np
    import torch

    arr = np.load(data)  # fully in memory: no disk reads while timing
    train = torch.from_numpy(np.ascontiguousarray(arr[: cfg["n_train"]]))
    held = torch.from_numpy(np.ascontiguousarray(arr[cfg["n_train"]:]))
    return train, held


def _batches(train, batch: int):
    for start in range(0, train.shape[0] - batch + 1, batch):
        yield train[start:start + batch]


def _fvu(held, reconstruct, chunk: int = 4096) -> float:
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the held-out tokens (float64 sums)."""
    import torch

    err = 0.0
    with torch.no_grad():
        for start in range(0, held.shape[0], chunk):
            x = held[start:start + chunk]
            err += float((reconstruct(x).double() - x.double()).pow(2).sum())
        total = float((held.double() - held.double().mean(0)).pow(2).sum())
    return err / total


def _timed_loop(train, batch: int, step) -> dict:
    times, fvus = [], []
    for x in _batches(train, batch):
        t0 = time.perf_counter()
        fvu = step(x)
        times.append(time.perf_counter() - t0)
        fvus.append(fvu)
    timed = times[WARMUP_STEPS:]
    return {"steps": len(times), "timed_steps": len(timed), "tokens_timed": len(timed) * batch,
            "seconds_timed": sum(timed), "tokens_per_s": len(timed) * batch / sum(timed),
            "warmup_seconds": sum(times[:WARMUP_STEPS]), "step_seconds": times,
            "train_fvu_last": fvus[-1]}


def worker_limit(cfg: dict, data: str) -> dict:
    import torch

    train, _ = _load(data, cfg)
    torch.manual_seed(0)
    lin = torch.nn.Linear(cfg["d"], cfg["n_latents"])
    W, b = lin.weight.detach(), lin.bias.detach()
    x = train[: cfg["batch"]].contiguous()
    out = torch.empty(cfg["batch"], cfg["n_latents"])
    times = []
    for i in range(12):
        t0 = time.perf_counter()
        torch.addmm(b, x, W.T, out=out)
        times.append(time.perf_counter() - t0)
    times = sorted(times[WARMUP_STEPS:])
    median = times[len(times) // 2]
    flops = 2 * cfg["batch"] * cfg["d"] * cfg["n_latents"]
    return {"tokens_per_s": cfg["batch"] / median, "gflops": flops / median / 1e9, "median_seconds": median,
            "best_tokens_per_s": cfg["batch"] / times[0]}


def worker_ours(cfg: dict, data: str) -> dict:
    import torch

    import lmmsae
    from lmmsae.saes.topk import TopKSAE
    from lmmsae.trainer import Entry, Trainer, TrainerOptions

    train, held = _load(data, cfg)
    torch.manual_seed(0)
    sae = TopKSAE(cfg["d"], TopKSAE.Options(n_latents=cfg["n_latents"], k=cfg["k"], init_b_dec="mean"))
    trainer = Trainer([Entry("ours", "h", sae)],
                      TrainerOptions(lr=cfg["lr"], warmup_steps=1, grad_clip=1.0, log_every=0))

    def step(x):
        return trainer.step({"h": x})["ours"]["fvu"]

    result = _timed_loop(train, cfg["batch"], step)
    inference = trainer.inference_saes()["ours"]
    result["fvu"] = _fvu(held, lambda x: inference.decode_sparse(inference.encode_sparse(x)))
    result["version"] = getattr(lmmsae, "__version__", "")
    result["settings"] = "Trainer defaults but warmup_steps=1 and init_b_dec=mean; grad_clip 1.0 (default)"
    return result


def worker_sparsify(cfg: dict, data: str) -> dict:
    os.environ["SPARSIFY_DISABLE_TRITON"] = "1"  # its Triton decoder is CUDA-only
    import importlib.metadata

    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    train, held = _load(data, cfg)
    torch.manual_seed(0)
    sae = SparseCoder(cfg["d"], SparseCoderConfig(num_latents=cfg["n_latents"], k=cfg["k"], multi_topk=False,
                                                  normalize_decoder=True), device="cpu", dtype=torch.float32)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg["lr"])  # sparsify's fallback when bitsandbytes is absent
    num_tokens_since_fired = torch.zeros(sae.num_latents, dtype=torch.long)
    did_fire = torch.zeros(sae.num_latents, dtype=torch.bool)
    auxk_alpha = 0.0  # sparsify's default: no AuxK, dead_mask None
    state = {"step": 0}

    def step(x):  # sparsify.trainer.Trainer.fit, hook + optimiser part, for one SAE, loss_fn="fvu"
        if state["step"] == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=None, total_variance=total_variance)
        did_fire[out.latent_indices.flatten()] = True
        fvu = float(out.fvu.detach())
        loss = out.fvu + auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        num_tokens_since_fired.add_(x.shape[0])
        num_tokens_since_fired[did_fire] = 0
        did_fire.zero_()
        state["step"] += 1
        return fvu

    result = _timed_loop(train, cfg["batch"], step)
    result["fvu"] = _fvu(held, lambda x: sae.decode(*sae.encode(x)[:2]))
    result["version"] = importlib.metadata.version("eai-sparsify")
    result["settings"] = ("SparseCoder + replayed Trainer step; constant LR instead of its 1000-step warmup/"
                          "linear decay; eager embedding_bag decoder (SPARSIFY_DISABLE_TRITON=1)")
    return result


def worker_saelens(cfg: dict, data: str) -> dict:
    import importlib.metadata

    import torch
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    train, held = _load(data, cfg)
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=cfg["d"], d_sae=cfg["n_latents"], k=cfg["k"],
                                                aux_loss_coefficient=0.0, dtype="float32", device="cpu"))
    tcfg = SAETrainerConfig(total_training_samples=cfg["n_train"], train_batch_size_samples=cfg["batch"],
                            lr=cfg["lr"], lr_end=cfg["lr"], lr_scheduler_name="constant", lr_warm_up_steps=0, device="cpu",
                            autocast=False, n_checkpoints=0, save_final_checkpoint=False)
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=iter(()), evaluator=None)
    with torch.no_grad():  # SAELens starts b_dec at zero; give it the same first-batch mean as the others
        sae.b_dec.copy_(train[: cfg["batch"]].mean(0))

    def step(x):
        out = trainer.step(x)
        trainer.n_training_steps += 1
        with torch.no_grad():
            return float((out.sae_out - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())

    result = _timed_loop(train, cfg["batch"], step)
    sae.eval()
    result["fvu"] = _fvu(held, lambda x: sae(x))
    result["version"] = importlib.metadata.version("sae-lens")
    result["settings"] = ("TopKTrainingSAE via SAETrainer.step: its defaults (decoder_init_norm 0.1, "
                          "rescale_acts_by_decoder_norm, grad clip 1.0), b_dec = first-batch mean, aux_loss_coefficient=0, "
                          "constant LR, autocast off")
    return result


WORKERS = {"limit": worker_limit, "ours": worker_ours, "sparsify": worker_sparsify, "saelens": worker_saelens}


def run_worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    cfg = json.loads(args.cfg)
    result = WORKERS[args.worker](cfg, args.data)
    result["threads"] = torch.get_num_threads()
    result["torch"] = torch.__version__
    Path(args.out).write_text(json.dumps(result) + "\n")


# ---- driver ---------------------------------------------------------------------------------
def _spawn(python: str, name: str, cfg: dict, data: Path, tmp: Path, threads: int, timeout: float) -> dict:
    out = tmp / f"{name}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               SPARSIFY_DISABLE_TRITON="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH", "")]))
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--cfg", json.dumps(cfg), "--data", str(data),
           "--out", str(out), "--threads", str(threads)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if proc.returncode != 0 or not out.is_file():
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [""]
        if any("ModuleNotFoundError" in line for line in lines[-3:]):
            return {"error": f"not installed ({lines[-1].strip()})"}
        return {"error": f"failed (exit {proc.returncode}): {lines[-1].strip()}", "stderr_tail": lines[-15:]}
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.perf_counter() - start
    return result


def _python_for(path: str | None, default: Path) -> str | None:
    p = Path(path) if path else default
    return str(p) if p.is_file() else None


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (d=64, 512 latents, 2^13 tokens)")
    p.add_argument("--sparsify-python", default=None,
                   help=f"python with eai-sparsify (default {BENCHENV}/sparsify/bin/python)")
    p.add_argument("--saelens-python", default=None,
                   help=f"python with sae-lens (default {BENCHENV}/saelens/bin/python)")
    p.add_argument("--only", default="limit,ours,sparsify,saelens", help="comma-separated contenders to run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per contender")
    p.add_argument("--json", default=None, help="results file (default benchmarks/results/bench_sae[_quick].json)")
    p.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--cfg", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return run_worker(args)

    cfg = dict(QUICK if args.quick else FULL)
    cfg["lr"] = 2e-4 / math.sqrt(cfg["n_latents"] / 2**14)
    pythons = {"limit": sys.executable, "ours": sys.executable,
               "sparsify": _python_for(args.sparsify_python, BENCHENV / "sparsify/bin/python"),
               "saelens": _python_for(args.saelens_python, BENCHENV / "saelens/bin/python")}
    wanted = [n for n in ("limit", "ours", "sparsify", "saelens") if n in args.only.split(",")]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-sae-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "acts.npy"
        t0 = time.perf_counter()
        make_data(cfg, data)
        print(f"data: {cfg['n_train']} train + {cfg['n_eval']} held-out tokens, d={cfg['d']} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
        for name in wanted:
            if pythons[name] is None:
                results[name] = {"error": "not installed"}
            else:
                results[name] = _spawn(pythons[name], name, cfg, data, tmp, args.threads, args.timeout)
            r = results[name]
            msg = r.get("error") or f"{r['tokens_per_s']:.0f} tokens/s" + (f", FVU {r['fvu']:.4f}" if "fvu" in r else "")
            print(f"  {name}: {msg}", flush=True)

    def tps(name):
        return results.get(name, {}).get("tokens_per_s")

    ratios = {}
    for other in ("sparsify", "saelens", "limit"):
        if tps("ours") and tps(other):
            ratios[f"ours/{other}"] = tps("ours") / tps(other)
    report = {"config": {**cfg, "threads": args.threads, "warmup_steps_excluded": WARMUP_STEPS,
                         "quick": args.quick, "seed": SEED},
              "results": results, "ratios": ratios,
              "target": "ours >= 1.5x sparsify tokens/s at equal or better FVU"}
    if tps("ours") and tps("sparsify") and "fvu" in results["ours"] and "fvu" in results["sparsify"]:
        report["target_met"] = bool(ratios["ours/sparsify"] >= 1.5
                                    and results["ours"]["fvu"] <= results["sparsify"]["fvu"])
    print_table(report)
    path = Path(args.json) if args.json else HERE / "results" / ("bench_sae_quick.json" if args.quick
                                                                 else "bench_sae.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(report))
    path.write_text(json.dumps(slim, indent=2) + "\n")
    print(f"wrote {path}")
    return report


def print_table(report: dict) -> None:
    cfg, results = report["config"], report["results"]
    print(f"\nTopK SAE training: d={cfg['d']}, {cfg['n_latents']} latents, k={cfg['k']}, batch {cfg['batch']}, "
          f"{cfg['n_train']} tokens, fp32, {cfg['threads']} threads, lr {cfg['lr']:.3g}")
    print(f"{'contender':<10} {'tokens/s':>10} {'held-out FVU':>13} {'ours / it':>10}")
    ours = results.get("ours", {}).get("tokens_per_s")
    for name in ("ours", "sparsify", "saelens", "limit"):
        if name not in results:
            continue
        r = results[name]
        if "error" in r:
            print(f"{name:<10} {r['error'].splitlines()[0][:60]}")
            continue
        fvu = f"{r['fvu']:.4f}" if "fvu" in r else "-"
        ratio = f"{ours / r['tokens_per_s']:.2f}x" if ours and name != "ours" else "-"
        label = "limit*" if name == "limit" else name
        print(f"{label:<10} {r['tokens_per_s']:>10.0f} {fvu:>13} {ratio:>10}")
    if "limit" in results and "gflops" in results["limit"]:
        print(f"* dense encoder forward alone (addmm, batch {cfg['batch']}): "
              f"{results['limit']['gflops']:.0f} GFLOP/s")
    if "target_met" in report:
        print(f"target (>= 1.5x sparsify at equal or better FVU): {'met' if report['target_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
