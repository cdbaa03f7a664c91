"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token (after ReLU).

Training uses the sparse path of lmmsae.saes.sparse: one dense matmul forward, everything else on
the k active latents. Options: AuxK (dead latents predict the residual) and Multi-TopK (a 4k
reconstruction added to the loss with weight 1/8), as in the TopK paper and sparsify.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmmsae.errors import UserError
from lmmsae.saes.base import SAE, BatchContext, LossOutput, require
from lmmsae.saes.sparse import Codes, PairLayout, Scratch, select_pre_acts, sparse_decode, topk_exact


class TopKSAE(SAE):
    architecture = "topk"

    @dataclass
    class Options(SAE.Options):
        k: int = 32
        multi_topk: bool = False
        auxk_alpha: float = 0.0   # weight of the AuxK loss; 0 disables it (the paper's setting)
        auxk_k: int = 0           # dead latents used by AuxK; 0: d_in // 2

        def __post_init__(self):
            super().__post_init__()
            require(self, k=(self.k >= 1 and (not self.n_latents or self.k <= self.n_latents), "in 1..n_latents"),
                    auxk_alpha=(self.auxk_alpha >= 0, ">= 0"), auxk_k=(self.auxk_k >= 0, ">= 0"))

    def __init__(self, d_in: int, options=None, **kw):
        super().__init__(d_in, options, **kw)
        if not 0 < self.options.k <= self.n_latents:
            raise UserError(f"topk SAE needs 0 < k <= n_latents (k={self.options.k}, n_latents={self.n_latents})")
        self._pre_scratch = Scratch()  # training-time buffer for the dense pre-activations

    def train(self, mode: bool = True):
        if not mode:
            self._pre_scratch.clear()
        return super().train(mode)

    @property
    def k(self) -> int:
        return self.options.k

    def encode_sparse(self, x: Tensor, k: int | None = None, scratch: Scratch | None = None) -> Codes:
        """The k largest pre-activations per token (after ReLU), never the dense codes."""
        pre = self.pre_acts(x, None if scratch is None else scratch.rows(x.shape[0], self.n_latents, x.to(self.dtype)))
        if pre.requires_grad:
            values, indices = pre.topk(k or self.k, dim=-1, sorted=False)
        else:
            values, indices = topk_exact(pre, k or self.k)
        return Codes(values.relu(), indices)

    def encode(self, x: Tensor) -> Tensor:
        return self.encode_sparse(x).dense(self.n_latents)

    def activation(self, pre: Tensor) -> Tensor:
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu())

    def decode_sparse(self, codes: Codes) -> Tensor:
        return sparse_decode(codes, self.W_dec) + self.b_dec

    # ---- training ------------------------------------------------------------------------
    def _selected(self, values: Tensor, indices: Tensor, xc: Tensor) -> tuple[Codes, PairLayout]:
        layout = PairLayout(indices, self.n_latents)
        acts = select_pre_acts(values, indices, xc, self.W_enc, self.b_enc, self.b_dec, layout).relu()
        return Codes(acts, indices), layout

    def _topk_candidates(self, x: Tensor, batch: BatchContext):
        """The dense part, without autograd: pre-activations, then the selections we need."""
        with torch.no_grad():
            xc = (x.to(self.dtype) - self.b_dec).contiguous()
            if torch.is_autocast_enabled(xc.device.type):
                pre = torch.mm(xc, self.W_enc.T).to(xc.dtype).add_(self.b_enc)
            else:  # into the reused buffer (nothing returned below is a view of it)
                pre = self._pre_scratch.get((xc.shape[0], self.n_latents), xc)
                torch.addmm(self.b_enc, xc, self.W_enc.T, out=pre)
            k_main = min(4 * self.k if self.options.multi_topk else self.k, self.n_latents)
            values, indices = topk_exact(pre, k_main)
            if self.options.multi_topk:  # main codes first: the k largest of the 4k
                values, order = values.sort(dim=-1, descending=True)
                indices = indices.gather(1, order)
            aux = None
            dead = batch.dead
            if self.options.auxk_alpha > 0 and dead is not None and bool(dead.any()):
                k_aux = min(self.options.auxk_k or self.d_in // 2, int(dead.sum()))
                aux = pre.masked_fill(~dead[None], float("-inf")).topk(k_aux, dim=-1, sorted=False)
        return xc, values, indices, aux

    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        xc, values, indices, aux = self._topk_candidates(x, batch)
        codes, layout = self._selected(values[:, : self.k].contiguous(), indices[:, : self.k].contiguous(), xc)
        x_hat = sparse_decode(codes, self.W_dec, layout) + self.b_dec
        err = x_hat - x
        fvu = err.pow(2).sum() / batch.total_variance
        loss, terms = fvu, {"fvu": fvu}
        loss, terms = self._extra_losses(x, xc, values, indices, codes, layout, err, batch, loss, terms)
        if self.options.multi_topk:
            multi, multi_layout = self._selected(values, indices, xc)
            multi_hat = sparse_decode(multi, self.W_dec, multi_layout) + self.b_dec
            multi_fvu = (multi_hat - x).pow(2).sum() / batch.total_variance
            loss = loss + multi_fvu / 8
            terms["multi_topk_fvu"] = multi_fvu
        if aux is not None:
            n_dead = int(batch.dead.sum())
            scale = min(n_dead / max(self.options.auxk_k or self.d_in // 2, 1), 1.0)
            aux_codes, aux_layout = self._selected(aux[0], aux[1], xc)
            err_hat = sparse_decode(aux_codes, self.W_dec, aux_layout)
            auxk = scale * (err_hat + err.detach()).pow(2).sum() / batch.total_variance
            loss = loss + self.options.auxk_alpha * auxk
            terms["auxk"] = auxk
        active = codes.values.detach() > 0
        fired = torch.bincount(codes.indices[active], minlength=self.n_latents)
        return LossOutput(x_hat, loss, {k: v.detach() for k, v in terms.items()}, fired,
                          active.sum(1).float().mean())

    def _extra_losses(self, x, xc, values, indices, codes, layout, err, batch, loss, terms):
        """Hook for variants (Matryoshka) that add terms computed from the same codes."""
        return loss, terms
