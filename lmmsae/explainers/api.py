"""What the API explainers share: options, the request flow, caching, retries, the token cap.

A subclass says how to build its async client, send one Query, and classify its errors. Everything
else (bounded concurrency, backoff, the response cache, parsing, failed records with reasons) is here.
The API key is read from the environment variable named by `api_key_env`: options, records, logs and
the cache never hold the key itself.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal

from lmmsae.errors import UserError
from lmmsae.explainers.base import Answer, Explainer, Query
from lmmsae.explainers.cache import request_key
from lmmsae.explainers.concurrency import (Fatal, RequestFailed, RetryPolicy, TokenBudget, bounded_map,
                                           call_with_retries, iterate_async, run_sync)
from lmmsae.explainers.parsing import parse_answer
from lmmsae.explainers.prompts import USER_LINE, explanation_query
from lmmsae.records import Explanation, FeatureRecord

MAX_RAW_CHARS = 2000


def encode_image(image, image_format: str = "png") -> tuple[str, str]:
    """(media type, base64 data) of a PIL image."""
    buf = io.BytesIO()
    if image_format == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=90)
        media = "image/jpeg"
    else:
        image.save(buf, format="PNG")
        media = "image/png"
    return media, base64.b64encode(buf.getvalue()).decode("ascii")


def failed(record: FeatureRecord, explainer: str, reason: str, **meta: Any) -> Explanation:
    return Explanation(latent=int(record.latent), hookpoint=record.hookpoint, explainer=explainer,
                       text=None, status="failed", reason=reason, meta=meta)


class APIExplainer(Explainer):
    """An explainer behind an HTTP API, called asynchronously with at most `concurrency` requests in flight."""

    @dataclass
    class Options:
        model: str = ""
        base_url: str = ""                  # "" = the client's default (or its *_BASE_URL variable)
        api_key_env: str = ""               # name of the environment variable holding the key
        concurrency: int = 8                # requests in flight at most
        max_retries: int = 5                # on rate limits (429), server errors (5xx), timeouts
        backoff: float = 1.0                # seconds before the first retry, doubling, jittered
        backoff_max: float = 60.0
        timeout: float = 120.0              # seconds per request
        max_tokens: int = 400               # per answer
        temperature: float | None = None    # None = the server's default
        token_cap: int = 0                  # stop sending once this many tokens are billed (0 = no cap)
        n_images: int = 5                   # top examples shown per feature
        render: Literal["mask", "heatmap", "crop", "original"] = "mask"
        prompt: str = ""                    # instructions; "" = the paper's
        system_prompt: str | None = None    # None = the paper's; "" = none
        answer_format: Literal["tagged", "plain"] = "tagged"
        malformed_retries: int = 1          # re-asks after an answer without [EXPLANATION]:
        image_format: Literal["png", "jpeg"] = "png"
        seed: int = 0                       # for retry jitter

    key_required = True

    sdk = ""  # the client package a backend imports on use

    @classmethod
    def preflight(cls, options) -> None:
        import importlib.util

        if cls.sdk and importlib.util.find_spec(cls.sdk) is None:
            raise UserError(f"needs the {cls.sdk} package: pip install 'lmmsae[api]'")
        if not options.model:
            raise UserError("needs a model name: -o explainer.model=...")
        if cls.key_required and not (options.api_key_env and os.environ.get(options.api_key_env)):
            raise UserError(f"needs an API key: set the environment variable {options.api_key_env or '(api_key_env)'}")

    def __init__(self, options=None, name=None, cache=None):
        super().__init__(options, name, cache)
        o = self.options
        if not o.model:
            raise UserError(f"explainer {self.name!r} needs a model name: -o explainer.model=...")
        if o.concurrency < 1:
            raise UserError(f"explainer {self.name!r}: concurrency must be at least 1")
        self.budget = TokenBudget(o.token_cap)
        self.policy = RetryPolicy(o.max_retries, o.backoff, o.backoff_max)
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0}
        self._rng = random.Random(o.seed)

    # -- what a backend provides

    @abstractmethod
    def make_client(self, api_key: str | None):
        """The backend's async client, with max_retries=0 (we retry) and our timeout."""

    @abstractmethod
    async def send(self, client, query: Query, cache_instructions: bool) -> Answer:
        """One request; the answer with the tokens billed."""

    @abstractmethod
    def classify(self, exc: BaseException) -> tuple[str, float | None]:
        """("retry" | "fail" | "fatal", retry-after seconds or None) for an exception from `send`."""

    def model_identity(self) -> dict[str, Any]:
        """What determines an answer, for the response cache (not the URL, never the key)."""
        o = self.options
        return {"backend": type(self).__name__, "model": o.model, "max_tokens": o.max_tokens,
                "temperature": o.temperature}

    # -- the flow

    def api_key(self) -> str | None:
        env = self.options.api_key_env
        key = os.environ.get(env) if env else None
        if not key and self.key_required:
            raise UserError(f"explainer {self.name!r} needs an API key: set the environment variable {env}")
        return key

    def explain(self, records: Iterable[FeatureRecord]) -> Iterator[Explanation]:
        key = self.api_key()

        async def run():
            async with _Session(self, key) as session:
                window = max(2 * self.options.concurrency, 4)
                drain = min(self.options.timeout, 30.0)  # a run stopped early keeps answers already on their way
                async for explanation in bounded_map(iter(records), session.explain_one, window, drain,
                                                     on_stop=session.stop):
                    yield explanation

        return self._guard(iterate_async(run), key)

    def ask(self, images: list[Any], prompt: str) -> str:
        return self.ask_many([(images, prompt)])[0]

    def ask_many(self, requests: list[tuple[list[Any], str]]) -> list[str]:
        """Answers in order, concurrently; a request that fails raises RuntimeError with its reason."""
        key = self.api_key()

        async def run():
            async with _Session(self, key) as session:
                async def one(request):
                    images, prompt = request
                    return (await session.ask(Query(list(images), prompt, ""), cache_instructions=False)).text
                return await asyncio.gather(*(one(r) for r in requests))

        try:
            return run_sync(run)
        except RequestFailed as exc:
            raise RuntimeError(f"{self.name}: {self.scrub(str(exc), key)}") from None
        except Fatal as exc:
            raise UserError(f"{self.name}: {self.scrub(str(exc), key)}") from None

    def _guard(self, items: Iterator[Explanation], key: str | None) -> Iterator[Explanation]:
        try:
            for explanation in items:
                if explanation.reason:
                    explanation.reason = self.scrub(explanation.reason, key)
                yield explanation
        except Fatal as exc:
            raise UserError(f"{self.name} stopped: {self.scrub(str(exc), key)}") from None

    @staticmethod
    def scrub(text: str, key: str | None) -> str:
        """Never let a key reach a record or log, even inside an echoed error message."""
        return text.replace(key, "***") if key and len(key) >= 4 else text

    def explanation_query(self, record: FeatureRecord) -> Query:
        """The paper's request, with the fixed instructions moved into the (cacheable) system prompt."""
        o = self.options
        query = explanation_query(record, o.n_images, o.render, o.prompt, o.system_prompt)
        system = "\n\n".join(p for p in (query.system, query.prompt) if p)
        return Query(query.images, USER_LINE, system)


