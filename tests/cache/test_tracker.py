import torch

from lmmsae.cache.tracker import TopTracker, lexsort_desc, random_keys, random_keys_at

MINUS_INF = float("-inf")


def brute_top(scores: torch.Tensor, n: int) -> list[list[int]]:
    """Per column of scores [images, latents]: indices of the n best positive scores, ties by index."""
    out = []
    for l in range(scores.shape[1]):
        col = scores[:, l].tolist()
        ranked = sorted((i for i, s in enumerate(col) if s > 0), key=lambda i: (-col[i], i))
        out.append(ranked[:n])
    return out


def feed(tracker: TopTracker, scores: torch.Tensor, maps: torch.Tensor, batch: int, order=None) -> None:
    order = torch.arange(scores.shape[0]) if order is None else order
    for a in range(0, len(order), batch):
        idx = order[a:a + batch]
        s, m = scores[idx], maps[idx]
        cand = torch.where(s.T > 0, s.T, torch.tensor(MINUS_INF))
        tracker.update(cand, idx.expand(s.shape[1], -1), lambda r, c: {"maps": m[c, :, r]})


def data(n_images=97, n_latents=23, cells=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n_images, n_latents, generator=g)
    scores[scores < 0.6] = 0
    scores = (scores * 6).round() / 6  # many exact ties
    maps = torch.rand(n_images, cells, n_latents, generator=g)
    return scores, maps


def test_top_n_equals_brute_force_sort_with_ties_and_any_batching():
    scores, maps = data()
    expected = brute_top(scores, 6)
    for batch, order in ((1, None), (10, None), (97, None), (8, torch.randperm(97, generator=torch.Generator().manual_seed(3)))):
        tr = TopTracker(23, 6, {"maps": ((5,), torch.float16)})
        feed(tr, scores, maps, batch, order)
        for l in range(23):
            got = tr.index[l][tr.index[l] >= 0].tolist()
            assert got == expected[l], (batch, l)
            assert torch.equal(tr.score[l][: len(got)], scores[got, l])
            kept = tr.sorted_payload("maps")[l][: len(got)]
            assert torch.equal(kept, maps[got, :, l].half())
        assert (tr.score[tr.index < 0] == MINUS_INF).all()


def test_absorb_of_two_halves_equals_one_pass():
    scores, maps = data(seed=1)
    whole = TopTracker(23, 4, {"maps": ((5,), torch.float16)})
    feed(whole, scores, maps, 16)
    a, b = (TopTracker(23, 4, {"maps": ((5,), torch.float16)}) for _ in range(2))
    feed(a, scores, maps, 16, torch.arange(0, 50))
    feed(b, scores, maps, 16, torch.arange(50, 97))
    a.absorb(b)
    assert torch.equal(a.index, whole.index) and torch.equal(a.score, whole.score)
    assert torch.equal(a.sorted_payload("maps"), whole.sorted_payload("maps"))


def test_lexsort_orders_by_score_then_index():
    s = torch.tensor([[1.0, 2.0, 2.0, 0.5]])
    i = torch.tensor([[0, 9, 3, 1]])
    assert lexsort_desc(s, i).tolist() == [[2, 1, 0, 3]]


def test_random_keys_are_deterministic_uniform_and_distinct_per_latent():
    k = random_keys(7, torch.arange(4000), torch.arange(3))
    assert torch.equal(k, random_keys(7, torch.arange(4000), torch.arange(3)))
    assert torch.equal(k[:, 100:200], random_keys(7, torch.arange(100, 200), torch.arange(3)))
    assert not torch.equal(k, random_keys(8, torch.arange(4000), torch.arange(3)))
    assert ((k >= 0) & (k < 1)).all()
    assert abs(k.mean().item() - 0.5) < 0.02
    assert (k[0] < 0.25).float().mean().item() == __import__("pytest").approx(0.25, abs=0.03)
    assert not torch.equal(k[0], k[1])


def test_random_keys_at_equals_the_matching_entries_of_random_keys():
    samples, latents = torch.arange(50, 90), torch.arange(0, 3000, 7)
    full = random_keys(11, samples, latents)
    g = torch.Generator().manual_seed(0)
    li, si = torch.randint(0, len(latents), (300,), generator=g), torch.randint(0, len(samples), (300,), generator=g)
    assert torch.equal(random_keys_at(11, samples[si], latents[li]), full[li, si])


def test_lexsort_with_ties_out_of_index_order_equals_two_pass_sort():
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 3, (40, 12), generator=g).double()
    i = torch.randint(0, 5, (40, 12), generator=g)
    by_index = torch.sort(i, dim=1, stable=True).indices
    two_pass = by_index.gather(1, torch.sort(s.gather(1, by_index), dim=1, descending=True, stable=True).indices)
    assert torch.equal(lexsort_desc(s, i), two_pass)
    no_ties = torch.randperm(12, generator=g).double().expand(3, -1)
    assert torch.equal(lexsort_desc(no_ties, torch.zeros(3, 12, dtype=torch.int64)),
                       torch.sort(no_ties, dim=1, descending=True, stable=True).indices)
