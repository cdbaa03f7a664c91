"""SIGKILL in the middle of each stage of a small toy run, then `--resume`: the explanations, scores
and summary equal those of an uninterrupted run with the same seed (timings aside)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = ["-o", "dataset.n=96", "-o", "sae.n_latents=256", "-o", "sae.k=8", "-o", "explain.n_features=6",
         "-o", "collect.batch_size=16", "-o", "cache.batch_size=16", "-o", "cache.checkpoint_every=32",
         "-o", "train.batch_size=512", "-o", "train.checkpoint_every=3", "-o", "train.eval_ce=false",
         "-o", "train.eval_tokens=2048"]
ENV = {**os.environ, "LMMSAE_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def lmmsae(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lmmsae", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(*args) -> None:
    proc = lmmsae(*args)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]


def results(run: Path) -> dict:
    """What must not depend on an interruption: explanation texts, score records, the summary."""
    def lines(path):
        return {r["latent"]: r for r in map(json.loads, path.read_text().splitlines())}

    explanations = {k: (r["status"], r["text"]) for k, r in lines(run / "explanations" / "toy-llava.jsonl").items()}
    scores = {s: {k: (r["status"], r.get("score"), r.get("baseline_mean"))
                  for k, r in lines(run / "scores" / s / "toy-llava.jsonl").items()} for s in ("clip", "iou")}
    summary = json.loads((run / "report" / "summary.json").read_text())
    summary.pop("run")
    return {"explanations": explanations, "scores": scores, "summary": untimed(summary)}


TIMING = {"seconds", "tokens_per_s", "resumed", "resumed_at", "started", "finished"}


def untimed(value):
    """`value` without timings and the record of having been resumed."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    finish("run", "--out", out, "--name", "ref", *SMALL)
    return results(out / "ref")


def kill_during(stage: str, out: Path, name: str) -> bool:
    """Start a run and SIGKILL it once `stage` has started making its output; False if it ended first."""
    proc = lmmsae("run", "--out", out, "--name", name, *SMALL)
    events = out / name / "events.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        text = events.read_text() if events.exists() else ""
        if any(e.get("event") == "unit-start" and e.get("stage") == stage
               for e in map(json.loads, text.splitlines())):
            time.sleep(0.3)  # let it write part of its output
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.communicate()
    return False


@pytest.mark.parametrize("stage", ["collect", "train", "cache", "explain", "score"])
def test_killed_in_a_stage_then_resumed_equals_uninterrupted(stage, reference, tmp_path):
    assert kill_during(stage, tmp_path, "k"), f"the run ended before {stage} started"
    state = tmp_path / "k" / "run.yaml"
    assert state.is_file()
    finish("run", "--out", tmp_path, "--name", "k", "--resume")
    got = results(tmp_path / "k")
    for key in reference:
        assert got[key] == reference[key], key
