"""The toy world's dataset: procedurally drawn shapes with exact ground truth.

Each image shows 1-3 objects, each in its own cell of a 3x3 grid (small jitter and rotation), on a
plain (black / grey / white) or textured (stripes / checkerboard / noise) grey background. Every
object carries its shape, colour, size, grid cell, position words, RGB colour and pixel mask. The
caption lists the objects in reading order, then the background::

    a large red circle at the top left and a small blue square in the center on a striped background

Sample `index` is drawn from its own RNG seeded by (seed, split, index): random access is cheap,
shards can split by index, and the same (seed, split, index) always gives the same pixels.

numpy + PIL only (no torch at import time). Module-level helpers for other components:
`describe_object`, `describe_background`, `caption_for`, `parse_caption`, `parse_background`,
`question_for`, `probe`, `masked_view`, `object_view`, `background_view`, `patch_mask`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageDraw

from lmmsae.datasets.base import Dataset, Sample

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 220, 30),
    "green": (40, 180, 60),
    "cyan": (30, 200, 215),
    "blue": (45, 75, 230),
    "purple": (155, 60, 210),
}
SIZES = ("small", "large")
PLAIN_BACKGROUNDS = ("black", "grey", "white")
TEXTURED_BACKGROUNDS = ("stripes", "checkerboard", "noise")
BACKGROUNDS = PLAIN_BACKGROUNDS + TEXTURED_BACKGROUNDS
BACKGROUND_ADJECTIVES = {"black": "black", "grey": "grey", "white": "white", "stripes": "striped",
                         "checkerboard": "checkered", "noise": "noisy"}  # the caption's words
ROW_WORDS = ("top", "", "bottom")
COL_WORDS = ("left", "", "right")
POSITIONS = tuple(
    " ".join(w for w in (ROW_WORDS[r], COL_WORDS[c]) if w) or "center" for r in range(3) for c in range(3)
)
PAIRS = tuple((c, s) for c in COLORS for s in SHAPES)  # every (colour, shape) a probe can name
# circumradius as a fraction of the cell side
SIZE_RADIUS = {"small": 0.30, "large": 0.44}
DIM = 0.12  # brightness kept outside the highlighted region of a masked view
SPLITS = {"train": 0, "test": 1, "val": 2}
_SS = 4  # supersampling factor for anti-aliased edges


def position_words(row: int, col: int) -> str:
    """'top left', 'top', ..., 'center', ..., 'bottom right'."""
    return POSITIONS[3 * row + col]


def _position_phrase(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def describe_object(obj: dict[str, Any]) -> str:
    """One object's phrase, e.g. 'a small blue square at the bottom right'."""
    return f"a {obj['size']} {obj['color']} {obj['shape']} {_position_phrase(obj['position'])}"


def describe_background(background: str) -> str:
    """The background's phrase, e.g. 'a striped background' (also the answer for a masked view that
    keeps only background: what an explainer should say of a feature that fires on it)."""
    return f"a {BACKGROUND_ADJECTIVES[background]} background"


def caption_for(objects: Iterable[dict[str, Any]], background: str | None = None) -> str:
    """The caption grammar: object phrases in reading order joined by ' and ', then 'on <background>'."""
    objs = sorted(objects, key=lambda o: (o["row"], o["col"]))
    text = " and ".join(describe_object(o) for o in objs)
    return f"{text} on {describe_background(background)}" if background else text


def question_for(color: str, shape: str, position: str | None = None) -> str:
    """A POPE-style yes/no probe about the whole image, 'is there a red circle ?', or about one grid
    cell, 'is there a red circle at the top left ?' (answer: 'yes' or 'no')."""
    where = f" {_position_phrase(position)}" if position else ""
    return f"is there a {color} {shape}{where} ?"


