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
