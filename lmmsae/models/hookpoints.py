"""Hookpoint names: module paths of the loaded model, with short forms and globs.

`model.language_model.layers.24` is the canonical name of decoder block 24 (its output is the
residual stream after the block). Accepted aliases: `layers.24`, `language_model.layers.24`, and
`model.layers.24` (the language model's own naming, as in sparsify's released SAEs). Any other
module path of the model (e.g. `layers.3.mlp`, `model.multi_modal_projector`) is accepted too;
only decoder blocks are listed. No torch at import time.
"""

from __future__ import annotations

import fnmatch
import re

from lmmsae.errors import UserError, did_you_mean

LM_PREFIX = "model.language_model."
LAYER_RE = re.compile(r"model\.language_model\.layers\.(\d+)")
_ALIASES = (
    (re.compile(r"^layers\."), "model.language_model.layers."),
    (re.compile(r"^language_model\.model\.layers\."), "model.language_model.layers."),
    (re.compile(r"^language_model\.layers\."), "model.language_model.layers."),
    (re.compile(r"^model\.layers\."), "model.language_model.layers."),
    (re.compile(r"^language_model\."), "model.language_model."),
)
GLOB_CHARS = set("*?[")


def canonical(name: str) -> str:
    """The full module path a (short) hookpoint name stands for, without loading anything."""
    name = name.strip()
    for pattern, replacement in _ALIASES:
        if pattern.match(name):
            return pattern.sub(replacement, name, count=1)
    return name


def short(name: str) -> str:
    """`model.language_model.layers.24` -> `layers.24` (for display and folder names)."""
    return name[len(LM_PREFIX):] if name.startswith(LM_PREFIX) else name


def layer_index(name: str) -> int | None:
    """Decoder block index of a canonical block hookpoint, else None."""
    m = LAYER_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def resolve(patterns, listed: list[str], modules: set[str] | None = None) -> list[str]:
    """Canonical names for `patterns` (names, short forms, globs), in order, without duplicates.

    `listed` are the advertised hookpoints (decoder blocks); `modules` every module path, which
    plain names may also name. Unknown names raise a UserError listing the valid ones.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    modules = modules if modules is not None else set(listed)
    out: list[str] = []
    for pattern in patterns:
        full = canonical(pattern)
        if GLOB_CHARS & set(full):
            found = [n for n in listed if fnmatch.fnmatchcase(n, full)]
            found = found or sorted(n for n in modules if fnmatch.fnmatchcase(n, full))
            if not found:
                raise UserError(f"hookpoint pattern {pattern!r} matches nothing. Valid hookpoints: {_show(listed)}")
        elif full in modules or full in listed:
            found = [full]
        else:
            raise UserError(f"unknown hookpoint {pattern!r}.{did_you_mean(full, listed) or did_you_mean(pattern, [short(n) for n in listed])} "
                            f"Valid hookpoints: {_show(listed)} (short forms like {short(listed[0]) if listed else 'layers.0'!r} "
                            f"work; see `lmmsae models --hookpoints MODEL`)")
        out += [n for n in found if n not in out]
    return out


def _show(names: list[str], limit: int = 8) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:3]) + f", ... , {names[-1]} ({len(names)} in all)"
