"""The explain stage against an API that fails: a loopback server (127.0.0.1, bounded number of
requests) speaking the Anthropic and the OpenAI APIs fails a seeded 30% of requests with 429 / 500 /
529 / timeouts (it sleeps past the client's timeout) / malformed JSON / truncated bodies.

Every feature ends explained or recorded failed (none lost), and `--resume` completes the failed ones
without asking again for any answer already paid for (the response cache)."""

from __future__ import annotations

import collections
import json

import pytest

from api_runs import explain_args, files_holding, oracle_features, run_cli
from fake_lmm_server import FAULTS, FakeLMMServer

from lmmsae.datasets.shapes import BACKGROUNDS, COLORS, SHAPES, SIZES

KEY = "sk-fault-suite-0123456789"
ATTRIBUTES = ([("color", c) for c in COLORS] + [("shape", s) for s in SHAPES] + [("size", s) for s in SIZES]
              + [("background", b) for b in BACKGROUNDS])
CLIENT = ["-o", "explainer.concurrency=4", "-o", "explainer.max_retries=1", "-o", "explainer.timeout=0.75",
          "-o", "explainer.backoff=0.01", "-o", "explainer.backoff_max=0.05"]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return oracle_features(tmp_path_factory.mktemp("features"), ATTRIBUTES)


def latest_records(path):
    records = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        records[record["latent"]] = record
    return records


@pytest.mark.parametrize("api", ["anthropic", "openai-compatible"])
def test_faults_lose_no_feature_and_resume_completes_without_paying_twice(api, features, tmp_path):
    server = FakeLMMServer(responder=lambda body: "[EXPLANATION]: shapes", faults=0.3, fault_seed=11,
                           timeout_sleep=1.5, max_requests=400).start()
    out = tmp_path / "runs"
    path = out / "r" / "explanations" / f"{api}.jsonl"
    try:
        first = run_cli(explain_args(api, server, features, out, *CLIENT), KEY, tmp_path)
        assert first.returncode == 0, first.stderr
        records = latest_records(path)
        assert sorted(records) == list(range(len(ATTRIBUTES)))  # 0 lost: one record per feature asked for
        failed = {lat for lat, r in records.items() if r["status"] == "failed"}
        assert failed and all("gave up after 2 attempts" in records[lat]["reason"] for lat in failed)
        assert all(r["text"] == "shapes" for r in records.values() if r["status"] == "ok")
        kinds = collections.Counter(e["action"] for e in server.log)
        assert all(kinds[k] > 0 for k in FAULTS) and server.injected == sum(kinds[k] for k in FAULTS), kinds
        print(f"{api}: {len(server.log)} requests, faults injected {dict((k, kinds[k]) for k in FAULTS)}, "
              f"{len(failed)} of {len(records)} features failed, 0 lost")

        for resume in range(3):  # each resume retries the failed features; a retry can meet new faults
            paid, sent = server.answered(), len(server.log)
            again = run_cli(explain_args(api, server, features, out, "--resume", *CLIENT), KEY, tmp_path)
            assert again.returncode == 0, again.stderr
            asked = server.log[sent:]
            assert not {e["digest"] for e in asked} & paid  # nothing already paid for went out again
            records = latest_records(path)
            retried = {lat for lat in failed}
            assert len(asked) == sum(records[lat]["meta"]["attempts"] for lat in retried)
            failed = {lat for lat, r in records.items() if r["status"] == "failed"}
            assert sorted(records) == list(range(len(ATTRIBUTES)))
            if not failed:
                break
        assert not failed, f"still failed after {resume + 1} resumes: {failed}"
        print(f"{api}: complete after {resume + 1} resume(s); {server.injected} faults injected in "
              f"{len(server.log)} requests")
        assert server.over_limit == 0
        assert files_holding(out, KEY) == []
    finally:
        server.stop()
