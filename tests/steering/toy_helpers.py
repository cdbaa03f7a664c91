"""Toy-world science for the steering tests: collect activations with ground-truth colours, train a
small TopK SAE, find a 'red' feature, steer and attribute. Written against any LLaVA adapter so the
mechanics can be exercised on a tiny random model too."""

from __future__ import annotations

import numpy as np
import torch

from lmmsae.models.base import TokenKind


def patch_objects(sample, grid: tuple[int, int], min_cover: float = 0.3) -> np.ndarray:
    """[rows, cols] index of the object covering each patch (by ground-truth mask), -1 for none."""
    rows, cols = grid
    out = np.full((rows, cols), -1)
    best = np.zeros((rows, cols))
    for k, obj in enumerate(sample.truth["objects"]):
        m = np.asarray(obj["mask"], dtype=np.float32)
        h, w = m.shape
        cover = m[: h // rows * rows, : w // cols * cols].reshape(rows, h // rows, cols, w // cols).mean((1, 3))
        take = (cover >= min_cover) & (cover > best)
        out[take], best[take] = k, cover[take]
    return out


def collect(adapter, hookpoint: str, samples, prompt: str = "<image>", batch_size: int = 32):
    """Image-token activations [N, d] with the colour of the object under each token ('' for none)."""
    acts, colors = [], []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = adapter.prepare(chunk, prompt)
        x = adapter.forward(batch, [hookpoint])[hookpoint].float()
        tm = batch.token_map
        for b, s in enumerate(chunk):
            owner = patch_objects(s, tm.grids[b][0])
            sel = (tm.kind[b] == TokenKind.IMAGE) & (tm.view[b] == 0)
            acts.append(x[b][torch.from_numpy(sel)])
            for r, c in zip(tm.row[b][sel], tm.col[b][sel]):
                k = owner[r, c]
                colors.append(s.truth["objects"][k]["color"] if k >= 0 else "")
    return torch.cat(acts), np.array(colors)


def train_topk(x: torch.Tensor, n_latents: int = 256, k: int = 8, steps: int = 400, batch: int = 1024,
               lr: float = 2e-3, seed: int = 0):
    """A small TopK SAE through the SAE's own training loss (FVU), Adam, unit-norm decoder."""
    from lmmsae import plugins
    from lmmsae.saes.base import BatchContext

    torch.manual_seed(seed)
    comp = plugins.get("saes", "topk")
    sae = comp.load()(x.shape[1], comp.options({"n_latents": n_latents, "k": k}))
    with torch.no_grad():
        sae.b_dec.copy_(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        xb = x[torch.randint(0, x.shape[0], (min(batch, x.shape[0]),), generator=g)]
        var = (xb - xb.mean(0)).pow(2).sum()
        out = sae.training_loss(xb, BatchContext(var, xb.shape[0], None, step))
        opt.zero_grad()
        out.loss.backward()
        sae.before_step()
        opt.step()
        sae.after_step()
    return sae.eval()


def color_latent(sae, x: torch.Tensor, colors: np.ndarray, color: str = "red", top: int = 50,
                 min_fires: int = 20) -> tuple[int, float, float]:
    """(latent, purity, max activation): the latent whose top activating tokens are most often on
    objects of `color` by ground truth."""
    with torch.no_grad():
        z = sae.encode(x)
    best = (-1, -1.0, 0.0)
    for latent in range(z.shape[1]):
        col = z[:, latent]
        if int((col > 0).sum()) < min_fires:
            continue
        idx = torch.topk(col, min(top, int((col > 0).sum()))).indices.numpy()
        purity = float((colors[idx] == color).mean())
        if purity > best[1]:
            best = (latent, purity, float(col.max()))
    return best
