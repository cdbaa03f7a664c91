import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from lmmsae.scorers.detection import auroc, balanced_accuracy, f1

sys.path.insert(0, str(Path(__file__).parents[1] / "explainers"))   # the explainer tests' fake API server
sys.path.insert(0, str(Path(__file__).parents[1] / "stages"))       # the oracle features.h5 writer


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
    """A model that says yes when the image has at least 6 pixels of the colour the prompt names; its
    P(yes) grows with the number of such pixels (n / (n + 6))."""
    from fake_lmm_server import COLOURS, images_in, verdict

    text = json.dumps(body)
    named = [c for c in COLOURS if re.search(rf"\b{c}\b", text)]
    images = images_in(body)
    if not named or not images:
        return verdict(0.0)
    arr = np.asarray(images[0].convert("RGB"), dtype=np.float32)
    near = int((np.abs(arr - np.array(COLOURS[named[0]], np.float32)).max(axis=-1) < 30).sum())
    return verdict(near / (near + 6))


@pytest.fixture
def server():
    from fake_lmm_server import FakeLMMServer

    server = FakeLMMServer(responder=colour_judge).start()
    yield server
    server.stop()


def api_judge(server, backend="openai-compatible", cache=None):
    from lmmsae.backends import build

    url = server.url + ("/v1" if backend == "openai-compatible" else "")
    return build(backend, {"model": "judge", "base_url": url, "max_retries": 0, "api_key_env": "JUDGE_KEY"},
                 cache=cache)


def red_feature(tmp_path, shapes, scorer):
    from truth_features import write_truth_features

    from lmmsae.stores.features import FeatureStore

    write_truth_features(tmp_path / "f.h5", shapes)
    with FeatureStore(tmp_path / "f.h5") as store:
        return store.record(0, dataset=shapes, **scorer.record_request())   # latent 0 fires on red objects


LABELS = {0: "red", 1: "circle", 2: "blue", 3: "top left"}


def test_detection_with_an_api_judge_separates_true_from_wrong_explanations(server, tmp_path, shapes):
    from lmmsae.records import Explanation
    from lmmsae.scorers.base import ScoringContext
    from lmmsae.scorers.detection import DetectionScorer

    scorer = DetectionScorer(DetectionScorer.Options(n_positive=4, n_negatives=4, baseline_draws=2))
    record = red_feature(tmp_path, shapes, scorer)
    assert len(record.held_out) == 4 and len(record.negatives) == 4
    ctx = ScoringContext(dataset=shapes, seed=0, judge=api_judge(server), labels=LABELS)
    right = scorer.score(record, Explanation(0, "layers.2", "t", text="red regions", label="red"), ctx)
    wrong = scorer.score(record, Explanation(0, "layers.2", "t", text="green regions", label="green"), ctx)
    assert right["score"] == 1.0 and right["f1"] == 1.0 and right["unparsed"] == 0
    assert right["auroc"] == 1.0 and "auroc_reason" not in right      # the server sent log-probabilities
    assert all(server.log[i]["body"]["logprobs"] is True for i in range(len(server.log)))
    assert sorted(right["kinds"]) == ["positive"] * 4 + ["random"] * 4
    assert wrong["score"] < 0.8
    assert right["baseline"]["kind"] == "random-labels" and right["baseline"]["draws"] == 2
    assert right["baseline_mean"] < right["score"]
    assert right["model"]["judge"] == "openai-compatible"


