"""features.h5: where every latent fires. Writer (checkpoints of a streaming cache), shard merge, reader.

Layout (schema_version 2; row r of every per-latent dataset is latent `latents[r]`, so one latent's
examples are one slice; chunks hold whole latents)::

    attrs: format, schema_version, hookpoint, pooling, n_top, n_random, n_negatives, seed, n_images,
           layout (JSON [[rows, cols] per view]), kinds (JSON), model / sae / dataset (JSON identity),
           sample_range (JSON [start, stop]), lmmsae_version
    latents            [L] int64
    top/score          [L, n_top] float32    pooled score, descending (ties: lower sample index first)
    top/index          [L, n_top] int64      sample index, -1 = empty
    top/maps           [L, n_top, C] float16 per-patch activations of every view, placed by `layout`
    random/key         [L, n_random] float64 uniform key: the smallest keys of activating images
    random/score, random/index, random/maps  (as top)
    negatives/key      [L, n_negatives] float64, negatives/index [L, n_negatives] int64
    stats/images_active [L] int64, stats/score_sum, stats/score_sqsum [L] float64,
    stats/tokens_active [L, K] int64, stats/token_sum [L, K] float64, stats/token_max [L, K] float32
    stats/tokens_total [K] int64             tokens of each kind seen
    samples/index [n] int64, samples/id [n] str, samples/hash [n] int64,
    samples/grid [n, V, 2] int32 (rows, cols; 0 = no such view), samples/box [n, V, 4] float32

    journal/...                              the next checkpoint's rows, while it is being written
    attrs n_samples (committed rows of samples/*), journal (true: a committed journal awaits copying)

Checkpoints are written in place (see FeatureWriter): the per-latent rows through the journal, the
samples table appended, so a kill leaves a valid checkpoint and no checkpoint rewrites what grows
with the number of images. The stage marks the file complete (`features.h5.complete`, and the
`complete` attribute) only when every image is in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import h5py
import numpy as np
import torch

from lmmsae.atomic import atomic_path
from lmmsae.cache.layout import MapLayout, ViewGeometry
from lmmsae.cache.state import FeatureCache, SampleInfo
from lmmsae.cache.stats import KINDS, LatentStats
from lmmsae.errors import UserError
from lmmsae.stores.disk import GuardedWriter, chunk_bytes, disk_errno, disk_error

FORMAT = "lmmsae.features"
SCHEMA_VERSION = 2
JSON_ATTRS = ("layout", "kinds", "model", "sae", "dataset", "sample_range", "skipped")
ROW_BLOCK = 2048
SAMPLE_BLOCK = 65536
SAMPLE_CHUNK = 4096
JOURNAL = "journal"


# ----------------------------------------------------------------------------- writing


def write_cache(cache: FeatureCache, path: str | Path, attrs: dict[str, Any] | None = None) -> None:
    """Checkpoint `cache` into `path` (created, or continued when it holds an earlier checkpoint)."""
    with FeatureWriter(path) as writer:
        writer.checkpoint(cache, attrs or {})



class UnreadableFeatures(UserError):
    """A features file HDF5 cannot open (cut mid-write by a kill, or not HDF5 at all)."""

class FeatureWriter(GuardedWriter):
    """Checkpoints of a streaming cache, written in place.

    The per-latent rows (bounded by latents x examples) are rewritten at every checkpoint, through a
    journal: first into `/journal`, committed by one attribute, then copied over the root datasets.
    The samples table only grows: each checkpoint appends its new images (`n_samples` counts the
    committed ones). So a kill at any moment leaves the last checkpoint (or the journal, replayed on
    reopening), and nothing proportional to the number of images is ever rewritten. Space is
    reserved before each write, as for activations.h5 (lmmsae.stores.disk).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._broken = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = h5py.File(self.path, "a")
        except OSError as exc:
            code = disk_errno(exc)
            if code is not None:
                raise disk_error(self.path, code) from None
            raise UnreadableFeatures(f"{str(self.path)!r} is unreadable ({_first_line(exc)}); delete it to cache "
                                     f"again") from None
        try:
            with self._writing():
                if "format" in self.f.attrs:
                    check_format(self.f, self.path)
                    if bool(self.f.attrs.get("journal", False)):
                        self._apply()
                    n = self.n_samples
                    for ds in self.f["samples"].values():
                        ds.resize(n, axis=0)
                else:
                    for key in list(self.f.keys()):
                        del self.f[key]
        except BaseException:
            self.close()
            raise

    @property
    def n_samples(self) -> int:
        return int(self.f.attrs.get("n_samples", 0))

    def checkpoint(self, cache: FeatureCache, attrs: dict[str, Any]) -> None:
        """Make the file hold `cache` (its rows, and its `pending` samples appended; then cleared)."""
        f, n0, V = self.f, self.n_samples, len(cache.layout.views)
        with self._writing():
            journal = f.require_group(JOURNAL)
            specs = _row_specs(cache.n_latents, cache.n_top, cache.n_random, cache.n_negatives, cache.layout.size)
            samples = _sample_columns(cache.pending, V)
            missing = "samples" not in f
            need = _stale_bytes(journal, specs) + sum(
                chunk_bytes(f[f"samples/{k}"], len(v)) if not missing else v.nbytes * 2 for k, v in samples.items())
            self._reserve(need + sum(len(s.id) + 32 for s in cache.pending))
            _ensure(journal, specs)
            journal["latents"][...] = cache.latents.cpu().numpy()
            for start in range(0, cache.n_latents, ROW_BLOCK):
                _write_rows(journal, start, cache, slice(start, start + ROW_BLOCK))
            journal["stats/tokens_total"][...] = cache.stats.tokens_total.numpy()
            if missing:
                _create_samples(f, V)
            _append_samples(f["samples"], samples)
            journal.attrs["attrs"] = json.dumps(_attr_values(cache, attrs))
            journal.attrs["n_samples"] = n0 + len(cache.pending)
            f.flush()
            self._reserve(0)
            f.attrs["journal"] = True  # the commit: from here on, reopening completes the copy
            f.flush()
            self._apply()
            if attrs.get("complete"):
                del f[JOURNAL]  # the finished file holds just the result
        cache.pending = []

    def _apply(self) -> None:
        """Copy the committed journal over the root rows and attributes."""
        f = self.f
        journal = f[JOURNAL]
        specs = {name: (ds.shape, ds.dtype, ds.fillvalue) for name, ds in _datasets(journal).items()}
        self._reserve(_stale_bytes(f, specs))
        _ensure(f, specs)
        for name in specs:
            src, dst = journal[name], f[name]
            for start in range(0, max(src.shape[0], 1), ROW_BLOCK):
                dst[start:start + ROW_BLOCK] = src[start:start + ROW_BLOCK]
        f.flush()
        self._reserve(0)
        for key, value in json.loads(journal.attrs["attrs"]).items():
            f.attrs[key] = value
        f.attrs["n_samples"] = int(journal.attrs["n_samples"])
        f.attrs["journal"] = False
        f.flush()


