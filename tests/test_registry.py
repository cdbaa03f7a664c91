"""Registry errors are one clear line: duplicates name both sources, unknown names suggest one."""

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
