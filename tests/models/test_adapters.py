"""The LLaVA adapters: loading, hookpoints, batching with padding, interventions, generation, errors."""


import numpy as np
import pytest
import torch
from PIL import Image

import tiny
from lmmsae.datasets.base import Sample
from lmmsae.errors import UserError
from lmmsae.models.base import BadImage, TokenKind

L1 = "model.language_model.layers.1"


def samples():
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((30, 50), (64, 40))]
    return [Sample("a", imgs[0], "describe it"), Sample("b", imgs[1], ""),
            Sample("c", None, "is there a red circle ?")]


def test_registered_names():
    from lmmsae import plugins

    names = plugins.registry("models").names()
    assert {"llava", "llava-next", "llava-ov", "toy-llava"} <= set(names)
    assert plugins.get("models", "toy-llava").options().checkpoint == "toy"
    assert plugins.get("models", "llava-next").options().checkpoint == "llava-hf/llama3-llava-next-8b-hf"


def test_list_hookpoints_from_config_alone(llava_path, tmp_path):
    from click.testing import CliRunner

    from lmmsae.commands.models import models
    from lmmsae.models.llava import LlavaAdapter

    (tmp_path / "config.json").write_text((llava_path / "config.json").read_text())  # no weights
    names = LlavaAdapter.list_hookpoints(LlavaAdapter.Options(checkpoint=str(tmp_path)))
    assert names == [f"model.language_model.layers.{i}" for i in range(3)]
    out = CliRunner().invoke(models, ["--hookpoints", "llava", "--checkpoint", str(tmp_path)])
    assert out.exit_code == 0 and "model.language_model.layers.2  (layers.2)" in out.output


def test_resolve_hookpoints(llava_adapter):
    r = llava_adapter.resolve_hookpoints
    assert r(["layers.1"]) == r(["model.layers.1"]) == r(["language_model.layers.1"]) == [L1]
    assert r(["layers.*"]) == [f"model.language_model.layers.{i}" for i in range(3)]
    assert r(["layers.[01]", "layers.1"]) == ["model.language_model.layers.0", L1]
    assert r(["layers.1.mlp"]) == ["model.language_model.layers.1.mlp"]
    with pytest.raises(UserError, match="Valid hookpoints: model.language_model.layers.0"):
        r(["layers.7"])
    with pytest.raises(UserError, match="matches nothing"):
        r(["blocks.*"])
    assert llava_adapter.d_model("layers.2") == 32


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_alone(llava_adapter, side):
    ss = samples()
    batch = llava_adapter.prepare(ss, padding_side=side)
    acts = llava_adapter.forward(batch, ["layers.1"])[L1]
    for i, s in enumerate(ss):
        alone = llava_adapter.prepare([s])
        a = llava_adapter.forward(alone, ["layers.1"])[L1][0]
        real = batch.token_map.kind[i] != TokenKind.PADDING
        assert real.sum() == a.shape[0]
        assert torch.allclose(acts[i][torch.from_numpy(real)], a, atol=1e-5)
    pad_at = batch.token_map.kind[2] == TokenKind.PADDING
    assert pad_at[0 if side == "left" else -1]


def test_forward_stops_early_but_matches_full_run(llava_adapter):
    batch = llava_adapter.prepare(samples())
    calls = []
    h = llava_adapter.model.model.language_model.layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        early = llava_adapter.forward(batch, ["layers.1"])[L1]
        assert calls == []
        hs = llava_adapter.model(**llava_adapter._inputs(batch), output_hidden_states=True).hidden_states
    finally:
        h.remove()
    assert torch.allclose(early, hs[2], atol=1e-6)


def test_intervene_on_image_tokens_only(llava_adapter):
    batch = llava_adapter.prepare(samples())
    clean = llava_adapter.forward(batch, ["layers.1", "layers.2"])
    from lmmsae.models import interventions

    with llava_adapter.intervene("layers.1", interventions.add(torch.ones(32)), token_kinds=["image"]):
        edited = llava_adapter.forward(batch, ["layers.1", "layers.2"])
    image = torch.from_numpy(batch.token_map.kind == TokenKind.IMAGE)
    diff = edited[L1] - clean[L1]
    assert torch.allclose(diff[image], torch.ones(1), atol=1e-5) and diff[~image].abs().max() == 0
    assert (edited["model.language_model.layers.2"] - clean["model.language_model.layers.2"]).abs().max() > 1e-3
    after = llava_adapter.forward(batch, ["layers.1"])[L1]
    assert torch.equal(after, clean[L1]), "hooks are removed after the block"


def test_intervene_in_generate_prefill_only_and_batched(llava_adapter):
    ss = samples()
    batch = llava_adapter.prepare(ss)
    seen = []

    def record(acts, mask):
        seen.append((acts.shape[1], int(mask.sum())))
        return acts * 0

    plain = llava_adapter.generate(batch, max_new_tokens=4)
    assert len(plain) == 3 and all(isinstance(t, str) for t in plain)
    alone = [llava_adapter.generate(llava_adapter.prepare([s]), max_new_tokens=4)[0] for s in ss]
    assert plain == alone, "right-padded batches are generated left-padded"
    with llava_adapter.intervene("layers.0", record, token_kinds=["image"], prefill_only=True):
        llava_adapter.generate(batch, max_new_tokens=4)
    assert len(seen) == 1 and seen[0][1] == (batch.token_map.kind == TokenKind.IMAGE).sum()
    seen.clear()
    with llava_adapter.intervene("layers.0", record):
        steered = llava_adapter.generate(batch, max_new_tokens=4)
    assert len(seen) == 4 and seen[1][0] == 1, "prefill, then one call per new token"
    assert steered != plain


