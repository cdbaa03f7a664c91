"""`lmmsae attribute`: which SAE features make the model say ANSWER rather than BASELINE."""

from __future__ import annotations

import json

import click

from lmmsae.commands.common import config_options, make_context, wraps_params


@click.command(help="Rank SAE features by their effect on logit(ANSWER) - logit(BASELINE) at the next token "
                    "after the prompt (gradient x activation, pooled over image and text; exact ablation of "
                    "the top ones), with each top feature's image-region map. Use with --resume --name RUN.")
@config_options
@click.option("--answer", required=True, help="The answer word, e.g. red.")
@click.option("--baseline", "baseline_word", required=True, help="The word to compare with, e.g. blue.")
@click.option("--prompt", help="Prompt ending where the answer comes, e.g. '<image> a large'.")
@click.option("--image-index", "image_indices", type=int, multiple=True, help="Dataset index (repeatable; default 0).")
@click.option("--top-k", type=int, default=20, show_default=True)
@click.option("--n-ablate", type=int, default=10, show_default=True, help="Top features checked by exact ablation.")
@click.option("--rank-by", type=click.Choice(["all", "image", "text"]), default="all", show_default=True)
@click.option("--sae-path", help="SAE folder or run folder (default: this run's sae/<hookpoint>).")
@click.option("--output", default="attribution", show_default=True, help="Writes attribution/<output>.json.")
@wraps_params
def attribute(params):
    from lmmsae import artifacts
    from lmmsae.atomic import atomic_write_text
    from lmmsae.jsonl import clean_json
    from lmmsae.attribution import attribute_answer
    from lmmsae.steering.loading import load_model_and_sae

    ctx = make_context(params)
    adapter, hookpoint, sae = load_model_and_sae(ctx, params.get("sae_path"))
    dataset = ctx.build("dataset")
    indices = list(params.get("image_indices") or (0,))
    samples = [dataset.sample(i) for i in indices]
    result = attribute_answer(adapter, sae, hookpoint, samples, params.get("prompt"), params["answer"],
                              params["baseline_word"], top_k=params["top_k"], n_ablate=params["n_ablate"],
                              rank_by=params["rank_by"])
    out = {"hookpoint": hookpoint, "answer": params["answer"], "baseline": params["baseline_word"],
           "prompt": params.get("prompt"), "images": [s.id for s in samples], "sample_indices": indices,
           **result.to_dict()}
    rel = f"{artifacts.ATTRIBUTION_DIR}/{params['output']}.json"
    atomic_write_text(ctx.run.file(rel), json.dumps(clean_json(out), indent=1) + "\n")
    ctx.log("attribute-done", output=rel)
    click.echo(f"logit difference {sum(result.metric) / len(result.metric):.3f}; top features "
               f"(latent: grad x act, ablation effect):")
    for latent in result.ranked[:10]:
        abl = result.ablation.get(latent)
        click.echo(f"  {latent}: {result.scores[params['rank_by']][latent]:+.4f}"
                   + (f", {abl:+.4f}" if abl is not None else ""))
    click.echo(f"results in {ctx.run.file(rel)}")
