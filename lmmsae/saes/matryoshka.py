"""Matryoshka TopK SAE (Nabeshima 2024; Bussmann et al. 2025): the first m latents must
reconstruct on their own for every prefix size m, which orders latents from general to specific.
Inference is a plain TopK SAE; the prefix losses only shape training."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmmsae.errors import UserError
from lmmsae.saes.sparse import Codes, sparse_decode
from lmmsae.saes.topk import TopKSAE
from lmmsae.saes.base import require


class MatryoshkaSAE(TopKSAE):
    architecture = "matryoshka"

    @dataclass
    class Options(TopKSAE.Options):
        prefixes: list[int] = field(default_factory=list)  # prefix sizes; empty: n/16, n/4 (and all)

        def __post_init__(self):
            super().__post_init__()
            require(self, prefixes=(all(0 < m and (not self.n_latents or m < self.n_latents) for m in self.prefixes),
                                    "sizes in (0, n_latents)"))

    def __init__(self, d_in: int, options=None, **kw):
        super().__init__(d_in, options, **kw)
        if any(not 0 < m < self.n_latents for m in self.options.prefixes):
            raise UserError(f"matryoshka prefixes must lie in (0, n_latents={self.n_latents}): {self.options.prefixes}")

    @property
    def prefixes(self) -> list[int]:
        return sorted(self.options.prefixes or [max(self.n_latents // 16, 1), max(self.n_latents // 4, 1)])

    def _extra_losses(self, x, xc, values, indices, codes, layout, err, batch, loss, terms):
        total = loss
        for m in self.prefixes:
            kept = Codes(codes.values * (codes.indices < m), codes.indices)
            x_hat = sparse_decode(kept, self.W_dec, layout) + self.b_dec
            fvu = (x_hat - x).pow(2).sum() / batch.total_variance
            terms[f"fvu_prefix_{m}"] = fvu
            total = total + fvu
        return total / (len(self.prefixes) + 1), terms
