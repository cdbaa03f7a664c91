"""An API key never leaves the process: a server answering 401 (and echoing the key it was sent, as
careless servers do), to every request or to one while others are in flight, through the real CLI.
stderr has one scrubbed line and no traceback; no file under the run holds the key."""

from __future__ import annotations

import pytest

from api_runs import explain_args, files_holding, oracle_features, run_cli
from fake_lmm_server import FakeLMMServer

KEY = "sk-live-5ecret-0123456789abcdef"
APIS = ["anthropic", "openai-compatible"]
ATTRIBUTES = [("color", c) for c in ("red", "green", "blue", "yellow", "orange", "purple")]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return oracle_features(tmp_path_factory.mktemp("features"), ATTRIBUTES)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("schedule", ["every request", "one of several in flight"])
def test_a_401_stops_the_run_with_one_scrubbed_line(api, schedule, features, tmp_path):
    server = FakeLMMServer(latency=0.3, max_requests=50).start()
    try:
        if schedule == "every request":
            server.inject(*["401"] * 50)
        else:
            server.inject("ok", "401", "ok", "ok", "ok", "ok")  # the 401 arrives while three others are in flight
        result = run_cli(explain_args(api, server, features, tmp_path / "runs", "-o", "explainer.concurrency=4",
                                      "-o", "explainer.backoff=0.01"), KEY, tmp_path)
    finally:
        server.stop()
    assert result.returncode != 0
    assert server.count("401") >= 1 and server.over_limit == 0, result.stderr
    assert KEY not in result.stderr and KEY not in result.stdout
    assert "Traceback" not in result.stderr and "never retrieved" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {api} stopped: AuthenticationError (401)"), result.stderr
    assert "***" in lines[0]  # the server's echo of the key, masked
    assert files_holding(tmp_path / "runs", KEY) == []
    events = (tmp_path / "runs" / "r" / "events.jsonl").read_text()
    assert "explain-start" in events
