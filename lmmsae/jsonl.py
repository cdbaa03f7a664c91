"""Append-only JSONL records (explanations, scores, steering): a crash loses at most the line being
written. Readers skip a torn last line; a writer cuts it off before appending, so files stay valid.
Values are strict JSON: NaN and infinities become null, numpy scalars and arrays plain numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from lmmsae.secrets import scrub


def clean_json(value: Any) -> Any:
    """`value` with NaN/inf as None and numpy scalars/arrays as Python numbers/lists."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    return value


def dumps(record: dict[str, Any]) -> str:
    """One record as one line of strict JSON (objects JSON cannot hold become their str())."""
    return json.dumps(clean_json(record), allow_nan=False, ensure_ascii=False, default=str)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The complete records of a file, in order; a missing file has none."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn by a crash
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def drop_torn_tail(path: str | Path) -> None:
    """Cut a partial last line left by a crash, so appending continues on a clean line."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


class JsonlWriter:
    """Appends records one line at a time, each flushed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        drop_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(scrub(dumps(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
