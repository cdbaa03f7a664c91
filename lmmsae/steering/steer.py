"""SAE-based edits of a hookpoint's activations, as pure functions of (acts, sae, features, values).

By default the SAE's error term is kept: out = x + decode(z') - decode(z), where z = encode(x) and
z' is z with the chosen latents clamped (set to a value) or shifted (value added). An edit that
leaves z unchanged (add 0) therefore returns x bit for bit, and an unsteered run is exactly the
original model. `replace_with_reconstruction=True` is the paper's variant: out = decode(z'), which
also changes the output where nothing is steered (by the SAE's reconstruction error).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

MODES = ("clamp", "add")
CHUNK = 1024  # tokens encoded at once: bounds the dense [tokens, n_latents] buffer


@dataclass
class Steering:
    """Which latents to change and how. `values` has one value per feature (or one for all)."""

    features: list[int]
    values: list[float]
    mode: Literal["clamp", "add"] = "clamp"
    replace_with_reconstruction: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        self.features = [int(f) for f in self.features]
        values = [float(v) for v in self.values]
        if len(values) == 1 and len(self.features) != 1:
            values = values * len(self.features)  # one value for all (or none left for no features)
        if len(values) != len(self.features):
            raise ValueError(f"{len(self.features)} features but {len(values)} values")
        self.values = values

    def is_identity(self) -> bool:
        """True when the edit cannot change anything (adding zero while keeping the error term)."""
        if self.replace_with_reconstruction:
            return False
        return not self.features or (self.mode == "add" and all(v == 0 for v in self.values))


def edit_latents(z: torch.Tensor, features: Sequence[int], values: Sequence[float], mode: str) -> torch.Tensor:
    """z [N, n_latents] with the chosen columns clamped to / shifted by the values (a copy)."""
    out = z.clone()
    idx = torch.as_tensor(list(features), dtype=torch.long, device=z.device)
    vals = torch.as_tensor(list(values), dtype=z.dtype, device=z.device).expand(z.shape[0], -1)
    if mode == "clamp":
        out[:, idx] = vals
    elif mode == "add":
        out[:, idx] = out[:, idx] + vals
    else:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return out


def steer_rows(x: torch.Tensor, sae, steering: Steering) -> torch.Tensor:
    """Edit rows x [N, d]; returns [N, d] in x's dtype."""
    if steering.is_identity():
        return x
    dtype = sae.dtype
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], CHUNK):
        xs = x[start:start + CHUNK]
        xf = xs.to(dtype)
        z = sae.encode(xf)
        z2 = edit_latents(z, steering.features, steering.values, steering.mode)
        if steering.replace_with_reconstruction:
            out[start:start + CHUNK] = sae.decode(z2).to(x.dtype)
        else:
            delta = sae.decode(z2) - sae.decode(z)
            out[start:start + CHUNK] = xs + delta.to(x.dtype)
    return out


def steer_acts(acts: torch.Tensor, mask: torch.Tensor | None, sae, steering: Steering) -> torch.Tensor:
    """Edit acts [B, S, d] where mask [B, S] is true (everywhere when mask is None)."""
    if steering.is_identity():
        return acts
    with torch.no_grad():
        if mask is None:
            flat = acts.reshape(-1, acts.shape[-1])
            return steer_rows(flat, sae, steering).reshape(acts.shape)
        mask = mask.to(acts.device, torch.bool)
        if not bool(mask.any()):
            return acts
        out = acts.clone()
        out[mask] = steer_rows(acts[mask], sae, steering)
        return out


def make_edit(sae, steering: Steering):
    """The edit callable an adapter's `intervene(hookpoint, edit, ...)` expects."""

    def edit(acts: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return steer_acts(acts, mask, sae, steering)

    return edit


def ablation(features: Sequence[int], keep_error: bool = True) -> Steering:
    """Zero the given latents (clamp to 0): the usual 'remove this feature' edit."""
    return Steering(list(features), [0.0], mode="clamp", replace_with_reconstruction=not keep_error)
