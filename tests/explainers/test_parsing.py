"""Parsing answers, the common-words aggregation and label refining."""

from __future__ import annotations

import pytest

from lmmsae.explainers.common_words import common_words
from lmmsae.explainers.parsing import parse_answer
from lmmsae.explainers.refine import parse_label, refine
from lmmsae.records import Explanation


@pytest.mark.parametrize("answer, status, text", [
    ("The regions show dogs.\n[EXPLANATION]: dog faces", "ok", "dog faces"),
    ("[EXPLANATION]: first\nthinking again\n[EXPLANATION]: Red circles.", "ok", "Red circles"),
    ("**[EXPLANATION]:** striped texture", "ok", "striped texture"),
    ("Explanation: wheels", "ok", "wheels"),
    ("[EXPLANATION]: Cannot explain", "unexplainable", None),
    ("[EXPLANATION]: Unable to explain.", "unexplainable", None),
    ("I think these are dogs.", "malformed", None),
    ("[EXPLANATION]:   ", "malformed", None),
    ("", "malformed", None),
])
def test_parse_tagged(answer, status, text):
    parsed = parse_answer(answer)
    assert (parsed.status, parsed.text) == (status, text)
    assert (parsed.reason is None) == (status == "ok")


def test_parse_plain_takes_the_whole_answer():
    assert parse_answer("  a large red   circle ", "plain").text == "a large red circle"
    assert parse_answer("", "plain").status == "malformed"


def test_common_words_keeps_what_most_descriptions_share_in_reading_order():
    descriptions = ["a large red circle at the top left", "a small red circle in the center",
                    "a large red circle at the bottom", "a small red circle at the top", "a large red square at the left"]
    assert common_words(descriptions, 0.8) == "red circle"
    assert common_words(descriptions, 1.0) == "red"
    assert common_words(descriptions, 0.6) == "large red circle"
    assert common_words(["a blue star", "a red cross"], 0.8) is None
    assert common_words([], 0.8) is None


def test_parse_label():
    assert parse_label("Sure.\n[LABEL]: Red circles.") == "Red circles"
    assert parse_label("striped texture of zebras and more words here", max_words=3) == "striped texture of"
    assert parse_label("") is None


def label_by_last_word(body):
    """A refiner model that labels by the last word of the explanation it is shown; answers nothing for "mute"."""
    text = body["messages"][-1]["content"][-1]["text"].split('"')[1]
    return "" if "mute" in text else f"[LABEL]: {text.split()[-1]}"


def test_refine_sets_labels_on_explained_features_only(monkeypatch):
    from fake_lmm_server import FakeLMMServer

    from lmmsae.backends import build

    server = FakeLMMServer(responder=label_by_last_word).start()
    try:
        refiner = build("openai-compatible", {"model": "m", "base_url": server.url + "/v1", "concurrency": 1,
                                              "max_retries": 0})
        items = [Explanation(0, "h", "x", "the regions are red circles"), Explanation(1, "h", "x", None, "failed", "r"),
                 Explanation(2, "h", "x", "please fail"), Explanation(3, "h", "x", "done", label="kept"),
                 Explanation(4, "h", "x", "mute")]
        server.inject("ok", "400")  # concurrency 1: the second request (feature 2's) is refused
        out = refine(items, refiner)
    finally:
        server.stop()
    assert [e.label for e in out] == ["circles", None, None, "kept", None]
    assert out[0].meta["label_by"] == "openai-compatible"
    assert "BadRequestError (400)" in out[2].meta["label_error"]
    assert out[4].meta["label_error"] == "no label in the refiner's answer ''"
    assert len(server.log) == 3  # explained features without a label only
