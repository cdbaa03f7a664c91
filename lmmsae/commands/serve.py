"""`lmmsae serve`: a run's report over HTTP on 127.0.0.1 (the report also works straight from disk)."""

from __future__ import annotations

from pathlib import Path

import click

from lmmsae.errors import UserError


@click.command(help="Serve a run's report on http://127.0.0.1 (e.g. to view it through an SSH tunnel).")
@click.option("--name", required=True, help="Run name (folder under --out).")
@click.option("--out", default="runs", show_default=True, help="Folder holding run directories.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free one).")
def serve(name, out, port):
    from lmmsae import artifacts
    from lmmsae.report.browser import serve as serve_folder

    run = Path(out) / name
    if not (run / artifacts.REPORT_HTML).is_file():
        raise UserError(f"{str(run / artifacts.REPORT_HTML)!r} does not exist: run `lmmsae report --resume --name {name}` first")
    serve_folder(run, port, page=artifacts.REPORT_HTML)
