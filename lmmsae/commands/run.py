"""`lmmsae run`: every pipeline stage that exists, in order, in one run directory."""

from __future__ import annotations

import importlib.util

import click

from lmmsae.commands.common import config_options, echo_done, make_context, wraps_params
from lmmsae.stages import PIPELINE


@click.command(help="Run the whole loop (collect, train, cache, explain, score, report). "
                    "With no arguments it runs on the shipped toy world.")
@config_options
@click.option("--until", type=click.Choice(PIPELINE), help="Stop after this stage.")
@wraps_params
def run(params):
    ctx = make_context(params)
    for stage in PIPELINE:
        if importlib.util.find_spec(f"lmmsae.stages.{stage}") is None:
            click.echo(f"stage {stage!r} is not yet available; stopping here", err=True)
            break
        module = importlib.import_module(f"lmmsae.stages.{stage}")
        ctx.run.log("stage-start", stage=stage)
        module.run(ctx)
        ctx.run.log("stage-done", stage=stage)
        if params.get("until") == stage:
            break
    ctx.run.log("done")
    echo_done(ctx)
