"""`lmmsae models`: model adapters and their hookpoints."""

from __future__ import annotations

import click


@click.command(help="List model adapters; with --hookpoints MODEL, that model's hookpoints (read from its "
                    "config alone, no weights loaded).")
@click.option("--hookpoints", "model", metavar="MODEL", help="Show the hookpoints of this model.")
@click.option("--checkpoint", help="Hub id or local folder to read instead of the adapter's default.")
def models(model, checkpoint):
    from lmmsae import plugins as pl

    if model is None:
        for c in pl.registry("models"):
            preset = f", checkpoint={c.defaults['checkpoint']}" if "checkpoint" in c.defaults else ""
            click.echo(f"{c.name}  ({c.target}{preset}, from {c.plugin})")
        return
    component = pl.get("models", model)
    adapter_cls = component.load()
    options = component.options({"checkpoint": checkpoint} if checkpoint else None)
    from lmmsae.models.hookpoints import short

    for name in adapter_cls.list_hookpoints(options):
        click.echo(f"{name}  ({short(name)})" if short(name) != name else name)
