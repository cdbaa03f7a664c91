"""report/features/<latent>.html: one feature. Every explainer's text (the run's and compare's) with
every score beside its random baseline, its top images with mask / heatmap / crop / image toggles,
how often and how strongly it fires (statistics and an activation histogram), and the steering
generations that clamped or added it."""

from __future__ import annotations

from typing import Any

from lmmsae.report import svg
from lmmsae.report.data import Feature, RunData
from lmmsae.report.html import esc, num, page
from lmmsae.report.images import MODES
from lmmsae.report.index import explanation_cell, score_parts

MODE_TEXT = {"mask": "mask (as the explainer saw it)", "heatmap": "heatmap", "crop": "crop", "image": "image"}


def feature_page(data: RunData, f: Feature, examples: list[dict[str, Any]], neighbours: tuple[int | None, int | None],
                 compare_href: str | None, image_px: int) -> str:
    prev, nxt = neighbours
    links = " ".join(x for x in (f"<a href='{prev}.html' rel='prev'>← {prev}</a>" if prev is not None else "",
                                 "<a href='../index.html'>all features</a>",
                                 f"<a href='{nxt}.html' rel='next'>{nxt} →</a>" if nxt is not None else "") if x)
    body = [f"<p class='pager'>{links}</p>",
            f"<h1>Feature {f.latent} <small>{esc(data.hookpoint)}</small></h1>",
            _explanations(data, f), _gallery(f, examples, image_px), _statistics(f), _steering(f)]
    return page(f"feature {f.latent} · {data.name}", "\n".join(x for x in body if x), root="../",
                compare=f"../{compare_href}" if compare_href else None, run=data.name)


def _explanations(data: RunData, f: Feature) -> str:
    explainers = [e for e in data.explainers if e in f.explanations or e in f.scores]
    if not explainers:
        return "<p class='note'>No explanation for this feature yet.</p>"
    head = ["explainer", "explanation", "category"] + [f"{esc(s)}<br><small>random baseline (±std)</small>"
                                                      for s in data.scorers]
    rows = []
    for e in explainers:
        cells = [esc(e), explanation_cell(f.explanations.get(e)),
                 esc(", ".join(f.categories.get(e, [])))]
        for s in data.scorers:
            cells.append(_score_cell(f.scores.get(e, {}).get(s)))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<h2>Explanations and scores</h2><table class='explanations'><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _score_cell(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "-"
    if rec.get("status", "ok") != "ok":
        return f"<span class='note' title='{esc(rec.get('reason') or '')}'>{esc(rec.get('status'))}</span>"
    score, base, delta = score_parts(rec)
    std = rec.get("baseline_std")
    spread = f" ±{num(std)}" if std is not None else ""
    sign = "pos" if (delta or 0) > 0 else "neg"
    return (f"<b>{num(score)}</b><br><small>{num(base)}{spread}</small>"
            + (f"<br><span class='{sign}'>Δ {num(delta)}</span>" if delta is not None else ""))


def _gallery(f: Feature, examples: list[dict[str, Any]], px: int) -> str:
    if not examples:
        return "<p class='note'>No images: the report had no dataset to load them from, or the cache lacks this feature.</p>"
    buttons = "".join(f"<button type='button' data-mode='{m}' aria-pressed='{'true' if m == 'mask' else 'false'}'>"
                      f"{esc(MODE_TEXT[m])}</button>" for m in MODES)
    figures = []
    for i, ex in enumerate(examples):
        srcs = " ".join(f"data-{m}='../img/{f.latent}/{esc(name)}'" for m, name in ex["files"].items())
        figures.append(f"<figure><img src='../img/{f.latent}/{esc(ex['files']['mask'])}' {srcs} width='{px}' "
                       f"height='{px}' alt='top image {i + 1} of feature {f.latent}' loading='lazy'>"
                       f"<figcaption>#{i + 1} · act. {num(ex['activation'])}<br><small>{esc(ex['sample_id'])}</small>"
                       f"</figcaption></figure>")
    return (f"<h2>Top images</h2><div class='toggles' role='group' aria-label='image view'>{buttons}</div>"
            f"<div class='gallery'>{''.join(figures)}</div>")


def _statistics(f: Feature) -> str:
    s = f.stats
    if not s:
        return ""
    facts = [f"fires on <b>{s['images_active']:,}</b> of {s['n_images']:,} images ({100 * s['frequency_images']:.3g}%)",
             f"max pooled activation <b>{num(s['max'])}</b>", f"mean when active {num(s['mean_active'])}",
             f"pooling: {esc(s.get('pooling'))}"]
    for kind, t in (s.get("tokens") or {}).items():
        facts.append(f"{esc(kind)} tokens: fires on {100 * t['frequency']:.3g}% (max {num(t['max'])})")
    marks = [(q, f"quantile {k}") for k, q in (s.get("quantiles") or {}).items() if k == "0.5"]
    marks += [(f.top_activations[0], "top activation")] if f.top_activations else []
    plot = svg.histogram([("sampled images", f.sampled_activations),
                          ("top images", f.top_activations)],
                         "pooled activation where it fires", "pooled activation", "images", bins=20, marks=marks)
    note = (f"The blue bars are a uniform sample of {len(f.sampled_activations)} of the images where the feature "
            f"fires (what its typical activation looks like); the grey bars its {len(f.top_activations)} top images "
            f"(the ones the explainer sees first); the line marks the median of the sample.")
    return ("<h2>Activations</h2><div class='side'><ul class='facts'>" + "".join(f"<li>{x}</li>" for x in facts)
            + f"</ul><figure>{plot}<figcaption>{note}</figcaption></figure></div>")


def _steering(f: Feature) -> str:
    if not f.steering:
        return ""
    rows = []
    for r in f.steering:
        feats = r.get("feature")
        setting = f"{esc(r.get('mode'))} {num(r.get('strength'))}"
        if isinstance(feats, list):
            setting += f"<br><small>with {esc(', '.join(str(x) for x in feats))}</small>"
        rows.append(f"<tr><td>{esc(r['file'])}</td><td>{setting}</td><td>{esc(r.get('image'))}</td>"
                    f"<td>{esc(r.get('original'))}</td><td>{esc(r.get('steered'))}</td><td>{num(r.get('kl'))}</td></tr>")
    return ("<h2>Steering</h2><p class='note'>Generations with this feature clamped or added "
            "(steering/&lt;name&gt;.jsonl), beside the model's own answer.</p><table class='steering'><thead><tr>"
            "<th>file</th><th>setting</th><th>image</th><th>original</th><th>steered</th><th>KL</th></tr></thead>"
            "<tbody>" + "".join(rows) + "</tbody></table>")
