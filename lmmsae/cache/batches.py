"""From a model batch to what the cache consumes: SAE latents on every token, and per-image maps
placed by the token map's geometry (kind, view, row, col, box)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from lmmsae.cache.layout import MapLayout, ViewGeometry
from lmmsae.cache.state import SampleInfo, SparseBatch
from lmmsae.models.base import TokenKind
from lmmsae.saes.sparse import Scratch



CHUNK = 128  # tokens per encoder matmul: the [chunk, n_latents] pre-activations stay in cache
_PRE = Scratch()  # their buffer, reused across chunks and batches (8 MB at 16k latents)


def image_hash(image: Any) -> int:
    """A content hash (int64) of a PIL image, to show identical images only once."""
    if image is None:
        return 0
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{image.mode}{image.size}".encode())
    h.update(image.tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def encode_tokens(acts: torch.Tensor, token_map, sae, latents: torch.Tensor | None = None,
                  chunk: int = CHUNK) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive latent activations of every non-padding token, sparse.

    Returns (positions [T, 2] = (batch row, seq position) of the tokens, and entries `token` [E],
    `latent` [E] (column among `latents`, or the latent id when all are kept), `value` [E]), from the
    SAE's `encode_sparse` (TopK never builds the dense [T, n_latents] codes)."""
    pos = np.argwhere(np.asarray(token_map.kind) != TokenKind.PADDING)
    x = acts[torch.as_tensor(pos[:, 0], device=acts.device), torch.as_tensor(pos[:, 1], device=acts.device)]
    column = None
    if latents is not None:
        column = torch.full((sae.n_latents,), -1, dtype=torch.int64, device=acts.device)
        column[latents.to(acts.device)] = torch.arange(len(latents), device=acts.device)
    tokens, cols, values = [], [], []
    for a in range(0, x.shape[0], chunk):
        codes = sae.encode_sparse(x[a:a + chunk], scratch=_PRE)
        n, k = codes.indices.shape
        token = torch.arange(n, device=x.device).repeat_interleave(k)
        latent, value = codes.indices.reshape(-1), codes.values.reshape(-1)
        keep = value > 0
        if column is not None:
            latent = column[latent]
            keep &= latent >= 0
        tokens.append(token[keep] + a)
        cols.append(latent[keep])
        values.append(value[keep].float())
    empty = torch.zeros(0, dtype=torch.int64, device=acts.device)
    cat = lambda parts, e: torch.cat(parts) if parts else e  # noqa: E731
    return pos, cat(tokens, empty), cat(cols, empty), cat(values, empty.float())


def geometry(token_map, b: int, image_size: tuple[int, int] | None) -> list[ViewGeometry]:
    """Views of sample b's (first) image: grids from the token map, boxes spanned by their tokens."""
    kind, image, view = (np.asarray(a)[b] for a in (token_map.kind, token_map.image, token_map.view))
    row, col, box = np.asarray(token_map.row)[b], np.asarray(token_map.col)[b], np.asarray(token_map.box)[b]
    sel = (kind == TokenKind.IMAGE) & (image <= 0) & (view >= 0) & (row >= 0)
    grids = list(token_map.grids[b]) if getattr(token_map, "grids", None) and len(token_map.grids) > b else []
    n_views = max(len(grids), int(view[sel].max()) + 1 if sel.any() else 0)
    out = []
    for v in range(n_views):
        mine = sel & (view == v)
        if v < len(grids):
            rows, cols = int(grids[v][0]), int(grids[v][1])
        else:
            rows = int(row[mine].max()) + 1 if mine.any() else 0
            cols = int(col[mine].max()) + 1 if mine.any() else 0
        b_ = box[mine]
        if mine.any() and (b_ >= 0).all():
            extent = (float(b_[:, 0].min()), float(b_[:, 1].min()), float(b_[:, 2].max()), float(b_[:, 3].max()))
        else:
            w, h = image_size or (0, 0)
            extent = (0.0, 0.0, float(w), float(h))
        out.append(ViewGeometry(rows, cols, extent))
    return out


def image_batch(indices: list[int], samples: list, token_map, pos: np.ndarray, token: torch.Tensor,
                latent: torch.Tensor, value: torch.Tensor) -> SparseBatch:
    """The cache's view of one encoded batch (`pos` and entries from `encode_tokens`)."""
    infos = []
    sizes = getattr(token_map, "image_sizes", None)
    for b, (index, sample) in enumerate(zip(indices, samples)):
        image = getattr(sample, "image", None)
        size = tuple(image.size) if image is not None else None
        if sizes and len(sizes) > b and sizes[b]:
            size = tuple(sizes[b])
        infos.append(SampleInfo(int(index), str(sample.id), image_hash(image), geometry(token_map, b, size)))
    layout = MapLayout.of(info.views for info in infos)
    at = lambda a: np.asarray(a)[pos[:, 0], pos[:, 1]]  # noqa: E731
    kind, image, view, row, col = (at(a) for a in (token_map.kind, token_map.image, token_map.view,
                                                   token_map.row, token_map.col))
    on_map = (kind == TokenKind.IMAGE) & (image <= 0) & (view >= 0) & (row >= 0) & (col >= 0)
    cell = np.full(len(kind), -1, dtype=np.int64)
    cell[on_map] = layout.cells(view[on_map], row[on_map], col[on_map])
    owner = np.where(on_map, pos[:, 0], -1)
    device = value.device
    t = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
    return SparseBatch(infos, layout, t(kind), t(owner), t(cell), token, latent, value)
