"""Every kind of bad input through the real CLI: a non-zero exit, ONE line on stderr naming what is
wrong, no traceback, and every file of the run it was pointed at byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ENV = {**os.environ, "LMMSAE_LOAD_PLUGINS": "lmmsae-imagefolder", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
FAST = ["-o", "dataset.n=8", "--batch-size", "8"]


def lmmsae(*args, cwd):
    """The real command in a fresh process (what a user sees: every warning a library prints)."""
    return subprocess.run([sys.executable, "-m", "lmmsae", *map(str, args)], capture_output=True, text=True,
                          env={**ENV, "ANTHROPIC_API_KEY": ""}, cwd=cwd, timeout=600)


def in_process(*args, cwd, monkeypatch):
    """The same command through click in this process (fast, for the long table); an exception that
    escaped as a traceback shows as result.exception."""
    from click.testing import CliRunner

    from lmmsae import plugins
    from lmmsae.cli import cli

    monkeypatch.chdir(cwd)
    for key, value in {**ENV, "ANTHROPIC_API_KEY": ""}.items():
        if key.startswith(("LMMSAE", "HF_", "ANTHROPIC")):
            monkeypatch.setenv(key, value)
    plugins.reset()
    result = CliRunner().invoke(cli, [str(a) for a in args])
    plugins.reset()
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout,
                                       result.stderr + ("Traceback (escaped)" if escaped else ""))


def snapshot(root: Path) -> dict[str, str]:
    """Every artifact's digest (the event log is a log: it records the attempt)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "events.jsonl"}


