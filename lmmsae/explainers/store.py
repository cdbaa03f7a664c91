"""Explanations on disk: `explanations/<explainer>.jsonl`, one Explanation per line, appended as they arrive.

Resumable by (hookpoint, latent): the last line for a key wins, so a retried feature simply appends
its new record. A line torn by a crash is ignored on reading and cut off before appending (lmmsae.jsonl).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

from lmmsae.jsonl import JsonlWriter, dumps, read_jsonl
from lmmsae.records import Explanation
from lmmsae.secrets import scrub

FIELDS = {f.name for f in dataclasses.fields(Explanation)}


def to_json(explanation: Explanation) -> str:
    return dumps(dataclasses.asdict(explanation))


def _from_dict(data: dict) -> Explanation:
    return Explanation(**{k: v for k, v in data.items() if k in FIELDS})


def read_explanations(path: str | Path) -> dict[tuple[str, int], Explanation]:
    """The latest record per (hookpoint, latent); missing file = nothing yet."""
    out: dict[tuple[str, int], Explanation] = {}
    for data in read_jsonl(path):
        try:
            e = _from_dict(data)
        except TypeError:
            continue
        out[(e.hookpoint, int(e.latent))] = e
    return out


def done_keys(path: str | Path) -> set[tuple[str, int]]:
    """Features that need no new request: the explained ones (a failed one is asked again on resume)."""
    return {k for k, e in read_explanations(path).items() if e.status == "ok"}


class ExplanationWriter(JsonlWriter):
    """Appends Explanations, each flushed, so a crash loses at most the line being written."""

    def write(self, explanation: Explanation) -> None:
        super().write(dataclasses.asdict(explanation))

    def write_all(self, explanations: Iterable[Explanation]) -> None:
        for e in explanations:
            self.write(e)


def rewrite(path: str | Path, explanations: Iterable[Explanation]) -> None:
    """Replace the file atomically with exactly these records (used after refining labels)."""
    from lmmsae.atomic import atomic_write_text

    atomic_write_text(path, "".join(scrub(to_json(e)) + "\n" for e in explanations))
