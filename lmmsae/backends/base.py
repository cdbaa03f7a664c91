"""The backend interface: a model that answers queries (images, then a prompt, under a system prompt)
with text and, where it offers them, the first answer token's log-probabilities.

Explainers (prompting strategies), judges, the label refiner and the concept labeller all talk to a
backend. Every request goes through `Session.answer`, the one place where the response cache, the
concurrency limit, retries and the token cap apply; a backend only says how to `connect` and how to
`send` one query. The sync helpers (`complete`, `ask`, `ask_many`, `yes_probability`, `stream`)
open a session on a private event loop and close it, every task collected, on every exit path.
Implementations import heavy libraries inside methods or in their own modules.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator

from lmmsae.errors import UserError
from lmmsae.secrets import scrub
from lmmsae.text import yes_probability


@dataclass(frozen=True)
class Query:
    """One request: images, then a prompt, under an optional system prompt."""

    images: list[Any]            # PIL images
    prompt: str
    system: str = ""
    variant: int = 0             # separates deliberate re-asks (after a malformed answer) in the cache
    logprobs: bool = False       # also return the first answer token's top log-probabilities
    reuse_system: bool = False   # the system prompt repeats across requests: let the API cache it


@dataclass
class Answer:
    """A model's raw answer with what it cost and how it was obtained."""

    text: str
    tokens: int = 0              # input + output tokens billed (0 for local models and cache hits)
    cached: bool = False         # served from the response cache
    attempts: int = 0            # requests made (0 when cached)
    usage: dict[str, Any] = field(default_factory=dict)
    logprobs: dict[str, float] | None = None  # first answer token: top alternatives -> log-probability


class Backend(ABC):
    """Base class. `name` is the registered name; `cache` a ResponseCache or None."""

    @dataclass
    class Options:
        pass

    kind = "backend"              # stable name in cache keys (not the class name, which may move)
    offers_logprobs = False       # whether `Answer.logprobs` can ever be filled

    def __init__(self, options: "Backend.Options | None" = None, name: str | None = None, cache=None):
        from lmmsae.backends.concurrency import RetryPolicy, TokenBudget

        self.options = options if options is not None else self.Options()
        self.name = name or type(self).__name__.lower()
        self.cache = cache
        self.policy = RetryPolicy(0)
        self.budget = TokenBudget(0)
        self.seed = 0
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}

    @classmethod
    def preflight(cls, options) -> None:
        """Cheap checks, before any stage starts, of what this backend will need (an API key, a
        checkpoint): raise UserError saying what is missing. No model loads here."""

    # -- what an implementation provides

    @property
    def concurrency(self) -> int:
        """Requests in flight at most (a local model: one batch)."""
        return 1

    @property
    def model(self) -> str:
        """The model's name as records show it."""
        return ""

    def model_identity(self) -> dict[str, Any]:
        """What determines an answer, for the response cache (never a URL or a key)."""
        return {"backend": self.kind, "model": self.model}

    async def connect(self) -> Any:
        """Per-session state handed to `send` (an HTTP client, a batcher)."""
        return None

    async def disconnect(self, state: Any) -> None:
        """Release what `connect` made; must not raise."""

    @abstractmethod
    async def send(self, state: Any, query: Query) -> Answer:
        """One request to the model (no caching or retrying here: the session does that)."""

    def classify(self, exc: BaseException) -> tuple[str, float | None]:
        """("retry" | "fail" | "fatal", retry-after seconds) for an exception from `send`."""
        return "fail", None

    @property
    def drain_seconds(self) -> float:
        """How long requests already sent may finish after the consumer stopped (their answers get cached)."""
        return 0.0

    def close(self) -> None:
        """Release models or connections; safe to call twice."""

    def identity(self) -> dict[str, Any]:
        """Name, class and options (never secrets: options hold the name of a key's variable, not the key)."""
        return {"name": self.name, "class": f"{type(self).__module__}.{type(self).__name__}",
                "options": dataclasses.asdict(self.options)}

    # -- sessions and the sync helpers

    def session(self) -> "Session":
        return Session(self)

    def run(self, work: Callable[["Session"], Awaitable[Any]]) -> Any:
        """Run `work(session)` on a private event loop; a fatal error becomes a one-line UserError."""
        from lmmsae.backends.concurrency import Fatal, run_sync

        async def main():
            async with self.session() as session:
                return await work(session)

        try:
            return run_sync(main)
        except Fatal as exc:
            raise UserError(f"{self.name}: {scrub(str(exc))}") from None

    def complete(self, queries: Iterable[Query]) -> list[Answer | Exception]:
        """Answers in order, concurrently; a request that failed is its RequestFailed (with the reason)."""
        from lmmsae.backends.concurrency import settle

        queries = list(queries)
        return self.run(lambda session: settle(session.answer(q) for q in queries))

    def ask_many(self, requests: Iterable[tuple[list[Any], str]]) -> list[str]:
        """Answer texts in order; raises RequestFailed when any request failed."""
        answers = self.complete(Query(list(images), prompt) for images, prompt in requests)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return [a.text for a in answers]

    def ask(self, images: list[Any], prompt: str) -> str:
        return self.ask_many([(images, prompt)])[0]

    def yes_probability(self, images: list[Any], prompt: str) -> float | None:
        """P(yes) of a yes/no question from the first answer token's log-probabilities; None where the
        backend gives none (or neither yes nor no is among the top tokens)."""
        answer = self.complete([Query(list(images), prompt, logprobs=True)])[0]
        if isinstance(answer, Exception):
            raise answer
        return yes_probability(answer.logprobs)

    def stream(self, items: Iterable[Any], work: Callable[["Session", Any], Awaitable[Any]],
               window: int | None = None) -> Iterator[Any]:
        """`work(session, item)` for every item, `window` items at a time (read lazily), results in
        completion order; a fatal error (bad key) stops it with a one-line UserError."""
        from lmmsae.backends.concurrency import Fatal, bounded_map, iterate_async

        window = window or max(2 * self.concurrency, 4)

        async def produce():
            async with self.session() as session:
                async for result in bounded_map(iter(items), lambda item: work(session, item), window,
                                                self.drain_seconds, on_stop=session.stop):
                    yield result

        try:
            yield from iterate_async(produce)
        except Fatal as exc:
            raise UserError(f"{self.name} stopped: {scrub(str(exc))}") from None