def _attr_values(cache: FeatureCache, attrs: dict[str, Any]) -> dict[str, Any]:
    """The root attributes of a checkpoint of `cache`, as stored (JSON strings where structured)."""
    from lmmsae import __version__

    values = {
        **attrs, "format": FORMAT, "schema_version": SCHEMA_VERSION, "pooling": cache.pooling,
        "n_top": cache.n_top, "n_random": cache.n_random, "n_negatives": cache.n_negatives, "seed": cache.seed,
        "n_images": cache.stats.n_images, "layout": cache.layout.to_list(), "kinds": list(KINDS),
        "lmmsae_version": __version__,
    }
    return {key: json.dumps(value, default=str) if key in JSON_ATTRS or isinstance(value, (dict, list)) else (
        "" if value is None else value) for key, value in values.items()}


def _set_attrs(f: h5py.File, cache: FeatureCache, attrs: dict[str, Any]) -> None:
    for key, value in _attr_values(cache, attrs).items():
        f.attrs[key] = value


def _row_specs(L: int, n_top: int, n_random: int, n_negatives: int, C: int) -> dict[str, tuple]:
    """name -> (shape, dtype, fill) of every per-latent dataset."""
    K = len(KINDS)
    specs = {"latents": ((L,), np.dtype(np.int64), 0)}
    for group, n in (("top", n_top), ("random", n_random)):
        specs[f"{group}/score"] = ((L, n), np.dtype(np.float32), -np.inf)
        specs[f"{group}/index"] = ((L, n), np.dtype(np.int64), -1)
        specs[f"{group}/maps"] = ((L, n, C), np.dtype(np.float16), 0)
    specs["random/key"] = ((L, n_random), np.dtype(np.float64), np.inf)
    specs["negatives/key"] = ((L, n_negatives), np.dtype(np.float64), np.inf)
    specs["negatives/index"] = ((L, n_negatives), np.dtype(np.int64), -1)
    for key, (shape, dtype) in LatentStats.FIELDS.items():
        specs[f"stats/{key}"] = ((L, *shape), torch.empty(0, dtype=dtype).numpy().dtype, 0)
    specs["stats/tokens_total"] = ((K,), np.dtype(np.int64), 0)
    return specs


