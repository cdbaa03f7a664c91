"""Stage `steer`: generate with SAE features clamped or added, original and steered side by side.

Writes `steering/<name>.jsonl` (one record per image x feature x strength; appended and resumable
by key) and, beside it, its state record with the options and a summary. Uses the first hookpoint
of the run, the run's trained SAE at `sae/<hookpoint>/`, and the run's dataset for images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import click

from lmmsae import artifacts
from lmmsae.errors import UserError


@dataclass
class Options:
    feature: list[int] = field(default_factory=list)        # latents to steer (each alone, or all if joint)
    strength: list[float] = field(default_factory=lambda: [50.0])  # clamp values / added amounts: a sweep
    mode: str = "clamp"                                    # clamp | add
    joint: bool = False                                    # steer all features together
    replace_with_reconstruction: bool = False              # the paper's variant: drop the SAE error term
    prefill_only: bool = False                             # edit the prompt only, not generated tokens
    prompt: str | None = None                              # default: each sample's prompt
    n_images: int = 8
    first_image: int = 0
    token_kinds: list[str] = field(default_factory=list)   # e.g. image, text; empty = every token
    max_new_tokens: int = 40
    batch_size: int = 8
    kl: bool = True                                        # teacher-forced KL drift (one extra pass)
    concept: list[str] = field(default_factory=list)       # keywords whose appearance is counted
    judge: bool = False                                    # also ask the run's explainer if the concept shows
    output: str = "steer"                                  # output: steering/<output>.jsonl
    sae_path: str | None = None                            # SAE folder or run dir; default: this run's

    def __post_init__(self):
        if self.mode not in ("clamp", "add"):
            raise ValueError(f"steer.mode must be clamp or add, not {self.mode!r}")
        if self.n_images < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("steer.n_images, batch_size and max_new_tokens must be at least 1")


CLI_PARAMS = [
    click.Option(["--feature"], type=int, multiple=True, help="Latent to steer (repeatable)."),
    click.Option(["--strength"], type=float, multiple=True, help="Clamp value or added amount (repeatable: a sweep)."),
    click.Option(["--mode"], type=click.Choice(["clamp", "add"]), help="Clamp the latent to the value, or add it."),
    click.Option(["--joint"], is_flag=True, help="Steer all --feature latents together."),
    click.Option(["--replace-with-reconstruction"], is_flag=True,
                 help="Replace activations by the SAE reconstruction (the paper's way; drops the error term)."),
    click.Option(["--prefill-only"], is_flag=True, help="Edit the prompt's tokens only, not generated ones."),
    click.Option(["--prompt"], help="Prompt, e.g. '<image>' (default: the dataset's)."),
    click.Option(["--n-images"], type=int, help="How many dataset images to steer on."),
    click.Option(["--token-kinds"], multiple=True, help="Edit only these token kinds: image, text, ... (repeatable)."),
    click.Option(["--concept"], multiple=True, help="Keyword whose appearance is counted (repeatable)."),
    click.Option(["--output"], help="Output name: steering/<output>.jsonl (default: steer)."),
    click.Option(["--sae-path"], help="SAE folder (cfg.json + sae.safetensors) or another run's folder "
                                      "(default: this run's sae/<hookpoint>)."),
]


def output_path(name: str) -> str:
    return f"{artifacts.STEERING_DIR}/{name}.jsonl"


EXTENT = ("feature", "strength", "n_images", "first_image")  # which settings: a change adds records


def units(ctx) -> list:
    """steering/<output>.jsonl: one record per image x feature x strength, made from the model, the
    dataset, the SAE (the run's or `sae_path`) and these options; new settings add records."""
    from lmmsae.fingerprint import path_fingerprint, without
    from lmmsae.plan import Unit

    c = ctx.config
    opts = ctx.stage_options("steer", Options)
    if not opts.feature:
        return []
    options = {"model": c.model.to_dict(), "dataset": c.dataset.to_dict(), "dtype": c.dtype, "seed": c.seed,
               "hookpoint": c.hookpoints[0], "on_bad_sample": c.on_bad_sample,
               "steer": without(opts, *EXTENT, "batch_size")}
    inputs, external = (), {}
    if opts.sae_path:
        external["sae_path"] = path_fingerprint(opts.sae_path, "steer.sae_path")
    else:
        inputs = (artifacts.SAE_DIR,)
    if opts.judge:
        from lmmsae.stages import explain

        options["judge"] = c.explainer.to_dict()
        inputs = (*inputs, explain.output_path(c.explainer.name))
    return [Unit("steer", output_path(opts.output), options, inputs, external=external,
                 extent={k: getattr(opts, k) for k in EXTENT}, extensible=True)]


def run(ctx) -> None:
    opts = ctx.stage_options("steer", Options)
    if not opts.feature:
        raise UserError("steer needs at least one feature: pass --feature N (repeatable)")
    (unit,) = ctx.units("steer")
    if not ctx.wants(unit):
        summary = ((ctx.run.state(unit.path) or {}).get("info") or {}).get("summary")
        if summary:
            print_summary(summary, ctx.run.file(unit.path))
        return
    from lmmsae.steering.loading import load_model_and_sae

    adapter, hookpoint, sae = load_model_and_sae(ctx, opts.sae_path)
    dataset = ctx.build("dataset")
    judge = concepts = None
    if opts.judge:
        from lmmsae.backends import of_explainer
        from lmmsae.backends.cache import ResponseCache

        judge = of_explainer(ctx.config.explainer.name, ctx.config.explainer.options,
                             cache=ResponseCache(ctx.run.file(artifacts.RESPONSE_CACHE)))
        concepts = explanations_by_latent(ctx.run.file(f"{artifacts.EXPLANATIONS_DIR}/{ctx.config.explainer.name}.jsonl"))
    from lmmsae.loader import Policy
    from lmmsae.steering.loading import check_features

    check_features(sae, opts.feature)
    policy = Policy(ctx.config.on_bad_sample, "steer", ctx.log)
    ctx.start(unit)
    summary = steer_dataset(adapter, sae, hookpoint, dataset, opts, ctx.run.file(unit.path), judge=judge,
                            judge_concepts=concepts, seed=ctx.config.seed, policy=policy)
    ctx.finish(unit, hookpoint=hookpoint, summary=summary, skipped=len(policy.skipped))
    ctx.log("steer-done", output=unit.path, **{k: v for k, v in summary.items() if not isinstance(v, dict)})
    print_summary(summary, ctx.run.file(unit.path))


def print_summary(summary: dict[str, Any], path: Path) -> None:
    """One row per setting (feature@strength): how often and how far the output moved; then the file."""
    from rich.console import Console
    from rich.table import Table

    settings = summary.get("settings") or {}
    concept = any("concept_steered" in row for row in settings.values())
    table = Table(title="steering: per setting (feature@strength)")
    for name in ["setting", "n", "changed", "KL", "repeats", *(["concept before", "after"] if concept else [])]:
        table.add_column(name, justify="left" if name == "setting" else "right")
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    num = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name, row in settings.items():
        cells = [name, str(row.get("n", 0)), pct(row.get("changed")), num(row.get("kl")),
                 num(row.get("repetition_steered"))]
        if concept:
            cells += [pct(row.get("concept_original")), pct(row.get("concept_steered"))]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    console.print(f"steering records: {path}", soft_wrap=True)


def explanations_by_latent(path: Path) -> dict[int, str]:
    """latent -> label (or explanation text) from an explanations JSONL, when it exists."""
    from lmmsae.jsonl import read_jsonl

    out = {}
    for r in read_jsonl(path):
        text = r.get("label") or r.get("text")
        if r.get("status", "ok") == "ok" and text:
            out[int(r["latent"])] = text
    return out


def steer_dataset(adapter, sae, hookpoint: str, dataset, opts: Options, out_path: str | Path,
                  judge=None, judge_concepts: dict[int, str] | None = None, seed: int = 0,
                  policy=None) -> dict[str, Any]:
    """The work of the stage from explicit inputs: sweep, check concepts, append records; returns a summary."""
    from lmmsae.models.base import TokenKind
    from lmmsae.progress import track
    from lmmsae.steering.evaluate import judge_concept, mentions, summarize
    from lmmsae.jsonl import JsonlWriter, read_jsonl
    from lmmsae.steering.records import done_keys
    from lmmsae.steering.sweep import sweep

    from lmmsae.steering.loading import check_features

    check_features(sae, opts.feature)
    from lmmsae.loader import Policy, load_samples

    stop = min(len(dataset), opts.first_image + opts.n_images)
    policy = policy if isinstance(policy, Policy) else Policy(policy or "skip", "steer")
    loaded = load_samples(dataset, list(range(opts.first_image, stop)), policy)
    indices, samples = loaded.indices, loaded.samples
    strengths: Sequence[float] = opts.strength or [50.0]
    kinds = TokenKind.parse(opts.token_kinds or None)
    out_path = Path(out_path)
    done = done_keys(out_path)
    groups = 1 if opts.joint else len(opts.feature)
    total = len(samples) * groups * len(strengths)
    records = sweep(adapter, sae, hookpoint, samples, opts.feature, strengths, mode=opts.mode, prompt=opts.prompt,
                    joint=opts.joint, replace_with_reconstruction=opts.replace_with_reconstruction,
                    token_kinds=kinds, prefill_only=opts.prefill_only, max_new_tokens=opts.max_new_tokens,
                    batch_size=opts.batch_size, kl=opts.kl, done=done, sample_indices=indices)
    with JsonlWriter(out_path) as writer:
        for rec in track(records, total=max(0, total - len(done)), description="steer", unit="generations"):
            if opts.concept:
                rec["concept"] = list(opts.concept)
                rec["concept_in_original"] = mentions(rec["original"], opts.concept)
                rec["concept_in_steered"] = mentions(rec["steered"], opts.concept)
            if judge is not None:
                feats = rec["feature"] if isinstance(rec["feature"], list) else [rec["feature"]]
                label = "; ".join(opts.concept) or "; ".join((judge_concepts or {}).get(f, "") for f in feats).strip("; ")
                if label:
                    rec["judge_concept"] = label
                    rec["judge_original"] = judge_concept(judge, rec["original"], label)
                    rec["judge_steered"] = judge_concept(judge, rec["steered"], label)
            writer.write(rec)
    all_records = list(read_jsonl(out_path))
    return summarize_by_setting(all_records, opts.concept or None, summarize)


def summarize_by_setting(records: list[dict[str, Any]], keywords, summarize) -> dict[str, Any]:
    """Overall summary plus one per (feature, strength) setting."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(f"{r['feature']}@{r['strength']:g}", []).append(r)
    out = summarize(records, keywords)
    out["settings"] = {k: summarize(v, keywords) for k, v in groups.items()}
    return out
