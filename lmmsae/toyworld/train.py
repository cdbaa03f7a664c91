"""Train the toy world's tiny CLIP and tiny LLaVA from a seed (CPU, a few tens of minutes).

    python -m lmmsae.toyworld.train --seed 0 --out lmmsae/toyworld/weights

1. CLIP (open_clip, custom config, word-level tokenizer, EOS pooling), InfoNCE on captions.
2. LLaVA (transformers LlavaForConditionalGeneration: CLIP vision tower + Llama LM), its vision tower
   initialised from the contrastive CLIP's image tower (as real LLaVA does), trained on
   full captions (objects, then background), masked single-object views (target: that object's phrase),
   masked background-only views (target: 'a striped background') and yes/no questions (answers
   up-weighted in the loss).
3. Evaluation on held-out images (lmmsae.toyworld.evaluate) -> eval.json; log -> TRAINING_LOG.txt.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np

from lmmsae.datasets.shapes import (COLORS, SHAPES, ShapesDataset, background_view, describe_background, describe_object,
                                    masked_view, patch_mask, probe, question_for)
from lmmsae.toyworld import IMAGE_SIZE, PATCH_SIZE, PROMPT, QUESTION_TEMPLATE, WEIGHTS_DIR
from lmmsae.toyworld.vocab import VOCAB, build_tokenizer

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation (both models)
STD = (0.26862954, 0.26130258, 0.27577711)
N_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2

VISION = dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=192, intermediate_size=768,
              num_hidden_layers=4, num_attention_heads=4, hidden_act="gelu", layer_norm_eps=1e-5)
TEXT = dict(vocab_size=len(VOCAB), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=160,
            tie_word_embeddings=True, bos_token_id=VOCAB["<s>"], eos_token_id=VOCAB["</s>"],
            pad_token_id=VOCAB["<pad>"], rms_norm_eps=1e-5)
CLIP_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "width": VISION["hidden_size"],
                   "layers": VISION["num_hidden_layers"],
                   "head_width": VISION["hidden_size"] // VISION["num_attention_heads"], "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 32, "vocab_size": len(VOCAB), "width": 128, "heads": 4, "layers": 3,
                 "hf_tokenizer_name": "toyworld-word-level (loaded from this folder)",
                 "pad_id": VOCAB["<pad>"], "eos_id": VOCAB["</s>"], "pool_type": "eos"},
}


class Log:
    def __init__(self, path: Path | None):
        self.lines: list[str] = []
        self.path = path
        self.t0 = time.time()

    def __call__(self, msg: str):
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.lines.append(line)
        if self.path:
            self.path.write_text("\n".join(self.lines) + "\n")


def to_pixels(images) -> "torch.Tensor":
    """PIL images (already IMAGE_SIZE) -> normalised float tensor, exactly as the processors do."""
    import torch

    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0
    arr = (arr - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return torch.from_numpy(arr.transpose(0, 3, 1, 2).copy())


def cosine_lr(step: int, total: int, warmup: int, base: float, floor: float = 0.05, progress: float | None = None) -> float:
    """Linear warm-up then cosine decay to `floor` x base; `progress` (0..1) overrides step/total."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup) if progress is None else progress
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


class Schedule:
    """Progress through a phase: steps done / steps planned, or, when the machine is too slow (shared
    cores), time spent / time budget, whichever is further. With a free machine the run is exactly
    step-based (reproducible); on a loaded one the schedule still decays fully and stops in time."""

    def __init__(self, steps: int, warmup: int, budget_min: float):
        self.steps, self.warmup, self.budget = steps, warmup, budget_min * 60
        self.t0 = time.time()
        self.time_bound = False

    def progress(self, step: int) -> float:
        by_steps = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.budget <= 0 or step < self.warmup:
            return by_steps
        by_time = (time.time() - self.t0) / self.budget
        if by_time > by_steps:
            self.time_bound = True
        return max(by_steps, by_time)

    def done(self, step: int) -> bool:
        return step >= self.steps or (step > self.warmup and self.progress(step) >= 1.0)


