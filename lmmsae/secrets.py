"""The secret values in use (API keys) and a scrubber for every text that leaves the process.

Backends register the keys they read; values of environment variables named like keys or tokens
(`OPENAI_API_KEY`, `HF_TOKEN`, `*_SECRET`, ...) count too, so a key a client library reads by
itself is covered. The CLI's error lines, events.jsonl, JSONL records and the response cache pass
their text through `scrub`.
"""

from __future__ import annotations

import os
import re

MASK = "***"
MIN_LENGTH = 8  # shorter values ("1", "true") are settings, not secrets; masking them would garble text
SECRET_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)

_registered: set[str] = set()


def register(value: str | None) -> None:
    """Remember a secret (e.g. an API key read from the environment) so that `scrub` masks it."""
    if value and len(value) >= MIN_LENGTH:
        _registered.add(value)


def known() -> list[str]:
    """Every secret value to mask, longest first (so a key containing another is masked whole)."""
    from_env = {v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_LENGTH}
    return sorted(_registered | from_env, key=len, reverse=True)


def scrub(text: str) -> str:
    """`text` with every known secret replaced by ***."""
    if not text:
        return text
    for secret in known():
        if secret in text:
            text = text.replace(secret, MASK)
    return text
