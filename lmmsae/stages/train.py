"""train: fit SAEs on collected activations (or straight from the model), one pass for all.

Writes, per hookpoint, `sae/<hookpoint>/{cfg.json, sae.safetensors}` (sparsify layout),
`sae/<hookpoint>/metrics.json` (each value with its definition) and checkpoints under
`sae/<hookpoint>/checkpoints/`; `train.variants` adds SAEs with other architectures or
hyperparameters trained on the same batches, saved under `sae/variants/<name>/<hookpoint>/`.
Interrupted training resumes from the latest checkpoint. Under `torchrun` (on an existing run,
`--resume`) the stage joins the process group, every rank trains on its share of each batch
(gradients all-reduced) and rank 0 writes.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import click

from lmmsae import artifacts
from lmmsae.errors import UserError
from lmmsae.trainer_options import TrainerOptions


DISTRIBUTED = True  # under torchrun every rank takes part (lmmsae.commands.common.run_stages)


@dataclass
class Options:
    source: str = "activations"       # activations (collect/activations.h5) or model (stream, store nothing)
    batch_size: int = 1024            # tokens per step (all ranks together under torchrun)
    epochs: int = 1                   # passes over activations.h5
    max_tokens: int | None = None     # stop after this many tokens (all ranks together)
    shuffle_buffer: int = 65536       # rows shuffled together when reading activations.h5
    lr: float = TrainerOptions.lr     # 0: 2e-4 / sqrt(n_latents / 2^14)
    warmup_steps: int = TrainerOptions.warmup_steps
    grad_clip: float = TrainerOptions.grad_clip
    dead_window_tokens: int = TrainerOptions.dead_window_tokens  # dead = no firing in this many training tokens (toy-sized)
    normalize_inputs: bool | None = None  # None: each architecture's preference (JumpReLU: yes), per SAE
    mixed_precision: bool = TrainerOptions.mixed_precision  # bf16 autocast on CUDA
    checkpoint_every: int = 100       # steps; 0: only at the end
    variants: list[dict] = field(default_factory=list)  # [{name, architecture?, <sae options>}]
    eval_tokens: int = 65536          # tokens of activations used for metrics.json
    eval_ce: bool = True              # CE/KL loss recovered by splicing into the model
    eval_samples: int = 64            # samples used for CE/KL
    ce_tokens: str = "answer"         # answer (caption tokens) or all
    model_batch_size: int = 16        # samples per model forward (streaming source, CE/KL)

    def __post_init__(self):
        """Checked when the config is read (before collect), not when training starts."""
        if self.source not in ("auto", "activations", "model"):
            raise UserError(f"train.source={self.source!r}: use auto, activations or model")
        if self.ce_tokens not in ("answer", "all"):
            raise UserError(f"train.ce_tokens={self.ce_tokens!r}: use answer or all")
        for name in ("batch_size", "epochs", "model_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"train.{name}={getattr(self, name)!r}: it must be >= 1")
        for name in ("shuffle_buffer", "checkpoint_every", "eval_tokens", "eval_samples"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name}={getattr(self, name)!r}: it must be >= 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"train.max_tokens={self.max_tokens!r}: it must be >= 1 (or unset for all)")
        trainer_options(self)  # lr, warmup_steps, grad_clip, dead_window_tokens


CLI_PARAMS = [
    click.Option(["--batch-size", "batch_size"], type=int, help="Tokens per training step."),
    click.Option(["--max-tokens", "max_tokens"], type=int, help="Stop after this many training tokens."),
    click.Option(["--source", "source"], type=click.Choice(["activations", "model"]),
                 help="Train from activations.h5 (made by collect) or straight from the model (collect is then skipped)."),
    click.Option(["--lr", "lr"], type=float, help="Adam learning rate (default: 2e-4/sqrt(n_latents/2^14))."),
]

CURVE_EVERY = 10   # steps between training-curve points (sae/<hookpoint>/curve.jsonl)
EVENT_EVERY = 50   # steps between train-progress events


def trainer_options(options: Options) -> TrainerOptions:
    """The trainer's share of the stage's options (validated there: a bad lr is one line, early)."""
    return TrainerOptions(lr=options.lr, warmup_steps=options.warmup_steps, grad_clip=options.grad_clip,
                          dead_window_tokens=options.dead_window_tokens, mixed_precision=options.mixed_precision,
                          log_every=CURVE_EVERY)


def source(ctx, opts: Options) -> str:
    """Where training data comes from ("auto", an older spelling, means activations.h5)."""
    return "activations" if opts.source == "auto" else opts.source


def units(ctx) -> list:
    """sae/: one folder per hookpoint (and per variant), made from the activations (or the model
    stream), the SAE config and these options; CE/KL evaluation also reads the model and dataset."""
    from lmmsae.fingerprint import without
    from lmmsae.plan import Unit

    c = ctx.config
    opts = ctx.stage_options("train", Options)
    src = source(ctx, opts)
    options = {"sae": c.sae.to_dict(), "hookpoints": list(c.hookpoints), "seed": c.seed, "source": src,
               "train": without(opts, "checkpoint_every", "model_batch_size", "source")}
    if src == "model" or opts.eval_ce:
        options.update(model=c.model.to_dict(), dataset=c.dataset.to_dict(), dtype=c.dtype)
    inputs = (artifacts.ACTIVATIONS,) if src == "activations" else ()
    return [Unit("train", artifacts.SAE_DIR, options, inputs=inputs)]


def run(ctx) -> None:
    opts = ctx.stage_options("train", Options)
    from lmmsae.trainer import init_distributed, shutdown_distributed, world

    (unit,) = ctx.units("train")
    if not ctx.wants(unit):
        return
    device = init_distributed(ctx.config.device)  # under torchrun: join the group (gloo / nccl)
    try:
        rank, size = world()
        _run(ctx, unit, opts, device, rank, size)
    finally:
        shutdown_distributed()


def _run(ctx, unit, opts: Options, device: str, rank: int, size: int) -> None:
    comp, sae_options = ctx.component("sae")
    use_activations = source(ctx, opts) == "activations"
    reader = adapter = None
    if use_activations:
        from lmmsae.stores.activations import ActivationReader

        reader = ActivationReader(ctx.run.file(artifacts.ACTIVATIONS))
        hookpoints = [reader.resolve(h) for h in ctx.config.hookpoints]
        dims = {h: reader.d_in(h) for h in hookpoints}
    else:
        adapter = ctx.build("model")
        hookpoints = adapter.resolve_hookpoints(ctx.config.hookpoints)
        dims = {h: adapter.d_model(h) for h in hookpoints}
    log = ctx.log if rank == 0 else _quiet  # rank 0 writes the run's events and files
    specs = sae_specs(ctx.config.sae.name, sae_options, opts.variants)
    check_specs(specs, dims)
    if rank == 0:
        ctx.start(unit)
    if size > 1:
        import torch.distributed as dist

        dist.barrier()  # nobody reads checkpoints rank 0 may still be discarding
    root = ctx.run.file(artifacts.SAE_DIR)
    log("train-start", hookpoints=hookpoints, saes=[s.name for s in specs],
        source="activations" if reader else "model", world_size=size)
    seed = ctx.config.seed
    if reader is not None:  # every rank reads the same global batches and trains on its share
        batches = lambda cursor: reader_batches(reader, hookpoints, opts, seed, cursor)  # noqa: E731
    else:  # every rank runs the model on its own samples
        dataset = ctx.build("dataset")
        batches = lambda cursor: model_batches(adapter, dataset, hookpoints, opts, rank, size, cursor)  # noqa: E731
    steps = opts.epochs * (reader.n_tokens // opts.batch_size) if reader is not None else None
    result = train(batches, dims, specs, root, opts, device=device, log=log, per_rank=reader is None,
                   total_steps=steps)
    if rank != 0:
        return
    for hookpoint in hookpoints:
        metrics = result[hookpoint]
        metrics["evaluation"] = evaluate_saved(root / hookpoint, hookpoint, reader, opts)
        if opts.eval_ce:
            metrics["splice"] = _splice_metrics(ctx, adapter, root / hookpoint, hookpoint, opts, metrics)
        write_metrics(root / hookpoint, metrics)
        warning = sparsity_warning(metrics, json.loads((root / hookpoint / artifacts.SAE_CFG).read_text()))
        if warning:
            print(f"[train] warning: {hookpoint}: {warning}", file=sys.stderr, flush=True)
            ctx.log("train-warning", hookpoint=hookpoint, message=warning)
    ctx.finish(unit, hookpoints=hookpoints, tokens=result[hookpoints[0]]["training"]["tokens"])
    ctx.log("train-done", hookpoints=hookpoints)


DENSE_FRACTION = 0.1  # an L0 above this share of the latents is not a sparse code


def sparsity_warning(metrics: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    """One line when the trained SAE is not sparse as intended, else None.

    With a `k` (TopK family) the mean L0 should be near k: below k/2 many chosen latents are zero
    (dead or negative pre-activations), above 2k (BatchTopK's threshold at inference) it fires far
    more than trained for. Otherwise (L1 / L0 penalties) an L0 above 10% of the latents means the
    penalty is too weak: features that fire on most tokens are rarely interpretable."""
    evaluation = metrics.get("evaluation") or {}
    l0 = (evaluation.get("l0") or {}).get("value") if "l0" in evaluation else \
        (metrics.get("training", {}).get("last_batch") or {}).get("l0")
    n, k = cfg.get("n_latents"), cfg.get("k")
    if l0 is None or not n:
        return None
    if k and not k / 2 <= l0 <= 2 * k:
        return (f"L0 = {l0:.1f} per token for k = {k} (outside k/2..2k): check the dead fraction, or retrain "
                f"with another k")
    if not k and l0 > DENSE_FRACTION * n:
        return (f"L0 = {l0:.1f} of {n} latents per token ({100 * l0 / n:.0f}% > {100 * DENSE_FRACTION:.0f}%): "
                f"not a sparse code; raise the sparsity penalty (-o sae.l1_coefficient / sae.l0_coefficient)")
    return None


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0: rank 0 writes the run's events."""


class _NullStream:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@dataclass
class SAESpec:
    """One SAE to train per hookpoint: its name (folder), architecture and options."""

    name: str
    architecture: str
    options: Any
    folder: str = ""  # relative to sae/; "" for the main SAE


def check_specs(specs: list[SAESpec], dims: dict[str, int]) -> None:
    """Every SAE to train, built without memory (on torch's meta device) at every hookpoint's width,
    so a k larger than the latents it ends up with fails before any output is touched."""
    from lmmsae import plugins

    for spec in specs:
        cls = plugins.get("saes", spec.architecture).load()
        for d in dict.fromkeys(dims.values()):
            cls(d, spec.options, device="meta")


def sae_specs(architecture: str, options: Any, variants: list[dict]) -> list[SAESpec]:
    from lmmsae import plugins

    specs = [SAESpec("main", architecture, options)]
    for i, variant in enumerate(variants):
        if not isinstance(variant, dict):
            raise UserError(f"train.variants[{i}] must be a mapping like {{name: k16, k: 16}}")
        values = dict(variant)
        name = str(values.pop("name", f"variant{i}"))
        arch = str(values.pop("architecture", architecture))
        base = dict(options.__dict__) if arch == architecture else {}
        comp = plugins.get("saes", arch)
        specs.append(SAESpec(name, arch, comp.options({**base, **values}), f"variants/{name}/"))
    if len({s.name for s in specs}) != len(specs):
        raise UserError(f"train.variants names must be unique and not 'main': {[s.name for s in specs]}")
    return specs


def train(batches: Callable[[Any], Iterable[tuple[dict, Any]]], dims: dict[str, int], specs: list[SAESpec],
          root: Path, options: Options, device: str = "cpu", log: Callable[..., None] | None = None,
          resume: bool = True, per_rank: bool = False, total_steps: int | None = None) -> dict[str, dict]:
    """Train every spec on every hookpoint in one pass over `batches(cursor)`; save the SAEs under
    root/[folder]<hookpoint>/ and return training summaries per hookpoint (main SAE).

    `batches(cursor)` yields (batch, cursor after it) from where `cursor` says (None: the start);
    checkpoints keep the cursor, so a resume continues the data where it stopped instead of
    replaying (and, streaming from the model, recomputing) every batch already trained on.
    Under torch.distributed `batches` yields the global batches (every rank the same ones, of
    `batch_size` tokens) and each rank trains on its contiguous share, so the result equals one
    process; with `per_rank`, it already yields this rank's share (its own data, its own cursor).
    Either way training stops, on every rank, when any rank's batches end. `total_steps`, when the
    data's size is known, gives the progress bar its total."""
    from lmmsae import plugins
    from lmmsae.progress import track
    from lmmsae.saes.io import save_sae
    from lmmsae.trainer import Entry, Trainer, world

    root = Path(root)
    entries = []
    for spec in specs:
        cls = plugins.get("saes", spec.architecture).load()
        normalize = cls.normalize_inputs_by_default if options.normalize_inputs is None else options.normalize_inputs
        for hookpoint, d in dims.items():
            entries.append(Entry(f"{spec.folder}{hookpoint}", hookpoint, cls(d, spec.options),
                                 normalize_inputs=bool(normalize)))
    trainer = Trainer(entries, trainer_options(options), device=device)
    checkpoints = lambda e: root / e.name / artifacts.SAE_CHECKPOINTS  # noqa: E731
    resumed = resume and trainer.load_checkpoint(checkpoints)
    if resumed and log:
        log("train-resume", step=trainer.step_count, tokens=trainer.tokens)
    rank, size = world()
    cursor = trainer.data_cursor if resumed else None
    if resumed and cursor is None:
        raise UserError(f"the checkpoints under {root} keep no data position (made by an older lmmsae): delete "
                        f"the checkpoints/ folders to restart training")
    if per_rank and size > 1 and cursor is not None:
        cursor = cursor[rank]
    source = stream = Cursor(batches(cursor))
    if size > 1:
        from lmmsae.trainer import shard

        if not per_rank:
            stream = (shard(b, rank, size) for b in stream)
        stream = _while_every_rank_has_data(stream, trainer.device)
    max_steps = None
    if options.max_tokens:
        max_steps = -(-options.max_tokens // options.batch_size)
    known = [s for s in (max_steps, total_steps) if s is not None]
    total = max(0, min(known) - trainer.step_count) if known else None
    t0, tokens0 = time.perf_counter(), trainer.tokens
    if rank == 0 and not resumed:
        for entry in trainer.entries:  # a fresh start: points of an earlier, discarded attempt go
            (root / entry.name / artifacts.SAE_CURVE).unlink(missing_ok=True)

    def say(message: str) -> None:  # every CURVE_EVERY steps: a curve point; every EVENT_EVERY: an event
        if rank == 0:
            append_curve(root, trainer)
        if log and trainer.step_count % EVENT_EVERY == 0:
            log("train-progress", message=message)

    def checkpoint(t) -> None:
        t.save_checkpoint(checkpoints, data_cursor=_gathered(source.position) if per_rank and size > 1
                          else source.position)

    trainer.fit(track(stream, total=total,
                      description="train", unit="steps", stream=None if rank == 0 else _NullStream()),
                max_steps=max_steps, checkpoint=checkpoint, checkpoint_every=options.checkpoint_every, log=say)
    if trainer.step_count == 0:
        raise UserError(f"no training step: the activations (or dataset) hold fewer tokens than one step of "
                        f"train.batch_size={options.batch_size}: use more images, or lower -o train.batch_size")
    checkpoint(trainer)
    elapsed = time.perf_counter() - t0
    out: dict[str, dict] = {}
    if rank != 0:
        return out
    saes = trainer.inference_saes()
    for entry in trainer.entries:
        save_sae(saes[entry.name], root / entry.name)
        summary = {"training": {"tokens": trainer.tokens, "steps": trainer.step_count, "seconds": round(elapsed, 3),
                                "tokens_per_s": round((trainer.tokens - tokens0) / max(elapsed, 1e-9), 1),
                                "world_size": size, "lr": entry.lr, "resumed": bool(resumed),
                                "input_scale": entry.input_scale, "last_batch": entry.last,
                                "dead_window_tokens": options.dead_window_tokens,
                                "dead_fraction_training": {
                                    "value": float((entry.tokens_since_fired >= options.dead_window_tokens).float().mean()),
                                    "definition": f"fraction of latents that did not fire in the last "
                                                  f"{options.dead_window_tokens} training tokens"}}}
        if entry.name in dims:
            out[entry.name] = summary
        else:
            write_metrics(root / entry.name, summary)
    return out


def append_curve(root: Path, trainer) -> None:
    """One point per SAE on sae/<name>/curve.jsonl: step, tokens and the step's loss terms, FVU, L0 and
    dead fraction (the report plots them; a resumed run may repeat steps: readers keep the last)."""
    from lmmsae.jsonl import dumps

    for entry in trainer.entries:
        path = root / entry.name / artifacts.SAE_CURVE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(dumps({"step": trainer.step_count, "tokens": trainer.tokens, **(entry.last or {})}) + "\n")


class Cursor:
    """Batches from (batch, cursor) pairs; `position` is the cursor after the last batch handed out."""

    def __init__(self, pairs: Iterable[tuple[dict, Any]]):
        self.pairs = iter(pairs)
        self.position: Any = None

    def __iter__(self):
        for batch, position in self.pairs:
            self.position = position
            yield batch


def _gathered(position: Any) -> list:
    """Every rank's position (rank order), for rank 0 to save."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, position)
    return out


def _while_every_rank_has_data(stream: Iterable[dict], device) -> Iterator[dict]:
    """Yield batches while every rank still has one (each step is a collective: no rank may stop alone)."""
    import torch
    import torch.distributed as dist

    for batch in itertools.chain(stream, [None]):
        flag = torch.tensor([0 if batch is None else 1], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if not int(flag):
            return
        yield batch


def reader_batches(reader, hookpoints: list[str], options: Options, seed: int,
                   cursor: dict | None = None) -> Iterator[tuple[dict, dict]]:
    """Shuffled batches of every hookpoint, epoch after epoch (same seed for every hookpoint), each
    with the cursor after it: {"epoch", "rows" consumed in that epoch's shuffled order}."""
    first, skip = (int(cursor["epoch"]), int(cursor["rows"])) if cursor else (0, 0)
    for epoch in range(first, options.epochs):
        start = skip if epoch == first else 0
        iters = [reader.iter_batches(h, options.batch_size, options.shuffle_buffer, seed + epoch, drop_last=True,
                                     start_row=start) for h in hookpoints]
        for i, tensors in enumerate(zip(*iters), 1):
            yield dict(zip(hookpoints, tensors)), {"epoch": epoch, "rows": start + i * options.batch_size}


def model_batches(adapter, dataset, hookpoints: list[str], options: Options, rank: int = 0,
                  world_size: int = 1, cursor: dict | None = None) -> Iterator[tuple[dict, dict]]:
    """Activations straight from the model, regrouped into fixed-size token batches, each with the
    cursor after it: {"chunk": the first sample of the oldest model batch with rows not yet
    trained on, "skip": how many of that batch's (and its successors') rows were}. Resuming there
    recomputes at most the partial batch that was carried over, never what was trained on.

    With world_size > 1, rank r runs the model on every world_size-th group of `model_batch_size`
    samples (starting with group r) and yields its share of each step's `batch_size` tokens."""
    import collections

    import torch

    from lmmsae.stages.collect import stream_activations

    size = len(range(rank, options.batch_size, world_size)) if world_size > 1 else options.batch_size
    if size == 0:
        raise UserError(f"train.batch_size={options.batch_size} is smaller than the {world_size} ranks")
    step = options.model_batch_size
    starts = list(range(rank * step if world_size > 1 else 0, len(dataset), world_size * step))
    first, skip = (int(cursor["chunk"]), int(cursor["skip"])) if cursor else (starts[0] if starts else 0, 0)
    carry: dict[str, Any] = {}
    held: collections.deque = collections.deque()  # [chunk start, its rows, rows of it trained on]
    for i, start in enumerate(s for s in starts if s >= first):
        dropped = skip if i == 0 else 0  # rows of the first chunk a resumed run has trained on already
        total = 0
        for acts, _tokens in stream_activations(adapter, dataset, hookpoints, batch_size=step, start=start,
                                                stop=start + step):
            n = int(acts[hookpoints[0]].shape[0])
            cut = min(max(dropped - total, 0), n)
            for h in hookpoints:
                x = torch.as_tensor(acts[h]).float()[cut:]
                carry[h] = torch.cat([carry[h], x]) if h in carry else x
            total += n
        if total > dropped:
            held.append([start, total, dropped])
        while carry and carry[hookpoints[0]].shape[0] >= size:
            batch = {h: carry[h][:size] for h in hookpoints}
            carry = {h: carry[h][size:] for h in hookpoints}
            left = size
            while left:
                take = min(left, held[0][1] - held[0][2])
                held[0][2] += take
                left -= take
                if held[0][2] == held[0][1]:
                    held.popleft()
            if held:
                position = {"chunk": held[0][0], "skip": held[0][2]}
            else:
                later = [c for c in starts if c > start]
                position = {"chunk": later[0] if later else len(dataset), "skip": 0}
            yield batch, position


def evaluate_saved(folder: Path, hookpoint: str, reader, options: Options) -> dict[str, Any]:
    """metrics.json's reconstruction metrics for the saved SAE, on the first eval_tokens tokens
    of activations.h5 (these tokens were also seen in training), per token kind too."""
    import torch

    from lmmsae.metrics import ReconstructionStats
    from lmmsae.models.base import TokenKind
    from lmmsae.saes.io import load_sae

    if reader is None:
        return {"note": "trained from the model stream; no stored activations to evaluate on"}
    sae = load_sae(folder)
    stats = ReconstructionStats(sae.n_latents, kind_names={int(k): k.name.lower() for k in TokenKind})
    from lmmsae.progress import track

    n = min(options.eval_tokens, reader.n_tokens)
    step = 4096
    with torch.no_grad():
        for start in track(range(0, n, step), description=f"evaluate {hookpoint}", unit="chunks"):
            x = torch.from_numpy(reader.read(hookpoint, start, min(start + step, n)))
            kinds = torch.from_numpy(reader.tokens(start, min(start + step, n))["kind"].astype("int64"))
            z = sae.encode(x)
            stats.update(x, sae.decode(z), z, kinds)
    out = stats.results()
    out["window"] = f"first {n} tokens of {artifacts.ACTIVATIONS} (also used in training)"
    return out


def _splice_metrics(ctx, adapter, folder: Path, hookpoint: str, options: Options, metrics: dict) -> dict[str, Any]:
    """CE/KL loss recovered with zero and mean ablation, on the first eval_samples samples."""
    import torch

    from lmmsae.datasets.base import Sample
    from lmmsae.metrics import ce_kl_recovered
    from lmmsae.progress import track
    from lmmsae.saes.io import load_sae

    if adapter is None:
        adapter = ctx.build("model")
    dataset = ctx.build("dataset")
    n = min(options.eval_samples, len(dataset))
    samples = []
    tokens = options.ce_tokens
    for i in range(n):
        s = dataset.sample(i)
        caption = (s.truth or {}).get("caption")
        if tokens == "answer" and not caption:
            tokens = "all"
        text = f"{s.prompt or '<image>'} {caption}" if caption else s.prompt
        samples.append(Sample(s.id, s.image, text, s.truth))
    batches = [adapter.prepare(samples[i:i + options.model_batch_size])
               for i in range(0, n, options.model_batch_size)]
    sae = load_sae(folder, device=adapter.device)
    out = {"samples": n}
    mean = None
    evaluation = metrics.get("evaluation") or {}
    trained_on = sorted(evaluation.get("by_token_kind") or {}) or None
    if "n_tokens" in evaluation and evaluation["n_tokens"]:
        mean = _mean_activation(ctx, hookpoint, options)
    for ablation in ("zero", "mean"):
        if ablation == "mean" and mean is None:
            out["mean"] = {"note": "no stored activations to take the mean from"}
            continue
        out[ablation] = ce_kl_recovered(
            adapter, sae, hookpoint, batches, tokens=tokens, ablation=ablation,
            mean_activation=None if mean is None else torch.as_tensor(mean), token_kinds=trained_on,
            progress=lambda b, a=ablation: track(b, description=f"CE/KL {a} ablation", unit="batches"))
    return out


def _mean_activation(ctx, hookpoint: str, options: Options):
    from lmmsae.stores.activations import ActivationReader

    with ActivationReader(ctx.run.file(artifacts.ACTIVATIONS)) as reader:
        n = min(options.eval_tokens, reader.n_tokens)
        return reader.read(hookpoint, 0, n).astype("float64").mean(0)


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    from lmmsae.atomic import atomic_write_text

    atomic_write_text(Path(folder) / artifacts.SAE_METRICS, json.dumps(metrics, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
