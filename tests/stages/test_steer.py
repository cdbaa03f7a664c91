"""The steer stage: options and flags, the plain function, and a run directory end to end."""

import json
import sys
from pathlib import Path

import pytest

from lmmsae.stages import steer as stage

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
sys.path.insert(0, str(Path(__file__).parents[1] / "steering"))


def test_cli_params_are_options():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(stage.Options)}
    assert {p.name for p in stage.CLI_PARAMS} <= fields


def test_stage_module_imports_no_torch():
    import subprocess

    code = "import sys, lmmsae.stages.steer, lmmsae.commands.attribute, lmmsae.commands.hallucination; " \
           "print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_options_validation():
    from lmmsae.errors import UserError
    from lmmsae.options import parse_options

    o = parse_options(stage.Options, {"feature": "3", "strength": [0, "2.5"], "token_kinds": "image"}, "steer")
    assert o.feature == [3] and o.strength == [0.0, 2.5] and o.token_kinds == ["image"]
    with pytest.raises(UserError, match="clamp or add"):
        parse_options(stage.Options, {"mode": "mul"}, "steer")
    with pytest.raises(UserError, match="unknown option 'strenght'"):
        parse_options(stage.Options, {"strenght": 1}, "steer")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from lmmsae import plugins
    from tiny import build_llava

    torch.set_num_threads(1)
    path = build_llava(tmp_path_factory.mktemp("llava") / "ckpt")
    comp = plugins.get("models", "llava")
    return path, comp.load()(comp.options({"checkpoint": str(path)}))


def test_steer_dataset_appends_resumes_and_summarizes(tiny, tmp_path):
    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.jsonl import read_jsonl
    from tiny_sae import TinySAE

    _, ad = tiny
    hp = ad.resolve_hookpoints(["layers.1"])[0]
    sae = TinySAE(d=ad.d_model(hp), n=64)
    ds = ShapesDataset(ShapesDataset.Options(n=6, image_size=32))
    opts = stage.Options(feature=[1, 2], strength=[0.0, 20.0], mode="add", n_images=3, max_new_tokens=5,
                         batch_size=2, prompt="<image> describe it", concept=["square"])
    out = tmp_path / "steering" / "steer.jsonl"
    summary = stage.steer_dataset(ad, sae, hp, ds, opts, out)
    rows = list(read_jsonl(out))
    assert len(rows) == 12 and summary["n"] == 12
    assert summary["settings"]["1@0"]["changed"] == 0.0 and summary["settings"]["1@0"]["kl"] == 0.0
    assert all("concept_in_steered" in r for r in rows)
    # a crash after 5 lines: the rerun writes only the missing 7
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:5]) + '{"key": "torn')
    stage.steer_dataset(ad, sae, hp, ds, opts, out)
    again = list(read_jsonl(out))
    assert sorted(r["key"] for r in again) == sorted(r["key"] for r in rows)
    with pytest.raises(Exception, match="out of range"):
        stage.steer_dataset(ad, sae, hp, ds, stage.Options(feature=[64]), out)


def test_run_in_a_run_directory(tiny, tmp_path):
    from lmmsae.saes import io
    import torch

    from lmmsae import plugins
    from lmmsae.config import resolve
    from lmmsae.context import RunContext
    from lmmsae.rundir import RunDir

    path, ad = tiny
    hp = ad.resolve_hookpoints(["layers.1"])[0]
    comp = plugins.get("saes", "topk")
    torch.manual_seed(0)
    sae = comp.load()(ad.d_model(hp), comp.options({"n_latents": 64, "k": 4}))
    io.save_sae(sae, tmp_path / "run" / "sae" / hp)
    config = resolve(file={"model": {"name": "llava", "checkpoint": str(path)},
                           "dataset": {"name": "shapes", "n": 4, "image_size": 32}, "hookpoints": ["layers.1"],
                           "steer": {"feature": [5], "strength": [0.0, 8.0], "mode": "add", "n_images": 2,
                                     "max_new_tokens": 4}})
    ctx = RunContext(config, RunDir(tmp_path / "run"))
    ctx.adopt("sae")
    stage.run(ctx)
    rel = stage.output_path("steer")
    assert ctx.run.is_complete(rel)
    rows = [json.loads(x) for x in ctx.run.file(rel).read_text().splitlines()]
    assert len(rows) == 4 and {r["strength"] for r in rows} == {0.0, 8.0}
    state = ctx.run.state(rel)
    assert state["info"]["summary"]["n"] == 4 and state["extent"]["feature"] == [5]
    before = ctx.run.file(rel).read_text()
    stage.run(RunContext(config, ctx.run))  # current: skipped
    assert ctx.run.file(rel).read_text() == before

    # another feature on the same run: its records are added (it used to be skipped silently)
    other = resolve(base=config.to_dict(), overrides=[("steer.feature", [7])])
    assert RunContext(other, ctx.run).units("steer")[0].status == "extend"
    stage.run(RunContext(other, ctx.run))
    rows = [json.loads(x) for x in ctx.run.file(rel).read_text().splitlines()]
    assert sorted({r["feature"] for r in rows}) == [5, 7] and len(rows) == 8
    assert ctx.run.file(rel).read_text().startswith(before)
    assert ctx.run.state(rel)["extent"]["feature"] == [7]


