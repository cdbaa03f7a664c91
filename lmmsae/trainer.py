"""One trainer for every SAE architecture, and for several SAEs at once.

`Trainer.step(batch)` takes `{hookpoint: Tensor[N, d]}` and updates every SAE registered for
those hookpoints (different architectures or hyperparameters share one pass over the data).
Under torch.distributed (torchrun; `init_distributed` joins the group) each rank feeds its own
share of every batch; the first batch (for b_dec and the input scale), the variance denominator,
gradients (summed, so the result equals one process on the concatenated batch), firing counts,
thresholds and the logged loss terms are all-reduced, and rank 0 writes checkpoints.

Checkpoints hold tensors in safetensors and scalars in JSON (no pickle):
  <dir>/step-<n>/{sae.safetensors, cfg.json, trainer.safetensors, state.json}, <dir>/latest.json
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from lmmsae.atomic import atomic_write_text
from lmmsae.errors import UserError
from lmmsae.jsonfile import read_json
from lmmsae.saes.base import SAE, BatchContext
from lmmsae.saes.init import expected_norm_scale, init_b_dec
from lmmsae.trainer_options import TrainerOptions


def default_lr(n_latents: int) -> float:
    """2e-4 / sqrt(n_latents / 2^14), the TopK paper's rule of thumb for Adam."""
    return 2e-4 / math.sqrt(n_latents / 2**14)


@dataclass
class Entry:
    """One SAE in training: where it reads, what it is, and its optimiser state."""

    name: str
    hookpoint: str
    sae: SAE
    lr: float = 0.0
    optimizer: torch.optim.Optimizer | None = None
    tokens_since_fired: Tensor | None = None
    input_scale: float = 1.0
    normalize_inputs: bool | None = None  # scale inputs to E||x||^2 = d_in; None: TrainerOptions'
    initialised: bool = False
    last: dict[str, float] = field(default_factory=dict)


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world() -> tuple[int, int]:
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)


_OWN_GROUP = False


def init_distributed(device: str = "cpu") -> str:
    """Under torchrun (WORLD_SIZE > 1 in the environment) join the process group, unless one is
    already initialised: gloo for a CPU device, nccl for CUDA. Returns this rank's device
    ("cuda" becomes cuda:<LOCAL_RANK>). A no-op returning `device` for a single process."""
    global _OWN_GROUP
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return device
    import torch.distributed as dist

    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed: run one process")
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        _OWN_GROUP = True
    return str(dev)


def join_group(device: str = "cpu") -> str:
    """`init_distributed` for a whole command under torchrun: the group lives until the process
    ends, so the stages' `shutdown_distributed` leaves it alone (no tear-down and re-rendezvous
    between stages)."""
    global _OWN_GROUP
    device = init_distributed(device)
    _OWN_GROUP = False
    return device


def shutdown_distributed() -> None:
    """Destroy the process group if `init_distributed` created it."""
    global _OWN_GROUP
    dist = _dist()
    if _OWN_GROUP and dist:
        dist.destroy_process_group()
    _OWN_GROUP = False


def shard(batch: dict[str, Tensor], rank: int, size: int) -> dict[str, Tensor]:
    """Rank `rank`'s contiguous share of a global batch (shares differ by at most one row)."""
    return {h: torch.tensor_split(x, size)[rank] for h, x in batch.items()}


