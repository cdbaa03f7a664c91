"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Towards Monosemanticity"
and its April 2024 update): the decoder is left free, so the penalty cannot be dodged by shrinking
latents and growing decoder rows."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from lmmsae.saes.base import SAE, BatchContext, LossOutput, require


def input_rms(batch: BatchContext) -> Tensor:
    """Root mean squared deviation of the inputs: makes L1-style penalties scale-free."""
    return (batch.total_variance / max(batch.n_tokens_global, 1)).sqrt()


class ReLUSAE(SAE):
    architecture = "relu"
    default_normalize_decoder = False

    @dataclass
    class Options(SAE.Options):
        l1_coefficient: float = 0.5  # penalty = coef * mean_t sum_i z_i ||W_dec_i|| / rms(x)

        def __post_init__(self):
            super().__post_init__()
            require(self, l1_coefficient=(self.l1_coefficient >= 0, ">= 0"))

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        z = self.encode(x)
        x_hat = self.decode(z)
        fvu = (x_hat - x).pow(2).sum() / batch.total_variance
        l1 = (z * self.decoder_norms()).sum() / batch.n_tokens_global / input_rms(batch)
        return self._output(x_hat, fvu + self.options.l1_coefficient * l1, {"fvu": fvu, "l1": l1}, z)
