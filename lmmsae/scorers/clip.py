"""CLIP score of an explanation against a feature's top images, beside the paper's random baseline.

CLIP score (torchmetrics convention) = 100 * max(cos(text, image), 0), averaged over the top-k
unmasked images. Baseline, as in the paper: the same label against `baseline_draws` draws of k
random dataset images (other than the feature's own top-k); its mean and standard deviation over
draws. `masked=True` also scores the masked views the explainer saw (`score_masked`).

`model="toy"` is the tiny CLIP shipped with the toy world; any open_clip model works with its
pretrained tag or a local weights file, e.g. model=ViT-B-32 pretrained=openai (the paper's), or
model=local-dir:/path/to/folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmmsae.errors import UserError
from lmmsae.records import Explanation, FeatureRecord
from lmmsae.scorers.base import Scorer, ScoringContext, example_image, label_of, skipped
from lmmsae.scorers.baselines import image_draws, over_draws

TOY = "toy"


def load_open_clip(model: str, pretrained: str = "", device: str = "cpu"):
    """(model, preprocess, tokenizer, identity) through open_clip; "toy" is the shipped tiny CLIP."""
    import open_clip

    if model == TOY:
        from lmmsae import toyworld

        if not toyworld.weights_available():
            raise UserError("the toy CLIP weights are not in this installation (lmmsae/toyworld/weights/clip); "
                            "pass -o scorers.N.model=ViT-B-32 -o scorers.N.pretrained=<tag or file>")
        model, pretrained = toyworld.clip_model_name(), ""
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained or None, device=device)
        tokenizer = open_clip.get_tokenizer(model)
    except RuntimeError as exc:
        raise UserError(f"open_clip cannot load model {model!r} with pretrained {pretrained!r}: "
                        f"{str(exc).splitlines()[0]} (see open_clip.list_pretrained())") from None
    return net.eval(), preprocess, tokenizer, {"name": model, "pretrained": pretrained or None}


def check_clip_weights(model: str, pretrained: str = "") -> None:
    """UserError when the open_clip weights `load_open_clip` would use are not here (cheap: no model loads).
    A pretrained tag not yet downloaded is fine online and an error offline (HF_HUB_OFFLINE)."""
    import os
    from pathlib import Path

    from lmmsae.checkpoints import in_hf_cache, looks_local, offline

    fix = "pass -o scorers.N.model=<open_clip name> -o scorers.N.pretrained=<tag or weights file>"
    if model == TOY:
        from lmmsae import toyworld

        if not toyworld.weights_available():
            raise UserError(f"the toy CLIP weights are not in this installation (lmmsae/toyworld/weights/clip); {fix}")
        return
    if model.startswith("local-dir:"):
        if not Path(model.split(":", 1)[1]).expanduser().is_dir():
            raise UserError(f"CLIP folder {model.split(':', 1)[1]!r} does not exist; {fix}")
        return
    if model.startswith("hf-hub:"):
        if offline() and not in_hf_cache(model.split(":", 1)[1], ("open_clip_config.json",)):
            raise UserError(f"CLIP {model!r} is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE); {fix}")
        return
    if not pretrained or Path(pretrained).expanduser().is_file():
        return
    if looks_local(pretrained):
        raise UserError(f"CLIP weights file {pretrained!r} does not exist; {fix}")
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        raise UserError(f"open_clip has no pretrained weights {pretrained!r} for model {model!r} "
                        f"(see open_clip.list_pretrained()); {fix}")
    if not offline():
        return
    repo, filename = os.path.split(cfg.get("hf_hub", ""))  # "org/model/" or "org/model/file.bin"
    names = tuple(n for n in (filename, "open_clip_model.safetensors", "open_clip_pytorch_model.bin") if n)
    url_file = Path("~/.cache/clip").expanduser() / os.path.basename(cfg.get("url", "") or "none")
    if not ((repo and in_hf_cache(repo, names)) or url_file.is_file()):
        raise UserError(f"the CLIP weights {model}/{pretrained} are not downloaded and downloads are off "
                        f"(HF_HUB_OFFLINE); {fix}")


class ClipEmbedder:
    """Unit-norm open_clip embeddings, with dataset images cached by index (baselines reuse them)."""

    def __init__(self, model: str, pretrained: str = "", device: str = "cpu", batch_size: int = 64):
        self.net, self.preprocess, self.tokenizer, self.identity = load_open_clip(model, pretrained, device)
        self.device = device
        self.batch_size = batch_size
        self._cache: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def images(self, images: list) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images[i:i + self.batch_size]])
            out.append(torch.nn.functional.normalize(self.net.encode_image(pixels.to(self.device)).float(), dim=-1))
        return torch.cat(out).cpu().numpy().astype(np.float64)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        return torch.nn.functional.normalize(self.net.encode_text(tokens).float(), dim=-1).cpu().numpy().astype(np.float64)

    def dataset_images(self, indices: list[int], load) -> np.ndarray:
        """Embeddings of dataset images by index; `load(index)` gives the PIL image of a new one."""
        todo = sorted({int(i) for i in indices if int(i) not in self._cache})
        if todo:
            for i, emb in zip(todo, self.images([load(i) for i in todo])):
                self._cache[i] = emb
        return np.stack([self._cache[int(i)] for i in indices])


def clip_scores(text: np.ndarray, images: np.ndarray) -> np.ndarray:
    """100 * max(cos, 0) of one unit text embedding against each unit image embedding."""
    return 100.0 * np.maximum(images @ text, 0.0)


class ClipScorer(Scorer):
    @dataclass
    class Options:
        model: str = TOY          # "toy" (shipped tiny CLIP) or any open_clip name / local-dir: / hf-hub:
        pretrained: str = ""      # open_clip pretrained tag (e.g. openai) or a local weights file
        k: int = 5                # top images scored
        baseline_draws: int = 30  # draws of k random dataset images
        masked: bool = False      # also score the masked views
        template: str = "{label}" # text given to CLIP
        batch_size: int = 64

    @classmethod
    def preflight(cls, options, dataset=None) -> None:
        check_clip_weights(options.model, options.pretrained)

    def __init__(self, options: "ClipScorer.Options | None" = None):
        super().__init__(options)
        if self.options.k < 1 or self.options.baseline_draws < 0:
            raise UserError("clip scorer: k must be >= 1 and baseline_draws >= 0")
        self._embedder: ClipEmbedder | None = None
        self._warmed = False

    def record_request(self) -> dict[str, Any]:
        return {"n": self.options.k, "render": "mask" if self.options.masked else None}

    def embedder(self, device: str = "cpu") -> ClipEmbedder:
        """The CLIP model, loaded on first use."""
        if self._embedder is None:
            o = self.options
            self._embedder = ClipEmbedder(o.model, o.pretrained, device, o.batch_size)
        return self._embedder

    def score(self, record: FeatureRecord, explanation: Explanation, ctx: ScoringContext) -> dict[str, Any]:
        o = self.options
        label = label_of(explanation)
        examples = record.examples[:o.k]
        if label is None:
            return skipped(f"explanation status {explanation.status!r}: {explanation.reason or 'no text'}")
        if not examples:
            return skipped("the feature has no activating examples")
        emb = self.embedder(ctx.device)
        if not self._warmed:
            self._warmed = True
            self._embed_dataset_when_baselines_reach_it(emb, ctx)
        text = emb.texts([o.template.format(label=label)])[0]
        if ctx.dataset is not None:
            top = emb.dataset_images([e.sample_index for e in examples], ctx.image)
        else:
            top = emb.images([example_image(e, ctx) for e in examples])
        per_image = clip_scores(text, top)
        out: dict[str, Any] = {
            "score": float(per_image.mean()), "per_image": [float(v) for v in per_image],
            "n": len(examples), "images": [e.sample_id for e in examples], "model": emb.identity,
            "status": "ok",
        }
        if o.masked:
            rendered = [e.rendered for e in examples if e.rendered is not None]
            out["score_masked"] = float(clip_scores(text, emb.images(rendered)).mean()) if rendered else None
        out.update(self._baseline(record, text, emb, ctx))
        return out

    def _embed_dataset_when_baselines_reach_it(self, emb: ClipEmbedder, ctx: ScoringContext, chunk: int = 1024) -> None:
        """Embed the whole dataset in one pass, up front, when the random baselines (baseline_draws x k
        images per feature, over every explained feature) are expected to reach most of it anyway.
        Otherwise the first features pay for filling the embedding cache and later ones cost almost
        nothing, and the progress bar's ETA (read from the early rate) is several times too long."""
        n, per = (len(ctx.dataset) if ctx.dataset is not None else 0), self.options.baseline_draws * self.options.k
        if n == 0 or per == 0 or 1 - (1 - min(1.0, per / n)) ** max(1, len(ctx.labels)) < 0.5:
            return
        import sys

        print(f"[clip] embedding the {n} dataset images once, for the random baselines", file=sys.stderr, flush=True)
        for start in range(0, n, chunk):
            emb.dataset_images(list(range(start, min(n, start + chunk))), ctx.image)

    def _baseline(self, record: FeatureRecord, text: np.ndarray, emb: ClipEmbedder, ctx: ScoringContext) -> dict[str, Any]:
        o = self.options
        kind = {"kind": "random-images", "draws": o.baseline_draws, "k": o.k,
                "what": "the same label against k random dataset images per draw (not the feature's top-k)"}
        if ctx.dataset is None or o.baseline_draws == 0:
            return {"baseline_mean": None, "baseline_std": None, "baseline": {**kind, "draws": 0}}
        rng = ctx.rng(record.latent, "clip")
        draws = image_draws(rng, len(ctx.dataset), o.baseline_draws, o.k,
                            exclude=[e.sample_index for e in record.examples[:o.k]])
        mean, std, _ = over_draws(
            draws, lambda d: clip_scores(text, emb.dataset_images(d, ctx.image)).mean())
        return {"baseline_mean": mean, "baseline_std": std, "baseline": kind}