class Session:
    """One connection and one concurrency bound for one batch of work; the one road to the model."""

    def __init__(self, backend: Backend):
        import asyncio

        self.backend = backend
        self.state = None
        self.limiter = asyncio.Semaphore(backend.concurrency)
        self.stopping = False
        self.fatal: str | None = None
        self.rng = random.Random(backend.seed)

    def stop(self) -> None:
        """The consumer went away: finish requests already sent, start no new one."""
        self.stopping = True

    async def __aenter__(self) -> "Session":
        self.state = await self.backend.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.backend.disconnect(self.state)

    async def answer(self, query: Query) -> Answer:
        """From the cache, else from the model (bounded, retried, counted), then into the cache."""
        from lmmsae.backends.cache import request_key
        from lmmsae.backends.concurrency import Fatal, RequestFailed, call_with_retries

        b = self.backend
        key = request_key(b.model_identity(), query)
        if b.cache is not None:
            hit = b.cache.get(key)
            if hit is not None:
                b.stats["cache_hits"] += 1
                return hit
        b.budget.check()
        async with self.limiter:
            if self.fatal is not None:
                raise Fatal(self.fatal)
            if self.stopping:
                raise RequestFailed("the run stopped before this request was sent")
            b.budget.check()

            async def call():
                b.stats["requests"] += 1
                return await b.send(self.state, query)

            def on_retry(reason):
                b.stats["retries"] += 1

            try:
                answer, attempts = await call_with_retries(call, b.classify, b.policy, self.rng, on_retry)
            except Fatal as exc:
                self.fatal = str(exc)  # every later request would hit it too: none is sent
                raise
        answer.attempts = attempts
        b.budget.add(answer.tokens)
        if b.cache is not None:
            b.cache.put(key, b.model, answer)
        return answer
