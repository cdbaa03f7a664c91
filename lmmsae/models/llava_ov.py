"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`): anyres_max_N, tile grids downsampled
bilinearly when they exceed N tiles' worth of tokens."""

from __future__ import annotations

from dataclasses import dataclass

from lmmsae.errors import UserError
from lmmsae.models.llava_next import LlavaNextAdapter


class LlavaOnevisionAdapter(LlavaNextAdapter):
    model_class = "LlavaOnevisionForConditionalGeneration"
    model_types = ("llava_onevision",)
    adapter_name = "llava-ov"

    @dataclass
    class Options(LlavaNextAdapter.Options):
        checkpoint: str = "llava-hf/llava-onevision-qwen2-7b-ov-hf"

    def _strategy_extra(self) -> int:
        return 0  # SigLIP has no CLS; the processor counts the base view as num_image_tokens patches

    def _max_tiles(self) -> int:
        aspect = getattr(self.config, "vision_aspect_ratio", None) or "anyres_max_9"
        tiles = aspect.removeprefix("anyres_max_")
        if tiles == aspect or not tiles.isdigit():
            raise UserError(f"vision_aspect_ratio {aspect!r} of this checkpoint is not anyres_max_<N>: "
                            f"lmmsae's llava-ov adapter reads only that form")
        return int(tiles)

    @classmethod
    def build_processor(cls, config, tokenizer):
        """llava-hf/llava-onevision's: SigLIP normalisation (0.5), square base view, anyres_max_N tiles."""
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        vc = config.vision_config
        side = vc.image_size
        ip = LlavaOnevisionImageProcessor(size={"height": side, "width": side},
                                          image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints],
                                          image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
        video = LlavaOnevisionVideoProcessor(size={"height": side, "width": side})
        return LlavaOnevisionProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=video,
                                       num_image_tokens=(side // vc.patch_size) ** 2,
                                       vision_feature_select_strategy=config.vision_feature_select_strategy,
                                       vision_aspect_ratio=getattr(config, "vision_aspect_ratio", "anyres_max_9"))
