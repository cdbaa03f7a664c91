"""report/run.html: the run as a whole. Its components, every SAE metric with its definition,
training curves, the feature-density histogram, and each score's distribution beside its random
baseline, with the summary table (mean, interval, baseline, delta per scorer, explainer, category)."""

from __future__ import annotations

import math
from typing import Any, Iterator

from lmmsae.report import svg
from lmmsae.report.data import RunData
from lmmsae.report.html import esc, num, page
from lmmsae.report.index import score_parts

# Definitions of metrics.json values the train stage writes without one.
DEFINITIONS = {
    "training.tokens": "training tokens seen (all ranks together)",
    "training.steps": "optimizer steps",
    "training.seconds": "wall-clock training time",
    "training.tokens_per_s": "training throughput",
    "training.world_size": "processes that trained together",
    "training.lr": "Adam learning rate after warm-up",
    "training.resumed": "whether training continued from a checkpoint",
    "training.input_scale": "factor inputs were scaled by (folded into the saved weights)",
    "training.dead_window_tokens": "a latent is dead after this many training tokens without firing",
    "training.last_batch": "on the last training batch",
    "evaluation.n_tokens": "tokens the reconstruction metrics were computed on",
    "evaluation.window": "which tokens those are",
    "splice.samples": "samples the CE/KL metrics were computed on",
    "n_positions": "token positions counted",
    "n_tokens": "tokens of this kind in the evaluation window",
    "ablation": "what replaced the hookpoint in the ablated run",
    "tokens": "which tokens count: answer (caption) tokens or all",
}

# The headline columns of the overview table: (title, path in metrics.json).
HEADLINE = (("FVU", "evaluation.fvu"), ("L0", "evaluation.l0"), ("dead fraction", "evaluation.dead_fraction"),
            ("CE recovered (zero)", "splice.zero.ce_loss_recovered"),
            ("CE recovered (mean)", "splice.mean.ce_loss_recovered"),
            ("KL recovered (mean)", "splice.mean.kl_recovered"), ("CE with SAE", "splice.zero.ce_sae"),
            ("tokens", "training.tokens"))

CURVES = (("loss", "loss"), ("fvu", "FVU"), ("l0", "L0"), ("dead_fraction", "dead fraction"))


