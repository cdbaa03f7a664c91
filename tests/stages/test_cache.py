import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lmmsae.errors import UserError
from lmmsae.stages.cache import Options, cache_features
from lmmsae.stores.features import FeatureStore, merge

sys.path.insert(0, str(Path(__file__).parents[1] / "stores"))
sys.path.insert(0, str(Path(__file__).parents[1] / "cache"))
from fakes import FakeAdapter, RandomImages, ReluSAE, patch_features  # noqa: E402
from test_features import assert_same_file  # noqa: E402

OPTS = dict(n_top=6, n_random=4, n_negatives=3, batch_size=8)


def setup(n=50, tiles=True, latents=None):
    ds = RandomImages(RandomImages.Options(n=n, wide=True))
    return FakeAdapter(grid=4, tiles=tiles), ReluSAE(n_latents=40), ds, Options(**OPTS, latents=latents)


def direct_maps(sae, image, adapter):
    """Latent activations of every view's patches, recomputed from the image alone."""
    out = []
    for rows, cols, (x0, y0, x1, y1) in adapter._views(image):
        feats = [patch_features(image, (x0 + (x1 - x0) * c / cols, y0 + (y1 - y0) * r / rows,
                                        x0 + (x1 - x0) * (c + 1) / cols, y0 + (y1 - y0) * (r + 1) / rows))
                 for r in range(rows) for c in range(cols)]
        z = sae.encode(torch.as_tensor(np.stack(feats))).detach().numpy()
        out.append(z.reshape(rows, cols, -1))
    return out


def test_maps_match_direct_recomputation_and_top_n_is_a_brute_force_sort(tmp_path):
    adapter, sae, ds, opts = setup()
    store = FeatureStore(cache_features(adapter, sae, ds, "h", tmp_path / "f.h5", opts))
    per_image = [direct_maps(sae, ds.sample(i).image, adapter) for i in range(len(ds))]
    pooled = np.stack([views[0].mean(axis=(0, 1)) for views in per_image])  # base_mean
    checked = 0
    for latent in store.latents:
        col = pooled[:, latent]
        expect = sorted((i for i in range(len(ds)) if col[i] > 0), key=lambda i: (-col[i], i))[:6]
        entries = store.entries(latent, "top")
        assert entries["index"].tolist() == expect
        np.testing.assert_allclose(entries["score"], col[expect], rtol=1e-5)
        rec = store.record(latent, n=6, dedupe=False, render=None)
        for ex in rec.examples:
            for v, grid in ex.views.items():
                direct = per_image[ex.sample_index][int(v)][..., latent]
                assert grid.shape == direct.shape
                np.testing.assert_allclose(grid, direct, atol=2e-3, rtol=1e-3)  # float16 storage
                checked += 1
        stats = store.stats(latent)
        assert stats["images_active"] == sum(views_max > 0 for views_max in
                                             [max(v[..., latent].max() for v in vs) for vs in per_image])
    assert checked > 50


def test_latent_subset_matches_the_full_cache(tmp_path):
    adapter, sae, ds, opts = setup(n=30)
    full = FeatureStore(cache_features(adapter, sae, ds, "h", tmp_path / "all.h5", opts))
    _, _, _, sub_opts = setup(n=30, latents="5:9,20")
    sub = FeatureStore(cache_features(adapter, sae, ds, "h", tmp_path / "sub.h5", sub_opts))
    assert sub.latents == [5, 6, 7, 8, 20]
    for latent in sub.latents:
        for group in ("top", "random", "negatives"):
            a, b = full.entries(latent, group), sub.entries(latent, group)
            assert np.array_equal(a["index"], b["index"])
            for k in set(a) - {"index"}:  # pooling sums over another memory layout: float32 rounding
                np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_sharded_run_merged_equals_a_single_run(tmp_path):
    adapter, sae, ds, opts = setup()
    cache_features(adapter, sae, ds, "h", tmp_path / "one.h5", opts)
    shards = [cache_features(adapter, sae, ds, "h", tmp_path / f"s{r}.h5", opts, shard=(r, 3)) for r in range(3)]
    with h5py.File(shards[1], "r") as f:
        assert f["samples/index"][...].tolist() == list(range(16, 33))
    merge(shards, tmp_path / "merged.h5")
    assert_same_file(tmp_path / "one.h5", tmp_path / "merged.h5")


class Killer:
    """A dataset that dies (like a killed process) when it reaches sample `at`."""

    def __init__(self, ds, at):
        self.ds, self.at = ds, at

    def __len__(self):
        return len(self.ds)

    def sample(self, i):
        if i == self.at:
            raise KeyboardInterrupt
        return self.ds.sample(i)


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    adapter, sae, ds, opts = setup()
    opts.checkpoint_every = 16
    cache_features(adapter, sae, ds, "h", tmp_path / "straight.h5", opts)
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        cache_features(adapter, sae, Killer(ds, 37), "h", out, opts)
    with h5py.File(out, "r") as f:
        assert f.attrs["n_images"] == 32 and not f.attrs["complete"]  # the last checkpoint
    adapter.forward_calls = 0
    cache_features(adapter, sae, ds, "h", out, opts)
    assert adapter.forward_calls == 3  # images 32..49 only
    assert_same_file(tmp_path / "straight.h5", out)
    other = Options(**{**OPTS, "n_top": 7})
    with pytest.raises(Exception, match="other settings"):
        cache_features(adapter, sae, ds, "h", out, other)


