"""`lmmsae cache`: stream a dataset through model + SAE and record where every latent fires.

Writes `cache/features.h5` (see lmmsae.stores.features): per latent the top images by pooled score with
per-patch maps of every view, a uniform sample of activating images, a sample of images where it
never fires, and firing statistics. Memory is bounded by latents x examples x map size; the file is
checkpointed every `checkpoint_every` images and a rerun with --resume continues from the last
checkpoint. Under torchrun each rank caches a contiguous shard of the images; rank 0 merges them into
exactly what one process would write.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from lmmsae import artifacts
from lmmsae.cache import POOLINGS
from lmmsae.errors import UserError



DISTRIBUTED = True  # under torchrun every rank takes part (lmmsae.commands.common.run_stages)


@dataclass
class Options:
    n_top: int = 32                  # top images kept per latent (explainers see ~5; the rest are held out)
    n_random: int = 16               # uniform sample of activating images (stratified / random selection, quantiles)
    n_negatives: int = 16            # uniform sample of images where the latent never fires
    pooling: str = "base_mean"       # base_mean (the paper: mean over the base view), max, mean (all views)
    latents: Any = None              # None / "all", "0:5000", [3, 17], "3,17,40:50", or a file of ids
    batch_size: int = 32
    n_images: int | None = None      # first n dataset samples (None: all)
    checkpoint_every: int = 2048     # images between checkpoints
    hookpoint: str | None = None     # default: the run's first hookpoint
    sae_path: str | None = None      # an SAE folder (cfg.json + sae.safetensors) instead of the run's sae/
    prompt: str | None = None        # default: each sample's prompt, else the model's default
    shard_index: int | None = None   # this process's shard (default: torchrun's RANK)
    n_shards: int | None = None      # number of shards (default: torchrun's WORLD_SIZE)

    def __post_init__(self):  # checked when the config is read, before any stage runs
        if self.pooling not in POOLINGS:
            raise UserError(f"cache.pooling = {self.pooling!r}: use one of {', '.join(POOLINGS)}")
        if min(self.batch_size, self.checkpoint_every, self.n_top) < 1 or min(self.n_random, self.n_negatives) < 0:
            raise UserError("cache.batch_size, checkpoint_every and n_top must be at least 1; n_random and "
                            "n_negatives at least 0")


CLI_PARAMS = [
    click.Option(["--n-top"], type=int, help="Top images kept per latent (default 32)."),
    click.Option(["--pooling"], type=click.Choice(["base_mean", "max", "mean"]),
                 help="How an image's token activations rank it (default base_mean)."),
    click.Option(["--latents"], help="Latents to cache: all, 0:5000, 3,17,40:50, or a file of ids."),
    click.Option(["--n-images"], type=int, help="Cache only the first N dataset samples."),
    click.Option(["--batch-size"], type=int, help="Images per forward pass (default 32)."),
]


def units(ctx) -> list:
    """features.h5: made from the model, the dataset, the SAE (the run's sae/, or `sae_path`) and
    these options."""
    from lmmsae.fingerprint import path_fingerprint, without
    from lmmsae.plan import Unit

    c = ctx.config
    opts = ctx.stage_options("cache", Options)
    options = {"model": c.model.to_dict(), "dataset": c.dataset.to_dict(), "dtype": c.dtype, "seed": c.seed,
               "hookpoint": opts.hookpoint or c.hookpoints[0], "on_bad_sample": c.on_bad_sample,
               "cache": without(opts, "batch_size", "checkpoint_every", "shard_index", "n_shards")}
    if opts.sae_path:
        return [Unit("cache", artifacts.FEATURES, options,
                     external={"sae_path": path_fingerprint(opts.sae_path, "cache.sae_path")})]
    return [Unit("cache", artifacts.FEATURES, options, inputs=(artifacts.SAE_DIR,))]


def run(ctx) -> None:
    """Cache the run's SAE features; resume from the last checkpoint when interrupted."""
    opts = ctx.stage_options("cache", Options)
    (unit,) = ctx.units("cache")
    if not ctx.wants(unit):
        return
    rank, world = shard_of(opts)
    torchrun = "WORLD_SIZE" in os.environ and opts.n_shards is None
    device = ctx.config.device
    if world > 1 and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    model_comp, model_opts = ctx.component("model")
    adapter = model_comp.load()(model_opts, device=device, dtype=ctx.config.dtype)
    hookpoint = adapter.resolve_hookpoints([opts.hookpoint or ctx.config.hookpoints[0]])[0]
    sae, sae_identity = load_sae_for(ctx, hookpoint, opts.sae_path, device)
    dataset = ctx.build("dataset")
    check_options(opts, sae, hookpoint, adapter.d_model(hookpoint))
    if not torchrun or rank == 0:
        ctx.start(unit)
    if torchrun and world > 1:
        _barrier()
    attrs = {"hookpoint": hookpoint, "model": adapter.identity(), "sae": sae_identity,
             "dataset": {"name": ctx.config.dataset.name, **dataset.identity()}}
    out = ctx.run.file(artifacts.FEATURES if world == 1 else shard_paths(ctx.run.path, world)[rank])
    ctx.log("cache-start", hookpoint=hookpoint, shard=rank, shards=world, resume=out.exists())
    from lmmsae.loader import Policy

    policy = Policy(ctx.config.on_bad_sample, "cache", ctx.log)
    cache_features(adapter, sae, dataset, hookpoint, out, opts, seed=ctx.config.seed, shard=(rank, world),
                   attrs=attrs, policy=policy)
    if world == 1:
        ctx.finish(unit, hookpoint=hookpoint, skipped=len(policy.skipped))
    else:
        ctx.run.complete(_shard_unit(unit, ctx.run.path, out), hookpoint=hookpoint, shard=rank,
                         skipped=len(policy.skipped))
        merge_shards(ctx, unit, world, rank, torchrun)
    ctx.log("cache-done", path=artifacts.FEATURES, complete=unit.current)


def check(ctx) -> None:
    """Before any stage runs: the latents asked for against the SAE's width where it is known without
    loading anything (`sae_path`'s cfg.json, or the config's sae.n_latents)."""
    from lmmsae.cache.latents import parse_latents
    from lmmsae.jsonfile import read_json

    opts = ctx.stage_options("cache", Options)
    if opts.latents in (None, "all", []):
        return
    n_latents = int(getattr(ctx.component("sae")[1], "n_latents", 0) or 0) if ctx.config.sae.name else 0
    cfg = Path(opts.sae_path or "") / artifacts.SAE_CFG
    if opts.sae_path and cfg.is_file():
        read = read_json(cfg)
        n_latents = int(read.get("n_latents") or read.get("num_latents") or read.get("d_sae") or 0)
    if n_latents > 0:
        parse_latents(opts.latents, n_latents)


def check_options(options: Options, sae, hookpoint: str, width: int) -> None:
    """The SAE against the hookpoint, and the cache's latents against the SAE, before any work (a bad
    one is one line, and nothing is discarded)."""
    from lmmsae.cache.latents import parse_latents
    from lmmsae.saes.base import check_d_in

    check_d_in(sae, hookpoint, width)
    parse_latents(options.latents, int(sae.n_latents))


def _shard_unit(unit, run_path: Path, shard: Path):
    import dataclasses

    return dataclasses.replace(unit, path=str(Path(shard).relative_to(run_path)))


def merge_shards(ctx, unit, world: int, rank: int, torchrun: bool) -> None:
    """Under torchrun: wait for every rank, rank 0 merges. Shards started by hand: whichever finishes
    last (every shard complete with this fingerprint) merges."""
    from lmmsae.stores.features import merge

    paths = shard_paths(ctx.run.path, world)
    if torchrun:
        _barrier()
    done = all(ctx.run.is_current(str(p.relative_to(ctx.run.path)), unit.fingerprint) for p in paths)
    if done and (rank == 0 or not torchrun):
        merge(paths, ctx.run.file(artifacts.FEATURES))
        ctx.finish(unit, shards=world)
    elif not torchrun:
        ctx.log("cache-shard-done", shard=rank, shards=world, waiting_for="the other shards, then this merges")
    if torchrun:
        _barrier()


def shard_of(opts: Options) -> tuple[int, int]:
    world = opts.n_shards if opts.n_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
    rank = opts.shard_index if opts.shard_index is not None else int(os.environ.get("RANK", 0))
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"cache shard {rank} of {world} does not exist: use 0 <= shard_index < n_shards")
    return rank, world


