"""Which latents to cache: all, a range ("0:5000"), a list ([3, 17] or "3,17"), or a file of ids."""

from __future__ import annotations

import json
from pathlib import Path

from lmmsae.errors import UserError


def parse_latents(spec, n_latents: int) -> list[int]:
    """Sorted, unique latent ids in [0, n_latents) for `spec`.

    `spec`: None or "all"; "start:stop" (either side may be empty); a list or "a,b,c" of ids and ranges;
    or the path of a file (JSON list, or ids / ranges separated by whitespace, commas or newlines)."""
    if spec is None or spec == "all" or spec == []:
        return list(range(n_latents))
    source = ""
    if isinstance(spec, str) and Path(spec).is_file():
        source = f" in {spec}"
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            raise UserError(f"cannot read the latents file {spec} ({type(exc).__name__}): it must be text, a JSON "
                            f"list or ids / ranges separated by commas or whitespace") from None
        try:
            spec = json.loads(text)
        except ValueError:
            lines = (line.split("#", 1)[0] for line in text.splitlines())
            spec = " ".join(lines).replace(",", " ").split()
    parts = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    out: set[int] = set()
    for part in parts:
        out.update(_part(part, n_latents, source))
    bad = sorted(i for i in out if not 0 <= i < n_latents)
    if bad:
        raise UserError(f"latent {bad[0]} is out of range: the SAE has {n_latents} latents (0..{n_latents - 1})")
    if not out:
        raise UserError(f"cache.latents = {spec!r} selects no latent")
    return sorted(out)


def _part(part, n_latents: int, source: str = "") -> range | list[int]:
    text = str(part).strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            return range(int(a) if a else 0, int(b) if b else n_latents)
        return [int(text)]
    except ValueError:
        raise UserError(f"cannot read latents {text!r}{source}: use all, start:stop, a list of ids, or a file of ids") from None
