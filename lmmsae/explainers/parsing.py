"""Turn a model's raw answer into (status, explanation text, reason).

"tagged" answers must contain an `[EXPLANATION]:` line (the paper's protocol); the last one wins.
"plain" answers are the explanation as a whole. An explicit "cannot explain" is a failure with its
own reason, never an explanation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = re.compile(r"\[?\s*explanation\s*\]?\s*\**\s*:\s*\**\s*(?P<text>.*)", re.IGNORECASE)
UNEXPLAINABLE = re.compile(r"^(?:i\s+)?(?:cannot|can't|can not|unable to|could not|couldn't)\s+(?:be\s+)?explain|"
                           r"^no common (?:pattern|feature)|^n/?a$|^none$", re.IGNORECASE)
MAX_CHARS = 300


@dataclass
class Parsed:
    status: str          # "ok", "unexplainable" or "malformed"
    text: str | None
    reason: str | None = None


def parse_answer(answer: str, answer_format: str = "tagged") -> Parsed:
    """Extract the explanation; `answer_format` is "tagged" or "plain"."""
    raw = (answer or "").strip()
    if answer_format == "plain":
        text = " ".join(raw.split())
    else:
        text = None
        for line in raw.splitlines():
            m = TAG.search(line)
            if m and line.lstrip(" *#>-").lower().lstrip("[").startswith("explanation"):
                text = m.group("text")
        if text is None:
            return Parsed("malformed", None, f"no [EXPLANATION]: line in the answer: {_short(raw)!r}")
        text = " ".join(text.strip().strip("*").strip().split())
    text = text.strip(" \"'`").rstrip(".").strip()
    if not text:
        return Parsed("malformed", None, f"empty explanation in the answer: {_short(raw)!r}")
    if UNEXPLAINABLE.search(text):
        return Parsed("unexplainable", None, f"the explainer found no common pattern ({_short(text)!r})")
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rsplit(" ", 1)[0]
    return Parsed("ok", text)


def _short(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."
