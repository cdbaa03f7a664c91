"""A tiny random LLaVA (transformers classes, toy word-level tokenizer) saved to a folder, for tests."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}a{% endif %}"
)


def build_tiny_llava(folder: str | Path, image_size: int = 48, seed: int = 0) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from lmmsae.toyworld.vocab import VOCAB, build_tokenizer

    torch.manual_seed(seed)
    n_patches = (image_size // 8) ** 2
    vision = CLIPVisionConfig(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=1, num_attention_heads=2)
    text = LlamaConfig(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, bos_token_id=VOCAB["<s>"],
                       eos_token_id=VOCAB["</s>"], pad_token_id=VOCAB["<pad>"], max_position_embeddings=512)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=VOCAB["<image>"],
                         vision_feature_select_strategy="full", vision_feature_layer=-1,
                         image_seq_length=n_patches + 1)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = VOCAB["<s>"]
    model.generation_config.eos_token_id = VOCAB["</s>"]
    model.generation_config.pad_token_id = VOCAB["<pad>"]
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size},
                                         do_center_crop=False)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=build_tokenizer("llava"), patch_size=8,
                               vision_feature_select_strategy="full", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
