"""`lmmsae run` end to end on the shipped toy world (small): every stage's artifact, resume, reproduce."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmmsae import artifacts, toyworld
from lmmsae.cli import cli

pytestmark = pytest.mark.skipif(not toyworld.weights_available(), reason="toy weights not shipped")

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
    for name in (artifacts.ACTIVATIONS, artifacts.FEATURES, artifacts.SUMMARY):
        assert (run / (name + artifacts.COMPLETE_SUFFIX)).is_file(), name
    explanations = [json.loads(x) for x in (run / "explanations" / "toy-llava.jsonl").read_text().splitlines()]
    assert len(explanations) == 12 and all(e["status"] in ("ok", "failed") for e in explanations)
    summary = json.loads((run / artifacts.SUMMARY).read_text())
    for scorer in ("clip", "iou"):
        overall = summary["scores"][scorer]["toy-llava"]["all"]
        assert overall["n"] > 0 and overall["baseline_mean"] >= 0
        assert overall["delta"] == pytest.approx(overall["mean"] - overall["baseline_mean"])
    sae_metrics = summary["sae"]["model.language_model.layers.2"]["evaluation"]
    assert 0 < sae_metrics["fvu"]["value"] < 1 and sae_metrics["l0"]["value"] == pytest.approx(16)

    before = (run / artifacts.FEATURES).stat().st_mtime_ns
    invoke("run", "--out", out, "--name", "a", "--resume")
    assert (run / artifacts.FEATURES).stat().st_mtime_ns == before
    resumed = events(run)[events(run).index("resume"):]
    assert {"collect-skip", "train-skip"} <= set(resumed) and "collect-start" not in resumed

    invoke("run", "--config", str(run / "run.yaml"), "--out", out, "--name", "b")
    again = tmp_path / "runs" / "b"
    assert (again / "explanations" / "toy-llava.jsonl").read_text() == (run / "explanations" / "toy-llava.jsonl").read_text()
    assert json.loads((again / artifacts.SUMMARY).read_text())["scores"] == summary["scores"]
