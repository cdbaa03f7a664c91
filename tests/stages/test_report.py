import json

import pytest

from truth_features import RIGHT, make_run

from lmmsae import artifacts


@pytest.fixture
def scored(tmp_path):
    from lmmsae.stages import score

    ctx = make_run(tmp_path, [{"name": "iou", "baseline_draws": 6}])
    metrics = ctx.run.file("sae/layers.2/metrics.json")
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"fvu": 0.125, "l0": 8.0, "dead_fraction": 0.25, "tokens": 1000}))
    ctx.adopt(artifacts.SAE_DIR)
    ctx.adopt(artifacts.FEATURES)  # made from that SAE
    score.run(ctx)
    return ctx


def test_report_summary_holds_sae_metrics_and_each_score_beside_its_baseline(scored, capsys):
    from lmmsae.stages import report

    report.run(scored)
    summary = json.loads(scored.run.file(artifacts.SUMMARY).read_text())
    assert summary["sae"] == {"layers.2": {"fvu": 0.125, "l0": 8.0, "dead_fraction": 0.25, "tokens": 1000}}
    right, wrong = summary["scores"]["iou"]["right"], summary["scores"]["iou"]["wrong"]
    assert right["all"]["n"] == 4 and right["all"]["skipped"] == 1
    assert right["all"]["mean"] > right["all"]["baseline_mean"] + 0.1
    assert right["all"]["mean"] > wrong["all"]["mean"] + 0.1
    assert right["all"]["ci"][0] <= right["all"]["mean"] <= right["all"]["ci"][1]
    assert set(right["by_category"]) == {"colour", "shape", "position"}
    assert right["by_category"]["colour"]["n"] == 2
    assert summary["table"]["rows"][0][:4] == ["iou", "right", "all", "4"]
    out = capsys.readouterr().out
    assert "SAE layers.2: fvu=0.125" in out and "random baseline" in out

    report = scored.run.file(artifacts.REPORT_DIR)
    html = (report / "index.html").read_text()
    assert "data:image" not in html and html.count("<tr data-explainer=") == 2 * 4  # 2 explainers x 4 features
    assert all(f"<b>{label}</b>" in html for label in RIGHT)
    assert sorted(p.name for p in (report / "features").iterdir()) == [f"{i}.html" for i in range(4)]
    for latent in range(4):  # the top 6 images in 4 views, named as the feature page links them
        names = sorted(p.name for p in (report / "img" / str(latent)).iterdir())
        assert names == sorted(f"{r}-{m}.png" for r in range(6) for m in ("mask", "heatmap", "crop", "image"))
        page = (report / "features" / f"{latent}.html").read_text()
        assert all(f"../img/{latent}/{n}" in page for n in names)
    run_page = (report / "run.html").read_text()
    assert "<code>fvu</code></td><td>0.125</td>" in run_page and "<code>dead_fraction</code>" in run_page
    assert {p.name for p in (report / "assets").iterdir()} == {"report.css", "report.js"}
    assert not scored.run.file("report.partial").exists()
    assert scored.run.is_complete(artifacts.REPORT_DIR)


def test_report_is_rebuilt_when_scores_change_and_reused_otherwise(scored):
    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.stages import report, score

    report.run(scored)
    path = scored.run.file(artifacts.SUMMARY)
    first = path.stat().st_mtime_ns
    report.run(RunContext(scored.config, scored.run))
    assert path.stat().st_mtime_ns == first
    assert RunContext(scored.config, scored.run).units("report")[0].status == "current"

    config = resolve(base=scored.config.to_dict(), overrides=[("score.max_latents", 2)])
    rescored = RunContext(config, scored.run)
    score.run(rescored)  # the scores are made again from 2 explanations: the report is stale
    later = RunContext(config, scored.run)
    assert later.units("report")[0].status == "rerun"
    report.run(later)
    summary = json.loads(path.read_text())
    assert summary["scores"]["iou"]["wrong"]["all"]["n"] == 2
