"""The paper's explainer: one request per feature holding its top k masked images and the fixed
instructions (lmmsae.explainers.prompts), answered with an `[EXPLANATION]:` line.

The instructions go into the system prompt, which repeats across features (prompt caching on
Anthropic; prefix caching on vLLM/sglang). An answer without an `[EXPLANATION]:` line is asked
again (`malformed_retries`, a new cache entry each time); useful with sampling, wasted with greedy
decoding (the local presets set it to 0).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Literal

from lmmsae.backends.concurrency import RequestFailed
from lmmsae.explainers.base import Explainer, explained, failed
from lmmsae.explainers.parsing import parse_answer
from lmmsae.explainers.prompts import explanation_query
from lmmsae.records import Explanation, FeatureRecord

MAX_RAW_CHARS = 2000


class PaperExplainer(Explainer):
    """All k images in one prompt: for models that take several images (llava-ov, Qwen2-VL, Claude, ...)."""

    @dataclass
    class Options(Explainer.Options):
        n_images: int = 5                   # top examples shown per feature
        render: Literal["mask", "heatmap", "crop", "original"] = "mask"
        prompt: str = ""                    # instructions; "" = the paper's
        system_prompt: str | None = None    # None = the paper's; "" = none
        answer_format: Literal["tagged", "plain"] = "tagged"
        malformed_retries: int = 1          # re-asks after an answer without [EXPLANATION]:

    def record_request(self) -> dict[str, Any]:
        return {"n": self.options.n_images, "render": self.options.render}

    def explain(self, records: Iterable[FeatureRecord]) -> Iterator[Explanation]:
        if self.backend is None:
            raise ValueError(f"explainer {self.name!r} needs a backend")
        return self.backend.stream(records, self.explain_one)

    async def explain_one(self, session, record: FeatureRecord) -> Explanation:
        o = self.options
        query = explanation_query(record, o.n_images, o.render, o.prompt, o.system_prompt)
        if not query.images:
            return failed(record, self.name, "the feature has no example images to show")
        model = self.backend.model
        attempts, tokens = 0, 0
        for variant in range(1 + max(o.malformed_retries, 0)):
            try:
                answer = await session.answer(replace(query, variant=variant))
            except RequestFailed as exc:
                return failed(record, self.name, str(exc), model=model, attempts=attempts + exc.attempts)
            attempts += answer.attempts
            tokens += answer.tokens
            parsed = parse_answer(answer.text, o.answer_format)
            if parsed.status != "malformed":
                break
        meta = {"model": model, "n_images": len(query.images), "attempts": attempts, "tokens": tokens,
                "cached": answer.cached, "asks": variant + 1, "answer": answer.text[:MAX_RAW_CHARS]}
        if parsed.status != "ok":
            return failed(record, self.name, parsed.reason, unexplainable=parsed.status == "unexplainable", **meta)
        return explained(record, self.name, parsed.text, **meta)
