"""`lmmsae run` end to end on the shipped toy world (small): every stage's artifact, resume, reproduce."""

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmmsae import artifacts
from lmmsae.cli import cli
from lmmsae.rundir import RunDir

pytestmark = pytest.mark.usefixtures("toy_weights")  # core data: fail, never skip, without it

SMALL = ["-o", "dataset.n=200", "-o", "sae.n_latents=512", "-o", "sae.k=16", "-o", "explain.n_features=12",
         "-o", "collect.batch_size=32"]


def invoke(*args):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def events(run: Path) -> list[str]:
    return [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]


def test_run_resume_and_reproduce(tmp_path):
    out = str(tmp_path / "runs")
    result = invoke("run", "--out", out, "--name", "a", *SMALL)
    run = tmp_path / "runs" / "a"
    assert "results in" in result.output
    for name in (artifacts.ACTIVATIONS, artifacts.SAE_DIR, artifacts.FEATURES, artifacts.REPORT_DIR):
        assert RunDir(run).is_complete(name), name
    explanations = [json.loads(x) for x in (run / "explanations" / "toy-llava.jsonl").read_text().splitlines()]
    assert len(explanations) == 12 and all(e["status"] in ("ok", "failed") for e in explanations)
    summary = json.loads((run / artifacts.SUMMARY).read_text())
    for scorer in ("clip", "iou"):
        overall = summary["scores"][scorer]["toy-llava"]["all"]
        records = [json.loads(x) for x in (run / "scores" / scorer / "toy-llava.jsonl").read_text().splitlines()]
        baselines = [r["baseline_mean"] for r in records if r.get("status") == "ok" and r.get("score") is not None]
        assert overall["n"] == len(baselines) > 0 and all(math.isfinite(b) and b >= 0 for b in baselines)
        assert overall["baseline_mean"] == pytest.approx(sum(baselines) / len(baselines))
        assert overall["baseline_mean"] > (1.0 if scorer == "clip" else 0.0)  # random images do score
        assert overall["delta"] == pytest.approx(overall["mean"] - overall["baseline_mean"])
    sae_metrics = summary["sae"]["model.language_model.layers.2"]["evaluation"]
    assert 0 < sae_metrics["fvu"]["value"] < 1 and sae_metrics["l0"]["value"] == pytest.approx(16)

    before = (run / artifacts.FEATURES).stat().st_mtime_ns
    invoke("run", "--out", out, "--name", "a", "--resume")
    assert (run / artifacts.FEATURES).stat().st_mtime_ns == before
    resumed = events(run)[events(run).index("resume"):]
    assert "stage-skip" in resumed and "collect-start" not in resumed and "unit-start" not in resumed

    invoke("run", "--config", str(run / "run.yaml"), "--out", out, "--name", "b")
    again = tmp_path / "runs" / "b"
    assert (again / "explanations" / "toy-llava.jsonl").read_text() == (run / "explanations" / "toy-llava.jsonl").read_text()
    assert json.loads((again / artifacts.SUMMARY).read_text())["scores"] == summary["scores"]

    # more features on --resume: explain adds them, everything after it is made again, nothing claims more
    before = (run / "explanations" / "toy-llava.jsonl").read_text()
    plan = invoke("run", "--out", out, "--name", "a", "--resume", "-o", "explain.n_features=16", "--dry-run").output
    assert "extend" in plan and "explain.n_features" in plan and "rerun" in plan
    assert (run / "explanations" / "toy-llava.jsonl").read_text() == before  # --dry-run changed nothing
    invoke("run", "--out", out, "--name", "a", "--resume", "-o", "explain.n_features=16")
    explained = [json.loads(x) for x in (run / "explanations" / "toy-llava.jsonl").read_text().splitlines()]
    assert len(explained) == 16 and (run / "explanations" / "toy-llava.jsonl").read_text().startswith(before)
    grown = json.loads((run / artifacts.SUMMARY).read_text())
    ok = sum(e["status"] == "ok" for e in explained)
    for scorer in ("clip", "iou"):
        scored = [json.loads(x) for x in (run / "scores" / scorer / "toy-llava.jsonl").read_text().splitlines()]
        assert len(scored) == 16
        overall = grown["scores"][scorer]["toy-llava"]["all"]
        assert overall["n"] + overall["skipped"] == 16 and overall["n"] == ok
    assert "n_features: 16" in (run / "run.yaml").read_text()
    assert set(grown["seconds"]) == {"collect", "train", "cache", "explain", "score"}

    # --overwrite: that stage and what follows are made again, the rest is kept
    plan = invoke("run", "--out", out, "--name", "a", "--resume", "--overwrite", "cache", "--dry-run").output
    rows = {line.split("│")[1].strip(): line.split("│")[3].strip() for line in plan.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows["collect"] == rows["train"] == "current" and rows["cache"] == "rerun"
    assert rows["explain"] == rows["score"] == rows["report"] == "rerun"