def error_lines(stderr: str) -> list[str]:
    """What the command said on stderr, progress lines ("[stage] ...") aside."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with a run that has collected 8 images, and files of every wrong kind."""
    root = tmp_path_factory.mktemp("bad")
    made = lmmsae("collect", "--out", "runs", "--name", "r", *FAST, cwd=root)
    assert made.returncode == 0, made.stderr
    files = root / "files"
    files.mkdir()
    (files / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (files / "broken.yaml").write_text("dataset: {name: shapes\n  n: [1,\n")
    (files / "list.yaml").write_text("- a\n- b\n")
    (files / "garbage.json").write_text("{not json")
    (files / "empty").mkdir()
    for name, cfg, weights in (("garbage-cfg", "{not json", b""), ("truncated", None, b"\x00\x01"),
                               ("pickle", None, None)):
        folder = files / name
        folder.mkdir()
        if cfg is not None:
            (folder / "cfg.json").write_text(cfg)
        else:
            (folder / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 256, "n_latents": 64, "k": 4}))
        if weights is not None:
            (folder / "sae.safetensors").write_bytes(weights)
    import torch

    torch.save({"W_enc": torch.zeros(2, 2)}, files / "pickle" / "sae.pt")
    (files / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    import h5py

    with h5py.File(files / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    return root


def wrong_width_sae(root: Path) -> Path:
    """A valid SAE for a 128-wide hookpoint (the toy's layers.2 is 256 wide)."""
    from lmmsae.saes.io import sae_class, save_sae

    folder = root / "files" / "narrow"
    if not folder.exists():
        cls = sae_class("topk")
        save_sae(cls(128, cls.Options(n_latents=64, k=4)), folder)
    return folder


R = ["--out", "runs", "--name", "r", "--resume"]
CASES = {
    # names and runs
    "name with ..": (["collect", "--out", "runs", "--name", "../escape"], "must be one folder name"),
    "absolute name": (["collect", "--out", "runs", "--name", "/tmp/x"], "must be one folder name"),
    "existing name": (["collect", "--out", "runs", "--name", "r"], "already exists: pass --resume"),
    "resume no name": (["collect", "--resume"], "--resume needs --name"),
    "resume ghost": (["collect", "--out", "runs", "--name", "ghost", "--resume"], "has no run.yaml"),
    # components and options
    "unknown model": (["collect", *R, "--model", "gpt5"], "unknown model 'gpt5'"),
    "unknown sae": (["train", *R, "--sae", "topkk"], "unknown SAE architecture 'topkk'"),
    "unknown explainer": (["explain", *R, "--explainer", "nobody"], "unknown explainer 'nobody'"),
    "unknown dataset": (["collect", *R, "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    "unknown scorer": (["score", *R, "--scorer", "bleu"], "unknown scorer 'bleu'"),
    "unknown section": (["collect", *R, "-o", "sea.k=3"], "unknown config section 'sea'"),
    "unknown option": (["train", *R, "-o", "sae.kk=3"], "unknown option 'kk'"),
    "wrong type": (["train", *R, "-o", "sae.k=abc"], "sae.k"),
    "negative k": (["train", *R, "-o", "sae.k=-1"], "k"),
    "negative latents": (["train", *R, "-o", "sae.n_latents=-3"], "n_latents"),
    "huge k": (["train", *R, "-o", "sae.k=100000"], "k"),
    "negative lr": (["train", *R, "-o", "train.lr=-1"], "lr"),
    "negative n": (["collect", "--out", "runs", "--name", "new1", "-o", "dataset.n=-5"], "n"),
    "unknown device": (["collect", *R, "--device", "tpu"], "device 'tpu' is not known"),
    "unknown dtype": (["collect", *R, "--dtype", "float64"], "dtype 'float64' is not supported"),
    "unknown token kind": (["collect", *R, "--kind", "pixels"], "unknown token kind 'pixels'"),
    "bad pooling": (["cache", *R, "-o", "cache.pooling=median"], "pooling"),
    "negative features": (["explain", *R, "-o", "explain.n_features=-1"], "n_features"),
    "bad policy": (["collect", *R, "-o", "on_bad_sample=ignore"], "on_bad_sample"),
    "empty hookpoints": (["collect", *R, "-o", "hookpoints=[]"], "no hookpoint"),
    "bad list index": (["score", *R, "-o", "scorers.7.k=3"], "is not an index"),
    "override without =": (["collect", *R, "-o", "sae.k"], "must look like section.key=value"),
    "unknown hookpoint": (["collect", "--out", "runs", "--name", "new2", "--hookpoint", "layers.99", *FAST], "layers.99"),
    # config files
    "missing config": (["collect", "--config", "nope.yaml"], "does not exist"),
    "binary config": (["collect", "--config", "files/binary.yaml"], "is not UTF-8 text"),
    "broken yaml": (["collect", "--config", "files/broken.yaml"], "is not valid YAML"),
    "yaml list": (["collect", "--config", "files/list.yaml"], "must hold a mapping"),
    "config is a folder": (["collect", "--config", "files/empty"], ""),
    # SAE checkpoints and stores
    "sae path missing": (["cache", *R, "-o", "cache.sae_path=files/nothing"], "does not exist"),
    "sae garbage cfg": (["cache", *R, "-o", "cache.sae_path=files/garbage-cfg"], "cfg.json"),
    "sae truncated": (["cache", *R, "-o", "cache.sae_path=files/truncated"], "sae.safetensors"),
    "sae pickle": (["cache", *R, "-o", "cache.sae_path=files/pickle"], "safetensors"),
    "sae empty folder": (["cache", *R, "-o", "cache.sae_path=files/empty"], "cfg.json"),
    "features truncated": (["explain", *R, "-o", "explain.features=files/truncated.h5"], "truncated.h5"),
    "features foreign": (["explain", *R, "-o", "explain.features=files/foreign.h5"], "not an lmmsae features file"),
    "features missing": (["explain", *R, "-o", "explain.features=files/none.h5"], "does not exist"),
    "latents file garbage": (["cache", *R, "-o", "cache.latents=files/garbage.json", "-o", "cache.sae_path=files/narrow"], ""),
    # stages in the wrong order, or without what they need
    "train before collect": (["train", "--out", "runs", "--name", "new3"], "activations.h5 is missing"),
    "cache before train": (["cache", *R], "run `lmmsae train"),
    "score before explain": (["score", *R], "run `lmmsae explain"),
    "steer without feature": (["steer", *R], "needs at least one feature"),
    "compare without explainers": (["compare", *R], "needs explainers"),
    "anthropic without key": (["compare", *R, "-o", "compare.explainers=[anthropic]"], "ANTHROPIC_API_KEY"),
    "bad concurrency": (["explain", *R, "--explainer", "openai-compatible", "-o", "explainer.model=m",
                         "-o", "explainer.concurrency=0"], "concurrency"),
    "overwrite unknown stage": (["run", *R, "--overwrite", "paint"], "paint"),
    "until unknown stage": (["run", *R, "--until", "paint"], "paint"),
    "seed not a number": (["collect", *R, "--seed", "x"], "x"),
}


SUBPROCESS = {"unknown hookpoint", "binary config", "sae pickle", "features truncated", "anthropic without key"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(world, case, monkeypatch):
    args, needle = CASES[case]
    if case == "latents file garbage":
        wrong_width_sae(world)
    before = snapshot(world / "runs")
    if case in SUBPROCESS:
        result = lmmsae(*args, cwd=world)
    else:
        result = in_process(*args, cwd=world, monkeypatch=monkeypatch)
    assert result.returncode != 0, result.stdout + result.stderr
    lines = error_lines(result.stderr)
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    assert needle in lines[0], lines[0]
    after = snapshot(world / "runs")
    assert {k: after.get(k) for k in before} == before, "a pre-existing artifact changed"


def test_wrong_width_sae_is_refused_before_any_work(world):
    folder = wrong_width_sae(world)
    before = snapshot(world / "runs")
    result = lmmsae("cache", *R, "-o", f"cache.sae_path={folder}", cwd=world)
    lines = error_lines(result.stderr)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(lines) == 1 and "128" in lines[0] and "256" in lines[0], result.stderr[-2000:]
    after = snapshot(world / "runs")
    assert {k: after.get(k) for k in before} == before


def images(folder: Path) -> dict[str, bool]:
    """Image files of every awkward kind -> whether the model can use it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    rgb.save(folder / "a-good.png")
    rgb.convert("L").save(folder / "grayscale.png")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.resize((1, 1)).save(folder / "one-pixel.png")
    rgb.resize((8000, 8000)).save(folder / "huge.jpg", quality=50)
    frames = [rgb, rgb.rotate(90)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    rgb.save(folder / "exif-rotated.jpg", exif=exif)
    (folder / "zero-bytes.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(100)))
    return {"a-good.png": True, "grayscale.png": True, "rgba.png": True, "cmyk.jpg": True, "one-pixel.png": True,
            "huge.jpg": True, "animated.gif": True, "exif-rotated.jpg": True, "zero-bytes.png": False,
            "corrupt.png": False}


def test_awkward_images_are_used_or_skipped_and_stop_names_the_file(tmp_path):
    kinds = images(tmp_path / "images")
    base = ["--dataset", "imagefolder", "-o", f"dataset.root={tmp_path / 'images'}", "--batch-size", "4"]
    ok = lmmsae("collect", "--out", "runs", "--name", "skip", *base, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    from lmmsae.stores.activations import ActivationReader

    with ActivationReader(tmp_path / "runs" / "skip" / "collect" / "activations.h5") as reader:
        skipped = sorted(s["id"] for s in reader.skipped())
        used = len(set(reader.tokens()["sample_index"].tolist()))
    assert skipped == sorted(k for k, good in kinds.items() if not good)
    assert used == sum(kinds.values())
    stop = lmmsae("collect", "--out", "runs", "--name", "stop", *base, "--on-bad-sample", "stop", cwd=tmp_path)
    lines = error_lines(stop.stderr)
    assert stop.returncode != 0 and "Traceback" not in stop.stderr and len(lines) == 1
    assert "corrupt.png" in lines[0] and "--on-bad-sample skip" in lines[0]
