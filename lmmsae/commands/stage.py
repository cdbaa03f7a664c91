"""One generic command per stage: resolve the config, open the run, run that stage."""

from __future__ import annotations

import importlib.util

import click

from lmmsae.commands.common import config_options, echo_done, extra_overrides, make_context, stage_module
from lmmsae.stages import HELP


def command(stage: str) -> click.Command:
    params = _stage_params(stage)

    def callback(**values):
        module = stage_module(stage)
        names = [p.name for p in params]
        ctx = make_context(values, extra_overrides(stage, values, names), stage=stage)
        module.run(ctx)
        ctx.run.log("stage-done", stage=stage)
        echo_done(ctx)

    cmd = click.command(stage, help=HELP[stage])(config_options(callback))
    cmd.params.extend(params)
    return cmd


def _stage_params(stage: str) -> list[click.Parameter]:
    """Extra flags a stage declares in CLI_PARAMS (its module must be importable without torch)."""
    if importlib.util.find_spec(f"lmmsae.stages.{stage}") is None:
        return []
    return list(getattr(stage_module(stage), "CLI_PARAMS", []))
