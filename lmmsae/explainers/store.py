"""Explanations on disk: `explanations/<explainer>.jsonl`, one Explanation per line, appended as they arrive.

Resumable by (hookpoint, latent): the last line for a key wins, so a retried feature simply appends
its new record. A line torn by a crash is ignored on reading, and fenced off before appending.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

from lmmsae.records import Explanation

FIELDS = {f.name for f in dataclasses.fields(Explanation)}


def to_json(explanation: Explanation) -> str:
    return json.dumps(dataclasses.asdict(explanation), default=_plain, ensure_ascii=False)


def from_json(line: str) -> Explanation:
    data = json.loads(line)
    return Explanation(**{k: v for k, v in data.items() if k in FIELDS})


def read_explanations(path: str | Path) -> dict[tuple[str, int], Explanation]:
    """The latest record per (hookpoint, latent); missing file = nothing yet."""
    path = Path(path)
    out: dict[tuple[str, int], Explanation] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                e = from_json(line)
            except (ValueError, TypeError):
                continue  # a line torn by a crash
            out[(e.hookpoint, int(e.latent))] = e
    return out


def done_keys(path: str | Path, retry_failed: bool = False) -> set[tuple[str, int]]:
    """Features that need no new request: explained ones, and failed ones unless `retry_failed`."""
    return {k for k, e in read_explanations(path).items() if e.status == "ok" or not retry_failed}


class ExplanationWriter:
    """Appends records and flushes each, so a crash loses at most the line being written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fence = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._f = open(self.path, "a", encoding="utf-8")
        if fence:
            self._f.write("\n")

    def write(self, explanation: Explanation) -> None:
        self._f.write(to_json(explanation) + "\n")
        self._f.flush()

    def write_all(self, explanations: Iterable[Explanation]) -> None:
        for e in explanations:
            self.write(e)

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rewrite(path: str | Path, explanations: Iterable[Explanation]) -> None:
    """Replace the file atomically with exactly these records (used after refining labels)."""
    from lmmsae.atomic import atomic_write_text

    atomic_write_text(path, "".join(to_json(e) + "\n" for e in explanations))


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _plain(value):
    """numpy scalars and other simple objects in meta become JSON numbers/strings."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