def make_readable(folder: Path):
    for p in folder.rglob("*"):
        if p.is_file():
            p.chmod(p.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


# ----------------------------------------------------------------------------- CLIP


def train_clip(args, data: ShapesDataset, log: Log, out: Path):
    import open_clip
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    model = open_clip.model.CLIP(**CLIP_CFG)
    tok = build_tokenizer("clip")
    log(f"CLIP: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.clip_steps} steps "
        f"batch {args.clip_batch}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=args.clip_lr, betas=(0.9, 0.98), eps=1e-6)
    model.train()
    cursor = 0
    t0 = time.time()
    sched = Schedule(args.clip_steps, args.clip_warmup, args.clip_minutes)
    step = 0
    while not sched.done(step):
        prog = sched.progress(step)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.clip_steps, args.clip_warmup, args.clip_lr, progress=prog)
        samples = [data.sample(cursor + i) for i in range(args.clip_batch)]
        cursor += args.clip_batch
        pixels = to_pixels([s.image for s in samples])
        text = tok([s.truth["caption"] for s in samples], padding="max_length", max_length=32, truncation=True,
                   return_tensors="pt").input_ids
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            img = F.normalize(model.encode_image(pixels).float(), dim=-1)
            txt = F.normalize(model.encode_text(text).float(), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.t()
        labels = torch.arange(len(samples))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.clip_steps - 1:
            acc = (logits.argmax(1) == labels).float().mean().item()
            log(f"clip step {step:5d} loss {loss.item():.4f} batch i2t acc {acc:.3f} progress {prog:.3f} "
                f"scale {model.logit_scale.exp().item():.1f} ({(time.time() - t0) / (step + 1):.2f} s/step)")
        step += 1
    log(f"CLIP trained {step} steps ({'time-bound schedule' if sched.time_bound else 'step schedule'})")
    args.clip_steps_done = step
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(out / "open_clip_model.safetensors"))
    config = {"model_cfg": CLIP_CFG,
              "preprocess_cfg": {"mean": list(MEAN), "std": list(STD), "interpolation": "bicubic",
                                 "resize_mode": "shortest"}}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save_pretrained(str(out))
    make_readable(out)
    log(f"CLIP saved to {out} in {time.time() - t0:.0f}s")
    return model


# ----------------------------------------------------------------------------- LLaVA


def build_llava(vocab_size: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**VISION), text_config=LlamaConfig(**TEXT),
        image_token_index=VOCAB["<image>"], image_seq_length=N_PATCHES, projector_hidden_act="gelu",
        vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, TEXT[key])
    model.generation_config.max_new_tokens = 40
    model.generation_config.do_sample = False
    return model


def build_processor():
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False, do_resize=True, resample=3, image_mean=list(MEAN), image_std=list(STD),
        do_convert_rgb=True)
    return LlavaProcessor(image_processor=image_processor, tokenizer=build_tokenizer("llava"),
                          patch_size=PATCH_SIZE, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, image_token="<image>")


