import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lmmsae.cache.layout import MapLayout, ViewGeometry
from lmmsae.cache.state import FeatureCache, ImageBatch, SampleInfo
from lmmsae.errors import UserError
from lmmsae.stores.features import SCHEMA_VERSION, FeatureStore, load_cache, merge, write_cache

sys.path.insert(0, str(Path(__file__).parents[1] / "cache"))
from fakes import RandomImages  # noqa: E402

L = 10
LAYOUT = MapLayout(((2, 2),))


def batches(n_images=40, batch=6, seed=0, start=0):
    g = torch.Generator().manual_seed(seed)
    for a in range(start, start + n_images, batch):
        idx = list(range(a, min(a + batch, start + n_images)))
        maps = torch.rand(len(idx), 4, L, generator=g)
        maps[maps < 0.7] = 0
        infos = [SampleInfo(i, f"random-{i}", 1000 + i - (i % 10 == 9), [ViewGeometry(2, 2, (0, 0, 32, 32))]) for i in idx]
        yield ImageBatch(infos, maps, LAYOUT)


def build(path, n_images=40, start=0, checkpoint=None, **kw):
    cache = FeatureCache(range(L), n_top=6, n_random=4, n_negatives=3, **kw)
    for i, b in enumerate(batches(n_images, start=start)):
        cache.add(b)
        if checkpoint and i % checkpoint == 0:
            write_cache(cache, path, {"hookpoint": "h"})
    write_cache(cache, path, {"hookpoint": "h", "sample_range": [start, start + n_images], "complete": True})
    return cache


