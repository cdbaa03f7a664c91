"""Every SAE metric, defined once, streamed in float64, reported with its definition.

Streaming accumulators (`ReconstructionStats`, `SpliceStats`) sum exact per-token quantities over
an evaluation set, so e.g. FVU is the ratio of set-wide sums, not a mean of per-batch ratios.
Each result is `{"value": ..., "definition": "..."}` (plus raw parts where a ratio can mislead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

DEAD_DEFINITION = "fraction of latents that never fire (activation != 0) on the evaluation window of {n} tokens"
DEFINITIONS = {
    "fvu": "fraction of variance unexplained: sum_t ||x_t - x_hat_t||^2 / sum_t ||x_t - mean(x)||^2 "
           "over the whole evaluation set (mean of x over the same set)",
    "explained_variance": "1 - fvu",
    "l0": "mean number of latents with activation != 0 per token",
    "dead_fraction": DEAD_DEFINITION,
    "dense_fraction": "fraction of latents firing on more than {threshold} of the evaluation tokens",
    "shrinkage": "mean over tokens of ||x_hat_t|| / ||x_t|| (below 1: reconstructions shrink)",
    "relative_reconstruction_bias": "sum_t ||x_hat_t||^2 / sum_t <x_t, x_hat_t> (1 = unbiased scale)",
    "mse": "mean over tokens of ||x_t - x_hat_t||^2",
    "ce_loss_recovered": "(CE_ablated - CE_sae) / (CE_ablated - CE_clean), next-token cross-entropy over the "
                         "counted positions, SAE reconstruction spliced in at the hookpoint",
    "kl_recovered": "(KL_ablated - KL_sae) / KL_ablated, KL(clean || patched) next-token distributions, "
                    "mean over the counted positions",
    "ce_clean": "mean next-token cross-entropy of the unmodified model over the counted positions (nats)",
    "ce_sae": "mean next-token cross-entropy with the SAE reconstruction spliced in (nats)",
    "ce_ablated": "mean next-token cross-entropy with the hookpoint ablated (nats)",
    "kl_sae": "mean KL(clean || SAE-spliced) over the counted positions (nats)",
    "kl_ablated": "mean KL(clean || ablated) over the counted positions (nats)",
}


def metric(name: str, value: float, **fmt: Any) -> dict[str, Any]:
    return {"value": value, "definition": DEFINITIONS[name].format(**fmt)}


# ---- the formulas, on tensors (the accumulators below use exactly these) ----------------------
def fvu(x: Tensor, x_hat: Tensor) -> float:
    """FVU of one set of tokens [N, d], in float64."""
    x, x_hat = x.double(), x_hat.double()
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def l0(z: Tensor) -> float:
    return float((z != 0).double().sum(-1).mean())


def shrinkage(x: Tensor, x_hat: Tensor) -> float:
    return float((x_hat.double().norm(dim=-1) / x.double().norm(dim=-1).clamp_min(1e-30)).mean())


def relative_reconstruction_bias(x: Tensor, x_hat: Tensor) -> float:
    x, x_hat = x.double(), x_hat.double()
    return float(x_hat.pow(2).sum() / (x * x_hat).sum())


def firing_fractions(counts: Tensor, n_tokens: int, dense_threshold: float = 1e-2) -> tuple[float, float]:
    """(dead, dense) fractions from per-latent firing counts over `n_tokens` tokens."""
    freq = counts.double() / max(n_tokens, 1)
    return float((counts == 0).double().mean()), float((freq > dense_threshold).double().mean())


def recovered(ablated: float, patched: float, clean: float) -> float:
    """(ablated - patched) / (ablated - clean); nan when the ablation does not change the loss."""
    denominator = ablated - clean
    return float((ablated - patched) / denominator) if denominator != 0 else float("nan")


# ---- streaming accumulators -------------------------------------------------------------------
@dataclass
class _KindCounts:
    tokens: int = 0
    active: float = 0.0
    fired: Tensor | None = None


class ReconstructionStats:
    """FVU, L0, dead/dense fractions and shrinkage over a stream of batches, in float64.

    `update(x, x_hat, z, kinds)` takes inputs [N, d], reconstructions, dense latents [N, n] and
    optionally a token-kind code per token (lmmsae.models.base.TokenKind values) for the
    per-modality breakdown of L0 and firing frequency.
    """

    def __init__(self, n_latents: int, dense_threshold: float = 1e-2, kind_names: dict[int, str] | None = None):
        self.n_latents = n_latents
        self.dense_threshold = dense_threshold
        self.kind_names = kind_names or {}
        self.n = 0
        self.sum_err = 0.0
        self.sum_x: Tensor | None = None
        self.sum_sq = 0.0
        self.sum_active = 0.0
        self.sum_ratio = 0.0
        self.sum_hat_sq = 0.0
        self.sum_dot = 0.0
        self.fired = torch.zeros(n_latents, dtype=torch.float64)
        self.kinds: dict[int, _KindCounts] = {}

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, z: Tensor, kinds: Tensor | None = None) -> None:
        x, x_hat = x.double().cpu(), x_hat.double().cpu()
        active = (z != 0).cpu()
        self.n += x.shape[0]
        self.sum_err += float((x - x_hat).pow(2).sum())
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_sq += float(x.pow(2).sum())
        self.sum_active += float(active.sum())
        self.sum_ratio += float((x_hat.norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-30)).sum())
        self.sum_hat_sq += float(x_hat.pow(2).sum())
        self.sum_dot += float((x * x_hat).sum())
        self.fired += active.sum(0).double()
        if kinds is not None:
            kinds = torch.as_tensor(kinds).cpu().reshape(-1)
            for kind in kinds.unique().tolist():
                rows = kinds == kind
                entry = self.kinds.setdefault(int(kind), _KindCounts(fired=torch.zeros(self.n_latents, dtype=torch.float64)))
                entry.tokens += int(rows.sum())
                entry.active += float(active[rows].sum())
                entry.fired += active[rows].sum(0).double()

    def total_variance(self) -> float:
        """sum_t ||x_t - mean||^2 = sum ||x||^2 - ||sum x||^2 / N."""
        if self.sum_x is None:
            return 0.0
        return self.sum_sq - float(self.sum_x.pow(2).sum()) / self.n

    def mean(self) -> Tensor:
        return self.sum_x / max(self.n, 1)

    def results(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n_tokens": 0}
        variance = self.total_variance()
        f = self.sum_err / variance if variance > 0 else float("nan")
        dead, dense = firing_fractions(self.fired, self.n, self.dense_threshold)
        out: dict[str, Any] = {
            "n_tokens": self.n,
            "fvu": metric("fvu", f),
            "explained_variance": metric("explained_variance", 1 - f),
            "mse": metric("mse", self.sum_err / self.n),
            "l0": metric("l0", self.sum_active / self.n),
            "dead_fraction": metric("dead_fraction", dead, n=self.n),
            "dense_fraction": metric("dense_fraction", dense, threshold=self.dense_threshold),
            "shrinkage": metric("shrinkage", self.sum_ratio / self.n),
            "relative_reconstruction_bias": metric("relative_reconstruction_bias", self.sum_hat_sq / self.sum_dot),
        }
        if self.kinds:
            out["by_token_kind"] = self._by_kind()
        return out

    def _by_kind(self) -> dict[str, Any]:
        """Per modality: L0, the fraction of latents that fire at all, and how many latents fire
        only on that kind of token (e.g. image-only latents)."""
        out = {}
        fired_any = {k: e.fired > 0 for k, e in self.kinds.items()}
        for kind, entry in sorted(self.kinds.items()):
            others = [v for k, v in fired_any.items() if k != kind]
            only = fired_any[kind] & ~torch.stack(others).any(0) if others else fired_any[kind]
            freq = entry.fired / max(entry.tokens, 1)
            out[self.kind_names.get(kind, str(kind))] = {
                "n_tokens": entry.tokens,
                "l0": {"value": entry.active / max(entry.tokens, 1),
                       "definition": "mean active latents per token of this kind"},
                "alive_fraction": {"value": float(fired_any[kind].double().mean()),
                                   "definition": "fraction of latents firing at least once on tokens of this kind"},
                "exclusive_fraction": {"value": float(only.double().mean()),
                                       "definition": "fraction of latents firing on this kind and on no other kind"},
                "mean_firing_frequency": {"value": float(freq.mean()),
                                          "definition": "mean over latents of (tokens of this kind where it fires / tokens of this kind)"},
            }
        return out


@torch.no_grad()
def next_token_losses(clean: Tensor, patched: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per counted position: cross-entropy of `patched` logits against `labels`, and
    KL(clean || patched). Logits [B, S, V] at position t predict labels[:, t]."""
    clean_lp = torch.log_softmax(clean.double(), -1)
    patched_lp = torch.log_softmax(patched.double(), -1)
    ce = -patched_lp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    kl = (clean_lp.exp() * (clean_lp - patched_lp)).sum(-1)
    return ce[mask], kl[mask]


