"""One generic command per stage: resolve the config, plan that stage, run it."""

from __future__ import annotations

import click

from lmmsae.commands.common import (cleanup_on_failure, config_options, dry_run_option, echo_done, extra_overrides,
                                    make_context, run_stages)
from lmmsae.stages import HELP


def command(stage: str) -> click.Command:
    params = _stage_params(stage)

    def callback(**values):
        names = [p.name for p in params]
        values["overwrite"] = (stage,) if values.pop("overwrite_stage", False) else ()
        ctx = make_context(values, extra_overrides(stage, values, names), stage=stage,
                           create=not values.get("dry_run"))
        if values.get("dry_run"):
            from lmmsae.plan import print_plan

            print_plan(ctx.plan)
            return
        with cleanup_on_failure(ctx):
            run_stages(ctx, (stage,))
        echo_done(ctx)

    callback = click.option("--overwrite", "overwrite_stage", is_flag=True,
                            help="Make this stage's outputs again even if they are current.")(callback)
    cmd = click.command(stage, help=HELP[stage])(config_options(dry_run_option(callback)))
    cmd.params.extend(params)
    return cmd


def _stage_params(stage: str) -> list[click.Parameter]:
    """Extra flags a stage declares in CLI_PARAMS (its module must be importable without torch)."""
    from lmmsae.plan import stage_module

    return list(getattr(stage_module(stage), "CLI_PARAMS", []))
