"""Data-parallel training (torchrun's setting: gradients all-reduced) on CPU with 2 processes and
the gloo backend gives the same SAEs and logged metrics as one process on the whole batches.

The first test drives Trainer directly from 2 spawned ranks, each feeding its half of every global
batch; the second runs the real `lmmsae train` stage under `python -m torch.distributed.run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from lmmsae import plugins
from lmmsae.trainer import Entry, Trainer, TrainerOptions, shard

D, STEPS, BATCH = 16, 25, 64
# every architecture whose training step is independent of how the batch is split across ranks
# (BatchTopK picks its top k*N over each rank's share, so it is not; see docs/saes.md)
ARCHS = {"topk": dict(k=4, auxk_k=8, auxk_alpha=1 / 32), "matryoshka": dict(k=4, prefixes=[8]), "relu": {}, "gated": {},
         "jumprelu": {}}
ATOL = 1e-5  # float32 sums over 2 shares vs one batch, through 25 Adam steps


def data() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    atoms = torch.nn.functional.normalize(torch.randn(48, D, generator=g), dim=1)
    out = []
    for _ in range(STEPS):
        coef = torch.rand(BATCH, 48, generator=g) * (torch.rand(BATCH, 48, generator=g) < 0.08)
        out.append(coef @ atoms + 0.5 + 0.01 * torch.randn(BATCH, D, generator=g))
    return out


def make_trainer() -> Trainer:
    torch.manual_seed(0)
    entries = []
    for arch, options in ARCHS.items():
        comp = plugins.get("saes", arch)
        entries.append(Entry(arch, "h", comp.load()(D, comp.options({"n_latents": 64, **options}))))
    # dead_window small so TopK's AuxK loss (dead latents) runs too; normalize_inputs tests the scale broadcast
    return Trainer(entries, TrainerOptions(warmup_steps=5, normalize_inputs=True, dead_window_tokens=3 * BATCH))


def train(rank: int = 0, size: int = 1) -> tuple[dict[str, dict[str, torch.Tensor]], dict, list]:
    trainer = make_trainer()
    history = []
    for x in data():
        history.append(trainer.step(shard({"h": x}, rank, size)))
    weights = {name: {k: v.detach().clone() for k, v in sae.export_tensors().items()}
               for name, sae in trainer.inference_saes().items()}
    return weights, {"tokens": trainer.tokens, "steps": trainer.step_count,
                     "scales": {e.name: e.input_scale for e in trainer.entries}}, history


def _worker(rank: int, size: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    try:
        weights, info, history = train(rank, size)
        torch.save({"weights": weights, "info": info, "history": history}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    single_weights, single_info, single_history = train()
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}")
        assert got["info"]["steps"] == single_info["steps"] == STEPS
        assert got["info"]["tokens"] == single_info["tokens"] == STEPS * BATCH  # tokens of all ranks
        for name, scale in single_info["scales"].items():
            assert got["info"]["scales"][name] == pytest.approx(scale, rel=1e-6)
        for name, tensors in single_weights.items():
            for key, want in tensors.items():
                assert torch.allclose(got["weights"][name][key], want, atol=ATOL, rtol=1e-4), \
                    (rank, name, key, float((got["weights"][name][key] - want).abs().max()))
        # the logged metrics (loss terms, l0, dead fraction) are the global batch's on every rank
        for step, (mine, want) in enumerate(zip(got["history"], single_history)):
            for name in want:
                assert mine[name].keys() == want[name].keys()
                for key, value in want[name].items():
                    assert mine[name][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (rank, step, name, key)
    assert "auxk" in single_history[-1]["topk"]  # the dead-latent path was exercised


# ---- the real stage under torchrun ----------------------------------------------------------------

def _run_dir(root: Path, n_tokens: int = 24 * 40, d: int = 16) -> None:
    """runs/r with run.yaml and a complete collect/activations.h5 of one hookpoint."""
    import numpy as np

    from lmmsae import artifacts
    from lmmsae.config import resolve
    from lmmsae.rundir import RunDir
    from lmmsae.stores.activations import TOKEN_COLUMNS, ActivationWriter

    config = resolve(overrides=[("hookpoints", ["h"]), ("sae", {"name": "topk", "k": 4, "n_latents": 64}),
                                ("name", "r"), ("out", str(root))])
    run = RunDir.create(root, "r")
    run.write_config(config)
    g = torch.Generator().manual_seed(1)
    atoms = torch.nn.functional.normalize(torch.randn(48, d, generator=g), dim=1)
    coef = torch.rand(n_tokens, 48, generator=g) * (torch.rand(n_tokens, 48, generator=g) < 0.08)
    acts = coef @ atoms + 0.3
    per = 24
    n_samples = n_tokens // per
    tokens = {c: np.zeros(n_tokens, dt) for c, dt in TOKEN_COLUMNS.items()}
    tokens["sample_index"] = np.repeat(np.arange(n_samples), per)
    tokens["position"] = np.tile(np.arange(per), n_samples)
    tokens["kind"] = np.ones(n_tokens, np.int64)
    tokens["box"] = np.zeros((n_tokens, 4), np.float32)
    samples = [{"index": i, "id": f"s{i}", "token_count": per, "width": 8, "height": 8, "grids": [[2, 2]]}
               for i in range(n_samples)]
    identity = {"model": {"checkpoint": "x"}, "dataset": {"name": "d"}, "kinds": ["image"]}
    with ActivationWriter(run.file(artifacts.ACTIVATIONS), {"h": d}, "float32", identity) as w:
        w.append({"h": acts}, tokens, samples, [], n_samples)
        w.finish()
    from lmmsae.context import RunContext

    RunContext(config, run).adopt(artifacts.ACTIVATIONS)


def _train(root: Path, torchrun: bool) -> subprocess.CompletedProcess:
    args = ["-m", "lmmsae", "train", "--resume", "--name", "r", "--out", str(root), "-o", "train.batch_size=64",
            "-o", "train.eval_ce=false", "-o", "train.warmup_steps=3", "-o", "train.checkpoint_every=5",
            "-o", "train.shuffle_buffer=256", "-o", "train.dead_window_tokens=200"]
    if torchrun:
        args = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", LMMSAE_LOAD_PLUGINS="")
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_train_stage_under_torchrun_equals_one_process(tmp_path):
    from safetensors.torch import load_file

    from lmmsae import artifacts
    from lmmsae.rundir import RunDir

    one, two = tmp_path / "one", tmp_path / "two"
    _run_dir(one)
    _run_dir(two)
    _train(one, torchrun=False)
    _train(two, torchrun=True)
    hook = "h"
    for root in (one, two):
        assert RunDir(root / "r").is_complete(artifacts.SAE_DIR)
    a = load_file(str(one / "r" / artifacts.SAE_DIR / hook / artifacts.SAE_WEIGHTS))
    b = load_file(str(two / "r" / artifacts.SAE_DIR / hook / artifacts.SAE_WEIGHTS))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=ATOL, rtol=1e-4), (key, float((a[key] - b[key]).abs().max()))
    ma = json.loads((one / "r" / artifacts.SAE_DIR / hook / artifacts.SAE_METRICS).read_text())
    mb = json.loads((two / "r" / artifacts.SAE_DIR / hook / artifacts.SAE_METRICS).read_text())
    assert ma["training"]["tokens"] == mb["training"]["tokens"] == 15 * 64  # 960 tokens: 15 full batches
    assert ma["training"]["steps"] == mb["training"]["steps"] == 15
    assert (ma["training"]["world_size"], mb["training"]["world_size"]) == (1, 2)
    for key, value in ma["training"]["last_batch"].items():
        assert mb["training"]["last_batch"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert mb["evaluation"]["fvu"]["value"] == pytest.approx(ma["evaluation"]["fvu"]["value"], rel=1e-4, abs=1e-6)
    events = [json.loads(line)["event"] for line in (two / "r" / artifacts.EVENTS).read_text().splitlines()]
    assert events.count("train-start") == 1 and events.count("resume") == 1  # rank 0 alone logs
