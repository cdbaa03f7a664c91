"""`lmmsae hallucination`: POPE-style yes/no probes and a CHAIR-style caption rate, with and without
steering or ablating features."""

from __future__ import annotations

import json

import click

from lmmsae.commands.common import config_options, make_context, wraps_params


@click.command(help="Object hallucination: the rate of 'yes' to questions about absent objects (POPE) and of "
                    "captioned objects not in the image (CHAIR), for the plain model and with --ablate / "
                    "--feature steering. Questions come from --pope FILE, or from the toy world's ground truth.")
@config_options
@click.option("--pope", "pope_file", type=click.Path(dir_okay=False), help="POPE-format JSONL file.")
@click.option("--image-root", help="Folder of the POPE file's images (default: the file's folder).")
@click.option("--template", default="<image> {question}", show_default=True,
              help="Prompt around each question ({question}).")
@click.option("--n-images", type=int, default=50, show_default=True, help="Dataset images (without --pope).")
@click.option("--strategy", type=click.Choice(["random", "popular", "adversarial"]), default="random", show_default=True,
              help="How absent objects are chosen: the three splits of POPE (toy world only).")
@click.option("--ablate", "ablate", type=int, multiple=True, help="Latent to zero (repeatable, together).")
@click.option("--feature", "features", type=int, multiple=True, help="Latent to steer (repeatable, together).")
@click.option("--strength", type=float, default=10.0, show_default=True)
@click.option("--mode", type=click.Choice(["clamp", "add"]), default="clamp", show_default=True)
@click.option("--caption-prompt", help="Prompt for the CHAIR captions (default: the dataset's).")
@click.option("--sae-path", help="SAE folder or run folder (default: this run's sae/<hookpoint>).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--output", default="hallucination", show_default=True, help="Writes hallucination/<output>.json.")
@wraps_params
def hallucination(params):
    from lmmsae import artifacts
    from lmmsae.atomic import atomic_write_text
    from lmmsae.jsonl import clean_json
    from lmmsae.hallucination import run_checks
    from lmmsae.steering.loading import check_features, load_model_and_sae

    ctx = make_context(params)
    needs_sae = bool(params.get("ablate") or params.get("features"))
    if needs_sae:
        adapter, hookpoint, sae = load_model_and_sae(ctx, params.get("sae_path"))
        check_features(sae, [*params.get("ablate", ()), *params.get("features", ())])
    else:
        adapter, hookpoint, sae = ctx.build("model"), None, None
    dataset = None if params.get("pope_file") else ctx.build("dataset")
    result = run_checks(adapter, hookpoint, sae, dataset=dataset, pope_file=params.get("pope_file"),
                        image_root=params.get("image_root"), template=params["template"],
                        n_images=params["n_images"], strategy=params["strategy"], ablate=list(params.get("ablate", ())),
                        features=list(params.get("features", ())), strength=params["strength"], mode=params["mode"],
                        caption_prompt=params.get("caption_prompt"), batch_size=params["batch_size"],
                        seed=ctx.config.seed)
    rel = f"{artifacts.HALLUCINATION_DIR}/{params['output']}.json"
    atomic_write_text(ctx.run.file(rel), json.dumps(clean_json(result), indent=1, default=str) + "\n")
    ctx.log("hallucination-done", output=rel)
    for name, m in result["pope"].items():
        click.echo(f"POPE {name}: hallucination rate {m['hallucination_rate']:.3f}, accuracy {m['accuracy']:.3f}, "
                   f"yes ratio {m['yes_ratio']:.3f} (n={m['n']})")
    for name, c in result.get("chair", {}).items():
        click.echo(f"CHAIR {name}: CHAIR_i {c['chair_i']:.3f}, CHAIR_s {c['chair_s']:.3f} ({c['n_captions']} captions)")
    click.echo(f"results in {ctx.run.file(rel)}")
