"""Escaping and the page frame shared by every report page.

Everything that came from a model, an API or a file goes through `esc`, in text and in attribute
values alike. No page embeds data in a <script>: report.js reads the escaped DOM (data-* attributes,
text), so model output can never end or bend a script."""

from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable


def esc(value: Any) -> str:
    """Text or an attribute value (quotes escaped too)."""
    return escape("" if value is None else str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    """A number for people: `digits` significant digits, '-' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def sort_value(value: Any) -> str:
    """A data-v attribute the table script sorts by ('' sorts last)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


def table(header: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table from already-escaped cell HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table class='{esc(cls)}'><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>"


NAV = (("index.html", "Features"), ("run.html", "Run"))


def page(title: str, body: str, root: str = "", compare: str | None = None, run: str = "",
         assets: str | None = None, report_links: bool = True) -> str:
    """A whole page: `root` is the relative path to report/ ("", "../" or "../report/"), `compare` the
    relative link to compare/index.html when the run has one, `assets` the folder of report.css and
    report.js (default root + "assets/"). Assets are linked, not inlined, so 200 feature pages share
    one cached script and stylesheet. `report_links`: False where report/ does not exist yet."""
    assets = f"{root}assets/" if assets is None else assets
    links = [f"<a href='{root}{href}'>{text}</a>" for href, text in NAV] if report_links else []
    if compare:
        links.append(f"<a href='{esc(compare)}'>Compare explainers</a>")
    brand = f"<span class='brand'>lmmsae · {esc(run)}</span>" if run else "<span class='brand'>lmmsae</span>"
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><link rel='stylesheet' href='{assets}report.css'></head>\n"
            f"<body><nav>{brand}{''.join(links)}</nav><main>\n{body}\n</main>"
            f"<script src='{assets}report.js'></script></body></html>\n")
