"""Which SAE features push the model towards an answer token rather than a baseline token?

The SAE is spliced into the hookpoint with its error term frozen (x = decode(z) + err, err detached),
so the model's output is unchanged while the latents z become variables. For the metric
m = logit[answer] - logit[baseline] at the answer position, a latent's attribution at a token is
grad_z(m) * z (gradient times activation: the first-order effect of zeroing it there, i.e. the
gradient dotted with the change in reconstruction, as in the paper). Attributions are pooled
(summed) over the image span and the text span; the top candidates are then checked by exact
ablation (zero the latent at every token, keep the error term, rerun). The image-region map of a
feature is its attribution on each image token of the base view, arranged on the patch grid.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lmmsae.steering.steer import Steering, make_edit

SPANS = ("image", "text", "all")


@dataclass
class Attribution:
    """Ranked features for one behaviour, over a batch. Scores are summed over the batch's rows."""

    metric: list[float]                        # clean logit difference per row
    ranked: list[int]                          # latents, best first (by `rank_by` span)
    scores: dict[str, dict[int, float]]        # span -> latent -> pooled grad x activation
    ablation: dict[int, float] = field(default_factory=dict)  # latent -> metric(clean) - metric(ablated)
    maps: dict[int, list[np.ndarray | None]] = field(default_factory=dict)  # latent -> per-row [rows, cols]
    activation_maps: dict[int, list[np.ndarray | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "ranked": self.ranked,
            "scores": {s: {str(k): v for k, v in d.items()} for s, d in self.scores.items()},
            "ablation": {str(k): v for k, v in self.ablation.items()},
            "maps": {str(k): [None if m is None else m.tolist() for m in v] for k, v in self.maps.items()},
        }


def span_masks(kind: np.ndarray) -> dict[str, np.ndarray]:
    """Image, text and all (non-padding) positions from a token map's kind array [B, S]."""
    from lmmsae.models.base import TokenKind

    kind = np.asarray(kind)
    image = (kind == int(TokenKind.IMAGE)) | (kind == int(TokenKind.IMAGE_NEWLINE))
    real = kind != int(TokenKind.PADDING)
    return {"image": image, "text": real & ~image, "all": real}


def last_positions(kind: np.ndarray) -> list[int]:
    """Index of the last non-padding token of each row (where the next token is predicted)."""
    from lmmsae.models.base import TokenKind

    real = np.asarray(kind) != int(TokenKind.PADDING)
    return [int(np.nonzero(r)[0][-1]) for r in real]


def logit_diff(logits: torch.Tensor, positions: Sequence[int], answer: Sequence[int],
               baseline: Sequence[int]) -> torch.Tensor:
    """Per row: logits[row, position, answer] - logits[row, position, baseline]."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    pos = torch.as_tensor(list(positions), device=logits.device)
    at = logits[rows, pos]
    a = torch.as_tensor(list(answer), device=logits.device)
    b = torch.as_tensor(list(baseline), device=logits.device)
    return at[rows, a] - at[rows, b]


class _Splice:
    """Edit that swaps x for decode(z) + frozen error, keeping z (a leaf with grad) for later."""

    def __init__(self, sae):
        self.sae = sae
        self.z: torch.Tensor | None = None

    def __call__(self, acts: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        dtype = next(iter(self.sae.parameters())).dtype
        flat = acts.reshape(-1, acts.shape[-1]).to(dtype)
        with torch.no_grad():
            z = self.sae.encode(flat)
        z = z.detach().requires_grad_(True)
        x_hat = self.sae.decode(z)
        err = (flat - x_hat).detach()
        self.z = z
        return (x_hat + err).reshape(acts.shape).to(acts.dtype)


def attribute(run: Callable[..., torch.Tensor], sae, kind: np.ndarray, answer: Sequence[int],
              baseline: Sequence[int], positions: Sequence[int] | None = None, top_k: int = 20,
              n_ablate: int = 10, rank_by: str = "all", grid: Callable[[int, np.ndarray], np.ndarray | None] | None = None,
              n_maps: int = 5) -> Attribution:
    """Rank latents by pooled grad x activation on the logit difference; ablate the top `n_ablate` exactly.

    run(edit, grad) -> logits [B, S, V]: one forward pass with `edit` (or None) at the hookpoint,
    gradients enabled when `grad`. kind: the token kinds [B, S]. grid(row, values[S]) -> the values on
    that row's base-view patch grid (None without an image), for the maps of the top `n_maps` latents.
    """
    if rank_by not in SPANS:
        raise ValueError(f"rank_by must be one of {', '.join(SPANS)}")
    kind = np.asarray(kind)
    positions = list(positions) if positions is not None else last_positions(kind)
    splice = _Splice(sae)
    logits = run(splice, True)
    metric = logit_diff(logits.float(), positions, answer, baseline)
    metric.sum().backward()
    z = splice.z
    per_token = (z.grad * z).detach().reshape(kind.shape[0], kind.shape[1], -1)  # [B, S, L]
    acts = z.detach().reshape(kind.shape[0], kind.shape[1], -1)
    masks = span_masks(kind)
    pooled = {s: (per_token * torch.as_tensor(m, device=per_token.device)[..., None]).sum((0, 1))
              for s, m in masks.items()}
    order = torch.argsort(pooled[rank_by], descending=True)[:top_k].tolist()
    scores = {s: {int(i): float(p[i]) for i in order} for s, p in pooled.items()}
    result = Attribution([float(v) for v in metric.detach()], [int(i) for i in order], scores)
    with torch.no_grad():
        clean = logit_diff(run(None, False).float(), positions, answer, baseline)
        for latent in order[:n_ablate]:
            edit = make_edit(sae, Steering([latent], [0.0], "clamp"))
            ablated = logit_diff(run(edit, False).float(), positions, answer, baseline)
            result.ablation[int(latent)] = float((clean - ablated).sum())
    if grid is not None:
        for latent in order[:n_maps]:
            result.maps[int(latent)] = [grid(r, per_token[r, :, latent].cpu().numpy()) for r in range(kind.shape[0])]
            result.activation_maps[int(latent)] = [grid(r, acts[r, :, latent].cpu().numpy())
                                                   for r in range(kind.shape[0])]
    return result


# ----------------------------------------------------------------------------- with an adapter


def base_view_grid(token_map) -> Callable[[int, np.ndarray], np.ndarray | None]:
    """grid(row, values[S]) placing a row's values on its base-view patch grid (None without an image)."""

    def grid(row: int, values: np.ndarray) -> np.ndarray | None:
        if not token_map.grids or not token_map.grids[row]:
            return None
        return token_map.view_map(row, np.asarray(values, dtype=np.float32), view=0)

    return grid


def adapter_runner(adapter, batch, hookpoint: str) -> Callable[..., torch.Tensor]:
    """run(edit, grad) for `attribute`: the adapter's logits on `batch`, with `edit` at `hookpoint`."""

    def run(edit, grad: bool) -> torch.Tensor:
        ctx = adapter.intervene(hookpoint, edit) if edit is not None else contextlib.nullcontext()
        with ctx:
            return adapter.logits(batch, grad=grad)

    return run


def token_id(tokenizer, word: str) -> int:
    """The id of the first token of `word` as the model would continue with it (no special tokens)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        from lmmsae.errors import UserError

        raise UserError(f"{word!r} tokenizes to nothing: choose an answer word the tokenizer knows")
    return int(ids[0])


def attribute_answer(adapter, sae, hookpoint: str, samples: Sequence, prompt: str | None, answer: str,
                     baseline: str, **kw) -> Attribution:
    """Attribute answer vs baseline (words) at the next token after the prompt, for a batch of samples."""
    batch = adapter.prepare(list(samples), prompt)
    tok = getattr(adapter.processor, "tokenizer", adapter.processor)
    a, b = token_id(tok, answer), token_id(tok, baseline)
    n = len(samples)
    return attribute(adapter_runner(adapter, batch, hookpoint), sae, batch.token_map.kind, [a] * n, [b] * n,
                     grid=base_view_grid(batch.token_map), **kw)