def shard_paths(run_path: Path, world: int) -> list[Path]:
    return [Path(run_path) / f"{artifacts.FEATURE_SHARDS_DIR}/features-{r:03d}-of-{world:03d}.h5" for r in range(world)]


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous, balanced sample range of one shard."""
    return rank * n // world, (rank + 1) * n // world


def _barrier() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def load_sae_for(ctx, hookpoint: str, sae_path: str | None, device: str):
    """The SAE of `hookpoint`: from `sae_path`, else from the run's sae/ folder."""
    from lmmsae.saes import io

    if sae_path:
        sae = io.load_sae(sae_path, device=device)
        return sae, {"path": str(sae_path), "cfg": dict(sae.cfg)}
    saes = io.load_run_saes(ctx.run.path)
    if hookpoint not in saes:
        have = ", ".join(sorted(saes)) or "none"
        raise UserError(f"no SAE for hookpoint {hookpoint!r} in {ctx.run.path / artifacts.SAE_DIR} (found: {have}): "
                        f"run `lmmsae train` first, or pass -o cache.sae_path=DIR")
    sae = saes[hookpoint].to(device)
    return sae, {"path": str(ctx.run.file(f"{artifacts.SAE_DIR}/{hookpoint}")), "cfg": dict(sae.cfg)}


