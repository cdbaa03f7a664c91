"""Streaming per-latent statistics: firing frequency over images and over tokens of each kind.

Counts are exact integers; sums are float64. Merging shards adds them (sums then equal a single run's
up to float64 rounding)."""

from __future__ import annotations

import torch

# TokenKind order of lmmsae.models.base (TEXT, IMAGE, IMAGE_NEWLINE, SPECIAL, PADDING)
KINDS = ("text", "image", "image_newline", "special", "padding")


class LatentStats:
    """Accumulators for `n_rows` latents."""

    FIELDS = {
        "images_active": ((), torch.int64),        # images where any image token fires
        "score_sum": ((), torch.float64),          # sum of the pooled score over images
        "score_sqsum": ((), torch.float64),
        "tokens_active": ((len(KINDS),), torch.int64),
        "token_sum": ((len(KINDS),), torch.float64),
        "token_max": ((len(KINDS),), torch.float32),
    }

    def __init__(self, n_rows: int, device="cpu"):
        self.values = {k: torch.zeros((n_rows, *shape), dtype=dtype, device=device)
                       for k, (shape, dtype) in self.FIELDS.items()}
        self.n_images = 0
        self.tokens_total = torch.zeros(len(KINDS), dtype=torch.int64)

    def add_images(self, image_max: torch.Tensor, score: torch.Tensor) -> None:
        """`image_max`, `score`: [images, latents] (max over the image's tokens, pooled score)."""
        self.n_images += image_max.shape[0]
        self.values["images_active"] += (image_max > 0).sum(0)
        s = score.to(torch.float64)
        self.values["score_sum"] += s.sum(0)
        self.values["score_sqsum"] += (s * s).sum(0)

    def add_tokens(self, kinds: torch.Tensor, token: torch.Tensor, latent: torch.Tensor, value: torch.Tensor) -> None:
        """`kinds` [tokens] (TokenKind values) of every token; the positive activations as entries
        (`token`, `latent`, `value`)."""
        K, L = len(KINDS), self.values["images_active"].shape[0]
        kinds = kinds.to(torch.int64)
        self.tokens_total += torch.bincount(kinds, minlength=K).cpu()[:K]
        flat = latent * K + kinds[token]
        self.values["tokens_active"] += torch.bincount(flat, minlength=L * K).view(L, K)
        self.values["token_sum"].view(-1).index_add_(0, flat, value.double())
        self.values["token_max"].view(-1).scatter_reduce_(0, flat, value.float(), "amax")

    def absorb(self, other: "LatentStats") -> None:
        for key, value in self.values.items():
            if key == "token_max":
                torch.maximum(value, other.values[key], out=value)
            else:
                value += other.values[key]
        self.n_images += other.n_images
        self.tokens_total += other.tokens_total
