"""Any server speaking the OpenAI chat-completions API (vLLM, sglang, hosted ones): images as data
URLs. This is how a 72B model on a cluster is used: -o explainer.base_url=http://node:8000/v1.

A query asking for log-probabilities requests `logprobs` and `top_logprobs` for the answer; a server
that returns none gives an answer without them (detection's AUROC is then null, with the reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lmmsae.backends.api import APIBackend, classify_api_error, encode_image
from lmmsae.backends.base import Answer, Query


class OpenAICompatibleBackend(APIBackend):
    """The key comes from $OPENAI_API_KEY (or api_key_env); local servers without a key get "EMPTY"."""

    @dataclass
    class Options(APIBackend.Options):
        base_url: str = "http://localhost:8000/v1"
        api_key_env: str = "OPENAI_API_KEY"
        temperature: float | None = 0.0
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
        top_logprobs: int = 20                                     # alternatives per token when asked for
        extra_body: dict[str, Any] = field(default_factory=dict)   # server-specific parameters

    kind = "openai-compatible"
    key_required = False
    offers_logprobs = True
    sdk = "openai"

    def make_client(self, api_key):
        import openai as openai_sdk

        o = self.options
        return openai_sdk.AsyncOpenAI(api_key=api_key or "EMPTY", base_url=o.base_url or None,
                                      max_retries=0, timeout=o.timeout)

    def model_identity(self):
        return {**super().model_identity(), "extra_body": self.options.extra_body}

    async def send(self, client, query: Query) -> Answer:
        o = self.options
        content = []
        for image in query.images:
            media, data = encode_image(image, o.image_format)
            content.append({"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}})
        content.append({"type": "text", "text": query.prompt})
        messages = [{"role": "system", "content": query.system}] if query.system else []
        messages.append({"role": "user", "content": content})
        kwargs = {o.max_tokens_param: o.max_tokens}
        if o.temperature is not None:
            kwargs["temperature"] = o.temperature
        if query.logprobs:
            kwargs.update(logprobs=True, top_logprobs=o.top_logprobs)
        if o.extra_body:
            kwargs["extra_body"] = dict(o.extra_body)
        response = await client.chat.completions.create(model=o.model, messages=messages, **kwargs)
        if not response.choices:
            raise ValueError("the server answered with no choices")
        choice = response.choices[0]
        u = response.usage
        usage = {"prompt_tokens": getattr(u, "prompt_tokens", 0) or 0,
                 "completion_tokens": getattr(u, "completion_tokens", 0) or 0}
        return Answer(text=choice.message.content or "", tokens=sum(usage.values()), usage=usage,
                      logprobs=first_token_logprobs(choice) if query.logprobs else None)

    def classify(self, exc):
        import openai as openai_sdk

        return classify_api_error(exc, openai_sdk)


def first_token_logprobs(choice) -> dict[str, float] | None:
    """The first answer token's alternatives (token -> log-probability), or None when the server sent none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    first = content[0]
    out = {alt.token: float(alt.logprob) for alt in (getattr(first, "top_logprobs", None) or [])}
    out.setdefault(first.token, float(first.logprob))
    return out
