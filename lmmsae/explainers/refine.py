"""The paper's label refiner: a long explanation becomes a short noun phrase (what CLIP and the
segmenter are given), asked of any backend (text only, no images), answers cached like all others."""

from __future__ import annotations

import re
from dataclasses import replace

from lmmsae.backends.base import Backend, Query
from lmmsae.records import Explanation

REFINE_PROMPT = (
    "Here is a description of the visual pattern a neuron of a vision model responds to:\n"
    "\"{explanation}\"\n"
    "Rewrite it as a short noun phrase of at most {max_words} words naming that visual concept "
    "(for example: \"red circles\", \"striped texture\", \"dog faces\"). Answer with one line:\n"
    "[LABEL]: <noun phrase>"
)
LABEL = re.compile(r"\[?\s*label\s*\]?\s*:\s*(?P<text>.+)", re.IGNORECASE)


def parse_label(answer: str, max_words: int = 6) -> str | None:
    """The noun phrase of a refiner's answer: its [LABEL]: line, else its first non-empty line."""
    lines = [line.strip() for line in (answer or "").splitlines() if line.strip()]
    text = None
    for line in lines:
        m = LABEL.search(line)
        if m:
            text = m.group("text")
    if text is None and lines:
        text = lines[0]
    if not text:
        return None
    text = " ".join(text.strip(" *\"'`.").split())
    words = text.split()
    return " ".join(words[:max_words]) if words else None


def refine(explanations: list[Explanation], refiner: Backend, max_words: int = 6,
           prompt: str = REFINE_PROMPT, batch_size: int = 32) -> list[Explanation]:
    """Copies of `explanations` with `label` set on explained ones lacking it; a refiner failure is
    noted in meta["label_error"] and leaves the label empty (scorers then use the text)."""
    out = list(explanations)
    todo = [i for i, e in enumerate(out) if e.status == "ok" and e.text and not e.label]
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        answers = refiner.complete(Query([], prompt.format(explanation=out[i].text, max_words=max_words))
                                   for i in batch)
        for i, answer in zip(batch, answers):
            if isinstance(answer, Exception):
                out[i] = replace(out[i], meta={**out[i].meta, "label_error": str(answer)})
                continue
            label = parse_label(answer.text, max_words)
            meta = {**out[i].meta, "label_by": refiner.name}
            out[i] = replace(out[i], label=label, meta=meta) if label else replace(
                out[i], meta={**meta, "label_error": f"no label in the refiner's answer {answer.text[:200]!r}"})
    return out
