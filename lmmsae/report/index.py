"""report/index.html: every feature in one table to sort, filter and search.

One row per (explainer, feature): latent, thumbnail (the top image as the explainer saw it, loaded
lazily), explanation, categories, per scorer the score beside its random baseline and the
difference, firing frequency and maximum activation. Rows carry what the filters test as data-*
attributes; report.js sorts and filters them in place."""

from __future__ import annotations

from typing import Any

from lmmsae.report.data import Feature, RunData
from lmmsae.report.html import esc, num, page, sort_value


def explanation_text(rec: dict[str, Any] | None) -> tuple[str, str]:
    """(short label, longer text) of an explanation record; failures say why."""
    if not rec:
        return "", ""
    if rec.get("status", "ok") != "ok":
        return "", f"(failed: {rec.get('reason') or 'no reason given'})"
    label = (rec.get("label") or "").strip()
    text = (rec.get("text") or "").strip()
    return (label, text) if label and label != text else (text, "")


def score_parts(rec: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    """(score, random baseline mean, score - baseline) of a score record, None where missing."""
    if not rec or rec.get("status", "ok") != "ok" or rec.get("score") is None:
        return None, None, None
    score, base = float(rec["score"]), rec.get("baseline_mean")
    base = None if base is None else float(base)
    return score, base, None if base is None else score - base


def explanation_cell(rec: dict[str, Any] | None) -> str:
    label, text = explanation_text(rec)
    if not label and not text:
        return "<span class='note'>(not explained)</span>"
    out = f"<b>{esc(label)}</b>" if label else ""
    return out + (f" <span class='long'>{esc(text)}</span>" if text else "")


def index_page(data: RunData, gallery: dict[int, list[dict[str, Any]]], summary: dict[str, Any],
               compare_href: str | None) -> str:
    explainers = data.explainers or [""]
    rows = [_row(data, f, explainer, bool(gallery.get(f.latent)))
            for explainer in explainers for f in data.features.values()
            if not explainer or explainer in f.explanations or explainer in f.scores]
    categories = sorted({c for f in data.features.values() for cs in f.categories.values() for c in cs})
    head = ["<th data-type='num'>latent</th>", "<th>top image</th>", "<th>explainer</th>",
            "<th>explanation</th>", "<th>category</th>"]
    for s in data.scorers:
        head += [f"<th data-type='num' title='score (random baseline below)'>{esc(s)}</th>",
                 f"<th data-type='num' title='score minus its random baseline'>{esc(s)} Δ</th>"]
    head += ["<th data-type='num' title='fraction of images where the feature fires'>frequency</th>",
             "<th data-type='num' title='largest pooled activation over all images'>max act.</th>"]
    controls = ["<input id='q' type='search' data-search='features' placeholder='search explanations' "
                "aria-label='search explanations'>"]
    if len(data.explainers) > 1:
        controls.append(_select("explainer", "all explainers", [(e, e) for e in data.explainers]))
    if categories:
        controls.append(_select("category", "all categories", [(c, c) for c in categories]))
    if data.scorers:
        controls.append(_select("baseline", "any score", [(f"{s}:{side}", f"{s} {side} random baseline")
                                                          for s in data.scorers for side in ("above", "below")]))
    controls.append(f"<span class='count' id='count'>{len(rows)} of {len(rows)}</span>")
    body = [f"<h1>{len(data.features)} features of {esc(data.hookpoint or 'this run')}</h1>",
            _intro(data, summary),
            "<div class='controls'>" + " ".join(controls) + "</div>",
            "<table id='features' class='sortable filterable'><thead><tr>" + "".join(head) + "</tr></thead><tbody>",
            *rows, "</tbody></table>",
            "" if rows else "<p class='note'>No explained or scored features yet: run `lmmsae explain` and "
                            "`lmmsae score`.</p>"]
    return page(f"lmmsae report: {data.name}", "\n".join(body), compare=compare_href, run=data.name)


def _select(key: str, everything: str, options: list[tuple[str, str]]) -> str:
    opts = "".join(f"<option value='{esc(v)}'>{esc(t)}</option>" for v, t in options)
    return (f"<select data-filter='{key}' data-table='features' aria-label='{esc(everything)}'>"
            f"<option value=''>{esc(everything)}</option>{opts}</select>")


def _intro(data: RunData, summary: dict[str, Any]) -> str:
    parts = []
    for scorer, by_explainer in (summary.get("scores") or {}).items():
        for explainer, split in by_explainer.items():
            row = split["all"]
            if row.get("mean") is None:
                continue
            parts.append(f"{esc(scorer)} ({esc(explainer)}): <b>{num(row['mean'])}</b> vs random "
                         f"{num(row.get('baseline_mean'))}, above baseline for "
                         f"{_percent(row.get('above_baseline'))}"
                         f" of {row['n']} features")
    text = "; ".join(parts) or "no scores yet"
    return (f"<p class='lead'>{text}. Click a column to sort, a latent to open its page; "
            f"<a href='run.html'>the run page</a> has the SAE metrics and plots.</p>")


def _row(data: RunData, f: Feature, explainer: str, has_image: bool) -> str:
    rec = f.explanations.get(explainer)
    cats = f.categories.get(explainer, [])
    above = []
    cells = [f"<td data-v='{f.latent}'><a href='features/{f.latent}.html'>{f.latent}</a></td>",
             (f"<td><a href='features/{f.latent}.html'><img loading='lazy' src='img/{f.latent}/0-mask.png' "
              f"width='48' height='48' alt='top image of feature {f.latent}'></a></td>") if has_image else "<td></td>",
             f"<td>{esc(explainer or '-')}</td>",
             f"<td class='s expl'>{explanation_cell(rec)}</td>",
             f"<td class='s'>{esc(', '.join(cats))}</td>"]
    for s in data.scorers:
        score, base, delta = score_parts(f.scores.get(explainer, {}).get(s))
        if delta is not None:
            above.append(f"{s}:{'above' if delta > 0 else 'below'}")
        cells += [f"<td data-v='{sort_value(score)}'>{num(score)}<br><small>{num(base)}</small></td>",
                  f"<td data-v='{sort_value(delta)}' class='{_sign(delta)}'>{num(delta)}</td>"]
    stats = f.stats or {}
    freq = stats.get("frequency_images")
    cells += [f"<td data-v='{sort_value(freq)}'>{_percent(freq)}</td>",
              f"<td data-v='{sort_value(stats.get('max'))}'>{num(stats.get('max'))}</td>"]
    return (f"<tr data-explainer='{esc(explainer)}' data-category='{esc('|'.join(cats))}' "
            f"data-baseline='{esc('|'.join(above))}'>" + "".join(cells) + "</tr>")


def _sign(delta: float | None) -> str:
    return "" if delta is None else "pos" if delta > 0 else "neg"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.3g}%" if fraction < 0.995 else f"{100 * fraction:.0f}%"
