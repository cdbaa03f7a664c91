"""The sparse TopK training path gives the same loss and gradients as dense autograd."""

import pytest
import torch

from lmmsae.saes.base import BatchContext
from lmmsae.saes.sparse import topk_exact
from lmmsae.saes.topk import TopKSAE


def dense_reference(sae, x, tv, k, multi, aux_k, dead, alpha):
    pre = sae.pre_acts(x)

    def codes(p, kk):
        v, i = p.topk(kk, dim=-1)
        return torch.zeros_like(p).scatter(-1, i, v.relu())

    x_hat = codes(pre, k) @ sae.W_dec + sae.b_dec
    loss = (x_hat - x).pow(2).sum() / tv
    if multi:
        loss = loss + ((codes(pre, 4 * k) @ sae.W_dec + sae.b_dec) - x).pow(2).sum() / tv / 8
    if alpha:
        za = codes(pre.masked_fill(~dead[None], float("-inf")), aux_k)
        loss = loss + alpha * min(dead.sum().item() / aux_k, 1) * ((za @ sae.W_dec) - (x - x_hat).detach()).pow(2).sum() / tv
    return loss


@pytest.mark.parametrize("options", [dict(k=4), dict(k=4, multi_topk=True), dict(k=4, auxk_alpha=0.5, auxk_k=8)])
def test_sparse_gradients_match_dense_autograd(options):
    torch.manual_seed(0)
    sae = TopKSAE(16, TopKSAE.Options(n_latents=64, **options)).double()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.encoder.bias.normal_(0, 0.1)
    x = torch.randn(50, 16, dtype=torch.float64)
    tv = (x - x.mean(0)).pow(2).sum()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    out = sae.training_loss(x, BatchContext(tv, 50, dead))
    out.loss.backward()
    sparse = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    ref = dense_reference(sae, x, tv, 4, options.get("multi_topk"), 8, dead, options.get("auxk_alpha", 0))
    ref.backward()
    assert abs(ref.item() - out.loss.item()) < 1e-12
    for name, p in sae.named_parameters():
        assert torch.allclose(sparse[name], p.grad, atol=1e-12), name
    with torch.no_grad():
        assert int(out.fired.sum()) == int((sae.encode(x) > 0).sum())


@pytest.mark.parametrize("shape,k", [((64, 12288), 32), ((33, 4096), 16), ((5, 100), 7)])
def test_block_topk_is_exact(shape, k):
    pre = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    values, indices = topk_exact(pre, k)
    ref = pre.topk(k).values
    assert torch.equal(values.sort(-1).values, ref.sort(-1).values)
    assert torch.equal(pre.gather(1, indices), values)