def clip_visual_to_hf(visual_sd: dict) -> dict:
    """open_clip VisionTransformer weights -> transformers CLIPVisionModel.vision_model weights."""
    out = {
        "embeddings.patch_embedding.weight": visual_sd["conv1.weight"],
        "embeddings.class_embedding": visual_sd["class_embedding"],
        "embeddings.position_embedding.weight": visual_sd["positional_embedding"],
        "pre_layrnorm.weight": visual_sd["ln_pre.weight"], "pre_layrnorm.bias": visual_sd["ln_pre.bias"],
        "post_layernorm.weight": visual_sd["ln_post.weight"], "post_layernorm.bias": visual_sd["ln_post.bias"],
    }
    for i in range(VISION["num_hidden_layers"]):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        qw, kw, vw = visual_sd[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = visual_sd[src + "attn.in_proj_bias"].chunk(3)
        out.update({
            dst + "self_attn.q_proj.weight": qw, dst + "self_attn.q_proj.bias": qb,
            dst + "self_attn.k_proj.weight": kw, dst + "self_attn.k_proj.bias": kb,
            dst + "self_attn.v_proj.weight": vw, dst + "self_attn.v_proj.bias": vb,
            dst + "self_attn.out_proj.weight": visual_sd[src + "attn.out_proj.weight"],
            dst + "self_attn.out_proj.bias": visual_sd[src + "attn.out_proj.bias"],
            dst + "layer_norm1.weight": visual_sd[src + "ln_1.weight"],
            dst + "layer_norm1.bias": visual_sd[src + "ln_1.bias"],
            dst + "layer_norm2.weight": visual_sd[src + "ln_2.weight"],
            dst + "layer_norm2.bias": visual_sd[src + "ln_2.bias"],
            dst + "mlp.fc1.weight": visual_sd[src + "mlp.c_fc.weight"],
            dst + "mlp.fc1.bias": visual_sd[src + "mlp.c_fc.bias"],
            dst + "mlp.fc2.weight": visual_sd[src + "mlp.c_proj.weight"],
            dst + "mlp.fc2.bias": visual_sd[src + "mlp.c_proj.bias"],
        })
    return out


def rendered_view(sample, rng: np.random.Generator, background_share: float):
    """(view, target) drawn the way `lmmsae.render.mask_image` shows an SAE feature to the explainer: a
    patch grid upsampled bilinearly, so region edges fade softly. The grid holds one object's patches
    (target: its phrase), or, with probability `background_share`, a random set of object-free patches
    (target: the background's phrase)."""
    from lmmsae.render import mask_image

    grid_size = IMAGE_SIZE // PATCH_SIZE
    objects = sample.truth["objects"]

    def grid_of(mask):
        return mask.reshape(grid_size, PATCH_SIZE, grid_size, PATCH_SIZE).any(axis=(1, 3))

    if rng.random() < background_share:
        occupied = grid_of(np.any([o["mask"] for o in objects], axis=0))
        free = ~occupied
        grid = free & (rng.random(free.shape) < rng.uniform(0.15, 1.0))
        if not grid.any():
            grid = free
        return mask_image(sample.image, grid.astype(np.float32)), describe_background(sample.truth["background"])
    k = int(rng.integers(len(objects)))
    return mask_image(sample.image, grid_of(objects[k]["mask"]).astype(np.float32)), describe_object(objects[k])


def llava_example(sample, rng: random.Random, masked_share: float, question_share: float,
                  background_share: float = 0.25, positional_share: float = 0.0, rendered_share: float = 0.0,
                  question_template: str = QUESTION_TEMPLATE, question_sample=None):
    """(image, prompt, answer) for one training sample; the prompt holds "<image>" where the image goes.
    (Extra random draws are made only for the options that are on, so phase 1 keeps its old stream.)
    `question_sample`, if given, replaces `sample` when a question is drawn (the one-object curriculum)."""
    return llava_example_probe(sample, rng, masked_share, question_share, background_share, positional_share,
                               rendered_share, question_template, question_sample)[:3]


def llava_example_probe(sample, rng: random.Random, masked_share: float, question_share: float,
                        background_share: float = 0.25, positional_share: float = 0.0, rendered_share: float = 0.0,
                        question_template: str = QUESTION_TEMPLATE, question_sample=None):
    """`llava_example` plus what the auxiliary patch losses need: (image, prompt, answer, sample, asked), where
    `sample` is the sample the image was drawn from, `asked` the probe's (colour, shape, position) for a
    question, else None; the image `is sample.image` when it is unmasked."""
    objects = sample.truth["objects"]
    u = rng.random()
    if u < masked_share:
        if rendered_share and rng.random() < rendered_share:
            view, target = rendered_view(sample, np.random.default_rng(rng.getrandbits(32)), background_share)
            return view, PROMPT, target, sample, None
        if rng.random() < background_share:  # only background kept: name the background
            view = background_view(sample, np.random.default_rng(rng.getrandbits(32)), PATCH_SIZE)
            return view, PROMPT, describe_background(sample.truth["background"]), sample, None
        k = rng.randrange(len(objects))
        keep = objects[k]["mask"]
        if rng.random() < 0.5:  # patch-aligned masks, as produced from SAE activation maps
            keep = patch_mask(keep, PATCH_SIZE)
        elif rng.random() < 0.5:  # slightly grown pixel masks
            keep = patch_mask(keep, 3)
        return masked_view(sample.image, keep), PROMPT, describe_object(objects[k]), sample, None
    if u < masked_share + question_share:
        sample = question_sample if question_sample is not None else sample
        present = rng.random() < 0.5
        positional = bool(positional_share) and rng.random() < positional_share
        color, shape, position = probe(sample.truth, rng, present, positional)
        return sample.image, question_template.format(question=question_for(color, shape, position)), \
            "yes" if present else "no", sample, (color, shape, position)
    return sample.image, PROMPT, sample.truth["caption"], sample, None


COLOR_CLASSES = ("none", *COLORS)  # targets of the training-only patch heads (class 0: no object)
SHAPE_CLASSES = ("none", *SHAPES)


def patch_targets(truth: dict, asked=None, min_cover: float = 0.1, patch: int = PATCH_SIZE):
    """Per image token (patch row-major), the auxiliary targets: colour class, shape class (COLOR_CLASSES /
    SHAPE_CLASSES) of the object covering the patch and, when `asked` = (colour, shape, position or None) is
    given, 1 if that object is the asked one (at the asked position, if any) else 0. A patch an object
    covers by less than `min_cover` of its pixels (but more than none) is ambiguous: -100 in all three."""
    grid = IMAGE_SIZE // patch
    color = np.zeros(grid * grid, dtype=np.int64)
    shape = np.zeros(grid * grid, dtype=np.int64)
    match = np.zeros(grid * grid, dtype=np.int64)
    for o in truth["objects"]:
        cover = o["mask"][:grid * patch, :grid * patch].reshape(grid, patch, grid, patch).mean(axis=(1, 3)).ravel()
        full, part = cover >= min_cover, (cover > 0) & (cover < min_cover)
        color[full] = COLOR_CLASSES.index(o["color"])
        shape[full] = SHAPE_CLASSES.index(o["shape"])
        if asked is not None:
            c, s, pos = asked
            match[full] = int(o["color"] == c and o["shape"] == s and (pos is None or o["position"] == pos))
        edge = part & (color == 0)  # touched only by an edge, and by no object properly
        for t in (color, shape, match):
            t[edge] = -100
    if asked is None:
        match[:] = -100
    return color, shape, match


class PatchHeads:
    """Training-only linear heads on LM hidden states at the image tokens (dropped at save): colour and shape
    of the patch's object, and whether the patch holds the object a question (asked before the image) names."""

    def __init__(self, hidden: int, seed: int = 0):
        import torch

        g = torch.Generator().manual_seed(seed)
        def linear(n):
            lin = torch.nn.Linear(hidden, n)
            with torch.no_grad():
                lin.weight.normal_(0, 0.02, generator=g)
                lin.bias.zero_()
            return lin
        self.color, self.shape, self.match = linear(len(COLOR_CLASSES)), linear(len(SHAPE_CLASSES)), linear(2)

    def parameters(self):
        return [p for m in (self.color, self.shape, self.match) for p in m.parameters()]

    def loss(self, hidden, ids, targets):
        """Mean of the three cross-entropies over valid patches; `hidden` (B, T, H) at one layer, `ids` the
        input ids (image tokens located by id), `targets` three (B, N_PATCHES) long tensors."""
        import torch.nn.functional as F

        img = hidden[ids == VOCAB["<image>"]].float()  # (B * N_PATCHES, H), batch-major, patches row-major
        img = F.layer_norm(img, img.shape[-1:])  # the residual stream's scale grows with depth
        total, parts = 0.0, {}
        for name, head, t in (("color", self.color, targets[0]), ("shape", self.shape, targets[1]),
                              ("match", self.match, targets[2])):
            t = t.reshape(-1)
            if (t != -100).any():
                parts[name] = F.cross_entropy(head(img), t, ignore_index=-100)
                total = total + parts[name]
        return total, parts


def add_lm_layers(model, k: int):
    """`model` with k more LM layers on top that start as the identity (zero attention output and MLP down
    projections): room for a new skill (yes/no) that changes no hidden state below them."""
    import torch
    from transformers import LlavaForConditionalGeneration

    if k < 1:  # layers[-0:] is every layer: k = 0 would silence the whole LM
        raise ValueError(f"add_lm_layers: k={k}, at least 1 layer must be added")
    config = model.config
    config.text_config.num_hidden_layers += k
    state, generation = model.state_dict(), model.generation_config
    grown = LlavaForConditionalGeneration(config)
    grown.load_state_dict(state, strict=False)
    grown.generation_config = generation
    with torch.no_grad():
        for layer in grown.model.language_model.layers[-k:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return grown


def freeze_below_lm_layer(model, n: int) -> None:
    """Train only LM layers >= n and the final norm. Everything the hidden states up to layers.{n-1} depend on
    (vision tower, projector, embeddings, which are tied to the output head, LM layers < n) is frozen, so the
    activations the toy SAEs read at those hookpoints stay bit-identical."""
    for name, p in model.named_parameters():
        parts = name.split(".")
        if "language_model" in parts and "layers" in parts:
            p.requires_grad_(int(parts[parts.index("layers") + 1]) >= n)
        else:
            p.requires_grad_(name.endswith("language_model.norm.weight"))


def attention_target_loss(attentions, examples, tok):
    """Mean -log of the attention mass that head 0 of the last LM layer puts, from a question's last token, on
    the image tokens of patches holding the asked object (on <s> when no patch does). A dense signal for the
    search a yes/no answer needs: with the answer's loss alone the tiny LM stays at a constant answer.
    `attentions`: (B, heads, T, T) of the last layer; `examples` as `llava_example_probe` returns them."""
    import torch

    terms = []
    for i, (_, prompt, _, smp, asked) in enumerate(examples):
        if asked is None:
            continue
        ids = prompt_ids(prompt, tok)
        image = [t for t, x in enumerate(ids) if x == VOCAB["<image>"]]
        match = patch_targets(smp.truth, asked)[2]
        where = [image[j] for j in range(N_PATCHES) if match[j] == 1] or [0]
        terms.append(-torch.log(attentions[i, 0, len(ids) - 1, where].sum() + 1e-6))
    return torch.stack(terms).mean() if terms else None


def prompt_ids(prompt: str, tok) -> list[int]:
    """[<s>] + the prompt's tokens with "<image>" expanded to N_PATCHES image tokens, as the processor does."""
    out = [VOCAB["<s>"]]
    for i in tok(prompt, add_special_tokens=False).input_ids:
        out += [i] * N_PATCHES if i == VOCAB["<image>"] else [i]
    return out


def encode_batch(examples, tok, answer_weight: float = 1.0):
    """input_ids (prompt, answer, eos) right-padded; labels on answer + eos only; per-label weights:
    `answer_weight` for the answers to questions (one word, easily drowned by the captions' ~25 tokens
    each), 1 elsewhere."""
    import torch

    rows, labels, weights = [], [], []
    for _, prompt, answer in examples:
        head = prompt_ids(prompt, tok)
        tail = tok(answer, add_special_tokens=False).input_ids + [VOCAB["</s>"]]
        rows.append(head + tail)
        labels.append([-100] * len(head) + tail)
        weights.append([0.0] * len(head) + [answer_weight if prompt != PROMPT else 1.0] * len(tail))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), VOCAB["<pad>"], dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    wts = torch.zeros((len(rows), width))
    for i, (r, l, w) in enumerate(zip(rows, labels, weights)):
        ids[i, :len(r)] = torch.tensor(r)
        lab[i, :len(l)] = torch.tensor(l)
        wts[i, :len(w)] = torch.tensor(w)
        att[i, :len(r)] = 1
    return ids, att, lab, wts


def add_prefix_answers(ids, labels, weights, matches, weight: float):
    """Dense answer targets for questions asked before the image: the logits at image token k (k < 63) are
    trained to say "yes" if one of patches 0..k holds the asked object, else "no" (the answer for the part
    of the image read so far; at the last image token this is the answer itself, already labelled).
    `matches`: per example, the per-patch match targets of `patch_targets` (-100 counts as no) or None.
    Edits `labels` and `weights` in place."""
    import torch

    yes, no = VOCAB["yes"], VOCAB["no"]
    for i, m in enumerate(matches):
        if m is None:
            continue
        pos = (ids[i] == VOCAB["<image>"]).nonzero().flatten()
        seen = torch.from_numpy(np.maximum.accumulate(np.asarray(m) == 1))
        labels[i, pos[1:]] = torch.where(seen[:-1], yes, no)
        weights[i, pos[1:]] = weight


def weighted_lm_loss(logits, labels, weights):
    """Next-token cross-entropy, weighted per label (the weighted mean over labelled tokens)."""
    import torch.nn.functional as F

    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                         reduction="none")
    w = weights.reshape(-1)
    return (ce * w).sum() / w.sum()


