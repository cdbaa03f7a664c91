"""Options every run-shaped command shares, and turning them into a RunContext."""

from __future__ import annotations

import functools
from typing import Any

import click

from lmmsae.errors import UserError

CONFIG_FLAGS = ("seed", "device", "dtype", "model", "dataset", "sae", "explainer")


def config_options(fn):
    """--config, run naming, component choice and -o overrides."""
    decorators = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config (e.g. a run's run.yaml)."),
        click.option("--name", help="Run name (folder under --out); default: a timestamp."),
        click.option("--out", help="Folder holding run directories (default: runs)."),
        click.option("--resume", is_flag=True, help="Continue the run named by --name."),
        click.option("--seed", type=int, help="Seed for every random generator."),
        click.option("--device", help="cpu, cuda, cuda:1, ..."),
        click.option("--dtype", help="float32, float16 or bfloat16."),
        click.option("--model", help="Model adapter name (see `lmmsae plugins`)."),
        click.option("--dataset", help="Dataset name."),
        click.option("--sae", help="SAE architecture name."),
        click.option("--explainer", help="Explainer name."),
        click.option("--scorer", "scorers", multiple=True, help="Scorer name (repeatable)."),
        click.option("--hookpoint", "hookpoints", multiple=True, help="Hookpoint, e.g. layers.2 (repeatable, globs allowed)."),
        click.option("-o", "--override", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Set any config value, e.g. -o sae.k=32 -o train.lr=1e-3."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def make_context(params: dict[str, Any], extra_overrides: list[tuple[str, Any]] = (), stage: str | None = None):
    """Resolve the config (defaults < file < flags < overrides), open or create the run dir, save both.

    On --resume the config must match the saved one, except the section of the `stage` being run:
    running a stage again with new settings (steer other features, compare more explainers) is how
    a finished run is extended; the change is saved and logged.

    Under torchrun (WORLD_SIZE > 1) every rank opens the same existing run (--resume), and only
    rank 0 saves the config and logs.
    """
    import os

    from lmmsae import config as cfg
    from lmmsae.context import RunContext
    from lmmsae.rundir import RunDir
    from lmmsae.seeding import seed_everything

    flags = {k: params.get(k) for k in CONFIG_FLAGS}
    flags["scorers"] = list(params.get("scorers") or ()) or None
    flags["hookpoints"] = list(params.get("hookpoints") or ()) or None
    file = cfg.load_yaml(params["config_file"]) if params.get("config_file") else None
    overrides = [cfg.parse_override(o) for o in params.get("overrides") or ()] + list(extra_overrides)
    out = params.get("out") or (file or {}).get("out") or cfg.DEFAULTS["out"]
    name = params.get("name") or (file or {}).get("name")

    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    leader = os.environ.get("RANK", "0") in ("", "0")
    if world_size > 1 and not params.get("resume"):
        raise UserError(f"under torchrun every rank must open the same existing run: create it first (e.g. "
                        f"`lmmsae collect --name myrun`), then `torchrun --nproc-per-node {world_size} -m lmmsae "
                        f"{stage or 'train'} --resume --name myrun`")
    if params.get("resume"):
        run = RunDir.open(out, name)
        saved = run.saved_config()
        config = cfg.resolve(base=cfg.resolve(base=None, file=saved).to_dict(), file=file, flags=flags, overrides=overrides)
        changed = [k for k in _diff(saved, config.to_dict()) if stage is None or not k.startswith(f"{stage}.")]
        if changed:
            raise UserError(f"--resume with a different config ({', '.join(changed)}): "
                            f"drop those settings, or start a new run with another --name")
        ctx = RunContext(config, run)
        ctx.validate()
        if config.to_dict() != saved and leader:
            run.write_config(config)
            run.log("config-changed", stage=stage, section=config.to_dict().get(stage))
        if leader:
            run.log("resume", stage=stage)
    else:
        config = cfg.resolve(file=file, flags={**flags, "out": params.get("out"), "name": params.get("name")},
                             overrides=overrides)
        ctx = RunContext(config, None)  # validate before creating anything on disk
        ctx.validate()
        ctx.run = RunDir.create(config.out, config.name)
        config.name = ctx.run.path.name
        ctx.run.write_config(config)
        ctx.run.write_env()
        ctx.run.log("start", name=config.name)
    seed_everything(config.seed)
    return ctx


def _diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def extra_overrides(stage: str, params: dict[str, Any], names: list[str]) -> list[tuple[str, Any]]:
    """Stage-specific flags become `<stage>.<flag>` overrides when given."""
    out = []
    for n in names:
        value = params.get(n)
        if value is None or value == () or value is False:
            continue
        out.append((f"{stage}.{n}", list(value) if isinstance(value, tuple) else value))
    return out


def stage_module(stage: str):
    """The stage's module, or a clear error while that stage is still to be built."""
    import importlib

    try:
        return importlib.import_module(f"lmmsae.stages.{stage}")
    except ModuleNotFoundError as exc:
        if exc.name == f"lmmsae.stages.{stage}":
            raise UserError(f"the {stage!r} stage is not yet available in lmmsae {__import__('lmmsae').__version__}") from None
        raise


def echo_done(ctx) -> None:
    from lmmsae import artifacts

    click.echo(f"results in {ctx.run.path}")
    pages = {artifacts.REPORT_HTML: "the features", artifacts.COMPARE_HTML: "the explainers side by side"}
    for page, what in pages.items():
        if ctx.run.file(page).is_file():
            click.echo(f"open {ctx.run.file(page)} to see {what}")


def wraps_params(fn):
    @functools.wraps(fn)
    def inner(**params):
        return fn(params)
    return inner
