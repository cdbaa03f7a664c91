"""Exact image-token geometry of the LLaVA family, derived from the processor and model config.

For one image, a `Layout` lists its image tokens in the order the model scatters them into the
sequence: base view first, then (anyres models) the unpadded tile grid row by row, each row ended
by a newline token. Every patch token carries its view, row, column and the box of original-image
pixels its features were computed from. Boxes come from replaying the image processor's steps
(pad, resize, crop, tiling) as axis-aligned maps with transformers' own size helpers; unpadding
and the OneVision downsampling are replayed with transformers' `unpad_image` and torch's own
bilinear interpolation, so the map cannot drift from what the model does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmmsae.models.base import TokenKind, TokenMap


@dataclass(frozen=True)
class Geometry:
    """Current image size and the map from its pixel coordinates to the original's: x = ax*u + bx."""

    height: int
    width: int
    ay: float = 1.0
    by: float = 0.0
    ax: float = 1.0
    bx: float = 0.0

    def pad(self, top: int, left: int, bottom: int, right: int) -> "Geometry":
        return Geometry(self.height + top + bottom, self.width + left + right,
                        self.ay, self.by - self.ay * top, self.ax, self.bx - self.ax * left)

    def resize(self, height: int, width: int) -> "Geometry":
        sy, sx = self.height / height, self.width / width
        return Geometry(height, width, self.ay * sy, self.by, self.ax * sx, self.bx)

    def crop(self, top: int, left: int, height: int, width: int) -> "Geometry":
        return Geometry(height, width, self.ay, self.by + self.ay * top, self.ax, self.bx + self.ax * left)

    def patch_boxes(self, patch: int, orig_hw: tuple[int, int]) -> np.ndarray:
        """[rows, cols, 4] boxes (x0, y0, x1, y1) in original pixels, clipped to the image."""
        rows, cols = self.height // patch, self.width // patch
        r = np.arange(rows + 1) * patch
        c = np.arange(cols + 1) * patch
        y = np.clip(self.ay * r + self.by, 0, orig_hw[0])
        x = np.clip(self.ax * c + self.bx, 0, orig_hw[1])
        out = np.empty((rows, cols, 4), dtype=np.float32)
        out[..., 0] = x[None, :-1]
        out[..., 1] = y[:-1, None]
        out[..., 2] = x[None, 1:]
        out[..., 3] = y[1:, None]
        return out


# ----------------------------------------------------------------- replaying the image processor

def _dummy(height: int, width: int) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype=np.uint8), (3, height, width))


def resized_size(height: int, width: int, size) -> tuple[int, int]:
    """The output size of the torchvision backend's `resize(size=...)`, via transformers' helpers."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio

    get = (lambda k: getattr(size, k, None)) if not isinstance(size, dict) else size.get
    if get("shortest_edge") and get("longest_edge"):
        return tuple(get_size_with_aspect_ratio((height, width), get("shortest_edge"), get("longest_edge")))
    if get("shortest_edge"):
        return tuple(get_resize_output_image_size(_dummy(height, width), size=get("shortest_edge"),
                                                  default_to_square=False, input_data_format="channels_first"))
    if get("max_height") and get("max_width"):
        from transformers.image_utils import get_image_size_for_max_height_width

        return tuple(get_image_size_for_max_height_width((height, width), get("max_height"), get("max_width")))
    if get("height") and get("width"):
        return get("height"), get("width")
    raise ValueError(f"unsupported image processor size {size}")


def _hw(size) -> tuple[int | None, int | None]:
    get = (lambda k: getattr(size, k, None)) if not isinstance(size, dict) else size.get
    return get("height"), get("width")


def center_crop(geo: Geometry, crop_size) -> Geometry:
    """The torchvision backend's center_crop (pads with zeros first when the crop is larger)."""
    ch, cw = _hw(crop_size)
    if cw > geo.width or ch > geo.height:
        left = (cw - geo.width) // 2 if cw > geo.width else 0
        top = (ch - geo.height) // 2 if ch > geo.height else 0
        right = (cw - geo.width + 1) // 2 if cw > geo.width else 0
        bottom = (ch - geo.height + 1) // 2 if ch > geo.height else 0
        geo = geo.pad(top, left, bottom, right)
        if geo.width == cw and geo.height == ch:
            return geo
    return geo.crop(int((geo.height - ch) / 2.0), int((geo.width - cw) / 2.0), ch, cw)


