"""Backends: the models that answer (local transformers LMMs, Anthropic, OpenAI-compatible servers).

Explainers, judges, the label refiner and the concept labeller get their backend here, always with
the run's response cache, so no answer is paid for twice.
"""

from __future__ import annotations

from typing import Any


def build(name: str, options: dict[str, Any] | None = None, cache=None):
    """The registered backend `name` with `options` over its presets, answering through `cache`."""
    from lmmsae import plugins

    component = plugins.get("backends", name)
    return component.load()(component.options(options or {}), name=name, cache=cache)


def of_explainer(name: str, options: dict[str, Any] | None = None, cache=None, **overrides: Any):
    """The backend behind a configured explainer (e.g. the run's, as the default judge), `overrides` on
    top of its options; a UserError when that explainer has none."""
    from lmmsae import plugins
    from lmmsae.errors import UserError

    resolved = plugins.get("explainers", name).options(options or {})
    backend = getattr(resolved, "backend", "")
    if not backend:
        raise UserError(f"explainer {name!r} has no backend to ask: name one, e.g. -o scorers.N.judge=anthropic")
    return build(backend, {**resolved.backend_options, **overrides}, cache=cache)
