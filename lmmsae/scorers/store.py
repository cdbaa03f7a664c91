"""Score records on disk: `scores/<scorer>/<explainer>.jsonl`, one JSON object per feature, appended.

Resumable by (hookpoint, latent): the last line for a key wins; a line torn by a crash is ignored on
reading and fenced off (a newline) before appending.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_scores(path: str | Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest record per (hookpoint, latent); a missing file is empty."""
    path = Path(path)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
                out[(str(record["hookpoint"]), int(record["latent"]))] = record
            except (ValueError, TypeError, KeyError):
                continue
    return out


class ScoreWriter:
    """Appends records, flushing each."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size > 0 and _last_byte(self.path) != b"\n"
        self._f = open(self.path, "a", encoding="utf-8")
        if torn:
            self._f.write("\n")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, default=_plain, ensure_ascii=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1)


def _plain(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
