"""`lmmsae plugins`: what is installed, by whom, at which version."""

from __future__ import annotations

import json

import click

from lmmsae.registry import KINDS


@click.command(help="List installed plugins and the components they register.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    from lmmsae import plugins as pl

    infos = pl.plugins()
    if as_json:
        data = {kind: [{"name": c.name, "plugin": c.plugin} for c in pl.registry(kind)] for kind in KINDS}
        data["plugins"] = [
            {"name": i.distribution, "version": i.version, "modules": i.modules, "components": i.components,
             "error": i.error}
            for i in infos
        ]
        click.echo(json.dumps(data, indent=2))
        return
    for info in infos:
        click.echo(f"{info.distribution} {info.version}" + (f"  BROKEN, skipped: {info.error}" if info.error else ""))
        for kind in KINDS:
            if info.components.get(kind):
                click.echo(f"  {kind}: {', '.join(info.components[kind])}")
