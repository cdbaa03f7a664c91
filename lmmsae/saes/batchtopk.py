"""BatchTopK SAE (Bussmann et al. 2024): during training keep the k * batch largest activations
across the whole batch, so tokens get a variable number of latents; for inference a single
threshold (a running mean of the smallest kept activation) replaces the batch selection, and
the SAE is saved as a JumpReLU with that threshold."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmmsae.saes.base import SAE, BatchContext, LossOutput, require
from lmmsae.saes.jumprelu import JumpReLUSAE


class BatchTopKSAE(SAE):
    architecture = "batchtopk"

    @dataclass
    class Options(SAE.Options):
        k: int = 32                     # mean active latents per token
        threshold_momentum: float = 0.01

        def __post_init__(self):
            super().__post_init__()
            require(self, k=(self.k >= 1 and (not self.n_latents or self.k <= self.n_latents), "in 1..n_latents"),
                    threshold_momentum=(0 < self.threshold_momentum <= 1, "in (0, 1]"))

    def __init__(self, d_in: int, options=None, **kw):
        super().__init__(d_in, options, **kw)
        self.register_buffer("threshold", torch.zeros((), device=self.device, dtype=self.dtype))

    def activation(self, pre: Tensor) -> Tensor:
        if self.training:
            return self._batch_topk(pre.relu())
        return pre * (pre > self.threshold) * (pre > 0)

    def _batch_topk(self, acts: Tensor) -> Tensor:
        n_keep = min(self.options.k * acts.shape[0], acts.numel())
        flat = acts.flatten()
        values, indices = flat.topk(n_keep, sorted=False)
        return torch.zeros_like(flat).scatter(0, indices, values).view_as(acts)

    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        z = self._batch_topk(self.pre_acts(x).relu())
        x_hat = self.decode(z)
        fvu = (x_hat - x).pow(2).sum() / batch.total_variance
        with torch.no_grad():
            kept = z[z > 0]
            if kept.numel():
                m = self.options.threshold_momentum if bool(self.threshold > 0) else 1.0
                self.threshold.lerp_(kept.min().to(self.threshold.dtype), m)
        return self._output(x_hat, fvu, {"fvu": fvu}, z)

    def distributed_state(self) -> list[Tensor]:
        return [self.threshold]

    def inference_sae(self) -> SAE:
        """A JumpReLU with this SAE's weights and its learnt threshold on every latent."""
        options = JumpReLUSAE.Options(n_latents=self.n_latents, normalize_decoder=self.normalize_decoder,
                                      init_b_dec=self.options.init_b_dec)
        sae = JumpReLUSAE(self.d_in, options, device=self.device, dtype=self.dtype)
        tensors = {k: v for k, v in self.export_tensors().items() if k != "threshold"}
        tensors["threshold"] = self.threshold.detach().expand(self.n_latents).clone()
        sae.import_tensors(tensors)
        sae.extra = {**self.extra, "trained_as": "batchtopk", "k": self.options.k}
        return sae
