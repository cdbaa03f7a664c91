"""Per latent, the n best entries seen so far, updated batch by batch in vectorised torch.

Entries are ordered by score (descending), ties by sample index (ascending), so the result does not
depend on the order data arrives in: one pass, any sharding, and any kill-and-resume give the same
entries. Payloads (activation maps, values) never move when the order changes: each kept entry
points at a slot, and a new entry takes the slot of the one it evicts, so an update writes only
the maps that enter.
"""

from __future__ import annotations

from typing import Callable

import torch

Fetch = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


class TopTracker:
    """`n` entries per row (latent); `payload` names -> (trailing shape, dtype) stored per entry."""

    def __init__(self, n_rows: int, n: int, payload: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None,
                 score_dtype: torch.dtype = torch.float32, device="cpu"):
        self.n = n
        self.score = torch.full((n_rows, n), float("-inf"), dtype=score_dtype, device=device)
        self.index = torch.full((n_rows, n), -1, dtype=torch.int64, device=device)
        self.slot = torch.arange(n, device=device).repeat(n_rows, 1)
        self.payload = {k: torch.zeros((n_rows, n, *shape), dtype=dtype, device=device)
                        for k, (shape, dtype) in (payload or {}).items()}

    @property
    def n_rows(self) -> int:
        return self.score.shape[0]

    def update(self, score: torch.Tensor, index: torch.Tensor, fetch: Fetch | None = None) -> None:
        """Offer candidates `score`/`index` [rows, m] (score -inf = not a candidate).

        `fetch(rows, cols)` returns the payload of the accepted candidates (row, column) as tensors
        [p, ...]; it is called once, for the entries that enter.
        """
        if self.n == 0 or score.numel() == 0:
            return
        score = score.to(self.score.dtype)
        floor_s, floor_i = self.score[:, -1:], self.index[:, -1:]
        beats = (score > floor_s) | ((score == floor_s) & (index < floor_i))
        beats &= score > float("-inf")
        rows = beats.any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        m = score.shape[1]
        s = torch.cat([self.score[rows], score[rows]], dim=1)
        i = torch.cat([self.index[rows], index[rows]], dim=1)
        origin = torch.cat([self.slot[rows], -1 - torch.arange(m, device=s.device).expand(rows.numel(), m)], dim=1)
        order = lexsort_desc(s, i)[:, : self.n]
        new_s, new_i, new_origin = s.gather(1, order), i.gather(1, order), origin.gather(1, order)

        kept = new_origin >= 0
        used = torch.zeros_like(new_origin)
        used.scatter_add_(1, new_origin.clamp(min=0), kept.to(used.dtype))
        free = (used == 0).nonzero()            # (row, slot) sorted by row, then slot
        entering = (~kept).nonzero()            # (row, position) sorted by row, then position
        new_slot = new_origin.clone()
        new_slot[entering[:, 0], entering[:, 1]] = free[:, 1]
        if self.payload and entering.numel():
            if fetch is None:
                raise ValueError("this tracker stores payloads: update() needs fetch")
            cols = -1 - new_origin[entering[:, 0], entering[:, 1]]
            values = fetch(rows[entering[:, 0]], cols)
            for key, store in self.payload.items():
                store[rows[free[:, 0]], free[:, 1]] = values[key].to(store.dtype)
        self.score[rows], self.index[rows], self.slot[rows] = new_s, new_i, new_slot

    def sorted_payload(self, key: str, rows: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """Payload `key` of `rows` in entry order (as `score`/`index`)."""
        store, slot = self.payload[key][rows], self.slot[rows]
        return store[torch.arange(slot.shape[0], device=slot.device)[:, None], slot]

    def load(self, score: torch.Tensor, index: torch.Tensor, payload: dict[str, torch.Tensor] | None = None) -> None:
        """Replace the state with sorted entries (as written by `sorted_payload`)."""
        self.score.copy_(score)
        self.index.copy_(index)
        self.slot.copy_(torch.arange(self.n, device=self.slot.device).expand_as(self.slot))
        for key, value in (payload or {}).items():
            self.payload[key].copy_(value)

    def absorb(self, other: "TopTracker") -> None:
        """Merge another tracker over the same rows (e.g. another shard's)."""
        sorted_other = {k: other.sorted_payload(k) for k in self.payload}
        self.update(other.score, other.index,
                    lambda r, c: {k: v[r, c] for k, v in sorted_other.items()})

    def remap_payload(self, key: str, index: torch.Tensor, size: int) -> None:
        """Move payload `key`'s last axis to a larger one of `size`: old cell j goes to `index[j]`."""
        old = self.payload[key]
        new = torch.zeros((*old.shape[:-1], size), dtype=old.dtype, device=old.device)
        new[..., index] = old
        self.payload[key] = new


def lexsort_desc(score: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per row, the order by score descending, ties broken by index ascending."""
    by_index = torch.sort(index, dim=1, stable=True).indices
    s = score.gather(1, by_index)
    by_score = torch.sort(s, dim=1, descending=True, stable=True).indices
    return by_index.gather(1, by_score)


_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic)."""
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shr(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shr(x, 27)) * _signed(0x94D049BB133111EB)
    return x ^ _shr(x, 31)


def random_keys(seed: int, samples: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """A uniform [0, 1) key per (latent, sample), [len(latents), len(samples)], as float64.

    A pure function of (seed, sample index, latent id): keeping the smallest keys of the entries seen is
    a uniform sample without replacement that any sharding or resumption reproduces exactly.
    """
    s = _mix(torch.tensor(seed & _MASK64 if seed < 1 << 63 else _signed(seed & _MASK64), dtype=torch.int64)
             ^ samples.to(torch.int64))
    x = _mix(_mix(s[None, :] ^ latents.to(torch.int64)[:, None]))
    return _shr(x, 11).to(torch.float64) / float(1 << 53)