def quick_caption_acc(model, data: ShapesDataset, n: int = 64) -> float:
    """Exact-caption accuracy on n held-out images (greedy, no processor: for progress logging)."""
    import torch

    samples = [data.sample(i) for i in range(n)]
    ids = torch.tensor([[VOCAB["<s>"]] + [VOCAB["<image>"]] * N_PATCHES] * n)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             pixel_values=to_pixels([s.image for s in samples]), max_new_tokens=40,
                             do_sample=False)
    tok = build_tokenizer("llava")
    texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return float(np.mean([t.strip() == s.truth["caption"] for t, s in zip(texts, samples)]))


def quick_yes_no(model, data: ShapesDataset, template: str = QUESTION_TEMPLATE, n: int = 32) -> str:
    """Whole-image yes/no accuracy on present / absent probes (one each per held-out image; "yes" vs "no" logit
    after the prompt, no processor: for progress logging)."""
    import torch

    from lmmsae.toyworld.evaluate import probe_batch

    tok = build_tokenizer("llava")
    images, questions, present = probe_batch([data.sample(i) for i in range(n)])
    rows = [prompt_ids(template.format(question=q), tok) for q in questions]
    width = max(map(len, rows))
    ids = torch.tensor([[VOCAB["<pad>"]] * (width - len(r)) + r for r in rows])  # left-padded
    att = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att, pixel_values=to_pixels(images)).logits[:, -1]
    said = (logits[:, VOCAB["yes"]] > logits[:, VOCAB["no"]]).numpy()
    present = np.asarray(present)
    return f"present {said[present].mean():.3f} absent {(~said[~present]).mean():.3f}"