def test_steer_command_line(tiny, tmp_path):
    from lmmsae.saes import io
    import torch
    from click.testing import CliRunner

    from lmmsae import plugins
    from lmmsae.cli import cli

    path, ad = tiny
    comp = plugins.get("saes", "topk")
    torch.manual_seed(0)
    sae_dir = io.save_sae(comp.load()(ad.d_model("layers.1"), comp.options({"n_latents": 64, "k": 4})),
                          tmp_path / "released" / "layers.1")
    args = ["steer", "--out", str(tmp_path / "runs"), "--name", "s", "--model", "llava",
            "-o", f"model.checkpoint={path}", "--dataset", "shapes", "-o", "dataset.n=4", "-o", "dataset.image_size=32",
            "--hookpoint", "layers.1", "--feature", "5", "--feature", "7", "--strength", "0", "--strength", "6",
            "--mode", "add", "--n-images", "2", "--token-kinds", "image", "--concept", "red",
            "--sae-path", str(sae_dir), "-o", "steer.max_new_tokens=4"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "s" / "steering" / "steer.jsonl"
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 and {r["feature"] for r in rows} == {5, 7}
    assert all(r["token_kinds"] == [1] for r in rows)
    assert all(r["steered"] == r["original"] for r in rows if r["strength"] == 0)
    bad = CliRunner().invoke(cli, args[:1] + ["--out", str(tmp_path / "runs"), "--name", "t", "--model", "llava",
                                              "-o", f"model.checkpoint={path}", "--hookpoint", "layers.1",
                                              "--dataset", "shapes"])
    assert bad.exit_code != 0 and "at least one feature" in bad.output


def test_judge_uses_explanations_when_no_concept_is_given(tiny, tmp_path):
    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.jsonl import read_jsonl
    from tiny_sae import TinySAE

    class Judge:
        prompts = []

        def ask(self, images, prompt):
            self.prompts.append(prompt)
            return "Yes." if "square" in prompt.split("Does this text")[0] else "No."

    expl = tmp_path / "expl.jsonl"
    expl.write_text(json.dumps({"latent": 3, "hookpoint": "h", "explainer": "x", "text": "long", "label": "squares",
                                "status": "ok"}) + "\n")
    _, ad = tiny
    hp = ad.resolve_hookpoints(["layers.1"])[0]
    opts = stage.Options(feature=[3], strength=[0.0], mode="add", n_images=2, max_new_tokens=4, kl=False,
                         prompt="<image> describe it", judge=True)
    out = tmp_path / "j.jsonl"
    stage.steer_dataset(ad, TinySAE(d=ad.d_model(hp), n=64), hp, ShapesDataset(ShapesDataset.Options(n=2, image_size=32)),
                        opts, out, judge=Judge(), judge_concepts=stage.explanations_by_latent(expl))
    rows = list(read_jsonl(out))
    assert len(rows) == 2 and all(r["judge_concept"] == "squares" for r in rows)
    for r in rows:
        assert r["judge_steered"] == ("square" in r["steered"].split())
    assert len(Judge.prompts) == 4 and '"squares"' in Judge.prompts[0]


def test_steer_prints_its_summary_per_setting_and_the_path(capsys, tmp_path):
    from lmmsae.stages.steer import print_summary

    summary = {"n": 4, "settings": {
        "3@50": {"n": 2, "changed": 0.5, "kl": 0.12345, "repetition_steered": 0.25, "concept_original": 0.0,
                 "concept_steered": 1.0},
        "3@0": {"n": 2, "changed": 0.0, "kl": 0.0, "repetition_steered": 0.0, "concept_original": 0.0,
                "concept_steered": 0.0}}}
    path = tmp_path / "steering" / "steer.jsonl"
    print_summary(summary, path)
    lines = capsys.readouterr().out.rstrip().splitlines()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in lines
            if line.startswith("│") and "@" in line}
    assert rows == {"3@50": ["2", "50%", "0.123", "0.250", "0%", "100%"], "3@0": ["2", "0%", "0.000", "0.000", "0%", "0%"]}
    assert lines[-1] == f"steering records: {path}"
