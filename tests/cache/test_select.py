import numpy as np
import pytest

from lmmsae.cache.select import Pool, choose, negatives
from lmmsae.errors import UserError


def pool():
    top = {"index": np.array([10, 11, 12, 13, 14]), "score": np.array([9.0, 8, 8, 7, 6]), "maps": np.zeros((5, 4))}
    rnd = {"index": np.array([12, 30, 31, 32, 33, 34, 35, 36]), "score": np.array([8.0, 5, 4, 3, 2, 1.5, 1, 0.5]),
           "maps": np.ones((8, 4))}
    hashes = {11: 10}  # sample 11 is the same image as sample 10
    return Pool.union(top, rnd, lambda i: hashes.get(i, i))


def test_pool_union_is_unique_and_ordered():
    p = pool()
    assert p.index.tolist() == [10, 11, 12, 13, 14, 30, 31, 32, 33, 34, 35, 36]
    assert p.from_random.tolist() == [False, False, True, False, False] + [True] * 7
    assert p.maps[2].tolist() == [0, 0, 0, 0]  # the top entry's copy wins


def test_top_deduplicates_and_never_repeats():
    p, seen, rng = pool(), set(), np.random.default_rng(0)
    shown = choose("top", p, 3, rng, seen)
    assert p.index[shown].tolist() == [10, 12, 13]  # 11 is a duplicate image of 10
    held = choose("top", p, 2, rng, seen)
    assert p.index[held].tolist() == [14, 30]
    assert p.index[choose("top", p, 2, rng, set(), dedupe=False)].tolist() == [10, 11]


def test_random_and_stratified():
    p = pool()
    rnd = choose("random", p, 4, np.random.default_rng(1), set())
    assert len(set(rnd)) == 4 and all(p.from_random[i] for i in rnd)
    strata = choose("stratified", p, 3, np.random.default_rng(2), set())
    scores = p.score[strata]
    # the uniform sample (8, 5, 4 | 3, 2, 1.5 | 1, 0.5) in 3 strata: one from each
    assert scores[0] >= 4 and 1.5 <= scores[1] <= 3 and scores[2] <= 1
    again = choose("stratified", p, 3, np.random.default_rng(2), set())
    assert again == strata


def test_negatives_random_and_similar():
    cands = np.array([100, 101, 102, 103])
    got = negatives(cands, 2, np.random.default_rng(0))
    assert len(set(got)) == 2 and set(got) <= set(cands.tolist())

    class DS:
        def sample(self, i):
            return type("S", (), {"image": i})()

    embed = lambda images: np.array([[1.0, 0.0] if im in (101, "ex") else [0.0, 1.0] for im in images])  # noqa: E731
    assert negatives(cands, 1, np.random.default_rng(0), "similar", DS(), embed, ["ex"]) == [101]
    with pytest.raises(UserError, match="needs a dataset"):
        negatives(cands, 1, np.random.default_rng(0), "similar")
