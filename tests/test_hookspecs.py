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
from lmmsae.errors import UserError
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
    def register_backends(self, register):
        register("example-backend", "example_pkg.backend:Backend", model="m")

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
            "backends": "example-backend", "explainers": "example-explainer", "scorers": "example-scorer"}[kind]
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


# ------------------------------------------------------------ backends and explainers from a plugin

from dataclasses import dataclass  # noqa: E402

from lmmsae.backends.base import Answer, Backend  # noqa: E402
from lmmsae.explainers.base import Explainer  # noqa: E402


class CountingBackend(Backend):
    """A third-party backend: answers how many images it was shown, and is sure the answer is yes."""

    @dataclass
    class Options:
        word: str = "images"

    offers_logprobs = True

    async def send(self, state, query):
        return Answer(f"[EXPLANATION]: {len(query.images)} {self.options.word}", logprobs={"Yes": -0.1, "No": -2.4})


class FirstWordExplainer(Explainer):
    """A third-party explainer written before backends existed: its own Options, no backend."""

    @dataclass
    class Options:
        prefix: str = "feature"

    def explain(self, records):
        from lmmsae.explainers.base import explained

        for record in records:
            yield explained(record, self.name, f"{self.options.prefix} {record.latent}")


class BackendPlugin:
    @hookimpl
    def register_backends(self, register):
        register("counting", "test_hookspecs:CountingBackend", word="views")

    @hookimpl
    def register_explainers(self, register):
        register("first-word", "test_hookspecs:FirstWordExplainer")


@pytest.fixture
def backend_plugin():
    plugins.reset()
    plugins.plugin_manager().register(BackendPlugin(), name="backend-plugin")
    yield
    plugins.reset()


def test_a_plugin_backend_answers_the_paper_explainer_and_judges_through_the_cache(backend_plugin, tmp_path):
    import math
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "explainers"))
    from records import make_records

    from lmmsae.backends import build
    from lmmsae.backends.cache import ResponseCache

    component = plugins.get("explainers", "anthropic")   # the paper's prompt, over another backend
    options = component.options({"backend": "counting", "n_images": 3})
    assert options.backend_options == {"word": "views"}
    cache = ResponseCache(tmp_path / "r.sqlite")
    explainer = component.load()(options, name="mine", cache=cache)
    out = list(explainer.explain(make_records(["red", "blue"])))
    assert [e.text for e in out] == ["3 views", "3 views"] and len(cache) == 2
    judge = build("counting", {"word": "things"}, cache=cache)
    assert judge.ask([], "q") == "[EXPLANATION]: 0 things"
    p = judge.yes_probability([], "is it?")
    assert p == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.4)))
    assert len(cache) == 4
    with pytest.raises(UserError, match="unknown option 'colour' for explainer 'anthropic'"):
        component.options({"backend": "counting", "colour": "red"})


def test_an_explainer_without_a_backend_keeps_working(backend_plugin):
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "explainers"))
    from records import make_records

    from lmmsae.backends import of_explainer

    component = plugins.get("explainers", "first-word")
    explainer = component.load()(component.options({"prefix": "latent"}), name="first-word")
    assert [e.text for e in explainer.explain(make_records(["red", "blue"]))] == ["latent 0", "latent 1"]
    assert explainer.backend is None and explainer.record_request() == {"n": 5, "render": "mask"}
    with pytest.raises(UserError, match="explainer 'first-word' has no backend"):
        of_explainer("first-word")
