"""Real LLaVA-family architectures with random weights, from the shipped config shapes: proportions kept
when scaled, deterministic weights, token maps exact (marker ground truth), and the pipeline's stages."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import tiny
from markers import check_marker
from lmmsae.datasets.base import Sample
from lmmsae.errors import UserError
from lmmsae.models import load_adapter
from lmmsae.models.base import TokenKind
from lmmsae.models.random_init import read_config, scale_config

CONFIGS = Path(__file__).resolve().parents[2] / "benchmarks" / "configs"
FAMILIES = {"llava": "llava-1.5-7b", "llava-next": "llama3-llava-next-8b", "llava-ov": "llava-onevision-qwen2-7b"}
TINY = 1 / 64


def config_path(model: str) -> str:
    return str(CONFIGS / f"{FAMILIES[model]}.json")


def random_adapter(model: str, scale: float = TINY, seed: int = 0, **options):
    return load_adapter(model, {"config": config_path(model), "random_init": True, "scale": scale,
                                "init_seed": seed, **options})


def test_shipped_configs_hold_the_published_shapes():
    next8b = read_config(config_path("llava-next"))
    tc, vc = next8b.text_config, next8b.vision_config
    assert (tc.hidden_size, tc.num_hidden_layers, tc.num_attention_heads, tc.num_key_value_heads,
            tc.intermediate_size, tc.vocab_size) == (4096, 32, 32, 8, 14336, 128320)
    assert (vc.hidden_size, vc.num_hidden_layers, vc.image_size, vc.patch_size) == (1024, 24, 336, 14)
    assert next8b.image_grid_pinpoints[0] == [336, 672] and next8b.vision_feature_layer == -2
    v15 = read_config(config_path("llava"))
    assert (v15.text_config.hidden_size, v15.text_config.num_key_value_heads, v15.text_config.vocab_size) == \
        (4096, 32, 32064)
    ov = read_config(config_path("llava-ov"))
    assert (ov.text_config.hidden_size, ov.text_config.num_hidden_layers, ov.text_config.num_key_value_heads) == \
        (3584, 28, 4)
    assert (ov.vision_config.hidden_size, ov.vision_config.image_size, ov.vision_aspect_ratio) == \
        (1152, 384, "anyres_max_9")


def _params_to_block(config, last_block: int) -> int:
    """Weights a forward to block `last_block` runs through: the vision tower, projector and blocks 0..last."""
    import transformers

    with torch.device("meta"):
        model = transformers.LlavaNextForConditionalGeneration._from_config(config)
    lm = model.model.language_model
    blocks = sum(p.numel() for i in range(last_block + 1) for p in lm.layers[i].parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    return blocks + vision + projector


def test_scaling_keeps_the_paper_proportions():
    full = read_config(config_path("llava-next"))
    eighth = scale_config(full, 1 / 8, vocab_min=300)
    tc, vc = eighth.text_config, eighth.vision_config
    assert (tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads, tc.intermediate_size) == (512, 4, 1, 1792)
    assert tc.num_hidden_layers == 32 and vc.num_hidden_layers == 24, "depth is kept: layers.24 still exists"
    assert (vc.hidden_size, vc.image_size, vc.patch_size) == (128, 112, 14)
    assert eighth.image_grid_pinpoints == [[112, 224], [224, 112], [224, 224], [336, 112], [112, 336]]
    assert tc.vocab_size == 16040
    # The SAE (32x latents, so 32 d^2 encoder weights) against the weights a forward to block 24 runs:
    # the same ratio at 1/8 as at full size (the paper's 131,072 x 4,096 SAE vs LLaVA-NeXT-8B).
    ratio_full = 32 * 4096 ** 2 / _params_to_block(full, 24)
    ratio_eighth = 32 * 512 ** 2 / _params_to_block(eighth, 24)
    assert ratio_full == pytest.approx(0.0929, rel=0.01)  # 0.54B SAE weights vs 5.8B
    assert ratio_eighth == pytest.approx(ratio_full, rel=0.02)
    assert (112 // 14) ** 2 / (336 // 14) ** 2 == pytest.approx(1 / 9), "image tokens per view ~ x scale"


def test_same_seed_same_weights_and_the_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = random_adapter("llava-next", seed=0)
    assert torch.equal(torch.rand(3), expected), "building a model does not consume the caller's RNG"
    b = random_adapter("llava-next", seed=0)
    c = random_adapter("llava-next", seed=1)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.language_model.layers.24.mlp.up_proj.weight"],
                           sc["model.language_model.layers.24.mlp.up_proj.weight"])
    ident = a.identity()
    assert ident["random_init"] and ident["scale"] == TINY and ident["shapes"]["text_layers"] == 32


@pytest.mark.parametrize("model,size,rect", [
    ("llava", (70, 42), (50, 4, 68, 40)),            # resize shortest edge + centre crop
    ("llava-next", (84, 42), (50, 5, 80, 38)),       # fits a pinpoint: base view + 2 tiles
    ("llava-next", (100, 37), (5, 3, 30, 30)),       # wide: unpadded tile rows
    ("llava-ov", (60, 150), (5, 100, 55, 145)),      # tall, anyres_max_9
])
def test_token_map_ground_truth(model, size, rect):
    adapter = random_adapter(model)
    tiny._local(adapter.model)  # patch features then depend on their own patch only
    tm, changed = check_marker(adapter, size, rect, 14)
    if model != "llava":
        assert changed[tm.view[0] >= 1].any(), "the marker is seen in the tiles"
    assert all(g == (3, 3) for g in tm.grids[0]), "1/64 scale: 3x3 patches per view"


def test_byte_tokenizer_takes_any_text_and_batches_mix():
    adapter = random_adapter("llava-next")
    samples = [Sample("a", Image.new("RGB", (50, 30)), "Décris l'image 🙂"), Sample("b", None, "text only"),
               Sample("c", Image.new("RGB", (200, 70)), "")]
    batch = adapter.prepare(samples)
    tm = batch.token_map
    assert tm.image_sizes == [(50, 30), None, (200, 70)] and (tm.kind[1] == TokenKind.IMAGE).sum() == 0
    ids = batch.inputs["input_ids"][0][torch.from_numpy(tm.kind[0] == TokenKind.TEXT)]
    assert adapter.tokenizer.decode(ids).strip() == "Décris l'image 🙂"
    acts = adapter.forward(batch, ["layers.24"])["model.language_model.layers.24"]
    for i, s in enumerate(samples):  # batched equals alone
        alone = adapter.forward(adapter.prepare([s]), ["layers.24"])["model.language_model.layers.24"][0]
        real = torch.from_numpy(tm.kind[i] != TokenKind.PADDING)
        assert torch.allclose(acts[i][real], alone, atol=1e-4)


def test_hookpoints_from_the_config_alone():
    from lmmsae.commands.models import models

    out = CliRunner().invoke(models, ["--hookpoints", "llava-ov", "--config", config_path("llava-ov")])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[-1] == "model.language_model.layers.27  (layers.27)"


@pytest.mark.parametrize("options,message", [
    ({"config": "CFG"}, "add -o model.random_init=true"),
    ({"scale": 0.5}, "add -o model.random_init=true"),
    ({"config": "CFG", "random_init": True, "scale": 0}, r"model.scale must be in \(0, 1\]"),
    ({"config": "/nowhere/config.json", "random_init": True}, "does not exist: give a config.json"),
    ({"config": "CFG", "random_init": True, "device_map": "auto"}, "drop -o model.device_map"),
])
def test_option_mistakes_are_one_line(options, message):
    options = {k: config_path("llava-next") if v == "CFG" else v for k, v in options.items()}
    with pytest.raises(UserError, match=message):
        load_adapter("llava-next", options)


def test_a_config_of_another_family_names_the_adapter(tmp_path):
    with pytest.raises(UserError, match="use --model llava-next"):
        random_adapter("llava", config=config_path("llava-next"))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        load_adapter("llava", {"config": str(tmp_path), "random_init": True})


def test_collect_train_cache_steer_on_a_random_architecture(tmp_path):
    """The stages run on a random LLaVA-NeXT-8B architecture exactly as on a checkpoint: the stored token
    table is the adapter's token map, the cache's maps have the views' grids, steering changes answers."""
    import h5py

    from lmmsae.cli import cli
    from lmmsae.datasets.shapes import ShapesDataset

    model = ["--model", "llava-next", "-o", f"model.config={config_path('llava-next')}", "-o", "model.random_init=true",
             "-o", f"model.scale={TINY}"]
    common = ["--out", str(tmp_path), "--name", "r"]
    result = CliRunner().invoke(cli, ["run", *common, *model, "--dataset", "shapes", "-o", "dataset.n=6",
                                      "--device", "cpu", "--dtype", "float32", "-o", "sae.n_latents=256", "-o", "sae.k=8",
                                      "-o", "train.eval_ce=false", "-o", "train.batch_size=64", "-o", "collect.batch_size=3", "--until", "cache"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "r"
    saved = (run / "run.yaml").read_text()
    assert "layers.24" in saved, "the adapter's default hookpoint (the paper's layer)"

    adapter = random_adapter("llava-next")
    ds = ShapesDataset(ShapesDataset.Options(n=6))
    expected = adapter.prepare([ds.sample(0)]).token_map
    with h5py.File(run / "collect" / "activations.h5", "r") as f:
        first = f["tokens/sample_index"][:] == 0
        kinds = f["tokens/kind"][:][first]
        boxes = f["tokens/box"][:][first]
        acts = f["model.language_model.layers.24/acts"][:][first] if "model.language_model.layers.24" in f \
            else None
    real = expected.kind[0] != TokenKind.PADDING
    assert (kinds == expected.kind[0][real]).all()
    assert np.allclose(boxes, expected.box[0][real])
    if acts is not None:
        direct = adapter.forward(adapter.prepare([ds.sample(0)]), ["layers.24"])["model.language_model.layers.24"][0]
        assert np.allclose(acts, direct.numpy(), atol=1e-4)
    assert (run / "cache" / "features.h5").is_file()

    result = CliRunner().invoke(cli, ["steer", *common, "--resume", "-o", "steer.feature=[0]",
                                      "-o", "steer.n_images=2", "-o", "steer.max_new_tokens=3"])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for f in (run / "steering").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert records, "steering wrote its records"
