"""lmmsae.metrics against values computed by hand in float64 on a few tokens, and the CE/KL
splice on a tiny random LLaVA."""

import math
import sys
from pathlib import Path

import pytest
import torch

from lmmsae import metrics
from lmmsae.errors import UserError
from lmmsae.models.base import TokenKind

X = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.0, -1.0], [2.0, 1.0]], dtype=torch.float64)
X_HAT = torch.tensor([[1.0, 1.5], [2.0, 0.5], [0.5, -1.0], [2.0, 2.0]], dtype=torch.float64)
Z = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0.5, 0, 0], [3.0, 0, 0]], dtype=torch.float64)
KINDS = torch.tensor([TokenKind.TEXT, TokenKind.IMAGE, TokenKind.TEXT, TokenKind.IMAGE])

# by hand: mean (1.5, 0.5); errors 0.25, 1.25, 0.25, 1 -> 2.75; variance 2.5 + 2.5 + 4.5 + 0.5 = 10
SUM_ERR, TOTAL_VAR = 2.75, 10.0
NORMS = [(math.sqrt(3.25), math.sqrt(5)), (math.sqrt(4.25), 3.0), (math.sqrt(1.25), 1.0), (math.sqrt(8), math.sqrt(5))]
SHRINKAGE = sum(h / x for h, x in NORMS) / 4
RRB = (3.25 + 4.25 + 1.25 + 8) / (4 + 6 + 1 + 6)  # sum ||x_hat||^2 / sum <x, x_hat>


def value(results, name):
    return results[name]["value"]


def test_formulas_match_hand_computation():
    assert metrics.fvu(X, X_HAT) == pytest.approx(SUM_ERR / TOTAL_VAR, rel=1e-12)
    assert metrics.fvu(X.float(), X_HAT.float()) == pytest.approx(SUM_ERR / TOTAL_VAR, rel=1e-6)
    assert metrics.l0(Z) == 1.0
    assert metrics.shrinkage(X, X_HAT) == pytest.approx(SHRINKAGE, rel=1e-12)
    assert metrics.relative_reconstruction_bias(X, X_HAT) == pytest.approx(RRB, rel=1e-12)
    counts = (Z != 0).sum(0)  # latent 0: 3 tokens, latent 1: 1, latent 2: never
    assert metrics.firing_fractions(counts, 4, dense_threshold=0.3) == pytest.approx((1 / 3, 1 / 3))
    assert metrics.firing_fractions(counts, 4, dense_threshold=0.2) == pytest.approx((1 / 3, 2 / 3))
    assert metrics.recovered(ablated=5.0, patched=3.0, clean=1.0) == 0.5
    assert math.isnan(metrics.recovered(2.0, 1.0, 2.0))


def test_streamed_stats_use_the_set_mean_not_per_batch_means():
    stats = metrics.ReconstructionStats(3, dense_threshold=0.3)
    stats.update(X[:2].float(), X_HAT[:2].float(), Z[:2])
    stats.update(X[2:].float(), X_HAT[2:].float(), Z[2:])
    r = stats.results()
    per_batch = (1.5 / 4 + 1.25 / 4) / 2  # a mean of batch FVUs (batch means (2, 1) and (1, 0)) would be wrong
    assert value(r, "fvu") == pytest.approx(SUM_ERR / TOTAL_VAR, rel=1e-12) != pytest.approx(per_batch)
    assert value(r, "explained_variance") == pytest.approx(1 - SUM_ERR / TOTAL_VAR, rel=1e-12)
    assert value(r, "mse") == pytest.approx(SUM_ERR / 4, rel=1e-12)
    assert value(r, "l0") == 1.0
    assert value(r, "dead_fraction") == pytest.approx(1 / 3)
    assert value(r, "dense_fraction") == pytest.approx(1 / 3)
    assert value(r, "shrinkage") == pytest.approx(SHRINKAGE, rel=1e-12)
    assert value(r, "relative_reconstruction_bias") == pytest.approx(RRB, rel=1e-12)
    assert r["n_tokens"] == 4 and "by_token_kind" not in r
    assert stats.total_variance() == pytest.approx(TOTAL_VAR, rel=1e-12)
    assert torch.allclose(stats.mean(), torch.tensor([1.5, 0.5], dtype=torch.float64))
    assert "whole evaluation set" in r["fvu"]["definition"] and "4 tokens" in r["dead_fraction"]["definition"]
    assert metrics.ReconstructionStats(3).results() == {"n_tokens": 0}


