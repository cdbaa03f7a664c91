import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from lmmsae.scorers.detection import auroc, balanced_accuracy, f1, parse_yes_no

sys.path.insert(0, str(Path(__file__).parents[1] / "explainers"))   # the explainer tests' fake API server
sys.path.insert(0, str(Path(__file__).parents[1] / "stages"))       # the oracle features.h5 writer


def test_parse_yes_no_reads_the_first_verdict():
    assert parse_yes_no("Yes.") is True
    assert parse_yes_no("no") is False
    assert parse_yes_no("Yes, although no red is visible") is True
    assert parse_yes_no("No - yes would be wrong") is False
    assert parse_yes_no("maybe") is None
    assert parse_yes_no("") is None and parse_yes_no(None) is None
    assert parse_yes_no("nothing here, yesterday") is None   # words, not substrings


def test_balanced_accuracy_and_f1_by_hand():
    truth = [True, True, True, True, False, False]
    pred = [True, True, True, False, True, False]
    # TPR 3/4, TNR 1/2 -> 0.625; TP 3 FP 1 FN 1 -> F1 6/8
    assert balanced_accuracy(truth, pred) == pytest.approx(0.625)
    assert f1(truth, pred) == pytest.approx(0.75)
    assert balanced_accuracy(truth, [True] * 6) == pytest.approx(0.5)
    assert balanced_accuracy([True, True], [True, False]) is None
    assert f1([False, False], [False, False]) == 0.0


def test_auroc_by_hand_with_ties():
    truth = [True, True, False, False]
    # pairs (pos, neg): (0.9,0.1)>,(0.9,0.4)>,(0.4,0.1)>,(0.4,0.4)= -> (3 + 0.5)/4
    assert auroc(truth, [0.9, 0.4, 0.1, 0.4]) == pytest.approx(0.875)
    assert auroc(truth, [1, 1, 0, 0]) == 1.0
    assert auroc(truth, [0, 0, 1, 1]) == 0.0
    assert auroc([True], [0.3]) is None


# ---------------------------------------------------------------- the scorer with a real API backend


def colour_judge(body):
    """A model that says yes when the image has at least 6 pixels of the colour the prompt names."""
    from fake_lmm_server import COLOURS, images_in

    text = json.dumps(body)
    named = [c for c in COLOURS if re.search(rf"\b{c}\b", text)]
    images = images_in(body)
    if not named or not images:
        return "No."
    arr = np.asarray(images[0].convert("RGB"), dtype=np.float32)
    near = (np.abs(arr - np.array(COLOURS[named[0]], np.float32)).max(axis=-1) < 30).sum()
    return "Yes, it does." if near >= 6 else "No, it does not."



@pytest.fixture
def judge():
    from fake_lmm_server import FakeLMMServer

    from lmmsae.explainers.openai_compatible import OpenAICompatibleExplainer

    server = FakeLMMServer(responder=colour_judge).start()
    yield OpenAICompatibleExplainer(OpenAICompatibleExplainer.Options(model="judge", base_url=server.url + "/v1",
                                                                      max_retries=0), name="judge")
    server.stop()


def test_detection_with_an_api_judge_separates_true_from_wrong_explanations(judge, tmp_path, shapes):
    from truth_features import write_truth_features

    from lmmsae.records import Explanation
    from lmmsae.scorers.base import ScoringContext
    from lmmsae.scorers.detection import DetectionScorer
    from lmmsae.stores.features import FeatureStore

    write_truth_features(tmp_path / "f.h5", shapes)
    scorer = DetectionScorer(DetectionScorer.Options(n_positive=4, n_negatives=4, baseline_draws=2))
    ctx = ScoringContext(dataset=shapes, seed=0, judge=judge, labels={0: "red", 1: "circle", 2: "blue", 3: "top left"})
    with FeatureStore(tmp_path / "f.h5") as store:
        record = store.record(0, dataset=shapes, **scorer.record_request())   # latent 0 fires on red objects
    assert len(record.held_out) == 4 and len(record.negatives) == 4
    right = scorer.score(record, Explanation(0, "layers.2", "t", text="red regions", label="red"), ctx)
    wrong = scorer.score(record, Explanation(0, "layers.2", "t", text="green regions", label="green"), ctx)
    assert right["score"] == 1.0 and right["f1"] == 1.0 and right["unparsed"] == 0
    assert right["auroc"] is None                       # the API gives no probabilities
    assert sorted(right["kinds"]) == ["positive"] * 4 + ["random"] * 4
    assert wrong["score"] < 0.8
    assert right["baseline"]["kind"] == "random-labels" and right["baseline"]["draws"] == 2
    assert right["baseline_mean"] < right["score"]
    assert right["model"]["judge"] == "judge"