def _datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    out = {}
    group.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def _stale_bytes(group: h5py.Group, specs: dict[str, tuple]) -> int:
    """Bytes of the datasets `_ensure` would (re)create."""
    have = _datasets(group)
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for name, (shape, dtype, _) in specs.items()
               if name not in have or have[name].shape != tuple(shape) or have[name].dtype != dtype)


def _ensure(group: h5py.Group, specs: dict[str, tuple]) -> None:
    """Make `group` hold exactly these datasets (those of another shape are recreated), allocated now."""
    have = _datasets(group)
    for name, (shape, dtype, fill) in specs.items():
        if name in have and have[name].shape == tuple(shape) and have[name].dtype == dtype:
            continue
        if name in have:
            del group[name]
        _make(group, name, tuple(shape), dtype, fill, early=True)


def _make(g: h5py.Group, name: str, shape: tuple, dtype, fill, early: bool = False) -> None:
    """A row dataset whose chunks hold whole latents (one latent's examples are one read)."""
    L = shape[0]
    per_row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(1, min(max(L, 1), (256 * 1024) // max(per_row, 1)))
    chunks = (rows, *shape[1:]) if L and all(shape[1:]) else None
    dcpl = None
    if early:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    g.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, fillvalue=fill, dcpl=dcpl)


def _create_rows(f: h5py.File, L: int, n_top: int, n_random: int, n_negatives: int, C: int) -> None:
    for name, (shape, dtype, fill) in _row_specs(L, n_top, n_random, n_negatives, C).items():
        _make(f, name, shape, dtype, fill)


def _write_rows(f: h5py.Group, start: int, cache: FeatureCache, rows: slice) -> None:
    """Write rows `rows` of `cache` at row `start` of `f` (the file, or its journal)."""
    top, rnd, neg = cache.top, cache.random, cache.negatives
    score = top.score[rows]
    stop = start + score.shape[0]
    np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
    f["top/score"][start:stop] = np_(score)
    f["top/index"][start:stop] = np_(top.index[rows])
    if cache.layout.size and cache.n_top:
        f["top/maps"][start:stop] = np_(top.sorted_payload("maps", rows))
    if cache.n_random:
        f["random/key"][start:stop] = np_(-rnd.score[rows])
        f["random/index"][start:stop] = np_(rnd.index[rows])
        f["random/score"][start:stop] = np_(rnd.sorted_payload("value", rows))
        if cache.layout.size:
            f["random/maps"][start:stop] = np_(rnd.sorted_payload("maps", rows))
    if cache.n_negatives:
        f["negatives/key"][start:stop] = np_(-neg.score[rows])
        f["negatives/index"][start:stop] = np_(neg.index[rows])
    for key, value in cache.stats.values.items():
        f[f"stats/{key}"][start:stop] = np_(value[rows])


SAMPLE_SHAPES = {"index": ((), np.int64), "id": ((), h5py.string_dtype()), "hash": ((), np.int64),
                 "grid": ((2,), np.int32), "box": ((4,), np.float32)}


def _create_samples(f: h5py.Group, V: int) -> None:
    """The samples table: resizable, appended to at every checkpoint."""
    g = f.create_group("samples")
    for key, (tail, dtype) in SAMPLE_SHAPES.items():
        if tail:
            g.create_dataset(key, shape=(0, V, *tail), maxshape=(None, None, *tail), dtype=dtype,
                             chunks=(SAMPLE_CHUNK, max(V, 1), *tail))
        else:
            g.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(SAMPLE_CHUNK,))