class Trainer:
    def __init__(self, entries: list[Entry], options: TrainerOptions | None = None,
                 device: str | torch.device = "cpu"):
        if not entries:
            raise UserError("nothing to train: no SAE given")
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise UserError(f"SAE names must be unique, got {names}")
        self.options = options or TrainerOptions()
        self.device = torch.device(device)
        self.entries = entries
        self.step_count = 0
        self.tokens = 0
        self.data_cursor: Any = None  # where the data stream stood at the loaded checkpoint
        for entry in entries:
            entry.sae.to(self.device).train()
            entry.lr = self.options.lr or default_lr(entry.sae.n_latents)
            entry.optimizer = _adam(entry.sae, entry.lr, self.options.betas, self.device)
            entry.tokens_since_fired = torch.zeros(entry.sae.n_latents, dtype=torch.long, device=self.device)

    @property
    def hookpoints(self) -> list[str]:
        return sorted({e.hookpoint for e in self.entries})

    # ---- one step ------------------------------------------------------------------------
    def step(self, batch: dict[str, Tensor]) -> dict[str, dict[str, float]]:
        missing = [h for h in self.hookpoints if h not in batch]
        if missing:
            raise UserError(f"batch lacks hookpoint(s) {missing}")
        out = {}
        n_global = None
        for hookpoint in self.hookpoints:
            x = batch[hookpoint].to(self.device, torch.float32, non_blocking=True)
            if not bool(torch.isfinite(x).all()):
                rows = (~torch.isfinite(x).all(dim=1)).nonzero().flatten().tolist()
                raise UserError(f"training data for {hookpoint!r} holds NaN or Inf (step {self.step_count + 1}, "
                                f"{len(rows)} of its {x.shape[0]} rows): the activations are corrupt; "
                                f"collect them again")
            entries = [e for e in self.entries if e.hookpoint == hookpoint]
            for entry in entries:
                if entry.sae.d_in != x.shape[-1]:
                    raise UserError(f"SAE {entry.name!r} has d_in={entry.sae.d_in} but hookpoint {hookpoint!r} "
                                    f"gives width {x.shape[-1]}")
                if not entry.initialised:
                    self._initialise(entry, x)
            for entry in entries:
                xs = x * entry.input_scale if entry.input_scale != 1.0 else x
                total_variance, n_global = _global_variance(xs)
                out[entry.name] = self._update(entry, xs, total_variance, n_global)
        self.step_count += 1
        self.tokens += int(n_global or 0)
        return out

    def _initialise(self, entry: Entry, x: Tensor) -> None:
        """b_dec from the first batch (geometric median by default), input scale if asked;
        computed on rank 0 from the whole global batch (gathered from every rank) and broadcast,
        so every rank starts identical, and as one process on the concatenated batch would."""
        sae = entry.sae
        dist = _dist()
        if dist:
            x = _all_gather_rows(x, dist)
        normalize = self.options.normalize_inputs if entry.normalize_inputs is None else entry.normalize_inputs
        if normalize:
            entry.input_scale = expected_norm_scale(x)
        init_b_dec(sae, x * entry.input_scale)
        if dist:
            scale = torch.tensor([entry.input_scale], dtype=torch.float64, device=self.device)
            dist.broadcast(scale, 0)
            entry.input_scale = float(scale)
            for p in sae.state_dict().values():
                dist.broadcast(p, 0)
        entry.initialised = True

    def _update(self, entry: Entry, x: Tensor, total_variance: Tensor, n_global: int) -> dict[str, float]:
        sae, opt = entry.sae, entry.optimizer
        dead = entry.tokens_since_fired >= self.options.dead_window_tokens
        context = BatchContext(total_variance, n_global, dead, self.step_count)
        autocast = self.options.mixed_precision and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            result = sae.training_loss(x, context)
        if not bool(torch.isfinite(result.loss.detach())):
            raise UserError(f"SAE {entry.name!r} diverged at step {self.step_count + 1} (loss "
                            f"{float(result.loss.detach()):.4g}): lower train.lr (now {entry.lr:.3g}) and train again")
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        fired = result.fired.to(torch.long)
        dist = _dist()
        if dist:
            _all_reduce_grads(sae, dist)
            dist.all_reduce(fired)
        sae.before_step()
        if self.options.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), self.options.grad_clip)
        warm = min(1.0, (self.step_count + 1) / max(self.options.warmup_steps, 1))
        for group in opt.param_groups:
            group["lr"] = entry.lr * warm
        opt.step()
        sae.after_step()
        if dist:
            for t in sae.distributed_state():
                dist.all_reduce(t)
                t.div_(dist.get_world_size())
        entry.tokens_since_fired += n_global
        entry.tokens_since_fired[fired > 0] = 0
        terms = {k: result.terms[k].detach().double().reshape(()) for k in sorted(result.terms)}
        terms["loss"] = result.loss.detach().double().reshape(())
        l0 = result.l0.detach().double().reshape(())
        if dist:  # loss terms are sums over this rank's tokens over global denominators: add them up
            packed = torch.stack([*terms.values(), l0 * x.shape[0] if x.shape[0] else torch.zeros_like(l0)])
            dist.all_reduce(packed)
            terms = dict(zip(terms, packed[:-1]))
            l0 = packed[-1] / n_global
        stats = {k: float(v) for k, v in terms.items()}
        stats["l0"] = float(l0)
        stats["dead_fraction"] = float(dead.float().mean())
        entry.last = stats
        return stats

    # ---- loops -----------------------------------------------------------------------------
    def fit(self, batches: Iterable[dict[str, Tensor]], max_steps: int | None = None,
            checkpoint: Callable[["Trainer"], None] | None = None, checkpoint_every: int = 0,
            log: Callable[[str], None] | None = None) -> None:
        """Train until `batches` ends or `max_steps` (counted from step 0, so resuming continues)."""
        for batch in batches:
            if max_steps is not None and self.step_count >= max_steps:
                break
            stats = self.step(batch)
            if log and self.options.log_every and self.step_count % self.options.log_every == 0:
                log(self.describe(stats))
            if checkpoint and checkpoint_every and self.step_count % checkpoint_every == 0:
                checkpoint(self)

    def describe(self, stats: dict[str, dict[str, float]]) -> str:
        parts = [f"step {self.step_count}", f"{self.tokens} tokens"]
        for name, s in stats.items():
            parts.append(f"{name}: fvu {s.get('fvu', float('nan')):.4f} l0 {s['l0']:.1f} dead {s['dead_fraction']:.3f}")
        return " | ".join(parts)

    def inference_saes(self) -> dict[str, SAE]:
        """{name: SAE} ready to save: inference form, input scale folded into the weights."""
        from lmmsae.saes.io import fold_input_scale

        out = {}
        for entry in self.entries:
            sae = fold_input_scale(entry.sae.inference_sae(), entry.input_scale)
            out[entry.name] = sae.eval()
        return out

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, root_for: Callable[[Entry], Path], keep: int = 1, data_cursor: Any = None) -> None:
        """Write every entry's checkpoint under root_for(entry) (rank 0 only), then point
        latest.json at it; older step folders beyond `keep` are removed. `data_cursor` (JSON) says
        where the data stream stands, so a resume continues there instead of replaying it."""
        if world()[0] != 0:
            return
        for entry in self.entries:
            root = Path(root_for(entry))
            folder = root / f"step-{self.step_count}"
            tmp = root / f".tmp-step-{self.step_count}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            self._write_entry(entry, tmp, data_cursor)
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
            atomic_write_text(root / "latest.json", json.dumps({"step": self.step_count, "folder": folder.name}) + "\n")
            steps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("step-*") if p.is_dir())
            for _, old in steps[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)

    def _write_entry(self, entry: Entry, folder: Path, data_cursor: Any = None) -> None:
        from safetensors.torch import save_file

        sae = entry.sae
        save_file({k: v.detach().cpu().contiguous() for k, v in sae.export_tensors().items()},
                  str(folder / "sae.safetensors"))
        (folder / "cfg.json").write_text(json.dumps(sae.cfg, indent=2) + "\n")
        names = {id(p): n for n, p in sae.named_parameters()}
        tensors = {"tokens_since_fired": entry.tokens_since_fired.cpu()}
        for p, state in entry.optimizer.state.items():
            for key, value in state.items():
                tensors[f"optimizer.{names[id(p)]}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        save_file(tensors, str(folder / "trainer.safetensors"))
        state = {"step": self.step_count, "tokens": self.tokens, "name": entry.name, "hookpoint": entry.hookpoint,
                 "input_scale": entry.input_scale, "initialised": entry.initialised, "lr": entry.lr,
                 "last_batch": entry.last, "trainer_options": asdict(self.options), "data_cursor": data_cursor}
        (folder / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    def load_checkpoint(self, root_for: Callable[[Entry], Path]) -> bool:
        """Resume every entry from its latest checkpoint; False when there is none for any.
        All entries must be at the same step (they are saved together)."""
        folders = {}
        for entry in self.entries:
            latest = Path(root_for(entry)) / "latest.json"
            if not latest.is_file():
                return False
            pointer = read_json(latest)
            if not isinstance(pointer.get("folder"), str):
                raise UserError(f"{latest} names no checkpoint folder: delete the checkpoints/ folder to restart training")
            folders[entry.name] = latest.parent / pointer["folder"]
        steps = set()
        for entry in self.entries:
            steps.add(self._read_entry(entry, folders[entry.name]))
        if len(steps) != 1:
            raise UserError(f"checkpoints are at different steps {sorted(steps)}: delete the checkpoints/ folders "
                            f"to restart training")
        return True

    def _read_entry(self, entry: Entry, folder: Path) -> int:
        from safetensors.torch import load_file

        try:
            state = json.loads((folder / "state.json").read_text())
            weights = load_file(str(folder / "sae.safetensors"), device="cpu")
            extra = load_file(str(folder / "trainer.safetensors"), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any unreadable file means the same thing here
            raise UserError(f"checkpoint {folder} is unreadable ({type(exc).__name__}: {exc}); "
                            f"delete it to restart training") from None
        entry.sae.import_tensors(weights)
        entry.sae.to(self.device)
        entry.input_scale = float(state["input_scale"])
        entry.last = dict(state.get("last_batch") or {})
        entry.initialised = bool(state["initialised"])
        entry.tokens_since_fired = extra["tokens_since_fired"].to(self.device)
        params = dict(entry.sae.named_parameters())
        entry.optimizer = _adam(entry.sae, entry.lr, self.options.betas, self.device)
        for key, value in extra.items():
            if not key.startswith("optimizer."):
                continue
            pname, _, skey = key[len("optimizer."):].rpartition(".")
            entry.optimizer.state[params[pname]][skey] = value.to(self.device)
        self.step_count = int(state["step"])
        self.tokens = int(state["tokens"])
        self.data_cursor = state.get("data_cursor")
        return self.step_count


def _adam(sae: SAE, lr: float, betas, device: torch.device) -> torch.optim.Optimizer:
    kwargs: dict[str, Any] = {"lr": lr, "betas": tuple(betas), "eps": 1e-8}
    try:
        return torch.optim.Adam(sae.parameters(), fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(sae.parameters(), foreach=True, **kwargs)


def _global_variance(x: Tensor) -> tuple[Tensor, int]:
    """sum_t ||x_t - mean||^2 over the global batch (all ranks), and its token count."""
    dist = _dist()
    if not dist:
        return (x - x.mean(0)).pow(2).sum(), x.shape[0]
    xd = x.double()
    packed = torch.cat([xd.sum(0), xd.pow(2).sum().reshape(1), torch.tensor([x.shape[0]], dtype=torch.float64,
                                                                            device=x.device)])
    dist.all_reduce(packed)
    d = x.shape[1]
    n = packed[-1]
    variance = packed[d] - packed[:d].pow(2).sum() / n
    return variance.to(x.dtype), int(n)


def _all_gather_rows(x: Tensor, dist) -> Tensor:
    """Every rank's rows, concatenated in rank order (shares may differ in length)."""
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:k] for p, k in zip(parts, sizes)])


def _all_reduce_grads(sae: SAE, dist) -> None:
    """Sum gradients over ranks in one flat buffer (losses use global denominators)."""
    params = list(sae.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset: offset + n].view_as(p.grad))
        offset += n