def test_gradients_flow_through_an_edit(llava_adapter):
    batch = llava_adapter.prepare(samples()[:2])
    delta = torch.zeros(32, requires_grad=True)
    with llava_adapter.intervene("layers.1", lambda a, m: a + delta):
        logits = llava_adapter.logits(batch, grad=True)
    logits[:, -1, 5].sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0
    with torch.no_grad():
        assert not llava_adapter.logits(batch).requires_grad


def test_bad_images_raise_with_id(llava_adapter):
    with pytest.raises(BadImage, match="'z'.*zero size"):
        llava_adapter.prepare([Sample("z", Image.new("RGB", (0, 4)))])
    with pytest.raises(BadImage, match="not a PIL image"):
        llava_adapter.prepare([Sample("n", np.zeros((4, 4, 3)))])
    gray = llava_adapter.prepare([Sample("g", Image.new("L", (20, 20)))])  # converted, not rejected
    assert (gray.token_map.kind == TokenKind.IMAGE).sum() == 16


def test_identity_and_dtype(llava_path):
    from lmmsae.models.llava import LlavaAdapter

    a = LlavaAdapter(LlavaAdapter.Options(checkpoint=str(llava_path)), dtype="bfloat16")
    acts = a.forward(a.prepare(samples()[:1]), ["layers.0"])["model.language_model.layers.0"]
    assert acts.dtype == torch.bfloat16
    ident = a.identity()
    assert ident["checkpoint"] == str(llava_path) and ident["model_type"] == "llava" and ident["dtype"] == "bfloat16"


def test_unloadable_checkpoints_say_so(llava_path, tmp_path, monkeypatch):
    from lmmsae.models.llava import LlavaAdapter
    from lmmsae.models.llava_next import LlavaNextAdapter

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="checkpoint 'nobody/no-such-model' is not a local folder and not in the Hugging Face cache"):
        LlavaAdapter(LlavaAdapter.Options(checkpoint="nobody/no-such-model"))
    with pytest.raises(UserError, match="does not exist"):
        LlavaAdapter(LlavaAdapter.Options(checkpoint=str(tmp_path / "missing")))
    with pytest.raises(UserError, match="use --model llava\\b"):
        LlavaNextAdapter(LlavaNextAdapter.Options(checkpoint=str(llava_path)))


def test_toy_llava(toy_weights):
    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.models import load_adapter

    adapter = load_adapter("toy-llava")
    ds = ShapesDataset(ShapesDataset.Options(n=4))
    batch = adapter.prepare([ds.sample(i) for i in range(4)])
    tm = batch.token_map
    assert tm.grids[0] == [(8, 8)] and (tm.kind[0] == TokenKind.IMAGE).sum() == 64
    assert tm.box[0][tm.kind[0] == TokenKind.IMAGE][-1].tolist() == [84.0, 84.0, 96.0, 96.0]
    assert adapter.resolve_hookpoints(["layers.2"]) == ["model.language_model.layers.2"]
    captions = adapter.generate(batch, max_new_tokens=40)
    assert sum(c == ds.sample(i).truth["caption"] for i, c in enumerate(captions)) >= 3


@pytest.mark.parametrize("aspect,tiles", [("anyres_max_9", 9), ("anyres_max_12", 12), (None, 9)])
def test_onevision_max_tiles_reads_anyres_max_n(aspect, tiles):
    from types import SimpleNamespace

    from lmmsae.models.llava_ov import LlavaOnevisionAdapter

    adapter = LlavaOnevisionAdapter.__new__(LlavaOnevisionAdapter)
    adapter.config = SimpleNamespace(vision_aspect_ratio=aspect)
    assert adapter._max_tiles() == tiles


@pytest.mark.parametrize("aspect", ["max_9", "anyres", "anyres_max_", "9"])
def test_onevision_other_aspect_ratios_are_refused(aspect):
    """str.strip("anyres_max_") removed a set of characters: "max_9" and "9" were read as 9 tiles."""
    from types import SimpleNamespace

    from lmmsae.errors import UserError
    from lmmsae.models.llava_ov import LlavaOnevisionAdapter

    adapter = LlavaOnevisionAdapter.__new__(LlavaOnevisionAdapter)
    adapter.config = SimpleNamespace(vision_aspect_ratio=aspect)
    with pytest.raises(UserError, match="not anyres_max_<N>"):
        adapter._max_tiles()


def test_cuda_out_of_memory_is_one_line_naming_the_batch_options(llava_adapter):
    """torch's OOM error, raised inside a real forward (from a hooked block), becomes one UserError line."""
    from lmmsae.models.devices import OutOfMemory

    def oom(acts, mask):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    batch = llava_adapter.prepare(samples())
    for call in (lambda: llava_adapter.forward(batch, ["layers.2"]), lambda: llava_adapter.logits(batch),
                 lambda: llava_adapter.generate(batch, max_new_tokens=2)):
        with llava_adapter.intervene("layers.1", oom), pytest.raises(OutOfMemory) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and f"of 3 samples ({batch.n_tokens} tokens)" in message
        assert "-o collect.batch_size" in message and "-o model.device_map=auto" in message
    assert isinstance(err.value, UserError)
