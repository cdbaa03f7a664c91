"""The plugin manager: built-ins plus every `lmmsae` entry point, filtered by LMMSAE_LOAD_PLUGINS.

LMMSAE_LOAD_PLUGINS unset loads every installed plugin; set to a comma-separated list of
distribution names it loads only those; set to "" it loads none (the tests do this).
A third-party plugin that fails (its module does not import, or one of its hooks raises) is
skipped with one warning line and listed as broken by `lmmsae plugins`: one bad plugin must not
break every command. A failing built-in is our bug and raises.
"""

from __future__ import annotations

import os
import sys
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
    "lmmsae.default_plugins.backends",
    "lmmsae.default_plugins.explainers",
    "lmmsae.default_plugins.scorers",
)


@dataclass
class PluginInfo:
    """A plugin distribution: its name, version, the pluggy plugins it ships and what they register.

    `error` is set (one line) when the plugin is broken and was skipped."""

    distribution: str
    version: str
    modules: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


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


_DISTS: dict[str, tuple[str, str]] = {}      # pluggy plugin name -> (distribution, version)
_BROKEN: dict[str, PluginInfo] = {}          # distribution -> what failed


def _allowed_entry_points() -> list:
    from importlib.metadata import entry_points

    allowed = os.environ.get(LOAD_ENV)
    allow = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    return [ep for ep in entry_points(group=ENTRY_POINT_GROUP)
            if allow is None or _dist_of(ep)[0] in allow or ep.name in allow]


def _dist_of(ep) -> tuple[str, str]:
    return (ep.dist.name, ep.dist.version) if ep.dist else (ep.value, "unknown")


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in _allowed_entry_points():
        if pm.has_plugin(ep.name):
            continue
        _DISTS[ep.name] = _dist_of(ep)
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any failure of foreign code: skip that plugin
            _DISTS.pop(ep.name, None)
            _mark_broken(ep.name, _dist_of(ep), exc, "does not load")


def _mark_broken(plugin: str, dist: tuple[str, str], exc: BaseException, what: str) -> None:
    """Record a broken plugin and say so in one line on stderr: what failed and how to disable it."""
    name, version = dist
    error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}".rstrip(": ")
    _BROKEN[name] = PluginInfo(name, version, [plugin], error=error)
    others = sorted({_dist_of(ep)[0] for ep in _allowed_entry_points()} - set(_BROKEN))
    print(f"lmmsae: warning: plugin {name} {version} {what} and is skipped ({error}); disable it with "
          f"LMMSAE_LOAD_PLUGINS={','.join(others)} (the plugins to keep) or `pip uninstall {name}`",
          file=sys.stderr, flush=True)


def _drop_broken(plugin: str, exc: BaseException, hook: str) -> None:
    """A hook of an external plugin raised: unregister the whole plugin and forget built registries."""
    dist = _DISTS.get(plugin, (plugin, "unknown"))
    if dist[0] == "lmmsae":
        raise exc
    _DISTS.pop(plugin, None)
    plugin_manager().unregister(name=plugin)
    registry.cache_clear()  # registries built earlier may hold its components
    _mark_broken(plugin, dist, exc, f"failed in its {hook} hook")


@lru_cache(maxsize=None)
def registry(kind: str) -> Registry:
    """All components of one kind, each tagged with the plugin that registered it."""
    reg = Registry(kind)
    hook = getattr(plugin_manager().hook, f"register_{kind}")
    for impl in reversed(hook.get_hookimpls()):
        found: list[Component] = []

        def register(name: str, target: str, _plugin=impl.plugin_name, _found=found, **defaults) -> None:
            _found.append(Component(kind, name, target, _plugin, defaults))

        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a plugin's hook failed: none of its components count
            _drop_broken(impl.plugin_name, exc, f"register_{kind}")
            continue
        for component in found:
            reg.add(component)
    return reg


def commands() -> dict:
    """name -> click command added by plugins' register_commands hooks (a raising plugin is dropped)."""
    import click

    out: dict = {}
    for impl in reversed(plugin_manager().hook.register_commands.get_hookimpls()):
        group = click.Group()
        try:
            impl.function(cli=group)
        except Exception as exc:  # noqa: BLE001
            _drop_broken(impl.plugin_name, exc, "register_commands")
            continue
        out.update(group.commands)
    return out


def get(kind: str, name: str) -> Component:
    """Shortcut for registry(kind).get(name)."""
    return registry(kind).get(name)


def plugins() -> list[PluginInfo]:
    """Every plugin distribution with what it registers (and the broken ones), for `lmmsae plugins`."""
    pm = plugin_manager()
    for kind in KINDS:  # build every registry first: a hook that raises drops its plugin here
        registry(kind)
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
    infos.update({name: info for name, info in _BROKEN.items() if name not in infos})
    return sorted(infos.values(), key=lambda i: (i.distribution != "lmmsae", i.distribution))


def reset() -> None:
    """Forget loaded plugins (tests use this after changing LMMSAE_LOAD_PLUGINS)."""
    plugin_manager.cache_clear()
    registry.cache_clear()
    _DISTS.clear()
    _BROKEN.clear()
