"""The stage contract: fingerprints, statuses, the plan printed by --dry-run, --overwrite, and the
run directory only ever written once a command is accepted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "stages"))
sys.path.insert(0, str(Path(__file__).parent / "explainers"))

from truth_features import make_run  # noqa: E402

from lmmsae import artifacts  # noqa: E402
from lmmsae.cli import cli  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def plan_rows(output: str) -> dict[str, tuple[str, str]]:
    """artifact -> (status, why) from a printed plan."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 4 and cells[1]:
            rows[cells[1]] = (cells[2], cells[3])
    return rows


def test_dry_run_plans_the_default_loop_and_writes_nothing(tmp_path):
    result = invoke("run", "--out", tmp_path, "--name", "a", "--dry-run")
    assert result.exit_code == 0, result.output
    rows = plan_rows(result.output)
    assert [rows[p][0] for p in (artifacts.ACTIVATIONS, artifacts.SAE_DIR, artifacts.FEATURES,
                                 "explanations/toy-llava.jsonl", "scores/clip/toy-llava.jsonl",
                                 "scores/iou/toy-llava.jsonl", artifacts.REPORT_DIR)] == ["run"] * 7
    assert not (tmp_path / "a").exists()


def test_streaming_from_the_model_skips_collect_and_an_sae_path_skips_train(tmp_path):
    rows = plan_rows(invoke("run", "--out", tmp_path, "--dry-run", "-o", "train.source=model").output)
    assert rows[artifacts.ACTIVATIONS] == ("skipped", "not needed by this command")
    assert rows[artifacts.SAE_DIR][0] == "run"

    sae = tmp_path / "released" / "layers.2"
    sae.mkdir(parents=True)
    (sae / "cfg.json").write_text("{}")
    rows = plan_rows(invoke("run", "--out", tmp_path, "--dry-run", "-o", f"cache.sae_path={sae}").output)
    assert rows[artifacts.SAE_DIR][0] == rows[artifacts.ACTIVATIONS][0] == "skipped"
    assert rows[artifacts.FEATURES][0] == "run"
    assert not any(p.name != "released" for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../escape", "/abs/dir", "a/b", "..", "-x"])
def test_a_run_name_is_one_folder_inside_out(tmp_path, name):
    result = invoke("collect", "--out", tmp_path / "runs", "--name", name)
    assert result.exit_code != 0 and "must be one folder name" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "escape").exists()
    assert not (tmp_path / "runs").exists()


def test_rejected_commands_leave_no_folder_and_no_changed_config(tmp_path):
    bad = invoke("run", "--out", tmp_path, "--name", "a", "-o", "cache.sae_path=/no/such/sae")
    assert bad.exit_code != 0 and "cache.sae_path '/no/such/sae' does not exist" in bad.output
    assert not (tmp_path / "a").exists()  # the name stays free
    ok = invoke("collect", "--out", tmp_path, "--name", "a", "-o", "dataset.n=4", "--batch-size", "4")
    assert ok.exit_code == 0, ok.output
    saved = (tmp_path / "a" / "run.yaml").read_bytes()
    bad = invoke("cache", "--out", tmp_path, "--name", "a", "--resume", "-o", "cache.sae_path=/no/such/sae")
    assert bad.exit_code != 0 and "does not exist" in bad.output
    assert (tmp_path / "a" / "run.yaml").read_bytes() == saved
    needs_train = invoke("cache", "--out", tmp_path, "--name", "a", "--resume")
    assert needs_train.exit_code != 0
    assert "sae is missing: run `lmmsae train --resume --name a` first" in needs_train.output
    assert (tmp_path / "a" / "run.yaml").read_bytes() == saved


def test_statuses_follow_options_inputs_and_interruptions(tmp_path):
    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.stages import score

    ctx = make_run(tmp_path, [{"name": "iou", "baseline_draws": 2}])
    score.run(ctx)
    rel = "scores/iou/right.jsonl"

    def status(config=None):
        return RunContext(config or ctx.config, ctx.run).units("score")[0].status_reason()

    assert status() == ("current", "")
    changed = resolve(base=ctx.config.to_dict(), overrides=[("scorers.0.baseline_draws", 3)])
    assert status(changed) == ("rerun", "changed: scorer.baseline_draws")
    state = ctx.run.file(rel + artifacts.STATE_SUFFIX)
    state.write_text(json.dumps({**json.loads(state.read_text()), "status": "running"}))
    assert status() == ("resume", "interrupted")
    score.run(RunContext(ctx.config, ctx.run))
    assert status() == ("current", "")
    ctx.adopt(artifacts.FEATURES)  # the features were made again
    assert status() == ("rerun", "cache/features.h5 changed since it was read")