def _sample_columns(pending: list[SampleInfo], V: int) -> dict[str, np.ndarray]:
    grid = np.zeros((len(pending), V, 2), np.int32)
    box = np.zeros((len(pending), V, 4), np.float32)
    for i, s in enumerate(pending):
        for v, view in enumerate(s.views):
            grid[i, v] = (view.rows, view.cols)
            box[i, v] = view.box
    return {"index": np.array([s.index for s in pending], np.int64), "id": np.array([s.id for s in pending], dtype=object),
            "hash": np.array([s.hash for s in pending], np.int64), "grid": grid, "box": box}


def _append_samples(g: h5py.Group, rows: dict[str, np.ndarray]) -> None:
    """Append rows to the samples table (widening the per-view columns if a new view appeared)."""
    n0, n = g["index"].shape[0], len(rows["index"])
    if not n:
        return
    for key, data in rows.items():
        ds = g[key]
        if data.ndim > 1 and data.shape[1] > ds.shape[1]:
            ds.resize(data.shape[1], axis=1)
        ds.resize(n0 + n, axis=0)
        if data.ndim > 1:
            ds[n0:n0 + n, :data.shape[1]] = data
        else:
            ds[n0:n0 + n] = data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- reading state back


def read_attrs(f: h5py.File) -> dict[str, Any]:
    out = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in JSON_ATTRS or (isinstance(value, str) and value[:1] in "[{"):
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                pass
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def check_format(f: h5py.File, path: str | Path) -> dict[str, Any]:
    attrs = read_attrs(f)
    if attrs.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} is not an lmmsae features file (no format={FORMAT!r} attribute)")
    if attrs.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{str(path)!r} has features schema_version {attrs.get('schema_version')}, this lmmsae reads "
                        f"{SCHEMA_VERSION}: re-run `lmmsae cache` with this version")
    return attrs