def pad_to_square(geo: Geometry) -> Geometry:
    if geo.height == geo.width:
        return geo
    m = max(geo.height, geo.width)
    left, top = (m - geo.width) // 2, (m - geo.height) // 2
    return geo.pad(top, left, m - geo.height - top, m - geo.width - left)


def finish_view(geo: Geometry, ip) -> Geometry:
    """The per-view resize and centre crop every LLaVA image processor ends with."""
    if getattr(ip, "do_resize", True) and getattr(ip, "size", None) is not None:
        geo = geo.resize(*resized_size(geo.height, geo.width, ip.size))
    if getattr(ip, "do_center_crop", False) and getattr(ip, "crop_size", None) is not None:
        geo = center_crop(geo, ip.crop_size)
    return geo


def plain_view(orig_hw: tuple[int, int], ip) -> Geometry:
    """LLaVA-1.5: optional pad to square (LlavaImageProcessor), resize, centre crop."""
    geo = Geometry(*orig_hw)
    if getattr(ip, "do_pad", False) and hasattr(ip, "pad_to_square"):
        geo = pad_to_square(geo)
    return finish_view(geo, ip)


def anyres_views(orig_hw: tuple[int, int], ip, pinpoints) -> tuple[Geometry, list[Geometry], tuple[int, int]]:
    """LLaVA-NeXT / OneVision: base view (squashed resize) and the tiles of the best-fit canvas.

    Returns (base, tiles in row-major order, (tile rows, tile cols)).
    """
    from transformers.image_processing_utils import get_patch_output_size, select_best_resolution

    size = ip.size
    h, w = _hw(size)
    se = getattr(size, "shortest_edge", None) if not isinstance(size, dict) else size.get("shortest_edge")
    base_hw = (h, w) if h and w else (se, se)
    crop_h = _hw(ip.crop_size)[0] if getattr(ip, "crop_size", None) is not None else None
    tile = crop_h or h or se

    base = finish_view(Geometry(*orig_hw).resize(*base_hw), ip)
    best = select_best_resolution(orig_hw, pinpoints)
    new_h, new_w = get_patch_output_size(_dummy(*orig_hw), best, "channels_first")
    canvas = Geometry(*orig_hw).resize(new_h, new_w)
    px, rx = divmod(best[1] - new_w, 2)
    py, ry = divmod(best[0] - new_h, 2)
    canvas = canvas.pad(py, px, py + ry, px + rx)
    tiles = []
    for top in range(0, canvas.height, tile):
        for left in range(0, canvas.width, tile):
            t = canvas.crop(top, left, min(tile, canvas.height - top), min(tile, canvas.width - left))
            tiles.append(finish_view(t, ip))
    grid = (len(range(0, canvas.height, tile)), len(range(0, canvas.width, tile)))
    return base, tiles, grid


# ----------------------------------------------------------------- per-image token layout

