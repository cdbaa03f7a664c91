"""Look at a report: open it in the user's web browser, or serve a run folder on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path


def open_report(path: str | Path) -> bool:
    """Open `path` (an HTML file) in a browser; on a machine without one, say where the file is."""
    import webbrowser

    path = Path(path).resolve()
    try:
        opened = webbrowser.open(path.as_uri())
    except webbrowser.Error:
        opened = False
    if not opened:
        print(f"no web browser found: open {path} yourself", file=sys.stderr)
    return opened


def serve(folder: str | Path, port: int = 8000, host: str = "127.0.0.1", page: str = "") -> None:
    """Serve `folder` over HTTP until interrupted (the report works from file:// too; this is for
    looking at a run on a remote machine through an SSH tunnel)."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    with ThreadingHTTPServer((host, port), handler) as server:
        print(f"serving {folder}: http://{host}:{server.server_address[1]}/{page} (Ctrl-C stops)", file=sys.stderr,
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
