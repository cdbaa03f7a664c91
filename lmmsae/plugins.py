"""The plugin manager: built-ins plus every `lmmsae` entry point, filtered by LMMSAE_LOAD_PLUGINS.

LMMSAE_LOAD_PLUGINS unset loads every installed plugin; set to a comma-separated list of
distribution names it loads only those; set to "" it loads none (the tests do this).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import pluggy

from lmmsae import hookspecs
from lmmsae.registry import KINDS, Component, Registry

ENTRY_POINT_GROUP = "lmmsae"
LOAD_ENV = "LMMSAE_LOAD_PLUGINS"
DEFAULT_PLUGINS = (
    "lmmsae.default_plugins.datasets",
    "lmmsae.default_plugins.models",
    "lmmsae.default_plugins.saes",
    "lmmsae.default_plugins.explainers",
    "lmmsae.default_plugins.scorers",
)


@dataclass
class PluginInfo:
    """A plugin distribution: its name, version, the pluggy plugins it ships and what they register."""

    distribution: str
    version: str
    modules: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)


@lru_cache(maxsize=None)
def plugin_manager() -> pluggy.PluginManager:
    """Create the manager once, with built-ins first, then the allowed external plugins."""
    import importlib

    pm = pluggy.PluginManager("lmmsae")
    pm.add_hookspecs(hookspecs)
    from lmmsae import __version__

    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        pm.register(module, name=module_name)
        _DISTS[module_name] = ("lmmsae", __version__)
    _load_entry_points(pm)
    return pm


_DISTS: dict[str, tuple[str, str]] = {}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import entry_points

    allowed = os.environ.get(LOAD_ENV)
    allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist else ep.value
        if allow is not None and dist not in allow and ep.name not in allow:
            continue
        if pm.has_plugin(ep.name):
            continue
        pm.register(ep.load(), name=ep.name)
        _DISTS[ep.name] = (dist, ep.dist.version if ep.dist else "unknown")


@lru_cache(maxsize=None)
def registry(kind: str) -> Registry:
    """All components of one kind, each tagged with the plugin that registered it."""
    reg = Registry(kind)
    hook = getattr(plugin_manager().hook, f"register_{kind}")
    for impl in reversed(hook.get_hookimpls()):
        def register(name: str, target: str, _plugin=impl.plugin_name, **defaults) -> None:
            reg.add(Component(kind, name, target, _plugin, defaults))

        impl.function(register=register)
    return reg


def get(kind: str, name: str) -> Component:
    """Shortcut for registry(kind).get(name)."""
    return registry(kind).get(name)


def plugins() -> list[PluginInfo]:
    """Every loaded plugin distribution with what it registers, for `lmmsae plugins`."""
    pm = plugin_manager()
    infos: dict[str, PluginInfo] = {}
    owner: dict[str, PluginInfo] = {}
    for name in (pm.get_name(p) for p in pm.get_plugins()):
        dist, version = _DISTS.get(name, (name, "unknown"))
        info = infos.setdefault(dist, PluginInfo(dist, version))
        info.modules.append(name)
        owner[name] = info
    for kind in KINDS:
        for component in registry(kind):
            owner[component.plugin].components.setdefault(kind, []).append(component.name)
    for info in infos.values():
        info.modules.sort()
    return sorted(infos.values(), key=lambda i: (i.distribution != "lmmsae", i.distribution))


def reset() -> None:
    """Forget loaded plugins (tests use this after changing LMMSAE_LOAD_PLUGINS)."""
    plugin_manager.cache_clear()
    registry.cache_clear()
    _DISTS.clear()
