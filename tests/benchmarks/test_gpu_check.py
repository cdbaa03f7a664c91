"""benchmarks/gpu_check.sh at a tiny scale on CPU, so the GPU check cannot rot: collect -> train -> cache
on LLaVA-NeXT-8B's architecture (random weights, bf16 model with the SAE in fp32) and its figures."""

import json
import os
import re
import subprocess
from pathlib import Path

from lmmsae import artifacts

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCALE": "0.015625", "IMAGES": "4", "DEVICE": "cpu",
           "DTYPE": "bfloat16", "BATCH": "2", "OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines():
        m = re.match(r"(collect|train|cache)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+|nan)\s+([\d.]+) GiB\s+-", line)
        if m:
            rows[m.group(1)] = [float(x) for x in m.groups()[1:]]
    assert set(rows) == {"collect", "train", "cache"}, done.stdout
    assert all(r[0] > 0 and r[1] > 0 and r[3] > 0 for r in rows.values())
    assert rows["collect"][2] > 0 and rows["cache"][2] > 0
    run = tmp_path / "gpu-check"
    figures = json.loads((run / "gpu_check.json").read_text())
    assert figures["tokens"]["collect"] == figures["tokens"]["cache"] > 4 * 40
    saved = (run / "run.yaml").read_text()
    assert "dtype: bfloat16" in saved and "layers.24" in saved
    cfg = json.loads((run / "sae" / "model.language_model.layers.24" / "cfg.json").read_text())
    assert cfg["n_latents"] == 32 * 64 and cfg["k"] == 4, "the paper's SAE shape relative to d=64"
    from lmmsae.rundir import RunDir

    for name in (artifacts.ACTIVATIONS, artifacts.SAE_DIR, artifacts.FEATURES):
        assert RunDir(run).is_complete(name), name
