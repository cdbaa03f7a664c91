"""The toy model's yes/no scoring reads parsed verdicts (True / False / None), not reply strings."""

import pytest

from lmmsae.text import parse_yes_no
from lmmsae.toyworld.evaluate import yes_no_scores


def test_yes_no_scores_count_verdicts_on_present_and_absent_objects():
    replies = ["yes", "yes", "no", "maybe", "no", "yes", "no", "no"]
    present = [True, True, True, True, False, False, False, False]
    m = yes_no_scores([parse_yes_no(r) for r in replies], present)
    assert m == {"questions": 8, "accuracy": 0.625, "accuracy_present": 0.5, "accuracy_absent": 0.75,
                 "yes_rate": 0.375, "other_replies": 1}


@pytest.mark.parametrize("always, present, absent", [("yes", 1.0, 0.0), ("no", 0.0, 1.0)])
def test_a_model_that_always_says_one_word_is_right_on_one_side_only(always, present, absent):
    m = yes_no_scores([parse_yes_no(always)] * 4, [True, False, True, False])
    assert (m["accuracy_present"], m["accuracy_absent"], m["accuracy"]) == (present, absent, 0.5)
