"""Yes/no above the toy SAEs' hookpoint: the experiment that first moved the toy LLaVA off a constant answer.

Layers 0-2, the vision tower, projector and embeddings stay frozen (the activations at `layers.2` stay
bit-identical); LM layer 3 and one added layer train. Three attentions are supervised at the question's last
token, computed from captured queries and keys (no eager attention): layer 3 head 0 on the question's colour
word, head 1 on its shape word, the last layer's head 0 on the asked object's patches (on `<s>` when absent).
Training-only linear heads read the asked colour and shape from layer 3's output at that token (the copy's
values carry nothing otherwise) and each patch's colour and shape (`PatchHeads`). Not yet folded into
`lmmsae.toyworld.train`; see docs/toyworld.md, "Yes/no", runs r2 and r4 (phase 3, the shipped weights).

    python -m lmmsae.toyworld.yesno_search --init PHASE2_LLAVA_DIR --steps 3000 --minutes 72 --no-w 2 --out /tmp/r4
"""
import argparse
import random
import time


def near_miss(example, rng: random.Random):
    """`example` (image, prompt, answer, sample, asked) of an absent probe, redrawn as a pair that shares its
    colour (70%) or its shape (30%) with a held object but is not held: the probes r2 and r4 said yes to."""
    from lmmsae.datasets.shapes import COLORS, SHAPES, question_for
    from lmmsae.toyworld import QUESTION_TEMPLATE

    objects = example[3].truth["objects"]
    held = {(o["color"], o["shape"]) for o in objects}
    same_color = sorted({(o["color"], s) for o in objects for s in SHAPES} - held)
    same_shape = sorted({(c, o["shape"]) for o in objects for c in COLORS} - held)
    pairs = same_color if same_color and (rng.random() < 0.7 or not same_shape) else same_shape
    color, shape = pairs[rng.randrange(len(pairs))]
    return example[0], QUESTION_TEMPLATE.format(question=question_for(color, shape)), "no", example[3], (color, shape, None)


