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
PLUGIN_KINDS = ("models", "saes", "datasets", "backends", "explainers", "scorers")


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


# ----------------------------------------------------------------------------- option tables and the CLI
# An option table in docs/*.md is introduced by `<!-- options: module:Class.Options -->` (or
# `prefix=module:Options, ...` for a table of several stages, `; varies: f1, f2` for options whose
# default depends on the component, `architectures saes` for the per-architecture SAE table and
# `components explainers` for a name | what | `key: value` table). Its rows must be exactly the
# class's fields, each with the real default and, in a flag column, the real flag of that option.

import dataclasses  # noqa: E402
import importlib  # noqa: E402

MARKER = re.compile(r"^<!-- options: (.+) -->$")
SENTINELS = (None, "", [], {})


def option_tables() -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(page, marker, header cells, rows of cells) of every marked table."""
    out = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = MARKER.match(line)
            if not m:
                continue
            j = i + 1
            while not lines[j].startswith("|"):
                j += 1
            table = []
            while j < len(lines) and lines[j].startswith("|"):
                table.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
                j += 1
            out.append((page.name, m.group(1), table[0], table[2:]))
    return out


def resolve(target: str):
    module, _, path = target.partition(":")
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def defaults(options_cls) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else
                     f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
            for f in dataclasses.fields(options_cls)}


def names(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def literal(cell: str):
    """A default cell as a value ("`first`", "null", "[50]", "true"), or ValueError for prose."""
    text = cell.replace("`", "").strip()
    if text in ("", "—"):
        return None
    value = yaml.safe_load(text)
    if isinstance(value, str) and " " in value:
        raise ValueError(text)
    return value


def check_default(where: str, name: str, cell: str, real) -> str | None:
    """None when the cell shows the real default; prose ("the run's first") only stands for None, "", [] or {}."""
    if cell.replace("`", "").strip() == str(real):
        return None
    try:
        shown = literal(cell)
    except (ValueError, yaml.YAMLError):
        return None if real in SENTINELS else f"{where}: {name} default is prose {cell!r}, but the real default is {real!r}"
    if shown == real or (real in SENTINELS and (shown is None or isinstance(shown, str))):
        return None
    return f"{where}: {name} default {cell!r}, but the real default is {real!r}"


def test_every_option_table_matches_its_options_class():
    tables = option_tables()
    assert len(tables) >= 10, tables
    problems = []
    for page, marker, header, rows in tables:
        if marker.startswith(("architectures", "components")):
            continue
        spec, _, varies = marker.partition("; varies:")
        varies = {v.strip() for v in varies.split(",") if v.strip()}
        classes = {}
        for part in spec.split(","):
            prefix, _, target = part.strip().rpartition("=")
            classes[f"{prefix}." if prefix else ""] = resolve(target)
        real = {prefix + k: v for prefix, cls in classes.items() for k, v in defaults(cls).items()}
        col = {h: i for i, h in enumerate(header)}
        seen = []
        for row in rows:
            options = names(row[0])
            cells = [row[col["default"]]] if len(options) == 1 else \
                [c.strip() for c in re.split(r",\s*(?![^\[{]*[\]}])", row[col["default"]].replace("`", ""))]
            assert len(cells) == len(options), f"{page}: row {row[0]} has {len(options)} options, {len(cells)} defaults"
            for option, cell in zip(options, cells):
                seen.append(option)
                if option not in real:
                    problems.append(f"{page}: {option} is not an option of {spec}")
                elif option not in varies:
                    problems.append(check_default(page, option, cell, real[option]))
            if "flag" in col and names(row[col["flag"]]):
                problems += check_flags(page, spec, options, names(row[col["flag"]]))
        missing = sorted(set(real) - set(seen))
        if missing:
            problems.append(f"{page}: options of {spec} missing from its table: {missing}")
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


def check_flags(page: str, spec: str, options: list[str], flags: list[str]) -> list[str]:
    """Each flag in a stage's table is that stage command's flag for one of the row's options."""
    from lmmsae.cli import cli

    stage = re.search(r"lmmsae\.stages\.(\w+)", spec).group(1)
    command = cli.get_command(None, stage)
    by_flag = {o: p.name for p in command.params for o in p.opts}
    fields = {o.rpartition(".")[2] for o in options}
    return [f"{page}: `lmmsae {stage}` has no flag {flag} for {options}" for flag in flags
            if by_flag.get(flag) not in fields]


