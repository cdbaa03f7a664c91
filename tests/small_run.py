"""The small real run the report tests and the documented commands' tests look at (the `small_run`
fixture of tests/conftest.py): `lmmsae run` on the toy world with smaller sizes (RUN_ARGS), then a
steering sweep, a comparison of two renderings of the toy explainer, and explanations whose text is HTML."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lmmsae.cli import cli

RUN = "small"
SMALL = ["-o", "dataset.n=160", "-o", "sae.n_latents=256", "-o", "sae.k=16", "-o", "explain.n_features=10",
         "-o", "collect.batch_size=32", "-o", "report.images=4", "-o", "train.eval_samples=16",
         "-o", "train.batch_size=256"]
SCRIPT_TEXT = "<script>alert(1)</script> and </script><!-- \u2028"
IMG_TEXT = "<img src=x onerror=\"document.title='pwned'\">"
RUN_ARGS = ("run", "--name", RUN, *SMALL)   # plus --out


def invoke(*args):
    """Run a command as a user would; its terminal output is kept in <out>/output.txt for tests."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    with open(out / "output.txt", "a", encoding="utf-8") as f:
        f.write(result.output)
    return result


def make_small_run(out: Path) -> Path:
    """runs/small under `out`: run, steer one feature, compare two renderings, make the explainer's last
    answers for two features HTML (as a model or API might), rebuild the report."""
    from lmmsae.explainers.store import ExplanationWriter
    from lmmsae.records import Explanation

    invoke(*RUN_ARGS, "--out", str(out))
    run = out / RUN
    first = [json.loads(x) for x in (run / "explanations" / "toy-llava.jsonl").read_text().splitlines()]
    latents, hookpoint = sorted({r["latent"] for r in first}), first[0]["hookpoint"]
    invoke("steer", "--out", str(out), "--name", RUN, "--resume", "--feature", str(latents[0]), "--strength", "40",
           "--n-images", "2", "-o", "steer.max_new_tokens=6", "-o", "steer.kl=false")
    invoke("compare", "--out", str(out), "--name", RUN, "--resume", "-o", f"compare.latents={latents[:4]}",
           "-o", "compare.explainers=[{name: toy-llava, id: masked}, {name: toy-llava, id: heatmap, render: heatmap}]")
    with ExplanationWriter(run / "explanations" / "toy-llava.jsonl") as w:  # the model answers in HTML now
        w.write(Explanation(latents[0], hookpoint, "toy-llava", text=SCRIPT_TEXT, label=SCRIPT_TEXT))
        w.write(Explanation(latents[1], hookpoint, "toy-llava", text=IMG_TEXT))
    invoke("report", "--out", str(out), "--name", RUN, "--resume", "--overwrite")
    return run
