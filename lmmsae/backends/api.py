"""What the HTTP API backends share: options, the key, the client's lifetime, error classification.

A subclass says how to build its async client, send one Query and read the answer. Concurrency,
backoff, the response cache and the token cap come from the session (lmmsae.backends.base). The
API key is read from the environment variable named by `api_key_env`: options, records, logs and
the cache never hold the key itself, and it is registered with lmmsae.secrets so that any text
leaving the process is scrubbed of it.
"""

from __future__ import annotations

import base64
import io
import os
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from lmmsae import secrets
from lmmsae.backends.base import Backend
from lmmsae.backends.concurrency import RetryPolicy, TokenBudget
from lmmsae.errors import UserError


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


class APIBackend(Backend):
    """A model behind an HTTP API, called asynchronously with at most `concurrency` requests in flight."""

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
        image_format: Literal["png", "jpeg"] = "png"
        seed: int = 0                       # for retry jitter

        def __post_init__(self):  # checked when the config is read, before any stage runs
            from lmmsae.options import require

            require("explainer", self, concurrency=(self.concurrency >= 1, "at least 1"),
                    max_retries=(self.max_retries >= 0, ">= 0"), timeout=(self.timeout > 0, "> 0 seconds"),
                    max_tokens=(self.max_tokens >= 1, "at least 1"), token_cap=(self.token_cap >= 0, ">= 0"),
                    backoff=(self.backoff >= 0, ">= 0"))

    key_required = True
    sdk = ""  # the client package, imported on use: a missing key must fail before its seconds of imports

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
            raise UserError(f"backend {self.name!r} needs a model name: -o explainer.model=...")
        if o.concurrency < 1:
            raise UserError(f"backend {self.name!r}: concurrency must be at least 1")
        self.budget = TokenBudget(o.token_cap)
        self.policy = RetryPolicy(o.max_retries, o.backoff, o.backoff_max)
        self.seed = o.seed

    @property
    def concurrency(self) -> int:
        return self.options.concurrency

    @property
    def model(self) -> str:
        return self.options.model

    @property
    def drain_seconds(self) -> float:
        return min(self.options.timeout, 30.0)

    def model_identity(self) -> dict[str, Any]:
        o = self.options
        return {"backend": self.kind, "model": o.model, "max_tokens": o.max_tokens, "temperature": o.temperature}

    def api_key(self) -> str | None:
        env = self.options.api_key_env
        key = os.environ.get(env) if env else None
        if not key and self.key_required:
            raise UserError(f"backend {self.name!r} needs an API key: set the environment variable {env}")
        secrets.register(key)
        return key

    @abstractmethod
    def make_client(self, api_key: str | None):
        """The async client, with max_retries=0 (the session retries) and our timeout."""

    async def connect(self):
        return self.make_client(self.api_key())

    async def disconnect(self, client) -> None:
        close = getattr(client, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - closing must not hide the real error
                pass


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
