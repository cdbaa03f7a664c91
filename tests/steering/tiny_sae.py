"""A tiny random ReLU SAE on the real SAE interface, for steering tests."""

import torch

from lmmsae.saes.base import SAE


class TinySAE(SAE):
    architecture = "relu"

    def __init__(self, d: int = 8, n: int = 32, seed: int = 0):
        super().__init__(d, SAE.Options(n_latents=n, normalize_decoder=False))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.encoder.weight.copy_((torch.randn(d, n, generator=g) / d ** 0.5).T)
            self.encoder.bias.copy_(torch.randn(n, generator=g) * 0.1)
            self.W_dec.copy_(torch.randn(n, d, generator=g) / n ** 0.5)
            self.b_dec.copy_(torch.randn(d, generator=g) * 0.1)

    def activation(self, pre):
        return torch.relu(pre)
