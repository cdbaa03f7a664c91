"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre * H(pre - threshold), with a per-latent
threshold learnt through straight-through estimators (rectangle kernel of width `bandwidth`)
and an L0 penalty. The parameter is the threshold itself (kept positive after each step), stored as
`threshold` as SAELens does: saving and loading copy it bit for bit, with no exp/log on the way."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmmsae.saes.base import SAE, BatchContext, LossOutput, require

MIN_THRESHOLD = 1e-6


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
    normalize_inputs_by_default = True  # its thresholds and L0 coefficient assume unit-scale inputs

    @dataclass
    class Options(SAE.Options):
        l0_coefficient: float = 0.01   # penalty = coef * mean active latents per token
        bandwidth: float = 0.1         # straight-through kernel width, in pre-activation units
        threshold_init: float = 0.5

        def __post_init__(self):
            super().__post_init__()
            require(self, l0_coefficient=(self.l0_coefficient >= 0, ">= 0"), bandwidth=(self.bandwidth > 0, "> 0"),
                    threshold_init=(self.threshold_init > 0, "> 0"))

    def __init__(self, d_in: int, options=None, **kw):
        super().__init__(d_in, options, **kw)
        self.threshold = nn.Parameter(torch.full((self.n_latents,), float(self.options.threshold_init),
                                                 device=self.device, dtype=self.dtype))

    def activation(self, pre: Tensor) -> Tensor:
        return pre * (pre > self.threshold)

    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        pre = self.pre_acts(x)
        z = _JumpReLU.apply(pre, self.threshold, self.options.bandwidth)
        x_hat = self.decode(z)
        fvu = (x_hat - x).pow(2).sum() / batch.total_variance
        l0 = _Step.apply(pre, self.threshold, self.options.bandwidth).sum() / batch.n_tokens_global
        loss = fvu + self.options.l0_coefficient * l0
        return self._output(x_hat, loss, {"fvu": fvu, "l0_penalty": l0}, z)

    def after_step(self) -> None:
        super().after_step()
        with torch.no_grad():  # a threshold at or below 0 would let every negative pre-activation through
            self.threshold.clamp_(min=MIN_THRESHOLD)
