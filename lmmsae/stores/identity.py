"""Is an artifact the one this run would make? Compare the identity a store records with the run's.

activations.h5 and features.h5 record what produced them (model, dataset, hookpoint, SAE); a stage
reading one compares the store's `identity()` with what it expects, so a file copied from another
run (a features.h5 of a 128-latent SAE in a 256-latent run) is refused instead of used silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmmsae.errors import UserError


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"sae.cfg.n_latents": 256, ...} (JSON-normalised leaves)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.loads(json.dumps(value, default=str))}


def differences(expected: dict[str, Any], found: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, expected, found) for every leaf of `expected` that `found` does not match."""
    want, have = flatten(expected), flatten(found)
    return [(key, value, have.get(key)) for key, value in want.items() if have.get(key) != value]


def check_identity(expected: dict[str, Any], found: dict[str, Any], path: str | Path) -> None:
    """A one-line UserError naming what differs when `found` (a store's identity) is not `expected`.

    Only the keys of `expected` are compared: pass what must match (e.g. the SAE's cfg, not its path)."""
    diff = differences(expected, found)
    if not diff:
        return
    shown = "; ".join(f"{key}: file has {_short(got)}, this run has {_short(want)}" for key, want, got in diff[:3])
    more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
    raise UserError(f"{path} belongs to another run ({shown}{more}): delete it and rerun the stage that makes it, "
                    f"or point the run at the matching file")


def sae_identity(sae: Any) -> dict[str, Any]:
    """What identifies an SAE in the artifacts made with it: its cfg (architecture, sizes, options)."""
    cfg = dict(sae.cfg)
    return {"cfg": {key: cfg[key] for key in ("architecture", "d_in", "n_latents", "k") if key in cfg}}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
