"""A response cache keyed by (model identity, prompt, images), so no request is ever paid for twice.

SQLite (stdlib) in WAL mode, one row per answer, committed as soon as the answer arrives: a crashed
or repeated run reads its answers back. The key is a sha256 over the model identity, the generation
settings, the system prompt, the prompt, every image's pixels, the re-ask variant and whether
log-probabilities were asked for. Every backend call passes through it (lmmsae.backends.base.Session).
API keys never enter it: answer texts are scrubbed of known secrets before they are stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from lmmsae.backends.base import Answer, Query
from lmmsae.secrets import scrub


def image_digest(image) -> bytes:
    """Hash of an image's mode, size and pixels (not of an encoding, which may vary by library version)."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.digest()


def request_key(model: dict[str, Any], query: Query) -> str:
    """The cache key of one request; `query.variant` separates deliberate re-asks (e.g. after a malformed answer)."""
    h = hashlib.sha256()
    request = {"model": model, "system": query.system, "prompt": query.prompt, "n_images": len(query.images),
               "variant": query.variant}
    if query.logprobs:
        request["logprobs"] = True
    h.update(json.dumps(request, sort_keys=True).encode())
    for image in query.images:
        h.update(image_digest(image))
    return h.hexdigest()


class ResponseCache:
    """Answers by request key; safe to share between threads (one connection behind a lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, "
                         "text TEXT NOT NULL, tokens INTEGER, usage TEXT, created REAL, logprobs TEXT)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(responses)")}
        if "logprobs" not in columns:  # a cache written before answers carried log-probabilities
            self._db.execute("ALTER TABLE responses ADD COLUMN logprobs TEXT")

    def get(self, key: str) -> Answer | None:
        with self._lock:
            row = self._db.execute("SELECT text, usage, logprobs FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return Answer(text=row[0], tokens=0, cached=True, attempts=0, usage=json.loads(row[1] or "{}"),
                      logprobs=json.loads(row[2]) if row[2] else None)

    def put(self, key: str, model: str, answer: Answer) -> None:
        logprobs = json.dumps(answer.logprobs) if answer.logprobs is not None else None
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses (key, model, text, tokens, usage, created, logprobs) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (key, model, scrub(answer.text), answer.tokens,
                                                              json.dumps(answer.usage), time.time(), logprobs))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
