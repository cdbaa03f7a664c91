"""`lmmsae models`: model adapters and their hookpoints."""

from __future__ import annotations

import click


@click.command(help="List model adapters; with --hookpoints MODEL, that model's hookpoints (read from its "
                    "config alone, no weights loaded).")
@click.option("--hookpoints", "model", metavar="MODEL", help="Show the hookpoints of this model.")
@click.option("--checkpoint", help="Hub id or local folder to read instead of the adapter's default.")
@click.option("--config", "config_file", metavar="PATH",
              help="A config.json to read instead (a random-init architecture, e.g. benchmarks/configs/*.json).")
def models(model, checkpoint, config_file):
    from lmmsae import plugins as pl

    if model is None:
        for c in pl.registry("models"):
            preset = f", checkpoint={c.defaults['checkpoint']}" if "checkpoint" in c.defaults else ""
            click.echo(f"{c.name}  ({c.target}{preset}, from {c.plugin})")
        return
    component = pl.get("models", model)
    adapter_cls = component.load()
    values = {"checkpoint": checkpoint} if checkpoint else {}
    if config_file:
        values.update(config=config_file, random_init=True)
    options = component.options(values)
    preflight = getattr(adapter_cls, "preflight", None)
    if preflight is not None:
        preflight(options, flag="--checkpoint DIR")
    from lmmsae.models.hookpoints import short

    for name in adapter_cls.list_hookpoints(options):
        click.echo(f"{name}  ({short(name)})" if short(name) != name else name)
