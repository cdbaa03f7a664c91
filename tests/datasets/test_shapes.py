"""The toy world's shapes dataset: determinism, ground truth that matches the pixels, the grammar."""

import subprocess
import sys

import numpy as np
import pytest

from lmmsae.datasets.shapes import (BACKGROUNDS, COLORS, DIM, POSITIONS, SHAPES, SIZES, ShapesDataset,
                                    background_view, caption_for, describe_background, describe_object,
                                    masked_view, object_view, parse_background, parse_caption, patch_mask,
                                    question_for)


@pytest.fixture(scope="module")
def ds():
    return ShapesDataset(ShapesDataset.Options(n=400, seed=0))


@pytest.fixture(scope="module")
def samples(ds):
    return [ds.sample(i) for i in range(200)]


def test_same_seed_and_index_give_identical_pixels_and_truth(ds):
    for i in (0, 7, 399):
        a, b = ds.sample(i), ShapesDataset(ShapesDataset.Options(n=400, seed=0)).sample(i)
        assert a.id == b.id
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.truth["caption"] == b.truth["caption"] and a.truth["background"] == b.truth["background"]
        for oa, ob in zip(a.truth["objects"], b.truth["objects"]):
            assert np.array_equal(oa["mask"], ob["mask"])
            assert {k: v for k, v in oa.items() if k != "mask"} == {k: v for k, v in ob.items() if k != "mask"}


def test_random_access_matches_iteration_and_seeds_and_splits_differ(ds):
    it = list(ds.iter_from(5, 8))
    assert [s.id for s in it] == [ds.sample(i).id for i in range(5, 8)]
    assert np.array_equal(np.asarray(it[0].image), np.asarray(ds.sample(5).image))
    other_seed = ShapesDataset(ShapesDataset.Options(n=400, seed=1)).sample(5)
    other_split = ShapesDataset(ShapesDataset.Options(n=400, seed=0, split="train")).sample(5)
    for other in (other_seed, other_split):
        assert not np.array_equal(np.asarray(other.image), np.asarray(it[0].image))


def test_len_bounds_and_bad_options(ds):
    assert len(ds) == 400
    with pytest.raises(IndexError):
        ds.sample(400)
    with pytest.raises(ValueError):
        ShapesDataset(ShapesDataset.Options(split="nope"))


def test_images_are_rgb_of_the_requested_size_with_empty_prompt(samples):
    small = ShapesDataset(ShapesDataset.Options(n=3, image_size=64)).sample(0)
    assert small.image.size == (64, 64) and small.truth["objects"][0]["mask"].shape == (64, 64)
    for s in samples[:20]:
        assert s.image.mode == "RGB" and s.image.size == (96, 96)
        assert s.prompt == ""


def test_one_to_three_objects_in_distinct_cells_with_valid_labels(samples):
    counts = set()
    for s in samples:
        objs = s.truth["objects"]
        counts.add(len(objs))
        assert 1 <= len(objs) <= 3
        cells = [(o["row"], o["col"]) for o in objs]
        assert len(set(cells)) == len(cells)
        assert cells == sorted(cells)  # reading order
        assert s.truth["background"] in BACKGROUNDS
        for o in objs:
            assert o["shape"] in SHAPES and o["color"] in COLORS and o["size"] in SIZES
            assert 0 <= o["row"] <= 2 and 0 <= o["col"] <= 2
            assert o["position"] == POSITIONS[3 * o["row"] + o["col"]]
            assert o["mask"].dtype == bool and o["mask"].shape == (96, 96)
    assert counts == {1, 2, 3}
    assert {s.truth["background"] for s in samples} == set(BACKGROUNDS)


