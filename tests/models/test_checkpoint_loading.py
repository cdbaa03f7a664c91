"""Loading real checkpoints: a saved folder, a hub-cache snapshot by hub id offline, and one-line errors
at once (no hub retries) when a checkpoint is not available offline."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from lmmsae.datasets.base import Sample
from lmmsae import checkpoints as hub
from lmmsae.models import load_adapter

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "benchmarks" / "configs" / "llama3-llava-next-8b.json"


def lmmsae(*args, env=None, cwd=None):
    """The CLI in a fresh process (the hub library reads HF_HOME / offline flags at import)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "lmmsae", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=600)


def test_a_saved_random_model_loads_back_through_the_checkpoint_path(tmp_path):
    """save_pretrained (model + processor, byte tokenizer included) -> -o model.checkpoint=DIR: same model."""
    built = load_adapter("llava-next", {"config": str(CONFIG), "random_init": True, "scale": 1 / 64})
    built.model.save_pretrained(tmp_path / "snap")
    built.processor.save_pretrained(tmp_path / "snap")
    loaded = load_adapter("llava-next", {"checkpoint": str(tmp_path / "snap")})
    sample = [Sample("s", Image.new("RGB", (90, 40), (200, 30, 30)), "what is it?")]
    b1, b2 = built.prepare(sample), loaded.prepare(sample)
    assert torch.equal(b1.inputs["input_ids"], b2.inputs["input_ids"])
    assert np.array_equal(b1.token_map.box, b2.token_map.box)
    a1 = built.forward(b1, ["layers.24"])["model.language_model.layers.24"]
    a2 = loaded.forward(b2, ["layers.24"])["model.language_model.layers.24"]
    assert torch.equal(a1, a2)
    assert loaded.identity()["path"] == str(tmp_path / "snap") and "random_init" not in loaded.identity()


def hub_cache_snapshot(hf_home: Path, repo_id: str, source: Path, revision: str = "0123abcd" * 5) -> Path:
    """Lay out `source`'s files as the hub cache does: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    for f in source.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snap


def test_a_hub_cache_snapshot_loads_by_hub_id_offline(tmp_path):
    source = tiny.build_llava_next(tmp_path / "src")
    hub_cache_snapshot(tmp_path / "hf", "someorg/tiny-next", source)
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    listed = lmmsae("models", "--hookpoints", "llava-next", "--checkpoint", "someorg/tiny-next", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == "model.language_model.layers.2  (layers.2)"
    run = lmmsae("collect", "--out", str(tmp_path / "runs"), "--name", "r", "--model", "llava-next",
                 "-o", "model.checkpoint=someorg/tiny-next", "--dataset", "shapes", "-o", "dataset.n=2",
                 "--hookpoint", "layers.1", env=env)
    assert run.returncode == 0, run.stderr
    import h5py

    from lmmsae.datasets.shapes import ShapesDataset

    direct = load_adapter("llava-next", {"checkpoint": str(source)})
    sample = ShapesDataset(ShapesDataset.Options(n=2)).sample(0)
    expected = direct.forward(direct.prepare([sample]), ["layers.1"])["model.language_model.layers.1"][0]
    with h5py.File(tmp_path / "runs" / "r" / "collect" / "activations.h5", "r") as f:
        first = f["tokens/sample_index"][:] == 0
        stored = f["model.language_model.layers.1/acts"][:][first]
    assert np.allclose(stored, expected.numpy(), atol=1e-5)


def one_line_error(result) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Retry" not in result.stderr + result.stdout
    return lines[0]


def test_the_headline_command_offline_is_one_line_and_creates_nothing(tmp_path):
    out = tmp_path / "runs"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "fresh")}
    result = lmmsae("run", "--model", "llava", "--sae", "topk", "--explainer", "llava-ov", "--out", str(out), env=env)
    line = one_line_error(result)  # the explainer is checked first (the cheapest), then the model
    for part in ("explainer 'llava-ov': checkpoint 'llava-hf/llava-onevision-qwen2-72b-ov-hf'", "not available offline",
                 "-o explainer.checkpoint=PATH", "--explainer toy-llava"):
        assert part in line, line
    assert not out.exists(), "a failed start leaves no run folder"
    result = lmmsae("run", "--model", "llava", "--sae", "topk", "--out", str(out), env=env)
    line = one_line_error(result)
    for part in ("model 'llava': checkpoint 'llava-hf/llava-1.5-7b-hf'", "not available offline",
                 "-o model.checkpoint=PATH", "toy world"):
        assert part in line, line
    assert not out.exists()


def test_an_unreachable_hub_counts_as_offline_without_retries(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "", "HF_HOME": str(tmp_path / "fresh"),
           "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
    result = lmmsae("run", "--model", "llava-next", "--out", str(tmp_path / "runs"), env=env)
    line = one_line_error(result)
    assert "checkpoint 'llava-hf/llama3-llava-next-8b-hf' is not a local folder and not in the Hugging Face cache, and " \
        "the Hugging Face hub cannot be reached: it is not available offline" in line


def test_the_explainer_checkpoint_is_checked_before_any_stage(tmp_path):
    source = tiny.build_llava_next(tmp_path / "src")
    result = lmmsae("run", "--model", "llava-next", "-o", f"model.checkpoint={source}", "--dataset", "shapes",
                    "--hookpoint", "layers.1", "--explainer", "llava-ov", "--out", str(tmp_path / "runs"),
                    env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "fresh")})
    line = one_line_error(result)
    assert "checkpoint 'llava-hf/llava-onevision-qwen2-72b-ov-hf' is not a local folder" in line
    assert "-o explainer.checkpoint=PATH" in line and not (tmp_path / "runs").exists()


def test_hub_reachability_is_a_quick_local_check(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub.hub_reachable()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # closed now, but the answer is kept
    assert hub.hub_reachable()
    hub._reachable.clear()
    assert not hub.hub_reachable()
    monkeypatch.setenv("HF_ENDPOINT", "https://no-such-host.invalid")
    assert not hub.hub_reachable()
    hub._reachable.clear()


@pytest.mark.parametrize("value,offline", [("1", True), ("true", True), ("0", False), ("", False)])
def test_offline_flags(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert hub.offline_by_env() is offline