def probe(truth: dict[str, Any], rng, present: bool, positional: bool = False) -> tuple[str, str, str | None]:
    """(colour, shape, position or None) of a probe whose true answer is 'yes' when `present`.

    Whole-image probes (position None) name a (colour, shape) pair the image holds, or one drawn
    uniformly from the pairs it does not hold. Positional probes name a grid cell: a present one names
    an object and its cell; an absent one names a random cell and a pair that is not in that cell
    (an empty cell, or another object's cell). `rng` is a `random.Random`."""
    objects = truth["objects"]
    if positional:
        if present:
            o = objects[rng.randrange(len(objects))]
            return o["color"], o["shape"], o["position"]
        held = {o["position"]: (o["color"], o["shape"]) for o in objects}
        position = POSITIONS[rng.randrange(len(POSITIONS))]
        pairs = [p for p in PAIRS if p != held.get(position)]
        return (*pairs[rng.randrange(len(pairs))], position)
    held_pairs = sorted({(o["color"], o["shape"]) for o in objects})
    if present:
        return (*held_pairs[rng.randrange(len(held_pairs))], None)
    while True:
        pair = (rng.choice(list(COLORS)), rng.choice(SHAPES))
        if pair not in held_pairs:
            return (*pair, None)


_PHRASE = re.compile(
    r"^a (?P<size>\w+) (?P<color>\w+) (?P<shape>\w+) (?:in the (?P<center>center)|at the (?P<pos>[a-z ]+?))$"
)
_BACKGROUND = re.compile(r"(?:^| on )a (?P<adjective>\w+) background$")
_BACKGROUND_NAMES = {adjective: name for name, adjective in BACKGROUND_ADJECTIVES.items()}


def parse_background(text: str) -> str | None:
    """The background a caption (or a background-only description) ends with, e.g. 'stripes'; else None."""
    m = _BACKGROUND.search(" ".join(text.strip().lower().split()))
    return _BACKGROUND_NAMES.get(m.group("adjective")) if m else None


def parse_caption(text: str) -> list[dict[str, str]] | None:
    """Objects (size, color, shape, position) of a caption in the grammar (its background phrase, if
    any, set aside: see `parse_background`); None if it does not parse."""
    text = " ".join(text.strip().lower().split())
    m = _BACKGROUND.search(text)
    if m:
        text = text[:m.start()]
    if not text:
        return []
    out = []
    for part in text.split(" and "):
        m = _PHRASE.match(part.strip())
        if not m:
            return None
        pos = m.group("center") or m.group("pos")
        out.append({"size": m.group("size"), "color": m.group("color"), "shape": m.group("shape"), "position": pos})
    return out