def test_masks_hold_the_object_colour_and_lie_in_the_objects_cell(samples):
    for s in samples[:60]:
        img = np.asarray(s.image).astype(int)
        masks = [o["mask"] for o in s.truth["objects"]]
        for o, m in zip(s.truth["objects"], masks):
            assert m.sum() > 60  # even small objects cover a fair number of pixels
            diff = np.abs(img - np.asarray(o["rgb"])).max(axis=2)
            # a mask pixel is at least half covered: at most half-way from the object's colour
            assert (diff[m] <= 128).all()
            # pixels whose 3x3 neighbourhood is all mask are fully covered: exactly the object's colour
            pad = np.pad(m, 1)
            interior = np.logical_and.reduce([pad[1 + dy:97 + dy, 1 + dx:97 + dx]
                                              for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            assert interior.sum() > 0.3 * m.sum()
            assert (diff[interior] == 0).all()
            # and no pixel outside the mask has the object's exact colour next to it
            assert not ((diff == 0) & ~m).any()
            ys, xs = np.nonzero(m)
            assert (ys // 32 == o["row"]).all() and (xs // 32 == o["col"]).all()
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()


def test_large_objects_are_larger_than_small_ones_of_the_same_shape(samples):
    area = {}
    for s in samples:
        for o in s.truth["objects"]:
            area.setdefault((o["shape"], o["size"]), []).append(o["mask"].sum())
    for shape in SHAPES:
        assert max(area[(shape, "small")]) < min(area[(shape, "large")])


def test_captions_follow_the_grammar_and_parse_back(samples):
    for s in samples:
        objs = s.truth["objects"]
        cap = s.truth["caption"]
        background = describe_background(s.truth["background"])
        assert cap == " and ".join(describe_object(o) for o in objs) + " on " + background
        assert cap == caption_for(list(reversed(objs)), s.truth["background"])
        parsed = parse_caption(cap)
        assert parsed == [{k: o[k] for k in ("size", "color", "shape", "position")} for o in objs]
        assert parse_background(cap) == parse_background(background) == s.truth["background"]
        assert parse_caption(background) == []
    one = {"size": "large", "color": "red", "shape": "circle", "row": 0, "col": 0, "position": "top left"}
    two = {"size": "small", "color": "blue", "shape": "square", "row": 1, "col": 1, "position": "center"}
    assert caption_for([two, one]) == "a large red circle at the top left and a small blue square in the center"
    assert caption_for([one], "checkerboard") == "a large red circle at the top left on a checkered background"
    assert [describe_background(b) for b in BACKGROUNDS] == [
        "a black background", "a grey background", "a white background", "a striped background",
        "a checkered background", "a noisy background"]
    assert parse_caption("a red circle") is None
    assert parse_background("a red circle") is None and parse_background("a plaid background") is None
    assert question_for("red", "circle") == "is there a red circle ?"


def test_background_view_keeps_only_whole_object_free_patches(samples):
    patch = 12
    for i, s in enumerate(samples[:30]):
        view = np.asarray(background_view(s, np.random.default_rng(i), patch)).astype(np.float32)
        img = np.asarray(s.image).astype(np.float32)
        cells = lambda a: a.reshape(8, patch, 8, patch, 3).transpose(0, 2, 1, 3, 4).reshape(8, 8, -1)  # noqa: E731
        kept = (cells(view) == cells(img)).all(-1)
        dimmed = (cells(view) == cells(np.rint(img * DIM))).all(-1)
        assert (kept | dimmed).all()  # whole patches, kept or dimmed
        shown = kept & ~dimmed
        objects = np.zeros(img.shape[:2], bool)
        for o in s.truth["objects"]:
            objects |= o["mask"]
        assert not (np.kron(shown, np.ones((patch, patch), bool)) & objects).any()
        assert shown.any() or s.truth["background"] == "black"


def test_masked_view_dims_exactly_the_pixels_outside_the_mask(samples):
    s = next(x for x in samples if len(x.truth["objects"]) == 3)
    img = np.asarray(s.image).astype(np.float32)
    keep = s.truth["objects"][1]["mask"]
    view = np.asarray(masked_view(s.image, keep)).astype(np.float32)
    assert np.array_equal(view[keep], img[keep])
    assert np.abs(view[~keep] - np.rint(img[~keep] * DIM)).max() == 0
    assert abs(DIM - 0.12) < 1e-9
    assert np.array_equal(np.asarray(object_view(s, 1)), view.astype(np.uint8))
    with pytest.raises(ValueError):
        masked_view(s.image, keep[:10])


def test_patch_mask_grows_to_whole_patches():
    m = np.zeros((96, 96), bool)
    m[13, 30] = True
    p = patch_mask(m, 12)
    assert p.sum() == 144 and p[12:24, 24:36].all()
    s = ShapesDataset(ShapesDataset.Options(n=1)).sample(0)
    view = np.asarray(object_view(s, 0, patch=12))
    assert np.array_equal(view[s.truth["objects"][0]["mask"]], np.asarray(s.image)[s.truth["objects"][0]["mask"]])


def test_fast_and_torch_free():
    code = ("import sys, time; from lmmsae.datasets.shapes import ShapesDataset; "
            "ds = ShapesDataset(ShapesDataset.Options(n=300)); t = time.perf_counter(); "
            "[ds.sample(i) for i in range(300)]; dt = (time.perf_counter() - t) / 300; "
            "print('torch' in sys.modules, dt)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert float(out[1]) < 0.01  # ~1 ms per 96 px image on one core


def test_registered_as_the_shapes_dataset():
    from lmmsae.default_plugins import datasets

    seen = {}
    datasets.register_datasets(lambda name, target, **kw: seen.setdefault(name, target))
    assert seen["shapes"] == "lmmsae.datasets.shapes:ShapesDataset"


def test_probes_are_true_to_the_ground_truth():
    import random

    from lmmsae.datasets.shapes import POSITIONS, probe

    ds = ShapesDataset(ShapesDataset.Options(n=60, image_size=48))
    rng = random.Random(0)
    for i in range(60):
        truth = ds.sample(i).truth
        pairs = {(o["color"], o["shape"]) for o in truth["objects"]}
        cells = {o["position"]: (o["color"], o["shape"]) for o in truth["objects"]}
        for present in (True, False):
            c, s, where = probe(truth, rng, present)
            assert where is None and ((c, s) in pairs) == present
            c, s, where = probe(truth, rng, present, positional=True)
            assert where in POSITIONS and (cells.get(where) == (c, s)) == present
    assert question_for("red", "circle", "top left") == "is there a red circle at the top left ?"
    assert question_for("red", "circle", "center") == "is there a red circle in the center ?"