@dataclass
class SpliceStats:
    """Streams CE/KL for clean, SAE-spliced and ablated runs over the counted positions."""

    ablation: str = "zero"
    tokens: str = "answer"
    spliced: str = "every token"
    n: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict(ce_clean=0.0, ce_sae=0.0, ce_ablated=0.0,
                                                                kl_sae=0.0, kl_ablated=0.0))

    def update(self, clean: Tensor, spliced: Tensor, ablated: Tensor, labels: Tensor, mask: Tensor) -> None:
        ce_clean, _ = next_token_losses(clean, clean, labels, mask)
        ce_sae, kl_sae = next_token_losses(clean, spliced, labels, mask)
        ce_abl, kl_abl = next_token_losses(clean, ablated, labels, mask)
        self.n += int(mask.sum())
        for name, value in (("ce_clean", ce_clean), ("ce_sae", ce_sae), ("ce_ablated", ce_abl),
                            ("kl_sae", kl_sae), ("kl_ablated", kl_abl)):
            self.sums[name] += float(value.sum())

    def results(self) -> dict[str, Any]:
        if self.n == 0:
            return {"n_positions": 0}
        mean = {k: v / self.n for k, v in self.sums.items()}
        where = f" ({self.tokens} tokens, {self.ablation} ablation of {self.spliced})"
        out: dict[str, Any] = {"n_positions": self.n, "ablation": self.ablation, "tokens": self.tokens,
                               "spliced": self.spliced}
        for name, value in mean.items():
            out[name] = {"value": value, "definition": DEFINITIONS[name] + where}
        ce_rec = recovered(mean["ce_ablated"], mean["ce_sae"], mean["ce_clean"])
        kl_rec = recovered(mean["kl_ablated"], mean["kl_sae"], 0.0)
        out["ce_loss_recovered"] = {"value": ce_rec, "definition": DEFINITIONS["ce_loss_recovered"] + where,
                                    "numerator": mean["ce_ablated"] - mean["ce_sae"],
                                    "denominator": mean["ce_ablated"] - mean["ce_clean"]}
        out["kl_recovered"] = {"value": kl_rec, "definition": DEFINITIONS["kl_recovered"] + where,
                               "numerator": mean["kl_ablated"] - mean["kl_sae"], "denominator": mean["kl_ablated"]}
        return out


