"""Model adapters. Interface in `lmmsae.models.base`; the LLaVA family in llava, llava_next, llava_ov."""

from __future__ import annotations


def load_adapter(name: str, options: dict | None = None, device: str = "cpu", dtype: str = "float32"):
    """An adapter by registered name (e.g. "toy-llava", "llava-next") with option overrides."""
    from lmmsae import plugins

    component = plugins.get("models", name)
    return component.load()(component.options(options), device=device, dtype=dtype)
