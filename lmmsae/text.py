"""Words and yes/no verdicts in free text: what judges, steering and hallucination metrics read from answers."""

from __future__ import annotations

import math
import re
from typing import Mapping

_WORD = re.compile(r"[a-z0-9']+")
_VERDICTS = {"yes": True, "true": True, "no": False, "false": False}


def words(text: str | None) -> list[str]:
    """Lower-case word tokens (punctuation dropped; apostrophes kept inside words)."""
    return _WORD.findall((text or "").lower())


def parse_yes_no(text: str | None) -> bool | None:
    """True for yes, False for no, from the first yes/no (or true/false) word; None when there is none."""
    for w in words(text):
        if w in _VERDICTS:
            return _VERDICTS[w]
    return None


def yes_probability(logprobs: Mapping[str, float] | None) -> float | None:
    """P(yes) / (P(yes) + P(no)) from an answer's first-token log-probabilities (token text -> log-prob).

    Tokens count by their text, case and surrounding spaces/punctuation ignored (" Yes", "yes." ...).
    None when there are no log-probabilities or neither answer is among them.
    """
    if not logprobs:
        return None
    mass = {True: 0.0, False: 0.0}
    for token, logprob in logprobs.items():
        verdict = _VERDICTS.get("".join(words(token)))
        if verdict is not None and logprob is not None:
            mass[verdict] += math.exp(logprob)
    total = mass[True] + mass[False]
    return mass[True] / total if total > 0 else None