def open_h5(path: str | Path) -> h5py.File:
    """A features file opened for reading, checked; a truncated, garbage or mid-checkpoint file is one line."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"{str(path)!r} is not a readable HDF5 file ({_first_line(exc)}): delete it and run "
                        f"`lmmsae cache` again") from None
    try:
        check_format(f, path)
        if bool(f.attrs.get("journal", False)):
            raise UserError(f"{str(path)!r} was interrupted mid-checkpoint: resume `lmmsae cache` to finish it")
    except BaseException:
        f.close()
        raise
    return f


def _committed(f: h5py.File) -> int:
    """Rows of the samples table that belong to the checkpoint (later ones are a cut-off append)."""
    return int(f.attrs.get("n_samples", f["samples/index"].shape[0]))


def load_cache(path: str | Path, rows: slice = slice(None), device="cpu") -> tuple[FeatureCache, dict[str, Any]]:
    """The streaming state of rows `rows` of a features file (to resume it or merge it).
    Samples stay on disk: the next checkpoint appends to them."""
    with open_h5(path) as f:
        attrs = read_attrs(f)
        latents = f["latents"][rows]
        cache = FeatureCache(latents, attrs["n_top"], attrs["n_random"], attrs["n_negatives"], attrs["pooling"],
                             attrs["seed"], MapLayout.from_list(attrs["layout"]), device=device)
        t = lambda name: torch.as_tensor(f[name][rows], device=device)  # noqa: E731
        if cache.n_top:
            cache.top.load(t("top/score"), t("top/index"), {"maps": t("top/maps")} if cache.layout.size else {})
        if cache.n_random:
            payload = {"value": t("random/score")}
            if cache.layout.size:
                payload["maps"] = t("random/maps")
            cache.random.load(-t("random/key"), t("random/index"), payload)
        if cache.n_negatives:
            cache.negatives.load(-t("negatives/key"), t("negatives/index"))
        for key in cache.stats.values:
            cache.stats.values[key].copy_(t(f"stats/{key}"))
        cache.stats.n_images = int(attrs["n_images"])
        cache.stats.tokens_total = torch.as_tensor(f["stats/tokens_total"][...])
    return cache, attrs


# ----------------------------------------------------------------------------- merging shards

MERGE_MAY_DIFFER = ("n_images", "sample_range", "layout", "lmmsae_version", "skipped", "n_samples", "journal",
                    "complete")


def merge(paths: Sequence[str | Path], out: str | Path) -> None:
    """Combine features files over disjoint samples (e.g. one per rank) into the file one run would give.

    Latent rows are merged in blocks, so memory stays at (number of shards) x block x examples."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("nothing to merge: no features files given")
    files = []
    try:
        files += [open_h5(p) for p in paths]
        attrs = [check_format(f, p) for f, p in zip(files, paths)]
        for p, f, a in zip(paths[1:], files[1:], attrs[1:]):
            diff = sorted(k for k in set(a) | set(attrs[0]) if k not in MERGE_MAY_DIFFER and a.get(k) != attrs[0].get(k))
            if diff:
                raise UserError(f"cannot merge {str(p)!r} with {str(paths[0])!r}: they differ in {', '.join(diff)}")
            if not np.array_equal(files[0]["latents"][...], f["latents"][...]):
                raise UserError(f"cannot merge {str(p)!r}: it caches other latents than {str(paths[0])!r}")
        layout = MapLayout()
        for a in attrs:
            layout = layout.union(MapLayout.from_list(a["layout"]))
        indices = np.concatenate([f["samples/index"][:_committed(f)] for f in files])
        if len(np.unique(indices)) != len(indices):
            raise UserError("cannot merge: the shards share samples (each sample must be cached by one shard only)")
        first = [int(f["samples/index"][0]) if _committed(f) else 0 for f in files]
        sources = [files[i]["samples"] for i in np.argsort(first, kind="stable")]
        n_latents = len(files[0]["latents"])
        merged_attrs = {k: v for k, v in attrs[0].items() if k not in MERGE_MAY_DIFFER}
        ranges = [a["sample_range"] for a in attrs if a.get("sample_range")]
        if ranges:
            merged_attrs["sample_range"] = [min(r[0] for r in ranges), max(r[1] for r in ranges)]
        if any("skipped" in a for a in attrs):
            merged_attrs["skipped"] = sorted((s for a in attrs for s in a.get("skipped") or []), key=lambda s: s["index"])
        a0 = attrs[0]
        with atomic_path(out) as tmp:
            with h5py.File(tmp, "w") as g:
                _create_rows(g, n_latents, a0["n_top"], a0["n_random"], a0["n_negatives"], layout.size)
                g["latents"][...] = files[0]["latents"][...]
                result = None
                for start in range(0, n_latents, ROW_BLOCK):
                    parts = [load_cache(p, slice(start, start + ROW_BLOCK))[0] for p in paths]
                    result = parts[0]
                    result.grow(layout)
                    for part in parts[1:]:
                        result.absorb(part)
                    _write_rows(g, start, result, slice(None))
                stats = LatentStats(0)
                for p in paths:
                    stats.absorb(load_cache(p, slice(0, 0))[0].stats)
                result = result or load_cache(paths[0], slice(0, 0))[0]
                result.stats, result.layout = stats, layout
                _set_attrs(g, result, merged_attrs)
                g["stats/tokens_total"][...] = stats.tokens_total.numpy()
                _create_samples(g, len(layout.views))
                for src in sources:
                    n = _committed(src.file)
                    for a in range(0, n, SAMPLE_BLOCK):
                        b = min(a + SAMPLE_BLOCK, n)
                        _append_samples(g["samples"], {"index": src["index"][a:b], "id": src["id"].asstr()[a:b],
                                                       "hash": src["hash"][a:b], "grid": src["grid"][a:b],
                                                       "box": src["box"][a:b]})
                g.attrs["n_samples"] = g["samples/index"].shape[0]
                _sort_samples(g["samples"])
    finally:
        for f in files:
            f.close()


