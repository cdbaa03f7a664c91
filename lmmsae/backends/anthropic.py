"""Claude through the official `anthropic` client: images as base64 content blocks, a repeated system
prompt marked for prompt caching. The Messages API returns no log-probabilities."""

from __future__ import annotations

from dataclasses import dataclass

from lmmsae.backends.api import APIBackend, classify_api_error, encode_image
from lmmsae.backends.base import Answer, Query


class AnthropicBackend(APIBackend):
    """The key comes from $ANTHROPIC_API_KEY (or the variable named by api_key_env)."""

    @dataclass
    class Options(APIBackend.Options):
        model: str = "claude-sonnet-5-5"
        api_key_env: str = "ANTHROPIC_API_KEY"
        prompt_caching: bool = True   # mark a repeated system prompt as a cache breakpoint

    kind = "anthropic"
    sdk = "anthropic"

    def make_client(self, api_key):
        import anthropic as anthropic_sdk

        o = self.options
        return anthropic_sdk.AsyncAnthropic(api_key=api_key, base_url=o.base_url or None,
                                            max_retries=0, timeout=o.timeout)

    async def send(self, client, query: Query) -> Answer:
        o = self.options
        content = []
        for image in query.images:
            media, data = encode_image(image, o.image_format)
            content.append({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
        content.append({"type": "text", "text": query.prompt})
        kwargs = {}
        if query.system:
            block = {"type": "text", "text": query.system}
            if o.prompt_caching and query.reuse_system:
                block["cache_control"] = {"type": "ephemeral"}
            kwargs["system"] = [block]
        if o.temperature is not None:
            kwargs["extra_body"] = {"temperature": o.temperature}
        message = await client.messages.create(model=o.model, max_tokens=o.max_tokens,
                                               messages=[{"role": "user", "content": content}], **kwargs)
        text = "".join(getattr(b, "text", "") for b in message.content if getattr(b, "type", "") == "text")
        u = message.usage
        usage = {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                 "cache_creation_input_tokens": u.cache_creation_input_tokens or 0,
                 "cache_read_input_tokens": u.cache_read_input_tokens or 0}
        return Answer(text=text, tokens=sum(usage.values()), usage=usage)

    def classify(self, exc):
        import anthropic as anthropic_sdk

        return classify_api_error(exc, anthropic_sdk)
