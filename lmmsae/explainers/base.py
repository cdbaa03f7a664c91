"""The explainer interface: feature records in, explanations out; also a generic image+text judge.

An explainer turns a FeatureRecord's rendered examples into an Explanation, yielding each one as it
finishes (so the explain stage can append it to JSONL at once). The same object answers single
requests through `ask(images, prompt)`, which scorers (detection judge), the label refiner and
steering judges use. Implementations import heavy libraries only inside methods or in their own
modules, which the registry loads on use.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from lmmsae.records import Explanation, FeatureRecord


@dataclass
class Query:
    """One request to a model: images, then a prompt, under an optional system prompt."""

    images: list[Any]  # PIL images
    prompt: str
    system: str = ""


@dataclass
class Answer:
    """A model's raw answer with what it cost and how it was obtained."""

    text: str
    tokens: int = 0              # input + output tokens billed (0 for local models)
    cached: bool = False         # served from the response cache
    attempts: int = 0            # HTTP attempts made (0 when cached)
    usage: dict[str, Any] = field(default_factory=dict)


class Explainer(ABC):
    """Base class; `name` is the registered name (set by whoever builds it) and goes into every record."""

    @dataclass
    class Options:
        pass

    def __init__(self, options: "Explainer.Options | None" = None, name: str | None = None, cache=None):
        self.options = options if options is not None else self.Options()
        self.name = name or type(self).__name__.lower()
        self.cache = cache  # a ResponseCache, or None for no caching

    @classmethod
    def preflight(cls, options) -> None:
        """Cheap checks, before any stage starts, of what this component will need (an API key, a
        checkpoint, a folder): raise UserError saying what is missing. No model loads here."""

    @abstractmethod
    def explain(self, records: Iterable[FeatureRecord]) -> Iterator[Explanation]:
        """Yield one Explanation per record (status ok or failed with a reason), in completion order."""

    @abstractmethod
    def ask(self, images: list[Any], prompt: str) -> str:
        """The model's answer to one request (images, then prompt)."""

    def ask_many(self, requests: list[tuple[list[Any], str]]) -> list[str]:
        """Answers to several requests, in order; backends override this to batch or run concurrently."""
        return [self.ask(images, prompt) for images, prompt in requests]

    def identity(self) -> dict[str, Any]:
        """Name, class and options (never secrets: options hold the name of a key's variable, not the key)."""
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__name__}",
                "options": dataclasses.asdict(self.options)}

    def close(self) -> None:
        """Release models or connections; safe to call twice."""
