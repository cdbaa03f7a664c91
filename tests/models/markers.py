"""The token-map ground truth shared by the model tests: paint a marker into a known image region and
compare the language-model inputs that change with the tokens whose boxes the map says cover it."""

import numpy as np
from PIL import Image, ImageDraw

from lmmsae.datasets.base import Sample
from lmmsae.models.base import TokenKind


def lm_inputs(adapter, image):
    """inputs_embeds the language model receives (after the image features are scattered in)."""
    seen = {}

    def pre(module, args, kwargs):
        seen["x"] = kwargs["inputs_embeds"].detach().clone()

    batch = adapter.prepare([Sample("s", image, "")])
    h = adapter.model.model.language_model.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        adapter.logits(batch)
    finally:
        h.remove()
    return batch, seen["x"][0]


def overlaps(box, rect, margin):
    x0, y0, x1, y1 = rect
    return (box[0] < x1 + margin) & (box[2] > x0 - margin) & (box[1] < y1 + margin) & (box[3] > y0 - margin)


def check_marker(adapter, size, rect, patch):
    """Changed tokens == tokens whose box meets the marker, up to the resampling kernel's reach."""
    w, h = size
    base = Image.new("RGB", (w, h), (120, 120, 120))
    marked = base.copy()
    ImageDraw.Draw(marked).rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=(255, 255, 255))
    batch, clean = lm_inputs(adapter, base)
    _, dirty = lm_inputs(adapter, marked)
    changed = (clean - dirty).abs().amax(-1).numpy() > 1e-5
    tm = batch.token_map
    kind, box = tm.kind[0], tm.box[0]
    assert not changed[kind != TokenKind.IMAGE].any(), "only image tokens may change"
    image = kind == TokenKind.IMAGE
    assert image.sum() > 0
    scale = (box[image, 2] - box[image, 0]) / patch           # original px per processed px
    margin = np.where(np.isclose(scale, 1.0), 0.0, 2 * scale + 1)
    b = box[image]
    grown = np.array([overlaps(bb, rect, m) for bb, m in zip(b, margin)])
    shrunk = np.array([overlaps(bb, rect, -m) for bb, m in zip(b, margin)])
    stray = changed[image] & ~grown
    missed = shrunk & ~changed[image]
    assert not stray.any(), f"tokens changed outside the marker: {np.nonzero(stray)[0][:10]}"
    assert not missed.any(), f"tokens covering the marker did not change: {np.nonzero(missed)[0][:10]}"
    assert changed.sum() >= 1
    return tm, changed
