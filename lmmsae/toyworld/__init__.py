"""The toy world: shapes images with ground truth, a tiny trained LLaVA and a tiny trained CLIP.

The weights ship inside the package and load through the ordinary code paths, offline::

    from transformers import AutoProcessor, LlavaForConditionalGeneration
    model = LlavaForConditionalGeneration.from_pretrained(LLAVA_DIR)
    processor = AutoProcessor.from_pretrained(LLAVA_DIR)

    import open_clip
    model, _, preprocess = open_clip.create_model_and_transforms(clip_model_name())
    tokenizer = open_clip.get_tokenizer(clip_model_name())

Nothing here imports torch at import time. Retrain with `python -m lmmsae.toyworld.train --seed 0`.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
LLAVA_DIR = WEIGHTS_DIR / "llava"
CLIP_DIR = WEIGHTS_DIR / "clip"
EVAL_JSON = WEIGHTS_DIR / "eval.json"
TRAINING_LOG = WEIGHTS_DIR / "TRAINING_LOG.txt"

IMAGE_SIZE = 96  # pixels; the vision towers cut 8 x 8 patches of 12 px
PATCH_SIZE = 12
PROMPT = "<image>"  # the captioning / explaining prompt: the image alone, as in the paper
QUESTION_TEMPLATE = "<image> {question}"  # how the toy LLaVA is asked a yes/no probe


def weights_available() -> bool:
    """True when both shipped models are present."""
    return (LLAVA_DIR / "model.safetensors").is_file() and (CLIP_DIR / "open_clip_model.safetensors").is_file()


def clip_model_name(clip_dir: str | Path | None = None) -> str:
    """The open_clip model name of the shipped tiny CLIP ('local-dir:<abs path>': config, weights and
    word-level tokenizer all come from that folder, never from the hub)."""
    return "local-dir:" + str(Path(clip_dir or CLIP_DIR).resolve())


def load_llava(path: str | Path | None = None, dtype=None):
    """(model, processor) of the tiny LLaVA, in eval mode."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = str(path or LLAVA_DIR)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = LlavaForConditionalGeneration.from_pretrained(path, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def load_clip(path: str | Path | None = None):
    """(model, preprocess, tokenizer) of the tiny CLIP through open_clip, in eval mode."""
    import open_clip

    name = clip_model_name(path)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    return model.eval(), preprocess, tokenizer


def caption(model, processor, images, max_new_tokens: int = 40, prompt: str = PROMPT) -> list[str]:
    """Greedy captions (or answers to `prompt`) for a list of PIL images."""
    import torch

    images = list(images)
    batch = processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    return [s.strip() for s in processor.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
