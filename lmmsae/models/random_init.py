"""Real LLaVA-family architectures with random weights, built from a transformers config, no download.

Used to measure and test lmmsae at real sizes and shapes without checkpoints (`-o model.config=PATH
-o model.random_init=true`, optionally `-o model.scale=0.125`). The model is the transformers class
itself, so token maps, hooks and interventions run exactly as on a real checkpoint.

`scale_config` shrinks an architecture keeping its proportions: every width (hidden, intermediate,
number of heads) is multiplied by `scale`, the number of layers is kept (so `layers.24` still
exists and the forward to it has the same depth), and the number of image tokens per view is
multiplied by about `scale` too (image side by sqrt(scale), anyres pinpoints alike). Per token, a
block then costs scale^2 of the full one in both its dense part (d^2) and its attention (seq x d),
and so does an SAE whose width is a fixed multiple of d: the SAE / model cost ratio is that of the
full size. The vocabulary is scaled too, but never below the tokenizer's size.

The tokenizer is byte-level (every UTF-8 text tokenizes, one byte per token) with the special
tokens the processor needs; the image processor is the family's own, set from the vision config.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lmmsae.errors import UserError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<video>")


def read_config(path: str):
    """A transformers config from a config.json file (or a folder holding one); one-line errors."""
    import transformers

    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise UserError(f"model.config {path!r} does not exist: give a config.json file (e.g. "
                        f"benchmarks/configs/llama3-llava-next-8b.json) or a folder holding one")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"model.config {str(file)!r} is not valid JSON ({exc})") from None
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in transformers.CONFIG_MAPPING:
        raise UserError(f"model.config {str(file)!r} has model_type {model_type!r}, which transformers does not know")
    return transformers.CONFIG_MAPPING[model_type].from_dict(data)


def _heads_and_dim(hidden: int, heads: int, scale: float) -> tuple[int, int]:
    """(heads, head_dim) of the scaled width: heads scale, head_dim stays unless heads run out."""
    n = max(1, round(heads * scale))
    head_dim = max(2, 2 * round(hidden * scale / n / 2))
    return n, head_dim


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= max(1, limit))


def _scale_text(tc, scale: float) -> None:
    heads, head_dim = _heads_and_dim(tc.hidden_size, tc.num_attention_heads, scale)
    kv = getattr(tc, "num_key_value_heads", None) or tc.num_attention_heads
    tc.num_attention_heads = heads
    tc.num_key_value_heads = _largest_divisor_at_most(heads, round(kv * scale))
    tc.hidden_size = heads * head_dim
    if hasattr(tc, "head_dim"):
        tc.head_dim = head_dim
    tc.intermediate_size = max(4, round(tc.intermediate_size * scale))


def _scale_vision(vc, scale: float) -> tuple[int, int]:
    """Scale the tower's widths and its patch grid; returns (new, old) image side in pixels."""
    heads, head_dim = _heads_and_dim(vc.hidden_size, vc.num_attention_heads, scale)
    vc.num_attention_heads = heads
    vc.hidden_size = heads * head_dim
    vc.intermediate_size = max(4, round(vc.intermediate_size * scale))
    if hasattr(vc, "projection_dim"):
        vc.projection_dim = max(4, round(vc.projection_dim * scale))
    side = vc.image_size // vc.patch_size
    new_side = max(2, round(side * math.sqrt(scale)))
    old = vc.image_size
    vc.image_size = new_side * vc.patch_size
    return vc.image_size, old


def scale_config(config, scale: float, vocab_min: int):
    """A copy of `config` with widths x scale, layers kept, image tokens per view x ~scale (see module doc)."""
    import copy

    if not 0 < scale <= 1:
        raise UserError(f"model.scale must be in (0, 1], not {scale}")
    config = copy.deepcopy(config)
    tc, vc = config.text_config, config.vision_config
    if scale != 1:
        _scale_text(tc, scale)
        new, old = _scale_vision(vc, scale)
        pins = getattr(config, "image_grid_pinpoints", None)
        if pins:
            config.image_grid_pinpoints = [[p[0] * new // old, p[1] * new // old] for p in pins]
        if hasattr(config, "image_seq_length"):
            config.image_seq_length = (new // vc.patch_size) ** 2
        tc.vocab_size = round(tc.vocab_size * scale)
    tc.vocab_size = max(tc.vocab_size, vocab_min)
    return config


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens, no merges) with LLaVA's special tokens; BOS first."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=1_000_000, padding_side="right",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})


def tie_to_tokenizer(config, tokenizer) -> None:
    """Point the config's special token ids at the tokenizer's (the random model learns nothing else)."""
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    config.image_token_id = ids["<image>"]
    if hasattr(config, "image_token_index"):
        config.image_token_index = ids["<image>"]
    if hasattr(config, "video_token_id"):
        config.video_token_id = ids["<video>"]
    if hasattr(config, "video_token_index"):
        config.video_token_index = ids["<video>"]
    tc = config.text_config
    tc.pad_token_id, tc.bos_token_id, tc.eos_token_id = ids["<pad>"], ids["<s>"], ids["</s>"]
    if hasattr(config, "pad_token_id"):
        config.pad_token_id = ids["<pad>"]


def build(model_class: str, config, dtype, device, seed: int) -> Any:
    """The model with random weights drawn from `seed` on `device` (same seed, device: same weights).

    The global random state is left as it was."""
    import torch
    import transformers

    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        with torch.device(device):
            model = getattr(transformers, model_class)._from_config(config, dtype=dtype)
    return model


def describe(config) -> dict[str, Any]:
    """The shapes that matter, for identities and benchmark tables."""
    tc, vc = config.text_config, config.vision_config
    return {"text_hidden": tc.hidden_size, "text_layers": tc.num_hidden_layers,
            "text_heads": tc.num_attention_heads, "text_kv_heads": tc.num_key_value_heads,
            "text_intermediate": tc.intermediate_size, "vocab": tc.vocab_size,
            "vision_hidden": vc.hidden_size, "vision_layers": vc.num_hidden_layers,
            "image_size": vc.image_size, "patch_size": vc.patch_size,
            "pinpoints": getattr(config, "image_grid_pinpoints", None)}
