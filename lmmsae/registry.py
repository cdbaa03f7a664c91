"""A typed registry per plugin kind: names map to lazy "module:Class" targets, imported only when used."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from lmmsae.errors import UserError, did_you_mean

KINDS = ("models", "saes", "datasets", "backends", "explainers", "scorers")
RUN_DEFAULTS = "run_defaults"  # the registration keyword holding a component's run defaults
SINGULAR = {"models": "model", "saes": "SAE architecture", "datasets": "dataset", "backends": "backend",
            "explainers": "explainer", "scorers": "scorer"}
SECTION = {"models": "model", "saes": "sae", "datasets": "dataset", "backends": "explainer", "explainers": "explainer",
           "scorers": "scorers.N"}


@dataclass(frozen=True)
class Component:
    """One registered implementation: its name, where its class lives, who registered it, preset options."""

    kind: str
    name: str
    target: str
    plugin: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def load(self) -> type:
        """Import the implementing class (this is where torch may get imported)."""
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name or "." not in module_name:
                raise UserError(
                    f"{SINGULAR[self.kind]} {self.name!r} (from {self.plugin}) needs the missing package "
                    f"{exc.name!r}: install it with pip install {exc.name}"
                ) from None
            raise self._broken(f"module {module_name!r} does not exist") from None
        except ImportError as exc:
            raise self._broken(f"importing {module_name!r} failed ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
        if not attr or not hasattr(module, attr):
            raise self._broken(f"{module_name!r} has no {attr!r}")
        return getattr(module, attr)

    def _broken(self, what: str) -> UserError:
        return UserError(
            f"{SINGULAR[self.kind]} {self.name!r} (from plugin {self.plugin}) points to {self.target!r}, but "
            f"{what}: update or uninstall that plugin"
        )

    def options(self, values: dict[str, Any] | None = None):
        """The validated Options instance for this component, presets overridden by `values` (a class
        with its own `parse_options(values, where, section)`, as explainers have, validates them itself)."""
        from lmmsae.options import parse_options

        cls = self.load()
        merged = {**{k: v for k, v in self.defaults.items() if k != RUN_DEFAULTS}, **(values or {})}
        where = f"{SINGULAR[self.kind]} {self.name!r}"
        if hasattr(cls, "parse_options"):
            return cls.parse_options(merged, where, SECTION[self.kind])
        return parse_options(getattr(cls, "Options"), merged, where=where, section=SECTION[self.kind])

    def run_defaults(self) -> dict[str, Any]:
        """Top-level run settings this component implies when the user gives none, declared at
        registration (`register(name, target, run_defaults={...})`): e.g. a model's hookpoints, device,
        dtype and dataset. Read without importing the component."""
        return dict(self.defaults.get(RUN_DEFAULTS) or {})


class Registry:
    """Components of one kind by name; duplicates and unknown names are loud, clear errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Component] = {}

    def add(self, component: Component) -> None:
        existing = self._items.get(component.name)
        if existing is not None:
            raise UserError(
                f"{SINGULAR[self.kind]} {component.name!r} is registered twice: by {existing.plugin} "
                f"({existing.target}) and by {component.plugin} ({component.target}); uninstall one of them"
            )
        self._items[component.name] = component

    def get(self, name: str) -> Component:
        try:
            return self._items[name]
        except KeyError:
            installed = ", ".join(sorted(self._items)) or "none"
            raise UserError(
                f"unknown {SINGULAR[self.kind]} {name!r}.{did_you_mean(name, self._items)} "
                f"Installed: {installed}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self):
        return iter(sorted(self._items.values(), key=lambda c: c.name))

    def __contains__(self, name: str) -> bool:
        return name in self._items
