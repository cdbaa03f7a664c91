import numpy as np
import pytest

from lmmsae.scorers.categories import ask_category, keyword_categories
from lmmsae.summary import bootstrap_ci, rows, summarise, summarise_scores


def rec(latent, score, base, status="ok", std=1.0):
    return {"latent": latent, "score": score, "baseline_mean": base, "baseline_std": std, "status": status}


def test_summary_row_mean_baseline_delta_and_skips_by_hand():
    records = [rec(0, 30.0, 20.0), rec(1, 26.0, 20.0), rec(2, 19.0, 21.0), rec(3, None, None, status="skipped")]
    row = summarise(records)
    assert row["n"] == 3 and row["skipped"] == 1
    assert row["mean"] == pytest.approx(25.0)
    assert row["baseline_mean"] == pytest.approx(61 / 3)
    assert row["delta"] == pytest.approx((10 + 6 - 2) / 3)
    assert row["above_baseline"] == pytest.approx(2 / 3)
    lo, hi = row["ci"]
    assert 19.0 <= lo < 25.0 < hi <= 30.0


def test_bootstrap_ci_shrinks_with_more_data_and_is_seeded():
    rng = np.random.default_rng(0)
    small, large = rng.normal(5, 1, 20), rng.normal(5, 1, 2000)
    ci_small, ci_large = bootstrap_ci(small), bootstrap_ci(large)
    assert ci_large[1] - ci_large[0] < (ci_small[1] - ci_small[0]) / 4
    assert ci_large[0] < 5 < ci_large[1]
    assert bootstrap_ci(small) == ci_small
    assert bootstrap_ci([]) is None


def test_split_by_category_counts_a_feature_in_each_of_its_categories():
    scores = {"clip": {"toy": [rec(0, 30.0, 20.0), rec(1, 22.0, 20.0), rec(2, 24.0, 19.0)]}}
    cats = {"toy": {0: ["colour", "shape"], 1: ["colour"], 2: ["position"]}}
    summary = summarise_scores(scores, cats)
    split = summary["clip"]["toy"]
    assert split["all"]["n"] == 3
    assert split["by_category"]["colour"]["n"] == 2 and split["by_category"]["colour"]["mean"] == pytest.approx(26.0)
    assert split["by_category"]["shape"]["n"] == 1 and split["by_category"]["position"]["delta"] == pytest.approx(5.0)
    table = rows(summary)
    assert [r[2] for r in table] == ["all", "colour", "position", "shape"]
    assert table[0][3] == "3" and table[0][4].startswith("25.33")


def test_keyword_categories_cover_toy_attributes_and_paper_categories():
    assert keyword_categories("large red circles at the top left") == ["colour", "shape", "size", "position"]
    assert keyword_categories("striped background") == ["background", "texture"]
    assert keyword_categories("wooden table in a kitchen") == ["material", "scene", "object"]
    assert keyword_categories("happiness") == ["other"]


def test_ask_category_takes_the_first_category_the_backend_names():
    class Backend:  # a stand-in model answering in free text, as real ones do
        def __init__(self, answer):
            self.answer, self.prompts = answer, []

        def ask(self, images, prompt):
            self.prompts.append(prompt)
            return self.answer

    judge = Backend("Texture, I think (maybe material).")
    assert ask_category(judge, "rough bark", ["scene", "material", "texture"]) == ["texture"]
    assert "rough bark" in judge.prompts[0] and "scene, material, texture" in judge.prompts[0]
    assert ask_category(Backend("no idea"), "x", ["scene"]) == ["other"]


def test_terminal_table_fits_80_columns_without_cutting_a_cell():
    import io

    from rich.console import Console

    from lmmsae.summary import table

    rng = np.random.default_rng(1)
    records = [rec(i, float(s), float(b), std=2.1) for i, (s, b) in enumerate(zip(rng.normal(16.4, 9, 200),
                                                                                rng.normal(11.9, 3, 200)))]
    categories = {i: [["colour", "material", "texture", "object"][i % 4]] for i in range(200)}
    summary = summarise_scores({"clip": {"openai-compatible": records, "toy-llava": records},
                                "iou": {"openai-compatible": [rec(i, 0.0731, 0.0456) for i in range(9)]}},
                               {"openai-compatible": categories})
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(table(summary))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out.getvalue()
    row = summary["clip"]["openai-compatible"]["all"]
    cells = [f"{row['mean']:.2f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]", f"{row['baseline_mean']:.2f} ±2.100",
             f"{row['delta']:.3f}", "200", f"{100 * row['above_baseline']:.0f}%"]
    first = [line for line in lines if line.strip().startswith("openai-compatible")][0]
    assert all(cell in first for cell in cells), (first, cells)
    assert sum(1 for line in lines if line.strip().startswith(("colour", "material", "texture", "object"))) == 8  # two scorers
