"""A local LMM through transformers' image-text-to-text models (LLaVA-OneVision, LLaVA, the toy LLaVA, ...).

Two ways to turn k example images into one explanation (`aggregate`):

- "multi-image": one prompt holding all k masked images and the paper's instructions, answered with
  an `[EXPLANATION]:` line. For models that take several images per prompt (llava-ov, Qwen2-VL, ...).
- "common-words": the model describes each masked image on its own (prompt `per_image_prompt`), and
  the explanation is the words shared by at least `min_share` of the descriptions, in the order they
  appear (e.g. five views of red objects -> "red"). For one-image models such as LLaVA-1.5 and the
  toy LLaVA, which was trained to describe the one object a masked view keeps.

Generation is batched and greedy by default; answers go through the response cache like API answers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

from lmmsae.errors import UserError
from lmmsae.explainers.base import Answer, Explainer, Query
from lmmsae.explainers.cache import request_key
from lmmsae.explainers.parsing import parse_answer
from lmmsae.explainers.prompts import explanation_query, record_images
from lmmsae.records import Explanation, FeatureRecord

STOPWORDS = ("a", "an", "the", "at", "in", "on", "of", "and", "is", "are", "with", "there", "this", "that",
             "it", "its", "to", "image", "picture", "photo", "shows", "showing", "highlighted", "region")
TOY_CHECKPOINT = "toy"  # the shipped toy LLaVA (lmmsae/toyworld/weights/llava)
WORD = re.compile(r"[a-z][a-z\-']*")


def common_words(descriptions: list[str], min_share: float, stopwords: Iterable[str] = STOPWORDS) -> str | None:
    """Words (minus stopwords) found in at least `min_share` of the descriptions, in reading order."""
    stop = set(stopwords)
    token_lists = [[w for w in WORD.findall(d.lower()) if w not in stop] for d in descriptions]
    if not descriptions:
        return None
    need = max(1, math.ceil(min_share * len(descriptions) - 1e-9))
    counts = Counter(w for tokens in token_lists for w in set(tokens))
    keep = {w for w, c in counts.items() if c >= need}
    if not keep:
        return None
    best = max(token_lists, key=lambda tokens: len(keep & set(tokens)))
    ordered = [w for i, w in enumerate(best) if w in keep and w not in best[:i]]
    ordered += sorted(keep - set(ordered), key=lambda w: (-counts[w], w))
    return " ".join(ordered)


class LocalExplainer(Explainer):
    """Any transformers image-text-to-text checkpoint as the explainer, on this machine."""

    @dataclass
    class Options:
        checkpoint: str = ""                 # HF id or local folder; "toy" = the shipped toy LLaVA
        device: str = "auto"                 # auto = cuda when available
        dtype: str = "auto"                  # auto = bfloat16 on cuda, float32 on cpu
        batch_size: int = 8                  # prompts per generate() call
        max_new_tokens: int = 200
        n_images: int = 5
        render: Literal["mask", "heatmap", "crop", "original"] = "mask"
        aggregate: Literal["multi-image", "common-words"] = "multi-image"
        prompt: str = ""                     # multi-image instructions; "" = the paper's
        system_prompt: str | None = None     # None = the paper's; "" = none
        per_image_prompt: str = "Describe the highlighted region in a few words."
        min_share: float = 0.8               # common-words: share of descriptions a word must appear in
        stopwords: list[str] = field(default_factory=lambda: list(STOPWORDS))
        chat_template: bool = True           # wrap prompts with the processor's chat template
        answer_format: Literal["tagged", "plain"] = "tagged"
        generate_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {do_sample: true, temperature: 0.7}

    @classmethod
    def preflight(cls, options) -> None:
        from lmmsae.checkpoints import check_checkpoint

        if not options.checkpoint:
            raise UserError("needs a checkpoint: -o explainer.checkpoint=<HF id or folder>")
        check_checkpoint(options.checkpoint, "explainer.checkpoint")

    def __init__(self, options=None, name=None, cache=None):
        super().__init__(options, name, cache)
        if not self.options.checkpoint:
            raise UserError(f"explainer {self.name!r} needs a checkpoint: -o explainer.checkpoint=<HF id or folder>")
        if not 0 < self.options.min_share <= 1:
            raise UserError(f"explainer {self.name!r}: min_share must be in (0, 1]")
        self.model = None
        self.processor = None

    # -- model

    def load(self) -> None:
        """Load the model and processor once (on first use)."""
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        o = self.options
        path = self.checkpoint_path()
        device = o.device if o.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = o.dtype if o.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        except OSError as exc:
            raise UserError(f"explainer {self.name!r} cannot load checkpoint {o.checkpoint!r}: "
                            f"{str(exc).splitlines()[0]}") from None
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # batched generation continues every prompt at its end
        self.device = device

    def checkpoint_path(self) -> str:
        from lmmsae.models.hf import resolve_checkpoint  # one resolution of "toy" for models and explainers

        return resolve_checkpoint(self.options.checkpoint)

    def model_identity(self) -> dict[str, Any]:
        o = self.options
        return {"backend": "transformers", "checkpoint": o.checkpoint, "max_new_tokens": o.max_new_tokens,
                "chat_template": o.chat_template, "generate_kwargs": o.generate_kwargs}

    def close(self) -> None:
        self.model = self.processor = None

    # -- requests

    def _text(self, query: Query) -> str:
        o = self.options
        image_token = getattr(self.processor, "image_token", "<image>")
        if o.chat_template and getattr(self.processor, "chat_template", None):
            messages = []
            if query.system:
                messages.append({"role": "system", "content": [{"type": "text", "text": query.system}]})
            content = [{"type": "image"} for _ in query.images] + [{"type": "text", "text": query.prompt}]
            messages.append({"role": "user", "content": content})
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = query.prompt
        if query.images and image_token not in prompt:
            prompt = image_token * len(query.images) + "\n" + prompt
        return (query.system + "\n" + prompt) if query.system else prompt

    def _generate(self, queries: list[Query]) -> list[str]:
        """Answers to the queries, from the cache when known, else by batched greedy generation."""
        identity = self.model_identity()
        keys = [request_key(identity, q) for q in queries]
        answers: list[str | None] = [None] * len(queries)
        if self.cache is not None:
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None:
                    answers[i] = hit.text
        todo = [i for i, a in enumerate(answers) if a is None]
        if todo:
            self.load()
        for start in range(0, len(todo), max(self.options.batch_size, 1)):
            batch = todo[start:start + self.options.batch_size]
            for i, text in zip(batch, self._run_batch([queries[i] for i in batch])):
                answers[i] = text
                if self.cache is not None:
                    self.cache.put(keys[i], self.options.checkpoint, Answer(text=text))
        return [a or "" for a in answers]

    def _run_batch(self, queries: list[Query]) -> list[str]:
        import torch

        texts = [self._text(q) for q in queries]
        images = [image.convert("RGB") for q in queries for image in q.images]
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        gen = {"do_sample": False, **self.options.generate_kwargs}
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.options.max_new_tokens, **gen)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def ask(self, images: list[Any], prompt: str) -> str:
        return self._generate([Query(list(images), prompt, "")])[0]

    def ask_many(self, requests: list[tuple[list[Any], str]]) -> list[str]:
        return self._generate([Query(list(images), prompt, "") for images, prompt in requests])

    # -- explaining

    def explain(self, records: Iterable[FeatureRecord]) -> Iterator[Explanation]:
        chunk: list[FeatureRecord] = []
        per_chunk = max(self.options.batch_size, 1)
        for record in records:
            chunk.append(record)
            if len(chunk) >= per_chunk:
                yield from self._explain_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._explain_chunk(chunk)

    def _explain_chunk(self, records: list[FeatureRecord]) -> list[Explanation]:
        """One chunk's explanations; a generation error fails these features with its reason, not the run."""
        try:
            if self.options.aggregate == "common-words":
                return self._explain_common_words(records)
            return self._explain_multi_image(records)
        except (RuntimeError, ValueError) as exc:
            reason = f"generation failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            return [self._failed(r, reason) for r in records]

    def _explain_multi_image(self, records: list[FeatureRecord]) -> list[Explanation]:
        o = self.options
        queries = [explanation_query(r, o.n_images, o.render, o.prompt, o.system_prompt) for r in records]
        asked = [i for i, q in enumerate(queries) if q.images]
        answers = dict(zip(asked, self._generate([queries[i] for i in asked])))
        out = []
        for i, record in enumerate(records):
            if i not in answers:
                out.append(self._failed(record, "the feature has no example images to show"))
                continue
            parsed = parse_answer(answers[i], o.answer_format)
            meta = {"model": o.checkpoint, "n_images": len(queries[i].images), "answer": answers[i][:2000]}
            if parsed.status != "ok":
                out.append(self._failed(record, parsed.reason, unexplainable=parsed.status == "unexplainable", **meta))
            else:
                out.append(self._ok(record, parsed.text, **meta))
        return out

    def _explain_common_words(self, records: list[FeatureRecord]) -> list[Explanation]:
        o = self.options
        system = "" if o.system_prompt is None else o.system_prompt
        images = [record_images(r, o.n_images, o.render) for r in records]
        queries = [Query([img], o.per_image_prompt, system) for imgs in images for img in imgs]
        answers = iter(self._generate(queries))
        out = []
        for record, imgs in zip(records, images):
            descriptions = [next(answers) for _ in imgs]
            if not imgs:
                out.append(self._failed(record, "the feature has no example images to show"))
                continue
            text = common_words(descriptions, o.min_share, o.stopwords)
            meta = {"model": o.checkpoint, "n_images": len(imgs), "aggregate": "common-words",
                    "descriptions": descriptions}
            if text is None:
                need = max(1, math.ceil(o.min_share * len(descriptions) - 1e-9))
                out.append(self._failed(record, f"no word is shared by {need} of the {len(descriptions)} "
                                                f"image descriptions", **meta))
            else:
                out.append(self._ok(record, text, **meta))
        return out

    def _ok(self, record, text, **meta) -> Explanation:
        return Explanation(latent=int(record.latent), hookpoint=record.hookpoint, explainer=self.name,
                           text=text, meta=meta)

    def _failed(self, record, reason, **meta) -> Explanation:
        return Explanation(latent=int(record.latent), hookpoint=record.hookpoint, explainer=self.name,
                           text=None, status="failed", reason=reason, meta=meta)
