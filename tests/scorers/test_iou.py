import numpy as np
import pytest

from lmmsae.records import Explanation
from lmmsae.scorers.base import ScoringContext
from lmmsae.scorers.iou import IoUScorer, activation_mask, iou
from lmmsae.scorers.truth import named, truth_region

from scorer_helpers import indices_with, record_for


def explanation(text, latent=0):
    return Explanation(latent=latent, hookpoint="layers.2", explainer="test", text=text)


def test_iou_of_a_mask_with_itself_is_one_with_a_disjoint_one_zero_and_partial_by_hand(shapes):
    mask = shapes.sample(0).truth["objects"][0]["mask"]
    assert mask.any()
    assert iou(mask, mask) == 1.0
    assert iou(mask, ~mask) == 0.0
    a = np.zeros((4, 4), bool); a[:2, :2] = True          # 4 pixels
    b = np.zeros((4, 4), bool); b[:2, 1:3] = True         # 4 pixels, 2 shared
    assert iou(a, b) == pytest.approx(2 / 6)
    assert iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 0.0


def test_activation_mask_is_binarised_then_upsampled_to_the_image():
    grid = np.array([[0.7, 0.0], [0.0, 0.01]], np.float32)
    mask = activation_mask(grid, (8, 8), threshold=0.05)
    assert mask.shape == (8, 8)
    assert mask[:3, :3].all() and mask[:2, :4].all()       # the active patch, corner rounded by bilinear
    assert not mask[:, 4:].any() and not mask[4:, :].any()  # 0.01 <= threshold: inactive
    assert (mask == mask.T).all()


def test_truth_region_is_the_union_of_objects_matching_every_named_attribute(shapes):
    truth = next(s.truth for s in map(shapes.sample, range(50)) if len(s.truth["objects"]) >= 2)
    objs = truth["objects"]
    first = objs[0]
    colour_union = np.any([o["mask"] for o in objs if o["color"] == first["color"]], axis=0)
    assert (truth_region(first["color"], truth) == colour_union).all()
    exact = truth_region(f"{first['size']} {first['color']} {first['shape']}s at the {first['position']}", truth)
    assert (exact == first["mask"]).all()
    absent = next(c for c in ("red", "orange", "yellow", "green", "cyan", "blue", "purple")
                  if all(o["color"] != c for o in objs))
    assert not truth_region(absent, truth).any()
    anything = np.any([o["mask"] for o in objs], axis=0)
    assert (truth_region("the background", truth) == ~anything).all()
    assert truth_region("happiness", truth) is None
    assert named("upper left", truth) == {"row": {0}, "col": {0}}
    assert named("centre", truth) == {"row": {1}, "col": {1}}


def score_attribute(shapes, keep, right, wrong, pool):
    scorer = IoUScorer(IoUScorer.Options(k=5, baseline_draws=20))
    indices = indices_with(shapes, keep, 5)
    record = record_for(shapes, indices, keep, latent=0)
    ctx = ScoringContext(dataset=shapes, seed=0, labels={i + 1: text for i, text in enumerate(pool)})
    return scorer.score(record, explanation(right), ctx), scorer.score(record, explanation(wrong), ctx)


@pytest.mark.parametrize("keep,right,wrong", [
    (lambda o: o["color"] == "red", "red", "blue"),
    (lambda o: o["shape"] == "circle", "circles", "triangle"),
    (lambda o: o["row"] == 0 and o["col"] == 0, "top left", "bottom right"),
])
def test_true_explanations_beat_the_random_baseline_and_wrong_explanations(shapes, keep, right, wrong):
    pool = ["blue", "green", "star", "square", "bottom", "center", "large yellow", "small cross", "white background"]
    good, bad = score_attribute(shapes, keep, right, wrong, pool)
    assert good["status"] == "ok" and good["n"] == 5 and good["model"] == {"regions": "ground truth masks"}
    assert good["score"] > 0.25                     # patch-level maps of pixel masks: well below 1
    assert good["score"] > good["baseline_mean"] + 0.15
    assert good["score"] > bad["score"] + 0.15
    assert good["baseline"]["kind"] == "random-labels" and good["baseline"]["draws"] == 20


def test_images_baseline_puts_the_label_in_random_images(shapes):
    keep = lambda o: o["color"] == "green"
    record = record_for(shapes, indices_with(shapes, keep, 5), keep)
    scorer = IoUScorer(IoUScorer.Options(baseline="images", baseline_draws=8))
    out = scorer.score(record, explanation("green"), ScoringContext(dataset=shapes, seed=1))
    assert out["baseline"]["kind"] == "random-images" and out["baseline"]["draws"] == 8
    assert 0 <= out["baseline_mean"] < out["score"] - 0.15 and out["baseline_std"] >= 0


def test_labels_baseline_pairs_each_mask_with_its_own_image_when_examples_without_maps_are_dropped(shapes):
    keep = lambda o: o["color"] == "red"
    record = record_for(shapes, indices_with(shapes, keep, 5), keep)
    record.examples[0].activation_map = None  # e.g. a sample whose map was not cached: not scored
    scorer = IoUScorer(IoUScorer.Options(k=5, baseline_draws=4))
    ctx = ScoringContext(dataset=shapes, seed=0, labels={1: "red"})  # the only other label is this one
    out = scorer.score(record, explanation("red"), ctx)
    assert out["n"] == 4 and out["images"] == [e.sample_id for e in record.examples[1:]]
    assert out["score"] > 0.25
    assert out["baseline_mean"] == pytest.approx(out["score"])  # same label, same masks, same images
