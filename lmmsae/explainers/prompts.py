"""The paper's explanation protocol: top-k masked images, a fixed system prompt and instructions.

Written in our own words after the protocol of Zhang et al. (arXiv 2411.14982): the explainer sees
the top 5 images with everything but the feature's active regions dimmed, is told to look only at
the highlighted regions, ignore images with no or tiny highlights, find their common visual pattern,
answer briefly and literally, and end with an `[EXPLANATION]:` line, or say it cannot explain.
"""

from __future__ import annotations

from typing import Any

from lmmsae.backends.base import Query
from lmmsae.records import FeatureExample, FeatureRecord

SYSTEM_PROMPT = (
    "You are analysing one neuron (a feature) inside a vision-language model. You are shown images in "
    "which the regions where this neuron fires are highlighted and everything else is darkened."
)

INSTRUCTIONS = (
    "Look only at the highlighted (bright) regions of the images. Ignore any image with no highlighted "
    "region or only a tiny one. Find the visual pattern that the highlighted regions have in common: an "
    "object, a part of an object, a colour, a texture, a shape, a kind of scene, or text. Describe it "
    "briefly and literally, in a few words, without speculating about what the neuron is for. "
    "End your answer with one line of the form\n"
    "[EXPLANATION]: <your short explanation>\n"
    "If the highlighted regions have nothing in common, end with the line\n"
    "[EXPLANATION]: Cannot explain"
)

USER_LINE = "Here are the images (highlighted regions show where the neuron fires)."

RENDERS = ("mask", "heatmap", "crop", "original")


def example_image(example: FeatureExample, render: str = "mask"):
    """What the explainer sees for one example: the stored rendering, else one made by lmmsae.render."""
    if render != "original" and example.rendered is not None:
        return example.rendered
    if example.image is None:
        return None
    if render == "original" or example.activation_map is None:
        return example.image
    from lmmsae.render import render as do_render

    return do_render(render, example.image, example.activation_map)


def record_images(record: FeatureRecord, n_images: int, render: str = "mask") -> list[Any]:
    """The top `n_images` examples' images, in the record's order (strongest first)."""
    images = []
    for example in record.examples:
        if len(images) >= n_images:
            break
        image = example_image(example, render)
        if image is not None:
            images.append(image)
    return images


def explanation_query(record: FeatureRecord, n_images: int = 5, render: str = "mask",
                      prompt: str = "", system: str | None = None) -> Query:
    """The request for one feature: its top images under the system prompt and the instructions ("" prompt =
    the paper's; system None = the paper's system prompt, "" = none). The fixed part is the system prompt,
    the same for every feature, so APIs and servers can cache it."""
    system = SYSTEM_PROMPT if system is None else system
    return Query(images=record_images(record, n_images, render), prompt=USER_LINE,
                 system="\n\n".join(p for p in (system, prompt or INSTRUCTIONS) if p), reuse_system=True)
