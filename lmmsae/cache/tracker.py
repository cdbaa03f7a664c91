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
        beats = score > floor_s                  # (so never -inf: a -inf score is no candidate)
        tie = score == floor_s
        if bool(tie.any()):  # a candidate tying the n-th entry beats it with a smaller index
            beats |= tie & (index < floor_i) & (score > float("-inf"))
        rows = beats.any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        # Only candidates that beat their row's n-th entry can enter (the n kept entries all rank above
        # the others), so when few do, each row's candidates are compacted to its beating ones (in
        # column order) before the sort.
        R = rows.numel()
        if R == score.shape[0]:  # every row: plain views instead of gathered copies
            rows = slice(None)
        else:
            beats = beats[rows]
        m = int(beats.sum(1).max())
        if 2 * m > score.shape[1]:
            cand_s, cand_i = score[rows], index[rows].to(torch.int64)
            cand_c = torch.arange(score.shape[1], device=score.device).expand(R, -1)
        else:
            rr, cc = beats.nonzero(as_tuple=True)
            at = torch.cumsum(beats, 1)[rr, cc] - 1
            cand_s = torch.full((R, m), float("-inf"), dtype=score.dtype, device=score.device)
            cand_i = torch.full((R, m), torch.iinfo(torch.int64).max, dtype=torch.int64, device=score.device)
            cand_c = torch.zeros((R, m), dtype=torch.int64, device=score.device)
            src = rr if isinstance(rows, slice) else rows[rr]
            cand_s[rr, at] = score[src, cc]
            cand_i[rr, at] = index[src, cc].to(torch.int64)
            cand_c[rr, at] = cc
        s = torch.cat([self.score[rows], cand_s], dim=1)
        i = torch.cat([self.index[rows], cand_i], dim=1)
        origin = torch.cat([self.slot[rows], -1 - cand_c], dim=1)
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
            row_ids = torch.arange(R, device=score.device) if isinstance(rows, slice) else rows
            values = fetch(row_ids[entering[:, 0]], cols)
            for key, store in self.payload.items():
                store[row_ids[free[:, 0]], free[:, 1]] = values[key].to(store.dtype)
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
    """Per row, the order by score descending, ties broken by index ascending (then by position)."""
    by_score = torch.sort(score, dim=1, descending=True, stable=True).indices
    if score.shape[1] < 2:
        return by_score
    # one stable sort by score is already the answer unless some tie has its indices out of order
    s, i = score.gather(1, by_score), index.gather(1, by_score)
    if not bool(((s[:, 1:] == s[:, :-1]) & (i[:, 1:] < i[:, :-1])).any()):
        return by_score
    by_index = torch.sort(index, dim=1, stable=True).indices
    s = score.gather(1, by_index)
    by_score = torch.sort(s, dim=1, descending=True, stable=True).indices
    return by_index.gather(1, by_score)


_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic)."""
    return _mix_(x.clone())


def _xor_shr_(x: torch.Tensor, k: int) -> torch.Tensor:
    t = x >> k
    t &= (1 << (64 - k)) - 1
    return x.bitwise_xor_(t)


def _mix_(x: torch.Tensor) -> torch.Tensor:
    """`_mix`, in place (one temporary per step instead of several: the keys of a batch are
    latents x images of them)."""
    x += _signed(0x9E3779B97F4A7C15)
    _xor_shr_(x, 30).mul_(_signed(0xBF58476D1CE4E5B9))
    _xor_shr_(x, 27).mul_(_signed(0x94D049BB133111EB))
    return _xor_shr_(x, 31)


def _seeded(seed: int, samples: torch.Tensor) -> torch.Tensor:
    return _mix(torch.tensor(seed & _MASK64 if seed < 1 << 63 else _signed(seed & _MASK64), dtype=torch.int64,
                             device=samples.device) ^ samples.to(torch.int64))


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """The top 53 bits of `x` (consumed) as a float64 in [0, 1)."""
    x >>= 11
    x &= (1 << 53) - 1
    return x.to(torch.float64).div_(float(1 << 53))


def random_keys(seed: int, samples: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """A uniform [0, 1) key per (latent, sample), [len(latents), len(samples)], as float64.

    A pure function of (seed, sample index, latent id): keeping the smallest keys of the entries seen is
    a uniform sample without replacement that any sharding or resumption reproduces exactly.
    """
    s = _seeded(seed, samples)
    x = s.to(latents.device)[None, :] ^ latents.to(torch.int64)[:, None]
    return _to_unit(_mix_(_mix_(x)))


def random_keys_at(seed: int, samples: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """`random_keys` of the pairs (latents[j], samples[j]) only: [len(samples)], equal to the matching
    entries of `random_keys` (for sparse candidates: the latents active on an image)."""
    s = _seeded(seed, samples)
    return _to_unit(_mix_(_mix_(s ^ latents.to(torch.int64))))
