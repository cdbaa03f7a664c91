"""`activations.h5`: hookpoint activations of chosen tokens, with their token map, written in chunks.

Layout (schema_version 1)::

    attrs:  schema_version, model (JSON), dataset (JSON), hookpoints (JSON list), dtype, kinds (JSON),
            n_tokens and next_sample (what is committed), complete (bool)
    /<hookpoint>/acts      [n_tokens, d]  float16 | float32 | uint16 holding bfloat16 bits (attr dtype)
    /tokens/<column>       [n_tokens]     sample_index, position, kind, image, view, row, col; box [n, 4]
    /samples/<column>      [n_samples]    index, id, token_start, token_count, width, height, grids (JSON)
    /skipped/<column>      [n_skipped]    index, id, reason

Rows past the committed counts are ignored and cut on reopening, so a crash mid-batch resumes
without duplicates or gaps. Memory stays bounded by one batch however large the dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from lmmsae.errors import UserError

SCHEMA_VERSION = 1
STORAGE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}
TOKEN_COLUMNS = {"sample_index": np.int64, "position": np.int32, "kind": np.int8, "image": np.int16,
                 "view": np.int16, "row": np.int16, "col": np.int16}
SAMPLE_COLUMNS = {"index": np.int64, "token_start": np.int64, "token_count": np.int64,
                  "width": np.int32, "height": np.int32}
STR = h5py.string_dtype()
IDENTITY_ATTRS = ("model", "dataset", "hookpoints", "dtype", "kinds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def to_storage(tensor, dtype: str) -> np.ndarray:
    """A torch tensor [N, d] as the numpy array stored for `dtype`."""
    import torch

    if dtype == "bfloat16":
        return tensor.detach().to(torch.bfloat16).cpu().view(torch.int16).numpy().view(np.uint16)
    return tensor.detach().to(getattr(torch, dtype)).cpu().numpy()


def from_storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """Stored rows as float32."""
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32, copy=False)


class ActivationWriter:
    """Appends batches to activations.h5; reopening a partial file resumes after its last commit."""

    def __init__(self, path: str | Path, hookpoints: dict[str, int], dtype: str, identity: dict[str, Any],
                 chunk_bytes: int = 1 << 20, compression: str | None = None):
        if dtype not in STORAGE:
            raise UserError(f"activation dtype {dtype!r} is not supported: use one of {', '.join(STORAGE)}")
        self.path = Path(path)
        self.dtype = dtype
        self.hookpoints = dict(hookpoints)
        attrs = {"model": _json(identity.get("model")), "dataset": _json(identity.get("dataset")),
                 "hookpoints": _json(list(self.hookpoints)), "dtype": dtype,
                 "kinds": _json(identity.get("kinds"))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists()
        try:
            self.f = h5py.File(self.path, "a")
        except OSError as exc:
            raise UserError(f"{self.path} is unreadable ({exc}); delete it to collect again") from None
        if exists and "schema_version" in self.f.attrs:
            self._check(attrs)
            self._truncate()
        else:
            self._create(attrs, chunk_bytes, compression)

    # -- setup
    def _create(self, attrs: dict[str, str], chunk_bytes: int, compression: str | None) -> None:
        f = self.f
        for key in list(f.keys()):
            del f[key]
        f.attrs.update(attrs)
        f.attrs.update({"schema_version": SCHEMA_VERSION, "n_tokens": 0, "next_sample": 0, "complete": False})
        itemsize = np.dtype(STORAGE[self.dtype]).itemsize
        for name, d in self.hookpoints.items():
            rows = max(1, min(65536, chunk_bytes // (d * itemsize)))
            f.create_dataset(f"{name}/acts", shape=(0, d), maxshape=(None, d), dtype=STORAGE[self.dtype],
                             chunks=(rows, d), compression=compression)
            f[name].attrs["d_in"] = d
            f[name].attrs["dtype"] = self.dtype
        for col, dt in TOKEN_COLUMNS.items():
            f.create_dataset(f"tokens/{col}", shape=(0,), maxshape=(None,), dtype=dt, chunks=(65536,))
        f.create_dataset("tokens/box", shape=(0, 4), maxshape=(None, 4), dtype=np.float32, chunks=(16384, 4))
        for col, dt in SAMPLE_COLUMNS.items():
            f.create_dataset(f"samples/{col}", shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        for col in ("id", "grids"):
            f.create_dataset(f"samples/{col}", shape=(0,), maxshape=(None,), dtype=STR, chunks=(4096,))
        f.create_dataset("skipped/index", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        for col in ("id", "reason"):
            f.create_dataset(f"skipped/{col}", shape=(0,), maxshape=(None,), dtype=STR, chunks=(1024,))
        f.flush()

    def _check(self, attrs: dict[str, str]) -> None:
        if int(self.f.attrs["schema_version"]) != SCHEMA_VERSION:
            raise UserError(f"{self.path} has schema version {self.f.attrs['schema_version']}, this lmmsae writes "
                            f"{SCHEMA_VERSION}: delete it to collect again")
        changed = [k for k in IDENTITY_ATTRS if str(self.f.attrs.get(k)) != attrs[k]]
        if changed:
            raise UserError(f"{self.path} was collected with a different {', '.join(changed)}: delete it, or "
                            f"resume with the settings it was started with")

    def _truncate(self) -> None:
        """Cut rows written after the last commit (a crash mid-batch)."""
        n, s = self.n_tokens, self.n_samples_committed
        for name in self.hookpoints:
            self.f[f"{name}/acts"].resize(n, axis=0)
        for col in (*TOKEN_COLUMNS, "box"):
            self.f[f"tokens/{col}"].resize(n, axis=0)
        for col in (*SAMPLE_COLUMNS, "id", "grids"):
            self.f[f"samples/{col}"].resize(s, axis=0)
        k = int(self.f.attrs.get("n_skipped", 0))
        for col in ("index", "id", "reason"):
            self.f[f"skipped/{col}"].resize(k, axis=0)

    # -- state
    @property
    def n_tokens(self) -> int:
        return int(self.f.attrs["n_tokens"])

    @property
    def n_samples_committed(self) -> int:
        return int(self.f.attrs.get("n_samples", 0))

    @property
    def next_sample(self) -> int:
        """Dataset index to continue from."""
        return int(self.f.attrs["next_sample"])

    @property
    def complete(self) -> bool:
        return bool(self.f.attrs["complete"])

    # -- writing
    def append(self, acts: dict[str, Any], tokens: dict[str, np.ndarray], samples: list[dict[str, Any]],
               skipped: list[dict[str, Any]], next_sample: int) -> None:
        """Write one batch and commit it: afterwards a reopen resumes at `next_sample`."""
        n0, n = self.n_tokens, len(tokens["position"])
        for name in self.hookpoints:
            data = to_storage(acts[name], self.dtype)
            if data.shape != (n, self.hookpoints[name]):
                raise ValueError(f"{name}: got {data.shape}, expected {(n, self.hookpoints[name])}")
            _append(self.f[f"{name}/acts"], data)
        for col, dt in TOKEN_COLUMNS.items():
            _append(self.f[f"tokens/{col}"], np.asarray(tokens[col], dtype=dt))
        _append(self.f["tokens/box"], np.asarray(tokens["box"], dtype=np.float32).reshape(-1, 4))
        start = n0
        rows = {c: [] for c in (*SAMPLE_COLUMNS, "id", "grids")}
        for s in samples:
            rows["index"].append(s["index"])
            rows["token_start"].append(start)
            rows["token_count"].append(s["token_count"])
            start += s["token_count"]
            rows["width"].append(s.get("width") or 0)
            rows["height"].append(s.get("height") or 0)
            rows["id"].append(str(s["id"]))
            rows["grids"].append(_json(s.get("grids", [])))
        if start != n0 + n:
            raise ValueError(f"samples account for {start - n0} tokens, the batch has {n}")
        for col, values in rows.items():
            dt = SAMPLE_COLUMNS.get(col, STR)
            _append(self.f[f"samples/{col}"], np.asarray(values, dtype=dt if dt is not STR else object))
        for s in skipped:
            _append(self.f["skipped/index"], np.asarray([s["index"]], np.int64))
            _append(self.f["skipped/id"], np.asarray([str(s["id"])], dtype=object))
            _append(self.f["skipped/reason"], np.asarray([str(s["reason"])], dtype=object))
        self.f.flush()
        self.f.attrs["n_tokens"] = n0 + n
        self.f.attrs["n_samples"] = self.n_samples_committed + len(samples)
        self.f.attrs["n_skipped"] = int(self.f.attrs.get("n_skipped", 0)) + len(skipped)
        self.f.attrs["next_sample"] = next_sample
        self.f.flush()

    def finish(self, **info: Any) -> None:
        self.f.attrs["complete"] = True
        for k, v in info.items():
            self.f.attrs[k] = v if isinstance(v, (int, float, str, bool)) else _json(v)
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _append(ds, data: np.ndarray) -> None:
    n = ds.shape[0]
    if len(data) == 0:
        return
    ds.resize(n + len(data), axis=0)
    ds[n:] = data


class ActivationReader:
    """Read activations.h5: hookpoints, token table, and shuffled float32 batches for training."""

    def __init__(self, path: str | Path, require_complete: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"no activations at {self.path}: run `lmmsae collect` first")
        try:
            self.f = h5py.File(self.path, "r")
        except OSError as exc:
            raise UserError(f"{self.path} is not a readable HDF5 file ({exc}); delete it and collect again") from None
        if int(self.f.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
            raise UserError(f"{self.path} is not an lmmsae activations file of schema {SCHEMA_VERSION}")
        if require_complete and not bool(self.f.attrs["complete"]):
            raise UserError(f"{self.path} is incomplete (collection was interrupted): resume `lmmsae collect` first")
        self.hookpoints: list[str] = json.loads(self.f.attrs["hookpoints"])
        self.dtype: str = str(self.f.attrs["dtype"])
        self.n_tokens: int = int(self.f.attrs["n_tokens"])
        self.model: dict = json.loads(self.f.attrs["model"])
        self.dataset: dict = json.loads(self.f.attrs["dataset"])
        self.kinds = json.loads(self.f.attrs["kinds"])

    def resolve(self, hookpoint: str) -> str:
        """The stored hookpoint a full or short name (`layers.2`) refers to."""
        if hookpoint in self.hookpoints:
            return hookpoint
        from lmmsae.models.hookpoints import canonical

        full = canonical(hookpoint)
        if full in self.hookpoints:
            return full
        raise UserError(f"{self.path} has no hookpoint {hookpoint!r}; it has {', '.join(self.hookpoints)}")

    def d_in(self, hookpoint: str) -> int:
        return int(self.f[f"{self.resolve(hookpoint)}/acts"].shape[1])

    def read(self, hookpoint: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start..stop as float32 [n, d]."""
        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        return from_storage(self.f[f"{self.resolve(hookpoint)}/acts"][start:stop], self.dtype)

    def tokens(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        return {c: self.f[f"tokens/{c}"][start:stop] for c in (*TOKEN_COLUMNS, "box")}

    def samples(self) -> dict[str, np.ndarray]:
        n = int(self.f.attrs.get("n_samples", 0))
        out = {c: self.f[f"samples/{c}"][:n] for c in SAMPLE_COLUMNS}
        out["id"] = np.array([s.decode() if isinstance(s, bytes) else s for s in self.f["samples/id"][:n]])
        return out

    def skipped(self) -> list[dict[str, Any]]:
        k = int(self.f.attrs.get("n_skipped", 0))
        dec = lambda s: s.decode() if isinstance(s, bytes) else s  # noqa: E731
        return [{"index": int(i), "id": dec(s), "reason": dec(r)} for i, s, r in
                zip(self.f["skipped/index"][:k], self.f["skipped/id"][:k], self.f["skipped/reason"][:k])]

    def n_tokens_of(self, kinds=None) -> int:
        if kinds is None:
            return self.n_tokens
        return int(np.isin(self.f["tokens/kind"][: self.n_tokens], _kind_ids(kinds)).sum())

    def iter_batches(self, hookpoint: str, batch_size: int, shuffle_buffer: int = 0, seed: int = 0,
                     kinds=None, drop_last: bool = False, device: str | None = None) -> Iterator:
        """float32 torch tensors [batch_size, d]; the last may be smaller unless drop_last.

        With shuffle_buffer > 0, contiguous blocks of that many rows are read in a seeded random
        order and shuffled inside; memory is bounded by the buffer, not by the file.
        """
        import torch

        ds = self.f[f"{self.resolve(hookpoint)}/acts"]
        n = self.n_tokens
        wanted = _kind_ids(kinds)
        block = max(int(shuffle_buffer), int(batch_size), 1)
        chunk = ds.chunks[0] if ds.chunks else 1
        block = -(-block // chunk) * chunk
        starts = np.arange(0, n, block)
        rng = np.random.default_rng(seed)
        if shuffle_buffer > 0:
            starts = rng.permutation(starts)
        carry = np.zeros((0, ds.shape[1]), np.float32)
        for s in starts:
            rows = from_storage(ds[s:min(s + block, n)], self.dtype)
            if wanted is not None:
                rows = rows[np.isin(self.f["tokens/kind"][s:min(s + block, n)], wanted)]
            if shuffle_buffer > 0:
                rows = rows[rng.permutation(len(rows))]
            rows = np.concatenate([carry, rows]) if len(carry) else rows
            full = len(rows) // batch_size * batch_size
            for i in range(0, full, batch_size):
                yield _tensor(rows[i:i + batch_size], device, torch)
            carry = rows[full:]
        if len(carry) and not drop_last:
            yield _tensor(carry, device, torch)

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _tensor(rows: np.ndarray, device, torch):
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    return t.to(device) if device else t


def _kind_ids(kinds) -> list[int] | None:
    if kinds is None:
        return None
    from lmmsae.models.base import TokenKind

    return [int(k) for k in TokenKind.parse(kinds)]
