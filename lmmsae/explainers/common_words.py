"""The common-words explainer, for one-image models (LLaVA-1.5 style checkpoints, the toy LLaVA).

The backend describes each of the k masked images on its own (`per_image_prompt`), and the
explanation is the words (minus `stopwords`) shared by at least `min_share` of the descriptions, in
reading order: five masked views described as "a large red circle at the top", "a small red
square", ... give "red". The toy LLaVA was trained to describe the one object a masked view keeps.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

from lmmsae.backends.base import Query
from lmmsae.backends.concurrency import settle
from lmmsae.errors import UserError
from lmmsae.explainers.base import Explainer, explained, failed
from lmmsae.explainers.prompts import record_images
from lmmsae.records import Explanation, FeatureRecord
from lmmsae.text import words

STOPWORDS = ("a", "an", "the", "at", "in", "on", "of", "and", "is", "are", "with", "there", "this", "that",
             "it", "its", "to", "image", "picture", "photo", "shows", "showing", "highlighted", "region")


def common_words(descriptions: list[str], min_share: float, stopwords: Iterable[str] = STOPWORDS) -> str | None:
    """Words (minus stopwords) found in at least `min_share` of the descriptions, in reading order."""
    stop = set(stopwords)
    token_lists = [[w for w in words(d) if w not in stop] for d in descriptions]
    if not descriptions:
        return None
    need = shared_by(min_share, len(descriptions))
    counts = Counter(w for tokens in token_lists for w in set(tokens))
    keep = {w for w, c in counts.items() if c >= need}
    if not keep:
        return None
    best = max(token_lists, key=lambda tokens: len(keep & set(tokens)))
    ordered = [w for i, w in enumerate(best) if w in keep and w not in best[:i]]
    ordered += sorted(keep - set(ordered), key=lambda w: (-counts[w], w))
    return " ".join(ordered)


def shared_by(min_share: float, n: int) -> int:
    """How many of n descriptions a word must be in."""
    return max(1, math.ceil(min_share * n - 1e-9))


class CommonWordsExplainer(Explainer):
    @dataclass
    class Options(Explainer.Options):
        n_images: int = 5
        render: Literal["mask", "heatmap", "crop", "original"] = "mask"
        per_image_prompt: str = "Describe the highlighted region in a few words."
        system_prompt: str = ""
        min_share: float = 0.8               # share of descriptions a word must appear in
        stopwords: list[str] = field(default_factory=lambda: list(STOPWORDS))

    def __init__(self, options=None, name=None, cache=None):
        super().__init__(options, name, cache)
        if not 0 < self.options.min_share <= 1:
            raise UserError(f"explainer {self.name!r}: min_share must be in (0, 1]")

    def record_request(self) -> dict[str, Any]:
        return {"n": self.options.n_images, "render": self.options.render}

    def explain(self, records: Iterable[FeatureRecord]) -> Iterator[Explanation]:
        if self.backend is None:
            raise ValueError(f"explainer {self.name!r} needs a backend")
        # enough features in flight that their images fill a batch, twice over
        window = max(4, 2 * math.ceil(self.backend.concurrency / max(self.options.n_images, 1)))
        return self.backend.stream(records, self.explain_one, window)

    async def explain_one(self, session, record: FeatureRecord) -> Explanation:
        o = self.options
        images = record_images(record, o.n_images, o.render)
        if not images:
            return failed(record, self.name, "the feature has no example images to show")
        answers = await settle(session.answer(Query([image], o.per_image_prompt, o.system_prompt)) for image in images)
        errors = [a for a in answers if isinstance(a, Exception)]
        meta: dict[str, Any] = {"model": self.backend.model, "n_images": len(images), "aggregate": "common-words"}
        if errors:
            return failed(record, self.name, str(errors[0]), **meta)
        meta["descriptions"] = [a.text for a in answers]
        text = common_words(meta["descriptions"], o.min_share, o.stopwords)
        if text is None:
            return failed(record, self.name, f"no word is shared by {shared_by(o.min_share, len(images))} of the "
                                             f"{len(images)} image descriptions", **meta)
        return explained(record, self.name, text, **meta)