def main(argv=None):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from lmmsae.datasets.shapes import COLORS, SHAPES, ShapesDataset
    from lmmsae.toyworld import IMAGE_SIZE, load_llava
    from lmmsae.toyworld.train import (N_PATCHES, PatchHeads, add_lm_layers, cosine_lr, encode_batch,
                                       freeze_below_lm_layer, llava_example_probe, patch_targets, prompt_ids,
                                       quick_caption_acc, quick_yes_no, to_pixels, weighted_lm_loss)
    from lmmsae.toyworld.vocab import VOCAB, build_tokenizer

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--add", type=int, default=1, help="LM layers added on top (>= 1: the search layer)")
    p.add_argument("--from-layer", type=int, default=3)
    p.add_argument("--qshare", type=float, default=0.5)
    p.add_argument("--mshare", type=float, default=0.2)
    p.add_argument("--att-w", type=float, default=1.0)
    p.add_argument("--patch-w", type=float, default=1.0)
    p.add_argument("--answer-w", type=float, default=4.0)
    p.add_argument("--gather-w", type=float, default=1.0)
    p.add_argument("--no-w", type=float, default=1.0, help="extra weight on 'no' answers (run r2 erred on absent objects)")
    p.add_argument("--near-miss", type=float, default=0.0,
                   help="share of absent probes redrawn as near misses: a held colour with a shape it lacks, or a "
                        "held shape in a colour it lacks, 70/30 (r2/r4 said yes to half of 'held colour, other shape')")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--init", default=None, help="LLaVA folder to start from (default: the shipped weights)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.add < 1:
        p.error(f"--add {args.add}: at least one layer must be added, the last one holds the supervised search")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, processor = load_llava(args.init) if args.init else load_llava()
    model = add_lm_layers(model, args.add)
    freeze_below_lm_layer(model, args.from_layer)
    model.train()
    layers = model.model.language_model.layers
    L = len(layers)
    copy_layer, search_layer = args.from_layer, L - 1
    captured = {}
    def hook(idx):
        def f(mod, a, kw):
            captured[idx] = (kw["hidden_states"], kw["position_embeddings"])
        return f
    for idx in {copy_layer, search_layer}:
        layers[idx].self_attn.register_forward_pre_hook(hook(idx), with_kwargs=True)
    heads = PatchHeads(model.config.text_config.hidden_size)
    gather = torch.nn.Linear(model.config.text_config.hidden_size, len(COLORS) + len(SHAPES))
    COLOR_LIST = list(COLORS)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW([{"params": params}, {"params": heads.parameters() + list(gather.parameters())}], lr=args.lr, weight_decay=0.0)
    print("trainable", sum(q.numel() for q in params), "layers", L, flush=True)
    tok = build_tokenizer("llava")
    data = ShapesDataset(ShapesDataset.Options(n=10**6, seed=11, split="train", image_size=IMAGE_SIZE))
    val = ShapesDataset(ShapesDataset.Options(n=1000, seed=0, split="val", image_size=IMAGE_SIZE))
    rng = random.Random(0)
    COLOR_IDS = {VOCAB[c] for c in COLORS}
    SHAPE_IDS = {VOCAB[s] for s in SHAPES}


    def scores(idx, B_rows, qpos):
        """(n, heads, T) attention probabilities of layer idx from positions qpos[i] of rows B_rows[i]."""
        h, (cos, sin) = captured[idx]
        attn = layers[idx].self_attn
        hd = attn.head_dim
        B, T, _ = h.shape
        q = attn.q_proj(h).view(B, T, -1, hd).transpose(1, 2)
        k = attn.k_proj(h).view(B, T, -1, hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        out = []
        for b, t in zip(B_rows, qpos):
            s = (q[b, :, t, None] @ k[b, :, : t + 1].transpose(-1, -2)).squeeze(1) * attn.scaling  # (heads, t+1)
            out.append(F.softmax(s.float(), -1))
        return out


    t0, step, run = time.time(), 0, {}
    while step < args.steps and time.time() - t0 < args.minutes * 60:
        lr = cosine_lr(step, args.steps, 50, args.lr, progress=min(1.0, max(step / args.steps, (time.time() - t0) / (args.minutes * 60))))
        for g in opt.param_groups:
            g["lr"] = lr
        ex = [llava_example_probe(data.sample(rng.randrange(10**6)), rng, args.mshare, args.qshare, 0.35, 0.0, 0.6)
              for _ in range(32)]
        if args.near_miss:  # drawn only when asked, so runs without it keep run r4's random stream
            ex = [near_miss(e, rng) if e[2] == "no" and rng.random() < args.near_miss else e for e in ex]
        ids, att, lab, wts = encode_batch([e[:3] for e in ex], tok, args.answer_w)
        wts[[i for i, e in enumerate(ex) if e[2] == "no"]] *= args.no_w
        pixels = to_pixels([e[0] for e in ex])
        out = model(input_ids=ids, attention_mask=att, pixel_values=pixels, output_hidden_states=True)
        loss_lm = weighted_lm_loss(out.logits, lab, wts)
        loss = loss_lm
        parts = {"lm": loss_lm.item()}
        rows, qpos, tgt_c, tgt_s, tgt_obj = [], [], [], [], []
        ptargets = [[], [], []]
        for i, (img, prompt, ans, smp, asked) in enumerate(ex):
            pt = patch_targets(smp.truth, None) if img is smp.image else (np.full(N_PATCHES, -100),) * 3
            for j in range(3):
                ptargets[j].append(torch.as_tensor(np.asarray(pt[j]) if j < 2 else np.full(N_PATCHES, -100)))
            if asked is None:
                continue
            pid = prompt_ids(prompt, tok)
            image = [t for t, x in enumerate(pid) if x == VOCAB["<image>"]]
            match = patch_targets(smp.truth, asked)[2]
            rows.append(i)
            qpos.append(len(pid) - 1)
            tgt_c.append([t for t in range(image[-1] + 1, len(pid)) if pid[t] in COLOR_IDS])
            tgt_s.append([t for t in range(image[-1] + 1, len(pid)) if pid[t] in SHAPE_IDS])
            tgt_obj.append([image[j] for j in range(N_PATCHES) if match[j] == 1] or [0])
        if rows and args.att_w:
            a_copy = scores(copy_layer, rows, qpos)
            a_search = scores(search_layer, rows, qpos)
            lc = torch.stack([-torch.log(a[0, c].sum() + 1e-6) for a, c in zip(a_copy, tgt_c)]).mean()
            ls = torch.stack([-torch.log(a[1, c].sum() + 1e-6) for a, c in zip(a_copy, tgt_s)]).mean()
            lo = torch.stack([-torch.log(a[0, c].sum() + 1e-6) for a, c in zip(a_search, tgt_obj)]).mean()
            loss = loss + args.att_w * (lc + ls + lo)
            if args.gather_w:
                g = gather(F.layer_norm(out.hidden_states[copy_layer + 1][rows, qpos].float(), (model.config.text_config.hidden_size,)))
                yc = torch.tensor([COLOR_LIST.index(ex[i][4][0]) for i in rows])
                ys = torch.tensor([SHAPES.index(ex[i][4][1]) for i in rows])
                lg = F.cross_entropy(g[:, :len(COLORS)], yc) + F.cross_entropy(g[:, len(COLORS):], ys)
                loss = loss + args.gather_w * lg
                parts.update(gather=lg.item())
            parts.update(att_c=lc.item(), att_s=ls.item(), att_o=lo.item())
        if args.patch_w:
            lp, pp = heads.loss(out.hidden_states[copy_layer + 1], ids, [torch.stack(t) for t in ptargets])
            loss = loss + args.patch_w * lp
            parts.update({f"p_{k}": v.item() for k, v in pp.items()})
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        for k, v in parts.items():
            run[k] = v if k not in run else 0.95 * run[k] + 0.05 * v
        if step % 25 == 0:
            print(f"step {step} {time.time() - t0:.0f}s lr {lr:.2e} " + " ".join(f"{k} {v:.3f}" for k, v in run.items()), flush=True)
        if args.every and step % args.every == 0:
            model.eval()
            print(f"  step {step} yes/no {quick_yes_no(model, val, n=64)}", flush=True)
            model.save_pretrained(args.out); processor.save_pretrained(args.out)
            model.train()
    model.eval()
    print("final yes/no", quick_yes_no(model, val, n=64), "caption", quick_caption_acc(model, val, 64), flush=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    print("saved", args.out, time.time() - t0, flush=True)


if __name__ == "__main__":
    main()
