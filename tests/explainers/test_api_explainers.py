"""The anthropic and openai-compatible backends under the paper's explainer, with the real client
libraries, against a local server."""

from __future__ import annotations

import pytest

from records import make_records
from lmmsae import plugins
from lmmsae.backends.cache import ResponseCache
from lmmsae.errors import UserError
from lmmsae.explainers.store import ExplanationWriter, done_keys

SECRET = "sk-test-0123456789-secret"
BACKENDS = ["anthropic", "openai-compatible"]


def make(backend: str, server, cache=None, **options):
    """The registered explainer `backend` (the paper's prompt over that backend), as a run builds it."""
    base = dict(backoff=0.01, backoff_max=0.05, timeout=0.5, concurrency=4, max_retries=3, api_key_env="TEST_KEY",
                base_url=server.url if backend == "anthropic" else server.url + "/v1")
    if backend == "openai-compatible":
        base["model"] = "test-vlm"
    component = plugins.get("explainers", backend)
    return component.load()(component.options({**base, **options}), name=backend, cache=cache)


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("TEST_KEY", SECRET)


def by_latent(explanations):
    return {e.latent: e for e in explanations}


@pytest.mark.parametrize("backend", BACKENDS)
def test_explanations_follow_the_images_and_failures_carry_reasons(backend, server):
    colours = ["red", "green", "blue", "purple", "cyan", "yellow"]
    out = by_latent(make(backend, server).explain(make_records(colours)))
    assert sorted(out) == list(range(6))
    assert [out[i].text for i in (0, 1, 2, 5)] == ["red regions", "green regions", "blue regions", "yellow regions"]
    assert all(out[i].status == "ok" and out[i].meta["n_images"] == 5 for i in (0, 1, 2, 5))
    # purple: the fake model never writes an [EXPLANATION]: line -> asked twice, then failed with the reason
    assert out[3].status == "failed" and out[3].text is None
    assert out[3].reason.startswith("no [EXPLANATION]: line") and out[3].meta["asks"] == 2
    # cyan: an explicit "cannot explain" is a failure of its own kind, not an explanation
    assert out[4].status == "failed" and out[4].meta["unexplainable"] and "no common pattern" in out[4].reason
    assert len(server.log) == 7  # 6 features + one re-ask for the malformed one
    assert all(e.explainer == backend and e.hookpoint == "layers.2" for e in out.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_limits_server_errors_timeouts_and_garbage_are_retried(backend, server):
    server.inject("429", "500", "529", "timeout", "garbage", "429")
    server.timeout_sleep = 4.0  # generous margins: a loaded CI machine must not time out a normal answer
    x = make(backend, server, max_retries=6, timeout=1.5)
    out = by_latent(x.explain(make_records(["red", "green", "blue", "yellow", "orange", "red", "green", "blue"])))
    assert len(out) == 8 and all(e.status == "ok" for e in out.values())
    assert x.backend.stats["retries"] == 6 and x.backend.stats["requests"] == 8 + 6
    assert sum(e.meta["attempts"] for e in out.values()) == 14


@pytest.mark.parametrize("backend", BACKENDS)
def test_exhausted_retries_and_bad_requests_fail_the_feature_only(backend, server):
    server.inject("500", "500", "500", "400")  # concurrency 1: feature 0 uses 3 attempts, feature 1 gets the 400
    x = make(backend, server, concurrency=1, max_retries=2)
    out = by_latent(x.explain(make_records(["red", "green", "blue"])))
    assert out[0].status == "failed" and out[0].reason.startswith("gave up after 3 attempts")
    assert "500" in out[0].reason and out[0].meta["attempts"] == 3
    assert out[1].status == "failed" and "400" in out[1].reason and out[1].meta["attempts"] == 1
    assert SECRET not in out[1].reason and "***" in out[1].reason  # the server echoed the key: scrubbed
    assert out[2].status == "ok" and out[2].text == "blue regions"


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_key_stops_the_run(backend, server):
    server.inject("401")
    with pytest.raises(UserError, match="401"):
        list(make(backend, server, concurrency=1).explain(make_records(["red", "green"])))


def test_missing_key_is_a_clear_error(server, monkeypatch):
    monkeypatch.delenv("TEST_KEY")
    with pytest.raises(UserError, match="TEST_KEY"):
        list(make("anthropic", server).explain(make_records(["red"])))
    # local OpenAI-compatible servers need no key
    assert next(iter(make("openai-compatible", server).explain(make_records(["red"])))).status == "ok"


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrency_never_exceeds_the_bound(backend, server):
    server.latency = 0.08
    out = list(make(backend, server, concurrency=3).explain(make_records(["red", "green", "blue"] * 5)))
    assert len(out) == 15 and all(e.status == "ok" for e in out)
    assert server.max_inflight == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_after_a_crash_never_sends_a_request_twice(backend, server, tmp_path):
    records = make_records(["red", "green", "blue", "yellow", "orange"] * 2)
    path = tmp_path / "explanations.jsonl"
    cache = ResponseCache(tmp_path / "responses.sqlite")
    server.latency = 0.05
    with ExplanationWriter(path) as writer:
        for i, e in enumerate(make(backend, server, cache=cache).explain(records)):
            writer.write(e)
            if i == 3:
                break  # the run "crashes": requests still in flight are abandoned
    first = server.digests()
    assert 4 <= len(first) < 10
    done = done_keys(path)
    assert len(done) == 4
    todo = [r for r in records if (r.hookpoint, r.latent) not in done]
    x = make(backend, server, cache=cache)
    with ExplanationWriter(path) as writer:
        writer.write_all(x.explain(todo))
    assert len(done_keys(path)) == 10
    digests = server.digests()
    assert len(digests) == len(set(digests)) == 10  # each feature's request went out exactly once
    assert x.backend.stats["cache_hits"] == len(first) - 4  # answers that arrived during the crash were not paid again


def test_token_cap_stops_spending_and_records_the_rest_as_failed(server):
    x = make("openai-compatible", server, concurrency=1, token_cap=300)  # each answer bills 110 tokens
    out = by_latent(x.explain(make_records(["red"] * 6)))
    assert [out[i].status for i in range(6)] == ["ok"] * 3 + ["failed"] * 3
    assert all("token cap reached" in out[i].reason for i in (3, 4, 5))
    assert len(server.log) == 3 and x.backend.budget.spent == 330


def test_anthropic_request_shape_images_and_cached_instructions(server):
    x = make("anthropic", server, n_images=3)
    e = next(iter(x.explain(make_records(["red"]))))
    body = server.log[0]["body"]
    content = body["messages"][0]["content"]
    assert [c["type"] for c in content] == ["image", "image", "image", "text"]
    assert content[0]["source"]["media_type"] == "image/png" and len(content[0]["source"]["data"]) > 100
    system = body["system"][0]
    assert system["cache_control"] == {"type": "ephemeral"} and "[EXPLANATION]:" in system["text"]
    assert body["model"] == "claude-sonnet-5-5" and body["max_tokens"] == 400
    assert e.meta["tokens"] == 160  # input + output + cache-read tokens


def test_openai_request_shape(server):
    x = make("openai-compatible", server, n_images=2, extra_body={"top_k": 1})
    next(iter(x.explain(make_records(["red"]))))
    body = server.log[0]["body"]
    assert body["messages"][0]["role"] == "system" and "[EXPLANATION]:" in body["messages"][0]["content"]
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["temperature"] == 0.0 and body["max_tokens"] == 400 and body["top_k"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_backend_is_a_generic_judge(backend, server):
    x = make(backend, server).backend
    images = [make_records(["green"])[0].examples[0].image]
    assert x.ask(images, "what colour?") == "The highlighted regions are all green.\n[EXPLANATION]: green regions"
    answers = x.ask_many([(images, "q1"), ([], "q2")])
    assert answers[0].endswith("green regions") and answers[1] == "[LABEL]: a label"
