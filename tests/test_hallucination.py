import json
import math

import pytest
from PIL import Image

from lmmsae.errors import UserError
from lmmsae.hallucination import (chair, load_image, pope_metrics, read_pope, toy_chair, toy_mentions,
                                  toy_objects, toy_questions)


def test_read_pope_file(tmp_path):
    Image.new("RGB", (4, 4), "red").save(tmp_path / "a.jpg")
    lines = [{"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes"},
             {"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "answer": "No",
              "category": "adversarial"}]
    path = tmp_path / "pope.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    qs = read_pope(path)
    assert [q.label for q in qs] == ["yes", "no"] and qs[1].question_id == "2"
    assert qs[1].meta == {"category": "adversarial"}
    assert load_image(qs[0].image).size == (4, 4)


def test_read_pope_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_pope(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "a.jpg", "text": "Is there x?", "label": "maybe"}\n')
    with pytest.raises(UserError, match="bad.jsonl:1: label 'maybe' is not yes/no"):
        read_pope(bad)
    bad.write_text("{not json\n")
    with pytest.raises(UserError, match="not valid JSON"):
        read_pope(bad)
    qs = read_pope(_one(tmp_path))
    with pytest.raises(UserError, match="--image-root"):
        load_image(qs[0].image)


def _one(tmp_path):
    p = tmp_path / "one.jsonl"
    p.write_text('{"image": "nope.jpg", "text": "Is there x?", "label": "yes"}\n')
    return p


def test_pope_metrics_known_values():
    labels = ["yes", "yes", "no", "no", "no", "no"]
    answers = ["Yes", "no", "yes", "No.", "no", "I don't know"]
    m = pope_metrics(answers, labels)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["yes_ratio"] == pytest.approx(2 / 6)
    assert m["hallucination_rate"] == 0.25 and m["unparsed"] == 1


def test_toy_questions_follow_ground_truth_in_each_pope_split():
    from collections import Counter

    from lmmsae.datasets.shapes import ShapesDataset

    ds = ShapesDataset(ShapesDataset.Options(n=40, image_size=48))
    samples = [ds.sample(i) for i in range(40)]
    by_id = {s.id: s for s in samples}
    frequency = Counter(p for s in samples for p in toy_objects(s.truth))
    for strategy in ("random", "popular", "adversarial"):
        qs = toy_questions(samples, n_per_image=2, strategy=strategy, seed=0)
        assert sum(q.label == "yes" for q in qs) == sum(q.label == "no" for q in qs) > 40
        for q in qs:
            color, shape = q.object.split()
            objs = toy_objects(by_id[q.meta["sample_id"]].truth)
            assert ((color, shape) in objs) == (q.label == "yes")
            assert q.text == f"is there a {color} {shape} ?" and q.meta["split"] == strategy
            if strategy == "adversarial" and q.label == "no":
                assert any(c == color or s == shape for c, s in objs)
            if strategy == "popular" and q.label == "no":  # no absent pair of this image is more frequent
                absent = [p for p in frequency if p not in objs]
                assert frequency[(color, shape)] >= sorted(frequency[p] for p in absent)[-2]
    assert toy_questions(samples, seed=1) != toy_questions(samples, seed=2)
    with pytest.raises(UserError, match="random, popular, adversarial"):
        toy_questions(samples, strategy="hard")


def test_chair_on_toy_captions():
    truth = {"objects": [{"color": "red", "shape": "circle"}, {"color": "blue", "shape": "square"}]}
    assert toy_mentions("a large red circle at the top and a small star") == [("red", "circle"), (None, "star")]
    caps = ["a large red circle at the top left and a small blue square at the bottom",
            "a large red circle at the top left and a small green square at the bottom",
            "a small star in the center"]
    c = toy_chair(caps, [truth] * 3)
    assert c["n_mentions"] == 5
    assert c["chair_i"] == pytest.approx(2 / 5) and c["chair_s"] == pytest.approx(2 / 3)
    plain = chair([["dog", "cat"], []], [{"dog"}, {"cat"}])
    assert plain["chair_i"] == 0.5 and plain["chair_s"] == 0.5
    assert math.isnan(chair([[]], [set()])["chair_i"])


def test_hallucination_command_on_a_tiny_model(tmp_path):
    import sys
    from pathlib import Path

    from click.testing import CliRunner

    sys.path.insert(0, str(Path(__file__).parent / "models"))
    from tiny import build_llava

    from lmmsae.commands.hallucination import hallucination

    ckpt = build_llava(tmp_path / "ckpt")
    result = CliRunner().invoke(hallucination, [
        "--out", str(tmp_path / "runs"), "--name", "h", "--model", "llava", "-o", f"model.checkpoint={ckpt}",
        "--dataset", "shapes", "-o", "dataset.n=6", "-o", "dataset.image_size=32", "--hookpoint", "layers.1",
        "--n-images", "4", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "POPE baseline: hallucination rate" in result.output and "CHAIR baseline" in result.output
    out = json.loads((tmp_path / "runs" / "h" / "hallucination" / "hallucination.json").read_text())
    assert out["n_questions"] == out["pope"]["baseline"]["n"] > 0
    assert set(out["chair"]) == {"baseline"}
    bad = CliRunner().invoke(hallucination, [
        "--out", str(tmp_path / "runs"), "--name", "h2", "--model", "llava", "-o", f"model.checkpoint={ckpt}",
        "--hookpoint", "layers.1", "--pope", str(tmp_path / "none.jsonl")])
    assert bad.exit_code != 0 and "does not exist" in str(bad.exception or bad.output)
