"""compare/index.html: explainers side by side. The per-explainer means of compare/summary.json, then
one row per feature with every explainer's text and scores, and a column holding the difference
between two chosen explainers' scores on a chosen scorer, to sort by (report.js computes it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmmsae import artifacts
from lmmsae.report.html import esc, num, page, sort_value
from lmmsae.report.index import explanation_cell, score_parts


def write_compare_page(run_dir: str | Path, feature_pages: set[int] | None = None) -> Path | None:
    """(Re)write compare/index.html and its assets from what the compare stage left; None without one.
    `feature_pages`: latents that have a report page to link to (default: those report/ has now)."""
    from lmmsae.atomic import atomic_write_text
    from lmmsae.report.assets import copy_assets
    from lmmsae.report.data import read_all_scores, read_explanation_files

    run_dir = Path(run_dir)
    path = run_dir / artifacts.COMPARE_SUMMARY
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if feature_pages is None:
        feature_pages = {int(p.stem) for p in (run_dir / artifacts.REPORT_DIR / "features").glob("*.html")
                         if p.stem.isdigit()}
    explanations = read_explanation_files(run_dir, f"{artifacts.COMPARE_DIR}/explanations")
    scores = read_all_scores(run_dir, f"{artifacts.COMPARE_DIR}/scores")
    report_index = (run_dir / artifacts.REPORT_HTML).is_file()
    html = compare_page(summary, explanations, scores, feature_pages, report_index)
    out = run_dir / artifacts.COMPARE_HTML
    copy_assets(out.parent / "assets")
    atomic_write_text(out, html)
    return out


def compare_page(summary: dict[str, Any], explanations: dict[str, dict], scores: dict[str, dict[str, list]],
                 feature_pages: set[int], report_index: bool = True) -> str:
    ids = [r["id"] for r in summary["explainers"]]
    scorers = list(summary["scorers"])
    hookpoint = summary.get("hookpoint", "")
    by_score = {(s, e): {int(r["latent"]): r for r in records if r.get("hookpoint", hookpoint) == hookpoint}
                for s, by_e in scores.items() for e, records in by_e.items()}
    texts = {e: {lat: rec for (hp, lat), rec in explanations.get(e, {}).items() if hp == hookpoint} for e in ids}
    latents = sorted({lat for e in ids for lat in texts[e]})
    body = [f"<h1>Explainers compared</h1><p class='lead'>{summary['features']} features of {esc(hookpoint)}. "
            f"Mean score (random baseline) over the features every explainer explained:</p>", _means(summary)]
    if latents and ids:
        body += ["<h2>Feature by feature</h2><p class='note'>Pick a scorer and two explainers: the last column is "
                 "A's score minus B's. Click any column to sort.</p>", _controls(ids, scorers),
                 _features(ids, scorers, latents, texts, by_score, feature_pages)]
    body.append(f"<p class='note'>{esc(summary.get('definition', ''))}</p>")
    return page("lmmsae: explainers compared", "\n".join(body), root="../report/", compare="index.html",
                assets="assets/", report_links=report_index)


def _means(summary: dict[str, Any]) -> str:
    head = ["explainer", "explained", "failed", *[f"{esc(s)} (baseline)" for s in summary["scorers"]]]
    rows = []
    for r in summary["explainers"]:
        cells = [esc(r["id"]), str(r.get("ok", "")), str(r.get("failed", ""))]
        for s in summary["scorers"]:
            c = (r.get("scores") or {}).get(s, {}).get("common", {})
            cells.append("-" if c.get("score") is None else f"{num(c['score'])} ({num(c.get('baseline'))})")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<table class='sortable'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _controls(ids: list[str], scorers: list[str]) -> str:
    def select(key, options, chosen):
        opts = "".join(f"<option value='{i}'{' selected' if i == chosen else ''}>{esc(o)}</option>"
                       for i, o in enumerate(options))
        return f"<label>{key} <select data-diff='{key}' data-table='compare'>{opts}</select></label>"

    return ("<div class='controls'>" + select("scorer", scorers, 0) + " " + select("A", ids, 0) + " "
            + select("B", ids, 1 if len(ids) > 1 else 0) + "</div>")


def _features(ids, scorers, latents, texts, by_score, feature_pages) -> str:
    head = ["<th data-type='num'>latent</th>"]
    for e in ids:
        head.append(f"<th class='expl'>{esc(e)}</th>")
        head += [f"<th data-type='num'>{esc(e)}<br><small>{esc(s)}</small></th>" for s in scorers]
    head.append("<th data-type='num' class='diff'>A − B</th>")
    rows = []
    for lat in latents:
        link = f"<a href='../report/features/{lat}.html'>{lat}</a>" if lat in feature_pages else str(lat)
        cells, attrs = [f"<td data-v='{lat}'>{link}</td>"], []
        for i, e in enumerate(ids):
            cells.append(f"<td class='expl'>{explanation_cell(texts[e].get(lat))}</td>")
            for j, s in enumerate(scorers):
                score, base, _ = score_parts(by_score.get((s, e), {}).get(lat))
                attrs.append(f"data-s{j}-{i}='{sort_value(score)}'")
                cells.append(f"<td data-v='{sort_value(score)}'>{num(score)}<br><small>{num(base)}</small></td>")
        cells.append("<td class='diff' data-v=''>-</td>")
        rows.append(f"<tr {' '.join(attrs)}>" + "".join(cells) + "</tr>")
    return ("<table id='compare' class='sortable'><thead><tr>" + "".join(head) + "</tr></thead><tbody>"
            + "\n".join(rows) + "</tbody></table>")