@pytest.mark.parametrize("backend", ["openai-compatible", "anthropic"])
def test_without_log_probabilities_auroc_is_null_and_says_why(server, tmp_path, shapes, backend, monkeypatch):
    from lmmsae.records import Explanation
    from lmmsae.scorers.base import ScoringContext
    from lmmsae.scorers.detection import DetectionScorer

    monkeypatch.setenv("JUDGE_KEY", "sk-judge-key-0123")
    server.logprobs = False  # an OpenAI-compatible server that ignores `logprobs`; Anthropic has none
    scorer = DetectionScorer(DetectionScorer.Options(n_positive=4, n_negatives=4, baseline_draws=0))
    record = red_feature(tmp_path, shapes, scorer)
    ctx = ScoringContext(dataset=shapes, seed=0, judge=api_judge(server, backend), labels=LABELS)
    out = scorer.score(record, Explanation(0, "layers.2", "t", text="red regions", label="red"), ctx)
    assert out["score"] == 1.0 and out["auroc"] is None
    assert out["auroc_reason"] == f"backend {backend!r} returns no log-probabilities"


def test_judges_answer_through_the_run_cache_so_a_rescore_pays_nothing(server, tmp_path, shapes):
    from lmmsae.backends.cache import ResponseCache
    from lmmsae.config import ComponentConfig
    from lmmsae.records import Explanation
    from lmmsae.scorers.base import ScoringContext
    from lmmsae.scorers.detection import DetectionScorer

    scorer = DetectionScorer(DetectionScorer.Options(n_positive=4, n_negatives=4, baseline_draws=1))
    record = red_feature(tmp_path, shapes, scorer)
    explanation = Explanation(0, "layers.2", "t", text="red regions", label="red")
    # the default judge is the run's explainer's backend, with the judge options on top
    run_explainer = ComponentConfig("openai-compatible", {"model": "judge", "base_url": server.url + "/v1",
                                                          "n_images": 3, "max_retries": 3})
    scores = []
    for _ in range(2):
        cache = ResponseCache(tmp_path / "responses.sqlite")
        scorer.options.judge_options = {"max_retries": 0}
        ctx = ScoringContext(dataset=shapes, seed=0, judge=run_explainer, labels=LABELS, cache=cache)
        scores.append(scorer.score(record, explanation, ctx))
        assert ctx.backend("", {"max_retries": 0}).options.max_retries == 0
        cache.close()
    assert len(server.log) == 16  # 8 images x (the label + 1 baseline label), asked once
    assert scores[0] == scores[1]


def test_detection_with_the_local_toy_llava_judge_reports_a_real_auroc(tmp_path, shapes):
    """The local backend returns the first token's log-probabilities, so AUROC is a number. The toy LLaVA
    learned 'is there a <colour> <shape> ?' (phase 3, docs/toyworld.md); asked for a colour alone, which it
    never saw, it says "no" to most images but still ranks red ones above the rest."""
    import torch

    from lmmsae.backends import build
    from lmmsae.records import Explanation
    from lmmsae.scorers.base import ScoringContext
    from lmmsae.scorers.detection import DetectionScorer

    torch.set_num_threads(1)
    scorer = DetectionScorer(DetectionScorer.Options(n_positive=4, n_negatives=4, baseline_draws=0,
                                                     prompt="<image> is there a {label} ?"))
    record = red_feature(tmp_path, shapes, scorer)
    ctx = ScoringContext(dataset=shapes, seed=0, judge=build("toy-llava"), labels=LABELS)
    out = scorer.score(record, Explanation(0, "layers.2", "t", text="red regions", label="red"), ctx)
    assert isinstance(out["auroc"], float) and 0.0 <= out["auroc"] <= 1.0 and "auroc_reason" not in out
    assert len(out["p_yes"]) == 8 and all(0.0 < p < 1.0 for p in out["p_yes"])
    said_yes = [k for k, a in zip(out["kinds"], out["answers"]) if a == "yes"]
    assert said_yes and set(said_yes) == {"positive"}  # it says yes only where red is
    positive = [p for p, k in zip(out["p_yes"], out["kinds"]) if k == "positive"]
    random_ = [p for p, k in zip(out["p_yes"], out["kinds"]) if k == "random"]
    assert max(positive) > 0.6 and max(random_) < 0.2 and out["auroc"] == pytest.approx(0.75)
