"""The report's parts on known inputs: escaping, plots, metric tables, curves."""

from __future__ import annotations

import re

from lmmsae.report import svg
from lmmsae.report.data import read_curves
from lmmsae.report.html import esc, num
from lmmsae.report.run_page import flatten, lookup


def test_escaping_turns_markup_into_text():
    assert esc("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert esc("<img src=x onerror='a()'>") == "&lt;img src=x onerror=&#x27;a()&#x27;&gt;"
    assert esc('" onmouseover="x') == "&quot; onmouseover=&quot;x"
    assert esc(None) == ""


def test_numbers_for_people():
    assert [num(None), num(float("nan")), num(1234), num(0.123456), num(True)] == ["-", "-", "1,234", "0.123", "True"]


def test_nice_ticks():
    assert svg.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(3, 97) == [20, 40, 60, 80]
    assert svg.nice_ticks(5, 5) == [5]


def test_histogram_counts_every_value_once_per_series():
    plot = svg.histogram([("a", [0, 0.1, 0.9, 1.0, None]), ("b", [0.5])], "t", "x", bins=2, range_=(0, 1))
    bars = re.findall(r"<title>(\w+): (\d+) in \[([^,]+), ([^)]+)\)</title>", plot)
    assert bars == [("a", "2", "0", "0.5"), ("a", "2", "0.5", "1"), ("b", "1", "0.5", "1")]
    assert "<title>" not in svg.histogram([("a", [])], "empty", "x") and "no values" in svg.histogram([("a", [])], "e", "x")


def test_line_chart_skips_missing_points_and_escapes_labels():
    plot = svg.line_chart([0, 1, 2, 3], [1.0, None, float("nan"), 2.0], "<loss>", "tokens", "loss")
    points = re.search(r"points='([^']+)'", plot).group(1).split()
    assert len(points) == 2 and "&lt;loss&gt;" in plot and "<loss>" not in plot


def test_flatten_gives_every_value_with_a_definition():
    metrics = {"training": {"tokens": 10, "last_batch": {"fvu": 0.5}},
               "evaluation": {"fvu": {"value": 0.25, "definition": "fraction of variance unexplained"},
                              "by_token_kind": {"image": {"l0": {"value": 3.0, "definition": "per image token"}}}},
               "other": {"thing": 1}}
    assert list(flatten(metrics)) == [
        ("training.tokens", 10, "training tokens seen (all ranks together)"),
        ("training.last_batch.fvu", 0.5, "on the last training batch"),
        ("evaluation.fvu", 0.25, "fraction of variance unexplained"),
        ("evaluation.by_token_kind.image.l0", 3.0, "per image token"),
        ("other.thing", 1, "")]
    assert lookup(metrics, "evaluation.fvu") == 0.25 and lookup(metrics, "training.tokens") == 10
    assert lookup(metrics, "splice.zero.ce_loss_recovered") is None


def test_curves_keep_the_last_point_of_a_repeated_step(tmp_path):
    folder = tmp_path / "sae" / "layers.2"
    folder.mkdir(parents=True)
    (folder / "curve.jsonl").write_text('{"step": 10, "tokens": 100, "fvu": 0.9}\n{"step": 20, "tokens": 200, "fvu": 0.5}\n'
                                        '{"step": 20, "tokens": 200, "fvu": 0.4}\n{"step": 30, "tok')
    assert read_curves(tmp_path) == {"layers.2": [{"step": 10, "tokens": 100, "fvu": 0.9},
                                                  {"step": 20, "tokens": 200, "fvu": 0.4}]}

