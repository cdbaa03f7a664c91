import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmmsae.attribution import attribute, last_positions, span_masks
from lmmsae.models.base import TokenKind

sys.path.insert(0, str(Path(__file__).parent / "steering"))
from tiny_sae import TinySAE  # noqa: E402

T, I, P = int(TokenKind.TEXT), int(TokenKind.IMAGE), int(TokenKind.PADDING)
KIND = np.array([[T, I, I, I, I, T, T],
                 [T, I, I, I, I, T, P]])


class TinyLM(torch.nn.Module):
    """embed -> hookpoint -> causal mean mixing (+ optional tanh) -> head: image tokens reach the last one."""

    def __init__(self, vocab=11, d=8, nonlinear=False, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Parameter(torch.randn(vocab, d, generator=g) * 2)
        self.mix = torch.nn.Parameter(torch.randn(d, d, generator=g) / d ** 0.5)
        self.head = torch.nn.Parameter(torch.randn(d, vocab, generator=g))
        self.nonlinear = nonlinear

    def forward(self, ids, edit=None):
        h = self.embed[ids]
        if edit is not None:
            h = edit(h, None)
        counts = torch.arange(1, h.shape[1] + 1, dtype=h.dtype)[None, :, None]
        h = h + (h.cumsum(1) / counts) @ self.mix
        if self.nonlinear:
            h = torch.tanh(h)
        return h @ self.head


def runner(model, ids):
    def run(edit, grad):
        with torch.set_grad_enabled(grad):
            return model(ids, edit)
    return run


IDS = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [1, 8, 9, 10, 2, 3, 0]])


def test_spans_and_positions():
    m = span_masks(KIND)
    assert m["image"].sum() == 8 and m["text"].sum() == 5 and m["all"].sum() == 13
    assert last_positions(KIND) == [6, 5]


def test_grad_times_activation_equals_exact_ablation_when_downstream_is_linear():
    torch.manual_seed(0)
    model, sae = TinyLM(), TinySAE(d=8, n=32, seed=3)
    res = attribute(runner(model, IDS), sae, KIND, answer=[3, 3], baseline=[4, 4], top_k=32, n_ablate=32)
    assert len(res.ranked) == 32 and len(res.ablation) == 32
    for latent in res.ranked:
        assert res.scores["all"][latent] == pytest.approx(res.ablation[latent], rel=1e-3, abs=1e-4)
        assert res.scores["all"][latent] == pytest.approx(
            res.scores["image"][latent] + res.scores["text"][latent], rel=1e-4, abs=1e-5)
    scores = [res.scores["all"][latent] for latent in res.ranked]
    assert scores == sorted(scores, reverse=True)
    # the clean metric is the model's own logit difference (the splice does not change the output)
    logits = model(IDS)
    logits = logits.detach()
    assert res.metric[0] == pytest.approx(float(logits[0, 6, 3] - logits[0, 6, 4]), rel=1e-5)
    assert res.metric[1] == pytest.approx(float(logits[1, 5, 3] - logits[1, 5, 4]), rel=1e-5)


def test_ranking_finds_a_planted_feature_and_maps_it():
    """Latent 7 is made to fire hard on one image token and to write straight into answer - baseline."""
    model, sae = TinyLM(nonlinear=True, seed=1), TinySAE(d=8, n=32, seed=4)
    with torch.no_grad():
        special = torch.randn(8)
        model.embed[9] = special * 3                      # token 9 sits at row 1, position 2 (an image token)
        sae.W_enc[7] = special / special.norm() * 2
        sae.b_enc[7] = -4.0
        direction = torch.linalg.solve(model.mix.T, model.head[:, 3] - model.head[:, 4])  # through the mixing
        sae.W_dec[7] = direction / direction.norm() * 3

    def grid(row, values):
        image = KIND[row] == I
        return values[image].reshape(2, 2)

    res = attribute(runner(model, IDS), sae, KIND, answer=[3, 3], baseline=[4, 4], top_k=5, n_ablate=5,
                    rank_by="image", grid=grid, n_maps=2)
    assert res.ranked[0] == 7
    assert res.ablation[7] > 0
    assert res.scores["image"][7] > 10 * abs(res.scores["text"][7])
    heat = res.activation_maps[7][1]
    assert heat.shape == (2, 2) and np.argmax(heat) == 1 and heat.flatten()[1] > 0
    assert res.activation_maps[7][0].max() < heat.max() / 2
    assert np.argmax(res.maps[7][1]) == 1


def test_attribute_command(tmp_path):
    import json

    from lmmsae.saes import io
    from click.testing import CliRunner

    sys.path.insert(0, str(Path(__file__).parent / "models"))
    from tiny import build_llava

    from lmmsae import plugins
    from lmmsae.commands.attribute import attribute as command

    ckpt = build_llava(tmp_path / "ckpt")
    comp = plugins.get("saes", "topk")
    torch.manual_seed(0)
    io.save_sae(comp.load()(32, comp.options({"n_latents": 64, "k": 4})), tmp_path / "sae" / "layers.1")
    result = CliRunner().invoke(command, [
        "--out", str(tmp_path / "runs"), "--name", "a", "--model", "llava", "-o", f"model.checkpoint={ckpt}",
        "--dataset", "shapes", "-o", "dataset.n=4", "-o", "dataset.image_size=32", "--hookpoint", "layers.1",
        "--prompt", "<image> a", "--answer", "red", "--baseline", "blue", "--image-index", "0", "--image-index", "2",
        "--top-k", "6", "--n-ablate", "3", "--sae-path", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "runs" / "a" / "attribution" / "attribution.json").read_text())
    assert len(out["ranked"]) == 6 and len(out["ablation"]) == 3 and out["sample_indices"] == [0, 2]
    assert len(out["maps"][str(out["ranked"][0])]) == 2
    assert "top features" in result.output
