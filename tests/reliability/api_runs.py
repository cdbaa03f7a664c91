"""Helpers for running the real `lmmsae explain` against the fake API server: a features.h5 to explain
and the command line that points an API explainer at the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from truth_features import write_truth_features

DATASET = {"n": 120, "image_size": 48, "seed": 3}


def oracle_features(folder: Path, attributes) -> Path:
    """A complete features.h5 of oracle features (one per attribute) on the toy shapes."""
    from lmmsae.datasets.shapes import ShapesDataset

    from lmmsae import artifacts

    path = folder / "features.h5"
    write_truth_features(path, ShapesDataset(ShapesDataset.Options(**DATASET)), attributes)
    path.with_name(path.name + artifacts.STATE_SUFFIX).write_text('{"status": "complete"}\n')
    return path


def explain_args(api: str, server, features: Path, out: Path, *extra: str) -> list[str]:
    url = server.url + ("/v1" if api == "openai-compatible" else "")
    return ["explain", "--name", "r", "--out", str(out), "--explainer", api, "--dataset", "shapes",
            *[a for k, v in DATASET.items() for a in ("-o", f"dataset.{k}={v}")],
            "-o", f"explainer.base_url={url}", "-o", "explainer.model=fake-vlm", "-o", "explainer.api_key_env=FAKE_KEY",
            "-o", f"explain.features={features}", "-o", "explain.n_features=0", *extra]


def run_cli(args: list[str], key: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m lmmsae ...` of the lmmsae under test, with the key in its environment."""
    import lmmsae

    here = str(Path(lmmsae.__file__).resolve().parents[1])
    env = {**os.environ, "LMMSAE_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1", "FAKE_KEY": key,
           "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "lmmsae", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def files_holding(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
