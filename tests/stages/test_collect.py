"""`collect`: activations equal per-sample forward passes, resume is exact, bad images are reported."""

import json
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))

import tiny  # noqa: E402
from lmmsae.datasets.base import Dataset, Sample  # noqa: E402
from lmmsae.errors import UserError  # noqa: E402
from lmmsae.stages.collect import Options, collect, stream_activations  # noqa: E402
from lmmsae.stores.activations import ActivationReader  # noqa: E402

HOOKS = ["layers.1", "layers.0"]


class Pictures(Dataset):
    """Images of varied sizes and prompts; `bad` indices get unusable images."""

    def __init__(self, n=7, bad=(), fail_at=None):
        super().__init__(Dataset.Options())
        self.n, self.bad, self.fail_at = n, set(bad), fail_at

    def __len__(self):
        return self.n

    def sample(self, i):
        if i == self.fail_at:
            raise KeyboardInterrupt
        if i in self.bad:
            if i % 2:
                return Sample(f"s{i}", Image.new("RGB", (0, 5)))
            buf = io.BytesIO()
            Image.new("RGB", (40, 40), (9, 9, 9)).save(buf, "PNG")
            return Sample(f"s{i}", Image.open(io.BytesIO(buf.getvalue()[:60])))
        rng = np.random.default_rng(i)
        size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        return Sample(f"s{i}", image, ["", "describe it", "is there a red circle ?"][i % 3])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from lmmsae.models.llava import LlavaAdapter

    path = tiny.build_llava(tmp_path_factory.mktemp("m") / "llava")
    return LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)))


def test_collect_matches_single_sample_forward(adapter, tmp_path):
    ds = Pictures(7)
    info = collect(adapter, ds, HOOKS, tmp_path / "a.h5", Options(batch_size=3))
    r = ActivationReader(tmp_path / "a.h5")
    assert r.hookpoints == ["model.language_model.layers.1", "model.language_model.layers.0"]
    assert info["n_samples"] == 7 and r.n_tokens == info["n_tokens"]
    tokens, samples = r.tokens(), r.samples()
    for i in range(7):
        batch = adapter.prepare([ds.sample(i)])
        mask = batch.token_map.mask(["text", "image", "image_newline", "special"])[0]
        alone = adapter.forward(batch, ["layers.1"])["model.language_model.layers.1"][0][torch.from_numpy(mask)]
        s, n = samples["token_start"][i], samples["token_count"][i]
        assert n == mask.sum() and (tokens["sample_index"][s:s + n] == i).all()
        assert np.allclose(r.read("layers.1", s, s + n), alone.numpy(), atol=1e-5)
        assert (tokens["kind"][s:s + n] == batch.token_map.kind[0][mask]).all()
        assert (tokens["row"][s:s + n] == batch.token_map.row[0][mask]).all()


def test_resume_after_interrupt_is_exact(adapter, tmp_path):
    full = tmp_path / "full.h5"
    collect(adapter, Pictures(8), HOOKS, full, Options(batch_size=3, kinds=["image"], dtype="float16"))
    part = tmp_path / "part.h5"
    with pytest.raises(KeyboardInterrupt):
        collect(adapter, Pictures(8, fail_at=4), HOOKS, part, Options(batch_size=3, kinds=["image"], dtype="float16"))
    with pytest.raises(UserError, match="incomplete"):
        ActivationReader(part)
    info = collect(adapter, Pictures(8), HOOKS, part, Options(batch_size=3, kinds=["image"], dtype="float16"))
    assert info["resumed_at"] == 3
    a, b = ActivationReader(full), ActivationReader(part)
    assert a.n_tokens == b.n_tokens == 8 * 16
    assert np.array_equal(a.read("layers.0"), b.read("layers.0"))
    assert np.array_equal(a.tokens()["sample_index"], b.tokens()["sample_index"])


def test_bad_images_are_skipped_with_their_ids(adapter, tmp_path, capsys):
    info = collect(adapter, Pictures(6, bad={1, 2}), HOOKS, tmp_path / "a.h5", Options(batch_size=4))
    r = ActivationReader(tmp_path / "a.h5")
    assert [s["id"] for s in r.skipped()] == ["s1", "s2"] and info["skipped"] == 2
    assert "zero size" in r.skipped()[0]["reason"] and "decoded" in r.skipped()[1]["reason"]
    assert sorted(set(r.tokens()["sample_index"].tolist())) == [0, 3, 4, 5]
    assert "s1" in capsys.readouterr().err


def test_bad_image_can_stop_the_run(adapter, tmp_path):
    with pytest.raises(UserError, match="s2"):
        collect(adapter, Pictures(6, bad={2}), HOOKS, tmp_path / "a.h5", Options(batch_size=4), policy="stop")


def test_stream_activations_equals_stored(adapter, tmp_path):
    ds = Pictures(5)
    collect(adapter, ds, ["layers.0"], tmp_path / "a.h5", Options(batch_size=2, kinds=["image", "text"]))
    r = ActivationReader(tmp_path / "a.h5")
    parts = list(stream_activations(adapter, ds, ["layers.0"], batch_size=2, kinds=["image", "text"]))
    acts = torch.cat([p[0]["model.language_model.layers.0"] for p in parts])
    assert torch.allclose(acts, torch.from_numpy(r.read("layers.0")), atol=1e-6)
    assert np.array_equal(np.concatenate([p[1]["sample_index"] for p in parts]), r.tokens()["sample_index"])


def test_cli_collect_and_skip_when_complete(adapter, tmp_path):
    from click.testing import CliRunner

    from lmmsae.cli import cli

    args = ["collect", "--out", str(tmp_path), "--name", "r", "--model", "llava", "-o",
            f"model.checkpoint={adapter.path}", "--dataset", "shapes", "-o", "dataset.n=5", "--hookpoint", "layers.1",
            "--max-samples", "4", "--kind", "image", "--store-dtype", "bfloat16", "--batch-size", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    r = ActivationReader(tmp_path / "r" / "collect" / "activations.h5")
    assert r.n_tokens == 4 * 16 and r.dtype == "bfloat16" and r.dataset["name"] == "shapes"
    again = CliRunner().invoke(cli, [*args[:5], "--resume", *args[5:]])
    assert again.exit_code == 0, again.output
    assert skipped_collect(tmp_path / "r")


def test_stage_run_skips_when_complete(adapter, tmp_path):
    from lmmsae.commands.common import extra_overrides, make_context
    from lmmsae.stages import collect as stage

    params = {"out": str(tmp_path), "name": "r", "model": "llava", "dataset": "shapes", "hookpoints": ("layers.1",),
              "overrides": (f"model.checkpoint={adapter.path}", "dataset.n=3", "dataset.image_size=32"),
              "kinds": ("image",), "batch_size": 2}
    ctx = make_context(params, extra_overrides("collect", params, ["kinds", "batch_size"]))
    stage.run(ctx)
    r = ActivationReader(ctx.run.file("collect/activations.h5"))
    assert r.n_tokens == 3 * 16 and r.hookpoints == ["model.language_model.layers.1"]
    assert ctx.run.is_complete("collect/activations.h5")
    stamp = ctx.run.file("collect/activations.h5").stat().st_mtime_ns
    stage.run(ctx)
    assert ctx.run.file("collect/activations.h5").stat().st_mtime_ns == stamp
    assert skipped_collect(tmp_path / "r")


def skipped_collect(run) -> bool:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return any(e["event"] == "stage-skip" and e["stage"] == "collect" and e["reason"] == "current" for e in events)
