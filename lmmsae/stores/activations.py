"""`activations.h5`: hookpoint activations of chosen tokens, with their token map, written in chunks.

Layout (schema_version 2)::

    attrs:  schema_version, model (JSON), dataset (JSON), hookpoints (JSON list), dtype, kinds (JSON),
            n_tokens, n_samples, n_skipped, n_commits and next_sample (what is committed),
            complete (bool), clean (bool: closed properly; else verified on reopening)
    /<hookpoint>/acts      [n_tokens, d]  float16 | float32 | uint16 holding bfloat16 bits (attr dtype)
    /tokens/<column>       [n_tokens]     sample_index, position, kind, image, view, row, col; box [n, 4]
    /samples/<column>      [n_samples]    index, id, token_start, token_count, width, height, grids (JSON)
    /skipped/<column>      [n_skipped]    index, id, reason
    /commits/<column>      [n_commits]    tokens, samples, skipped, next_sample (counts after each
                                          commit), crc (CRC-32 of the rows that commit wrote)

Rows past the committed counts are ignored and cut on reopening, so a crash mid-batch resumes
without duplicates or gaps; a file that was not closed cleanly is also checked against its commit
CRCs and cut after the last intact commit (a failed HDF5 write can damage rows committed earlier). Memory stays bounded by one batch however large the dataset.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from lmmsae.errors import UserError
from lmmsae.stores.disk import MARGIN, GuardedWriter, chunk_bytes, disk_errno, disk_error

SCHEMA_VERSION = 2
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


class ActivationWriter(GuardedWriter):
    """Appends batches to activations.h5; reopening a partial file resumes after its last commit.

    Each batch is one commit: its rows are written and flushed, then a commit record (row counts
    and a CRC-32 of everything the batch wrote) and the committed counts, then flushed again.
    Space is reserved before HDF5 touches the file (lmmsae.stores.disk), so a full disk ends in one
    line with the file as of its last commit. A file not closed cleanly (a crash, a kill, a failed
    write) is verified against its commit records on reopening and cut after the last intact one.
    """

    def __init__(self, path: str | Path, hookpoints: dict[str, int], dtype: str, identity: dict[str, Any],
                 chunk_bytes: int = 1 << 20, compression: str | None = None):
        if dtype not in STORAGE:
            raise UserError(f"activation dtype {dtype!r} is not supported: use one of {', '.join(STORAGE)}")
        self.path = Path(path)
        self.dtype = dtype
        self.hookpoints = dict(hookpoints)
        self.verified: int | None = None  # commits checked on reopening an unclean file
        self._broken = False
        attrs = {"model": _json(identity.get("model")), "dataset": _json(identity.get("dataset")),
                 "hookpoints": _json(list(self.hookpoints)), "dtype": dtype,
                 "kinds": _json(identity.get("kinds"))}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            exists = self.path.exists()
            self.f = _open_for_append(self.path)
        except OSError as exc:
            code = disk_errno(exc)
            if code is not None:
                raise disk_error(self.path, code) from None
            raise UserError(f"{self.path} is unreadable ({_first_line(exc)}); delete it to collect again") from None
        try:
            with self._writing():
                if exists and "schema_version" in self.f.attrs:
                    self._check(attrs)
                    self._open_datasets()
                    if not bool(self.f.attrs.get("clean", False)):
                        self._recover()
                    self._truncate()
                else:
                    self._create(attrs, chunk_bytes, compression)
                    self._open_datasets()
                self._reserve(MARGIN)
                self.f.attrs["clean"] = False  # until close(): a crash from here on is noticed
                self.f.flush()
        except BaseException:
            self.close()
            raise

    # -- setup
    def _create(self, attrs: dict[str, str], chunk_bytes: int, compression: str | None) -> None:
        f = self.f
        for key in list(f.keys()):
            del f[key]
        f.attrs.update(attrs)
        f.attrs.update({"schema_version": SCHEMA_VERSION, "n_tokens": 0, "n_samples": 0, "n_skipped": 0,
                        "n_commits": 0, "next_sample": 0, "complete": False})
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
        for col in COMMIT_COLUMNS:
            f.create_dataset(f"commits/{col}", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        f.flush()

    def _open_datasets(self) -> None:
        """Handles kept open for the file's lifetime (temporary ones would flush on release)."""
        names = [f"{h}/acts" for h in self.hookpoints] + [f"tokens/{c}" for c in (*TOKEN_COLUMNS, "box")]
        names += [f"samples/{c}" for c in (*SAMPLE_COLUMNS, "id", "grids")]
        names += [f"skipped/{c}" for c in ("index", "id", "reason")] + [f"commits/{c}" for c in COMMIT_COLUMNS]
        self.ds = {name: self.f[name] for name in names}

    def _check(self, attrs: dict[str, str]) -> None:
        if int(self.f.attrs["schema_version"]) != SCHEMA_VERSION:
            raise UserError(f"{self.path} has schema version {self.f.attrs['schema_version']}, this lmmsae writes "
                            f"{SCHEMA_VERSION}: delete it to collect again")
        changed = [k for k in IDENTITY_ATTRS if str(self.f.attrs.get(k)) != attrs[k]]
        if changed:
            raise UserError(f"{self.path} was collected with a different {', '.join(changed)}: delete it, or "
                            f"resume with the settings it was started with")

    def _recover(self) -> None:
        """The file was not closed cleanly: keep the commits whose data still matches its CRC."""
        n = int(self.f.attrs.get("n_commits", 0))
        good = 0
        try:
            for good in range(n + 1):
                if good == n or _commit_crc(self.ds, self.hookpoints, self._commit_bounds(good)) != \
                        int(self.ds["commits/crc"][good]):
                    break
        except Exception:  # noqa: BLE001 - unreadable rows are not intact rows
            pass
        self.verified = good
        ends = self._commit_bounds(good - 1)[1] if good else {k: 0 for k in COMMIT_COLUMNS}
        self.f.attrs.update({"n_tokens": ends["tokens"], "n_samples": ends["samples"], "n_skipped": ends["skipped"],
                             "next_sample": ends["next_sample"], "n_commits": good, "complete": False})

    def _commit_bounds(self, i: int) -> tuple[dict[str, int], dict[str, int]]:
        """(start, end) counts of commit i."""
        end = {k: int(self.ds[f"commits/{k}"][i]) for k in COMMIT_COLUMNS}
        start = {k: int(self.ds[f"commits/{k}"][i - 1]) for k in COMMIT_COLUMNS} if i else \
            {k: 0 for k in COMMIT_COLUMNS}
        return start, end

    def _truncate(self) -> None:
        """Cut rows written after the last commit (a crash mid-batch)."""
        n, s = self.n_tokens, self.n_samples_committed
        k, c = int(self.f.attrs.get("n_skipped", 0)), int(self.f.attrs.get("n_commits", 0))
        for name, ds in self.ds.items():
            group = name.split("/")[0]
            ds.resize({"tokens": n, "samples": s, "skipped": k, "commits": c}.get(group, n), axis=0)

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
        self._append_raw({name: to_storage(acts[name], self.dtype) for name in self.hookpoints}, tokens, samples,
                         skipped, next_sample)

    def _append_raw(self, acts: dict[str, Any], tokens: dict[str, np.ndarray], samples: list[dict[str, Any]],
                    skipped: list[dict[str, Any]], next_sample: int) -> None:
        """`append` with activations already in their stored form (numpy, or a tensor of stored values)."""
        n0, n = self.n_tokens, len(tokens["position"])
        columns: dict[str, np.ndarray] = {}
        for name in self.hookpoints:
            data = np.asarray(acts[name])
            if data.shape != (n, self.hookpoints[name]):
                raise ValueError(f"{name}: got {data.shape}, expected {(n, self.hookpoints[name])}")
            columns[f"{name}/acts"] = data
        for col, dt in TOKEN_COLUMNS.items():
            columns[f"tokens/{col}"] = np.asarray(tokens[col], dtype=dt)
        columns["tokens/box"] = np.asarray(tokens["box"], dtype=np.float32).reshape(-1, 4)
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
            columns[f"samples/{col}"] = np.asarray(values, dtype=dt if dt is not STR else object)
        columns["skipped/index"] = np.asarray([s["index"] for s in skipped], np.int64)
        columns["skipped/id"] = np.asarray([str(s["id"]) for s in skipped], dtype=object)
        columns["skipped/reason"] = np.asarray([str(s["reason"]) for s in skipped], dtype=object)
        ends = {"tokens": n0 + n, "samples": self.n_samples_committed + len(samples),
                "skipped": int(self.f.attrs.get("n_skipped", 0)) + len(skipped), "next_sample": int(next_sample)}
        crc = _crc(columns)
        commits = int(self.f.attrs.get("n_commits", 0))
        with self._writing():
            self._reserve(sum(chunk_bytes(self.ds[k], len(v)) + _string_bytes(v) for k, v in columns.items()))
            for name, data in columns.items():
                _append(self.ds[name], data)
            for col in COMMIT_COLUMNS:
                _append(self.ds[f"commits/{col}"], np.asarray([crc if col == "crc" else ends[col]], np.int64))
            self.f.flush()
            self._reserve(MARGIN)
            self.f.attrs.update({"n_tokens": ends["tokens"], "n_samples": ends["samples"],
                                 "n_skipped": ends["skipped"], "next_sample": ends["next_sample"],
                                 "n_commits": commits + 1})
            self.f.flush()

    def finish(self, **info: Any) -> None:
        with self._writing():
            self._reserve(MARGIN)
            self.f.attrs["complete"] = True
            for k, v in info.items():
                self.f.attrs[k] = v if isinstance(v, (int, float, str, bool)) else _json(v)
            self.f.flush()

    def _before_close(self) -> None:
        try:
            self._reserve(MARGIN)
            self.f.attrs["clean"] = True
        except UserError:
            pass  # left unclean: verified when reopened