@dataclass
class Layout:
    """One image's tokens in sequence order (arrays of equal length), and its views' grids."""

    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    view: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    col: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))
    box: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    grids: list[tuple[int, int]] = field(default_factory=list)

    def extend(self, kind, view, row, col, box) -> None:
        n = len(np.atleast_1d(row))
        self.kind = np.concatenate([self.kind, np.broadcast_to(np.asarray(kind, np.int8), (n,))])
        self.view = np.concatenate([self.view, np.broadcast_to(np.asarray(view, np.int16), (n,))])
        self.row = np.concatenate([self.row, np.broadcast_to(np.asarray(row, np.int16), (n,))])
        self.col = np.concatenate([self.col, np.broadcast_to(np.asarray(col, np.int16), (n,))])
        self.box = np.concatenate([self.box, np.broadcast_to(np.asarray(box, np.float32), (n, 4))])

    def add_specials(self, n: int) -> None:
        """Leading features that are no patch (a CLS kept by strategy "full")."""
        if n > 0:
            self.extend(TokenKind.SPECIAL, 0, np.full(n, -1), -1, -1)

    def add_view(self, boxes: np.ndarray, view: int) -> None:
        rows, cols = boxes.shape[:2]
        self.grids.append((rows, cols))
        r, c = np.divmod(np.arange(rows * cols), cols)
        self.extend(TokenKind.IMAGE, view, r, c, boxes.reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.kind)


def plain_layout(orig_hw: tuple[int, int], pixel_hw: tuple[int, int], ip, patch: int, extra: int) -> Layout:
    """LLaVA-1.5: `extra` leading non-patch features (the CLS with strategy "full"), then the grid."""
    geo = plain_view(orig_hw, ip)
    if (geo.height, geo.width) != tuple(pixel_hw):  # e.g. batch padding appended at the bottom/right
        geo = Geometry(*pixel_hw, geo.ay, geo.by, geo.ax, geo.bx)
    out = Layout()
    out.add_specials(extra)
    out.add_view(geo.patch_boxes(patch, orig_hw), 0)
    return out


