"""`lmmsae run`: the stages the plan needs, in order, in one run directory."""

from __future__ import annotations

import click

from lmmsae.commands.common import (cleanup_on_failure, config_options, dry_run_option, echo_done, make_context,
                                    run_stages, wraps_params)
from lmmsae.stages import PIPELINE


@click.command(help="Run the whole loop (collect, train, cache, explain, score, report): the stages whose outputs "
                    "are missing or stale, in order; with --resume, current outputs are kept. With no arguments "
                    "it runs on the shipped toy world.")
@config_options
@click.option("--until", type=click.Choice(PIPELINE), help="Stop after this stage.")
@click.option("--overwrite", "overwrite", multiple=True, type=click.Choice(PIPELINE),
              help="Make this stage's outputs again even if current, and everything after it (repeatable).")
@dry_run_option
@wraps_params
def run(params):
    until = params.get("until") or PIPELINE[-1]
    stages = PIPELINE[:PIPELINE.index(until) + 1]
    ctx = make_context(params, runs=stages, targets=(until,), create=not params.get("dry_run"))
    if params.get("dry_run"):
        from lmmsae.plan import print_plan

        print_plan(ctx.plan, stages)
        return
    with cleanup_on_failure(ctx):
        run_stages(ctx, stages)
    ctx.log("done")
    echo_done(ctx)
