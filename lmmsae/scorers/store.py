"""Score records on disk: `scores/<scorer>/<explainer>.jsonl`, one JSON object per feature, appended.

Resumable by (hookpoint, latent): the last line for a key wins; a line torn by a crash is ignored on
reading and cut off before appending (lmmsae.jsonl.JsonlWriter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmmsae.jsonl import read_jsonl


def read_scores(path: str | Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest record per (hookpoint, latent); a missing file is empty."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for record in read_jsonl(path):
        try:
            out[(str(record["hookpoint"]), int(record["latent"]))] = record
        except (KeyError, TypeError, ValueError):
            continue
    return out
