"""Options every run-shaped command shares, and turning them into a RunContext."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import click

from lmmsae.errors import UserError

CONFIG_FLAGS = ("seed", "device", "dtype", "model", "dataset", "sae", "explainer", "on_bad_sample")


def config_options(fn):
    """--config, run naming, component choice and -o overrides."""
    decorators = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config (e.g. a run's run.yaml)."),
        click.option("--name", help="Run name (folder under --out); default: a timestamp."),
        click.option("--out", help="Folder holding run directories (default: runs)."),
        click.option("--resume", is_flag=True, help="Continue the run named by --name: outputs whose options or "
                     "inputs changed are made again, current ones are kept."),
        click.option("--seed", type=int, help="Seed for every random generator."),
        click.option("--device", help="cpu, cuda, cuda:1, ..."),
        click.option("--dtype", help="float32, float16 or bfloat16."),
        click.option("--model", help="Model adapter name (see `lmmsae plugins`)."),
        click.option("--dataset", help="Dataset name."),
        click.option("--sae", help="SAE architecture name."),
        click.option("--explainer", help="Explainer name."),
        click.option("--on-bad-sample", "on_bad_sample", type=click.Choice(["skip", "stop"]),
                     help="An unreadable image or sample: skip it (reported and recorded; the default) or stop."),
        click.option("--scorer", "scorers", multiple=True, help="Scorer name (repeatable)."),
        click.option("--hookpoint", "hookpoints", multiple=True, help="Hookpoint, e.g. layers.2 (repeatable, globs allowed)."),
        click.option("-o", "--override", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Set any config value, e.g. -o sae.k=32 -o train.lr=1e-3."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def dry_run_option(fn):
    return click.option("--dry-run", is_flag=True, help="Print the plan (what runs, what is current, what is "
                        "skipped and why) and change nothing.")(fn)


def make_context(params: dict[str, Any], extra_overrides: list[tuple[str, Any]] = (), stage: str | None = None,
                 runs: tuple[str, ...] | None = None, targets: tuple[str, ...] | None = None, create: bool = True):
    """Resolve the config (defaults < file < flags < overrides), validate it, plan the stages `runs`
    (default: `stage` alone), and only then create the run directory.

    Nothing is written when anything fails before that point: no run folder for a rejected new run.
    A changed config of a --resume is saved to run.yaml only once a stage accepts it (its first
    output starts, `RunContext.accept`) or the command succeeds. On --resume every section may change: the plan says
    which outputs that makes stale, and those are made again (`--dry-run` shows it first). The
    scorers of a resumed run are kept and `--scorer` adds to them.

    Under torchrun (WORLD_SIZE > 1) every rank opens the same existing run (--resume), and only
    rank 0 saves the config and logs.
    """
    import os

    from lmmsae import config as cfg
    from lmmsae.context import RunContext
    from lmmsae.plan import diff
    from lmmsae.rundir import RunDir, check_run_name
    from lmmsae.seeding import seed_everything

    flags = {k: params.get(k) for k in CONFIG_FLAGS}
    flags["scorers"] = list(params.get("scorers") or ()) or None
    flags["hookpoints"] = list(params.get("hookpoints") or ()) or None
    file = cfg.load_yaml(params["config_file"]) if params.get("config_file") else None
    overrides = [cfg.parse_override(o) for o in params.get("overrides") or ()] + list(extra_overrides)
    out = params.get("out") or (file or {}).get("out") or cfg.DEFAULTS["out"]
    name = params.get("name") or (file or {}).get("name")
    if name is not None:
        check_run_name(name)
    runs = tuple(runs if runs is not None else ((stage,) if stage else ()))
    overwrite = tuple(params.get("overwrite") or ())

    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    leader = os.environ.get("RANK", "0") in ("", "0")
    if world_size > 1 and not params.get("resume") and not params.get("name"):
        raise UserError(f"under torchrun every rank must open the same run: name it, e.g. `torchrun "
                        f"--nproc-per-node {world_size} -m lmmsae {stage or 'run'} --name myrun ...`")
    if params.get("resume"):
        run = RunDir.open(out, name)
        saved = run.saved_config()
        if flags["scorers"]:
            known = [s.get("name") if isinstance(s, dict) else s for s in saved.get("scorers") or []]
            flags["scorers"] = list(saved.get("scorers") or []) + [s for s in flags["scorers"] if s not in known]
        config = cfg.resolve(base=cfg.resolve(base=None, file=saved).to_dict(), file=file, flags=flags, overrides=overrides)
    else:
        config = cfg.resolve(file=file, flags={**flags, "out": params.get("out"), "name": params.get("name")},
                             overrides=overrides)
        run = RunDir.planned(config.out, config.name)
    ctx = RunContext(config, run, overwrite=overwrite)
    ctx.validate(runs)
    ctx.plan_for(runs, targets)
    if not create:
        return ctx  # --dry-run: the plan shows what is missing
    ctx.plan.check_inputs()
    if params.get("resume"):
        if config.to_dict() != saved and leader:
            ctx.changes = diff(saved, config.to_dict())  # saved by ctx.accept(), once a stage accepts it
        if leader:
            run.log("resume", stage=stage, runs=list(runs))
    elif leader:
        ctx.run = run = RunDir.create(config.out, config.name)
        config.name = run.path.name
        run.write_config(config)
        run.write_env()
        run.log("start", name=config.name, runs=list(runs))
        ctx.created = True
    if world_size > 1 and not params.get("resume"):  # torchrun, new run: rank 0 made it, the others open it
        _barrier(config.device)
        if not leader:
            ctx.run = RunDir.open(config.out, config.name)
    current = click.get_current_context(silent=True)
    if current is not None:  # so an interrupt can say which run to resume
        from lmmsae.cli import RUN_KEY

        current.meta[RUN_KEY] = ctx.run.path
    seed_everything(config.seed)
    return ctx


@contextlib.contextmanager
def cleanup_on_failure(ctx):
    """A new run that failed before any stage wrote an output leaves no folder behind (the name stays free)."""
    try:
        yield
    except BaseException:
        if getattr(ctx, "created", False) and ctx.run is not None and not _has_outputs(ctx.run.path):
            import shutil

            shutil.rmtree(ctx.run.path, ignore_errors=True)
        raise


def _has_outputs(path) -> bool:
    from lmmsae import artifacts

    own = {artifacts.RUN_CONFIG, artifacts.ENV, artifacts.EVENTS}
    return any(p.name not in own for p in path.iterdir()) if path.is_dir() else False


def _barrier(device: str) -> None:
    """Wait for every torchrun rank (joining the process group if needed)."""
    import torch.distributed as dist

    from lmmsae.trainer import join_group

    join_group(device)
    dist.barrier()


def run_stages(ctx, stages: tuple[str, ...]) -> None:
    """Run each stage that has work in the plan, in order, logging its start and end. Under torchrun,
    ranks other than 0 run only the stages that split their work across ranks (`DISTRIBUTED = True`)."""
    import os

    from lmmsae.plan import stage_module

    rank = int(os.environ.get("RANK", "0") or 0) if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else 0
    for stage in stages:
        if rank != 0 and not getattr(stage_module(stage), "DISTRIBUTED", False):
            continue
        units = ctx.plan.of(stage)
        if units and not any(u.todo for u in units):
            if ctx.run is not None and any(u.needed for u in units):
                ctx.log("stage-skip", stage=stage, reason="current")
            continue
        ctx.log("stage-start", stage=stage)
        stage_module(stage).run(ctx)
        ctx.log("stage-done", stage=stage)
    ctx.accept()


def extra_overrides(stage: str, params: dict[str, Any], names: list[str]) -> list[tuple[str, Any]]:
    """Stage-specific flags become `<stage>.<flag>` overrides when given."""
    out = []
    for n in names:
        value = params.get(n)
        if value is None or value == () or value is False:
            continue
        out.append((f"{stage}.{n}", list(value) if isinstance(value, tuple) else value))
    return out


def echo_done(ctx) -> None:
    from lmmsae import artifacts

    click.echo(f"results in {ctx.run.path}")
    pages = {artifacts.REPORT_HTML: "the features", artifacts.COMPARE_HTML: "the explainers side by side"}
    for page, what in pages.items():
        if ctx.run.file(page).is_file():
            click.echo(f"open {ctx.run.file(page)} to see {what}")
    from lmmsae.stages.report import OPEN_REPORT

    if click.get_current_context().meta.get(OPEN_REPORT) and ctx.run.file(artifacts.REPORT_HTML).is_file():
        from lmmsae.report.browser import open_report  # `lmmsae report --open`

        open_report(ctx.run.file(artifacts.REPORT_HTML))


def wraps_params(fn):
    @functools.wraps(fn)
    def inner(**params):
        return fn(params)
    return inner
