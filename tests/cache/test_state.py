import numpy as np
import pytest
import torch

from lmmsae.cache.layout import MapLayout, ViewGeometry
from lmmsae.cache.state import NEGATIVE_SEED_OFFSET, FeatureCache, ImageBatch, SampleInfo
from lmmsae.cache.tracker import random_keys

L, N_IMAGES = 12, 90


def world(seed=0):
    """Images with a base view (3x3, or 2x2 for every 4th image) and, for some, a 1x2 tile view."""
    g = torch.Generator().manual_seed(seed)
    samples, maps = [], []
    for i in range(N_IMAGES):
        rows = 2 if i % 4 == 3 else 3
        views = [ViewGeometry(rows, rows, (0, 0, 30, 30))]
        if i % 5 == 0:
            views.append(ViewGeometry(1, 2, (0, 0, 30, 30)))
        m = torch.zeros(9 + 2, L)  # layout [(3,3), (1,2)]
        dense = torch.rand(rows * rows, L, generator=g)
        dense[dense < 0.85] = 0
        m[torch.as_tensor(MapLayout(((3, 3),)).cells(np.zeros(rows * rows, int), *np.divmod(np.arange(rows * rows), rows)))] = dense
        if len(views) > 1:
            tile = torch.rand(2, L, generator=g)
            tile[tile < 0.5] = 0
            m[9:] = tile
        samples.append(SampleInfo(i, f"s{i}", i, views))
        maps.append(m)
    return samples, torch.stack(maps)


def pooled(samples, maps, pooling):
    if pooling == "max":
        return maps.amax(1)
    if pooling == "base_mean":
        return maps[:, :9].sum(1) / torch.tensor([s.views[0].rows * s.views[0].cols for s in samples])[:, None]
    return maps.sum(1) / torch.tensor([sum(v.rows * v.cols for v in s.views) for s in samples])[:, None]


def run(samples, maps, batch=8, pooling="base_mean", latents=range(L), order=None, **kw):
    cache = FeatureCache(list(latents), pooling=pooling, **{"n_top": 5, "n_random": 4, "n_negatives": 3, **kw})
    order = list(range(len(samples))) if order is None else order
    for a in range(0, len(order), batch):
        idx = order[a:a + batch]
        batch_samples = [samples[i] for i in idx]
        layout = MapLayout.of(s.views for s in batch_samples)  # the batch's own (maybe smaller) layout
        sub = maps[idx][:, torch.as_tensor(layout.remap_index(MapLayout(((3, 3), (1, 2)))))]
        cache.add(ImageBatch(batch_samples, sub[:, :, list(latents)], layout))
    return cache


@pytest.mark.parametrize("pooling", ["base_mean", "max", "mean"])
def test_top_n_and_maps_equal_brute_force(pooling):
    samples, maps = world()
    cache = run(samples, maps, pooling=pooling)
    score = pooled(samples, maps, pooling)
    assert cache.layout == MapLayout(((3, 3), (1, 2)))
    for l in range(L):
        col = score[:, l].tolist()
        expect = sorted((i for i in range(N_IMAGES) if col[i] > 0), key=lambda i: (-col[i], i))[:5]
        got = cache.top.index[l][: len(expect)].tolist()
        assert got == expect
        assert torch.allclose(cache.top.score[l][: len(expect)], score[expect, l])
        assert torch.equal(cache.top.sorted_payload("maps")[l][: len(expect)], maps[expect, :, l].half())


def test_random_sample_and_negatives_are_the_smallest_keys():
    samples, maps = world()
    cache = run(samples, maps)
    score = pooled(samples, maps, "base_mean")
    image_max = maps.amax(1)
    keys = random_keys(0, torch.arange(N_IMAGES), torch.arange(L))
    nkeys = random_keys(NEGATIVE_SEED_OFFSET, torch.arange(N_IMAGES), torch.arange(L))
    for l in range(L):
        active = [i for i in range(N_IMAGES) if score[i, l] > 0]
        expect = sorted(active, key=lambda i: keys[l, i].item())[:4]
        assert cache.random.index[l].tolist() == expect
        assert torch.allclose(cache.random.sorted_payload("value")[l], score[expect, l])
        assert torch.equal(cache.random.sorted_payload("maps")[l], maps[expect, :, l].half())
        silent = [i for i in range(N_IMAGES) if image_max[i, l] == 0]
        assert cache.negatives.index[l].tolist() == sorted(silent, key=lambda i: nkeys[l, i].item())[:3]
        assert cache.stats.values["images_active"][l].item() == int((image_max[:, l] > 0).sum())
        assert cache.stats.values["score_sum"][l].item() == pytest.approx(score[:, l].double().sum().item())


def test_order_and_batching_do_not_change_the_result_and_subsets_are_columns():
    samples, maps = world(seed=2)
    a = run(samples, maps, batch=7)
    b = run(samples, maps, batch=30, order=list(np.random.default_rng(0).permutation(N_IMAGES)))
    growing = sorted(range(N_IMAGES), key=lambda i: (i % 5 == 0, i % 4 != 3))  # small grids first, tiles last
    c = run(samples, maps, batch=8, order=growing)
    assert c.layout == a.layout
    for other in (b, c):
        for x, y in ((a.top, other.top), (a.random, other.random), (a.negatives, other.negatives)):
            assert torch.equal(x.index, y.index)
        assert torch.equal(a.top.sorted_payload("maps"), other.top.sorted_payload("maps"))
        assert torch.equal(a.random.sorted_payload("maps"), other.random.sorted_payload("maps"))
    sub = run(samples, maps, latents=[3, 7])
    assert torch.equal(sub.top.index, a.top.index[[3, 7]])
    assert torch.equal(sub.random.index, a.random.index[[3, 7]])  # keys depend on the latent id


def test_token_statistics_by_kind():
    cache = FeatureCache([0, 1], n_top=2, n_random=0, n_negatives=0)
    maps = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [3.0, 1.0]]])  # one image, 3 image tokens
    text = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    info = SampleInfo(0, "a", 1, [ViewGeometry(1, 3, (0, 0, 3, 1))])
    cache.add(ImageBatch([info], maps, MapLayout(((1, 3),)), torch.tensor([0, 0]), text))
    v = cache.stats.values
    assert v["tokens_active"][:, 1].tolist() == [2, 1] and v["tokens_active"][:, 0].tolist() == [1, 1]
    assert v["token_max"][:, 1].tolist() == [3.0, 1.0]
    assert cache.stats.tokens_total.tolist() == [2, 3, 0, 0, 0]
    assert cache.top.score[:, 0].tolist() == pytest.approx([5 / 3, 1 / 3])
