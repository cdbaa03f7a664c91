"""Every image under a folder as a sample, in sorted path order (stable, so runs resume by index)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lmmsae.datasets.base import BadSample, Dataset, Sample
from lmmsae.errors import UserError


class ImageFolder(Dataset):
    @dataclass
    class Options:
        root: str
        prompt: str = ""
        extensions: list[str] = field(default_factory=lambda: [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif",
                                                             ".tif", ".tiff"])
        limit: int | None = None

    @classmethod
    def preflight(cls, options) -> None:
        root = Path(options.root).expanduser()
        if not root.is_dir():
            raise UserError(f"imagefolder root {str(root)!r} is not a folder: set -o dataset.root=<folder of images>")

    def __init__(self, options: "ImageFolder.Options"):
        super().__init__(options)
        self.preflight(options)
        root = Path(options.root).expanduser()
        exts = {e.lower() for e in options.extensions}
        self.paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if options.limit is not None:
            self.paths = self.paths[: options.limit]
        if not self.paths:
            raise UserError(f"imagefolder root {str(root)!r} holds no images with extensions {', '.join(sorted(exts))}")
        self.root = root
        labels = root / "labels.json"
        self.labels = json.loads(labels.read_text()) if labels.is_file() else {}

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, index: int) -> Sample:
        from PIL import Image, ImageOps, UnidentifiedImageError

        path = self.paths[index]
        sample_id = str(path.relative_to(self.root))
        try:
            with Image.open(path) as img:  # the first frame of an animation; EXIF orientation applied
                image = ImageOps.exif_transpose(img).convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise BadSample(sample_id, f"image cannot be read ({exc.__class__.__name__}): fix or remove it") from None
        label = self.labels.get(sample_id)
        return Sample(sample_id, image, self.options.prompt, {"caption": label} if label else None)
