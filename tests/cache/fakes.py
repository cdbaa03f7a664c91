"""Deterministic stand-ins for a model adapter, an SAE and a dataset, for the cache's tests: each
image token's activation is a fixed function of its own patch's pixels, so maps can be recomputed
exactly from the image alone. They subclass the real interfaces, so what the cache asks of them is
what it may ask of any adapter and SAE."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lmmsae.datasets.base import Dataset, Sample
from lmmsae.models.base import Batch, ModelAdapter, TokenKind, TokenMap
from lmmsae.saes.base import SAE

D_MODEL = 8


def patch_features(image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """The fake residual stream of one patch: colour statistics of the pixels in `box`."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    px = arr[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)].reshape(-1, 3)
    r, g, b = px.mean(0) if len(px) else (0.0, 0.0, 0.0)
    return np.array([r, g, b, r - g, g - b, b - r, px.std() if len(px) else 0.0, 1.0], np.float32)


class FakeAdapter(ModelAdapter):
    """Sequence per sample: BOS, the base view's grid x grid patches, optional tiles (view 1, a 2 x cols
    grid over the whole image, cols = 2 for tall or square images and 3 for wide ones), one text token,
    right padding. Every hookpoint gives the same D_MODEL-wide features; there is no language model,
    so logits, interventions and generation are not offered."""

    device = torch.device("cpu")

    def __init__(self, grid: int = 4, tiles: bool = False):
        super().__init__(ModelAdapter.Options(checkpoint="fake"))
        self.grid, self.tiles = grid, tiles
        self.forward_calls = 0

    def identity(self) -> dict:
        return {"adapter": "fake", "grid": self.grid, "tiles": self.tiles}

    @classmethod
    def list_hookpoints(cls, options) -> list[str]:
        return ["h"]

    def resolve_hookpoints(self, patterns):
        return list(patterns)

    def d_model(self, hookpoint: str) -> int:
        return D_MODEL

    def logits(self, batch, grad=False):
        raise NotImplementedError("the fake adapter has no language model")

    def intervene(self, hookpoint, edit, token_kinds=None, prefill_only=False):
        raise NotImplementedError("the fake adapter has no language model")

    def generate(self, batch, max_new_tokens=32, **kwargs):
        raise NotImplementedError("the fake adapter has no language model")

    def _views(self, image: Image.Image) -> list[tuple[int, int, tuple[float, float, float, float]]]:
        w, h = image.size
        views = [(self.grid, self.grid, (0.0, 0.0, float(w), float(h)))]
        if self.tiles:
            views.append((2, 3 if w > h else 2, (0.0, 0.0, float(w), float(h))))
        return views

    def prepare(self, samples, prompt=None) -> Batch:
        seqs = []
        for s in samples:
            toks = [(TokenKind.TEXT, -1, -1, -1, -1, (-1.0,) * 4, np.zeros(D_MODEL, np.float32))]
            for v, (rows, cols, (x0, y0, x1, y1)) in enumerate(self._views(s.image)):
                for r in range(rows):
                    for c in range(cols):
                        box = (x0 + (x1 - x0) * c / cols, y0 + (y1 - y0) * r / rows,
                               x0 + (x1 - x0) * (c + 1) / cols, y0 + (y1 - y0) * (r + 1) / rows)
                        toks.append((TokenKind.IMAGE, 0, v, r, c, box, patch_features(s.image, box)))
            toks.append((TokenKind.TEXT, -1, -1, -1, -1, (-1.0,) * 4, np.full(D_MODEL, 0.5, np.float32)))
            seqs.append(toks)
        B, S = len(seqs), max(len(t) for t in seqs)
        kind = np.full((B, S), int(TokenKind.PADDING), np.int64)
        image, view, row, col = (np.full((B, S), -1, np.int64) for _ in range(4))
        box = np.full((B, S, 4), -1.0, np.float32)
        feats = np.zeros((B, S, D_MODEL), np.float32)
        for b, toks in enumerate(seqs):
            for p, (k, im, v, r, c, bx, f) in enumerate(toks):
                kind[b, p], image[b, p], view[b, p], row[b, p], col[b, p] = int(k), im, v, r, c
                box[b, p], feats[b, p] = bx, f
        grids = [[(r, c) for r, c, _ in self._views(s.image)] for s in samples]
        tmap = TokenMap(kind, image, view, row, col, box, grids, [tuple(s.image.size) for s in samples])
        return Batch({"feats": torch.from_numpy(feats)}, tmap, [s.id for s in samples], [s.image for s in samples])

    def forward(self, batch: Batch, hookpoints, grad: bool = False) -> dict[str, torch.Tensor]:
        self.forward_calls += 1
        return {hp: batch.inputs["feats"] for hp in hookpoints}


class ReluSAE(SAE):
    """A random ReLU SAE: encode = relu((x - b_dec) W_enc^T + b_enc) with b_dec = 0 and a negative
    bias, so latents are sparse on the fake features."""

    architecture = "relu"

    def __init__(self, d_in: int = D_MODEL, n_latents: int = 64, seed: int = 0, bias: float = -0.3):
        super().__init__(d_in, SAE.Options(n_latents=n_latents, normalize_decoder=False))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.randn(d_in, n_latents, generator=g).T)
            self.encoder.bias.copy_(torch.full((n_latents,), bias) + 0.1 * torch.randn(n_latents, generator=g))
        self.eval()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)


class RandomImages(Dataset):
    """Random blocky RGB images (some wide when `wide`), with a few exact duplicates (every 10th copies
    the one before) so de-duplication has something to do."""

    @dataclass
    class Options:
        n: int = 60
        size: int = 32
        wide: bool = False
        seed: int = 0

    def __len__(self) -> int:
        return self.options.n

    def sample(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        o = self.options
        source = index - 1 if index % 10 == 9 else index
        rng = np.random.default_rng([o.seed, source])
        w = o.size * (2 if o.wide and source % 3 == 0 else 1)
        blocks = rng.integers(0, 256, (4, 4 * w // o.size, 3)).astype(np.uint8)
        image = Image.fromarray(blocks).resize((w, o.size), Image.NEAREST)
        return Sample(id=f"random-{index}", image=image, truth={"source": source})
