"""Editing a hookpoint's output during forward passes and generation.

An edit is `edit(acts [B, S, d], mask [B, S] bool) -> new acts`; only the masked positions of the
result are used (the mask holds the chosen token kinds), so edits may ignore it. Ready-made edits:
`add(vector)`, `replace(value)`, `scale(factor)`. The adapter knows the running batch's token map;
the hook asks it for the mask of every call: the first call of a run is the prefill (full prompt),
later calls of a `generate` are decode steps whose new tokens are text.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from lmmsae.models.base import TokenKind, TokenMap


@dataclass
class Run:
    """What the adapter is running right now: its token map, and calls seen per hooked module."""

    token_map: TokenMap | None
    generating: bool = False
    calls: dict[int, int] = field(default_factory=dict)


def add(vector: torch.Tensor, coefficient: float = 1.0) -> Callable:
    """Steering: acts + coefficient * vector (vector [d] or broadcastable to [B, S, d])."""
    def edit(acts, mask):
        return acts + coefficient * vector.to(acts.device, acts.dtype)
    return edit


def replace(value: torch.Tensor) -> Callable:
    """Replace acts by `value` (broadcastable to [B, S, d]; [B, S, d] only matches the prefill)."""
    def edit(acts, mask):
        return value.to(acts.device, acts.dtype).expand_as(acts)
    return edit


def scale(factor: float) -> Callable:
    """acts * factor (factor 0 is zero-ablation)."""
    def edit(acts, mask):
        return acts * factor
    return edit


def output_tensor(output):
    return output[0] if isinstance(output, tuple) else output


def with_tensor(output, tensor):
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


def token_mask(run: Run | None, kinds, acts: torch.Tensor, prefill: bool) -> torch.Tensor | None:
    """bool [B, S] of positions to edit; None means every position."""
    if kinds is None:
        return None
    B, S = acts.shape[:2]
    if not prefill:
        return None if TokenKind.TEXT in kinds else torch.zeros(B, S, dtype=torch.bool, device=acts.device)
    if run is None or run.token_map is None:
        raise RuntimeError("token_kinds needs a batch run through the adapter (forward, logits or generate)")
    mask = torch.from_numpy(run.token_map.mask(kinds)).to(acts.device)
    if mask.shape[0] != B and B % mask.shape[0] == 0:  # num_return_sequences / beams repeat rows
        mask = mask.repeat_interleave(B // mask.shape[0], dim=0)
    if mask.shape != (B, S):
        raise RuntimeError(f"token map {tuple(mask.shape)} does not match activations {(B, S)}")
    return mask


@contextlib.contextmanager
def intervene(adapter, modules: list[torch.nn.Module], edit: Callable, token_kinds=None, prefill_only: bool = False):
    """Register the editing hooks on `modules` for the duration of the block."""
    kinds = TokenKind.parse(token_kinds)

    def hook(module, args, output):
        run: Run | None = adapter.current_run
        key = id(module)
        n = 0
        if run is not None:
            n = run.calls.get(key, 0)
            run.calls[key] = n + 1
        prefill = n == 0
        if prefill_only and not prefill:
            return output
        acts = output_tensor(output)
        mask = token_mask(run, kinds, acts, prefill)
        if mask is not None and not bool(mask.any()):
            return output
        new = edit(acts, mask if mask is not None else torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device))
        new = new.to(acts.dtype)
        if mask is not None:
            new = torch.where(mask[..., None], new, acts)
        return with_tensor(output, new)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
