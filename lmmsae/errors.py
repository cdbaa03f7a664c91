"""The one exception type for mistakes a user can fix; the CLI prints it as one line."""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input: a wrong name, option, file or shape. Printed without a traceback."""


def did_you_mean(name: str, choices) -> str:
    """A short hint naming the closest valid choice, or '' if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
