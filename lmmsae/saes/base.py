"""The SAE interface every architecture implements, and what training needs from it.

Parameter names follow the sparsify layout (`encoder.weight` [n_latents, d_in], `encoder.bias`,
`W_dec` [n_latents, d_in], `b_dec` [d_in]) so our checkpoints are sparsify checkpoints for TopK.
Latents are computed from (x - b_dec): pre = (x - b_dec) @ W_enc^T + b_enc.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lmmsae.errors import UserError
from lmmsae.saes.sparse import Codes, Scratch


@dataclass
class LossOutput:
    """One training forward: reconstruction, the loss to minimise, its named terms (detached
    floats for logging) and which latents fired on each token (for dead-latent tracking)."""

    x_hat: Tensor
    loss: Tensor
    terms: dict[str, Tensor]
    fired: Tensor  # [n_latents] number of tokens each latent fired on in this batch
    l0: Tensor     # mean active latents per token (detached)


@dataclass
class BatchContext:
    """What the trainer knows beyond the batch: the global variance denominator (all-reduced in
    data-parallel training), the dead-latent mask, the step."""

    total_variance: Tensor
    n_tokens_global: int
    dead: Tensor | None = None
    step: int = 0


class SAE(nn.Module):
    """A sparse autoencoder. Subclasses define `activation(pre)` (and a `loss` if L1-style)."""

    architecture: ClassVar[str] = ""
    default_normalize_decoder: ClassVar[bool] = True
    normalize_inputs_by_default: ClassVar[bool] = False  # train on inputs scaled to E||x||^2 = d_in

    @dataclass
    class Options:
        n_latents: int = 0            # 0: expansion_factor * d_in
        expansion_factor: int = 8
        normalize_decoder: bool | None = None  # None: the architecture's default
        init_b_dec: str = "geometric_median"   # geometric_median, mean or zeros

        def __post_init__(self):
            """Checked when the config is read, so a bad value fails before any stage runs."""
            require(self, n_latents=(self.n_latents >= 0, ">= 1 (or 0: expansion_factor x d_in)"),
                    expansion_factor=(self.expansion_factor >= 1, ">= 1"),
                    init_b_dec=(self.init_b_dec in ("geometric_median", "mean", "zeros"),
                                "geometric_median, mean or zeros"))

    def __init__(self, d_in: int, options: Any = None, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.options = options if options is not None else self.Options()
        self.d_in = int(d_in)
        self.n_latents = int(self.options.n_latents or self.d_in * self.options.expansion_factor)
        if self.n_latents <= 0 or self.d_in <= 0:
            raise UserError(f"SAE needs d_in > 0 and n_latents > 0 (got {self.d_in}, {self.n_latents})")
        self.encoder = nn.Linear(self.d_in, self.n_latents, device=device, dtype=dtype)
        with torch.no_grad():
            self.encoder.bias.zero_()
        self.W_dec = nn.Parameter(self.encoder.weight.detach().clone())
        self.b_dec = nn.Parameter(torch.zeros(self.d_in, device=device, dtype=dtype))
        self.extra: dict[str, Any] = {}  # informative cfg entries (input normalisation, provenance)
        if self.normalize_decoder:
            self.set_decoder_norm_to_unit_norm()

    # ---- configuration -------------------------------------------------------------------
    @property
    def normalize_decoder(self) -> bool:
        value = self.options.normalize_decoder
        return self.default_normalize_decoder if value is None else bool(value)

    @property
    def cfg(self) -> dict[str, Any]:
        """cfg.json: our keys plus sparsify's (`num_latents`, `expansion_factor`, `normalize_decoder`,
        `k`, `multi_topk`, `skip_connection`, `d_in`), so sparsify loads TopK checkpoints."""
        options = dataclasses.asdict(self.options)
        options["normalize_decoder"] = self.normalize_decoder
        options.pop("n_latents", None)
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "n_latents": self.n_latents,
            "num_latents": self.n_latents,
            "skip_connection": False,
            **options,
            **self.extra,
        }

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> "SAE":
        names = {f.name for f in dataclasses.fields(cls.Options)}
        values = {k: v for k, v in cfg.items() if k in names}
        values["n_latents"] = int(cfg.get("n_latents") or cfg.get("num_latents") or 0)
        try:
            options = cls.Options(**values)
        except TypeError as exc:
            raise UserError(f"cfg.json does not fit architecture {cls.architecture!r}: {exc}") from None
        sae = cls(int(cfg["d_in"]), options, device=device, dtype=dtype)
        known = names | {"architecture", "d_in", "n_latents", "num_latents", "skip_connection"}
        sae.extra = {k: v for k, v in cfg.items() if k not in known}
        return sae

    # ---- inference -----------------------------------------------------------------------
    @property
    def W_enc(self) -> Tensor:
        return self.encoder.weight

    @property
    def b_enc(self) -> Tensor:
        return self.encoder.bias

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    def pre_acts(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """(x - b_dec) @ W_enc^T + b_enc. `out` [N, n_latents], when given outside autograd, receives
        them: on CPU a fresh [tokens, n_latents] tensor per call costs more in page faults than the
        matmul itself, so callers encoding many chunks pass a reused buffer."""
        xc = x.to(self.dtype) - self.b_dec
        if out is None or torch.is_grad_enabled() or torch.is_autocast_enabled(xc.device.type) or xc.dim() != 2:
            return nn.functional.linear(xc, self.W_enc, self.b_enc)
        return torch.addmm(self.b_enc, xc, self.W_enc.T, out=out)  # what F.linear does for 2-D input

    def activation(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Dense post-activation latents [N, n_latents]."""
        return self.activation(self.pre_acts(x))

    def encode_sparse(self, x: Tensor, k: int | None = None, scratch: Scratch | None = None) -> Codes:
        """Active latents per token: values and indices [N, k] (entries may be zero: callers keep the
        non-zero ones). This default goes through the dense codes of `encode`, with k = `k` or the
        largest number of active latents of any token; TopK overrides it without building them and
        writes its pre-activations into `scratch` (a reusable buffer), which this default ignores."""
        z = self.encode(x)
        width = k or max(int((z != 0).sum(dim=-1).max()) if z.numel() else 0, 1)
        _, indices = z.abs().topk(min(width, self.n_latents), dim=-1)
        return Codes(z.gather(-1, indices), indices)

    def decode(self, z: Tensor) -> Tensor:
        return z.to(self.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def export_tensors(self) -> dict[str, Tensor]:
        """The tensors a checkpoint holds, by their file names (sparsify's for the shared ones)."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}

    def import_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Inverse of export_tensors; missing or unexpected tensors are one clear error."""
        expected = set(self.state_dict())
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or extra:
            raise UserError(f"{self.architecture} checkpoint tensors do not match: missing {missing or 'none'}, "
                            f"unexpected {extra or 'none'}")
        for name, tensor in tensors.items():
            target = self.state_dict()[name]
            if tuple(tensor.shape) != tuple(target.shape):
                raise UserError(f"{self.architecture} checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                                f"expected {tuple(target.shape)} from cfg.json")
        self.load_state_dict({k: v.to(self.dtype) if v.is_floating_point() else v for k, v in tensors.items()},
                             strict=True)

    def save(self, directory: str | Path) -> None:
        from lmmsae.saes.io import save_sae

        save_sae(self, directory)

    # ---- training ------------------------------------------------------------------------
    def training_loss(self, x: Tensor, batch: BatchContext) -> LossOutput:
        """Default: plain reconstruction (FVU against the global variance)."""
        z = self.encode(x)
        x_hat = self.decode(z)
        fvu = (x_hat - x).pow(2).sum() / batch.total_variance
        return self._output(x_hat, fvu, {"fvu": fvu}, z)

    def _output(self, x_hat: Tensor, loss: Tensor, terms: dict[str, Tensor], z: Tensor) -> LossOutput:
        active = z.detach() != 0
        return LossOutput(x_hat, loss, {k: v.detach() for k, v in terms.items()},
                          active.sum(0), active.sum(1).float().mean())

    def decoder_norms(self) -> Tensor:
        return self.W_dec.norm(dim=1)

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        eps = torch.finfo(self.W_dec.dtype).eps
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True) + eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        if self.W_dec.grad is None:
            return
        parallel = _row_dots(self.W_dec.grad, self.W_dec)
        self.W_dec.grad.addcmul_(parallel[:, None], self.W_dec, value=-1.0)

    def before_step(self) -> None:
        """Called after backward, before the optimiser step."""
        if self.normalize_decoder:
            self.remove_gradient_parallel_to_decoder_directions()

    def after_step(self) -> None:
        if self.normalize_decoder:
            self.set_decoder_norm_to_unit_norm()

    def distributed_state(self) -> list[Tensor]:
        """Non-gradient training state that data-parallel ranks must average (e.g. thresholds)."""
        return []

    def inference_sae(self) -> "SAE":
        """The SAE to save for inference (BatchTopK becomes a JumpReLU)."""
        return self


def _row_dots(a: Tensor, b: Tensor, rows: int = 512) -> Tensor:
    """(a * b).sum(1) in row chunks: `linalg.vecdot` materialises the full product (a fresh
    [n_latents, d] temporary every step, ~4x slower on CPU than chunks that stay in cache)."""
    if a.device.type != "cpu":
        return torch.linalg.vecdot(a, b)
    out = a.new_empty(a.shape[0])
    for start in range(0, a.shape[0], rows):
        torch.sum(a[start:start + rows] * b[start:start + rows], dim=1, out=out[start:start + rows])
    return out


def require(options: Any, **conditions: tuple[bool, str]) -> None:
    """lmmsae.options.require for the `sae` section."""
    from lmmsae.options import require as check

    check("sae", options, **conditions)


def check_d_in(sae: SAE, hookpoint: str, d_model: int) -> None:
    """One clear line when an SAE is used at a hookpoint of another width."""
    if sae.d_in != d_model:
        raise UserError(f"SAE for {hookpoint!r} has d_in={sae.d_in} but the hookpoint has width {d_model}: "
                        f"train an SAE for this model/hookpoint or pick the matching checkpoint")

