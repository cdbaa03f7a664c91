"""What steering, attribution and hallucination checks load from a run: adapter, hookpoint, SAE, dataset."""

from __future__ import annotations

from pathlib import Path

from lmmsae import artifacts
from lmmsae.errors import UserError


def find_sae_dir(run_path: str | Path, hookpoint: str, sae_path: str | None = None) -> Path:
    """The SAE folder: `sae_path` itself when it holds cfg.json, else <sae_path or run>/sae/<hookpoint>
    (the hookpoint's full or short name, e.g. layers.2)."""
    from lmmsae.models.hookpoints import short

    if sae_path is not None and (Path(sae_path) / artifacts.SAE_CFG).is_file():
        return Path(sae_path)
    base = Path(sae_path) if sae_path is not None else Path(run_path)
    names = dict.fromkeys([hookpoint, short(hookpoint)])
    for name in names:
        sae_dir = base / artifacts.SAE_DIR / name
        if (sae_dir / artifacts.SAE_CFG).is_file():
            return sae_dir
    hint = "pass --sae-path" if sae_path is None else "check --sae-path"
    raise UserError(f"no SAE for hookpoint {hookpoint!r} under {base / artifacts.SAE_DIR}: "
                    f"run `lmmsae train` first, or {hint}")


def load_model_and_sae(ctx, sae_path: str | None = None):
    """(adapter, hookpoint, sae) for the run's first hookpoint."""
    from lmmsae.saes.io import load_sae

    adapter = ctx.build("model")
    hookpoint = adapter.resolve_hookpoints(ctx.config.hookpoints)[0]
    sae = load_sae(find_sae_dir(ctx.run.path, hookpoint, sae_path), device=ctx.config.device)
    return adapter, hookpoint, sae



def check_features(sae, features) -> None:
    """Feature ids must be latents of the SAE."""
    n = int(sae.cfg.get("n_latents", 0) or 0)
    bad = [f for f in features if f < 0 or (n and f >= n)]
    if bad:
        raise UserError(f"feature(s) {bad} out of range: this SAE has {n} latents (0..{n - 1})")
