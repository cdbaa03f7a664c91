import numpy as np
import pytest
import torch

from lmmsae.cache import batches
from lmmsae.models.base import TokenKind
from lmmsae.saes.io import sae_class
from lmmsae.saes.sparse import Scratch


class _Map:
    def __init__(self, kind):
        self.kind = kind


def _sae(name, **options):
    cls = sae_class(name)
    torch.manual_seed(0)
    sae = cls(16, cls.Options(n_latents=2048, **options)).eval()
    with torch.no_grad():
        sae.encoder.bias.uniform_(-0.5, 0.5)
        sae.b_dec.uniform_(-0.1, 0.1)
    return sae


@pytest.mark.parametrize("name,options", [("topk", {"k": 8}), ("relu", {}), ("jumprelu", {}), ("gated", {})])
def test_encode_tokens_equals_the_dense_codes_with_a_subset_and_chunks(name, options):
    """Through `encode_sparse` (TopK's own, or the base class's dense fallback) with the reused
    pre-activation buffer: exactly the dense codes of `encode`, restricted to the subset."""
    sae = _sae(name, **options)
    acts = torch.randn(3, 150, 16)
    kind = np.full((3, 150), int(TokenKind.IMAGE), dtype=np.int64)
    kind[1, 100:] = TokenKind.PADDING
    subset = torch.arange(0, 2048, 3)
    with torch.no_grad():
        pos, token, latent, value = batches.encode_tokens(acts, _Map(kind), sae, subset)
        x = acts[torch.as_tensor(pos[:, 0]), torch.as_tensor(pos[:, 1])]
        dense = sae.encode(x)[:, subset]
    assert len(pos) == 3 * 150 - 50
    got = torch.zeros_like(dense)
    got[token, latent] = value
    assert torch.equal(got, dense.clamp(min=0))
    assert (value > 0).all() and len(token) == int((dense > 0).sum())


def test_encode_sparse_with_a_scratch_buffer_equals_without():
    sae = _sae("topk", k=8)
    x = torch.randn(37, 16)
    scratch = Scratch()
    with torch.no_grad():
        plain = sae.encode_sparse(x)
        for n in (37, 5):  # a shorter chunk reuses the same buffer (addmm out= may round unlike linear)
            buffered = sae.encode_sparse(x[:n], scratch=scratch)
            torch.testing.assert_close(buffered.values, plain.values[:n])
            assert torch.equal(buffered.indices, plain.indices[:n])
    assert scratch.tensor.shape == (37, 2048)
    with torch.enable_grad():  # under autograd the buffer is not used (addmm out= has no gradient)
        codes = sae.encode_sparse(x, scratch=Scratch())
        assert codes.values.requires_grad
