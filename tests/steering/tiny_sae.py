"""A tiny random ReLU SAE with the binding SAE interface (encode, decode, cfg), for steering tests."""

import torch


class TinySAE(torch.nn.Module):
    def __init__(self, d: int = 8, n: int = 32, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = torch.nn.Parameter(torch.randn(d, n, generator=g) / d ** 0.5)
        self.b_enc = torch.nn.Parameter(torch.randn(n, generator=g) * 0.1)
        self.W_dec = torch.nn.Parameter(torch.randn(n, d, generator=g) / n ** 0.5)
        self.b_dec = torch.nn.Parameter(torch.randn(d, generator=g) * 0.1)
        self.cfg = {"architecture": "relu", "d_in": d, "n_latents": n}

    def encode(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, z):
        return z @ self.W_dec + self.b_dec

    def forward(self, x):
        return self.decode(self.encode(x))