class _Session:
    """One client and one concurrency bound for one explain()/ask_many() call."""

    def __init__(self, explainer: APIExplainer, key: str | None):
        self.x = explainer
        self.key = key
        self.client = None
        self.semaphore = asyncio.Semaphore(explainer.options.concurrency)
        self.stopping = False

    def stop(self) -> None:
        """The consumer went away: finish requests already sent, start no new one."""
        self.stopping = True

    async def __aenter__(self):
        self.client = self.x.make_client(self.key)
        return self

    async def __aexit__(self, *exc):
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - closing must not hide the real error
                pass

    async def ask(self, query: Query, cache_instructions: bool, variant: int = 0) -> Answer:
        x = self.x
        identity = x.model_identity()
        key = request_key(identity, query, variant)
        if x.cache is not None:
            hit = x.cache.get(key)
            if hit is not None:
                x.stats["cache_hits"] += 1
                return hit
        x.budget.check()
        async with self.semaphore:
            if self.stopping:
                raise RequestFailed("the run stopped before this request was sent")
            x.budget.check()

            async def call():
                x.stats["requests"] += 1
                return await x.send(self.client, query, cache_instructions)

            def on_retry(reason):
                x.stats["retries"] += 1

            answer, attempts = await call_with_retries(call, x.classify, x.policy, x._rng, on_retry)
        answer.attempts = attempts
        x.budget.add(answer.tokens)
        if x.cache is not None:
            x.cache.put(key, x.options.model, answer)
        return answer

    async def explain_one(self, record: FeatureRecord) -> Explanation:
        x, o = self.x, self.x.options
        query = x.explanation_query(record)
        if not query.images:
            return failed(record, x.name, "the feature has no example images to show")
        attempts, tokens, answer, parsed = 0, 0, None, None
        for variant in range(1 + max(o.malformed_retries, 0)):
            try:
                answer = await self.ask(query, cache_instructions=True, variant=variant)
            except RequestFailed as exc:
                return failed(record, x.name, str(exc), model=o.model, attempts=attempts + exc.attempts)
            attempts += answer.attempts
            tokens += answer.tokens
            parsed = parse_answer(answer.text, o.answer_format)
            if parsed.status != "malformed":
                break
        meta = {"model": o.model, "n_images": len(query.images), "attempts": attempts, "tokens": tokens,
                "cached": answer.cached, "asks": variant + 1, "answer": answer.text[:MAX_RAW_CHARS]}
        if parsed.status != "ok":
            return failed(record, x.name, parsed.reason, unexplainable=parsed.status == "unexplainable", **meta)
        return Explanation(latent=int(record.latent), hookpoint=record.hookpoint, explainer=x.name,
                           text=parsed.text, meta=meta)


def classify_api_error(exc: BaseException, module) -> tuple[str, float | None]:
    """Shared by the anthropic and openai clients, whose error classes have the same names."""
    status = getattr(exc, "status_code", None)
    if isinstance(exc, (module.AuthenticationError, module.PermissionDeniedError)):
        return "fatal", None
    if isinstance(exc, module.NotFoundError):
        return "fatal", None  # unknown model or wrong base_url: every request would fail
    if isinstance(exc, (module.APITimeoutError, module.APIConnectionError)):
        return "retry", None
    if isinstance(exc, module.APIStatusError):
        if status == 429 or status in (408, 409) or (status is not None and status >= 500):
            return "retry", _retry_after(exc)
        return "fail", None
    if isinstance(exc, (module.APIResponseValidationError, ValueError)):
        return "retry", None  # a garbled response body: transient on proxies
    return "fail", None


def _retry_after(exc) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
