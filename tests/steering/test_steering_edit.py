import pytest
import torch

from lmmsae.steering.steer import Steering, ablation, edit_latents, make_edit, steer_acts, steer_rows

from tiny_sae import TinySAE


@pytest.fixture
def sae():
    return TinySAE(d=8, n=32, seed=1)


@pytest.fixture
def acts():
    return torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2)) * 2


def test_add_zero_is_bitwise_identity_even_through_the_sae(sae, acts, monkeypatch):
    steering = Steering([3, 7], [0.0], mode="add")
    assert steering.is_identity()
    assert torch.equal(steer_acts(acts, None, sae, steering), acts)
    # the full error-term path (not the shortcut) is exact too: x + (decode(z) - decode(z)) == x
    monkeypatch.setattr(Steering, "is_identity", lambda self: False)
    out = steer_acts(acts, None, sae, steering)
    assert torch.equal(out, acts)


def test_clamp_keeps_error_term_and_moves_along_decoder_row(sae, acts):
    x = acts.reshape(-1, 8)
    z = sae.encode(x)
    out = steer_rows(x, sae, Steering([5], [4.0], mode="clamp"))
    expected = x + (4.0 - z[:, 5:6]) * sae.W_dec[5]
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-5)
    # the error term survives: the result is not the bare reconstruction
    assert not torch.allclose(out, sae.decode(edit_latents(z, [5], [4.0], "clamp")).detach())


def test_add_shifts_and_replace_with_reconstruction_drops_error(sae, acts):
    x = acts.reshape(-1, 8)
    z = sae.encode(x).detach()
    out = steer_rows(x, sae, Steering([1, 2], [1.5, -0.5], mode="add"))
    torch.testing.assert_close(out, (x + 1.5 * sae.W_dec[1] - 0.5 * sae.W_dec[2]).detach(), rtol=1e-5, atol=1e-5)
    rec = steer_rows(x, sae, Steering([1], [0.0], mode="add", replace_with_reconstruction=True))
    torch.testing.assert_close(rec, sae.decode(z).detach())


def test_mask_limits_the_edit_to_chosen_tokens(sae, acts):
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, 1] = mask[2, 4] = True
    out = make_edit(sae, Steering([0], [10.0]))(acts, mask)
    changed = (out != acts).any(-1)
    assert torch.equal(changed, mask)
    assert torch.equal(make_edit(sae, Steering([0], [10.0]))(acts, torch.zeros_like(mask)), acts)


def test_half_precision_acts_keep_their_dtype(sae, acts):
    bf = acts.to(torch.bfloat16)
    assert torch.equal(steer_acts(bf, None, sae, Steering([0], [0.0], "add")), bf)
    out = steer_acts(bf, None, sae, ablation([0, 1]))
    assert out.dtype == torch.bfloat16 and out.shape == bf.shape


def test_chunking_matches_one_pass(sae, monkeypatch):
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    one = steer_rows(x, sae, Steering([4], [3.0]))
    monkeypatch.setattr("lmmsae.steering.steer.CHUNK", 7)
    torch.testing.assert_close(steer_rows(x, sae, Steering([4], [3.0])), one)


def test_bad_specs_raise():
    with pytest.raises(ValueError, match="mode"):
        Steering([1], [1.0], mode="multiply")
    with pytest.raises(ValueError, match="2 features but 3 values"):
        Steering([1, 2], [1.0, 2.0, 3.0])
    assert Steering([1, 2], [5.0]).values == [5.0, 5.0]
    assert Steering([], [1.0]).is_identity()
