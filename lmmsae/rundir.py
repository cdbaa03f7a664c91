"""Run directories: one per run, never silently reused; `--resume` continues one."""

from __future__ import annotations

import json
import platform
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from lmmsae import artifacts
from lmmsae.atomic import atomic_write_text
from lmmsae.errors import UserError

VERSIONED = ("torch", "transformers", "open_clip_torch", "h5py", "numpy", "pluggy", "anthropic", "openai")


class RunDir:
    """A run's folder: resolved config, environment, event log and one subfolder per stage."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path, name: str | None) -> "RunDir":
        out = Path(out)
        if name is None:
            name = datetime.now().strftime("%Y%m%d-%H%M%S")
            candidate, n = out / name, 1
            while candidate.exists():
                n += 1
                candidate = out / f"{name}-{n}"
        else:
            candidate = out / name
            if candidate.exists():
                raise UserError(
                    f"run directory {str(candidate)!r} already exists: pass --resume to continue it, "
                    f"or choose another --name"
                )
        candidate.mkdir(parents=True)
        return cls(candidate)

    @classmethod
    def open(cls, out: str | Path, name: str | None) -> "RunDir":
        if name is None:
            raise UserError("--resume needs --name of the run to continue (a folder under --out)")
        path = Path(out) / name
        if not (path / artifacts.RUN_CONFIG).is_file():
            raise UserError(f"cannot resume {str(path)!r}: it has no {artifacts.RUN_CONFIG}; start it without --resume")
        return cls(path)

    def file(self, relative: str) -> Path:
        return self.path / relative

    def saved_config(self) -> dict[str, Any]:
        from lmmsae.config import load_yaml

        return load_yaml(self.file(artifacts.RUN_CONFIG))

    def write_config(self, config) -> None:
        from lmmsae.config import save_yaml

        save_yaml(config, self.file(artifacts.RUN_CONFIG))

    def write_env(self) -> None:
        atomic_write_text(self.file(artifacts.ENV), json.dumps(environment(), indent=2) + "\n")

    def log(self, event: str, **fields: Any) -> None:
        """Append one event to the run's log (flushed, so a crash keeps what happened)."""
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "event": event, **fields}
        with open(self.file(artifacts.EVENTS), "a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def is_complete(self, relative: str) -> bool:
        """A stage output counts only with its completion marker, written after the output."""
        return self.file(relative + artifacts.COMPLETE_SUFFIX).exists() and self.file(relative).exists()

    def mark_complete(self, relative: str, **info: Any) -> None:
        info.setdefault("finished", time.time())
        atomic_write_text(self.file(relative + artifacts.COMPLETE_SUFFIX), json.dumps(info, default=str) + "\n")


def environment() -> dict[str, Any]:
    """Versions of Python, the heavy libraries, lmmsae and every loaded plugin."""
    from lmmsae import plugins

    versions = {}
    for dist in ("lmmsae", *VERSIONED):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "plugins": {p.distribution: p.version for p in plugins.plugins()},
        "argv": sys.argv,
    }
