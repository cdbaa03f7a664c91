"""A run directory on a file system that refuses writes: one line naming the folder and the fix."""

from __future__ import annotations

import contextlib
import subprocess

from click.testing import CliRunner

from lmmsae.cli import cli


@contextlib.contextmanager
def read_only_folder(tmp_path):
    """A read-only tmpfs where this process may mount one; else /sys, which no process may write."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(target)],
                             capture_output=True).returncode == 0
    try:
        yield target if mounted else "/sys/lmmsae-runs"
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], capture_output=True)


def test_read_only_out_gives_one_line(tmp_path):
    with read_only_folder(tmp_path) as folder:
        result = CliRunner().invoke(cli, ["collect", "--out", f"{folder}/runs", "--name", "r", "-o", "dataset.n=2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot write {folder}/runs: ")
    assert lines[0].endswith("with --out") and ("Read-only" in lines[0] or "not permitted" in lines[0])
