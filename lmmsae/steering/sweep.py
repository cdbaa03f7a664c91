"""Generate with and without steering, over features and strengths, as JSONL-ready records."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from lmmsae.steering.evaluate import logit_kl, text_drift
from lmmsae.steering.steer import Steering, make_edit


@dataclass
class SteerSpec:
    """A steering edit placed in a model: at which hookpoint, with which SAE, on which tokens, when."""

    hookpoint: str
    sae: Any
    steering: Steering
    token_kinds: list | None = None   # TokenKind values; None = every token
    prefill_only: bool = False


def steering_context(adapter, steer: SteerSpec | None):
    """The adapter's intervention for `steer` (a no-op context when steer is None)."""
    if steer is None:
        return contextlib.nullcontext()
    return adapter.intervene(steer.hookpoint, make_edit(steer.sae, steer.steering),
                             token_kinds=steer.token_kinds, prefill_only=steer.prefill_only)


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + max(1, size)]


def generate(adapter, samples: Sequence, prompt: str | None, steer: SteerSpec | None = None,
             batch_size: int = 8, max_new_tokens: int = 40) -> list[str]:
    """Greedy outputs for samples (prompt None: each sample's own prompt), optionally steered."""
    out: list[str] = []
    for chunk in _batches(list(samples), batch_size):
        batch = adapter.prepare(list(chunk), prompt)
        with steering_context(adapter, steer):
            out += adapter.generate(batch, max_new_tokens=max_new_tokens)
    return out


def forced_kl(adapter, samples: Sequence, prompt: str | None, continuations: Sequence[str],
              steer: SteerSpec) -> list[float]:
    """Per sample, mean KL(original || steered) over the next-token distributions that produced the
    original continuation, teacher-forced: the prepared prompt plus the continuation's tokens in one
    pass with and without the edit (with prefill_only, the edit touches prompt positions only).
    The continuation is re-tokenized from its text (exact for word-level tokenizers)."""
    import math

    import torch

    tokenizer = getattr(adapter, "tokenizer", None) or getattr(adapter.processor, "tokenizer", adapter.processor)
    out: list[float] = []
    for sample, text in zip(samples, continuations):
        batch = adapter.prepare([sample], prompt)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            out.append(math.nan)
            continue
        n_prompt = batch.inputs["input_ids"].shape[1]
        batch = extend_batch(batch, ids)
        edit = make_edit(steer.sae, steer.steering)
        if steer.prefill_only:
            edit = _before(edit, n_prompt)
        clean = adapter.logits(batch)
        with adapter.intervene(steer.hookpoint, edit, token_kinds=steer.token_kinds):
            steered = adapter.logits(batch)
        mask = torch.zeros(clean.shape[:2], dtype=torch.bool)
        mask[0, n_prompt - 1:n_prompt - 1 + ids.shape[1]] = True
        out += logit_kl(clean.cpu(), steered.cpu(), mask)
    return out


def _before(edit, n: int):
    """The edit limited to the first n positions (a one-pass stand-in for prefill-only)."""
    def limited(acts, mask):
        import torch

        keep = torch.zeros(acts.shape[:2], dtype=torch.bool, device=acts.device)
        keep[:, :n] = True
        return edit(acts, keep if mask is None else mask & keep)
    return limited


def extend_batch(batch, ids):
    """A one-row batch with text token ids [1, n] appended (kind TEXT in the token map)."""
    import numpy as np
    import torch

    from lmmsae.models.base import Batch, TokenKind, TokenMap

    inputs = dict(batch.inputs)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], ids.to(inputs["input_ids"].dtype)], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"],
                                          torch.ones_like(ids, dtype=inputs["attention_mask"].dtype)], 1)
    tm, n = batch.token_map, ids.shape[1]

    def grow(a, fill):
        extra = np.full((a.shape[0], n) + a.shape[2:], fill, dtype=a.dtype)
        return np.concatenate([a, extra], 1)

    tmap = TokenMap(grow(tm.kind, int(TokenKind.TEXT)), grow(tm.image, -1), grow(tm.view, -1), grow(tm.row, -1),
                    grow(tm.col, -1), grow(tm.box, -1), tm.grids, tm.image_sizes)
    return Batch(inputs, tmap, batch.sample_ids, batch.images, batch.texts)


def record_key(sample_id: str, features: Sequence[int], strength: float, mode: str) -> str:
    """What identifies one steered generation inside one steering file."""
    return f"{sample_id}|{','.join(map(str, features))}|{strength:g}|{mode}"


def sweep(adapter, sae, hookpoint: str, samples: Sequence, features: Sequence[int], strengths: Sequence[float],
          mode: str = "clamp", prompt: str | None = None, joint: bool = False,
          replace_with_reconstruction: bool = False, token_kinds: list | None = None, prefill_only: bool = False,
          max_new_tokens: int = 40, batch_size: int = 8, kl: bool = True, done: set[str] | None = None,
          sample_indices: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
    """Yield one record per (sample, feature or feature set, strength): original and steered text plus
    drift. Features are steered one at a time, or all together when `joint`. Keys in `done` are skipped."""
    done = done or set()
    groups = [list(features)] if joint else [[f] for f in features]
    indices = list(sample_indices) if sample_indices is not None else list(range(len(samples)))
    for chunk in _batches(list(zip(indices, samples)), batch_size):
        todo = [(g, s) for g in groups for s in strengths
                if any(record_key(smp.id, g, s, mode) not in done for _, smp in chunk)]
        if not todo:
            continue
        chunk_samples = [smp for _, smp in chunk]
        originals = generate(adapter, chunk_samples, prompt, None, batch_size, max_new_tokens)
        for group, strength in todo:
            spec = SteerSpec(hookpoint, sae, Steering(group, [strength], mode, replace_with_reconstruction),
                             token_kinds, prefill_only)
            steered = generate(adapter, chunk_samples, prompt, spec, batch_size, max_new_tokens)
            kls = forced_kl(adapter, chunk_samples, prompt, originals, spec) if kl else [None] * len(chunk)
            for (index, smp), orig, text, k in zip(chunk, originals, steered, kls):
                key = record_key(smp.id, group, strength, mode)
                if key in done:
                    continue
                yield {
                    "key": key,
                    "sample_index": index,
                    "image": smp.id,
                    "prompt": prompt if prompt is not None else smp.prompt,
                    "hookpoint": hookpoint,
                    "feature": group[0] if len(group) == 1 else group,
                    "strength": strength,
                    "mode": mode,
                    "replace_with_reconstruction": replace_with_reconstruction,
                    "prefill_only": prefill_only,
                    "token_kinds": [int(t) for t in token_kinds] if token_kinds else None,
                    "original": orig,
                    "steered": text,
                    "kl": k,
                    **{k2: v for k2, v in text_drift(orig, text).items()},
                }