def anyres_layout(orig_hw: tuple[int, int], ip, pinpoints, vision_image_size: int, patch: int, extra: int,
                  newline: bool = True, max_tiles: int | None = None) -> Layout:
    """LLaVA-NeXT (and OneVision with `max_tiles`): base view, then the unpadded tile grid with newlines.

    Tile tokens get the tile (view 1..), row and column of their source patch; after OneVision's
    bilinear downsampling that is the source with the largest weight, and the box covers every
    source patch that contributes.
    """
    import torch
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    base, tiles, grid = anyres_views(orig_hw, ip, pinpoints)
    nph, npw = get_anyres_image_grid_shape(list(orig_hw), pinpoints, vision_image_size)
    if (nph, npw) != grid:
        raise ValueError(f"processor tiles {grid} and model tiles {(nph, npw)} disagree for image size {orig_hw}")
    h = w = vision_image_size // patch
    out = Layout()
    out.add_specials(extra)
    out.add_view(base.patch_boxes(patch, orig_hw), 0)

    H, W = nph * h, npw * w
    comb = np.empty((H, W, 4), np.float32)  # boxes of the combined tile grid
    for t, geo in enumerate(tiles):
        boxes = geo.patch_boxes(patch, orig_hw)
        if boxes.shape[:2] != (h, w):
            raise ValueError(f"tile {t} has a {boxes.shape[:2]} patch grid, the model expects {(h, w)}")
        ti, tj = divmod(t, npw)
        comb[ti * h:(ti + 1) * h, tj * w:(tj + 1) * w] = boxes
        out.grids.append((h, w))

    index = torch.arange(H * W).reshape(1, H, W)
    kept = unpad_image(index, list(orig_hw))[0].numpy()  # [h', w'] combined-grid indices, in order
    rows_idx, cols_idx = kept[:, 0] // W, kept[0, :] % W
    wy = _bilinear_weights(len(rows_idx), len(cols_idx), max_tiles, h, axis=0)
    wx = _bilinear_weights(len(cols_idx), len(rows_idx), max_tiles, h, axis=1)
    r_lo, r_hi, r_best = _support(wy, rows_idx)
    c_lo, c_hi, c_best = _support(wx, cols_idx)
    n_out_cols = len(c_best)
    for o in range(len(r_best)):
        R, C = r_best[o], c_best
        box = np.concatenate([comb[r_lo[o], c_lo, :2], comb[r_hi[o], c_hi, 2:]], axis=-1)
        t = (R // h) * npw + C // w
        out.extend(TokenKind.IMAGE, t + 1, np.full(n_out_cols, R % h), C % w, box)
        if newline:
            out.extend(TokenKind.IMAGE_NEWLINE, t[-1] + 1, [R % h], -1, -1)
    return out


def _support(weights: np.ndarray, index: np.ndarray):
    """Per output: lowest, highest and strongest contributing source index."""
    nz = weights > 0
    lo = index[np.argmax(nz, axis=0)]
    hi = index[weights.shape[0] - 1 - np.argmax(nz[::-1], axis=0)]
    best = index[np.argmax(weights, axis=0)]
    return lo, hi, best


def _bilinear_weights(n: int, n_other: int, max_tiles: int | None, tile: int, axis: int) -> np.ndarray:
    """[n_in, n_out] weights of OneVision's bilinear downsampling along one axis (identity when none).

    Computed by pushing an identity through the very `interpolate` call the model makes.
    """
    import math

    import torch

    rows, cols = (n, n_other) if axis == 0 else (n_other, n)
    if max_tiles is None:
        return np.eye(n, dtype=np.float32)
    ratio = math.sqrt(rows * cols / (max_tiles * tile ** 2))
    if ratio <= 1.1:
        return np.eye(n, dtype=np.float32)
    out_rows, out_cols = int(rows // ratio), int(cols // ratio)
    eye = torch.eye(n, dtype=torch.float64)
    if axis == 0:
        x = eye.reshape(1, n, n, 1)
        y = torch.nn.functional.interpolate(x, [out_rows, 1], mode="bilinear")
        return y[0, :, :, 0].numpy()
    x = eye.reshape(1, n, 1, n)
    y = torch.nn.functional.interpolate(x, [1, out_cols], mode="bilinear")
    return y[0, :, 0, :].numpy()


# ----------------------------------------------------------------- the batch's token map

def assemble(input_ids: np.ndarray, attention_mask: np.ndarray, image_token_id: int, special_ids,
             layouts: list[Layout | None], image_sizes: list[tuple[int, int] | None]) -> TokenMap:
    """Token map of a batch: padding from the mask, image tokens from the layouts, specials by id."""
    B, S = input_ids.shape
    kind = np.full((B, S), int(TokenKind.TEXT), np.int8)
    image = np.full((B, S), -1, np.int16)
    view = np.full((B, S), -1, np.int16)
    row = np.full((B, S), -1, np.int16)
    col = np.full((B, S), -1, np.int16)
    box = np.full((B, S, 4), -1, np.float32)
    specials = np.isin(input_ids, np.asarray(sorted(set(special_ids) - {image_token_id}), dtype=input_ids.dtype))
    kind[specials] = TokenKind.SPECIAL
    grids = []
    for b in range(B):
        pos = np.nonzero(input_ids[b] == image_token_id)[0]
        layout = layouts[b]
        n = 0 if layout is None else len(layout)
        if len(pos) != n:
            raise ValueError(f"sample {b}: {len(pos)} image tokens in the text but the geometry gives {n}; "
                             f"the processor and model config disagree")
        if layout is not None:
            kind[b, pos] = layout.kind
            image[b, pos] = 0
            view[b, pos] = layout.view
            row[b, pos] = layout.row
            col[b, pos] = layout.col
            box[b, pos] = layout.box
        grids.append(list(layout.grids) if layout is not None else [])
    pad = attention_mask == 0
    kind[pad] = TokenKind.PADDING
    for a in (image, view, row, col):
        a[pad] = -1
    box[pad] = -1
    sizes = [None if hw is None else (int(hw[1]), int(hw[0])) for hw in image_sizes]
    return TokenMap(kind, image, view, row, col, box, grids, sizes)