def counted_positions(input_ids: Tensor, kinds: Tensor, tokens: str = "answer") -> tuple[Tensor, Tensor]:
    """(labels [B, S], mask [B, S]): position t predicts token t+1. `all` counts every position
    whose next token is not padding; `answer` only next tokens that are text after the last
    image token (the answer/caption)."""
    from lmmsae.models.base import TokenKind

    kinds = torch.as_tensor(kinds, device=input_ids.device)
    labels = torch.full_like(input_ids, -1)
    labels[:, :-1] = input_ids[:, 1:]
    next_kind = torch.full_like(kinds, int(TokenKind.PADDING))
    next_kind[:, :-1] = kinds[:, 1:]
    mask = (next_kind != int(TokenKind.PADDING)) & (labels >= 0)
    if tokens == "answer":
        positions = torch.arange(kinds.shape[1], device=kinds.device).expand_as(kinds)
        image_pos = torch.where(kinds == int(TokenKind.IMAGE), positions, torch.full_like(positions, -1))
        last_image = image_pos.max(1, keepdim=True).values
        mask &= (next_kind == int(TokenKind.TEXT)) & (positions + 1 > last_image)
    elif tokens != "all":
        raise ValueError(f"tokens must be 'answer' or 'all', not {tokens!r}")
    return labels, mask


@torch.no_grad()
def ce_kl_recovered(adapter, sae, hookpoint: str, batches: Iterable, tokens: str = "answer",
                    ablation: str = "zero", mean_activation: Tensor | None = None,
                    progress: Callable | None = None, token_kinds=None) -> dict[str, Any]:
    """Splice the SAE into the model at `hookpoint` (reconstruction replaces the activations on
    the `token_kinds` positions, every token when None) and compare next-token losses with the
    clean model and with an ablation of the same positions (`zero`, or `mean`: the mean
    activation, e.g. over the training tokens). Splice only the kinds the SAE was trained on: an
    SAE never shown text tokens reconstructs them badly, which says nothing about its features."""
    from lmmsae.models.base import TokenKind
    from lmmsae.saes.base import check_d_in

    if ablation == "mean" and mean_activation is None:
        raise ValueError("mean ablation needs mean_activation")
    check_d_in(sae, hookpoint, adapter.d_model(hookpoint))
    kinds = TokenKind.parse(token_kinds) if token_kinds else None
    spliced = " and ".join(k.name.lower() for k in kinds) + " tokens" if kinds else "every token"
    stats = SpliceStats(ablation=ablation, tokens=tokens, spliced=spliced)

    def splice(acts, _mask):
        flat = acts.reshape(-1, acts.shape[-1])
        return sae(flat.to(sae.dtype)).to(acts.dtype).reshape(acts.shape)

    def ablate(acts, _mask):
        if ablation == "zero":
            return torch.zeros_like(acts)
        return mean_activation.to(acts.device, acts.dtype).expand_as(acts).clone()

    for batch in (progress(batches) if progress else batches):
        clean = adapter.logits(batch)
        with adapter.intervene(hookpoint, splice, token_kinds=token_kinds):
            spliced = adapter.logits(batch)
        with adapter.intervene(hookpoint, ablate, token_kinds=token_kinds):
            ablated = adapter.logits(batch)
        input_ids = batch.inputs["input_ids"]
        labels, mask = counted_positions(input_ids, batch.token_map.kind, tokens)
        stats.update(clean, spliced, ablated, labels.to(clean.device), mask.to(clean.device))
    return stats.results()
