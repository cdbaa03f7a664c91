"""The report in headless Chromium: sorting, filtering and searching the index, image toggles, no
broken images, no console errors, model text shown as text, the compare page's difference column,
and the index's load time (navigation timing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from small_run import IMG_TEXT, SCRIPT_TEXT
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from lmmsae.jsonl import read_jsonl
from lmmsae.report.data import read_all_scores, read_explanation_files
from lmmsae.report.index import score_parts


def visible_rows(driver, table="features"):
    return [r for r in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr") if r.is_displayed()]


def column(driver, title: str, table="features") -> int:
    heads = driver.find_elements(By.CSS_SELECTOR, f"#{table} thead th")
    return [h.text.replace("▲", "").replace("▼", "").strip() for h in heads].index(title)


def values(driver, index: int, table="features") -> list[float | None]:
    cells = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')].filter(r => !r.hidden)"
        ".map(r => r.cells[arguments[1]].getAttribute('data-v'))", f"#{table}", index)
    return [float(c) if c not in ("", None) else None for c in cells]


def load_all_images(driver) -> list[dict]:
    """Make lazy images load, wait for them, and return those that failed."""
    driver.execute_script("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? 1 : new Promise(r => i.onload = i.onerror = r)))"
        ".then(() => done([...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.src)));")


def rows_of(run: Path) -> dict[tuple[int, str], dict]:
    """(latent, explainer as the index names it) -> {text, iou delta} for every row the index should show."""
    out = {}
    for folder, suffix in (("explanations", ""), ("compare/explanations", " (compare)")):
        scores = read_all_scores(run, folder.replace("explanations", "scores")).get("iou", {})
        for explainer, records in read_explanation_files(run, folder).items():
            delta = {int(r["latent"]): score_parts(r)[2] for r in scores.get(explainer, [])}
            for (_, latent), rec in records.items():
                text = f"{rec['label'] or ''} {rec['text'] or ''}" if rec["status"] == "ok" else ""
                out[(latent, explainer + suffix)] = {"text": text.lower(), "iou": delta.get(latent)}
    return out


def shown_rows(driver) -> set[tuple[int, str]]:
    return {(int(r.find_element(By.CSS_SELECTOR, "td").text), r.find_elements(By.TAG_NAME, "td")[2].text)
            for r in visible_rows(driver)}


def test_index_sorts_filters_and_searches(small_run, page):
    driver = page(small_run / "report" / "index.html")
    rows = rows_of(small_run)
    total = len(rows)
    assert shown_rows(driver) == set(rows) and len(visible_rows(driver)) == total
    assert driver.find_element(By.ID, "count").text == f"{total} of {total}"

    delta = column(driver, "iou Δ")
    driver.find_elements(By.CSS_SELECTOR, "#features thead th")[delta].click()
    shown = [v for v in values(driver, delta) if v is not None]
    assert shown == sorted(shown, reverse=True) and len(shown) == sum(r["iou"] is not None for r in rows.values())
    driver.find_elements(By.CSS_SELECTOR, "#features thead th")[delta].click()
    shown = values(driver, delta)
    assert [v for v in shown if v is not None] == sorted(v for v in shown if v is not None)
    if any(r["iou"] is None for r in rows.values()):  # the shipped toy explainer may explain every feature
        assert shown[-1] is None  # unscored rows (failed explanations) last either way

    latent = column(driver, "latent")
    driver.find_elements(By.CSS_SELECTOR, "#features thead th")[latent].click()
    assert values(driver, latent) == sorted(values(driver, latent), reverse=True)

    above = {key for key, r in rows.items() if r["iou"] is not None and r["iou"] > 0}
    Select(driver.find_element(By.CSS_SELECTOR, "[data-filter=baseline]")).select_by_value("iou:above")
    assert shown_rows(driver) == above and driver.find_element(By.ID, "count").text == f"{len(above)} of {total}"
    Select(driver.find_element(By.CSS_SELECTOR, "[data-filter=baseline]")).select_by_value("")

    Select(driver.find_element(By.CSS_SELECTOR, "[data-filter=explainer]")).select_by_value("heatmap (compare)")
    assert shown_rows(driver) == {key for key in rows if key[1] == "heatmap (compare)"} != set()
    Select(driver.find_element(By.CSS_SELECTOR, "[data-filter=explainer]")).select_by_value("")

    ok = [r["text"] for r in rows.values() if r["text"].strip() and "<" not in r["text"]]
    categories = {"colour", "shape", "size", "position", "background", "texture", "other"}  # the index searches these too
    word = next(w for t in ok for w in reversed(t.split()) if w not in categories)
    expected = {key for key, r in rows.items() if word in r["text"]}
    driver.find_element(By.ID, "q").send_keys(word.upper())
    assert shown_rows(driver) == expected
    assert all(word in r.find_element(By.CSS_SELECTOR, "td.expl").text.lower() for r in visible_rows(driver))
    driver.find_element(By.ID, "q").send_keys(" zzz-no-such-word")
    assert visible_rows(driver) == [] and driver.find_element(By.ID, "count").text == f"0 of {total}"

    assert load_all_images(driver) == []


def test_model_text_is_shown_as_text_and_never_runs(small_run, page):
    latents = [r["latent"] for r in read_jsonl(small_run / "explanations" / "toy-llava.jsonl")][-2:]
    features = small_run / "report" / "features"
    expected = {small_run / "report" / "index.html": ["<script>alert(1)</script>", "<img src=x onerror="],
                features / f"{latents[0]}.html": ["<script>alert(1)</script> and </script><!--"],
                features / f"{latents[1]}.html": ["<img src=x onerror="]}
    for path, texts in expected.items():
        driver = page(path)
        shown = driver.find_element(By.TAG_NAME, "main").text
        assert all(t in shown for t in texts), path
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text
        assert driver.title != "pwned"
        scripts = driver.find_elements(By.TAG_NAME, "script")
        assert [s.get_attribute("src").rsplit("/", 1)[-1] for s in scripts] == ["report.js"]
        assert not [i for i in driver.find_elements(By.TAG_NAME, "img") if i.get_attribute("src").endswith("/x")]
    html = (small_run / "report" / "features" / f"{latents[1]}.html").read_text()
    assert IMG_TEXT not in html and "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in html
    assert SCRIPT_TEXT not in (small_run / "report" / "index.html").read_text()


def test_feature_page_toggles_images_and_shows_everything(small_run, page):
    steered = next(read_jsonl(small_run / "steering" / "steer.jsonl"))
    latent = steered["feature"]
    driver = page(small_run / "report" / "features" / f"{latent}.html")
    images = driver.find_elements(By.CSS_SELECTOR, ".gallery img")
    assert len(images) == 4
    assert all(i.get_attribute("src").endswith("-mask.png") for i in images)
    for mode in ("heatmap", "crop", "image", "mask"):
        driver.find_element(By.CSS_SELECTOR, f".toggles button[data-mode={mode}]").click()
        assert [i.get_attribute("src").rsplit("/", 1)[-1] for i in images] == [f"{n}-{mode}.png" for n in range(4)]
        assert driver.find_element(By.CSS_SELECTOR, f"button[data-mode={mode}]").get_attribute("aria-pressed") == "true"
        assert load_all_images(driver) == []
    sizes = {mode: driver.execute_script("return [...document.querySelectorAll('.gallery img')].map(i => i.naturalWidth)")
             for mode in ("mask",)}
    assert all(w > 0 for w in sizes["mask"])

    explained = {lat: r for (_, lat), r in read_explanation_files(small_run)["toy-llava"].items()}
    table = driver.find_element(By.CSS_SELECTOR, "table.explanations").text
    rec = explained[latent]
    assert (rec["label"] or rec["text"] or "failed") .split()[0] in table
    assert driver.find_elements(By.CSS_SELECTOR, "svg.plot rect")  # the activation histogram has bars
    steering = driver.find_element(By.CSS_SELECTOR, "table.steering").text
    assert steered["steered"].strip()[:20] in steering and steered["original"].strip()[:20] in steering


def test_run_page_shows_every_metric_and_the_plots(small_run, page):
    from lmmsae.report.run_page import flatten

    driver = page(small_run / "report" / "run.html")
    hookpoint_dir = next((small_run / "sae").glob("*/metrics.json")).parent
    metrics = json.loads((hookpoint_dir / "metrics.json").read_text())
    driver.find_element(By.CSS_SELECTOR, "details summary").click()  # every metric, folded away at first
    shown = driver.find_element(By.CSS_SELECTOR, "table.metrics").text
    for path, _, definition in flatten(metrics):
        assert path in shown and definition.split("(")[0].strip() in shown
    headline = driver.find_element(By.CSS_SELECTOR, "table.sortable").text
    fvu = metrics["evaluation"]["fvu"]["value"]
    assert f"{fvu:.3g}" in headline and "CE recovered (zero)" in headline
    titles = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "svg.plot text.t")]
    assert {"loss", "FVU", "L0", "dead fraction", "feature density", "iou: toy-llava", "clip: toy-llava"} <= set(titles)
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.plot polyline")) == 4


def test_compare_page_sorts_by_the_difference_of_two_explainers(small_run, page):
    driver = page(small_run / "compare" / "index.html")
    scores = read_all_scores(small_run, "compare/scores")["iou"]
    a = {int(r["latent"]): r["score"] for r in scores["masked"] if r.get("score") is not None}
    b = {int(r["latent"]): r["score"] for r in scores["heatmap"] if r.get("score") is not None}
    scorers = [o.text for o in Select(driver.find_element(By.CSS_SELECTOR, "[data-diff=scorer]")).options]
    Select(driver.find_element(By.CSS_SELECTOR, "[data-diff=scorer]")).select_by_index(scorers.index("iou"))
    Select(driver.find_element(By.CSS_SELECTOR, "[data-diff=A]")).select_by_visible_text("heatmap")
    Select(driver.find_element(By.CSS_SELECTOR, "[data-diff=B]")).select_by_visible_text("masked")
    diff = len(driver.find_elements(By.CSS_SELECTOR, "#compare thead th")) - 1
    rows = driver.execute_script("return [...document.querySelectorAll('#compare tbody tr')].map(r => "
                                 "[r.cells[0].getAttribute('data-v'), r.cells[arguments[0]].getAttribute('data-v')])", diff)
    expected = {lat: b_ - a[lat] for lat, b_ in b.items() if lat in a}
    assert expected  # both explainers scored some features
    got = {int(lat): float(d) for lat, d in rows if d != ""}
    assert got.keys() == expected.keys() and all(got[k] == pytest.approx(expected[k], abs=1e-6) for k in got)
    ordered = [float(d) for _, d in rows if d != ""]
    assert ordered == sorted(ordered, reverse=True)
    texts = driver.find_element(By.ID, "compare").text
    assert "masked" in texts and "heatmap" in texts
    assert load_all_images(driver) == []


def test_index_load_is_timed_and_light(small_run, page, capsys):
    """The load time (navigation timing, best of three cold loads) is measured and shown, not asserted:
    speed is judged by benchmarks/bench_report.py on the default run's 200 features. What keeps it
    fast is asserted: no inline images, every picture lazy."""
    times = []
    for _ in range(3):
        driver = page(small_run / "report" / "index.html")
        times.append(driver.execute_script(
            "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"))
        driver.get("about:blank")
    with capsys.disabled():
        print(f"\nreport index.html of the small run: loaded in {min(times):.0f} ms (best of 3)")
    assert min(times) > 0
    html = (small_run / "report" / "index.html").read_text()
    assert "data:image" not in html and html.count("<img ") == html.count("loading='lazy'") > 0
