"""SAE checkpoints: our layout (= sparsify's), SAELens import, run-dir loading. Never pickle.

Our layout, one folder per hookpoint:
  <hookpoint>/cfg.json          architecture, d_in, n_latents + sparsify's keys (num_latents, k, ...)
  <hookpoint>/sae.safetensors   encoder.weight [n, d], encoder.bias [n], W_dec [n, d], b_dec [d]
                                (+ threshold, r_mag, b_mag for JumpReLU / Gated)
A sparsify checkpoint (no "architecture" key) is a TopK SAE. A SAELens checkpoint
(cfg.json + sae_weights.safetensors, W_enc [d, n]) is converted on load.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmmsae import artifacts
from lmmsae.atomic import atomic_path, atomic_write_text
from lmmsae.errors import UserError
from lmmsae.jsonfile import read_json
from lmmsae.saes.base import SAE

SAELENS_WEIGHTS = "sae_weights.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
SAELENS_ARCHITECTURES = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}


def sae_class(architecture: str) -> type[SAE]:
    from lmmsae import plugins

    return plugins.get("saes", architecture).load()


def save_sae(sae: SAE, directory: str | Path) -> Path:
    """Write cfg.json and sae.safetensors atomically (the inference form, e.g. BatchTopK as JumpReLU)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sae = sae.inference_sae()
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.export_tensors().items()}
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise UserError(f"the {sae.architecture} SAE for {directory} holds NaN or Inf in {', '.join(broken)}: "
                        f"not saved; train it again (lower the learning rate)")
    with atomic_path(directory / artifacts.SAE_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "architecture": sae.architecture})
    atomic_write_text(directory / artifacts.SAE_CFG, json.dumps(sae.cfg, indent=2) + "\n")
    return directory


