"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`): anyres base view + tiles, unpadding, newlines."""

from __future__ import annotations

from dataclasses import dataclass

from lmmsae.models.hf import TransformersAdapter
from lmmsae.models.token_map import Layout, anyres_layout


class LlavaNextAdapter(TransformersAdapter):
    model_class = "LlavaNextForConditionalGeneration"
    model_types = ("llava_next",)
    adapter_name = "llava-next"

    @dataclass
    class Options(TransformersAdapter.Options):
        checkpoint: str = "llava-hf/llama3-llava-next-8b-hf"

    def _max_tiles(self) -> int | None:
        return None

    def _layout(self, orig_hw, pixel_hw) -> Layout:
        vc = self.config.vision_config
        return anyres_layout(orig_hw, self.processor.image_processor, self.config.image_grid_pinpoints,
                             int(vc.image_size), int(vc.patch_size), self._strategy_extra(),
                             max_tiles=self._max_tiles())

    @classmethod
    def build_processor(cls, config, tokenizer):
        """llava-hf/llava-v1.6's: CLIP normalisation, anyres tiles of the tower's size over the pinpoints."""
        from transformers import LlavaNextImageProcessor, LlavaNextProcessor

        vc = config.vision_config
        ip = LlavaNextImageProcessor(size={"shortest_edge": vc.image_size},
                                     crop_size={"height": vc.image_size, "width": vc.image_size},
                                     image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints])
        return LlavaNextProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=vc.patch_size,
                                  vision_feature_select_strategy=config.vision_feature_select_strategy,
                                  num_additional_image_tokens=1)
