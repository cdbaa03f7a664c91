"""The dataset interface: an ordered, re-iterable, seeded stream of samples.

Implementations must not import torch at module import time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from lmmsae.errors import UserError


@dataclass
class Sample:
    """One input. `truth` carries optional ground truth (e.g. objects with labels and pixel masks)."""

    id: str
    image: Any  # PIL.Image.Image, or None for text-only samples
    prompt: str = ""
    truth: dict[str, Any] | None = field(default=None)


class BadSample(UserError):
    """A sample that cannot be used (an unreadable or corrupt image, ...). Raised by a dataset's
    `sample()` or a model's `prepare()`; every stage that reads images skips it (recorded) or stops,
    as `on_bad_sample` says (lmmsae.loader)."""

    def __init__(self, sample_id: str, reason: str):
        super().__init__(f"sample {sample_id!r}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


class Dataset(ABC):
    """Samples in a fixed order, so a stage can resume at an index and shards can split by index."""

    region_masks: ClassVar[bool] = False  # every sample's truth holds object pixel masks: IoU needs no segmenter

    @dataclass
    class Options:
        pass

    def __init__(self, options: "Dataset.Options"):
        self.options = options

    @classmethod
    def preflight(cls, options) -> None:
        """Cheap checks, before any stage starts, of what this component will need (an API key, a
        checkpoint, a folder): raise UserError saying what is missing. No model loads here."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def sample(self, index: int) -> Sample:
        """The sample at `index` (0 <= index < len)."""

    def __iter__(self) -> Iterator[Sample]:
        return self.iter_from(0)

    def iter_from(self, start: int, stop: int | None = None) -> Iterator[Sample]:
        """Samples start..stop-1; override when sequential access is cheaper than random access."""
        for i in range(start, len(self) if stop is None else min(stop, len(self))):
            yield self.sample(i)

    def identity(self) -> dict[str, Any]:
        """What identifies this data (name and options), stored in artifacts' attributes."""
        import dataclasses

        return {"class": type(self).__name__, **dataclasses.asdict(self.options)}
