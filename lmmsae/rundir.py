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
from lmmsae.secrets import scrub

VERSIONED = ("torch", "transformers", "open_clip_torch", "h5py", "numpy", "pluggy", "anthropic", "openai")


class RunDir:
    """A run's folder: resolved config, environment, event log and one subfolder per stage."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def planned(cls, out: str | Path, name: str | None) -> "RunDir":
        """The folder a new run will get (not created yet): a named one must not exist."""
        out = Path(out)
        if name is None:
            name = datetime.now().strftime("%Y%m%d-%H%M%S")
            candidate, n = out / name, 1
            while candidate.exists():
                n += 1
                candidate = out / f"{name}-{n}"
            return cls(candidate)
        check_run_name(name)
        candidate = out / name
        if candidate.exists():
            raise UserError(f"run directory {str(candidate)!r} already exists: pass --resume to continue it, "
                            f"or choose another --name")
        return cls(candidate)

    @classmethod
    def create(cls, out: str | Path, name: str | None) -> "RunDir":
        run = cls.planned(out, name)
        run.path.mkdir(parents=True)
        return run

    @classmethod
    def open(cls, out: str | Path, name: str | None) -> "RunDir":
        if name is None:
            raise UserError("--resume needs --name of the run to continue (a folder under --out)")
        check_run_name(name)
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
            f.write(scrub(json.dumps(record, default=str)) + "\n")

    # -- the state of every stage output (see lmmsae.plan): one mechanism for "complete and current"

    def state(self, relative: str) -> dict[str, Any] | None:
        """The state recorded beside an output, or None (never made, or made by no stage we know)."""
        path = self.file(relative + artifacts.STATE_SUFFIX)
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return None  # a torn or foreign file: the output counts as never made
        if not isinstance(state, dict) or (state.get("status") == "complete" and not self.file(relative).exists()):
            return None
        return state

    def is_complete(self, relative: str) -> bool:
        """Whether a state record says the output is complete (current or not: see lmmsae.plan)."""
        return (self.state(relative) or {}).get("status") == "complete"

    def is_current(self, relative: str, fingerprint: str) -> bool:
        """Complete, and made with `fingerprint` (what the config asks for now)."""
        state = self.state(relative) or {}
        return state.get("status") == "complete" and state.get("fingerprint") == fingerprint

    def begin(self, unit, reads: dict[str, str]) -> None:
        """Record that `unit` is being made (before any of its output is written)."""
        self._write_state(unit, {"status": "running", "inputs": reads, "started": time.time()})

    def complete(self, unit, **info: Any) -> dict[str, Any]:
        """Record that `unit`'s output is complete; written after the output, atomically."""
        import uuid

        state = self.state(unit.path) or {}
        started = state.get("started") or time.time()
        finished = time.time()
        return self._write_state(unit, {"status": "complete", "inputs": state.get("inputs", {}),
                                        "instance": uuid.uuid4().hex[:12], "started": started,
                                        "finished": finished, "seconds": round(finished - started, 3),
                                        "info": info})

    def discard(self, relative: str) -> None:
        """Remove an output and its state (a stale or state-less output is never trusted or mixed in)."""
        import shutil

        path = self.file(relative)
        state = self.file(relative + artifacts.STATE_SUFFIX)
        if state.exists():
            state.unlink()
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def _write_state(self, unit, fields: dict[str, Any]) -> dict[str, Any]:
        state = {"stage": unit.stage, "fingerprint": unit.fingerprint, "records": unit.records,
                 "options": unit.options, "extent": unit.extent, "external": unit.external,
                 "made_from": unit.made_from, **fields}
        atomic_write_text(self.file(unit.path + artifacts.STATE_SUFFIX), json.dumps(state, indent=1, default=str) + "\n")
        return state


def check_run_name(name: str) -> None:
    """A run name is one plain folder name, so a run never lands outside --out."""
    text = str(name)
    if (not text.strip() or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or text != text.strip() or text.startswith("-")):
        raise UserError(f"run name {text!r} must be one folder name (no '/' or '..', no leading '-', no surrounding spaces): "
                        f"use --out to choose where runs go")


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
