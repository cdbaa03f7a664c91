"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre * H(pre - threshold), with a per-latent
threshold learnt through straight-through estimators (rectangle kernel of width `bandwidth`)
and an L0 penalty. Thresholds are stored as `threshold` in the checkpoint, as SAELens does."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmmsae.saes.base import SAE, BatchContext, LossOutput


def _kernel(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        grad_t = (-(threshold / eps) * _kernel((pre - threshold) / eps) * grad).sum(0)
        return grad_pre, grad_t, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_t = (-(1.0 / eps) * _kernel((pre - threshold) / eps) * grad).sum(0)
        return None, grad_t, None


class JumpReLUSAE(SAE):
    architecture = "jumprelu"

    @dataclass
    class Options(SAE.Options):
        l0_coefficient: float = 0.01   # penalty = coef * mean active latents per token
        bandwidth: float = 0.1         # straight-through kernel width, in pre-activation units
        threshold_init: float = 0.5

    def __init__(self, d_in: int, options=None, **kw):
        super().__init__(d_in, options, **kw)
        init = math.log(max(self.options.threshold_init, 1e-12))
        self.log_threshold = nn.Parameter(torch.full((self.n_latents,), init, device=self.device, dtype=self.dtype))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: Tensor) -> Tensor:
        return pre * (pre > self.threshold)

    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        pre = self.pre_acts(x)
        threshold = self.threshold
        z = _JumpReLU.apply(pre, threshold, self.options.bandwidth)
        x_hat = self.decode(z)
        fvu = (x_hat - x).pow(2).sum() / batch.total_variance
        l0 = _Step.apply(pre, threshold, self.options.bandwidth).sum() / batch.n_tokens_global
        loss = fvu + self.options.l0_coefficient * l0
        return self._output(x_hat, loss, {"fvu": fvu, "l0_penalty": l0}, z)

    # checkpoint tensors: `threshold` rather than its log, as SAELens stores it
    def export_tensors(self) -> dict[str, Tensor]:
        tensors = super().export_tensors()
        tensors["threshold"] = tensors.pop("log_threshold").exp()
        return tensors

    def import_tensors(self, tensors: dict[str, Tensor]) -> None:
        tensors = dict(tensors)
        if "threshold" in tensors:
            tensors["log_threshold"] = tensors.pop("threshold").clamp_min(1e-12).log()
        super().import_tensors(tensors)
