"""Every `lmmsae ...` command shown in a code block of docs/*.md or README.md is a real command line:
its command exists and every flag, choice and type parses against the real click commands.

This is the parse half of issue 19.6(b); running each command on the toy world (with a shared fixture
run and a listed exemption for those that need a GPU, an API key or a real checkpoint) is still to do.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
NOT_COMMANDS = {"lmmsae run | collect | train | cache | explain | score | report | steer | compare"}  # a diagram


def documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for each `lmmsae ...` in a fenced block; continuations joined, comments cut."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                for part in line.split("&&"):
                    part = part.strip()
                    if part.startswith("lmmsae ") and not any(part.startswith(n) for n in NOT_COMMANDS):
                        out.append((page.name, shlex.split(part, comments=True)))
    return out


COMMANDS = documented_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30, COMMANDS


@pytest.mark.parametrize("page, argv", COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_documented_command_parses(page, argv):
    from lmmsae.cli import cli

    group = cli.make_context("lmmsae", argv[1:2], resilient_parsing=False)
    command = cli.get_command(group, argv[1])
    assert command is not None, f"{page}: `lmmsae {argv[1]}` is not a command"
    try:
        command.make_context(argv[1], argv[2:], parent=group)
    except click.UsageError as exc:
        pytest.fail(f"{page}: `{' '.join(argv)}` does not parse: {exc.format_message()}")