def test_per_token_kind_breakdown():
    stats = metrics.ReconstructionStats(3, kind_names={int(TokenKind.TEXT): "text", int(TokenKind.IMAGE): "image"})
    stats.update(X, X_HAT, Z, KINDS)
    kinds = stats.results()["by_token_kind"]
    assert set(kinds) == {"text", "image"}
    text, image = kinds["text"], kinds["image"]  # text rows 0, 2 fire latent 0; image rows 1, 3 fire 1 and 0
    assert (text["n_tokens"], image["n_tokens"]) == (2, 2)
    assert value(text, "l0") == 1.0 and value(image, "l0") == 1.0
    assert value(text, "alive_fraction") == pytest.approx(1 / 3)
    assert value(image, "alive_fraction") == pytest.approx(2 / 3)
    assert value(text, "exclusive_fraction") == 0.0
    assert value(image, "exclusive_fraction") == pytest.approx(1 / 3)
    assert value(text, "mean_firing_frequency") == pytest.approx((2 / 2) / 3)
    assert value(image, "mean_firing_frequency") == pytest.approx((1 / 2 + 1 / 2) / 3)


def test_next_token_losses_and_splice_stats_by_hand():
    clean = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]]])
    patched = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 1.0]]])
    labels, mask = torch.tensor([[2, 0]]), torch.tensor([[True, False]])
    ce, kl = metrics.next_token_losses(clean, patched, labels, mask)
    p = torch.tensor([1.0, math.e, math.e ** 2], dtype=torch.float64)
    p /= p.sum()
    assert ce.tolist() == pytest.approx([math.log(3)])
    assert kl.tolist() == pytest.approx([float((p * (p.log() - math.log(1 / 3))).sum())])
    ce_self, kl_self = metrics.next_token_losses(clean, clean, labels, mask)
    assert ce_self.tolist() == pytest.approx([-math.log(p[2])]) and kl_self.tolist() == [0.0]
    stats = metrics.SpliceStats(tokens="all")
    stats.update(clean, clean, patched, labels, mask)
    r = stats.results()
    assert r["n_positions"] == 1 and r["ce_loss_recovered"]["value"] == 1.0 and r["kl_recovered"]["value"] == 1.0
    assert metrics.SpliceStats().results() == {"n_positions": 0}


def test_counted_positions():
    T, I, P = int(TokenKind.TEXT), int(TokenKind.IMAGE), int(TokenKind.PADDING)
    ids = torch.tensor([[1, 4, 4, 7, 8, 0]])
    kinds = torch.tensor([[T, I, I, T, T, P]])
    labels, mask = metrics.counted_positions(ids, kinds, "all")
    assert labels.tolist() == [[4, 4, 7, 8, 0, -1]] and mask.tolist() == [[True, True, True, True, False, False]]
    _, mask = metrics.counted_positions(ids, kinds, "answer")
    assert mask.tolist() == [[False, False, True, True, False, False]]
    with pytest.raises(ValueError):
        metrics.counted_positions(ids, kinds, "some")


# ---- CE / KL loss recovered on a tiny random LLaVA ----------------------------------------------
HOOK = "model.language_model.layers.1"


@pytest.fixture(scope="module")
def adapter_and_batch(tmp_path_factory):
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).parent / "models"))
    import tiny

    from lmmsae.datasets.base import Sample
    from lmmsae.models.llava import LlavaAdapter

    path = tiny.build_llava(tmp_path_factory.mktemp("tiny") / "llava")
    adapter = LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    batch = adapter.prepare([Sample("a", image, "describe it a red circle"), Sample("b", None, "is there a square ?")])
    return adapter, batch


