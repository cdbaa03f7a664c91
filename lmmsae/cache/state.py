"""The streaming cache of one hookpoint: batches of per-image latent maps in, bounded state out.

Peak memory is latents x (n_top + n_random) x map size (float16) plus one batch; it does not grow with
the number of images. Only a few numbers per image (id, hash, view geometry) wait in memory until the
next checkpoint writes them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from lmmsae.cache.layout import MapLayout, ViewGeometry
from lmmsae.cache.stats import LatentStats
from lmmsae.models.base import TokenKind
from lmmsae.cache.tracker import TopTracker, random_keys, random_keys_at

from lmmsae.cache import POOLINGS  # noqa: E402
NEGATIVE_SEED_OFFSET = 0x5EED


@dataclass
class SampleInfo:
    """What the cache keeps about every image it saw."""

    index: int
    id: str
    hash: int                                  # content hash of the image (int64), for de-duplication
    views: list[ViewGeometry] = field(default_factory=list)


@dataclass
class SparseBatch:
    """One batch as the cache consumes it: the positive latent activations of its tokens, sparse.

    Tokens (arrays [tokens]): `kind` (TokenKind value), `image` (batch row of the image whose map the
    token belongs to, -1 for tokens outside any map) and `cell` (its cell in `layout`, -1 likewise).
    Entries (arrays [entries]): `token`, `latent` (column among the cached latents) and `value` > 0.
    Sparse because SAE codes are: the work per batch grows with tokens x L0, not tokens x latents.
    """

    samples: list[SampleInfo]
    layout: MapLayout
    kind: torch.Tensor
    image: torch.Tensor
    cell: torch.Tensor
    token: torch.Tensor
    latent: torch.Tensor
    value: torch.Tensor


@dataclass
class ImageBatch:
    """A batch given densely: `maps` [images, layout.size, latents] holds each image's latent activations
    on its image tokens (the cells inside its views' grids), placed by `layout`; optional other tokens:
    `token_kinds` [t] (TokenKind values) with their activations `token_acts` [t, latents]."""

    samples: list[SampleInfo]
    maps: torch.Tensor
    layout: MapLayout
    token_kinds: torch.Tensor | None = None
    token_acts: torch.Tensor | None = None

    def sparse(self) -> SparseBatch:
        image, cell = [], []
        for b, info in enumerate(self.samples):
            for v, g in enumerate(info.views):
                r, c = np.divmod(np.arange(g.rows * g.cols), g.cols)
                cell.append(self.layout.cells(np.full(r.size, v), r, c))
                image.append(np.full(r.size, b))
        image = torch.as_tensor(np.concatenate(image) if image else np.zeros(0, int), dtype=torch.int64)
        cell = torch.as_tensor(np.concatenate(cell) if cell else np.zeros(0, int), dtype=torch.int64)
        dense = self.maps[image.to(self.maps.device), cell.to(self.maps.device)].cpu()
        kind = torch.full((len(cell),), int(TokenKind.IMAGE), dtype=torch.int64)
        if self.token_kinds is not None:
            n = len(self.token_kinds)
            dense = torch.cat([dense, self.token_acts.to(dense.dtype).cpu()])
            kind = torch.cat([kind, self.token_kinds.to(torch.int64).cpu()])
            image = torch.cat([image, torch.full((n,), -1, dtype=torch.int64)])
            cell = torch.cat([cell, torch.full((n,), -1, dtype=torch.int64)])
        token, latent = (dense > 0).nonzero(as_tuple=True)
        return SparseBatch(self.samples, self.layout, kind, image, cell, token, latent, dense[token, latent].float())


class FeatureCache:
    """Top-n images by pooled score (with maps), a uniform sample of activating images (with maps),
    a uniform sample of images where the latent never fires, and statistics, for each latent."""

    def __init__(self, latents: Sequence[int], n_top: int = 32, n_random: int = 16, n_negatives: int = 16,
                 pooling: str = "base_mean", seed: int = 0, layout: MapLayout = MapLayout(), device="cpu"):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.latents = torch.as_tensor(list(latents), dtype=torch.int64)
        self.n_top, self.n_random, self.n_negatives = n_top, n_random, n_negatives
        self.pooling, self.seed, self.layout, self.device = pooling, seed, layout, device
        rows, size = len(self.latents), layout.size
        self.top = TopTracker(rows, n_top, {"maps": ((size,), torch.float16)}, device=device)
        self.random = TopTracker(rows, n_random, {"maps": ((size,), torch.float16), "value": ((), torch.float32)},
                                 score_dtype=torch.float64, device=device)
        self.negatives = TopTracker(rows, n_negatives, score_dtype=torch.float64, device=device)
        self.stats = LatentStats(rows, device=device)
        self.pending: list[SampleInfo] = []

    @property
    def n_latents(self) -> int:
        return len(self.latents)

    def grow(self, layout: MapLayout) -> None:
        """Make room for maps of `layout` (kept maps move to their cells in the larger layout)."""
        if self.layout.covers(layout):
            return
        new = self.layout.union(layout)
        index = torch.as_tensor(self.layout.remap_index(new), device=self.device)
        for tracker in (self.top, self.random):
            tracker.remap_payload("maps", index, new.size)
        self.layout = new

    def add(self, batch: SparseBatch | ImageBatch) -> None:
        if isinstance(batch, ImageBatch):
            batch = batch.sparse()
        self.grow(batch.layout)
        device = self.device
        cell = batch.cell.to(device)
        if batch.layout != self.layout:
            remap = torch.as_tensor(batch.layout.remap_index(self.layout), device=device)
            cell = torch.where(cell >= 0, remap[cell.clamp(min=0)], cell)
        token, latent, value = batch.token.to(device), batch.latent.to(device), batch.value.to(device).float()
        positive = value > 0
        token, latent, value = token[positive], latent[positive], value[positive]
        kind = batch.kind.to(device)
        self.stats.add_tokens(kind, token, latent, value)

        B, L = len(batch.samples), self.n_latents
        on_map = batch.image.to(device)[token] >= 0
        token, latent, value = token[on_map], latent[on_map], value[on_map]
        image, cell = batch.image.to(device)[token], cell[token]
        pair = image * L + latent
        image_max = torch.zeros(B * L, device=device).scatter_reduce_(0, pair, value, "amax").view(B, L)
        score = self._pool(pair, cell, value, batch.samples, image_max)
        self.stats.add_images(image_max, score)

        # entries by (latent, image), so any (latent, image) map is one contiguous range
        key = latent * B + image
        key, order = torch.sort(key)
        cell, value = cell[order], value[order]
        maps = lambda r, c: _dense_maps(key, cell, value, r * B + c, self.layout.size)  # noqa: E731
        index = torch.as_tensor([s.index for s in batch.samples], dtype=torch.int64, device=device)
        score_t, active_t = score.T, score.T > 0
        grid = index.expand(L, -1)
        minus_inf = torch.tensor(float("-inf"), device=device)
        self.top.update(torch.where(active_t, score_t, minus_inf), grid, lambda r, c: {"maps": maps(r, c)})
        if self.n_random:  # keys of the active (latent, image) pairs only: few of latents x images
            act_l, act_b = active_t.nonzero(as_tuple=True)
            candidates = torch.full(active_t.shape, float("-inf"), dtype=torch.float64, device=device)
            candidates[act_l, act_b] = -random_keys_at(self.seed, index.cpu()[act_b.cpu()],
                                                       self.latents[act_l.cpu()]).to(device)
            self.random.update(candidates, grid,
                               lambda r, c: {"maps": maps(r, c), "value": score[c, r]})
        if self.n_negatives:
            keys = random_keys(self.seed + NEGATIVE_SEED_OFFSET, index.cpu(), self.latents).to(device)
            self.negatives.update(keys.neg_().masked_fill_(image_max.T > 0, float("-inf")), grid)
        self.pending.extend(batch.samples)

    def _pool(self, pair: torch.Tensor, cell: torch.Tensor, value: torch.Tensor, samples: list[SampleInfo],
              image_max: torch.Tensor) -> torch.Tensor:
        """Per image and latent, the score that ranks images: [images, latents]."""
        if self.pooling == "max":
            return image_max
        if self.pooling == "base_mean":
            rows, cols = self.layout.views[0]
            base = cell < rows * cols
            pair, value = pair[base], value[base]
            counts = [s.views[0].rows * s.views[0].cols for s in samples]
        else:
            counts = [sum(v.rows * v.cols for v in s.views) for s in samples]
        total = torch.zeros(image_max.numel(), dtype=torch.float64, device=value.device)
        total = total.index_add_(0, pair, value.double()).view(image_max.shape)
        counts = torch.as_tensor(counts, dtype=torch.float64, device=value.device).clamp(min=1)
        return (total / counts[:, None]).float()

    def absorb(self, other: "FeatureCache") -> None:
        """Combine another cache of the same latents over other images (another shard)."""
        if not torch.equal(self.latents, other.latents):
            raise ValueError("caches over different latents cannot be merged")
        self.grow(other.layout)
        other.grow(self.layout)
        self.top.absorb(other.top)
        self.random.absorb(other.random)
        self.negatives.absorb(other.negatives)
        self.stats.absorb(other.stats)
        self.pending.extend(other.pending)


def _dense_maps(key: torch.Tensor, cell: torch.Tensor, value: torch.Tensor, want: torch.Tensor,
                size: int) -> torch.Tensor:
    """Dense maps [len(want), size] of the (latent, image) pairs `want`, from entries sorted by `key`."""
    lo = torch.searchsorted(key, want)
    counts = torch.searchsorted(key, want, right=True) - lo
    out = torch.zeros((len(want), size), dtype=value.dtype, device=value.device)
    total = int(counts.sum())
    if total:
        row = torch.repeat_interleave(torch.arange(len(want), device=key.device), counts)
        start = torch.cumsum(counts, 0) - counts
        at = torch.arange(total, device=key.device) - start[row] + lo[row]
        out[row, cell[at]] = value[at]
    return out
