"""Helpers for scorer tests: toy-world samples turned into feature records from their ground truth."""

from __future__ import annotations

import json

import numpy as np

TINY_CLIP = "lmmsae-test-tiny-clip"


def make_tiny_clip(folder):
    """(model name, weights file) of a random tiny open_clip model, saved to `folder` and registered with
    open_clip.add_model_config, so it loads through create_model_and_transforms(name, pretrained=file)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = {"embed_dim": 16,
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    model = open_clip.create_model(TINY_CLIP)
    weights = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return TINY_CLIP, str(weights)


def grid_from_mask(mask: np.ndarray, grid: int = 8) -> np.ndarray:
    """A patch-grid activation map: each patch's fraction of `mask` pixels (as a latent firing there)."""
    h, w = mask.shape
    return mask.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3)).astype(np.float32)


def record_for(dataset, indices, keep, latent=0):
    """A FeatureRecord whose activation maps cover, in each sample, the objects `keep(obj)` accepts."""
    from lmmsae.records import FeatureExample, FeatureRecord

    examples = []
    for i in indices:
        s = dataset.sample(i)
        mask = np.zeros(s.image.size[::-1], dtype=bool)
        for obj in s.truth["objects"]:
            if keep(obj):
                mask |= obj["mask"]
        grid = grid_from_mask(mask)
        examples.append(FeatureExample(i, s.id, float(grid.mean()), image=s.image, activation_map=grid, truth=s.truth))
    return FeatureRecord(latent=latent, hookpoint="layers.2", examples=examples)


def indices_with(dataset, keep, n, start=0):
    """The first `n` sample indices from `start` that contain an object `keep(obj)` accepts."""
    out = []
    for i in range(start, len(dataset)):
        if any(keep(o) for o in dataset.sample(i).truth["objects"]):
            out.append(i)
            if len(out) == n:
                break
    return out