def flatten(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted path, value, definition) of every value in a metrics.json, in file order."""
    for key, value in metrics.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and "value" in value:
            yield path, value["value"], str(value.get("definition", ""))
        elif isinstance(value, dict):
            if path in DEFINITIONS:
                yield from ((p, v, d or DEFINITIONS[path]) for p, v, d in flatten(value, path + "."))
            else:
                yield from flatten(value, path + ".")
        else:
            yield path, value, DEFINITIONS.get(path) or DEFINITIONS.get(key, "")


def lookup(metrics: dict[str, Any], path: str) -> Any:
    value: Any = metrics
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value.get("value") if isinstance(value, dict) else value


def run_page(data: RunData, summary: dict[str, Any], compare_href: str | None) -> str:
    body = [f"<h1>Run {esc(data.name)}</h1>", _components(summary.get("components") or {}),
            _metrics(data), _curves(data), _density(data), _scores(data, summary)]
    return page(f"run · {data.name}", "\n".join(x for x in body if x), compare=compare_href, run=data.name)


def _components(components: dict[str, Any]) -> str:
    if not components:
        return ""
    items = []
    for key, value in components.items():
        if isinstance(value, dict):
            options = ", ".join(f"{esc(k)}={esc(v)}" for k, v in (value.get("options") or {}).items())
            items.append(f"<li>{esc(key)}: <b>{esc(value.get('name'))}</b> <small>{options}</small></li>")
        elif isinstance(value, list):
            names = [v.get("name") if isinstance(v, dict) else v for v in value]
            items.append(f"<li>{esc(key)}: {esc(', '.join(str(n) for n in names))}</li>")
        else:
            items.append(f"<li>{esc(key)}: {esc(value)}</li>")
    return "<ul class='components'>" + "".join(items) + "</ul>"


def _metrics(data: RunData) -> str:
    if not data.sae:
        return "<h2>SAE metrics</h2><p class='note'>No sae/&lt;hookpoint&gt;/metrics.json in this run.</p>"
    head = "".join(f"<th>{t}</th>" for t in ["SAE", *(h for h, _ in HEADLINE)])
    rows = "".join("<tr><td>" + esc(h) + "</td>" + "".join(f"<td>{num(lookup(m, p))}</td>" for _, p in HEADLINE)
                   + "</tr>" for h, m in data.sae.items())
    out = [f"<h2>SAE metrics</h2><table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"]
    for hookpoint, metrics in data.sae.items():
        lines = "".join(f"<tr><td><code>{esc(p)}</code></td><td>{esc(num(v, 4))}</td><td class='def'>{esc(d)}</td></tr>"
                        for p, v, d in flatten(metrics))
        out.append(f"<details><summary>every metric of {esc(hookpoint)}, with its definition"
                   f"</summary><table class='metrics'><thead><tr><th>metric</th><th>value</th><th>definition</th>"
                   f"</tr></thead><tbody>{lines}</tbody></table></details>")
    return "\n".join(out)


def _curves(data: RunData) -> str:
    if not data.curves:
        return ("<h2>Training curves</h2><p class='note'>No sae/&lt;hookpoint&gt;/curve.jsonl: this SAE was trained "
                "before lmmsae recorded training curves.</p>")
    out = ["<h2>Training curves</h2><p class='note'>Every 10 training steps, on that step's batch.</p>"]
    for name, points in data.curves.items():
        tokens = [p.get("tokens", p["step"]) for p in points]
        plots = [svg.line_chart(tokens, [p.get(key) for p in points], title, "training tokens", title)
                 for key, title in CURVES if any(p.get(key) is not None for p in points)]
        out.append(f"<h3>{esc(name)}</h3><div class='plots'>{''.join(plots)}</div>")
    return "\n".join(out)


def _density(data: RunData) -> str:
    if not data.density:
        return ""
    alive = [f for f in data.density if f > 0]
    dead = len(data.density) - len(alive)
    plot = svg.histogram([("latents", [math.log10(f) for f in alive])], "feature density",
                         "fraction of images where it fires", "latents", bins=30,
                         x_format=_power_of_ten)
    return (f"<h2>Feature density</h2><div class='plots'>{plot}</div><p class='note'>How often each of the "
            f"{len(data.density):,} cached latents fires, over {data.n_images:,} images (log scale); {dead:,} never "
            f"fired and are not drawn. A bump near 1 means features that fire on nearly every image.</p>")


def _power_of_ten(v: float) -> str:
    """A log10 tick as the fraction it stands for: 1e-3, 1e-2, 0.1, 1."""
    return f"1e{v:.0f}" if v < -1 and float(v).is_integer() else f"{10 ** v:.2g}"


def _scores(data: RunData, summary: dict[str, Any]) -> str:
    table = summary.get("table") or {}
    if not table.get("rows"):
        return "<h2>Scores</h2><p class='note'>No scores yet: run `lmmsae score`.</p>"
    head = "".join(f"<th>{esc(h)}</th>" for h in table["header"])
    rows = "".join(f"<tr class='{'' if r[2] == 'all' else 'cat'}'>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                   for r in table["rows"])
    plots = []
    for scorer in data.scorers:
        for explainer in data.explainers:
            records = [f.scores.get(explainer, {}).get(scorer) for f in data.features.values()]
            parts = [score_parts(r) for r in records]
            if not any(p[0] is not None for p in parts):
                continue
            what = next((r["baseline"].get("what") for r in records if r and isinstance(r.get("baseline"), dict)), "")
            plot = svg.histogram([("explanation", [p[0] for p in parts if p[0] is not None]),
                                  ("random baseline", [p[1] for p in parts if p[1] is not None])],
                                 f"{scorer}: {explainer}", f"{scorer} score", "features")
            plots.append(f"<figure>{plot}<figcaption>{esc(what)}</figcaption></figure>")
    defs = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in (summary.get("definitions") or {}).items())
    return (f"<h2>Scores</h2><table class='summary'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
            f"<p class='note'>Each feature's score beside its random baseline's mean, over the features on the "
            f"index page:</p><div class='plots'>{''.join(plots)}</div>"
            f"<h3>Definitions</h3><dl class='defs'>{defs}</dl>")
