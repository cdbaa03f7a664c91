"""collect: stream a dataset through the model and store hookpoint activations of chosen token kinds.

`stream_activations` yields per-batch activations without storing them (the trainer's streaming
mode); `collect` writes them to activations.h5 (resumable, see lmmsae.stores.activations).
A sample the dataset cannot read or whose image the model cannot take is skipped (reported, and
recorded in the file) or stops the run, as the run's `on_bad_sample` says (lmmsae.loader).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from lmmsae import artifacts
from lmmsae.errors import UserError

DEFAULT_KINDS = ["text", "image", "image_newline", "special"]


@dataclass
class Options:
    batch_size: int = 16
    kinds: list[str] = field(default_factory=lambda: list(DEFAULT_KINDS))  # token kinds to store
    dtype: str = "float32"            # storage: float32, float16 or bfloat16
    max_samples: int | None = None    # first N samples of the dataset (None: all)
    prompt: str | None = None         # overrides the samples' and the model's prompt
    compression: str | None = None    # h5py filter, e.g. "lzf" or "gzip"

    def __post_init__(self):  # checked when the config is read, before any stage runs
        from lmmsae.models.base import TokenKind

        TokenKind.parse(self.kinds)
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise UserError(f"collect.dtype = {self.dtype!r}: use float32, float16 or bfloat16")
        if self.batch_size < 1 or (self.max_samples is not None and self.max_samples < 1):
            raise UserError("collect.batch_size and collect.max_samples must be at least 1")


CLI_PARAMS = [
    click.Option(["--batch-size", "batch_size"], type=int, help="Samples per forward pass."),
    click.Option(["--max-samples", "max_samples"], type=int, help="Collect only the first N samples."),
    click.Option(["--kind", "kinds"], multiple=True, help="Token kind to store (repeatable): text, image, "
                 "image_newline, special, padding."),
    click.Option(["--store-dtype", "dtype"], help="float32, float16 or bfloat16."),
]


@dataclass
class Chunk:
    """One processed batch: activations [N, d] per hookpoint, its token table, and its samples."""

    acts: dict[str, Any]
    tokens: dict[str, Any]
    samples: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    next_index: int


def units(ctx) -> list:
    """activations.h5: made from the model, the dataset, the hookpoints and these options."""
    from lmmsae.fingerprint import without
    from lmmsae.plan import Unit

    c = ctx.config
    opts = ctx.stage_options("collect", Options)
    return [Unit("collect", artifacts.ACTIVATIONS, {
        "model": c.model.to_dict(), "dataset": c.dataset.to_dict(), "hookpoints": list(c.hookpoints),
        "dtype": c.dtype, "on_bad_sample": c.on_bad_sample, "collect": without(opts, "batch_size")})]


DISTRIBUTED = True  # under torchrun every rank collects a shard; rank 0 merges them


def run(ctx) -> None:
    """Collect activations.h5; under torchrun (WORLD_SIZE > 1) each rank collects a contiguous,
    batch-aligned shard of the samples and rank 0 merges the shards into what one process writes."""
    (unit,) = ctx.units("collect")
    if not ctx.wants(unit):
        return
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        return _run_sharded(ctx, unit, world)
    opts = ctx.stage_options("collect", Options)
    dataset = ctx.build("dataset")
    adapter = ctx.build("model")
    ctx.start(unit)
    ctx.finish(unit, **_collect(ctx, unit, opts, adapter, dataset, ctx.run.file(artifacts.ACTIVATIONS)))


def _collect(ctx, unit, opts, adapter, dataset, path, shard=(0, 1)) -> dict[str, Any]:
    hookpoints = adapter.resolve_hookpoints(ctx.config.hookpoints)
    identity = {"name": ctx.config.dataset.name, **dataset.identity()}
    ctx.log("collect-start", hookpoints=hookpoints, resume=unit.status == "resume", shard=shard[0], shards=shard[1])
    return collect(adapter, dataset, hookpoints, path, opts, dataset_identity=identity, log=ctx.log,
                   model_name=ctx.config.model.name, policy=ctx.config.on_bad_sample, shard=shard)


def _run_sharded(ctx, unit, world: int) -> None:
    import shutil

    import torch.distributed as dist

    from lmmsae.stores.activations import merge
    from lmmsae.trainer import init_distributed

    device = init_distributed(ctx.config.device)  # joins the group; cuda becomes cuda:<LOCAL_RANK>
    rank = dist.get_rank()
    shards = [ctx.run.file(f"{artifacts.ACTIVATION_SHARDS_DIR}/activations-{r:03d}-of-{world:03d}.h5")
              for r in range(world)]
    opts = ctx.stage_options("collect", Options)
    dataset = ctx.build("dataset")
    model_comp, model_opts = ctx.component("model")
    adapter = model_comp.load()(model_opts, device=device, dtype=ctx.config.dtype)
    if rank == 0:
        ctx.start(unit)
        if unit.status in ("run", "rerun"):  # shards of an earlier config are never resumed
            shutil.rmtree(ctx.run.file(artifacts.ACTIVATION_SHARDS_DIR), ignore_errors=True)
    dist.barrier()
    info = _collect(ctx, unit, opts, adapter, dataset, shards[rank], shard=(rank, world))
    dist.barrier()
    if rank == 0:
        merged = merge(shards, ctx.run.file(artifacts.ACTIVATIONS), seconds=info["seconds"], shards=world)
        ctx.finish(unit, **merged, shards=world)
        shutil.rmtree(ctx.run.file(artifacts.ACTIVATION_SHARDS_DIR), ignore_errors=True)
    dist.barrier()


def collect(adapter, dataset, hookpoints: list[str], path: str | Path, options: Options | None = None,
            dataset_identity: dict | None = None, log: Callable[..., None] | None = None,
            model_name: str | None = None, policy: str = "skip", shard: tuple[int, int] = (0, 1)) -> dict[str, Any]:
    """Write activations of `hookpoints` for every sample of `dataset` (or shard `(rank, world)` of
    them, see `shard_range`) to `path`; resume if partial. Bad samples are skipped (recorded in the
    file) or stop the run, as `policy` says."""
    from lmmsae.models.base import TokenKind
    from lmmsae.progress import track
    from lmmsae.stores.activations import ActivationWriter

    options = options or Options()
    kinds = [k.name.lower() for k in TokenKind.parse(options.kinds)]
    hookpoints = adapter.resolve_hookpoints(hookpoints)
    identity = {"model": {**adapter.identity(), **({"name": model_name} if model_name else {})},
                "dataset": dataset_identity or dataset.identity(), "kinds": kinds}
    n = len(dataset) if options.max_samples is None else min(len(dataset), options.max_samples)
    lo, stop = shard_range(n, options.batch_size, *shard)
    writer = ActivationWriter(path, {h: adapter.d_model(h) for h in hookpoints}, options.dtype, identity,
                              compression=options.compression)
    try:
        if writer.complete:
            return {"n_tokens": writer.n_tokens, "n_samples": writer.n_samples_committed, "resumed": True}
        start = max(writer.next_sample, lo)
        n_batches = -(-(stop - start) // options.batch_size)
        t0, tokens0, skipped = time.perf_counter(), writer.n_tokens, 0
        chunks = iter_chunks(adapter, dataset, hookpoints, options.batch_size, kinds, start, stop,
                             options.prompt, _policy(policy, log))
        for chunk in track(chunks, total=n_batches, description="collect", unit="batches"):
            writer.append(chunk.acts, chunk.tokens, chunk.samples, chunk.skipped, chunk.next_index)
            skipped += len(chunk.skipped)
        elapsed = time.perf_counter() - t0
        info = {"n_tokens": writer.n_tokens, "n_samples": writer.n_samples_committed, "skipped": skipped,
                "seconds": round(elapsed, 3), "tokens_per_s": round((writer.n_tokens - tokens0) / max(elapsed, 1e-9), 1),
                "resumed_at": start}
        writer.finish(**info)
        return info
    finally:
        writer.close()


def shard_range(n: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Samples [lo, hi) of shard `rank`: whole batches of one process's batching, balanced, so every
    batch (and its padding) is the one a single process would run."""
    n_batches = -(-n // batch_size)
    lo, hi = rank * n_batches // world, (rank + 1) * n_batches // world
    return min(lo * batch_size, n), min(hi * batch_size, n)


def stream_activations(adapter, dataset, hookpoints: list[str], batch_size: int = 16, kinds=None,
                       start: int = 0, stop: int | None = None, prompt: str | None = None,
                       policy=None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(hookpoint -> Tensor [N, d], token table) per batch, straight from the model, nothing stored.

    The token table holds numpy columns sample_index, position, kind, image, view, row, col, box.
    """
    for chunk in iter_chunks(adapter, dataset, adapter.resolve_hookpoints(hookpoints), batch_size,
                             DEFAULT_KINDS if kinds is None else kinds, start,
                             len(dataset) if stop is None else min(stop, len(dataset)), prompt,
                             _policy(policy)):
        yield chunk.acts, chunk.tokens


def iter_chunks(adapter, dataset, hookpoints, batch_size, kinds, start, stop, prompt, policy) -> Iterator[Chunk]:
    """Batches of samples start..stop-1 through the model, activations of `kinds` tokens on CPU; bad
    samples handled by `policy` (lmmsae.loader)."""
    import numpy as np
    import torch

    from lmmsae.loader import load_batches

    for first in range(start, stop, batch_size):
        indices = list(range(first, min(first + batch_size, stop)))
        (loaded,) = load_batches(dataset, adapter, indices, batch_size, policy, prompt)
        batch, kept, skipped = loaded.batch, loaded.indices, loaded.skipped
        if batch is None:
            yield Chunk({h: torch.zeros(0, adapter.d_model(h)) for h in hookpoints}, _empty_tokens(),
                        [], skipped, indices[-1] + 1)
            continue
        tm = batch.token_map
        mask = tm.mask(kinds)
        acts = adapter.forward(batch, hookpoints)
        mask_t = torch.from_numpy(mask).to(next(iter(acts.values())).device)
        out = {h: a[mask_t].cpu() for h, a in acts.items()}
        table = tm.table(mask)
        sample_index = np.asarray(kept, dtype=np.int64)
        table["sample_index"] = sample_index[table.pop("batch_index")]
        counts = mask.sum(axis=1)
        samples_info = [{"index": i, "id": sid, "token_count": int(c),
                         "width": (tm.image_sizes[b] or (0, 0))[0], "height": (tm.image_sizes[b] or (0, 0))[1],
                         "grids": tm.grids[b]}
                        for b, (i, sid, c) in enumerate(zip(kept, batch.sample_ids, counts))]
        yield Chunk(out, table, samples_info, skipped, indices[-1] + 1)


def _policy(policy, log=None):
    from lmmsae.loader import Policy

    return policy if isinstance(policy, Policy) else Policy(policy or "skip", "collect", log)


def _empty_tokens():
    import numpy as np

    from lmmsae.stores.activations import TOKEN_COLUMNS

    out = {c: np.zeros(0, dt) for c, dt in TOKEN_COLUMNS.items()}
    out["box"] = np.zeros((0, 4), np.float32)
    return out
