"""Steering records: `steering/<name>.jsonl` (lmmsae.jsonl), resumable by each record's `key`."""

from __future__ import annotations

from pathlib import Path

from lmmsae.jsonl import read_jsonl


def done_keys(path: str | Path) -> set[str]:
    return {r["key"] for r in read_jsonl(path) if "key" in r}