def cache_features(adapter, sae, dataset, hookpoint: str, out: str | Path, options: Options | None = None,
                   seed: int = 0, shard: tuple[int, int] = (0, 1), attrs: dict[str, Any] | None = None,
                   policy=None) -> Path:
    """Stream `dataset` (this shard's part) through `adapter` and `sae` at `hookpoint` into `out`.

    If `out` holds a checkpoint of the same cache, continue after its last image. Bad samples are
    skipped (listed in the file's `skipped` attribute) or stop, as `policy` says. Returns `out`."""
    import torch

    from lmmsae.cache.batches import encode_tokens, image_batch
    from lmmsae.cache.latents import parse_latents
    from lmmsae.cache.state import FeatureCache
    from lmmsae.loader import Policy, load_batches
    from lmmsae.progress import track
    from lmmsae.saes.base import check_d_in
    from lmmsae.stores.features import FeatureWriter, UnreadableFeatures, write_cache

    options = options or Options()
    out = Path(out)
    n = len(dataset) if options.n_images is None else min(int(options.n_images), len(dataset))
    start, stop = shard_range(n, *shard)
    check_d_in(sae, hookpoint, adapter.d_model(hookpoint))
    n_latents = sae.n_latents
    latent_ids = parse_latents(options.latents, n_latents)
    device = getattr(adapter, "device", "cpu")
    attrs = {**(attrs or {}), "hookpoint": hookpoint, "sample_range": [start, stop]}
    cache = FeatureCache(latent_ids, options.n_top, options.n_random, options.n_negatives, options.pooling,
                         seed, device=device)
    policy = policy if isinstance(policy, Policy) else Policy(policy or "skip", "cache")
    if out.exists():
        try:
            FeatureWriter(out).close()  # finishes a checkpoint a kill interrupted
        except UnreadableFeatures:  # the kill cut HDF5's own bookkeeping: this partial file cannot be continued
            print(f"[cache] the partial {out.name} was cut mid-write by the interruption: caching from the start",
                  file=sys.stderr, flush=True)
            out.unlink()
    if out.exists():
        cache, saved = _resume(out, cache, attrs, device)
        policy.skipped = list(saved.get("skipped") or [])
    subset = None if len(latent_ids) == n_latents else torch.as_tensor(latent_ids, dtype=torch.int64)
    at = start + cache.stats.n_images + len(policy.skipped)
    since = 0
    batches = range(at, stop, options.batch_size)
    with torch.no_grad():
        for a in track(batches, total=len(batches), description=f"cache {hookpoint}", unit="batches"):
            indices = list(range(a, min(a + options.batch_size, stop)))
            for loaded in load_batches(dataset, adapter, indices, len(indices), policy, options.prompt):
                if loaded.batch is None:
                    continue
                acts = adapter.forward(loaded.batch, [hookpoint])[hookpoint]
                pos, token, latent, value = encode_tokens(acts, loaded.batch.token_map, sae, subset)
                cache.add(image_batch(loaded.indices, loaded.samples, loaded.batch.token_map, pos, token, latent,
                                      value))
            since += len(indices)
            if since >= options.checkpoint_every:
                write_cache(cache, out, {**attrs, "skipped": policy.skipped, "complete": False})
                since = 0
    write_cache(cache, out, {**attrs, "skipped": policy.skipped, "complete": True})
    return out


RESUME_KEYS = ("hookpoint", "model", "sae", "dataset", "sample_range", "pooling", "n_top", "n_random",
               "n_negatives", "seed")


def _resume(out: Path, fresh, attrs: dict[str, Any], device):
    """The checkpoint at `out`, if it is of the same cache (else a UserError: never mix two caches)."""
    import json

    import numpy as np

    from lmmsae.stores.features import load_cache

    cache, saved = load_cache(out, device=device)
    expected = {**attrs, "pooling": fresh.pooling, "n_top": fresh.n_top, "n_random": fresh.n_random,
                "n_negatives": fresh.n_negatives, "seed": fresh.seed}
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731
    changed = [k for k in RESUME_KEYS if norm(saved.get(k)) != norm(expected.get(k))]
    if not np.array_equal(cache.latents.cpu().numpy(), fresh.latents.numpy()):
        changed.append("latents")
    if changed:
        raise UserError(f"{str(out)!r} holds a cache made with other settings ({', '.join(changed)}): "
                        f"delete it to start over, or use the settings it was made with")
    return cache, saved
