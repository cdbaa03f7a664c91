"""The model-adapter interface: what every LMM adapter offers, and the token map it must produce.

Light on purpose (numpy only at import time) so consumers can type against it without torch.
The transformers-backed implementation lives in `lmmsae.models.hf`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from lmmsae.datasets.base import BadSample
from lmmsae.errors import UserError


class TokenKind(enum.IntEnum):
    """What a token of the language model's input is."""

    TEXT = 0
    IMAGE = 1
    IMAGE_NEWLINE = 2
    SPECIAL = 3
    PADDING = 4

    @classmethod
    def parse(cls, kinds: Iterable[str | int | "TokenKind"] | str | None) -> list["TokenKind"] | None:
        """Names ("image", "text", ...) or ints to kinds; None means every kind."""
        from lmmsae.errors import did_you_mean

        if kinds is None:
            return None
        if isinstance(kinds, (str, int)):
            kinds = [kinds]
        out = []
        for k in kinds:
            if isinstance(k, str) and not k.isdigit():
                name = k.strip().upper().replace("-", "_")
                if name not in cls.__members__:
                    valid = [m.lower() for m in cls.__members__]
                    raise UserError(f"unknown token kind {k!r}.{did_you_mean(k.lower(), valid)} "
                                    f"Valid: {', '.join(valid)}")
                out.append(cls[name])
            else:
                out.append(cls(int(k)))
        return out


@dataclass
class TokenMap:
    """For every token of a batch (arrays [batch, seq]), what it is and where it looks.

    `image`: index of the image within its sample (-1 for non-image tokens); `view`: 0 = base
    (global) view, 1.. = high-resolution tiles, -1 = n/a; `row`, `col`: position in that view's
    patch grid (-1 = n/a); `box`: [batch, seq, 4] x0, y0, x1, y1 in original-image pixels (float,
    -1 = n/a), the region the token's features were computed from. `grids[b]`: (rows, cols) of
    every view of sample b's image (empty without image). `image_sizes[b]`: (width, height) of the
    original image, or None.
    """

    kind: np.ndarray
    image: np.ndarray
    view: np.ndarray
    row: np.ndarray
    col: np.ndarray
    box: np.ndarray
    grids: list[list[tuple[int, int]]] = field(default_factory=list)
    image_sizes: list[tuple[int, int] | None] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.kind.shape)  # type: ignore[return-value]

    def mask(self, kinds: Iterable[TokenKind | str | int] | None = None) -> np.ndarray:
        """bool [batch, seq]: tokens of the given kinds (all non-padding tokens when None)."""
        parsed = TokenKind.parse(kinds)
        if parsed is None:
            return self.kind != TokenKind.PADDING
        return np.isin(self.kind, [int(k) for k in parsed])

    def view_map(self, b: int, values: np.ndarray, view: int = 0, fill: float = 0.0) -> np.ndarray:
        """Scatter per-token `values` [seq] of sample b onto that view's patch grid [rows, cols]."""
        rows, cols = self.grids[b][view]
        out = np.full((rows, cols), fill, dtype=np.asarray(values).dtype)
        sel = (self.kind[b] == TokenKind.IMAGE) & (self.view[b] == view) & (self.row[b] >= 0)
        out[self.row[b][sel], self.col[b][sel]] = np.asarray(values)[sel]
        return out

    def table(self, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Flat per-token columns (batch_index, position, kind, image, view, row, col, box) of masked tokens."""
        if mask is None:
            mask = np.ones(self.shape, dtype=bool)
        b, pos = np.nonzero(mask)
        return {
            "batch_index": b.astype(np.int64), "position": pos.astype(np.int32),
            "kind": self.kind[b, pos].astype(np.int8), "image": self.image[b, pos].astype(np.int16),
            "view": self.view[b, pos].astype(np.int16), "row": self.row[b, pos].astype(np.int16),
            "col": self.col[b, pos].astype(np.int16), "box": self.box[b, pos].astype(np.float32),
        }


@dataclass
class Batch:
    """Model inputs for a list of samples, with the token map that says what each token is."""

    inputs: dict[str, Any]
    token_map: TokenMap
    sample_ids: list[str]
    images: list[Any]
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def n_tokens(self) -> int:
        return int(self.token_map.mask().sum())


Edit = Callable[[Any, Any], Any]  # (acts [B,S,d], mask [B,S] bool) -> new acts [B,S,d]


class ModelAdapter(ABC):
    """An LMM behind one small interface: batches with token maps, hookpoints, interventions."""

    @dataclass
    class Options:
        checkpoint: str = ""

    model: Any
    processor: Any
    device: Any
    dtype: Any
    current_run: Any = None
    """The batch being run now (a `lmmsae.models.interventions.Run`: its token map, hook calls seen),
    set by the adapter around every forward, logits and generate; intervention hooks read it to
    know which tokens to edit. None between runs."""

    def __init__(self, options: "ModelAdapter.Options", device: str = "cpu", dtype: str = "float32"):
        self.options = options

    @classmethod
    def preflight(cls, options, flag: str | None = None) -> None:
        """Cheap checks, before any stage starts, of what this component will need (an API key, a
        checkpoint, a folder): raise UserError saying what is missing (`flag`: how to point at a
        local copy). No model loads here."""

    @classmethod
    @abstractmethod
    def list_hookpoints(cls, options) -> list[str]:
        """Canonical hookpoint names, from the config alone (no weights loaded)."""

    @abstractmethod
    def resolve_hookpoints(self, patterns: Iterable[str]) -> list[str]:
        """Canonical names for names, short forms and globs; unknown names are a UserError listing valid ones."""

    @abstractmethod
    def d_model(self, hookpoint: str) -> int:
        """Width of the activations at a hookpoint."""

    @abstractmethod
    def prepare(self, samples: list, prompt: str | None = None) -> Batch:
        """Tokenise and preprocess samples into one padded batch with its token map."""

    @abstractmethod
    def forward(self, batch: Batch, hookpoints: Iterable[str], grad: bool = False) -> dict[str, Any]:
        """Activations [B, S, d] at each hookpoint (residual stream output of a block by default)."""

    @abstractmethod
    def logits(self, batch: Batch, grad: bool = False) -> Any:
        """Next-token logits [B, S, vocab]."""

    @abstractmethod
    def intervene(self, hookpoint: str, edit: Edit, token_kinds=None, prefill_only: bool = False):
        """Context manager editing a hookpoint's output in forward, logits and generate."""

    @abstractmethod
    def generate(self, batch: Batch, max_new_tokens: int = 32, **kwargs) -> list[str]:
        """Greedy (by default) continuations of every sample, decoded."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What identifies the model (stored in artifacts' attributes)."""


class BadImage(BadSample):
    """An image the model cannot take (corrupt, zero size, not convertible to RGB), with its sample id:
    skipped or stopped on like any bad sample (lmmsae.loader)."""

    def __init__(self, sample_id: str, reason: str):
        super().__init__(sample_id, f"image {reason}")


def check_image(image: Any, sample_id: str = "?"):
    """The image as RGB PIL, or None for text-only samples; BadImage when it cannot be used."""
    if image is None:
        return None
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise BadImage(sample_id, f"is a {type(image).__name__}, not a PIL image")
    try:
        image.load()
    except Exception as exc:  # PIL raises many types for truncated or corrupt data
        raise BadImage(sample_id, f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    if image.width <= 0 or image.height <= 0:
        raise BadImage(sample_id, f"has zero size ({image.width}x{image.height})")
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except Exception as exc:
            raise BadImage(sample_id, f"in mode {image.mode!r} cannot be converted to RGB ({exc})") from None
    return image
