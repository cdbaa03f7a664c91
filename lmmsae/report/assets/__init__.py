"""The report's one stylesheet and one script (hand-written, no dependencies), copied next to the pages."""

from __future__ import annotations

import shutil
from pathlib import Path

FILES = ("report.css", "report.js")


def copy_assets(folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(Path(__file__).with_name(name), folder / name)
