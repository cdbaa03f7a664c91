"""Append-only JSONL with resume by key: a crash loses at most the line being written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Complete JSON lines of a file (a torn last line from a crash is ignored)."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            if line.strip():
                yield json.loads(line)


def done_keys(path: str | Path) -> set[str]:
    return {r["key"] for r in read_jsonl(path) if "key" in r}


def drop_torn_tail(path: str | Path) -> None:
    """Cut a partial last line left by a crash, so appending continues on a clean line."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def clean_json(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


class JsonlWriter:
    """Append records one line at a time, flushed (NaN/inf written as null: strict JSON)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(self.path)
        self._f = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(clean_json(record), allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
