"""The region an explanation names in an image with ground-truth objects (the toy world's truth format).

Matching rule (documented in docs/scorers.md):

* The label is lower-cased and split into words; synonyms and plurals are mapped (gray -> grey,
  violet -> purple, big -> large, circles -> circle, centre/middle -> center, striped -> stripes, ...).
* A word names an object attribute when it is one of that attribute's values: the toy world's
  colours, shapes and sizes, plus any value of that attribute in the image's own truth (so other
  datasets whose objects carry string attributes or a `label` work too).
* Position words name grid rows and columns: top/upper -> row 0, bottom/lower -> row 2, left -> col 0,
  right -> col 2; center alone -> the middle cell; with other position words it is ignored.
* An object matches when, for every attribute the label names, its value is one of the named values
  (several named values of one attribute are alternatives: "red or blue"). The region is the union of
  the masks of matching objects.
* Background words (the toy world's backgrounds, or the word "background") name the background: when
  the image's background is the one named (or "background" alone), every pixel outside all objects
  joins the region.
* A label naming nothing recognisable has no region (`None`): it scores 0, as a detection failure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmmsae.datasets.shapes import BACKGROUNDS, COLORS, SHAPES, SIZES
from lmmsae.text import words

SYNONYMS = {
    "gray": "grey", "violet": "purple", "big": "large", "tiny": "small", "little": "small",
    "round": "circle", "ring": "circle", "plus": "cross", "box": "square", "centre": "center",
    "middle": "center", "central": "center", "upper": "top", "lower": "bottom", "striped": "stripes",
    "stripe": "stripes", "checkered": "checkerboard", "checker": "checkerboard", "checkers": "checkerboard",
    "noisy": "noise", "speckled": "noise", "turquoise": "cyan", "aqua": "cyan",
}
VOCABULARY = {"color": set(COLORS), "shape": set(SHAPES), "size": set(SIZES)}
OBJECT_FIELDS = ("color", "shape", "size", "label", "category", "name")
ROWS = {"top": 0, "bottom": 2}
COLS = {"left": 0, "right": 2}
BACKGROUND_WORDS = set(BACKGROUNDS)


def label_words(label: str) -> list[str]:
    """Normalised words of a label: lower case, synonyms and plurals mapped."""
    out = []
    for w in words(label):
        w = SYNONYMS.get(w, w)
        if w not in BACKGROUND_WORDS and w.endswith("es") and w[:-2] in VOCABULARY["shape"] | {"cross"}:
            w = w[:-2]
        elif w.endswith("s") and w[:-1] in VOCABULARY["shape"]:
            w = w[:-1]
        out.append(SYNONYMS.get(w, w))
    return out


def named(label: str, truth: dict[str, Any]) -> dict[str, set]:
    """What the label names: attribute -> values, plus 'row', 'col', 'center', 'background'."""
    ws = set(label_words(label))
    vocab = {f: set(v) for f, v in VOCABULARY.items()}
    for obj in truth.get("objects", []):
        for f in OBJECT_FIELDS:
            if isinstance(obj.get(f), str):
                vocab.setdefault(f, set()).add(obj[f].lower())
    out: dict[str, set] = {f: ws & values for f, values in vocab.items() if ws & values}
    rows = {ROWS[w] for w in ws if w in ROWS}
    cols = {COLS[w] for w in ws if w in COLS}
    if rows:
        out["row"] = rows
    if cols:
        out["col"] = cols
    if "center" in ws and not rows and not cols:
        out["row"], out["col"] = {1}, {1}
    backgrounds = ws & (BACKGROUND_WORDS | {"background"})
    if backgrounds:
        out["background"] = backgrounds
    return out


def matches(obj: dict[str, Any], names: dict[str, set]) -> bool:
    for key, values in names.items():
        if key == "background":
            continue
        value = obj.get(key)
        if isinstance(value, str):
            value = value.lower()
        if value not in values:
            return False
    return True


def truth_region(label: str, truth: dict[str, Any]) -> np.ndarray | None:
    """Bool HxW mask of what `label` names in an image with ground truth, or None if it names nothing."""
    names = named(label, truth)
    if not names:
        return None
    objects = truth.get("objects", [])
    if not objects:
        raise ValueError("ground truth has no objects with masks")
    shape = np.asarray(objects[0]["mask"]).shape
    region = np.zeros(shape, dtype=bool)
    if set(names) - {"background"}:
        for obj in objects:
            if matches(obj, names):
                region |= np.asarray(obj["mask"], dtype=bool)
    background = names.get("background")
    if background and (background == {"background"} or str(truth.get("background", "")).lower() in background):
        anything = np.zeros(shape, dtype=bool)
        for obj in objects:
            anything |= np.asarray(obj["mask"], dtype=bool)
        region |= ~anything
    return region


def has_masks(truth: dict[str, Any] | None) -> bool:
    """True when the ground truth carries objects with pixel masks (so no segmenter is needed)."""
    return bool(truth) and bool(truth.get("objects")) and all("mask" in o for o in truth["objects"])
