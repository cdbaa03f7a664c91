"""`lmmsae models`: model adapters and their hookpoints."""

from __future__ import annotations

import click


@click.command(help="List model adapters; with --hookpoints MODEL, that model's hookpoints.")
@click.option("--hookpoints", "model", metavar="MODEL", help="Show the hookpoints of this model.")
def models(model):
    from lmmsae import plugins as pl

    if model is None:
        for c in pl.registry("models"):
            click.echo(f"{c.name}  ({c.target}, from {c.plugin})")
        return
    component = pl.get("models", model)
    adapter_cls = component.load()
    for name in adapter_cls.list_hookpoints(component.options()):
        click.echo(name)
