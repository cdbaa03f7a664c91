"""Built-in scorers."""

from lmmsae.hookspecs import hookimpl


@hookimpl
def register_scorers(register):
    register("clip", "lmmsae.scorers.clip:ClipScorer")
    register("clip-openai", "lmmsae.scorers.clip:ClipScorer", model="ViT-B-32", pretrained="openai")
    register("iou", "lmmsae.scorers.iou:IoUScorer")
    register("detection", "lmmsae.scorers.detection:DetectionScorer")