COMMIT_COLUMNS = ("tokens", "samples", "skipped", "next_sample", "crc")


def _open_for_append(path: Path) -> h5py.File:
    """h5py.File(path, "a"); a file whose end was lost in a failed write (HDF5 had already recorded
    the longer size) is padded back to that size, so what it still holds can be verified and kept."""
    try:
        return h5py.File(path, "a")
    except OSError as exc:
        lost = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(exc))
        if not lost or int(lost.group(2)) <= int(lost.group(1)):
            raise
        os.truncate(path, int(lost.group(2)))  # the missing tail reads as zeros: its commits fail their CRC
        f = h5py.File(path, "a")
        f.attrs["clean"] = False
        return f


def _crc(columns: dict[str, np.ndarray]) -> int:
    """CRC-32 of a batch's columns, in name order (strings as UTF-8, NUL-separated)."""
    crc = 0
    for name in sorted(columns):
        data = columns[name]
        if data.dtype == object:
            crc = zlib.crc32(b"\0".join(_text(v).encode() for v in data) + b"\1", crc)
        else:
            crc = zlib.crc32(np.ascontiguousarray(data).tobytes(), crc)
    return crc


def _commit_crc(ds: dict, hookpoints: dict[str, int], bounds) -> int:
    """The CRC of what commit `bounds` = (start counts, end counts) holds on disk now."""
    start, end = bounds
    group_of = {"tokens": "tokens", "samples": "samples", "skipped": "skipped"}
    columns = {}
    for name, d in ds.items():
        group = name.split("/")[0]
        if group == "commits":
            continue
        key = group_of.get(group, "tokens")
        data = d[start[key]:end[key]]
        columns[name] = np.asarray([_text(v) for v in data], dtype=object) if d.dtype.kind == "O" else data
    return _crc(columns)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _string_bytes(data: np.ndarray) -> int:
    """Heap bytes of variable-length strings (with HDF5's per-object overhead)."""
    return sum(len(_text(v).encode()) + 32 for v in data) if data.dtype == object else 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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

    def identity(self) -> dict[str, Any]:
        """What produced these activations (to compare with a run's: lmmsae.stores.identity)."""
        return {"model": self.model, "dataset": self.dataset, "hookpoints": self.hookpoints, "dtype": self.dtype,
                "kinds": self.kinds}

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
                     kinds=None, drop_last: bool = False, device: str | None = None, start_row: int = 0) -> Iterator:
        """float32 torch tensors [batch_size, d]; the last may be smaller unless drop_last.

        With shuffle_buffer > 0, contiguous blocks of that many rows are read in a seeded random
        order and shuffled inside (each block by its own seed); memory is bounded by the buffer, not
        by the file. `start_row` continues the same stream after that many rows (a training
        resume), reading none of the blocks before it.
        """
        import torch

        ds = self.f[f"{self.resolve(hookpoint)}/acts"]
        n = self.n_tokens
        wanted = _kind_ids(kinds)
        block = max(int(shuffle_buffer), int(batch_size), 1)
        chunk = ds.chunks[0] if ds.chunks else 1
        block = -(-block // chunk) * chunk
        starts = np.arange(0, n, block)
        if shuffle_buffer > 0:
            starts = np.random.default_rng(int(seed) % 2**64).permutation(starts)
        carry = np.zeros((0, ds.shape[1]), np.float32)
        skip = int(start_row)
        for s in starts:
            stop = min(s + block, n)
            keep = None if wanted is None else np.isin(self.f["tokens/kind"][s:stop], wanted)
            count = stop - s if keep is None else int(keep.sum())
            if skip >= count:
                skip -= count
                continue
            rows = from_storage(ds[s:stop], self.dtype)
            self._check_finite(rows, hookpoint, s)
            if keep is not None:
                rows = rows[keep]
            if shuffle_buffer > 0:
                rows = rows[np.random.default_rng([int(seed) % 2**64, int(s)]).permutation(len(rows))]
            rows, skip = rows[skip:], 0
            rows = np.concatenate([carry, rows]) if len(carry) else rows
            full = len(rows) // batch_size * batch_size
            for i in range(0, full, batch_size):
                yield _tensor(rows[i:i + batch_size], device, torch)
            carry = rows[full:]
        if len(carry) and not drop_last:
            yield _tensor(carry, device, torch)

    def _check_finite(self, rows: np.ndarray, hookpoint: str, start: int) -> None:
        """Training on NaN/Inf gives a NaN SAE: refuse such rows, naming them."""
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            where = np.nonzero(bad)[0] + start
            raise UserError(f"{self.path}: {len(where)} row(s) of {hookpoint} hold NaN or Inf (rows {where[0]}.."
                            f"{where[-1]}): the file is corrupt; delete it and collect again")

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def merge(paths: list[str | Path], out: str | Path, **info: Any) -> dict[str, Any]:
    """Concatenate complete shard files (contiguous sample ranges, in order) into `out`: the same
    datasets, rows, commits and identity as one process collecting every sample would write (each
    shard's commits are replayed in order, one batch at a time). Returns the merged counts."""
    readers = [ActivationReader(p) for p in paths]
    try:
        first = readers[0]
        for r in readers[1:]:
            if any(str(r.f.attrs[k]) != str(first.f.attrs[k]) for k in IDENTITY_ATTRS):
                raise UserError(f"{r.path} and {first.path} were collected with different settings: collect again")
        identity = {"model": first.model, "dataset": first.dataset, "kinds": first.kinds}
        with ActivationWriter(out, {h: first.d_in(h) for h in first.hookpoints}, first.dtype, identity) as writer:
            for r in readers:
                _replay(r, writer)
            counts = {"n_tokens": writer.n_tokens, "n_samples": writer.n_samples_committed,
                      "skipped": int(writer.f.attrs.get("n_skipped", 0))}
            writer.finish(**counts, **info)
        return counts
    finally:
        for r in readers:
            r.close()


def _replay(reader: "ActivationReader", writer: ActivationWriter) -> None:
    """Append every commit of `reader` to `writer`, as it was committed."""
    f = reader.f
    n = int(f.attrs.get("n_commits", 0))
    ends = {c: f[f"commits/{c}"][:n] for c in ("tokens", "samples", "skipped", "next_sample")}
    samples, skipped = reader.samples(), reader.skipped()
    grids = f["samples/grids"][: len(samples["index"])]
    t0 = s0 = k0 = 0
    for i in range(n):
        t1, s1, k1 = int(ends["tokens"][i]), int(ends["samples"][i]), int(ends["skipped"][i])
        batch = [{"index": int(samples["index"][j]), "id": samples["id"][j], "token_count": int(samples["token_count"][j]),
                  "width": int(samples["width"][j]), "height": int(samples["height"][j]),
                  "grids": json.loads(grids[j].decode() if isinstance(grids[j], bytes) else grids[j])}
                 for j in range(s0, s1)]
        writer._append_raw({h: f[f"{h}/acts"][t0:t1] for h in reader.hookpoints}, reader.tokens(t0, t1), batch,
                           skipped[k0:k1], int(ends["next_sample"][i]))
        t0, s0, k0 = t1, s1, k1


def _tensor(rows: np.ndarray, device, torch):
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    return t.to(device) if device else t


def _kind_ids(kinds) -> list[int] | None:
    if kinds is None:
        return None
    from lmmsae.models.base import TokenKind

    return [int(k) for k in TokenKind.parse(kinds)]
