"""The transformers-backed adapter shared by the LLaVA family; subclasses add only their geometry.

Loads any checkpoint of the adapter's transformers class by hub id or local folder, names
hookpoints by module path, turns samples into padded batches with an exact token map, captures
activations with forward hooks (stopping after the deepest block needed), and edits activations
through `intervene` in forward passes and `generate`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from lmmsae.errors import UserError
from lmmsae.models import hookpoints as hp
from lmmsae import checkpoints
from lmmsae.models import interventions
from lmmsae.models.base import Batch, BadImage, ModelAdapter, TokenMap, check_image
from lmmsae.models.token_map import Layout, assemble

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _Stop(Exception):
    """Raised by the deepest capture hook: the rest of the forward pass is not needed."""


def resolve_checkpoint(checkpoint: str) -> str:
    """A local folder or hub id; "toy" is the shipped toy LLaVA."""
    if checkpoint == "toy":
        from lmmsae import toyworld

        if not (Path(toyworld.LLAVA_DIR) / "config.json").is_file():
            raise UserError(f"the toy LLaVA weights are missing from {toyworld.LLAVA_DIR}: reinstall lmmsae, or "
                            f"train them with `python -m lmmsae.toyworld.train`")
        return str(toyworld.LLAVA_DIR)
    path = Path(checkpoint).expanduser()
    if path.exists():
        return str(path)
    if checkpoints.looks_local(checkpoint):
        raise UserError(f"checkpoint folder {checkpoint!r} does not exist: fix -o model.checkpoint=PATH")
    return checkpoint


@contextlib.contextmanager
def _loading(checkpoint: str):
    """Turn a broken folder or a failed download into one plain line."""
    try:
        yield
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(resolve_checkpoint(checkpoint)).exists():
            raise UserError(f"cannot load model from {checkpoint!r}: {first[:200]}") from None
        raise UserError(
            f"cannot load model {checkpoint!r}: it is not a local folder and the Hugging Face hub did not give it "
            f"({first[:160]}). Download it where there is network (`hf download {checkpoint}`) or "
            f"pass a local folder with -o model.checkpoint=PATH") from None


OFFLINE_ALTERNATIVE = "run the toy world instead (`lmmsae run` without --model)"


class TransformersAdapter(ModelAdapter):
    """Base for adapters over a transformers image-text-to-text class."""

    model_class = "LlavaForConditionalGeneration"
    model_types: tuple[str, ...] = ("llava",)
    adapter_name = "llava"

    @dataclass
    class Options:
        checkpoint: str = "llava-hf/llava-1.5-7b-hf"
        prompt: str = "<image>"              # default prompt; the paper uses the image token alone
        chat_template: bool = False          # wrap prompts in the processor's chat template
        padding_side: str = "right"          # "left" or "right" (generate always pads left)
        attn_implementation: str | None = None
        stop_early: bool = True              # skip blocks after the deepest captured hookpoint
        config: str = ""                     # a config.json to build the architecture from (needs random_init)
        random_init: bool = False            # random weights from `config` (or the checkpoint's config)
        scale: float = 1.0                   # random_init: shrink widths and image tokens, keeping proportions
        init_seed: int = 0                   # random_init: the weights' seed (every stage builds the same model)
        device_map: str | None = None        # e.g. "auto": spread a checkpoint over the visible GPUs (accelerate)

        ALIASES = {"path": "checkpoint", "model_path": "checkpoint", "config_path": "config"}

    def __init__(self, options, device: str = "cpu", dtype: str = "float32"):
        super().__init__(options, device, dtype)
        from lmmsae.models.devices import resolve_device

        if options.padding_side not in ("left", "right"):
            raise UserError(f"model.padding_side must be 'left' or 'right', not {options.padding_side!r}")
        if dtype not in DTYPES:
            raise UserError(f"dtype {dtype!r} is not supported: use one of {', '.join(DTYPES)}")
        self.preflight(options)
        self.device = torch.device(resolve_device(device))
        self.dtype = DTYPES[dtype]
        if options.random_init:
            self._build_random(options)
        else:
            self._load_checkpoint(options)
        self.model.eval()
        self.model.requires_grad_(False)
        self.config = self.model.config
        self.tokenizer = self.processor.tokenizer
        self.image_token = getattr(self.processor, "image_token", "<image>")
        self.image_token_id = int(self.config.image_token_id)
        self.special_ids = set(self.tokenizer.all_special_ids)
        self._modules = dict(self.model.named_modules())
        self._listed = [n for n in self._modules if hp.LAYER_RE.fullmatch(n)]
        self._layouts: dict[tuple, Layout] = {}
        self.current_run: interventions.Run | None = None

    # ------------------------------------------------------------------ loading and naming

    @classmethod
    def preflight(cls, options, flag: str | None = None) -> None:
        """Cheap checks before any stage runs (no weights loaded): the options agree with each other and
        the checkpoint is reachable (offline: a local folder or in the hub cache). One-line UserErrors."""
        if options.random_init:
            if not 0 < options.scale <= 1:
                raise UserError(f"model.scale must be in (0, 1], not {options.scale}")
            if options.device_map:
                raise UserError("model.device_map applies to loading a checkpoint; a random_init model is built on "
                                "one device: drop -o model.device_map")
            if options.config:
                from lmmsae.models.random_init import read_config

                read_config(options.config)
                return
        elif options.config or options.scale != 1:
            raise UserError("model.config and model.scale build a model with random weights: add "
                            "-o model.random_init=true (or drop them to load model.checkpoint)")
        checkpoints.check_checkpoint(options.checkpoint, "model.checkpoint", flag=flag, alternative=OFFLINE_ALTERNATIVE)

    def _load_checkpoint(self, options) -> None:
        import transformers

        self.path = resolve_checkpoint(options.checkpoint)
        self._check_type(self._config(options))
        kwargs = {"dtype": self.dtype, "local_files_only": self._local_only(options)}
        if options.attn_implementation:
            kwargs["attn_implementation"] = options.attn_implementation
        if options.device_map:
            kwargs["device_map"] = options.device_map
        with _loading(options.checkpoint):
            self.model = getattr(transformers, self.model_class).from_pretrained(self.path, **kwargs)
            self.processor = transformers.AutoProcessor.from_pretrained(
                self.path, local_files_only=kwargs["local_files_only"])
        if options.device_map:  # inputs go where the embeddings live
            self.device = self.model.get_input_embeddings().weight.device
        else:
            self.model.to(self.device)

    def _build_random(self, options) -> None:
        from lmmsae.models import random_init

        config = self._config(options)
        self._check_type(config)
        if options.attn_implementation:
            config._attn_implementation = options.attn_implementation
        self.path = options.config or resolve_checkpoint(options.checkpoint)
        self.model = random_init.build(self.model_class, config, self.dtype, self.device, options.init_seed)
        self.processor = self.build_processor(config, random_init.byte_tokenizer())

    @classmethod
    def build_processor(cls, config, tokenizer):
        """The processor a checkpoint of this family would ship, from its config (random_init)."""
        raise UserError(f"model {cls.adapter_name!r} cannot build a processor from a config: random_init is "
                        f"not supported for it")

    @classmethod
    def _local_only(cls, options) -> bool:
        """Load from local files only (a cached hub id while offline): no hub calls, no retries."""
        return checkpoints.check_checkpoint(options.checkpoint, "model.checkpoint", alternative=OFFLINE_ALTERNATIVE)

    @classmethod
    def _config(cls, options):
        """The model's config: from the checkpoint, or (random_init) built and scaled from `config`."""
        import transformers

        if options.random_init:
            from lmmsae.models import random_init

            tokenizer = random_init.byte_tokenizer()
            if options.config:
                config = random_init.read_config(options.config)
            else:
                path = resolve_checkpoint(options.checkpoint)
                with _loading(options.checkpoint):
                    config = transformers.AutoConfig.from_pretrained(path, local_files_only=cls._local_only(options))
            config = random_init.scale_config(config, options.scale, vocab_min=len(tokenizer))
            random_init.tie_to_tokenizer(config, tokenizer)
            return config
        path = resolve_checkpoint(options.checkpoint)
        with _loading(options.checkpoint):
            return transformers.AutoConfig.from_pretrained(path, local_files_only=cls._local_only(options))

    @classmethod
    def _check_type(cls, config) -> None:
        if config.model_type not in cls.model_types:
            from lmmsae import plugins

            fits = [c.name for c in plugins.registry("models")
                    if getattr(c.load(), "model_types", ()) and config.model_type in c.load().model_types]
            hint = f" use --model {fits[0]}" if fits else " no installed adapter supports it"
            raise UserError(f"checkpoint is a {config.model_type!r} model, not {' or '.join(cls.model_types)}:{hint}")

    @classmethod
    def list_hookpoints(cls, options) -> list[str]:
        """Decoder blocks, from a weightless (meta-device) model built from the config."""
        import transformers

        config = cls._config(options)
        cls._check_type(config)
        with torch.device("meta"):
            model = getattr(transformers, cls.model_class)._from_config(config)
        return [n for n, _ in model.named_modules() if hp.LAYER_RE.fullmatch(n)]

    def resolve_hookpoints(self, patterns) -> list[str]:
        return hp.resolve(patterns, self._listed, set(self._modules))

    def module(self, hookpoint: str) -> torch.nn.Module:
        return self._modules[self.resolve_hookpoints([hookpoint])[0]]

    def d_model(self, hookpoint: str) -> int:
        name = self.resolve_hookpoints([hookpoint])[0]
        if name.startswith("model.vision_tower"):
            return int(self.config.vision_config.hidden_size)
        return int(self.config.text_config.hidden_size)

    def identity(self) -> dict[str, Any]:
        import transformers

        out = {
            "adapter": self.adapter_name, "class": self.model_class, "checkpoint": self.options.checkpoint,
            "path": self.path, "model_type": self.config.model_type,
            "commit": getattr(self.config, "_commit_hash", None), "dtype": str(self.dtype).replace("torch.", ""),
            "prompt": self.options.prompt, "chat_template": self.options.chat_template,
            "transformers": transformers.__version__,
        }
        if self.options.random_init:
            from lmmsae.models.random_init import describe

            out.update(random_init=True, config=self.options.config, scale=self.options.scale,
                       init_seed=self.options.init_seed, shapes=describe(self.config))
        return out

    # ------------------------------------------------------------------ batches

    def text_for(self, prompt: str, has_image: bool) -> str:
        prompt = prompt.replace("<image>", self.image_token) if self.image_token != "<image>" else prompt
        if self.options.chat_template:
            content = ([{"type": "image"}] if has_image else []) + [
                {"type": "text", "text": prompt.replace(self.image_token, "").strip()}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True)
        if has_image and self.image_token not in prompt:
            prompt = f"{self.image_token}\n{prompt}" if prompt.strip() else self.image_token
        if not has_image:
            prompt = prompt.replace(self.image_token, "").strip()
        return prompt

    def prepare(self, samples: list, prompt: str | None = None, padding_side: str | None = None) -> Batch:
        images, texts, ids = [], [], []
        for s in samples:
            image = check_image(s.image, s.id)
            images.append(image)
            ids.append(s.id)
            texts.append(self.text_for(prompt or s.prompt or self.options.prompt, image is not None))
        present = [im for im in images if im is not None]
        self.tokenizer.padding_side = padding_side or self.options.padding_side
        kwargs = {"images": present} if present else {}
        inputs = self.processor(text=texts, return_tensors="pt", padding=True, **kwargs)
        sizes = [None if im is None else (im.height, im.width) for im in images]
        layouts, j = [], 0
        for im in images:
            if im is None:
                layouts.append(None)
                continue
            layouts.append(self.layout((im.height, im.width), inputs, j))
            j += 1
        tmap = assemble(inputs["input_ids"].numpy(), inputs["attention_mask"].numpy(), self.image_token_id,
                        self.special_ids, layouts, sizes)
        return Batch(dict(inputs), tmap, ids, images, texts)

    def layout(self, orig_hw: tuple[int, int], inputs, index: int) -> Layout:
        """The image's token layout (cached by size: most datasets repeat a few sizes)."""
        key = (orig_hw, tuple(inputs["pixel_values"][index].shape[-2:]))
        if key not in self._layouts:
            self._layouts[key] = self._layout(orig_hw, key[1])
        return self._layouts[key]

    def _layout(self, orig_hw: tuple[int, int], pixel_hw: tuple[int, int]) -> Layout:
        raise NotImplementedError

    def _strategy_extra(self) -> int:
        """Leading non-patch features per base view: e.g. the CLS kept by strategy "full"."""
        strategy = getattr(self.processor, "vision_feature_select_strategy", None) or \
            self.config.vision_feature_select_strategy
        extra = int(getattr(self.processor, "num_additional_image_tokens", 0) or 0)
        return extra - (1 if strategy == "default" else 0)

    def _inputs(self, batch: Batch, with_positions: bool = True) -> dict[str, Any]:
        out = {}
        for k, v in batch.inputs.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device)
                if v.is_floating_point():
                    v = v.to(self.dtype)
            out[k] = v
        if with_positions:  # so left padding does not shift positions in a plain forward
            out["position_ids"] = (out["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return out

    # ------------------------------------------------------------------ running

    def _memory(self, what: str, batch: Batch):
        """CUDA out-of-memory becomes one line naming the batch-size options to lower."""
        from lmmsae.models.devices import out_of_memory_hint

        return out_of_memory_hint(what, len(batch), batch.n_tokens, self.device)

    @contextlib.contextmanager
    def _running(self, token_map: TokenMap | None, generating: bool = False):
        previous = self.current_run
        self.current_run = interventions.Run(token_map, generating)
        try:
            yield
        finally:
            self.current_run = previous

    def forward(self, batch: Batch, hookpoints: Iterable[str], grad: bool = False) -> dict[str, torch.Tensor]:
        names = self.resolve_hookpoints(list(hookpoints))
        captured: dict[str, torch.Tensor] = {}
        layers = [hp.layer_index(n) for n in names]
        last = names[int(np.argmax(layers))] if self.options.stop_early and None not in layers else None

        def capture(name):
            def hook(module, args, output):
                captured[name] = interventions.output_tensor(output)
                if name == last and len(captured) == len(names):
                    raise _Stop
            return hook

        handles = [self._modules[n].register_forward_hook(capture(n)) for n in names]
        try:
            with self._running(batch.token_map), torch.set_grad_enabled(grad), self._memory("a forward pass", batch):
                self.model(**self._inputs(batch), use_cache=False, logits_to_keep=1)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        return {n: captured[n] for n in names}

    def logits(self, batch: Batch, grad: bool = False) -> torch.Tensor:
        with self._running(batch.token_map), torch.set_grad_enabled(grad), self._memory("a forward pass", batch):
            return self.model(**self._inputs(batch), use_cache=False).logits

    def intervene(self, hookpoint, edit, token_kinds=None, prefill_only: bool = False):
        """Edit the output of `hookpoint` (a name or glob) while the block runs; see `interventions`."""
        modules = [self._modules[n] for n in self.resolve_hookpoints([hookpoint] if isinstance(hookpoint, str)
                                                                     else list(hookpoint))]
        return interventions.intervene(self, modules, edit, token_kinds, prefill_only)

    def generate(self, batch: Batch, max_new_tokens: int = 32, **kwargs) -> list[str]:
        batch = left_padded(batch)
        kwargs.setdefault("do_sample", False)
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        inputs = self._inputs(batch, with_positions=False)
        with self._running(batch.token_map, generating=True), torch.no_grad(), self._memory("generation", batch):
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [s.strip() for s in self.processor.batch_decode(new, skip_special_tokens=True)]


def left_padded(batch: Batch) -> Batch:
    """The same batch with padding moved to the left (what generation needs)."""
    mask = batch.inputs["attention_mask"]
    n_pad = (mask == 0).sum(dim=1)
    if not bool((mask[:, -1] == 0).any()):
        return batch
    shifts = n_pad.tolist()
    inputs = dict(batch.inputs)
    for key in ("input_ids", "attention_mask"):
        inputs[key] = torch.stack([torch.roll(row, s) for row, s in zip(batch.inputs[key], shifts)])
    tm = batch.token_map

    def roll(a):
        return np.stack([np.roll(row, s, axis=0) for row, s in zip(a, shifts)])

    tmap = TokenMap(roll(tm.kind), roll(tm.image), roll(tm.view), roll(tm.row), roll(tm.col), roll(tm.box),
                    tm.grids, tm.image_sizes)
    return Batch(inputs, tmap, batch.sample_ids, batch.images, batch.texts)


__all__ = ["TransformersAdapter", "BadImage", "left_padded", "resolve_checkpoint"]
