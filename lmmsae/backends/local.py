"""A local LMM through transformers' image-text-to-text models (LLaVA-OneVision, LLaVA, the toy LLaVA, ...).

Queries sent at the same time are answered together: the session's requests queue up and run as one
batched, left-padded, greedy `generate()` of at most `batch_size` prompts. A query asking for
log-probabilities gets the first generated token's `top_logprobs` alternatives (the softmax of the
next-token logits right after the prompt), so a yes/no judge gives P(yes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from lmmsae.backends.base import Answer, Backend, Query
from lmmsae.errors import UserError

QUIET_TICKS = 3  # event-loop turns without a new query before a partial batch starts


class LocalBackend(Backend):
    """Any transformers image-text-to-text checkpoint, on this machine."""

    @dataclass
    class Options:
        checkpoint: str = ""                 # HF id or local folder; "toy" = the shipped toy LLaVA
        device: str = "auto"                 # auto = cuda when available
        dtype: str = "auto"                  # auto = bfloat16 on cuda, float32 on cpu
        batch_size: int = 8                  # prompts per generate() call
        max_new_tokens: int = 200
        chat_template: bool = True           # wrap prompts with the processor's chat template
        top_logprobs: int = 20               # alternatives returned for the first token when asked for
        generate_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {do_sample: true, temperature: 0.7}

    kind = "transformers"
    offers_logprobs = True

    @classmethod
    def preflight(cls, options) -> None:
        from lmmsae.checkpoints import check_checkpoint

        if not options.checkpoint:
            raise UserError("needs a checkpoint: -o explainer.checkpoint=<HF id or folder>")
        check_checkpoint(options.checkpoint, "explainer.checkpoint",
                         alternative="use the toy world's explainer (--explainer toy-llava) or an API explainer")

    def __init__(self, options=None, name=None, cache=None):
        super().__init__(options, name, cache)
        if not self.options.checkpoint:
            raise UserError(f"backend {self.name!r} needs a checkpoint: -o explainer.checkpoint=<HF id or folder>")
        if self.options.batch_size < 1:
            raise UserError(f"backend {self.name!r}: batch_size must be at least 1")
        self.lmm = None
        self.processor = None
        self.device = "cpu"
        self.stats["batches"] = 0

    @property
    def concurrency(self) -> int:
        return self.options.batch_size

    @property
    def model(self) -> str:
        return self.options.checkpoint

    def model_identity(self) -> dict[str, Any]:
        o = self.options
        return {"backend": self.kind, "checkpoint": o.checkpoint, "max_new_tokens": o.max_new_tokens,
                "chat_template": o.chat_template, "generate_kwargs": o.generate_kwargs}

    def load(self) -> None:
        """Load the model and processor once (on the first request that is not in the cache)."""
        if self.lmm is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        from lmmsae.models.hf import resolve_checkpoint

        hf_logging.disable_progress_bar()
        o = self.options
        path = resolve_checkpoint(o.checkpoint)
        device = o.device if o.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = o.dtype if o.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.lmm = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        except OSError as exc:
            raise UserError(f"backend {self.name!r} cannot load checkpoint {o.checkpoint!r}: "
                            f"{str(exc).splitlines()[0]}") from None
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # batched generation continues every prompt at its end
        self.device = device

    def close(self) -> None:
        self.lmm = self.processor = None

    # -- the session: a batcher

    async def connect(self) -> "_Batcher":
        return _Batcher(self.run_batch, self.options.batch_size)

    async def disconnect(self, batcher: "_Batcher") -> None:
        await batcher.close()

    async def send(self, batcher: "_Batcher", query: Query) -> Answer:
        return await batcher.submit(query)

    def classify(self, exc):
        return "fail", None  # an out-of-memory or a bad input fails these requests; retrying would too

    # -- generation

    def prompt_text(self, query: Query) -> str:
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

    def run_batch(self, queries: list[Query]) -> list[Answer]:
        """Answers to a batch in one greedy generate(); first-token log-probabilities where asked for."""
        import torch

        self.load()
        self.stats["batches"] += 1
        texts = [self.prompt_text(q) for q in queries]
        images = [image.convert("RGB") for q in queries for image in q.images]
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.lmm.dtype)
        want_logprobs = any(q.logprobs for q in queries)
        gen = {"do_sample": False, **self.options.generate_kwargs}
        if want_logprobs:
            gen.update(output_logits=True, return_dict_in_generate=True)
        with torch.no_grad():
            out = self.lmm.generate(**inputs, max_new_tokens=self.options.max_new_tokens, **gen)
        sequences = out.sequences if want_logprobs else out
        new = sequences[:, inputs["input_ids"].shape[1]:]
        decoded = [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
        first = torch.log_softmax(out.logits[0].float(), dim=-1) if want_logprobs else None
        return [Answer(text=text, logprobs=self._top(first[i]) if q.logprobs else None)
                for i, (q, text) in enumerate(zip(queries, decoded))]

    def _top(self, logprobs) -> dict[str, float]:
        values, ids = logprobs.topk(min(self.options.top_logprobs, logprobs.shape[-1]))
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        out: dict[str, float] = {}
        for value, token in zip(values.tolist(), ids.tolist()):
            text = tokenizer.decode([token])
            out[text] = max(out.get(text, float("-inf")), value)
        return out


class _Batcher:
    """Collects the queries of one session and answers them in batches of at most `size`.

    A batch starts once `size` queries wait, or when the event loop has gone `QUIET_TICKS` turns
    without a new one (everything that could be asked now has been). Generation runs on the loop's
    thread: nothing else needs the loop meanwhile, and batches stay deterministic.
    """

    def __init__(self, run_batch, size: int):
        self.run_batch = run_batch
        self.size = size
        self.waiting: list[tuple[Query, asyncio.Future]] = []
        self.worker: asyncio.Task | None = None

    async def submit(self, query: Query) -> Answer:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((query, future))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.ensure_future(self._work())
        return await future

    async def _work(self) -> None:
        while self.waiting:
            quiet, seen = 0, len(self.waiting)
            while quiet < QUIET_TICKS and len(self.waiting) < self.size:
                await asyncio.sleep(0)
                quiet = quiet + 1 if len(self.waiting) == seen else 0
                seen = len(self.waiting)
            batch, self.waiting = self.waiting[:self.size], self.waiting[self.size:]
            batch = [(q, f) for q, f in batch if not f.done()]  # drop requests cancelled meanwhile
            if not batch:
                continue
            try:
                answers = self.run_batch([q for q, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)

    async def close(self) -> None:
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()
            await asyncio.gather(self.worker, return_exceptions=True)
        for _, future in self.waiting:
            future.cancel()
