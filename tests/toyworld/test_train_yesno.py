"""The yes/no recipe's training options (lmmsae.toyworld.train): question-first prompts, the one-object
curriculum, per-patch auxiliary targets and the training-only patch heads. No weights needed."""

import random

import numpy as np
import pytest

from lmmsae.datasets.shapes import ShapesDataset
from lmmsae.toyworld import PATCH_SIZE
from lmmsae.toyworld.vocab import VOCAB

QUESTION_FIRST = "{question} <image>"


@pytest.fixture(scope="module")
def samples():
    ds = ShapesDataset(ShapesDataset.Options(n=64, seed=0, split="train"))
    return [ds.sample(i) for i in range(64)]


def test_patch_targets_name_each_patchs_object_and_the_asked_one(samples):
    from lmmsae.toyworld.train import COLOR_CLASSES, N_PATCHES, SHAPE_CLASSES, patch_targets

    s = next(x for x in samples if len(x.truth["objects"]) >= 2)
    o0, o1 = s.truth["objects"][:2]
    color, shape, match = patch_targets(s.truth, (o0["color"], o0["shape"], None))
    assert color.shape == shape.shape == match.shape == (N_PATCHES,)
    for o in (o0, o1):
        grid = o["mask"].reshape(8, PATCH_SIZE, 8, PATCH_SIZE).mean(axis=(1, 3)).ravel()
        core = grid >= 0.1
        assert core.any()
        assert (color[core] == COLOR_CLASSES.index(o["color"])).all()
        assert (shape[core] == SHAPE_CLASSES.index(o["shape"])).all()
    same = (o1["color"], o1["shape"]) == (o0["color"], o0["shape"])
    grid0 = o0["mask"].reshape(8, PATCH_SIZE, 8, PATCH_SIZE).mean(axis=(1, 3)).ravel() >= 0.1
    grid1 = o1["mask"].reshape(8, PATCH_SIZE, 8, PATCH_SIZE).mean(axis=(1, 3)).ravel() >= 0.1
    assert (match[grid0] == 1).all() and (match[grid1] == int(same)).all()
    empty = np.all([o["mask"].reshape(8, PATCH_SIZE, 8, PATCH_SIZE).sum(axis=(1, 3)).ravel() == 0
                    for o in s.truth["objects"]], axis=0)
    assert (color[empty] == 0).all() and (shape[empty] == 0).all() and (match[empty] == 0).all()
    ambiguous = ~empty & ~np.any([o["mask"].reshape(8, PATCH_SIZE, 8, PATCH_SIZE).mean(axis=(1, 3)).ravel() >= 0.1
                                  for o in s.truth["objects"]], axis=0)
    assert (color[ambiguous] == -100).all() and (match[ambiguous] == -100).all()
    # an absent pair matches nowhere; at a position, only the object in that cell matches; no question: no target
    _, _, none = patch_targets(s.truth, ("red", "zebra", None))
    assert set(np.unique(none)) <= {0, -100}
    _, _, elsewhere = patch_targets(s.truth, (o0["color"], o0["shape"], o1["position"]))
    assert (elsewhere[grid0] == 0).all()
    assert (patch_targets(s.truth)[2] == -100).all()


def test_question_first_examples_and_the_one_object_curriculum(samples):
    from lmmsae.toyworld.train import llava_example, llava_example_probe

    single = ShapesDataset(ShapesDataset.Options(n=64, seed=0, split="train", max_objects=1))
    rng = random.Random(0)
    seen = {"question": 0, "other": 0}
    for i, s in enumerate(samples):
        one = single.sample(i)
        image, prompt, answer, used, asked = llava_example_probe(s, rng, 0.2, 0.5, question_template=QUESTION_FIRST,
                                                                 question_sample=one)
        if asked is None:
            seen["other"] += 1
            assert prompt == "<image>" and used is s
            continue
        seen["question"] += 1
        assert used is one and image is one.image and len(one.truth["objects"]) == 1
        assert prompt.startswith("is there a ") and prompt.endswith(" ? <image>")
        held = {(o["color"], o["shape"]) for o in one.truth["objects"]}
        assert answer == ("yes" if asked[:2] in held else "no")
    assert seen["question"] and seen["other"]
    # the three-field form is unchanged for the default template
    image, prompt, answer = llava_example(samples[0], random.Random(3), 0.0, 1.0)
    assert prompt.startswith("<image> is there a ")


def test_patch_heads_train_on_lm_hidden_states_and_reach_the_lm(samples):
    import torch

    from lmmsae.toyworld.train import (PatchHeads, build_llava, build_tokenizer, encode_batch, llava_example_probe,
                                       patch_targets, to_pixels)

    torch.manual_seed(0)
    model = build_llava(len(VOCAB)).train()
    heads = PatchHeads(model.config.text_config.hidden_size)
    rng = random.Random(1)
    examples = [llava_example_probe(s, rng, 0.0, 0.5, question_template=QUESTION_FIRST) for s in samples[:4]]
    ids, att, lab, wts = encode_batch([e[:3] for e in examples], build_tokenizer("llava"), 4.0)
    assert ((ids == VOCAB["<image>"]).sum(1) == 64).all()
    out = model(input_ids=ids, attention_mask=att, pixel_values=to_pixels([e[0] for e in examples]),
                output_hidden_states=True)
    targets = [torch.from_numpy(np.stack([patch_targets(smp.truth, asked)[j] for *_, smp, asked in examples]))
               for j in range(3)]
    loss, parts = heads.loss(out.hidden_states[2], ids, targets)
    assert set(parts) == {"color", "shape", "match"} and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in heads.parameters())
    assert model.model.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert model.model.language_model.layers[2].mlp.up_proj.weight.grad is None  # hidden_states[2]: after the first two layers


