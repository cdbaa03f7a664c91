"""Parsing answers, the common-words aggregation, label refining, and the response cache."""

from __future__ import annotations

import pytest
from PIL import Image

from lmmsae.explainers.base import Answer, Explainer, Query
from lmmsae.explainers.cache import ResponseCache, request_key
from lmmsae.explainers.local import common_words
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


class Echo(Explainer):
    """A judge that labels by the last word of the explanation it is shown."""

    def explain(self, records):
        return iter(())

    def ask(self, images, prompt):
        text = prompt.split('"')[1]
        if "fail" in text:
            raise RuntimeError("backend down")
        return f"[LABEL]: {text.split()[-1]}"


def test_refine_sets_labels_on_explained_features_only():
    items = [Explanation(0, "h", "x", "the regions are red circles"), Explanation(1, "h", "x", None, "failed", "r"),
             Explanation(2, "h", "x", "please fail"), Explanation(3, "h", "x", "done", label="kept")]
    out = refine(items, Echo(name="echo"))
    assert [e.label for e in out] == ["circles", None, None, "kept"]
    assert out[0].meta["label_by"] == "echo" and "backend down" in out[2].meta["label_error"]


def test_cache_key_depends_on_model_prompt_and_pixels_and_persists(tmp_path):
    a = Image.new("RGB", (8, 8), (10, 20, 30))
    b = a.copy()
    b.putpixel((3, 3), (10, 20, 31))
    q = Query([a], "p", "s")
    key = request_key({"model": "m"}, q)
    assert key == request_key({"model": "m"}, Query([a.copy()], "p", "s"))
    others = [request_key({"model": "n"}, q), request_key({"model": "m"}, Query([b], "p", "s")),
              request_key({"model": "m"}, Query([a], "p2", "s")), request_key({"model": "m"}, Query([a], "p", "")),
              request_key({"model": "m"}, q, variant=1), request_key({"model": "m"}, Query([a, a], "p", "s"))]
    assert len({key, *others}) == 7
    cache = ResponseCache(tmp_path / "r.sqlite")
    cache.put(key, "m", Answer("hello", tokens=12, usage={"input_tokens": 10}))
    cache.close()
    again = ResponseCache(tmp_path / "r.sqlite")
    hit = again.get(key)
    assert hit.text == "hello" and hit.cached and hit.tokens == 0 and hit.usage == {"input_tokens": 10}
    assert again.get(others[0]) is None and len(again) == 1
