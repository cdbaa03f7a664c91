"""Activations made from a known sparse dictionary, to check that SAEs recover the truth (tests)
and to benchmark trainers on data where reconstruction is meaningful."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SparseDictionary:
    """x = sum over `k` random atoms of coefficient * atom + bias + noise."""

    atoms: Tensor      # [n_atoms, d], unit-norm rows
    bias: Tensor       # [d]
    k: int
    noise: float = 0.0

    @classmethod
    def make(cls, d: int, n_atoms: int, k: int, seed: int = 0, noise: float = 0.0, bias_scale: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        atoms = torch.randn(n_atoms, d, generator=g)
        atoms /= atoms.norm(dim=1, keepdim=True)
        bias = torch.randn(d, generator=g) * bias_scale / d**0.5
        return cls(atoms, bias, k, noise)

    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(x [n, d], atom indices [n, k], coefficients [n, k])."""
        g = torch.Generator().manual_seed(seed)
        n_atoms, d = self.atoms.shape
        indices = torch.rand(n, n_atoms, generator=g).topk(self.k, dim=1).indices
        coefficients = 0.5 + torch.rand(n, self.k, generator=g) * 1.5
        x = torch.nn.functional.embedding_bag(indices, self.atoms, per_sample_weights=coefficients, mode="sum")
        x = x + self.bias
        if self.noise:
            x = x + self.noise * torch.randn(n, d, generator=g) / d**0.5
        return x, indices, coefficients

    def batches(self, n_tokens: int, batch_size: int, seed: int = 0):
        for i, start in enumerate(range(0, n_tokens, batch_size)):
            yield self.sample(min(batch_size, n_tokens - start), seed=seed * 100003 + i)[0]


def recovery(decoder: Tensor, atoms: Tensor) -> Tensor:
    """For each true atom, the max cosine similarity with any decoder row [n_atoms]."""
    dec = decoder / decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (atoms @ dec.T).max(dim=1).values
