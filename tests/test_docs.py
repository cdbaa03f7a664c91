"""The documentation keeps up with the code: every nav page exists, every stage option and every
built-in component name is documented. Reads sources with `ast` (imports nothing heavy)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
STAGES = ("collect", "train", "cache", "explain", "score", "report", "steer", "compare")
PLUGIN_KINDS = ("models", "saes", "datasets", "explainers", "scorers")


def nav_pages(entries) -> list[str]:
    """Every page named in an mkdocs nav (strings, {title: page} and {title: [nested]} entries)."""
    out = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                out += nav_pages(value) if isinstance(value, list) else [value]
    return [p for p in out if not re.match(r"^[a-z]+://", p)]


def code_names() -> set[str]:
    """Names written as code in docs/*.md (inline `code` spans and fenced blocks): identifiers,
    dashed names (`toy-llava`), and flags (`--n-top` also counts as `n_top`)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md")))
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    text = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    spans = fenced + re.findall(r"`([^`\n]+)`", text)
    names = set()
    for span in spans:
        for token in re.findall(r"[A-Za-z_][A-Za-z0-9_-]*", span):
            token = token.rstrip("-")
            names |= {token, token.replace("-", "_")}
    return names


def options_fields(stage: str) -> list[str]:
    """Fields of `class Options` in lmmsae/stages/<stage>.py (its own, not inherited ones)."""
    tree = ast.parse((ROOT / "lmmsae" / "stages" / f"{stage}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Options":
            return [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    raise AssertionError(f"lmmsae/stages/{stage}.py has no Options class")


def registered_names(kind: str) -> list[str]:
    """Names passed to register(...) in lmmsae/default_plugins/<kind>.py."""
    tree = ast.parse((ROOT / "lmmsae" / "default_plugins" / f"{kind}.py").read_text(encoding="utf-8"))
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]


def test_every_nav_page_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = nav_pages(config["nav"])
    assert pages, "mkdocs.yml has no nav"
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist in docs/: {missing}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_option_is_documented(stage):
    fields = options_fields(stage)
    assert fields, f"{stage}.Options has no fields"
    missing = [f for f in fields if f not in code_names()]
    assert not missing, f"{stage} options not written as code in any docs/*.md page: {missing}"


@pytest.mark.parametrize("kind", PLUGIN_KINDS)
def test_every_builtin_component_is_documented(kind):
    names = registered_names(kind)
    assert names, f"lmmsae/default_plugins/{kind}.py registers nothing"
    missing = [n for n in names if n not in code_names()]
    assert not missing, f"built-in {kind} not written as code in any docs/*.md page: {missing}"
