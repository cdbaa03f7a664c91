"""Progress on long work: a rich bar on a terminal, plain periodic log lines otherwise; and
silencing the libraries' own bars and notices so that ours are the only progress shown."""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
LOG_EVERY_S = 10.0

# Read by huggingface_hub and transformers when they are imported: no "Loading weights" or download
# bars, no info/warning logs (we act on errors, which still show). A value the user set wins.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def quiet_libraries() -> None:
    """Silence transformers' and huggingface_hub's progress bars and notices (called by the CLI
    before anything loads a model; libraries already imported are switched off directly)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    bars_off = os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    if "huggingface_hub" in sys.modules and bars_off:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        if bars_off:
            logging.disable_progress_bar()
        if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
            logging.set_verbosity_error()


def track(items: Iterable[T], total: int | None = None, description: str = "working",
          unit: str = "items", stream=None) -> Iterator[T]:
    """Yield `items`, reporting progress on stderr (or `stream`)."""
    stream = stream or sys.stderr
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if getattr(stream, "isatty", lambda: False)():
        yield from _rich(items, total, description, stream)
    else:
        yield from _plain(items, total, description, unit, stream)


def _rich(items, total, description, stream):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(file=stream), transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


def _plain(items, total, description, unit, stream):
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            of = f"/{total}" if total else ""
            rate = done / max(now - start, 1e-9)
            print(f"[{description}] {done}{of} {unit} ({rate:.1f}/s)", file=stream, flush=True)
    elapsed = time.monotonic() - start
    print(f"[{description}] done: {done} {unit} in {elapsed:.1f}s", file=stream, flush=True)
