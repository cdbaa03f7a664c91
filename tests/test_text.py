import math

import pytest

from lmmsae.text import parse_yes_no, words, yes_probability


def test_words_are_lower_case_tokens_without_punctuation():
    assert words("A large RED circle, at the top-left!") == ["a", "large", "red", "circle", "at", "the", "top", "left"]
    assert words("it's 3 stars") == ["it's", "3", "stars"]
    assert words(None) == [] and words("") == []


def test_parse_yes_no_reads_the_first_verdict():
    assert parse_yes_no("Yes.") is True
    assert parse_yes_no("no") is False
    assert parse_yes_no("Yes, although no red is visible") is True
    assert parse_yes_no("No - yes would be wrong") is False
    assert parse_yes_no("True") is True and parse_yes_no("false.") is False
    assert parse_yes_no("maybe") is None and parse_yes_no("I cannot tell") is None
    assert parse_yes_no("") is None and parse_yes_no(None) is None
    assert parse_yes_no("nothing here, yesterday") is None   # words, not substrings


def test_yes_probability_normalises_over_the_two_answers():
    # P(yes) = 0.6 spread over " Yes" and "yes", P(no) = 0.2: 0.6 / 0.8
    logprobs = {" Yes": math.log(0.5), "yes": math.log(0.1), "No": math.log(0.2), "Maybe": math.log(0.2)}
    assert yes_probability(logprobs) == pytest.approx(0.75)
    assert yes_probability({"yes": 0.0}) == 1.0 and yes_probability({"▁no": -0.1}) == 0.0
    assert yes_probability({"maybe": -0.1}) is None
    assert yes_probability(None) is None and yes_probability({}) is None