def test_tiny_llava_maps_match_the_adapter(tmp_path):
    """With a real (tiny, random) LLaVA: the cached map of a latent on an image equals that latent's
    activations recomputed with one forward pass of that image alone."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
    from tiny import build_llava

    from lmmsae.models.llava import LlavaAdapter

    path = build_llava(tmp_path / "llava", image_size=32, patch=8)
    adapter = LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)))
    hookpoint = adapter.resolve_hookpoints(["layers.1"])[0]
    sae = ReluSAE(d_in=adapter.d_model(hookpoint), n_latents=24, bias=0.0)
    ds = RandomImages(RandomImages.Options(n=12, size=32))
    store = FeatureStore(cache_features(adapter, sae, ds, hookpoint, tmp_path / "f.h5",
                                        Options(n_top=4, n_random=2, n_negatives=2, batch_size=5)))
    assert store.layout.views == ((4, 4),)
    for latent in (0, 5, 11):
        for ex in store.record(latent, n=4, dedupe=False, render=None).examples:
            sample = ds.sample(ex.sample_index)
            batch = adapter.prepare([sample])
            acts = adapter.forward(batch, [hookpoint])[hookpoint][0]
            z = sae.encode(acts).detach().numpy()[:, latent]
            direct = batch.token_map.view_map(0, z, view=0)
            np.testing.assert_allclose(ex.activation_map, direct, atol=2e-3, rtol=2e-3)
            assert ex.activation == pytest.approx(direct.mean(), rel=1e-4, abs=1e-6)


def _context(tmp_path, name, **cache_opts):
    sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
    from tiny import build_llava

    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.rundir import RunDir

    llava = tmp_path / "llava"
    if not llava.exists():
        build_llava(llava, image_size=32, patch=8)
    overrides = [("model", {"name": "llava", "checkpoint": str(llava)}),
                 ("dataset", {"name": "shapes", "n": 20, "image_size": 32}), ("hookpoints", ["layers.1"]),
                 *((f"cache.{k}", v) for k, v in {"n_top": 4, "n_random": 2, "n_negatives": 2, "batch_size": 8,
                                                   **cache_opts}.items())]
    return RunContext(resolve(overrides=overrides), RunDir.create(tmp_path, name))


def _save_sae(ctx, hookpoint):
    from lmmsae.saes.io import sae_class, save_sae

    cls = sae_class("relu")
    torch.manual_seed(0)
    sae = cls(32, cls.Options(n_latents=16))
    save_sae(sae, ctx.run.file(f"sae/{hookpoint}"))
    ctx.adopt("sae")


def test_stage_runs_skips_when_complete_and_merges_shards_started_by_hand(tmp_path):
    from lmmsae import artifacts
    from lmmsae.stages import cache as stage

    hookpoint = "model.language_model.layers.1"
    ctx = _context(tmp_path, "one")
    _save_sae(ctx, hookpoint)
    stage.run(ctx)
    assert ctx.run.is_complete(artifacts.FEATURES)
    with FeatureStore(ctx.run.file(artifacts.FEATURES)) as store:
        assert store.hookpoint == hookpoint and store.n_images == 20 and store.latents == list(range(16))
        assert store.attrs["model"]["adapter"] == "llava" and store.attrs["sae"]["cfg"]["architecture"] == "relu"
        assert store.attrs["dataset"]["name"] == "shapes" and store.attrs["complete"]
    before = ctx.run.file(artifacts.FEATURES).stat().st_mtime_ns
    stage.run(ctx)
    assert ctx.run.file(artifacts.FEATURES).stat().st_mtime_ns == before

    shard_ctx = _context(tmp_path, "sharded", shard_index=1, n_shards=2)
    _save_sae(shard_ctx, hookpoint)
    for rank in (1, 0):  # the last shard to finish merges
        shard_ctx.config.stages["cache"]["shard_index"] = rank
        stage.run(shard_ctx)
        assert shard_ctx.run.is_complete(artifacts.FEATURES) == (rank == 0)
    assert_same_file(ctx.run.file(artifacts.FEATURES), shard_ctx.run.file(artifacts.FEATURES), rtol=1e-5)


def test_an_sae_of_another_width_is_one_line_before_any_work(tmp_path):
    adapter, _, ds, opts = setup(n=8)
    with pytest.raises(UserError, match=r"SAE for 'h' has d_in=16 but the hookpoint has width 8") as err:
        cache_features(adapter, ReluSAE(d_in=16, n_latents=40), ds, "h", tmp_path / "f.h5", opts)
    assert "\n" not in str(err.value) and adapter.forward_calls == 0 and not (tmp_path / "f.h5").exists()


def test_latents_beyond_the_sae_fail_before_the_first_stage(tmp_path):
    """The SAE's width is known from the config (or sae_path's cfg.json): `lmmsae run` refuses
    cache.latents beyond it at once, not after collect and train."""
    import json

    from click.testing import CliRunner

    from lmmsae.cli import cli

    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "runs"), "--name", "r",
                                      "-o", "sae.n_latents=64", "-o", "cache.latents=0:100"])
    assert result.exit_code == 1 and "latent 64 is out of range: the SAE has 64 latents" in result.output
    assert not (tmp_path / "runs" / "r").exists()
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 128, "n_latents": 32}))
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "runs"), "--name", "r",
                                      "-o", f"cache.sae_path={sae}", "-o", "cache.latents=40"])
    assert result.exit_code == 1 and "latent 40 is out of range: the SAE has 32 latents" in result.output
