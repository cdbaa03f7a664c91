"""Tiny random LLaVA-family checkpoints built from configs, saved to a folder like a real checkpoint.

The vision tower's attention output projections are zeroed, so every image token depends only
on its own patch: a marker painted into the image changes exactly the tokens
whose patches see it. That is what the token-map ground-truth tests rely on.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ["a", "red", "blue", "circle", "square", "is", "there", "?", "yes", "no", "describe", "it"]
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<video>"]
VOCAB = {t: i for i, t in enumerate(SPECIALS + WORDS)}


def tokenizer():
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", VOCAB["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=100000, padding_side="right",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"})


def _text_config(kind: str, hidden: int = 32, layers: int = 3):
    common = dict(vocab_size=len(VOCAB), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  bos_token_id=VOCAB["<s>"], eos_token_id=VOCAB["</s>"], pad_token_id=VOCAB["<pad>"])
    if kind == "qwen2":
        from transformers import Qwen2Config
        return Qwen2Config(**common)
    from transformers import LlamaConfig
    return LlamaConfig(**common)


def build_llava(path: Path, image_size: int = 32, patch: int = 8, strategy: str = "default",
                do_pad: bool = False, crop: bool = True, seed: int = 0) -> Path:
    """LLaVA-1.5 shaped: CLIP tower (CLS), resize shortest edge + centre crop (or pad to square)."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaImageProcessor, LlavaProcessor)

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(image_size=image_size, patch_size=patch, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
    config = LlavaConfig(vision_config=vision, text_config=_text_config("llama"), image_token_index=VOCAB["<image>"],
                         image_seq_length=(image_size // patch) ** 2, vision_feature_select_strategy=strategy,
                         vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config).eval()
    ip_class = LlavaImageProcessor if do_pad else CLIPImageProcessor  # LLaVA's own pads to a square first
    ip = ip_class(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                  do_center_crop=crop, do_pad=do_pad)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tokenizer(), patch_size=patch,
                          vision_feature_select_strategy=strategy, num_additional_image_tokens=1)
    _local(model)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return Path(path)


def build_llava_next(path: Path, image_size: int = 32, patch: int = 8,
                     pinpoints=((32, 64), (64, 32), (64, 64), (96, 32), (32, 96)), seed: int = 0) -> Path:
    """LLaVA-NeXT shaped: CLIP tower, anyres tiles of `image_size`, unpadding and newline tokens."""
    import torch
    from transformers import (CLIPVisionConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor)

    torch.manual_seed(seed)
    pinpoints = [list(p) for p in pinpoints]
    vision = CLIPVisionConfig(image_size=image_size, patch_size=patch, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, projection_dim=16)
    config = LlavaNextConfig(vision_config=vision, text_config=_text_config("llama"),
                             image_token_index=VOCAB["<image>"], image_grid_pinpoints=pinpoints,
                             vision_feature_select_strategy="default", vision_feature_layer=-1,
                             image_seq_length=(image_size // patch) ** 2)
    model = LlavaNextForConditionalGeneration(config).eval()
    ip = LlavaNextImageProcessor(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size},
                                 image_grid_pinpoints=pinpoints)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tokenizer(), patch_size=patch,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1)
    _local(model)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return Path(path)


def build_llava_ov(path: Path, image_size: int = 24, patch: int = 6, max_tiles: int = 9,
                   pinpoints=None, seed: int = 0) -> Path:
    """LLaVA-OneVision shaped: SigLIP tower (no CLS), anyres_max_N with bilinear downsampling."""
    import torch
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor,
                              LlavaOnevisionVideoProcessor, SiglipVisionConfig)

    torch.manual_seed(seed)
    if pinpoints is None:
        pinpoints = [[image_size * i, image_size * j] for i in range(1, 5) for j in range(1, 5)]
    vision = SiglipVisionConfig(image_size=image_size, patch_size=patch, hidden_size=16, intermediate_size=32,
                                num_hidden_layers=1, num_attention_heads=2)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=_text_config("qwen2"),
                                  image_token_index=VOCAB["<image>"], video_token_index=VOCAB["<video>"],
                                  image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full",
                                  vision_feature_layer=-1, vision_aspect_ratio=f"anyres_max_{max_tiles}")
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    ip = LlavaOnevisionImageProcessor(size={"height": image_size, "width": image_size},
                                      image_grid_pinpoints=pinpoints)
    proc = LlavaOnevisionProcessor(image_processor=ip, tokenizer=tokenizer(), video_processor=LlavaOnevisionVideoProcessor(),
                                   num_image_tokens=(image_size // patch) ** 2,
                                   vision_feature_select_strategy="full",
                                   vision_aspect_ratio=f"anyres_max_{max_tiles}")
    _local(model)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return Path(path)


def _local(model) -> None:
    """Zero the vision attention outputs: patch features then depend on their own patch only."""
    import torch

    with torch.no_grad():
        for name, module in model.named_modules():
            if "vision_tower" in name and name.endswith("out_proj"):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
