"""Which cached examples an explainer or scorer sees: top-k, stratified by activation, random activating,
and negatives (random, or the most similar by an embedding), never showing the same image twice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lmmsae.errors import UserError

SELECTIONS = ("top", "stratified", "random")
NEGATIVES = ("random", "similar")


@dataclass
class Pool:
    """A latent's activating examples: the top-n union the uniform sample, by (score desc, index asc)."""

    index: np.ndarray
    score: np.ndarray
    maps: np.ndarray
    hash: np.ndarray
    from_random: np.ndarray  # bool: in the uniform sample of activating images

    @classmethod
    def union(cls, top: dict, rnd: dict, hash_of: Callable[[int], int]) -> "Pool":
        index = np.concatenate([top["index"], rnd["index"]])
        _, first = np.unique(index, return_index=True)
        from_random = np.isin(index[first], rnd["index"])
        index, score = index[first], np.concatenate([top["score"], rnd["score"]])[first]
        maps = np.concatenate([top["maps"], rnd["maps"]])[first]
        order = np.lexsort((index, -score))
        index, score, maps, from_random = index[order], score[order], maps[order], from_random[order]
        return cls(index, score, maps, np.array([hash_of(int(i)) for i in index], dtype=np.int64), from_random)

    def __len__(self) -> int:
        return len(self.index)


def _take(order, keys: np.ndarray, n: int, seen: set) -> list[int]:
    out = []
    for i in order:
        if len(out) >= n:
            break
        if keys[i] in seen:
            continue
        seen.add(keys[i])
        out.append(int(i))
    return out


def choose(selection: str, pool: Pool, n: int, rng: np.random.Generator, seen: set, dedupe: bool = True) -> list[int]:
    """Positions in `pool` of `n` examples (fewer if the pool runs out); `seen` (hashes, or sample indices
    without `dedupe`) is updated so later calls never repeat an image."""
    if n <= 0 or not len(pool):
        return []
    keys = pool.hash if dedupe else pool.index
    if selection == "top":
        return _take(range(len(pool)), keys, n, seen)
    if selection == "random":
        sample = np.nonzero(pool.from_random)[0]
        rest = np.nonzero(~pool.from_random)[0]
        out = _take(rng.permutation(sample), keys, n, seen)
        return out + _take(rng.permutation(rest), keys, n - len(out), seen)
    if selection == "stratified":
        sample = np.nonzero(pool.from_random)[0]
        source = sample if len(sample) >= n else np.arange(len(pool))  # already by score, descending
        out = []
        for stratum in np.array_split(source, min(n, len(source))):
            out += _take(rng.permutation(stratum), keys, 1, seen)
        left = np.setdiff1d(np.arange(len(pool)), out)
        return out + _take(rng.permutation(left), keys, n - len(out), seen)
    raise UserError(f"unknown selection {selection!r}: use one of {', '.join(SELECTIONS)}")


def negatives(candidates: np.ndarray, n: int, rng: np.random.Generator, how: str = "random", dataset=None,
              embed: Callable | None = None, example_images: list | None = None,
              hash_of: Callable[[int], int] | None = None, seen: set | None = None) -> list[int]:
    """Sample indices of `n` images where the latent does not fire, from `candidates` (sample indices).

    "similar" ranks candidates by cosine similarity of `embed(images)` to the mean embedding of
    `example_images` (hard negatives); it needs the dataset and an embedder."""
    if how not in NEGATIVES:
        raise UserError(f"unknown negatives {how!r}: use one of {', '.join(NEGATIVES)}")
    seen = set() if seen is None else seen
    candidates = np.asarray(candidates)
    keys = np.array([hash_of(int(i)) for i in candidates]) if hash_of else candidates
    if how == "random" or not len(candidates):
        return [int(candidates[i]) for i in _take(rng.permutation(len(candidates)), keys, n, seen)]
    if dataset is None or embed is None:
        raise UserError("negatives='similar' needs a dataset and an embed function (e.g. a CLIP image encoder)")
    images = [dataset.sample(int(i)).image for i in candidates]
    shown = [im for im in (example_images or []) if im is not None]
    if not shown:
        return [int(candidates[i]) for i in _take(rng.permutation(len(candidates)), keys, n, seen)]
    cand = _unit(np.asarray(embed(images), dtype=np.float64))
    ref = _unit(np.asarray(embed(shown), dtype=np.float64).mean(axis=0, keepdims=True))
    order = np.argsort(-(cand @ ref.T)[:, 0], kind="stable")
    return [int(candidates[i]) for i in _take(order, keys, n, seen)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