def _sort_samples(g: h5py.Group) -> None:
    """Order the samples table by sample index (shards may interleave)."""
    index = g["index"][...]
    if np.all(index[:-1] <= index[1:]):
        return
    order = np.argsort(index, kind="stable")
    for key in ("index", "id", "hash", "grid", "box"):
        data = g[key].asstr()[...] if key == "id" else g[key][...]
        g[key][...] = data[order]


# ----------------------------------------------------------------------------- the reader


class FeatureStore:
    """Read a features.h5: per latent, records of examples for explainers and scorers, and statistics."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"features file {str(self.path)!r} does not exist: run `lmmsae cache` first")
        self._f = open_h5(self.path)
        self.attrs = read_attrs(self._f)
        self.hookpoint: str = self.attrs.get("hookpoint", "")
        self.layout = MapLayout.from_list(self.attrs["layout"])
        self._latents = self._f["latents"][...]
        self.latents: list[int] = [int(x) for x in self._latents]
        self._row = {lat: r for r, lat in enumerate(self.latents)}
        self._n_samples = _committed(self._f)
        self._sample_index = self._f["samples/index"][:self._n_samples]
        self._sorted = bool(np.all(self._sample_index[:-1] <= self._sample_index[1:]))
        self._hashes: np.ndarray | None = None

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def n_images(self) -> int:
        return int(self.attrs["n_images"])

    def identity(self) -> dict[str, Any]:
        """What produced this file (compare with lmmsae.stores.identity.check_identity)."""
        return {key: self.attrs.get(key) for key in ("hookpoint", "model", "sae", "dataset")}

    @property
    def complete(self) -> bool | None:
        """True when the cache that wrote this file saw every image, False for a checkpoint of an
        unfinished cache, None when the file does not say (written by other code)."""
        value = self.attrs.get("complete")
        return None if value is None else bool(value)

    def row(self, latent: int) -> int:
        try:
            return self._row[int(latent)]
        except KeyError:
            shown = f"{self.latents[0]}..{self.latents[-1]}" if self.latents else "none"
            raise UserError(f"latent {latent} is not in {str(self.path)!r} (it caches {len(self.latents)} "
                            f"latents: {shown})") from None

    # --- raw entries

    def entries(self, latent: int, group: str = "top") -> dict[str, np.ndarray]:
        """Valid entries of one latent: index, score, maps (flat, float32) for group top/random; index, key for negatives."""
        r = self.row(latent)
        index = self._f[f"{group}/index"][r]
        valid = index >= 0
        out = {"index": index[valid]}
        if group == "negatives":
            out["key"] = self._f["negatives/key"][r][valid]
            return out
        out["score"] = self._f[f"{group}/score"][r][valid].astype(np.float32)
        maps = self._f[f"{group}/maps"][r] if self.layout.size else np.zeros((len(index), 0), np.float16)
        out["maps"] = maps[valid].astype(np.float32)
        return out

    def sample_position(self, sample_index: int) -> int:
        if self._sorted:
            pos = int(np.searchsorted(self._sample_index, sample_index))
            if pos < len(self._sample_index) and self._sample_index[pos] == sample_index:
                return pos
        else:
            hits = np.nonzero(self._sample_index == sample_index)[0]
            if len(hits):
                return int(hits[0])
        raise KeyError(f"sample {sample_index} is not in {self.path}")

    def sample_info(self, sample_index: int) -> SampleInfo:
        """Id, hash and view geometry of a cached sample."""
        p = self.sample_position(sample_index)
        g = self._f["samples"]
        grid, box = g["grid"][p], g["box"][p]
        views = [ViewGeometry(int(r), int(c), tuple(float(x) for x in b)) for (r, c), b in zip(grid, box) if r > 0]
        return SampleInfo(int(sample_index), g["id"].asstr()[p], int(g["hash"][p]), views)

    def view_maps(self, flat: np.ndarray, info: SampleInfo) -> dict[str, np.ndarray]:
        """A flat map split into each view's [rows, cols] grid, keyed "0" (base), "1", ..."""
        return {str(v): self.layout.view_map(flat, v, g.rows, g.cols).astype(np.float32)
                for v, g in enumerate(info.views) if v < len(self.layout.views)}

    # --- statistics

    def stats(self, latent: int) -> dict[str, Any]:
        """Firing frequencies (over images, over tokens of each kind), activation summary and quantiles."""
        r = self.row(latent)
        s = {key: self._f[f"stats/{key}"][r] for key in LatentStats.FIELDS}
        tokens_total = self._f["stats/tokens_total"][...]
        n = max(self.n_images, 1)
        active = int(s["images_active"])
        top = self._f["top/score"][r]
        sample = self._f["random/score"][r][self._f["random/index"][r] >= 0]
        mean = float(s["score_sum"]) / n
        kinds = {}
        for k, name in enumerate(KINDS):
            if tokens_total[k]:
                kinds[name] = {"tokens": int(tokens_total[k]), "active": int(s["tokens_active"][k]),
                               "frequency": float(s["tokens_active"][k]) / float(tokens_total[k]),
                               "mean": float(s["token_sum"][k]) / float(tokens_total[k]),
                               "max": float(s["token_max"][k])}
        qs = (0.1, 0.25, 0.5, 0.75, 0.9)
        return {
            "latent": int(latent), "n_images": self.n_images, "images_active": active,
            "frequency_images": active / n, "pooling": self.attrs["pooling"],
            "max": float(top[0]) if np.isfinite(top[0]) else 0.0,
            "mean": mean, "std": float(np.sqrt(max(float(s["score_sqsum"]) / n - mean * mean, 0.0))),
            "mean_active": float(s["score_sum"]) / active if active else 0.0,
            "quantiles": {str(q): float(np.quantile(sample, q)) for q in qs} if len(sample) else {},
            "quantiles_from": int(len(sample)),
            "tokens": kinds,
            "frequency_image_tokens": kinds.get("image", {}).get("frequency", 0.0),
            "frequency_text_tokens": kinds.get("text", {}).get("frequency", 0.0),
        }

    def alive_latents(self, min_images: int = 1) -> list[int]:
        """Latents firing on at least `min_images` images (and with a top example), in id order."""
        keep = self._f["stats/images_active"][...] >= min_images
        if self._f["top/index"].shape[1]:
            keep &= self._f["top/index"][:, 0] >= 0
        return [int(x) for x in self._latents[keep]]

    # --- records

    def record(self, latent: int, n: int = 5, selection: str = "top", dataset=None, render: str | None = "mask",
               n_negatives: int = 0, held_out: int = 0, seed: int = 0, negatives: str = "random",
               embed: Callable | None = None, dedupe: bool = True, render_options: dict[str, Any] | None = None):
        """A FeatureRecord of latent `latent`: `n` examples chosen by `selection` ("top", "stratified",
        "random"), `held_out` further activating examples not shown (the next ranks for "top"), and
        `n_negatives` images where it never fires ("random", or "similar": those whose embedding by
        `embed(list[PIL]) -> array [n, d]` is closest to the shown examples'). With `dataset`, images
        and ground truth are loaded by sample index and `rendered` is made by `lmmsae.render`."""
        from lmmsae.cache import select
        from lmmsae.records import FeatureRecord

        if selection not in select.SELECTIONS:
            raise UserError(f"unknown selection {selection!r}: use one of {', '.join(select.SELECTIONS)}")
        rng = np.random.default_rng([int(seed), int(latent)])
        top, rnd = self.entries(latent, "top"), self.entries(latent, "random")
        pool = select.Pool.union(top, rnd, self._hash)
        seen: set[int] = set()
        shown = select.choose(selection, pool, n, rng, seen, dedupe)
        extra = select.choose(selection, pool, held_out, rng, seen, dedupe) if held_out else []
        examples = [self._example(pool, i, dataset, render, render_options) for i in shown]
        held = [self._example(pool, i, dataset, render, render_options) for i in extra]
        negs = []
        if n_negatives:
            neg_index = self.entries(latent, "negatives")["index"]
            chosen = select.negatives(neg_index, n_negatives, rng, negatives, dataset, embed,
                                      [e.image for e in examples], self._hash if dedupe else None, seen)
            negs = [self._negative(int(i), dataset) for i in chosen]
        return FeatureRecord(latent=int(latent), hookpoint=self.hookpoint, examples=examples, negatives=negs,
                             held_out=held, stats=self.stats(latent))

    def _hash(self, sample_index: int) -> int:
        if self._hashes is None:
            self._hashes = self._f["samples/hash"][:self._n_samples]
        return int(self._hashes[self.sample_position(int(sample_index))])

    def _example(self, pool, i: int, dataset, render: str | None, render_options):
        from lmmsae.records import FeatureExample

        info = self.sample_info(int(pool.index[i]))
        views = self.view_maps(pool.maps[i], info)
        base = views.get("0")
        ex = FeatureExample(sample_index=info.index, sample_id=info.id, activation=float(pool.score[i]),
                            activation_map=base, views=views)
        self._fill(ex, dataset)
        if ex.image is not None and render and render != "none" and base is not None:
            from lmmsae.render import render as do_render

            ex.rendered = do_render(render, ex.image, base, box=info.views[0].box, **(render_options or {}))
        return ex

    def _negative(self, sample_index: int, dataset):
        from lmmsae.records import FeatureExample

        info = self.sample_info(sample_index)
        views = {str(v): np.zeros((g.rows, g.cols), np.float32) for v, g in enumerate(info.views)}
        ex = FeatureExample(sample_index=info.index, sample_id=info.id, activation=0.0,
                            activation_map=views.get("0"), views=views)
        self._fill(ex, dataset)
        ex.rendered = ex.image
        return ex

    @staticmethod
    def _fill(ex, dataset) -> None:
        if dataset is None:
            return
        sample = dataset.sample(ex.sample_index)
        if sample.id != ex.sample_id:
            raise UserError(f"dataset sample {ex.sample_index} is {sample.id!r} but the cache recorded "
                            f"{ex.sample_id!r}: pass the dataset the cache was made from")
        ex.image, ex.truth = sample.image, sample.truth
