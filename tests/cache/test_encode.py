import numpy as np
import torch

from lmmsae.cache import batches
from lmmsae.saes.io import sae_class


class _Map:
    def __init__(self, kind):
        self.kind = kind


def test_topk_fast_encode_equals_encode_sparse_with_a_subset_and_chunks():
    cls = sae_class("topk")
    torch.manual_seed(0)
    sae = cls(16, cls.Options(n_latents=2048, k=8)).eval()
    with torch.no_grad():
        sae.encoder.bias.uniform_(-0.5, 0.5)
        sae.b_dec.uniform_(-0.1, 0.1)
    acts = torch.randn(3, 150, 16)
    kind = np.ones((3, 150), dtype=np.int64)
    kind[1, 100:] = batches.PADDING
    subset = torch.arange(0, 2048, 3)
    assert batches._topk_encoder(sae) is None  # with autograd on: the generic path
    with torch.no_grad():
        assert batches._topk_encoder(sae) is not None
        pos, token, latent, value = batches.encode_tokens(acts, _Map(kind), sae, subset)
        x = acts[torch.as_tensor(pos[:, 0]), torch.as_tensor(pos[:, 1])]
        dense = sae.encode_sparse(x).dense(2048)[:, subset]
    got = torch.zeros_like(dense)
    got[token, latent] = value
    assert torch.equal(got, dense.clamp(min=0))
    assert (value > 0).all() and len(token) == int((dense > 0).sum())
