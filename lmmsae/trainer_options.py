"""The trainer's options: the one definition of their defaults (the train stage's options take
theirs from here). Kept apart from lmmsae.trainer so the CLI can read them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerOptions:
    lr: float = 0.0                    # 0: 2e-4 / sqrt(n_latents / 2^14) per SAE (Adam)
    warmup_steps: int = 100            # linear learning-rate warm-up (the paper: 1000)
    grad_clip: float = 1.0             # 0 disables clipping
    betas: tuple[float, float] = (0.9, 0.999)
    dead_window_tokens: int = 200_000  # dead = no firing in this many tokens (toy-sized; the paper: 10M)
    normalize_inputs: bool = False     # scale inputs to E||x||^2 = d_in (per SAE: Entry.normalize_inputs)
    mixed_precision: bool = True       # bf16 autocast on CUDA; no effect on CPU
    log_every: int = 50

    def __post_init__(self):
        from lmmsae.errors import UserError

        checks = {"lr": self.lr >= 0, "warmup_steps": self.warmup_steps >= 0, "grad_clip": self.grad_clip >= 0,
                  "dead_window_tokens": self.dead_window_tokens >= 1, "log_every": self.log_every >= 0,
                  "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"train.{bad[0]}={getattr(self, bad[0])!r} is out of range: lr, warmup_steps and grad_clip "
                            f"must be >= 0, dead_window_tokens >= 1, betas in [0, 1)")
