"""Run directories are never silently reused; resume continues one; writes are atomic."""

import json

import pytest

from lmmsae import artifacts
from lmmsae.atomic import atomic_path, atomic_write_text
from lmmsae.errors import UserError
from lmmsae.rundir import RunDir, environment


def test_named_run_refuses_to_overwrite(tmp_path):
    RunDir.create(tmp_path, "exp")
    with pytest.raises(UserError, match="already exists: pass --resume to continue it"):
        RunDir.create(tmp_path, "exp")


def test_timestamped_runs_never_collide(tmp_path):
    a, b = RunDir.create(tmp_path, None), RunDir.create(tmp_path, None)
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()


def test_resume_needs_an_existing_run(tmp_path):
    with pytest.raises(UserError, match="has no run.yaml"):
        RunDir.open(tmp_path, "missing")
    with pytest.raises(UserError, match="--resume needs --name"):
        RunDir.open(tmp_path, None)


def test_event_log_appends_json_lines(tmp_path):
    run = RunDir.create(tmp_path, "exp")
    run.log("start", name="exp")
    run.log("stage-done", stage="collect")
    lines = [json.loads(line) for line in (run.path / artifacts.EVENTS).read_text().splitlines()]
    assert [e["event"] for e in lines] == ["start", "stage-done"] and lines[1]["stage"] == "collect"


def test_state_record_needed_for_complete(tmp_path):
    from lmmsae.plan import Unit

    run = RunDir.create(tmp_path, "exp")
    (run.path / "collect").mkdir()
    (run.path / artifacts.ACTIVATIONS).write_text("partial")
    assert not run.is_complete(artifacts.ACTIVATIONS) and run.state(artifacts.ACTIVATIONS) is None
    unit = Unit("collect", artifacts.ACTIVATIONS, {"a": 1}, fingerprint="f1", records="r1")
    run.begin(unit, {})
    assert run.state(artifacts.ACTIVATIONS)["status"] == "running" and not run.is_complete(artifacts.ACTIVATIONS)
    state = run.complete(unit, n=3)
    assert run.is_complete(artifacts.ACTIVATIONS) and state["info"] == {"n": 3} and state["fingerprint"] == "f1"
    (run.path / artifacts.ACTIVATIONS).unlink()  # a state without its output counts as nothing
    assert run.state(artifacts.ACTIVATIONS) is None


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_environment_lists_versions():
    env = environment()
    assert env["packages"]["lmmsae"] == __import__("lmmsae").__version__
    assert "torch" in env["packages"] and "lmmsae" in env["plugins"]


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from lmmsae.atomic import atomic_write_text

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
