"""Any server speaking the OpenAI chat-completions API (vLLM, sglang, hosted ones): images as data
URLs. This is how a 72B explainer on a cluster is used: -o explainer.base_url=http://node:8000/v1."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lmmsae.explainers.api import APIExplainer, classify_api_error, encode_image
from lmmsae.explainers.base import Answer, Query


class OpenAICompatibleExplainer(APIExplainer):
    """The key comes from $OPENAI_API_KEY (or api_key_env); local servers without a key get "EMPTY"."""

    @dataclass
    class Options(APIExplainer.Options):
        base_url: str = "http://localhost:8000/v1"
        api_key_env: str = "OPENAI_API_KEY"
        temperature: float | None = 0.0
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
        extra_body: dict[str, Any] = field(default_factory=dict)   # server-specific parameters

    key_required = False

    sdk = "openai"  # imported on use: a missing key must fail before the SDK's seconds of imports

    def make_client(self, api_key):
        import openai as openai_sdk

        o = self.options
        return openai_sdk.AsyncOpenAI(api_key=api_key or "EMPTY", base_url=o.base_url or None,
                                      max_retries=0, timeout=o.timeout)

    def model_identity(self):
        return {**super().model_identity(), "extra_body": self.options.extra_body}

    async def send(self, client, query: Query, cache_instructions: bool) -> Answer:
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
        if o.extra_body:
            kwargs["extra_body"] = dict(o.extra_body)
        response = await client.chat.completions.create(model=o.model, messages=messages, **kwargs)
        if not response.choices:
            raise ValueError("the server answered with no choices")
        text = response.choices[0].message.content or ""
        u = response.usage
        usage = {"prompt_tokens": getattr(u, "prompt_tokens", 0) or 0,
                 "completion_tokens": getattr(u, "completion_tokens", 0) or 0}
        return Answer(text=text, tokens=sum(usage.values()), usage=usage)

    def classify(self, exc):
        import openai as openai_sdk

        return classify_api_error(exc, openai_sdk)