def test_per_architecture_sae_table_matches_each_architecture():
    from lmmsae import plugins
    from lmmsae.saes.base import SAE

    (page, _, header, rows), = [t for t in option_tables() if t[1] == "architectures saes"]
    base = set(defaults(SAE.Options))
    problems, seen, archs = [], set(), []
    for row in rows:
        archs = names(row[0]) or archs
        for arch in archs:
            real = defaults(plugins.get("saes", arch).load().Options)
            option = names(row[1])[0]
            seen.add((arch, option))
            problems.append(f"{arch}: no option {option}" if option not in real else
                            check_default(f"{page} {arch}", option, row[2], real[option]))
    for arch in plugins.registry("saes").names():
        own = set(defaults(plugins.get("saes", arch).load().Options)) - base
        problems += [f"{page}: {arch}.{o} missing from the per-architecture table" for o in sorted(own)
                     if (arch, o) not in seen]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


def test_component_tables_show_real_presets():
    """`key: value` in a component table is that component's default (its preset, else its Options')."""
    from lmmsae import plugins

    problems = []
    for page, marker, header, rows in option_tables():
        if not marker.startswith("components"):
            continue
        kind = marker.split()[1]
        for row in rows:
            component = plugins.get(kind, names(row[0])[0])
            real = {**defaults(component.load().Options), **component.defaults}
            for pair in re.findall(r"`(\w+): ([^`]+)`", row[-1]):
                key, shown = pair
                if key not in real:
                    problems.append(f"{page}: {component.name} has no option {key}")
                elif str(real[key]) != shown and not shown.startswith(str(real[key])):
                    problems.append(f"{page}: {component.name} {key} is {real[key]!r}, the table says {shown!r}")
    assert not problems, "\n".join(problems)


def test_configuration_page_shows_the_real_defaults():
    from lmmsae import config

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    block = re.search(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M).group(1)
    assert yaml.safe_load(block) == config.resolve().to_dict()


def cli_table() -> dict[str, list[str]]:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `lmmsae ([\w-]+)` \|[^|]*\| ([^|]*)\|$", text, flags=re.M)
    return {command: names(flags) for command, flags in rows}


def test_cli_page_lists_every_command_with_its_own_flags():
    import click

    from lmmsae.cli import cli
    from lmmsae.commands.common import config_options

    common = {o for p in config_options(click.command()(lambda **kw: None)).params for o in p.opts}
    documented = cli_table()
    ctx = click.Context(cli)
    real = {}
    for name in cli.list_commands(ctx):
        params = cli.get_command(ctx, name).params
        real[name] = sorted(o for p in params for o in p.opts if o.startswith("-") and o not in common)
    assert sorted(documented) == sorted(real), "docs/cli.md's command table differs from `lmmsae --help`"
    for name, flags in real.items():
        assert sorted(documented[name]) == flags, f"docs/cli.md: flags of `lmmsae {name}` differ: {documented[name]} vs {flags}"
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    shared = set(re.findall(r"`(--?[a-z][\w-]*)", text.split("takes the same options", 1)[1].split("\n\n", 1)[0]))
    assert shared == {o for o in common if o != "--override"}, "docs/cli.md's shared options differ from the code's"


def test_the_docs_site_builds_without_warnings(tmp_path):
    """`mkdocs build --strict`: every nav page and every link between pages resolves."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "site" / "report" / "index.html").is_file()