class Identity(torch.nn.Module):
    """An SAE that reconstructs exactly."""

    d_in, dtype = 32, torch.float32

    def forward(self, x):
        return x


def random_topk(d_in=32):
    from lmmsae.saes.topk import TopKSAE

    torch.manual_seed(0)
    return TopKSAE(d_in, TopKSAE.Options(n_latents=64, k=4)).eval()


def test_ce_kl_recovered_reports_consistent_raw_numbers(adapter_and_batch):
    import torch.nn.functional as F

    adapter, batch = adapter_and_batch
    r = metrics.ce_kl_recovered(adapter, random_topk(), HOOK, [batch], tokens="all")
    raw = {k: r[k]["value"] for k in ("ce_clean", "ce_sae", "ce_ablated", "kl_sae", "kl_ablated")}
    assert r["ce_loss_recovered"]["value"] == pytest.approx(
        (raw["ce_ablated"] - raw["ce_sae"]) / (raw["ce_ablated"] - raw["ce_clean"]), rel=1e-12)
    assert r["kl_recovered"]["value"] == pytest.approx((raw["kl_ablated"] - raw["kl_sae"]) / raw["kl_ablated"], rel=1e-12)
    assert raw["kl_sae"] > 0 and raw["kl_ablated"] > 0 and raw["ce_ablated"] != raw["ce_clean"]

    # ce_clean is the model's own next-token loss over the non-padding positions
    logits = adapter.logits(batch).double()
    ids, attention = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    labels = ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
    direct = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    assert r["n_positions"] == int((labels != -100).sum())
    assert raw["ce_clean"] == pytest.approx(float(direct), rel=1e-6)


def test_exact_reconstruction_recovers_everything(adapter_and_batch):
    adapter, batch = adapter_and_batch
    r = metrics.ce_kl_recovered(adapter, Identity(), HOOK, [batch], tokens="answer")
    assert r["n_positions"] > 0
    assert r["kl_sae"]["value"] == 0.0  # KL of the clean model with itself
    assert r["ce_sae"]["value"] == r["ce_clean"]["value"]
    assert r["ce_loss_recovered"]["value"] == 1.0 and r["kl_recovered"]["value"] == 1.0


def test_splice_with_sae_of_wrong_width_is_one_line(adapter_and_batch):
    adapter, batch = adapter_and_batch
    with pytest.raises(UserError) as exc:
        metrics.ce_kl_recovered(adapter, random_topk(16), HOOK, [batch])
    assert "\n" not in str(exc.value) and "d_in=16" in str(exc.value) and "width 32" in str(exc.value)


class Zero(Identity):
    """An SAE whose reconstruction is all zeros: splicing it is a zero ablation."""

    def forward(self, x):
        return torch.zeros_like(x)


def test_splice_and_ablation_touch_only_the_token_kinds_the_sae_was_trained_on(adapter_and_batch):
    adapter, batch = adapter_and_batch
    image_only = metrics.ce_kl_recovered(adapter, Zero(), HOOK, [batch], tokens="all", token_kinds=["image"])
    everywhere = metrics.ce_kl_recovered(adapter, Zero(), HOOK, [batch], tokens="all")
    assert image_only["spliced"] == "image tokens" and everywhere["spliced"] == "every token"
    assert "zero ablation of image tokens" in image_only["ce_sae"]["definition"]
    # the zero SAE spliced into image tokens is exactly the zero ablation of those tokens ...
    assert image_only["ce_sae"]["value"] == pytest.approx(image_only["ce_ablated"]["value"], rel=1e-9)
    # ... and leaves text positions alone, so it hurts less than zeroing every token
    assert image_only["kl_ablated"]["value"] < everywhere["kl_ablated"]["value"]
    assert image_only["ce_clean"]["value"] == everywhere["ce_clean"]["value"]
