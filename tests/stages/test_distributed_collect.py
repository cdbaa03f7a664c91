"""Collect across ranks: batch-aligned shards merged into exactly what one process writes, and the whole
`lmmsae run` (collect + train + cache) under torchrun with 2 gloo ranks equal to one process."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))

import tiny  # noqa: E402
from lmmsae import artifacts, toyworld  # noqa: E402
from lmmsae.stages.collect import Options, collect, shard_range  # noqa: E402
from lmmsae.stores.activations import merge  # noqa: E402
from test_collect import HOOKS, Pictures  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def h5_contents(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of the file, and the attributes that describe the data (timings aside)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        for key in ("model", "dataset", "hookpoints", "dtype", "kinds", "n_tokens", "n_samples", "n_skipped",
                    "n_commits", "next_sample", "complete", "schema_version"):
            out[f"@{key}"] = f.attrs[key]
    return out


def assert_same_file(a: Path, b: Path) -> None:
    x, y = h5_contents(a), h5_contents(b)
    assert x.keys() == y.keys()
    for key in x:
        assert np.array_equal(x[key], y[key]), key


def test_shard_ranges_are_whole_batches_covering_everything():
    assert [shard_range(10, 3, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_range(2, 3, r, 3) for r in range(3)] == [(0, 0), (0, 0), (0, 2)]
    for n, bs, world in [(17, 4, 2), (100, 7, 5), (3, 1, 4)]:
        ranges = [shard_range(n, bs, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(lo % bs == 0 for lo, _ in ranges)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from lmmsae.models.llava import LlavaAdapter

    path = tiny.build_llava(tmp_path_factory.mktemp("m") / "llava")
    return LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)))


def test_merged_shards_equal_one_process(adapter, tmp_path):
    ds = Pictures(11, bad=(4, 9))  # skipped samples land in their shards and keep their order
    opts = Options(batch_size=3)
    collect(adapter, ds, HOOKS, tmp_path / "one.h5", opts)
    shards = [tmp_path / f"s{r}.h5" for r in range(3)]
    for r, path in enumerate(shards):
        collect(adapter, ds, HOOKS, path, opts, shard=(r, 3))
    counts = merge(shards, tmp_path / "merged.h5")
    assert_same_file(tmp_path / "one.h5", tmp_path / "merged.h5")
    assert counts["n_samples"] == 9 and counts["skipped"] == 2


def lmmsae_run(out: Path, torchrun: bool) -> None:
    args = ["-m", "lmmsae", "run", "--out", str(out), "--name", "r", "--until", "cache",
            "-o", "dataset.n=12", "-o", "collect.batch_size=4", "-o", "sae.n_latents=256", "-o", "sae.k=8",
            "-o", "train.batch_size=128", "-o", "train.eval_ce=false", "-o", "train.shuffle_buffer=512",
            "-o", "cache.batch_size=4", "-o", "cache.n_top=8"]
    if torchrun:
        args = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", LMMSAE_LOAD_PLUGINS="", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.skipif(not toyworld.weights_available(), reason="toy weights not shipped")
def test_lmmsae_run_under_torchrun_equals_one_process(tmp_path):
    import torch
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    lmmsae_run(one, torchrun=False)
    lmmsae_run(two, torchrun=True)
    a, b = one / "r", two / "r"
    assert_same_file(a / artifacts.ACTIVATIONS, b / artifacts.ACTIVATIONS)
    assert not (b / artifacts.ACTIVATION_SHARDS_DIR).exists(), "the shards are gone once merged"
    hook = "model.language_model.layers.2"
    wa = load_file(str(a / artifacts.SAE_DIR / hook / artifacts.SAE_WEIGHTS))
    wb = load_file(str(b / artifacts.SAE_DIR / hook / artifacts.SAE_WEIGHTS))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-5, rtol=1e-4), key
    with h5py.File(a / artifacts.FEATURES, "r") as fa, h5py.File(b / artifacts.FEATURES, "r") as fb:
        assert np.abs(fa["stats/tokens_total"][()] - fb["stats/tokens_total"][()]).max() <= 2
        same = (fa["top/index"][()] == fb["top/index"][()]).mean()
        assert same > 0.97, f"top images agree for {same:.1%} of slots"
        assert np.allclose(fa["top/score"][()], fb["top/score"][()], atol=1e-3, equal_nan=True)
    from lmmsae.rundir import RunDir

    for run in (a, b):
        for name in (artifacts.ACTIVATIONS, artifacts.SAE_DIR, artifacts.FEATURES):
            assert RunDir(run).is_complete(name), (run, name)