def train_llava(args, data: ShapesDataset, heldout: ShapesDataset, clip_model, log: Log, out: Path):
    import torch

    torch.manual_seed(args.seed)
    if args.init:  # phase 2: continue from trained weights
        from transformers import LlavaForConditionalGeneration

        model = LlavaForConditionalGeneration.from_pretrained(str(args.init / "llava"))
        log(f"LLaVA continued from {args.init / 'llava'}")
    else:
        model = build_llava(len(VOCAB))
    if clip_model is not None and not args.init:
        missing = model.model.vision_tower.load_state_dict(
            clip_visual_to_hf(clip_model.visual.state_dict()), strict=True)
        log(f"LLaVA vision tower initialised from the CLIP image tower ({missing})")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"LLaVA: {n_params / 1e6:.2f}M parameters, {args.llava_steps} steps batch {args.llava_batch}, "
        f"masked share {args.masked_share} (background-only {args.background_share}), question share "
        f"{args.question_share} (answer weight {args.answer_weight}, positional {args.positional_share}), "
        f"rendered share of masked views {args.rendered_share}")
    if args.add_lm_layers:
        model = add_lm_layers(model, args.add_lm_layers)
        log(f"LLaVA: {args.add_lm_layers} LM layer(s) added on top, starting as the identity "
            f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    if args.train_from_lm_layer is not None:
        freeze_below_lm_layer(model, args.train_from_lm_layer)
        log(f"LLaVA: only LM layers >= {args.train_from_lm_layer} and the final norm train "
            f"({sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M parameters); "
            f"hidden states up to layers.{args.train_from_lm_layer - 1} stay unchanged")
    if args.attention_target_weight > 0:
        model.set_attn_implementation("eager")  # the supervised attention weights must be returned
        log(f"attention of head 0 of the last LM layer supervised at questions (weight {args.attention_target_weight})")
    vision = [p for n, p in model.named_parameters() if "vision_tower" in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if "vision_tower" not in n and p.requires_grad]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if args.vision_lr_scale > 0 and vision:
        groups.insert(0, {"params": vision, "lr_scale": args.vision_lr_scale})
    else:  # frozen vision tower: no gradients computed for it at all
        for p_ in vision:
            p_.requires_grad_(False)
        log("LLaVA vision tower frozen (--vision-lr-scale 0)")
    heads = None
    if args.patch_aux_weight > 0:
        heads = PatchHeads(model.config.text_config.hidden_size, args.seed)
        groups.append({"params": heads.parameters(), "lr_scale": args.aux_lr_scale})
        log(f"patch heads on LM layer {args.aux_layer} (colour, shape, asked object), loss weight "
            f"{args.patch_aux_weight}; questions as {args.question_template!r}; one-object questions for the first "
            f"{args.curriculum_steps} steps")
    opt = torch.optim.AdamW(groups, lr=args.llava_lr, betas=(0.9, 0.98), weight_decay=0.01)
    tok = build_tokenizer("llava")
    rng = random.Random(args.seed)
    single = ShapesDataset(ShapesDataset.Options(n=10**9, seed=args.seed, split="train", image_size=IMAGE_SIZE,
                                                 max_objects=1)) if args.curriculum_steps else None
    model.train()
    t0 = time.time()
    cursor = 20_000_000 if args.init else 10_000_000  # disjoint from the CLIP's (and phase 1's) training indices
    running, aux_running = None, {}
    sched = Schedule(args.llava_steps, args.llava_warmup, args.llava_minutes)
    step = 0
    while not sched.done(step):
        prog = sched.progress(step)
        lr = cosine_lr(step, args.llava_steps, args.llava_warmup, args.llava_lr, progress=prog)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        curriculum = step < args.curriculum_steps
        examples = [llava_example_probe(data.sample(cursor + i), rng, args.masked_share, args.question_share,
                                        args.background_share, args.positional_share, args.rendered_share,
                                        args.question_template, single.sample(cursor + i) if curriculum else None)
                    for i in range(args.llava_batch)]
        cursor += args.llava_batch
        ids, att, lab, wts = encode_batch([e[:3] for e in examples], tok, args.answer_weight)
        pixels = to_pixels([e[0] for e in examples])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out_ = model(input_ids=ids, attention_mask=att, pixel_values=pixels, output_hidden_states=heads is not None,
                         output_attentions=args.attention_target_weight > 0)
        if args.prefix_answer_weight > 0:
            add_prefix_answers(ids, lab, wts, [patch_targets(smp.truth, asked)[2] if asked is not None else None
                                               for _, _, _, smp, asked in examples], args.prefix_answer_weight)
        loss = weighted_lm_loss(out_.logits, lab, wts)
        if args.attention_target_weight > 0:
            attn = attention_target_loss(out_.attentions[-1], examples, tok)
            if attn is not None:
                loss = loss + args.attention_target_weight * attn
                aux_running["attention"] = attn.item() if "attention" not in aux_running else \
                    0.95 * aux_running["attention"] + 0.05 * attn.item()
        if heads is not None:
            # colour / shape targets on unmasked images (captions, questions), the asked object's on questions
            targets = [patch_targets(smp.truth, asked) if img is smp.image else
                       tuple(np.full(N_PATCHES, -100, dtype=np.int64) for _ in range(3))
                       for img, _, _, smp, asked in examples]
            targets = [torch.from_numpy(np.stack([t[j] for t in targets])) for j in range(3)]
            aux, parts = heads.loss(out_.hidden_states[args.aux_layer], ids, targets)
            loss = loss + args.patch_aux_weight * aux
            for k, v in parts.items():
                aux_running[k] = v.item() if k not in aux_running else 0.95 * aux_running[k] + 0.05 * v.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % args.log_every == 0 or step == args.llava_steps - 1:
            aux_msg = (" aux " + " ".join(f"{k} {v:.3f}" for k, v in aux_running.items())) if aux_running else ""
            log(f"llava step {step:5d} loss {running:.4f}{aux_msg} lr {lr:.2e} progress {prog:.3f} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step)")
        if args.yes_no_every and step and step % args.yes_no_every == 0:
            model.eval()
            log(f"llava step {step:5d} held-out yes/no (32 images) {quick_yes_no(model, heldout, args.question_template)}")
            model.train()
        if args.progress_every and step and step % args.progress_every == 0:
            model.eval()
            log(f"llava step {step:5d} held-out exact caption (64 images) {quick_caption_acc(model, heldout):.3f}")
            model.train()
        step += 1
    log(f"LLaVA trained {step} steps ({'time-bound schedule' if sched.time_bound else 'step schedule'})")
    args.llava_steps_done = step
    model.eval()
    model.set_attn_implementation("sdpa")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    build_processor().save_pretrained(str(out))
    make_readable(out)
    log(f"LLaVA saved to {out} in {time.time() - t0:.0f}s")
    return model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--clip-steps", type=int, default=800)
    p.add_argument("--clip-batch", type=int, default=128)
    p.add_argument("--clip-lr", type=float, default=1e-3)
    p.add_argument("--clip-warmup", type=int, default=60)
    p.add_argument("--clip-minutes", type=float, default=11.0,
                   help="time budget: on a slower (shared) machine the schedule follows time instead of steps")
    p.add_argument("--llava-steps", type=int, default=4000)
    p.add_argument("--llava-batch", type=int, default=32)
    p.add_argument("--llava-lr", type=float, default=1e-3)
    p.add_argument("--llava-warmup", type=int, default=200)
    p.add_argument("--llava-minutes", type=float, default=32.0, help="time budget (see --clip-minutes)")
    p.add_argument("--vision-lr-scale", type=float, default=0.5)
    p.add_argument("--masked-share", type=float, default=0.2)
    p.add_argument("--question-share", type=float, default=0.15)
    p.add_argument("--answer-weight", type=float, default=4.0, help="loss weight of yes/no answers")
    p.add_argument("--background-share", type=float, default=0.25,
                   help="share of masked views that keep only background (target: 'a striped background')")
    p.add_argument("--positional-share", type=float, default=0.0,
                   help="share of yes/no questions asked about one grid cell ('is there a red circle at the top left ?')")
    p.add_argument("--rendered-share", type=float, default=0.0,
                   help="share of masked views drawn as lmmsae.render shows SAE features (soft patch-grid masks)")
    p.add_argument("--question-template", default=QUESTION_TEMPLATE,
                   help="how questions are asked in training and in the final evaluation, e.g. '{question} <image>' "
                        "(question first: the image tokens can read it in the causal LM)")
    p.add_argument("--patch-aux-weight", type=float, default=0.0,
                   help="weight of the auxiliary patch losses (0: off): training-only linear heads on LM layer "
                        "--aux-layer say, per image token, its object's colour and shape (unmasked images) and whether "
                        "it holds the object a question asks about (needs the question before the image)")
    p.add_argument("--prefix-answer-weight", type=float, default=0.0,
                   help="with the question before the image, also train every image token's logits to answer for "
                        "the patches read so far (yes once a patch holding the asked object has been seen); "
                        "loss weight of each such token (0: off)")
    p.add_argument("--aux-layer", type=int, default=2, help="LM layer the patch heads read (hidden_states index)")
    p.add_argument("--aux-lr-scale", type=float, default=1.0, help="learning rate of the patch heads / --llava-lr")
    p.add_argument("--curriculum-steps", type=int, default=0,
                   help="questions are asked about one-object images for this many first steps")
    p.add_argument("--add-lm-layers", type=int, default=0,
                   help="with --init: add this many LM layers on top, starting as the identity")
    p.add_argument("--train-from-lm-layer", type=int, default=None,
                   help="train only LM layers >= N and the final norm (vision tower, projector, embeddings and "
                        "earlier LM layers frozen: the toy SAEs' hookpoints up to layers.N-1 see the same activations)")
    p.add_argument("--attention-target-weight", type=float, default=0.0,
                   help="supervise head 0 of the last LM layer to attend, from a question's last token, to the asked "
                        "object's patches (to <s> when absent); loss weight (0: off)")
    p.add_argument("--yes-no-every", type=int, default=0, help="log held-out yes/no accuracy every N steps (0: never)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--init", type=Path, default=None,
                   help="phase 2: continue from these weights (its llava/ trains on, its clip/ is copied)")
    p.add_argument("--no-clip-init", action="store_true", help="train the LLaVA vision tower from scratch")
    p.add_argument("--progress-every", type=int, default=1000)
    p.add_argument("--eval-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--no-bf16", dest="bf16", action="store_false")
    p.add_argument("--smoke", action="store_true", help="a few steps of everything, to check the pipeline")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.clip_steps, args.llava_steps, args.eval_images = 20, 30, 48
        args.clip_warmup, args.llava_warmup, args.progress_every = 5, 5, 20
        args.clip_minutes = args.llava_minutes = 0
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    earlier = (args.init / "TRAINING_LOG.txt").read_text() if args.init and (args.init / "TRAINING_LOG.txt").is_file() else ""
    log = Log(out / "TRAINING_LOG.txt")
    if earlier:  # a continued run keeps the earlier phases' log above its own
        lines = earlier.rstrip("\n").splitlines()
        phases = sum(line.startswith("# phase ") for line in lines)
        if not phases:
            lines, phases = [f"# phase 1 (log of {args.init})", *lines], 1
        log.lines = [*lines, f"# phase {phases + 1}"]
    phase1 = json.loads((args.init / "eval.json").read_text()).get("summary") \
        if args.init and (args.init / "eval.json").is_file() else None
    log(f"lmmsae.toyworld.train {' '.join(sys.argv[1:])}")
    log(f"args: {json.dumps({k: str(v) for k, v in vars(args).items()})}")
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 autocast {args.bf16}")
    t_start = time.time()
    data = ShapesDataset(ShapesDataset.Options(n=10**9, seed=args.seed, split="train", image_size=IMAGE_SIZE))
    heldout = ShapesDataset(ShapesDataset.Options(n=10**6, seed=args.seed, split="val", image_size=IMAGE_SIZE))

    tmp = out / ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if args.init:
        args.init = args.init.resolve()
        shutil.copytree(args.init / "clip", tmp / "clip")
        clip_model, args.clip_steps_done = None, 0
        log(f"CLIP copied from {args.init / 'clip'} (phase 2 trains the LLaVA only)")
    else:
        clip_model = train_clip(args, data, log, tmp / "clip")
    t_clip = time.time() - t_start
    train_llava(args, data, heldout, None if args.no_clip_init else clip_model, log, tmp / "llava")
    t_train = time.time() - t_start
    for name in ("clip", "llava"):
        shutil.rmtree(out / name, ignore_errors=True)
        (tmp / name).rename(out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"training wall time {t_train / 60:.1f} min (CLIP {t_clip / 60:.1f} min)")

    from lmmsae.toyworld.evaluate import evaluate

    results = evaluate(out / "llava", out / "clip", n_images=args.eval_images, seed=args.seed, log=log,
                       question_template=args.question_template)
    results["training"] = {"wall_time_min": round(t_train / 60, 2), "clip_wall_time_min": round(t_clip / 60, 2),
                           "llava_wall_time_min": round((t_train - t_clip) / 60, 2),
                           "eval_wall_time_min": round((time.time() - t_start - t_train) / 60, 2),
                           "seed": args.seed, "threads": torch.get_num_threads(),
                           "clip_steps_done": args.clip_steps_done, "llava_steps_done": args.llava_steps_done,
                           "cpu_time_min": round((time.process_time()) / 60, 2),
                           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if phase1 is not None:
        results["phase1_summary"] = phase1
    (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    make_readable(out)
    log(f"eval: {json.dumps(results['summary'])}")
    log(f"total wall time {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