def test_overwrite_makes_a_current_output_again(tmp_path):
    from lmmsae.context import RunContext
    from lmmsae.stages import score

    ctx = make_run(tmp_path, [{"name": "iou", "baseline_draws": 2}])
    score.run(ctx)
    first = ctx.run.state("scores/iou/right.jsonl")["instance"]
    again = RunContext(ctx.config, ctx.run, overwrite=("score",))
    assert again.units("score")[0].status_reason() == ("rerun", "--overwrite")
    score.run(again)
    assert ctx.run.state("scores/iou/right.jsonl")["instance"] != first


def test_a_judge_failure_is_recorded_per_feature_and_retried_on_resume(tmp_path):
    from fake_lmm_server import FakeLMMServer

    from lmmsae.context import RunContext
    from lmmsae.stages import score

    server = FakeLMMServer().start()
    try:
        judge = {"base_url": server.url + "/v1", "model": "m", "max_retries": 0, "concurrency": 1}
        ctx = make_run(tmp_path, [{"name": "detection", "judge": "openai-compatible", "judge_options": judge,
                                   "n_positive": 2, "n_negatives": 2, "baseline_draws": 1}], explainers=("right",))
        server.inject("400")  # the first judge request of the first feature is refused
        score.run(ctx)
        rel = "scores/detection/right.jsonl"
        records = {r["latent"]: r for r in map(json.loads, ctx.run.file(rel).read_text().splitlines())}
        assert records[0]["status"] == "failed" and "400" in records[0]["reason"]
        assert all(records[i]["status"] == "ok" for i in (1, 2, 3)) and records[4]["status"] == "skipped"
        state = ctx.run.state(rel)
        assert state["status"] == "complete" and state["info"]["failed"] == 1
        resumed = RunContext(ctx.config, ctx.run)
        assert resumed.units("score")[0].status_reason() == ("resume", "1 failed record(s) are tried again")
        score.run(resumed)
        lines = [json.loads(x) for x in ctx.run.file(rel).read_text().splitlines()]
        assert len(lines) == 6 and lines[-1]["latent"] == 0 and lines[-1]["status"] == "ok"
        assert ctx.run.state(rel)["info"]["failed"] == 0
    finally:
        server.stop()


def test_explain_where_every_feature_failed_is_not_complete(tmp_path):
    import socket

    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.errors import UserError
    from lmmsae.stages import explain

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = make_run(tmp_path, [])
    config = resolve(base=ctx.config.to_dict(), overrides=[
        ("explainer", {"name": "openai-compatible", "model": "m", "base_url": f"http://127.0.0.1:{port}/v1",
                       "max_retries": 0, "timeout": 2}), ("explain.n_features", 3)])
    ctx = RunContext(config, ctx.run)
    with pytest.raises(UserError, match="explained 0 of 3 features .* every feature failed"):
        explain.run(ctx)
    rel = "explanations/openai-compatible.jsonl"
    assert ctx.run.state(rel)["status"] == "running" and not ctx.run.is_complete(rel)


def test_a_scorer_is_added_to_an_existing_run(tmp_path):
    made = invoke("collect", "--out", tmp_path, "--name", "a", "-o", "dataset.n=4", "--batch-size", "4")
    assert made.exit_code == 0, made.output
    plan = invoke("score", "--out", tmp_path, "--name", "a", "--resume", "--scorer", "detection", "--dry-run")
    assert plan.exit_code == 0, plan.output  # it used to be refused as "--resume with a different config"
    rows = plan_rows(plan.output)
    assert {"scores/clip/toy-llava.jsonl", "scores/iou/toy-llava.jsonl", "scores/detection/toy-llava.jsonl"} <= set(rows)
    assert "detection" not in (tmp_path / "a" / "run.yaml").read_text()  # --dry-run writes nothing


def test_an_artifact_copied_from_another_run_is_never_read(tmp_path):
    """features.h5 made with a 128-latent SAE, copied (with its state record) into a 256-latent run:
    refused, because its fingerprint is not the one this run's config asks for."""
    import shutil

    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.errors import UserError
    from lmmsae.stages import explain

    small = make_run(tmp_path / "small", [])
    config = resolve(base=small.config.to_dict(), overrides=[("sae.n_latents", 256)])
    big = make_run(tmp_path / "big", [])
    big = RunContext(config, big.run)
    for suffix in ("", artifacts.STATE_SUFFIX):
        shutil.copy(small.run.file(artifacts.FEATURES + suffix), big.run.file(artifacts.FEATURES + suffix))
    with pytest.raises(UserError, match=r"cache/features.h5 is not current \(rerun: changed: sae \(what it reads\)"):
        explain.run(big)
    assert not big.run.file("explanations/toy-llava.jsonl").exists()
