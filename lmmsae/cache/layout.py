"""Where each image token's activation goes in a latent's flat per-image map.

A map holds every view of one image (view 0 = base view, 1.. = tiles) one after another, each view a
row-major grid of fixed capacity. Images whose grid is smaller (anyres tiles, unpadding) leave the rest
at zero; their real grid and where it lies in the original image are kept per sample (`ViewGeometry`).
The capacity only grows, so maps kept so far are remapped once when a larger image arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ViewGeometry:
    """One view of one image: its patch grid and the box it covers in original-image pixels.

    The box may reach outside the image (padding) or cover only part of it (centre crop)."""

    rows: int
    cols: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class MapLayout:
    """Capacity (rows, cols) per view; a map is the concatenation of the views' row-major grids."""

    views: tuple[tuple[int, int], ...] = ()

    @property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for rows, cols in self.views:
            out.append(total)
            total += rows * cols
        return tuple(out)

    @property
    def size(self) -> int:
        return sum(r * c for r, c in self.views)

    def cells(self, view: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Flat cell index of each (view, row, col)."""
        view, row, col = (np.asarray(a, dtype=np.int64) for a in (view, row, col))
        offsets = np.asarray(self.offsets, dtype=np.int64)
        widths = np.asarray([c for _, c in self.views], dtype=np.int64)
        return offsets[view] + row * widths[view] + col

    def union(self, other: "MapLayout") -> "MapLayout":
        n = max(len(self.views), len(other.views))
        get = lambda lay, i: lay.views[i] if i < len(lay.views) else (0, 0)  # noqa: E731
        return MapLayout(tuple((max(get(self, i)[0], get(other, i)[0]), max(get(self, i)[1], get(other, i)[1]))
                               for i in range(n)))

    def covers(self, other: "MapLayout") -> bool:
        return self.union(other) == self

    def remap_index(self, new: "MapLayout") -> np.ndarray:
        """For each cell of this layout, its index in `new` (which must cover this one)."""
        out = []
        for v, (rows, cols) in enumerate(self.views):
            r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            out.append(new.cells(np.full(r.size, v), r.ravel(), c.ravel()))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def view_map(self, flat: np.ndarray, view: int, rows: int | None = None, cols: int | None = None) -> np.ndarray:
        """The [rows, cols] grid of one view out of a flat map (cropped to the image's real grid)."""
        cap_rows, cap_cols = self.views[view]
        start = self.offsets[view]
        grid = np.asarray(flat)[..., start:start + cap_rows * cap_cols].reshape(*np.shape(flat)[:-1], cap_rows, cap_cols)
        return grid[..., : rows or cap_rows, : cols or cap_cols]

    def to_list(self) -> list[list[int]]:
        return [list(v) for v in self.views]

    @classmethod
    def from_list(cls, views) -> "MapLayout":
        return cls(tuple((int(r), int(c)) for r, c in views))

    @classmethod
    def of(cls, geometries) -> "MapLayout":
        """The smallest layout holding every image's views (`geometries`: per image, list of ViewGeometry)."""
        out = cls()
        for views in geometries:
            out = out.union(cls(tuple((g.rows, g.cols) for g in views)))
        return out
