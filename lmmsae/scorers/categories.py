"""Concept categories of explanations, for the summary's per-category split (the paper's Table 1).

Two labellers:
* `keywords` (default, no model): every category whose words occur in the label; a label can
  belong to several (a "red circle" feature counts under colour and shape); none -> "other".
  The word lists cover the toy world's attributes (colour, shape, size, position, background) and
  the paper's categories (scene, object, part, material, texture, colour).
* any backend (lmmsae.backends): asked once per label which one of `categories` fits best.
"""

from __future__ import annotations

import re
from typing import Iterable

from lmmsae.datasets.shapes import BACKGROUNDS, COLORS, SHAPES, SIZES
from lmmsae.text import words

OTHER = "other"
PAPER_CATEGORIES = ("scene", "object", "part", "material", "texture", "colour")
KEYWORDS: dict[str, set[str]] = {
    "colour": {*COLORS, "black", "white", "grey", "gray", "brown", "pink", "gold", "silver", "violet",
               "colour", "color", "colours", "colors", "colored", "coloured", "bright", "dark"},
    "shape": {*SHAPES, *(s + "s" for s in SHAPES), "crosses", "round", "triangular", "rectangle", "rectangular",
              "shape", "shapes", "oval", "curve", "curved", "edge", "edges", "corner", "corners"},
    "size": {*SIZES, "big", "tiny", "little", "huge", "size"},
    "position": {"top", "bottom", "left", "right", "center", "centre", "middle", "upper", "lower", "position"},
    "background": {*BACKGROUNDS, "background", "backgrounds", "striped", "checkered", "noisy"},
    "texture": {"texture", "textures", "pattern", "patterns", "stripes", "striped", "checkerboard", "grid", "dots",
                "dotted", "fur", "furry", "rough", "smooth", "lines", "grain", "noise"},
    "material": {"wood", "wooden", "metal", "metallic", "glass", "fabric", "cloth", "stone", "plastic", "leather",
                 "paper", "water", "concrete", "brick", "skin"},
    "scene": {"sky", "street", "road", "room", "kitchen", "beach", "forest", "city", "indoor", "outdoor",
              "landscape", "mountain", "field", "building", "sea", "ocean", "scene", "park"},
    "part": {"eye", "eyes", "wheel", "wheels", "leg", "legs", "face", "hand", "hands", "head", "ear", "ears",
             "nose", "mouth", "tail", "wing", "wings", "window", "door", "handle", "hair", "finger", "fingers"},
    "object": {"object", "objects", "person", "people", "dog", "cat", "car", "animal", "food", "text", "sign",
               "bird", "tree", "chair", "table", "bottle", "cup", "logo", "letter", "letters"},
}


def keyword_categories(label: str, keywords: dict[str, set[str]] = KEYWORDS) -> list[str]:
    """Every category whose keywords occur in the label, in the table's order; ["other"] for none."""
    found_words = set(words(label))
    found = [category for category, vocab in keywords.items() if found_words & vocab]
    return found or [OTHER]


PROMPT = ("A feature of a vision model is described as: \"{label}\". Which one of these categories fits the "
          "description best: {categories}? Answer with the category name only.")


def ask_category(judge, label: str, categories: Iterable[str]) -> list[str]:
    """One category chosen by a backend (`ask([], prompt)`); ["other"] when its answer names none."""
    categories = list(categories)
    answer = judge.ask([], PROMPT.format(label=label, categories=", ".join(categories))).lower()
    hits = [(answer.find(c), c) for c in categories if re.search(rf"\b{re.escape(c)}\b", answer)]
    return [min(hits)[1]] if hits else [OTHER]
