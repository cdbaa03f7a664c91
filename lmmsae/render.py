"""What an explainer sees of a latent on an image: the paper's binary mask, a heatmap, or a crop.

An activation map is one view's patch grid [rows, cols]. `box` = (x0, y0, x1, y1) is where that grid
lies in the original image's pixels (from the model's token map): the whole image when the processor
resizes, a square inside it for a centre crop, a square reaching past its edges when it pads. Pixels
the view never saw count as inactive. numpy + PIL only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

DIM = 0.12  # brightness kept outside active regions (the paper overlays black at alpha 224/255)

Box = tuple[float, float, float, float]


def upsample(grid: np.ndarray, size: tuple[int, int], box: Box | None = None, smooth: bool = True) -> np.ndarray:
    """`grid` [rows, cols] resampled to an image of `size` (width, height) -> [height, width].

    `smooth`: bilinear between patch centres (half-pixel convention, edges clamped), else nearest patch."""
    grid = np.asarray(grid, dtype=np.float64)
    width, height = size
    x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, float(width), float(height))
    ay = _weights(height, grid.shape[0], y0, y1, smooth)
    ax = _weights(width, grid.shape[1], x0, x1, smooth)
    return ay @ grid @ ax.T


def _weights(n_out: int, n_in: int, lo: float, hi: float, smooth: bool) -> np.ndarray:
    """[n_out, n_in] interpolation weights of output pixels over grid cells spanning [lo, hi)."""
    centres = np.arange(n_out) + 0.5
    u = (centres - lo) / max(hi - lo, 1e-9) * n_in
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if smooth:
        u = np.clip(u - 0.5, 0, n_in - 1)
        i0 = np.floor(u).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        f = u - i0
        np.add.at(w, (rows, i0), 1 - f)
        np.add.at(w, (rows, i1), f)
    else:
        w[rows, np.clip(np.floor(u).astype(int), 0, n_in - 1)] = 1.0
    w[(centres < lo) | (centres >= hi)] = 0.0
    return w


def active(activation_map: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """The binarised map: patches whose activation exceeds `threshold`."""
    return np.asarray(activation_map) > threshold


def mask_image(image: Image.Image, activation_map: np.ndarray, threshold: float = 0.0, dim: float = DIM,
               box: Box | None = None, smooth: bool = True) -> Image.Image:
    """The paper's view: active patches at full brightness, the rest dimmed to `dim`; the binary map is
    upsampled bilinearly (`smooth`) or by nearest patch."""
    image = image.convert("RGB")
    keep = upsample(active(activation_map, threshold).astype(np.float64), image.size, box, smooth)
    arr = np.asarray(image, dtype=np.float64)
    out = arr * (dim + (1.0 - dim) * keep[..., None])
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def heatmap(image: Image.Image, activation_map: np.ndarray, box: Box | None = None, alpha: float = 0.6,
            vmax: float | None = None, smooth: bool = True) -> Image.Image:
    """The activation (scaled by `vmax`, default the map's maximum) blended over the image, red to yellow."""
    image = image.convert("RGB")
    grid = np.asarray(activation_map, dtype=np.float64)
    top = float(vmax if vmax is not None else grid.max(initial=0.0))
    v = np.clip(upsample(grid, image.size, box, smooth) / top, 0.0, 1.0) if top > 0 else np.zeros(image.size[::-1])
    hot = np.stack([np.clip(2 * v, 0, 1), np.clip(2 * v - 1, 0, 1), np.zeros_like(v)], axis=-1) * 255  # red -> yellow
    a = alpha * v[..., None]
    out = np.asarray(image, dtype=np.float64) * (1 - a) + hot * a
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def crop(image: Image.Image, activation_map: np.ndarray, threshold: float = 0.0, box: Box | None = None,
         margin: float = 0.1) -> Image.Image:
    """The image cut to the bounding box of its active patches, grown by `margin` of the box's longer
    side (the whole image when nothing is active)."""
    image = image.convert("RGB")
    keep = upsample(active(activation_map, threshold).astype(np.float64), image.size, box, smooth=False) > 0.5
    if not keep.any():
        return image.copy()
    ys, xs = np.nonzero(keep)
    pad = int(round(margin * max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)))
    w, h = image.size
    return image.crop((max(xs.min() - pad, 0), max(ys.min() - pad, 0), min(xs.max() + 1 + pad, w),
                       min(ys.max() + 1 + pad, h)))


RENDERERS = {"mask": mask_image, "heatmap": heatmap, "crop": crop}


def render(mode: str, image: Image.Image, activation_map: np.ndarray, **options: Any) -> Image.Image:
    """Render by name ("mask", "heatmap", "crop") with that renderer's keyword options."""
    from lmmsae.errors import UserError, did_you_mean

    if mode not in RENDERERS:
        raise UserError(f"unknown render mode {mode!r}.{did_you_mean(mode, RENDERERS)} Use one of {', '.join(RENDERERS)}")
    return RENDERERS[mode](image, activation_map, **options)