def assert_same_file(a, b, rtol: float | None = None):
    """Same datasets and values: exact, float64 sums to 1e-12; with `rtol`, every float to it (for
    files made by model forwards in other batch splits, which BLAS may round differently)."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        names = []
        fa.visit(lambda n: names.append(n) if isinstance(fa[n], h5py.Dataset) else None)
        other = []
        fb.visit(lambda n: other.append(n) if isinstance(fb[n], h5py.Dataset) else None)
        assert sorted(names) == sorted(other)
        for n in names:
            x, y = fa[n][...], fb[n][...]
            if rtol is not None and x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7, err_msg=n)
            elif x.dtype == np.float64:
                np.testing.assert_allclose(x, y, rtol=1e-12, err_msg=n)
            else:
                assert np.array_equal(x, y), n
        for key in ("n_images", "layout", "pooling", "n_top", "hookpoint"):
            assert fa.attrs[key] == fb.attrs[key], key


def test_write_load_roundtrip_and_checkpoints_keep_all_samples(tmp_path):
    path = tmp_path / "f.h5"
    cache = build(path, checkpoint=2)
    loaded, attrs = load_cache(path)
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["hookpoint"] == "h" and attrs["n_images"] == 40
    assert torch.equal(loaded.top.index, cache.top.index) and torch.equal(loaded.top.score, cache.top.score)
    assert torch.equal(loaded.top.sorted_payload("maps"), cache.top.sorted_payload("maps"))
    assert torch.equal(loaded.random.score, cache.random.score)
    for k, v in cache.stats.values.items():
        assert torch.equal(loaded.stats.values[k], v)
    with h5py.File(path, "r") as f:
        assert f["samples/index"][...].tolist() == list(range(40))
        assert f["samples/id"].asstr()[3] == "random-3"
        assert f["top/maps"].chunks[1:] == (6, 4)  # chunks hold whole latents


def test_merge_of_shards_equals_one_file(tmp_path):
    build(tmp_path / "one.h5", n_images=40)
    # shards of 18 and 22 images: the batches of a shard differ from the single run's
    parts = []
    for name, start, n in (("b.h5", 18, 22), ("a.h5", 0, 18)):
        cache = FeatureCache(range(L), n_top=6, n_random=4, n_negatives=3)
        full = list(batches(40))
        for b in full:
            keep = [i for i, s in enumerate(b.samples) if start <= s.index < start + n]
            if keep:
                cache.add(ImageBatch([b.samples[i] for i in keep], b.maps[keep], LAYOUT))
        write_cache(cache, tmp_path / name, {"hookpoint": "h", "sample_range": [start, start + n], "complete": True})
        parts.append(tmp_path / name)
    merge(parts, tmp_path / "merged.h5")
    assert_same_file(tmp_path / "one.h5", tmp_path / "merged.h5")
    with pytest.raises(UserError, match="share samples"):
        merge([parts[0], parts[0]], tmp_path / "bad.h5")


def test_store_records_stats_and_alive(tmp_path):
    path = tmp_path / "f.h5"
    cache = build(path, n_images=40)
    ds = RandomImages(RandomImages.Options(n=40))
    store = FeatureStore(path)
    assert store.latents == list(range(L)) and store.hookpoint == "h" and store.n_images == 40
    rec = store.record(3, n=3, dataset=ds, n_negatives=2, held_out=2)
    top = cache.top.index[3].tolist()
    shown = [e.sample_index for e in rec.examples]
    # duplicates (every 10th sample repeats the image before it) are skipped
    expect = []
    for i in top:
        if not any(j == i - 1 and i % 10 == 9 for j in expect):
            expect.append(i)
    assert shown == expect[:3]
    assert [e.sample_index for e in rec.held_out] == expect[3:5]
    ex = rec.examples[0]
    assert ex.activation == pytest.approx(cache.top.score[3, 0].item())
    direct = cache.top.sorted_payload("maps")[3, 0].float().numpy().reshape(2, 2)
    assert np.array_equal(ex.activation_map, direct) and np.array_equal(ex.views["0"], direct)
    assert ex.image.size == (32, 32) and ex.rendered.size == (32, 32) and ex.truth == {"source": ex.sample_index}
    assert len(rec.negatives) == 2 and all(n.activation == 0 and not n.activation_map.any() for n in rec.negatives)
    assert set(n.sample_index for n in rec.negatives) <= set(cache.negatives.index[3].tolist())
    assert rec.stats["images_active"] == int(cache.stats.values["images_active"][3])
    assert rec.stats["frequency_images"] == pytest.approx(rec.stats["images_active"] / 40)
    assert rec.stats["max"] == pytest.approx(cache.top.score[3, 0].item())
    active = cache.stats.values["images_active"]
    assert store.alive_latents(min_images=12) == [i for i in range(L) if active[i] >= 12]
    no_data = store.record(3, n=2, selection="random")
    assert no_data.examples[0].image is None and no_data.examples[0].rendered is None
    with pytest.raises(UserError, match="not in"):
        store.record(99)


def test_store_rejects_other_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.attrs["format"] = "something"
    with pytest.raises(UserError, match="not an lmmsae features file"):
        FeatureStore(tmp_path / "x.h5")
    with pytest.raises(UserError, match="does not exist"):
        FeatureStore(tmp_path / "missing.h5")


def test_checkpoints_append_samples_and_never_rewrite_them(tmp_path, monkeypatch):
    """Each checkpoint writes only its new images to the samples table (rows n0..n0+k)."""
    written = []
    original = h5py.Dataset.__setitem__

    def spy(self, key, value):
        if self.name.startswith("/samples/"):
            written.append((self.name, key[0] if isinstance(key, tuple) else key))
        return original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", spy)
    build(tmp_path / "f.h5", n_images=40, checkpoint=1)
    index_writes = [k for name, k in written if name == "/samples/index"]
    assert [(k.start, k.stop) for k in index_writes] == [(a, min(a + 6, 40)) for a in range(0, 40, 6)]
    with FeatureStore(tmp_path / "f.h5") as store:
        assert store._sample_index.tolist() == list(range(40))


def test_a_kill_mid_checkpoint_keeps_the_last_checkpoint_or_replays_the_committed_one(tmp_path, monkeypatch):
    from lmmsae.stores import features

    want = tmp_path / "whole.h5"
    build(want, n_images=40)
    path = tmp_path / "f.h5"
    cache = FeatureCache(range(L), n_top=6, n_random=4, n_negatives=3)
    all_batches = list(batches(40))
    for b in all_batches[:3]:
        cache.add(b)
    write_cache(cache, path, {"hookpoint": "h"})
    for b in all_batches[3:]:
        cache.add(b)
    # killed after the journal was committed, before it was copied: readers refuse, a writer replays it
    monkeypatch.setattr(features.FeatureWriter, "_apply", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_cache(cache, path, {"hookpoint": "h", "sample_range": [0, 40], "complete": True})
    monkeypatch.undo()
    with pytest.raises(UserError, match="mid-checkpoint"):
        FeatureStore(path)
    features.FeatureWriter(path).close()
    loaded, attrs = load_cache(path)
    assert attrs["n_images"] == 40 and attrs["n_samples"] == 40
    with h5py.File(path, "a") as f:
        del f["journal"]
    assert_same_file(want, path)


def test_a_kill_before_the_commit_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "f.h5"
    cache = FeatureCache(range(L), n_top=6, n_random=4, n_negatives=3)
    all_batches = list(batches(40))
    for b in all_batches[:3]:
        cache.add(b)
    write_cache(cache, path, {"hookpoint": "h"})
    before, _ = load_cache(path)
    for b in all_batches[3:]:
        cache.add(b)
    original = h5py.File.flush
    monkeypatch.setattr(h5py.File, "flush", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_cache(cache, path, {"hookpoint": "h"})
    monkeypatch.setattr(h5py.File, "flush", original)
    loaded, attrs = load_cache(path)
    assert attrs["n_images"] == 18 and torch.equal(loaded.top.index, before.top.index)
    with FeatureStore(path) as store:
        assert store._sample_index.tolist() == list(range(18))


def test_truncated_or_garbage_features_file_is_one_line(tmp_path):
    build(tmp_path / "f.h5")
    data = (tmp_path / "f.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.h5").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("cut.h5", "junk.h5"):
        with pytest.raises(UserError, match="not a readable HDF5 file") as err:
            FeatureStore(tmp_path / name)
        assert "\n" not in str(err.value)
        with pytest.raises(UserError, match="not a readable HDF5 file"):
            load_cache(tmp_path / name)


def test_a_features_file_of_another_sae_is_refused(tmp_path):
    """A features.h5 cached with a 128-latent SAE, copied into a run whose SAE has 256 latents."""
    from lmmsae.saes.topk import TopKSAE
    from lmmsae.stores.identity import check_identity, sae_identity

    small = TopKSAE(16, TopKSAE.Options(n_latents=128, k=4))
    big = TopKSAE(16, TopKSAE.Options(n_latents=256, k=4))
    cache = FeatureCache(range(L), n_top=6, n_random=4, n_negatives=3)
    for b in batches(12):
        cache.add(b)
    write_cache(cache, tmp_path / "f.h5", {"hookpoint": "h", "model": {"checkpoint": "toy"},
                                           "sae": {"path": "/elsewhere/sae", "cfg": small.cfg}})
    with FeatureStore(tmp_path / "f.h5") as store:
        found = store.identity()
        check_identity({"hookpoint": "h", "sae": sae_identity(small)}, found, store.path)  # its own SAE: fine
        with pytest.raises(UserError, match=r"sae\.cfg\.n_latents: file has 128, this run has 256") as err:
            check_identity({"hookpoint": "h", "sae": sae_identity(big)}, found, store.path)
        assert str(tmp_path / "f.h5") in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(UserError, match="hookpoint: file has \"h\", this run has \"other\""):
            check_identity({"hookpoint": "other"}, found, store.path)
