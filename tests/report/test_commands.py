"""What the report's commands and neighbours do on the small real run: `report --open`, `serve`,
the training curve the train stage logs, and a terminal free of other libraries' progress bars."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lmmsae.jsonl import read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def env(**extra):
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def test_report_open_hands_the_index_to_the_browser(small_run, tmp_path):
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    browser.chmod(0o755)
    result = subprocess.run([sys.executable, "-m", "lmmsae", "report", "--out", str(small_run.parent), "--name",
                             small_run.name, "--resume", "--open"], env=env(BROWSER=str(browser)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert opened.read_text().strip() == (small_run / "report" / "index.html").resolve().as_uri()
    assert "open:" not in (small_run / "run.yaml").read_text()  # a flag of the command, not saved config


def test_serve_serves_the_report_on_localhost(small_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lmmsae", "serve", "--out", str(small_run.parent), "--name",
                             small_run.name, "--port", str(port)], env=env(), stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/report/index.html" in line
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/report/index.html", timeout=5) as r:
                    body = r.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert body == (small_run / "report" / "index.html").read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_without_a_report_says_how_to_build_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lmmsae", "serve", "--out", str(tmp_path), "--name", "none"],
                            env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ") and "lmmsae report --resume --name none" in result.stderr


def test_train_logs_a_curve_point_every_ten_steps(small_run):
    folder = next((small_run / "sae").glob("*/metrics.json")).parent
    metrics = json.loads((folder / "metrics.json").read_text())
    points = list(read_jsonl(folder / "curve.jsonl"))
    steps = metrics["training"]["steps"]
    assert [p["step"] for p in points] == list(range(10, steps + 1, 10))
    tokens = [p["tokens"] for p in points]
    assert tokens == sorted(tokens) and tokens[-1] <= metrics["training"]["tokens"]
    assert all(p["l0"] == pytest.approx(16) and 0 <= p["dead_fraction"] <= 1 and p["fvu"] > 0 for p in points)
    if steps % 10 == 0:
        assert points[-1]["fvu"] == pytest.approx(metrics["training"]["last_batch"]["fvu"])


def test_terminal_shows_only_our_progress(small_run):
    output = (small_run.parent / "output.txt").read_text()
    assert "[collect] done:" in output and "[train] done:" in output
    assert "Loading weights" not in output and "it/s]" not in output and "Warning" not in output
    assert "\x1b[" not in output  # no ANSI codes when not on a terminal
