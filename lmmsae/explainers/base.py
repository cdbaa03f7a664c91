"""The explainer interface: feature records in, explanations out. An explainer is a prompting strategy;
the model it asks is a backend (lmmsae.backends), named by the `backend` option.

Explainer options are the strategy's own plus its backend's, flat (`-o explainer.n_images=3` and
`-o explainer.model=...` both work): `parse_options` keeps the strategy's keys and hands every other
one to the backend, validated by the backend's own `Options`. The backend is built on first use with
the response cache the explainer was given, so every answer is cached in one place.

A third-party explainer whose `Options` has no `backend` field is validated as before and needs
none: it only has to implement `explain`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from lmmsae.errors import UserError, did_you_mean
from lmmsae.records import Explanation, FeatureRecord


class Explainer(ABC):
    """Base class; `name` is the registered name (set by whoever builds it) and goes into every record."""

    @dataclass
    class Options:
        backend: str = ""                                          # the backend plugin that answers
        backend_options: dict[str, Any] = field(default_factory=dict)   # its options (flat keys land here)

    def __init__(self, options: "Explainer.Options | None" = None, name: str | None = None, cache=None):
        self.options = options if options is not None else self.Options()
        self.name = name or type(self).__name__.lower()
        self.cache = cache  # a ResponseCache, or None for no caching
        self._backend = None

    @classmethod
    def parse_options(cls, values: dict[str, Any], where: str, section: str | None = None):
        """The strategy's options with every other key validated by, and stored for, the backend."""
        from lmmsae import plugins
        from lmmsae.options import parse_options

        own = {f.name for f in dataclasses.fields(cls.Options)}
        if "backend" not in own:
            return parse_options(cls.Options, values, where, section)
        backend = values.get("backend", "")
        rest = {k: v for k, v in values.items() if k not in own}
        if not backend:
            return parse_options(cls.Options, values, where, section)
        component = plugins.get("backends", str(backend))
        theirs = {f.name for f in dataclasses.fields(component.load().Options)}
        for key in rest:
            if key not in theirs:
                known = own | theirs
                raise UserError(f"unknown option {key!r} for {where}.{did_you_mean(key, known)} "
                                f"Valid options: {', '.join(sorted(known))}")
        options = parse_options(cls.Options, {k: v for k, v in values.items() if k in own}, where, section)
        backend_options = component.options({**options.backend_options, **rest})
        options.backend_options = dataclasses.asdict(backend_options)
        return options

    @classmethod
    def preflight(cls, options) -> None:
        """Cheap checks, before any stage starts, of what this explainer will need: its backend's (an
        API key, a checkpoint). Raise UserError saying what is missing. No model loads here."""
        backend = getattr(options, "backend", "")
        if backend:
            from lmmsae import plugins

            component = plugins.get("backends", backend)
            component.load().preflight(component.options(options.backend_options))

    @property
    def backend(self):
        """The backend this explainer asks (built once, with the explainer's response cache); None without one."""
        if self._backend is None and getattr(self.options, "backend", ""):
            from lmmsae.backends import build

            self._backend = build(self.options.backend, self.options.backend_options, cache=self.cache)
        return self._backend

    @abstractmethod
    def explain(self, records: Iterable[FeatureRecord]) -> Iterator[Explanation]:
        """Yield one Explanation per record (status ok or failed with a reason), in completion order."""

    def record_request(self) -> dict[str, Any]:
        """How many examples each FeatureRecord should carry, and their rendering (strategies override)."""
        return {"n": 5, "render": "mask"}

    def identity(self) -> dict[str, Any]:
        """Name, class and options (never secrets: options hold the name of a key's variable, not the key)."""
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__name__}",
                "options": dataclasses.asdict(self.options)}

    def close(self) -> None:
        """Release the backend's model or connections; safe to call twice."""
        if self._backend is not None:
            self._backend.close()


def failed(record: FeatureRecord, explainer: str, reason: str, **meta: Any) -> Explanation:
    """A feature that could not be explained, with the reason (never dropped, never written as explained)."""
    return Explanation(latent=int(record.latent), hookpoint=record.hookpoint, explainer=explainer,
                       text=None, status="failed", reason=reason, meta=meta)


def explained(record: FeatureRecord, explainer: str, text: str, **meta: Any) -> Explanation:
    return Explanation(latent=int(record.latent), hookpoint=record.hookpoint, explainer=explainer,
                       text=text, meta=meta)
