"""LLaVA-1.5 (`LlavaForConditionalGeneration`): one view, a square patch grid, optional CLS.

Also the toy LLaVA (registered as `toy-llava`, checkpoint "toy").
"""

from __future__ import annotations

from dataclasses import dataclass

from lmmsae.models.hf import TransformersAdapter
from lmmsae.models.token_map import Layout, plain_layout


class LlavaAdapter(TransformersAdapter):
    model_class = "LlavaForConditionalGeneration"
    model_types = ("llava",)
    adapter_name = "llava"

    @dataclass
    class Options(TransformersAdapter.Options):
        checkpoint: str = "llava-hf/llava-1.5-7b-hf"

    def _layout(self, orig_hw, pixel_hw) -> Layout:
        patch = getattr(self.processor, "patch_size", None) or self.config.vision_config.patch_size
        return plain_layout(orig_hw, pixel_hw, self.processor.image_processor, int(patch), self._strategy_extra())

    @classmethod
    def build_processor(cls, config, tokenizer):
        """llava-hf/llava-1.5's: CLIP resize (shortest edge) + centre crop to the tower's size."""
        from transformers import CLIPImageProcessor, LlavaProcessor

        vc = config.vision_config
        ip = CLIPImageProcessor(size={"shortest_edge": vc.image_size},
                                crop_size={"height": vc.image_size, "width": vc.image_size})
        return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=vc.patch_size,
                              vision_feature_select_strategy=config.vision_feature_select_strategy,
                              num_additional_image_tokens=1)

