"""Every hook is documented in docs/plugins.md and exercised here through the real plugin manager."""

import inspect
import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lmmsae import hookspecs, plugins
from lmmsae.cli import cli
from lmmsae.hookspecs import hookimpl
from lmmsae.registry import KINDS

HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]
DOCS = Path(__file__).parents[1] / "docs" / "plugins.md"


def test_hooks_are_the_documented_set():
    assert sorted(HOOKS) == sorted([f"register_{k}" for k in KINDS] + ["register_commands"])


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert re.search(rf"^#+ `?{hook}", DOCS.read_text(), re.M), f"{hook} has no section in docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_one_line_docstring(hook):
    doc = getattr(hookspecs, hook).__doc__
    assert doc and "\n" not in doc.strip()


class ExamplePlugin:
    """A plugin implementing every hook, registered like an entry point would be."""

    @hookimpl
    def register_models(self, register):
        register("example-model", "example_pkg.model:Model")

    @hookimpl
    def register_saes(self, register):
        register("example-sae", "example_pkg.sae:SAE")

    @hookimpl
    def register_datasets(self, register):
        register("example-data", "example_pkg.data:Data", size=3)

    @hookimpl
    def register_explainers(self, register):
        register("example-explainer", "example_pkg.explain:Explainer")

    @hookimpl
    def register_scorers(self, register):
        register("example-scorer", "example_pkg.score:Scorer")

    @hookimpl
    def register_commands(self, cli):
        @cli.command(name="example-hello")
        def hello():
            """Say hello from a plugin."""
            click.echo("hello from a plugin")


@pytest.fixture
def example_plugin():
    plugins.reset()
    plugins.plugin_manager().register(ExamplePlugin(), name="example")
    plugins._DISTS["example"] = ("lmmsae-example", "9.9")
    yield
    plugins.reset()
    cli.__dict__.pop("_extra", None)


@pytest.mark.parametrize("kind", KINDS)
def test_register_hooks_add_components_of_their_kind(example_plugin, kind):
    component = {c.name: c for c in plugins.registry(kind)}
    name = {"models": "example-model", "saes": "example-sae", "datasets": "example-data",
            "explainers": "example-explainer", "scorers": "example-scorer"}[kind]
    assert component[name].plugin == "example"
    assert component[name].kind == kind


def test_register_passes_preset_options(example_plugin):
    assert plugins.get("datasets", "example-data").defaults == {"size": 3}


def test_plugins_json_lists_components_and_distribution(example_plugin):
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    data = json.loads(result.output)
    assert {c["name"] for c in data["scorers"]} >= {"example-scorer"}
    dist = [p for p in data["plugins"] if p["name"] == "lmmsae-example"][0]
    assert dist["version"] == "9.9"
    assert dist["components"]["saes"] == ["example-sae"]


def test_register_commands_adds_a_cli_command(example_plugin):
    cli.__dict__.pop("_extra", None)
    result = CliRunner().invoke(cli, ["example-hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello from a plugin\n"
    help_text = CliRunner().invoke(cli, ["--help"]).output
    assert "example-hello" in help_text
