"""Registry errors are one clear line: duplicates name both sources, unknown names suggest one."""

import json
from dataclasses import dataclass

import pytest

from lmmsae.errors import UserError
from lmmsae.registry import Component, Registry


@dataclass
class FakeOptions:
    k: int = 4
    name: str = "x"


class Thing:
    Options = FakeOptions


def test_duplicate_names_fail_naming_both_plugins():
    reg = Registry("saes")
    reg.add(Component("saes", "topk", "a.mod:A", "plugin-a"))
    with pytest.raises(UserError) as err:
        reg.add(Component("saes", "topk", "b.mod:B", "plugin-b"))
    message = str(err.value)
    assert "plugin-a" in message and "plugin-b" in message and "registered twice" in message


def test_unknown_name_suggests_and_lists_installed():
    reg = Registry("explainers")
    for name in ("anthropic", "openai-compatible", "toy-llava"):
        reg.add(Component("explainers", name, "m:C", "p"))
    with pytest.raises(UserError) as err:
        reg.get("antropic")
    message = str(err.value)
    assert "Did you mean 'anthropic'?" in message
    assert "Installed: anthropic, openai-compatible, toy-llava" in message
    assert "\n" not in message


def test_component_loads_lazily_and_validates_options():
    component = Component("saes", "thing", f"{__name__}:Thing", "tests", {"k": 8})
    assert component.load() is Thing
    assert component.options({}) == FakeOptions(k=8)
    assert component.options({"k": "16"}) == FakeOptions(k=16)
    with pytest.raises(UserError, match=r"unknown option 'kk' for SAE architecture 'thing'\. Did you mean 'k'\?"):
        component.options({"kk": 3})


def test_missing_dependency_is_a_clear_error():
    component = Component("scorers", "ghost", "no_such_package_xyz.mod:C", "some-plugin")
    with pytest.raises(UserError, match="needs the missing package 'no_such_package_xyz'"):
        component.load()


# --------------------------------------------------------------------------- broken third-party plugins
# Each test installs a real plugin distribution (a package plus its .dist-info with an `lmmsae` entry
# point) into a temporary folder put on sys.path, as pip would into site-packages.

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from lmmsae import plugins  # noqa: E402
from lmmsae.cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOOD_HOOK = '''
from lmmsae.hookspecs import hookimpl

@hookimpl
def register_datasets(register):
    register("{name}", "{target}")
'''


def install_plugin(site: Path, dist: str, module: str, source: str, files: dict[str, str] | None = None) -> None:
    """A minimal installed distribution: module/__init__.py (+ files) and its dist-info entry point."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(source)
    for name, text in (files or {}).items():
        (site / module / name).write_text(text)
    info = site / f"{dist.replace('-', '_')}-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(f"[lmmsae]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder on sys.path, every installed plugin allowed, fresh plugin manager."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("LMMSAE_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield folder
    plugins.reset()
    for name in [m for m in sys.modules if m.startswith("lmmsae_test_")]:
        del sys.modules[name]


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning: plugin" in line]


def test_plugin_that_fails_to_import_is_skipped_with_one_line(site, capsys):
    install_plugin(site, "lmmsae-test-broken", "lmmsae_test_broken", "raise RuntimeError('boom: a bad release')\n")
    install_plugin(site, "lmmsae-test-good", "lmmsae_test_good", GOOD_HOOK.format(name="good-data", target="x:Y"))
    assert "good-data" in plugins.registry("datasets")
    assert "shapes" in plugins.registry("datasets")
    lines = warnings(capsys.readouterr().err)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "plugin lmmsae-test-broken 0.3.0 does not load and is skipped (RuntimeError: boom: a bad release)" in line
    assert "LMMSAE_LOAD_PLUGINS=" in line and "lmmsae-test-good" in line.split("LMMSAE_LOAD_PLUGINS=")[1]
    assert "pip uninstall lmmsae-test-broken" in line
    broken = [p for p in plugins.plugins() if p.distribution == "lmmsae-test-broken"]
    assert broken and broken[0].error == "RuntimeError: boom: a bad release"


def test_plugin_whose_register_hook_raises_is_dropped_whole(site, capsys):
    source = GOOD_HOOK.format(name="half-data", target="x:Y") + '''
@hookimpl
def register_scorers(register):
    register("half-scorer", "x:Z")
    raise KeyError("oops")
'''
    install_plugin(site, "lmmsae-test-half", "lmmsae_test_half", source)
    assert "half-data" in plugins.registry("datasets")  # built before the failing hook ran
    assert "half-scorer" not in plugins.registry("scorers")
    assert "half-data" not in plugins.registry("datasets")  # the whole plugin is gone
    line, = warnings(capsys.readouterr().err)
    assert "plugin lmmsae-test-half 0.3.0 failed in its register_scorers hook and is skipped (KeyError: 'oops')" in line
    data = CliRunner().invoke(cli, ["plugins", "--json"]).output
    entry = [p for p in json.loads(data)["plugins"] if p["name"] == "lmmsae-test-half"][0]
    assert entry["error"] == "KeyError: 'oops'" and entry["components"] == {}


def test_wrong_class_path_is_one_line_naming_component_plugin_and_target(site):
    install_plugin(site, "lmmsae-test-typo", "lmmsae_test_typo",
                   GOOD_HOOK.format(name="typo-data", target="lmmsae_test_typo.data:ImageFolderr"),
                   {"data.py": "class ImageFolder:\n    pass\n"})
    with pytest.raises(UserError) as err:
        plugins.get("datasets", "typo-data").load()
    assert str(err.value) == ("dataset 'typo-data' (from plugin lmmsae_test_typo) points to "
                              "'lmmsae_test_typo.data:ImageFolderr', but 'lmmsae_test_typo.data' has no "
                              "'ImageFolderr': update or uninstall that plugin")
    component = Component("datasets", "gone", "lmmsae_test_typo.nothere:X", "lmmsae_test_typo")
    with pytest.raises(UserError, match=r"points to 'lmmsae_test_typo.nothere:X', but module "
                                        r"'lmmsae_test_typo.nothere' does not exist"):
        component.load()


def test_help_and_plugins_work_with_a_broken_plugin_installed(tmp_path):
    site = tmp_path / "site"
    install_plugin(site, "lmmsae-test-broken", "lmmsae_test_broken", "import no_such_module_at_all\n")
    env = {k: v for k, v in os.environ.items() if k != "LMMSAE_LOAD_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(site), str(ROOT), env.get("PYTHONPATH")] if p)
    for args in (["--help"], ["plugins"]):
        result = subprocess.run([sys.executable, "-m", "lmmsae", *args], capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        line, = result.stderr.strip().splitlines()
        assert line.startswith("lmmsae: warning: plugin lmmsae-test-broken 0.3.0 does not load and is skipped "
                               "(ModuleNotFoundError: No module named 'no_such_module_at_all'); disable it with "
                               "LMMSAE_LOAD_PLUGINS="), line
    assert "lmmsae-test-broken 0.3.0  BROKEN, skipped: ModuleNotFoundError" in result.stdout
