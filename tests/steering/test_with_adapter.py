"""Steering through the real adapter on a tiny random LLaVA."""

import math

import torch

from lmmsae.steering.steer import Steering, make_edit
from lmmsae.steering.sweep import SteerSpec, forced_kl, generate, sweep
from tiny_sae import TinySAE

HP = "layers.1"
PROMPT = "<image> describe it"


def test_zero_strength_steer_reproduces_the_unsteered_model_exactly(tiny_adapter, tiny_samples, monkeypatch):
    ad = tiny_adapter
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    original = generate(ad, tiny_samples, PROMPT, None, batch_size=2, max_new_tokens=10)
    zero = SteerSpec(ad.resolve_hookpoints([HP])[0], sae, Steering([3, 5], [0.0], "add"))
    assert generate(ad, tiny_samples, PROMPT, zero, batch_size=2, max_new_tokens=10) == original
    # even through the full error-term path (no shortcut), logits are bit-identical
    monkeypatch.setattr(Steering, "is_identity", lambda self: False)
    batch = ad.prepare(tiny_samples, PROMPT)
    clean = ad.logits(batch)
    with ad.intervene(HP, make_edit(sae, zero.steering)):
        assert torch.equal(ad.logits(batch), clean)
    with ad.intervene(HP, make_edit(sae, Steering([3], [20.0], "clamp"))):
        assert not torch.allclose(ad.logits(batch), clean)


def test_replace_with_reconstruction_is_not_the_identity(tiny_adapter, tiny_samples):
    ad = tiny_adapter
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    batch = ad.prepare(tiny_samples[:2], PROMPT)
    clean = ad.logits(batch)
    with ad.intervene(HP, make_edit(sae, Steering([3], [0.0], "add", replace_with_reconstruction=True))):
        assert not torch.allclose(ad.logits(batch), clean)


def test_token_kinds_and_prefill_only_limit_the_edit(tiny_adapter, tiny_samples):
    ad = tiny_adapter
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    batch = ad.prepare(tiny_samples[:2], PROMPT)
    kind = torch.as_tensor(batch.token_map.kind)
    first_image = int((kind[0] == 1).nonzero()[0])
    clean = ad.logits(batch)
    with ad.intervene(HP, make_edit(sae, Steering([3], [20.0])), token_kinds=["image"]):
        steered = ad.logits(batch)
    # causal model: positions before the first image token cannot see the edit
    assert torch.equal(steered[:, :first_image], clean[:, :first_image])
    assert not torch.allclose(steered[:, first_image:], clean[:, first_image:])


def test_sweep_records_and_drift(tiny_adapter, tiny_samples):
    ad = tiny_adapter
    hp = ad.resolve_hookpoints([HP])[0]
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    recs = list(sweep(ad, sae, hp, tiny_samples[:3], [1, 2], [0.0, 25.0], mode="add", prompt=PROMPT,
                      max_new_tokens=6, batch_size=2))
    assert len(recs) == 3 * 2 * 2
    assert len({r["key"] for r in recs}) == 12
    for r in recs:
        assert r["prompt"] == PROMPT and r["feature"] in (1, 2) and r["hookpoint"] == hp
        if r["strength"] == 0:
            assert r["steered"] == r["original"] and r["kl"] == 0.0 and not r["changed"]
        elif r["original"]:
            assert math.isfinite(r["kl"]) and r["kl"] > 0
    # resume: nothing left to do when every key is done
    assert list(sweep(ad, sae, hp, tiny_samples[:3], [1, 2], [0.0, 25.0], mode="add", prompt=PROMPT,
                      max_new_tokens=6, batch_size=2, done={r["key"] for r in recs})) == []
    joint = list(sweep(ad, sae, hp, tiny_samples[:1], [1, 2], [5.0], joint=True, prompt=PROMPT, max_new_tokens=4,
                       kl=False))
    assert len(joint) == 1 and joint[0]["feature"] == [1, 2] and joint[0]["kl"] is None


def test_forced_kl_zero_for_identity_and_prefill_only_smaller(tiny_adapter, tiny_samples):
    ad = tiny_adapter
    hp = ad.resolve_hookpoints([HP])[0]
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    conts = ["a red circle", "a blue square"]
    zero = forced_kl(ad, tiny_samples[:2], PROMPT, conts, SteerSpec(hp, sae, Steering([1], [0.0], "add")))
    assert zero == [0.0, 0.0]
    every = forced_kl(ad, tiny_samples[:2], PROMPT, conts, SteerSpec(hp, sae, Steering([1], [30.0], "add"),
                                                                      token_kinds=["text"]))
    prefill = forced_kl(ad, tiny_samples[:2], PROMPT, conts, SteerSpec(hp, sae, Steering([1], [30.0], "add"),
                                                                        token_kinds=["text"], prefill_only=True))
    assert all(e > p > 0 for e, p in zip(every, prefill))


def test_attribution_through_the_adapter(tiny_adapter, tiny_samples):
    import numpy as np

    from lmmsae.attribution import attribute_answer

    ad = tiny_adapter
    hp = ad.resolve_hookpoints([HP])[0]
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    res = attribute_answer(ad, sae, hp, tiny_samples[:2], "<image> a", "red", "blue", top_k=8, n_ablate=4, n_maps=2)
    batch = ad.prepare(tiny_samples[:2], "<image> a")
    logits = ad.logits(batch)
    tok = ad.processor.tokenizer
    red, blue = tok.convert_tokens_to_ids("red"), tok.convert_tokens_to_ids("blue")
    last = [int(np.nonzero(k != 4)[0][-1]) for k in batch.token_map.kind]
    expected = [float(logits[i, p, red] - logits[i, p, blue]) for i, p in enumerate(last)]
    assert np.allclose(res.metric, expected, atol=1e-4)
    assert len(res.ranked) == 8 and set(res.ablation) == set(res.ranked[:4])
    for latent in res.ranked:
        assert abs(res.scores["all"][latent] - res.scores["image"][latent] - res.scores["text"][latent]) < 1e-4
    maps = res.maps[res.ranked[0]]
    assert len(maps) == 2 and maps[0].shape == (4, 4)
    # attribution on the image grid sums to the image-span score of that latent
    assert abs(sum(float(m.sum()) for m in maps) - res.scores["image"][res.ranked[0]]) < 1e-3


def test_pope_and_chair_through_the_adapter(tiny_adapter, tiny_samples):
    from lmmsae.hallucination import pope_eval, toy_chair, toy_questions, variants
    from lmmsae.steering.sweep import generate

    ad = tiny_adapter
    hp = ad.resolve_hookpoints([HP])[0]
    sae = TinySAE(d=ad.d_model(HP), n=64, seed=0)
    qs = toy_questions(tiny_samples, n_per_image=1)
    steers = variants(hp, sae, ablate=[1, 2], features=[3], strength=0.0, mode="add")
    res = pope_eval(ad, qs, steers, batch_size=4)
    assert set(res) == {"baseline", "ablate", "steer"}
    assert res["baseline"]["n"] == len(qs) == 10
    assert res["steer"] == res["baseline"]  # adding 0 changes nothing
    caps = generate(ad, tiny_samples, "<image>", None, batch_size=4, max_new_tokens=8)
    c = toy_chair(caps, [s.truth for s in tiny_samples])
    assert c["n_captions"] == 5