def test_prefix_answers_say_yes_from_the_first_patch_holding_the_asked_object(samples):
    from lmmsae.toyworld.train import (add_prefix_answers, build_tokenizer, encode_batch, llava_example_probe,
                                       patch_targets)

    rng = random.Random(0)
    examples = [llava_example_probe(s, rng, 0.0, 1.0, question_template=QUESTION_FIRST) for s in samples[:8]]
    examples.append(llava_example_probe(samples[8], rng, 1.0, 0.0))  # a masked view: left alone
    ids, lab, wts = (lambda b: (b[0], b[2], b[3]))(encode_batch([e[:3] for e in examples], build_tokenizer("llava"), 4.0))
    before = lab[-1].clone(), wts[-1].clone()
    matches = [patch_targets(smp.truth, asked)[2] if asked is not None else None for *_, smp, asked in examples]
    add_prefix_answers(ids, lab, wts, matches, 0.25)
    assert (lab[-1] == before[0]).all() and (wts[-1] == before[1]).all()
    for i, (e, m) in enumerate(zip(examples[:-1], matches)):
        pos = (ids[i] == VOCAB["<image>"]).nonzero().flatten()
        said = lab[i, pos[1:]].tolist() + [lab[i, pos[-1] + 1].item()]  # what image tokens 0..63 are trained to say
        first = int(np.argmax(m == 1)) if (m == 1).any() else 64
        assert said == [VOCAB["no"]] * first + [VOCAB["yes"]] * (64 - first)
        assert said[-1] == VOCAB[e[2]]  # the last one is the answer itself
        assert (wts[i, pos[1:]] == 0.25).all() and wts[i, pos[-1] + 1] == 4.0


def test_added_lm_layers_start_as_the_identity_and_training_above_a_layer_leaves_its_hidden_states_alone(samples):
    import torch

    from lmmsae.toyworld.train import (add_lm_layers, build_llava, build_tokenizer, encode_batch, freeze_below_lm_layer,
                                       llava_example_probe, to_pixels, weighted_lm_loss)

    torch.manual_seed(0)
    model = build_llava(len(VOCAB)).eval()
    examples = [llava_example_probe(s, random.Random(i), 0.3, 0.4) for i, s in enumerate(samples[:6])]
    ids, att, lab, wts = encode_batch([e[:3] for e in examples], build_tokenizer("llava"), 4.0)
    batch = dict(input_ids=ids, attention_mask=att, pixel_values=to_pixels([e[0] for e in examples]))
    with torch.no_grad():
        before = model(**batch, output_hidden_states=True)
    with pytest.raises(ValueError, match="at least 1 layer"):
        add_lm_layers(model, 0)
    grown = add_lm_layers(model, 1).eval()
    assert grown.config.text_config.num_hidden_layers == 5 and len(grown.model.language_model.layers) == 5
    with torch.no_grad():
        after = grown(**batch, output_hidden_states=True)
    assert torch.allclose(after.logits, before.logits, atol=1e-5)  # the new layer adds nothing yet
    freeze_below_lm_layer(grown, 3)
    trainable = {n for n, p in grown.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.3." in n or ".layers.4." in n or n.endswith("language_model.norm.weight")
                             for n in trainable)
    assert any(".layers.4." in n for n in trainable)
    opt = torch.optim.SGD([p for p in grown.parameters() if p.requires_grad], lr=0.5)
    grown.train()
    weighted_lm_loss(grown(**batch).logits, lab, wts).backward()
    opt.step()
    grown.eval()
    with torch.no_grad():
        trained = grown(**batch, output_hidden_states=True)
    assert torch.equal(trained.hidden_states[3], after.hidden_states[3])  # layers.2's output: what the toy SAEs read
    assert not torch.allclose(trained.logits, after.logits)


def test_attention_target_loss_is_the_attention_mass_on_the_asked_objects_patches(samples):
    import math

    import torch

    from lmmsae.toyworld.train import attention_target_loss, build_tokenizer, llava_example_probe, patch_targets, prompt_ids

    tok = build_tokenizer("llava")
    rng = random.Random(0)
    examples = [llava_example_probe(s, rng, 0.0, 1.0) for s in samples[:12]]
    examples.append(llava_example_probe(samples[12], rng, 1.0, 0.0))  # no question: no term
    present = [e for e in examples if e[4] is not None and e[2] == "yes"]
    absent = [e for e in examples if e[4] is not None and e[2] == "no"]
    assert present and absent
    T = max(len(prompt_ids(e[1], tok)) for e in examples) + 2
    attn = torch.full((len(examples), 2, T, T), 1e-9)
    for i, (_, prompt, answer, smp, asked) in enumerate(examples):
        q = len(prompt_ids(prompt, tok)) - 1
        if asked is None:
            continue
        match = patch_targets(smp.truth, asked)[2]
        if answer == "yes":  # half the mass on the asked object's patches
            for j in np.flatnonzero(match == 1):
                attn[i, 0, q, 1 + j] = 0.5 / (match == 1).sum()
        else:  # all of it on <s>
            attn[i, 0, q, 0] = 1.0
    loss = attention_target_loss(attn, examples, tok)
    n = len(present) + len(absent)
    assert math.isclose(loss.item(), len(present) * -math.log(0.5) / n, rel_tol=1e-4)
    assert attention_target_loss(attn[-1:], examples[-1:], tok) is None