def load_sae(directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SAE:
    """Load our/sparsify layout or a SAELens checkpoint from a folder; bad input is one clear line."""
    directory = Path(directory)
    cfg = read_cfg(directory)
    if (directory / artifacts.SAE_WEIGHTS).is_file():
        tensors = _read_tensors(directory / artifacts.SAE_WEIGHTS)
        architecture = cfg.get("architecture") or _sparsify_architecture(cfg, directory)
    elif (directory / SAELENS_WEIGHTS).is_file():
        tensors = _read_tensors(directory / SAELENS_WEIGHTS)
        cfg, tensors = from_saelens(cfg, tensors, directory)
        architecture = cfg["architecture"]
    else:
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise UserError(f"{directory} holds {pickled[0]}, a pickle checkpoint: lmmsae loads only safetensors "
                            f"(a pickle can run code); save the tensors with safetensors as {artifacts.SAE_WEIGHTS}")
        raise UserError(f"{directory} has cfg.json but no {artifacts.SAE_WEIGHTS} (or SAELens {SAELENS_WEIGHTS})")
    cls = _architecture_class(architecture, directory)
    if "d_in" not in cfg:
        raise UserError(f"{directory / artifacts.SAE_CFG} has no d_in")
    first = next(iter(tensors.values()))
    dtype = dtype or (first.dtype if first.is_floating_point() else torch.float32)
    try:
        sae = cls.from_cfg(cfg, device="cpu", dtype=dtype)
    except (KeyError, ValueError) as exc:
        raise UserError(f"{directory / artifacts.SAE_CFG} does not describe a {architecture} SAE: {exc}") from None
    try:
        sae.import_tensors(tensors)
    except UserError as exc:
        raise UserError(f"{directory}: {exc}") from None
    return sae.to(device).eval()


def read_cfg(directory: Path) -> dict[str, Any]:
    path = directory / artifacts.SAE_CFG
    if not directory.is_dir():
        raise UserError(f"SAE folder {str(directory)!r} does not exist")
    if not path.is_file():
        raise UserError(f"{directory} is not an SAE checkpoint: it has no {artifacts.SAE_CFG}")
    return read_json(path)


def _read_tensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _is_pickle(path):
            raise UserError(f"{path} is a pickle (torch.save), not safetensors: lmmsae never loads pickles (they can "
                            f"run code); save the tensors with safetensors") from None
        raise UserError(f"{path} is corrupt or truncated ({first}); re-train or re-download it") from None


def _is_pickle(path: Path) -> bool:
    """torch.save writes a zip archive (new format) or a raw pickle stream (protocol 2+: 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _architecture_class(architecture: str, directory: Path) -> type[SAE]:
    try:
        return sae_class(str(architecture))
    except UserError as exc:
        raise UserError(f"{directory / artifacts.SAE_CFG}: {exc}") from None


def _sparsify_architecture(cfg: dict[str, Any], directory: Path) -> str:
    """sparsify checkpoints carry no architecture: they are TopK, unless they use its extras."""
    unsupported = [key for key in ("skip_connection", "transcode") if cfg.get(key)]
    if cfg.get("activation", "topk") != "topk":
        unsupported.append(f"activation={cfg['activation']}")
    if unsupported:
        raise UserError(f"{directory}: sparsify checkpoint uses {', '.join(unsupported)}, which lmmsae does not support")
    if "k" not in cfg:
        raise UserError(f"{directory / artifacts.SAE_CFG} has no 'architecture' (and no 'k' of a sparsify TopK SAE)")
    return "topk"


def from_saelens(cfg: dict[str, Any], tensors: dict[str, Tensor], directory: Path) -> tuple[dict, dict]:
    """Convert a SAELens checkpoint to our cfg and tensor names (encoder rows, b_dec applied
    to the input); a b_dec applied only to the output is folded into the encoder bias."""
    arch = cfg.get("architecture") or {"relu": "standard", "topk": "topk"}.get(cfg.get("activation_fn_str"), "standard")
    if arch not in SAELENS_ARCHITECTURES:
        raise UserError(f"{directory}: SAELens architecture {arch!r} is not supported "
                        f"(supported: {', '.join(sorted(SAELENS_ARCHITECTURES))})")
    norm = cfg.get("normalize_activations") or "none"
    if norm != "none":
        raise UserError(f"{directory}: SAELens normalize_activations={norm!r} is not supported; only 'none'")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise UserError(f"{directory}: SAELens rescale_acts_by_decoder_norm is not supported")
    need = {"W_enc", "W_dec", "b_dec"} | ({"b_gate", "r_mag", "b_mag"} if arch == "gated" else {"b_enc"})
    if arch == "jumprelu":
        need.add("threshold")
    missing = sorted(need - set(tensors))
    if missing:
        raise UserError(f"{directory / SAELENS_WEIGHTS} lacks {', '.join(missing)} for a SAELens {arch} SAE")
    W_enc = tensors["W_enc"].T.contiguous()
    b_dec = tensors["b_dec"]
    d_in, d_sae = tensors["W_enc"].shape
    shift = torch.zeros(d_sae, dtype=torch.float64)
    if not cfg.get("apply_b_dec_to_input", True):
        shift = b_dec.double() @ tensors["W_enc"].double()
    ours = SAELENS_ARCHITECTURES[arch]
    out = {"encoder.weight": W_enc, "W_dec": tensors["W_dec"].contiguous(), "b_dec": b_dec}
    if arch == "gated":
        out["encoder.bias"] = (tensors["b_gate"].double() + shift).to(W_enc.dtype)
        out["r_mag"] = tensors["r_mag"]
        out["b_mag"] = (tensors["b_mag"].double() + tensors["r_mag"].double().exp() * shift).to(W_enc.dtype)
    else:
        out["encoder.bias"] = (tensors["b_enc"].double() + shift).to(W_enc.dtype)
    if arch == "jumprelu":
        out["threshold"] = tensors["threshold"]
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    new_cfg: dict[str, Any] = {"architecture": ours, "d_in": int(cfg.get("d_in", d_in)),
                               "n_latents": int(cfg.get("d_sae", d_sae)), "normalize_decoder": False,
                               "imported_from": "saelens"}
    if cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name"):
        new_cfg["hook_name"] = cfg.get("hook_name") or cfg["metadata"]["hook_name"]
    if ours == "topk":
        if not k:
            raise UserError(f"{directory / artifacts.SAE_CFG}: SAELens topk SAE without k")
        new_cfg["k"] = int(k)
    return new_cfg, out


def fold_input_scale(sae: SAE, scale: float) -> SAE:
    """An SAE that takes raw inputs x and gives the same latents as `sae` on scale * x, with
    reconstructions in raw units: W_enc * s, b_dec / s, W_dec / s."""
    folded = copy.deepcopy(sae)
    if scale == 1.0:
        return folded
    with torch.no_grad():
        folded.encoder.weight.mul_(scale)
        folded.b_dec.div_(scale)
        folded.W_dec.div_(scale)
    folded.extra = {**folded.extra, "input_normalization": {
        "method": "expected_norm", "scale": scale, "folded_into_weights": True,
        "note": "trained on scale * x with E||scale * x||^2 = d_in; weights rescaled to take raw x"}}
    return folded


def load_run_saes(run_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, SAE]:
    """{hookpoint: SAE} for every sae/<hookpoint>/ of a run directory."""
    root = Path(run_dir) / artifacts.SAE_DIR
    if not root.is_dir():
        raise UserError(f"{run_dir} has no {artifacts.SAE_DIR}/ folder: run `lmmsae train` first")
    out = {p.name: load_sae(p, device) for p in sorted(root.iterdir())
           if p.is_dir() and (p / artifacts.SAE_CFG).is_file()}
    if not out:
        raise UserError(f"{root} holds no trained SAE (no <hookpoint>/{artifacts.SAE_CFG})")
    return out
