"""The shipped toy models load through the ordinary offline paths and really do their jobs."""

import json
import os
import stat

import numpy as np
import pytest

from lmmsae import toyworld
from lmmsae.datasets.shapes import ShapesDataset, describe_object, object_view
from lmmsae.toyworld.vocab import VOCAB

needs_weights = pytest.mark.usefixtures("toy_weights")  # fails (never skips) when they are missing


@pytest.fixture(scope="module")
def llava():
    os.environ["HF_HUB_OFFLINE"] = "1"
    return toyworld.load_llava()


@pytest.fixture(scope="module")
def heldout():
    ds = ShapesDataset(ShapesDataset.Options(n=64, seed=0, split="test"))
    return [ds.sample(i) for i in range(64)]


def test_no_torch_at_import():
    import subprocess
    import sys

    code = "import sys, lmmsae.toyworld, lmmsae.toyworld.vocab; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_open_clip_image_tower_converts_exactly_to_the_llava_vision_tower():
    import open_clip
    import torch

    from lmmsae.toyworld.train import CLIP_CFG, build_llava, clip_visual_to_hf

    torch.manual_seed(0)
    clip = open_clip.model.CLIP(**CLIP_CFG).eval()
    llava = build_llava(len(VOCAB)).eval()
    llava.model.vision_tower.load_state_dict(clip_visual_to_hf(clip.visual.state_dict()), strict=True)
    x = torch.randn(2, 3, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE)
    v = clip.visual
    with torch.no_grad():
        tokens = torch.cat([v.class_embedding.expand(2, 1, -1), v.conv1(x).flatten(2).transpose(1, 2)], 1)
        ours = v.transformer(v.ln_pre(tokens + v.positional_embedding))
        theirs = llava.model.vision_tower(x, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(ours, theirs, atol=1e-4)


@needs_weights
def test_llava_loads_offline_with_the_documented_token_layout(llava, heldout):
    model, processor = llava
    cfg = model.config
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert cfg.image_token_id == VOCAB["<image>"] == processor.tokenizer.image_token_id == 4
    assert cfg.image_seq_length == 64 and cfg.vision_feature_layer == -1
    assert cfg.vision_feature_select_strategy == "default"
    assert (cfg.text_config.bos_token_id, cfg.text_config.eos_token_id, cfg.text_config.pad_token_id) == (1, 2, 0)
    g = model.generation_config
    assert (g.bos_token_id, g.eos_token_id, g.pad_token_id) == (1, 2, 0)
    batch = processor(images=[heldout[0].image], text=["<image>"], return_tensors="pt")
    assert batch["input_ids"][0].tolist() == [1] + [4] * 64
    assert tuple(batch["pixel_values"].shape) == (1, 3, 96, 96)
    wide, tall = heldout[0].image.resize((150, 90)), heldout[0].image.resize((40, 130))
    for image in (wide, tall):  # user folders and explainer crops are not square: resized exactly, never cut
        batch = processor(images=[image], text=["<image>"], return_tensors="pt")
        assert tuple(batch["pixel_values"].shape) == (1, 3, 96, 96) and batch["input_ids"].shape[1] == 65
        assert model(**batch).logits.shape[1] == 65
    n_params = sum(p.numel() for p in model.parameters())
    assert 3e6 < n_params < 10e6


@needs_weights
def test_llava_captions_held_out_images(llava, heldout):
    model, processor = llava
    samples = heldout[:20]
    out = toyworld.caption(model, processor, [s.image for s in samples])
    exact = np.mean([o == s.truth["caption"] for o, s in zip(out, samples)])
    assert exact >= 0.8, list(zip(out, [s.truth["caption"] for s in samples]))


@needs_weights
def test_llava_describes_only_the_highlighted_object_of_a_masked_view(llava, heldout):
    model, processor = llava
    cases = [(s, k) for s in heldout if len(s.truth["objects"]) >= 2 for k in (0, len(s.truth["objects"]) - 1)][:12]
    views = [object_view(s, k) for s, k in cases] + [object_view(s, k, patch=12) for s, k in cases]
    targets = [describe_object(s.truth["objects"][k]) for s, k in cases] * 2
    out = toyworld.caption(model, processor, views)
    assert np.mean([o == t for o, t in zip(out, targets)]) >= 0.8, list(zip(out, targets))
    assert all(" and " not in o for o in out)


@needs_weights
def test_llava_answers_yes_no_probes(llava, heldout):
    """>= 90% right on present and, separately, on absent objects, held-out images, the shared probes."""
    import random

    from lmmsae.datasets.shapes import probe
    from lmmsae.toyworld.evaluate import yes_no_metrics

    model, processor = llava
    m = yes_no_metrics(model, processor, heldout[:32], seed=0)["whole_image"]
    assert m["questions"] == 64 and m["other_replies"] == 0
    assert m["accuracy_present"] >= 0.9 and m["accuracy_absent"] >= 0.9, m
    assert probe(heldout[0].truth, random.Random(0), True)[2] is None


@needs_weights
def test_clip_loads_through_open_clip_offline_and_retrieves_captions(heldout):
    import open_clip
    import torch

    name = toyworld.clip_model_name()
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    tokens = tokenizer(["a large red circle at the top left", "a zebra"])
    assert tokens.shape == (2, 32)
    assert tokens[0, :10].tolist() == [1] + [VOCAB[w] for w in "a large red circle at the top left".split()] + [2]
    assert tokens[1, :4].tolist() == [1, VOCAB["a"], VOCAB["<unk>"], 2]  # unknown words never reach the hub
    samples = heldout[:16]
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(s.image) for s in samples]), normalize=True)
        txt = model.encode_text(tokenizer([s.truth["caption"] for s in samples]), normalize=True)
    hits = (img @ txt.t()).argmax(1) == torch.arange(len(samples))
    assert hits.float().mean() >= 0.75
    m2, pre2, tok2 = toyworld.load_clip()
    assert type(m2) is type(model)


@needs_weights
def test_shipped_files_are_readable_small_and_evaluated():
    for folder, limit in ((toyworld.LLAVA_DIR, 30e6), (toyworld.CLIP_DIR, 15e6)):
        files = list(folder.iterdir())
        assert files
        for f in files:
            assert f.stat().st_mode & stat.S_IROTH, f
        assert sum(f.stat().st_size for f in files) < limit
    results = json.loads(toyworld.EVAL_JSON.read_text())
    assert set(results["captioning"]["attribute_accuracy"]) == {"color", "size", "position", "shape"}
    assert results["clip"]["group"] == 64
    assert toyworld.TRAINING_LOG.is_file()
