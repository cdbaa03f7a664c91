"""Reading a JSON file a user or an earlier run left: anything wrong with it is one line naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmmsae.errors import UserError


def read_json(path: str | Path, expect: type | None = dict) -> Any:
    """The parsed file; a missing, unreadable, non-UTF-8 or malformed file (or, with `expect`, one
    holding another type) is a UserError naming it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is corrupt (not valid JSON: {str(exc).splitlines()[0]}): delete or fix it") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if expect is not None and not isinstance(value, expect):
        raise UserError(f"{path} must hold a JSON {'object' if expect is dict else expect.__name__}, "
                        f"not {type(value).__name__}")
    return value