def masked_view(image: Image.Image, keep: np.ndarray, dim: float = DIM) -> Image.Image:
    """Copy of `image` with every pixel outside `keep` (bool HxW) dimmed to `dim` of its brightness."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != arr.shape[:2]:
        raise ValueError(f"mask shape {keep.shape} does not match image size {arr.shape[:2]}")
    out = np.where(keep[..., None], arr, np.rint(arr * dim))
    return Image.fromarray(out.astype(np.uint8), "RGB")


def patch_mask(mask: np.ndarray, patch: int) -> np.ndarray:
    """`mask` grown to whole patch x patch squares (any patch touching the mask is kept entirely)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    gh, gw = -(-h // patch), -(-w // patch)
    padded = np.zeros((gh * patch, gw * patch), dtype=bool)
    padded[:h, :w] = mask
    grid = padded.reshape(gh, patch, gw, patch).any(axis=(1, 3))
    return np.kron(grid, np.ones((patch, patch), dtype=bool)).astype(bool)[:h, :w]


def object_view(sample: Sample, k: int, patch: int | None = None, dim: float = DIM) -> Image.Image:
    """Masked view of a sample keeping only object `k` (its pixels, or its patches if `patch` given)."""
    keep = sample.truth["objects"][k]["mask"]
    if patch:
        keep = patch_mask(keep, patch)
    return masked_view(sample.image, keep, dim)


def background_view(sample: Sample, rng: np.random.Generator, patch: int, dim: float = DIM) -> Image.Image:
    """Masked view keeping a random rectangle of whole patches that touch no object (all object-free
    patches when the rectangle holds none): how a background feature's top image looks to an explainer."""
    size = sample.image.size[1]
    anything = np.zeros((size, size), dtype=bool)
    for obj in sample.truth["objects"]:
        anything |= obj["mask"]
    anything[1:] |= anything[:-1].copy()  # grown by a pixel: anti-aliased edges are not background
    anything[:-1] |= anything[1:].copy()
    anything[:, 1:] |= anything[:, :-1].copy()
    anything[:, :-1] |= anything[:, 1:].copy()
    free = ~patch_mask(anything, patch)
    grid = -(-size // patch)
    h, w = (int(v) for v in rng.integers(2, grid + 1, size=2))
    top, left = int(rng.integers(0, grid - h + 1)), int(rng.integers(0, grid - w + 1))
    keep = np.zeros((size, size), dtype=bool)
    keep[top * patch:(top + h) * patch, left * patch:(left + w) * patch] = True
    keep &= free
    return masked_view(sample.image, keep if keep.any() else free, dim)


# ----------------------------------------------------------------------------- drawing


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def rot(points):
        ca, sa = np.cos(angle), np.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]

    if shape == "square":
        s = r / np.sqrt(2)
        return rot([(-s, -s), (s, -s), (s, s), (-s, s)])
    if shape == "triangle":  # points up; centroid at the centre
        return rot([(0, -r), (r * np.sin(np.pi / 3 * 2), r / 2), (-r * np.sin(np.pi / 3 * 2), r / 2)])
    if shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.42
            a = -np.pi / 2 + i * np.pi / 5
            pts.append((rr * np.cos(a), rr * np.sin(a)))
        return rot(pts)
    if shape == "cross":
        a, b = r * 0.32, r * 0.95
        return rot([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                    (-a, a), (-b, a), (-b, -a), (-a, -a)])
    raise ValueError(f"unknown shape {shape!r}")


def _coverage(shape: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """Fraction (0..1) of each pixel of a size x size canvas covered by the shape (supersampled)."""
    S = _SS
    x0, y0 = max(0, int(np.floor(cx - r)) - 1), max(0, int(np.floor(cy - r)) - 1)
    x1, y1 = min(size, int(np.ceil(cx + r)) + 2), min(size, int(np.ceil(cy + r)) + 2)
    w, h = x1 - x0, y1 - y0
    big = Image.new("L", (w * S, h * S), 0)
    draw = ImageDraw.Draw(big)
    lx, ly = cx - x0, cy - y0
    if shape == "circle":
        draw.ellipse([(lx - r) * S, (ly - r) * S, (lx + r) * S - 1, (ly + r) * S - 1], fill=255)
    else:
        draw.polygon([(x * S, y * S) for x, y in _shape_polygon(shape, lx, ly, r, angle)], fill=255)
    out = np.zeros((size, size), np.float32)
    out[y0:y1, x0:x1] = np.asarray(big, dtype=np.float32).reshape(h, S, w, S).mean(axis=(1, 3)) / 255.0
    return out


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "black":
        v = rng.integers(0, 26)
        return np.full((size, size, 3), v, np.float32)
    if kind == "grey":
        v = rng.integers(110, 146)
        return np.full((size, size, 3), v, np.float32)
    if kind == "white":
        v = rng.integers(228, 256)
        return np.full((size, size, 3), v, np.float32)
    lo = float(rng.integers(40, 90))
    hi = lo + float(rng.integers(40, 80))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "stripes":
        period = float(rng.integers(size // 12, size // 6 + 1))
        theta = rng.uniform(0, np.pi)
        t = (xx * np.cos(theta) + yy * np.sin(theta)) / period
        g = np.where((t % 1.0) < 0.5, lo, hi)
    elif kind == "checkerboard":
        period = int(rng.integers(size // 16, size // 8 + 1))
        g = np.where(((xx // period + yy // period) % 2) == 0, lo, hi)
    elif kind == "noise":
        cells = int(rng.integers(size // 8, size // 4 + 1))
        coarse = rng.uniform(lo, hi, (cells, cells)).astype(np.float32)
        g = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BILINEAR), np.float32)
        g = g + rng.normal(0, 8, (size, size)).astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return np.repeat(np.clip(g, 0, 255)[..., None], 3, axis=2)


def render(objects: list[dict[str, Any]], background: str, size: int, rng: np.random.Generator):
    """Draw the objects (dicts with shape, color, size, row, col, cx, cy, r, angle, rgb) on a background.

    Returns (PIL image, list of bool masks). A mask holds the pixels at least half covered by its object.
    """
    img = _background(background, size, rng)
    masks = []
    for obj in objects:
        cov = _coverage(obj["shape"], obj["cx"], obj["cy"], obj["r"], obj["angle"], size)
        img = img * (1.0 - cov[..., None]) + np.asarray(obj["rgb"], np.float32) * cov[..., None]
        masks.append(cov >= 0.5)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB"), masks


def generate(rng: np.random.Generator, image_size: int, max_objects: int = 3):
    """Draw one random scene: (image, truth dict)."""
    size = image_size
    cell = size / 3.0
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    n = int(rng.integers(1, max_objects + 1))
    cells = sorted(int(c) for c in rng.choice(9, size=n, replace=False))
    colors = list(COLORS)
    objects = []
    for c in cells:
        row, col = divmod(c, 3)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = colors[int(rng.integers(len(colors)))]
        sz = SIZES[int(rng.integers(2))]
        r = SIZE_RADIUS[sz] * cell * rng.uniform(0.97, 1.03)
        slack = max(0.0, 0.5 * cell - r - 0.5)
        jitter = min(0.07 * cell, slack)
        cx = (col + 0.5) * cell + rng.uniform(-jitter, jitter)
        cy = (row + 0.5) * cell + rng.uniform(-jitter, jitter)
        angle = float(np.deg2rad(rng.uniform(-12, 12)))
        rgb = tuple(int(np.clip(v + rng.integers(-10, 11), 0, 255)) for v in COLORS[color])
        objects.append({"shape": shape, "color": color, "size": sz, "row": row, "col": col,
                        "position": position_words(row, col), "cx": float(cx), "cy": float(cy),
                        "r": float(r), "angle": angle, "rgb": rgb})
    image, masks = render(objects, background, size, rng)
    for obj, m in zip(objects, masks):
        obj["mask"] = m
    truth = {"caption": caption_for(objects, background), "background": background, "objects": objects}
    return image, truth


class ShapesDataset(Dataset):
    """Procedural shapes with ground truth (objects, masks, caption); the toy world's images."""

    region_masks = True

    @dataclass
    class Options:
        n: int = 2000  # number of samples
        seed: int = 0
        split: str = "test"  # train | test | val: disjoint RNG streams (the toy models trained on "train")
        image_size: int = 96  # the shipped toy models see 96 px images
        max_objects: int = 3
        prompt: str = ""  # text prompt attached to every sample ("" = image only, as in the paper)

        def __post_init__(self):  # checked when the config is read, before any stage runs
            if self.n < 1:
                raise ValueError(f"dataset.n = {self.n}: there must be at least one sample")
            if self.split not in SPLITS:
                raise ValueError(f"dataset.split must be one of {', '.join(SPLITS)}, not {self.split!r}")
            if not 1 <= self.max_objects <= 9:
                raise ValueError("dataset.max_objects must be between 1 and 9")
            if self.image_size < 24:
                raise ValueError("dataset.image_size must be at least 24")

    def __init__(self, options: "ShapesDataset.Options | None" = None):
        super().__init__(options or self.Options())

    def __len__(self) -> int:
        return int(self.options.n)

    def rng(self, index: int) -> np.random.Generator:
        o = self.options
        return np.random.default_rng([int(o.seed), SPLITS[o.split], int(index)])

    def sample(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, truth = generate(self.rng(index), self.options.image_size, self.options.max_objects)
        return Sample(id=f"shapes-{self.options.split}-{self.options.seed}-{index}", image=image,
                      prompt=self.options.prompt, truth=truth)
