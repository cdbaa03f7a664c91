"""Did steering work, and at what cost? Concept appearance (keywords, ground truth or a judge) and
drift (KL of next-token distributions, length, repetition) between original and steered outputs.

The text measures are plain Python; `logit_kl` needs torch and `judge_concept` a backend.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from lmmsae.text import parse_yes_no, words


def mentions(text: str, keywords: str | Iterable[str]) -> bool:
    """True if any keyword (a word or a multi-word phrase) occurs as whole words in text."""
    if isinstance(keywords, str):
        keywords = [keywords]
    padded = f" {' '.join(words(text))} "
    return any(f" {' '.join(words(k))} " in padded for k in keywords if words(k))


def concept_rate(texts: Sequence[str], keywords: str | Iterable[str]) -> float:
    """Share of texts mentioning the concept (nan for no texts)."""
    keywords = [keywords] if isinstance(keywords, str) else list(keywords)
    return sum(mentions(t, keywords) for t in texts) / len(texts) if texts else math.nan


def concept_appeared(original: str, steered: str, keywords: str | Iterable[str]) -> bool:
    """The concept is in the steered text but was not in the original."""
    return mentions(steered, keywords) and not mentions(original, keywords)


JUDGE_PROMPT = (
    "Here is a text written by a model:\n\n{text}\n\n"
    "Does this text mention or clearly refer to the concept \"{concept}\"? Answer with one word: yes or no."
)


def judge_concept(judge, text: str, concept: str, images: list | None = None,
                  prompt: str = JUDGE_PROMPT) -> bool | None:
    """Ask a judge (any backend, through `ask(images, prompt)`) whether the text shows the concept;
    None when the judge's answer holds neither yes nor no."""
    return parse_yes_no(judge.ask(list(images or []), prompt.format(text=text, concept=concept)))


def repetition(text: str, n: int = 2) -> float:
    """Share of repeated n-grams: 1 - distinct / total (0 for no repeats, towards 1 for loops)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def text_drift(original: str, steered: str) -> dict[str, Any]:
    """Length and repetition of both texts, and whether the text changed at all."""
    lo, ls = len(words(original)), len(words(steered))
    return {
        "changed": original.strip() != steered.strip(),
        "length_original": lo,
        "length_steered": ls,
        "length_ratio": ls / lo if lo else (math.inf if ls else 1.0),
        "repetition_original": repetition(original),
        "repetition_steered": repetition(steered),
    }


def logit_kl(clean, steered, mask=None) -> list[float]:
    """Per row, mean over masked positions of KL(clean || steered) of the next-token distributions.

    clean, steered: logits [B, S, V]; mask [B, S] bool (positions to average; all when None).
    Computed in float64; a row with no masked position gives nan.
    """
    import torch

    p = torch.log_softmax(clean.double(), -1)
    q = torch.log_softmax(steered.double(), -1)
    kl = (p.exp() * (p - q)).sum(-1)  # [B, S]
    if mask is None:
        mask = torch.ones(kl.shape, dtype=torch.bool)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=kl.device)
    counts = mask.sum(-1)
    sums = (kl * mask).sum(-1)
    return [float(s / c) if c else math.nan for s, c in zip(sums, counts)]


def summarize(records: Sequence[dict[str, Any]], keywords: str | Iterable[str] | None = None) -> dict[str, Any]:
    """Aggregate a list of steering records (original/steered texts, optional 'kl') into rates and means."""
    if not records:
        return {"n": 0}
    orig = [r["original"] for r in records]
    steer = [r["steered"] for r in records]
    out: dict[str, Any] = {
        "n": len(records),
        "changed": sum(o.strip() != s.strip() for o, s in zip(orig, steer)) / len(records),
        "length_original": sum(len(words(t)) for t in orig) / len(records),
        "length_steered": sum(len(words(t)) for t in steer) / len(records),
        "repetition_steered": sum(repetition(t) for t in steer) / len(records),
    }
    kls = [r["kl"] for r in records if r.get("kl") is not None and not math.isnan(r["kl"])]
    if kls:
        out["kl"] = sum(kls) / len(kls)
    if keywords is not None:
        out["concept_original"] = concept_rate(orig, keywords)
        out["concept_steered"] = concept_rate(steer, keywords)
        out["concept_appeared"] = sum(concept_appeared(o, s, keywords) for o, s in zip(orig, steer)) / len(records)
    return out
