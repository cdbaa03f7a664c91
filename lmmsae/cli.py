"""The `lmmsae` command. Imports nothing heavy: subcommands load lazily."""

from __future__ import annotations

import errno
import importlib
import sys

import click

from lmmsae import __version__
from lmmsae.errors import UserError
from lmmsae.secrets import scrub
from lmmsae.stages import HELP as STAGE_HELP

COMMANDS = {
    "run": ("lmmsae.commands.run:run", "Run the whole loop: collect, train, cache, explain, score, report."),
    "plugins": ("lmmsae.commands.plugins:plugins", "List installed plugins and the components they register."),
    "models": ("lmmsae.commands.models:models", "List model adapters, or one model's hookpoints."),
    "attribute": ("lmmsae.commands.attribute:attribute", "Rank the SAE features behind an answer (logit-difference attribution)."),
    "hallucination": ("lmmsae.commands.hallucination:hallucination", "POPE / CHAIR object-hallucination rates, with and without steering."),
    "serve": ("lmmsae.commands.serve:serve", "Serve a run's report on http://127.0.0.1."),
    **{stage: (f"lmmsae.commands.stage:{stage}", text) for stage, text in STAGE_HELP.items()},
}

RUN_KEY = "lmmsae.run"  # click's ctx.meta key holding the current run's folder (set by make_context)


class LazyGroup(click.Group):
    """Subcommands are imported on use; plugin commands come from the `register_commands` hook."""

    def list_commands(self, ctx):
        return sorted({*COMMANDS, *self._plugin_commands()})

    def get_command(self, ctx, name):
        if name in COMMANDS:
            module_name, _, attr = COMMANDS[name][0].partition(":")
            module = importlib.import_module(module_name)
            return module.command(attr) if attr in STAGE_HELP else getattr(module, attr)
        return self._plugin_commands().get(name)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        rows += [(name, cmd.get_short_help_str()) for name, cmd in sorted(self._plugin_commands().items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def _plugin_commands(self) -> dict[str, click.Command]:
        if not hasattr(self, "_extra"):
            from lmmsae import plugins

            self._extra = plugins.commands()
        return self._extra

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Click's main, with a usage mistake (unknown flag, bad value) shown as one line that says
        where help is, like every other mistake."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"Error: {scrub(exc.format_message())}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(scrub(str(exc))) from None
        except OSError as exc:
            message = disk_error(exc)
            if message is None:
                raise
            raise click.ClickException(scrub(message)) from None
        except click.NoSuchOption as exc:
            raise dotted_option_hint(exc) from None
        except KeyboardInterrupt:
            run = ctx.meta.get(RUN_KEY)
            click.echo(f"interrupted: continue with the same command plus --resume --name {run.name}" if run
                       else "interrupted before the run folder was created", err=True)
            sys.exit(130)


DISK_HINTS = {
    errno.ENOSPC: "free some space, then continue with --resume (nothing half-written is kept)",
    errno.EDQUOT: "free some space, then continue with --resume (nothing half-written is kept)",
    errno.EROFS: "choose a writable folder with --out",
    errno.EACCES: "choose a folder you may write to with --out",
    errno.EPERM: "choose a folder you may write to with --out",
}


def disk_error(exc: OSError) -> str | None:
    """One line for the file-system errors a user fixes (disk full, read-only, no permission)."""
    hint = DISK_HINTS.get(exc.errno)
    if hint is None:
        return None
    where = f" {exc.filename!s}" if exc.filename else ""
    return f"cannot write{where}: {exc.strerror or exc}: {hint}"


DOTTED_HINTS = {"model.path": "model.checkpoint=DIR", "model.checkpoint": "model.checkpoint=DIR"}


def dotted_option_hint(exc: click.NoSuchOption) -> click.ClickException:
    """`--model.path DIR` (a spelling other tools use): say that settings go through -o."""
    name = (exc.option_name or "").lstrip("-")
    section, dot, key = name.partition(".")
    if not dot or not section or not key:
        return exc
    example = DOTTED_HINTS.get(name, f"{name}=VALUE")
    return click.ClickException(f"--{name} is not an option: component and stage settings are set with -o, "
                                f"e.g. -o {example}")


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="lmmsae")
def cli():
    """lmmsae: find the features of a large multimodal model and have LMMs explain them.

    Run `lmmsae run` for the whole loop on the toy world, or one stage at a time.
    """
    from lmmsae.progress import quiet_libraries

    quiet_libraries()


def main() -> None:
    sys.excepthook = _scrubbed_excepthook
    cli()


def _scrubbed_excepthook(kind, value, tb) -> None:
    """An unexpected error still prints its traceback (a bug to report), with every known secret masked."""
    import traceback

    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))


if __name__ == "__main__":  # torchrun -m lmmsae.cli (python -m lmmsae works too)
    main()
