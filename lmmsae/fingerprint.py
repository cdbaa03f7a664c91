"""Fingerprints: short digests of what determines an artifact (resolved options, inputs' fingerprints,
external files), so a stage can tell whether its output is still what its config asks for."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lmmsae.errors import UserError


def canonical(value: Any) -> Any:
    """`value` as plain JSON data (dataclasses as dicts, tuples as lists, paths as strings)."""
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def digest(value: Any) -> str:
    """16 hex digits of sha256 over the canonical JSON of `value`."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def path_fingerprint(path: str | Path, what: str = "input") -> str:
    """Digest of a file or folder outside the run (name, size and mtime of every file in it): an
    external input that changes on disk makes what was made from it stale."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{what} {str(path)!r} does not exist")
    if path.is_file():
        entries = [[path.name, *_stat(path)]]
    else:
        entries = [[str(p.relative_to(path)), *_stat(p)] for p in sorted(path.rglob("*"))
                   if p.is_file() and not p.name.endswith(".tmp")]
    return digest({"path": str(path.resolve()), "files": entries})


def _stat(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def without(options: Any, *names: str) -> dict[str, Any]:
    """Options as a dict minus fields that never change a result (batch sizes, checkpoint intervals)."""
    data = canonical(options)
    return {k: v for k, v in data.items() if k not in names}
