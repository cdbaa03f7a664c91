import numpy as np
import pytest
from PIL import Image

from lmmsae import render
from lmmsae.errors import UserError

GREY = 200
DIMMED = round(GREY * render.DIM)


def grey(w=96, h=96):
    return Image.new("RGB", (w, h), (GREY, GREY, GREY))


def patch_means(img, n=8):
    a = np.asarray(img, dtype=float)[..., 0]
    h, w = a.shape
    return a.reshape(n, h // n, n, w // n).mean(axis=(1, 3))


def some_map():
    m = np.zeros((8, 8))
    m[1, 2] = 0.3
    m[4:6, 5:7] = 2.0
    m[7, 0] = 1e-3
    return m


def test_nearest_mask_keeps_exactly_the_active_patches_bright():
    m = some_map()
    out = np.asarray(render.mask_image(grey(), m, smooth=False))[..., 0]
    expect = np.kron(m > 0, np.ones((12, 12), bool))
    assert (out[expect] == GREY).all() and (out[~expect] == DIMMED).all()


def test_bilinear_mask_is_the_papers_view():
    m = some_map()
    out = render.mask_image(grey(), m)
    means = patch_means(out)
    assert ((means > (GREY + DIMMED) / 2) == (m > 0)).all()
    a = np.asarray(out)[..., 0]
    assert a[4 * 12 + 12, 5 * 12 + 12] == GREY            # inside the 2x2 active block: full brightness
    assert a[0, 95] == DIMMED                               # far from any active patch: dimmed to 12%
    thresholded = patch_means(render.mask_image(grey(), m, threshold=0.5))
    assert ((thresholded > (GREY + DIMMED) / 2) == (m > 0.5)).all()


def test_geometry_centre_crop_and_padding():
    # a centre-cropped view covers x in [16, 112) of a 128 x 96 image
    full = np.ones((8, 8))
    out = np.asarray(render.mask_image(grey(128, 96), full, box=(16, 0, 112, 96), smooth=False))[..., 0]
    assert (out[:, 16:112] == GREY).all() and (out[:, :16] == DIMMED).all() and (out[:, 112:] == DIMMED).all()
    # a padded view: 96 x 64 image padded to 96 x 96, so grid row r covers y in [12 r - 16, 12 r - 4)
    m = np.zeros((8, 8))
    m[0, :] = 1  # entirely in the padding
    m[2, 3] = 1  # y in [8, 20), x in [36, 48)
    out = np.asarray(render.mask_image(grey(96, 64), m, box=(0, -16, 96, 80), smooth=False))[..., 0]
    bright = out == GREY
    assert bright.sum() == 12 * 12 and bright[8:20, 36:48].all()


def test_heatmap_and_crop():
    m = some_map()
    assert np.array_equal(np.asarray(render.heatmap(grey(), np.zeros((8, 8)))), np.asarray(grey()))
    hot = np.asarray(render.heatmap(grey(), m, smooth=False)).astype(int)
    assert hot[5 * 12, 6 * 12, 0] > hot[5 * 12, 6 * 12, 2] + 100  # the strongest patch turns yellow
    assert hot[1 * 12, 2 * 12, 0] > hot[1 * 12, 2 * 12, 1]       # a weaker one red
    assert (hot[0, 95] == GREY).all()
    c = render.crop(grey(), m, threshold=0.5, margin=0)
    assert c.size == (24, 24)
    assert render.crop(grey(), np.zeros((8, 8))).size == (96, 96)
    assert render.render("crop", grey(), m, threshold=0.5, margin=0).size == (24, 24)
    with pytest.raises(UserError, match="unknown render mode"):
        render.render("masked", grey(), m)


def test_upsample_preserves_constants_and_weights_sum_to_one():
    up = render.upsample(np.full((3, 5), 2.5), (50, 30))
    assert up.shape == (30, 50) and np.allclose(up, 2.5)
