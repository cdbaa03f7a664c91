"""Bad SAE and training options fail when the config is read, in one line, before any stage runs."""

import os
import subprocess
import sys

import pytest

from lmmsae.errors import UserError
from lmmsae.saes.topk import TopKSAE

ENV = {**os.environ, "LMMSAE_LOAD_PLUGINS": "", "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("args, message", [
    (["-o", "train.lr=-1"], "Error: train.lr=-1.0 is out of range"),
    (["-o", "train.warmup_steps=-3"], "Error: train.warmup_steps=-3 is out of range"),
    (["-o", "train.batch_size=0"], "Error: train.batch_size=0: it must be >= 1"),
    (["-o", "sae.k=0"], "Error: sae.k=0: it must be in 1..n_latents"),
    (["-o", "sae.n_latents=512", "-o", "sae.k=513"], "Error: sae.k=513: it must be in 1..n_latents"),
    (["-o", "sae.n_latents=-5"], "Error: sae.n_latents=-5: it must be >= 1 (or 0: expansion_factor x d_in)"),
    (["-o", "sae.init_b_dec=median"], "Error: sae.init_b_dec='median': it must be geometric_median, mean or zeros"),
    (["--sae", "jumprelu", "-o", "sae.bandwidth=0"], "Error: sae.bandwidth=0.0: it must be > 0"),
])
def test_bad_options_are_one_line_before_any_stage(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "lmmsae", "run", *args], capture_output=True, text=True,
                            env=ENV, cwd=tmp_path, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not list(tmp_path.glob("runs/*/collect/*"))  # nothing ran


def test_options_are_checked_when_built():
    with pytest.raises(UserError, match=r"sae.k=0: it must be in 1..n_latents"):
        TopKSAE.Options(k=0)
    assert TopKSAE.Options(n_latents=0, k=4).k == 4  # 0 latents: expansion_factor x d_in, checked at build
