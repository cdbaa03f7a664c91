"""Data-dependent initialisation: b_dec at the geometric median (or mean) of a first batch, and
the input scale for optional normalisation."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """The point minimising the sum of Euclidean distances to `points` [N, d] (Weiszfeld's
    algorithm, in float64); robust to the outlier tokens that drag the mean."""
    x = points.double()
    median = x.mean(0)
    for _ in range(max_iter):
        dist = (x - median).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() <= tol * max(median.norm().item(), 1.0):
            median = new
            break
        median = new
    return median.to(points.dtype)


@torch.no_grad()
def init_b_dec(sae, x: Tensor) -> None:
    """Set b_dec from data as the SAE's options say (geometric_median, mean or zeros)."""
    method = sae.options.init_b_dec
    if method == "zeros":
        return
    value = geometric_median(x) if method == "geometric_median" else x.double().mean(0).to(x.dtype)
    sae.b_dec.copy_(value.to(sae.b_dec.dtype))


@torch.no_grad()
def expected_norm_scale(x: Tensor) -> float:
    """Scale s with E||s x||^2 = d_in (SAELens' "expected_average_only_in" convention)."""
    mean_sq = x.double().pow(2).sum(1).mean().item()
    return float((x.shape[1] / mean_sq) ** 0.5) if mean_sq > 0 else 1.0
