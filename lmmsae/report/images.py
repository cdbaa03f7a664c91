"""Each feature's top images as small PNG files, in every view the feature page toggles between:
`mask` (what the explainer saw: inactive patches dimmed), `heatmap` (where and how strongly it
fires), `crop` (the active region) and `image` (the original). Drawn by lmmsae.render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODES = ("mask", "heatmap", "crop", "image")


def write_feature_images(store, latent: int, dataset, folder: Path, n: int, px: int) -> list[dict[str, Any]]:
    """PNGs of latent `latent`'s top `n` examples under `folder` (<rank>-<mode>.png, longer side at most
    `px`); returns per example its activation, sample id and file name per mode."""
    from lmmsae.render import render

    record = store.record(latent, n=n, selection="top", dataset=dataset, render=None)
    examples = [e for e in record.examples if e.image is not None and e.activation_map is not None]
    if not examples:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    vmax = max(float(e.activation_map.max(initial=0.0)) for e in examples) or None
    out = []
    for rank, ex in enumerate(examples):
        box = store.sample_info(ex.sample_index).views[0].box
        views = {"mask": render("mask", ex.image, ex.activation_map, box=box),
                 "heatmap": render("heatmap", ex.image, ex.activation_map, box=box, vmax=vmax),
                 "crop": render("crop", ex.image, ex.activation_map, box=box),
                 "image": ex.image.convert("RGB")}
        files = {}
        for mode in MODES:
            image = views[mode]
            image.thumbnail((px, px))
            name = f"{rank}-{mode}.png"
            image.save(folder / name, format="PNG", optimize=False)
            files[mode] = name
        out.append({"activation": float(ex.activation), "sample_id": ex.sample_id,
                    "sample_index": int(ex.sample_index), "files": files})
    return out
