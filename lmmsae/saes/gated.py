"""Gated SAE (Rajamanoharan et al. 2024): a gate path decides which latents fire, a magnitude path
(the same encoder rows rescaled by exp(r_mag), own bias b_mag) decides how strongly. The L1
penalty acts on the gate only; an auxiliary reconstruction through a frozen decoder keeps the
gate informative. Tensors as in SAELens: `encoder.weight` (W_gate), `encoder.bias` (b_gate),
`r_mag`, `b_mag`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lmmsae.saes.base import SAE, BatchContext, LossOutput, require
from lmmsae.saes.relu import input_rms


class GatedSAE(SAE):
    architecture = "gated"

    @dataclass
    class Options(SAE.Options):
        l1_coefficient: float = 0.5  # penalty = coef * mean_t sum_i relu(pi_gate_i) ||W_dec_i|| / rms(x)

        def __post_init__(self):
            super().__post_init__()
            require(self, l1_coefficient=(self.l1_coefficient >= 0, ">= 0"))

    def __init__(self, d_in: int, options=None, **kw):
        super().__init__(d_in, options, **kw)
        self.r_mag = nn.Parameter(torch.zeros(self.n_latents, device=self.device, dtype=self.dtype))
        self.b_mag = nn.Parameter(torch.zeros(self.n_latents, device=self.device, dtype=self.dtype))

    def _paths(self, x: Tensor) -> tuple[Tensor, Tensor]:
        centred = x.to(self.dtype) - self.b_dec
        projected = centred @ self.W_enc.T
        gate = projected + self.b_enc
        magnitude = projected * self.r_mag.exp() + self.b_mag
        return gate, magnitude

    def encode(self, x: Tensor) -> Tensor:
        gate, magnitude = self._paths(x)
        return (gate > 0).to(magnitude.dtype) * magnitude.relu()

    def activation(self, pre: Tensor) -> Tensor:  # pre-activations alone do not define gated latents
        raise NotImplementedError("gated SAEs encode from inputs; use encode(x)")

    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        gate, magnitude = self._paths(x)
        z = (gate > 0).to(magnitude.dtype) * magnitude.relu()
        x_hat = self.decode(z)
        fvu = (x_hat - x).pow(2).sum() / batch.total_variance
        gate_acts = gate.relu()
        norms = self.decoder_norms()
        l1 = (gate_acts * norms).sum() / batch.n_tokens_global / input_rms(batch)
        aux_hat = gate_acts @ self.W_dec.detach() + self.b_dec.detach()
        aux = (aux_hat - x).pow(2).sum() / batch.total_variance
        loss = fvu + self.options.l1_coefficient * l1 + aux
        return self._output(x_hat, loss, {"fvu": fvu, "l1": l1, "aux": aux}, z)
