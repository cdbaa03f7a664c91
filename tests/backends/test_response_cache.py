"""The response cache: keys, persistence, log-probabilities, scrubbing, an older file."""

from __future__ import annotations

import sqlite3

from PIL import Image

from lmmsae.backends.base import Answer, Query
from lmmsae.backends.cache import ResponseCache, request_key


def test_cache_key_depends_on_model_prompt_and_pixels_and_persists(tmp_path):
    a = Image.new("RGB", (8, 8), (10, 20, 30))
    b = a.copy()
    b.putpixel((3, 3), (10, 20, 31))
    q = Query([a], "p", "s")
    key = request_key({"model": "m"}, q)
    assert key == request_key({"model": "m"}, Query([a.copy()], "p", "s"))
    others = [request_key({"model": "n"}, q), request_key({"model": "m"}, Query([b], "p", "s")),
              request_key({"model": "m"}, Query([a], "p2", "s")), request_key({"model": "m"}, Query([a], "p", "")),
              request_key({"model": "m"}, Query([a], "p", "s", variant=1)), request_key({"model": "m"}, Query([a, a], "p", "s"))]
    assert len({key, *others}) == 7
    cache = ResponseCache(tmp_path / "r.sqlite")
    cache.put(key, "m", Answer("hello", tokens=12, usage={"input_tokens": 10}))
    cache.close()
    again = ResponseCache(tmp_path / "r.sqlite")
    hit = again.get(key)
    assert hit.text == "hello" and hit.cached and hit.tokens == 0 and hit.usage == {"input_tokens": 10}
    assert again.get(others[0]) is None and len(again) == 1


def test_log_probabilities_round_trip_and_secrets_never_land(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "sk-cache-secret-123")
    cache = ResponseCache(tmp_path / "r.sqlite")
    cache.put("k", "m", Answer("echo sk-cache-secret-123", logprobs={"yes": -0.1, "no": -2.5}))
    cache.put("plain", "m", Answer("no log-probabilities"))
    assert cache.get("k").logprobs == {"yes": -0.1, "no": -2.5} and cache.get("k").text == "echo ***"
    assert cache.get("plain").logprobs is None
    cache.close()
    assert b"sk-cache-secret-123" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_a_cache_written_before_log_probabilities_still_serves(tmp_path):
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT, text TEXT NOT NULL, tokens INTEGER, "
               "usage TEXT, created REAL)")
    db.execute("INSERT INTO responses VALUES ('old', 'm', 'an old answer', 3, '{}', 0)")
    db.commit()
    db.close()
    cache = ResponseCache(tmp_path / "r.sqlite")
    assert cache.get("old").text == "an old answer" and cache.get("old").logprobs is None
    cache.put("new", "m", Answer("x", logprobs={"yes": 0.0}))
    assert cache.get("new").logprobs == {"yes": 0.0}
