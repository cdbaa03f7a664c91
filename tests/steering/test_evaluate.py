import math

import pytest
import torch

from lmmsae.steering.evaluate import (concept_appeared, concept_rate, judge_concept, logit_kl, mentions,
                                      repetition, summarize, text_drift)


def test_mentions_whole_words_and_phrases():
    assert mentions("a large red circle", "red")
    assert not mentions("a large reddish circle", "red")
    assert mentions("A Red  Circle at the top", ["blue square", "red circle"])
    assert not mentions("a red square", "red circle")
    assert concept_rate(["red", "blue", "red star", "green"], "red") == 0.5
    assert math.isnan(concept_rate([], "red"))
    assert concept_appeared("a blue star", "a red star", "red")
    assert not concept_appeared("a red star", "a red circle", "red")


def test_repetition_and_drift():
    assert repetition("a b c d") == 0.0
    assert repetition("red red red red red") == pytest.approx(1 - 1 / 4)
    d = text_drift("a large red circle", "red red red red red red red red")
    assert d["changed"] and d["length_original"] == 4 and d["length_steered"] == 8
    assert d["length_ratio"] == 2.0 and d["repetition_steered"] == pytest.approx(6 / 7)
    assert text_drift("x", "x")["changed"] is False


def test_logit_kl_known_values():
    clean = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    steered = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert logit_kl(clean, clean) == [0.0]
    assert logit_kl(clean, steered, torch.tensor([[False, True]])) == [pytest.approx(expected)]
    assert logit_kl(clean, steered) == [pytest.approx(expected / 2)]
    assert math.isnan(logit_kl(clean, steered, torch.tensor([[False, False]]))[0])


def test_judge_concept_reads_the_verdict():
    class Judge:
        def __init__(self, reply):
            self.reply, self.prompts = reply, []

        def ask(self, images, prompt):
            self.prompts.append(prompt)
            return self.reply

    j = Judge("Yes.")
    assert judge_concept(j, "a red circle", "the colour red") is True
    assert "a red circle" in j.prompts[0] and "the colour red" in j.prompts[0]
    assert judge_concept(Judge("No"), "x", "y") is False
    assert judge_concept(Judge("maybe"), "x", "y") is None


def test_summarize_rates():
    recs = [{"original": "a blue star", "steered": "a red star", "kl": 0.5},
            {"original": "a red circle", "steered": "a red circle", "kl": 0.0},
            {"original": "a green cross", "steered": "a green cross", "kl": None}]
    s = summarize(recs, "red")
    assert s["n"] == 3 and s["changed"] == pytest.approx(1 / 3)
    assert s["concept_original"] == pytest.approx(1 / 3) and s["concept_steered"] == pytest.approx(2 / 3)
    assert s["concept_appeared"] == pytest.approx(1 / 3) and s["kl"] == 0.25
