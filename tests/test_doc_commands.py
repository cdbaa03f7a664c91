"""Every `lmmsae ...` command shown in a fenced code block of docs/*.md or README.md is a real command
line, and does on the toy world what its page says (issue 19.6).

- test_documented_command_parses: its command exists and every flag, choice and type parses against
  the real click commands.
- test_documented_command_runs: each command runs in-process (click's CliRunner) in a tmp folder laid
  out as its page assumes (runs/, the shipped config files, a checkpoint folder, a POPE file, ...),
  and its case in RUNS checks what it made, not only its exit status. What a case changes to make the
  command run here is kept small and visible: the runs go under the tmp `--out`; a command on an
  existing run works on a copy of the shared small toy-world run (`small_run`, tests/conftest.py) cut
  back to the stages its page ran before it; sizes shrink through `-o` overrides and size flags; a value
  naming something that is not here (a port, a server, a token count) is replaced. No flag is dropped.
  Claude and an OpenAI-compatible server answer from the explainer tests' fake API server. The
  documented `lmmsae run` is the small run itself (tests/small_run.py: RUN_ARGS).
- EXEMPT holds the commands that cannot run here (a GPU, a real checkpoint, a download) with the reason;
  the guards keep every documented command run or exempt, the exemptions under a third, and no entry
  stale. SLOW ones (minutes on CPU) run with `-m slow`.
"""

from __future__ import annotations

import collections
import http.server
import json
import re
import shlex
import shutil
import sys
import threading
import traceback
import urllib.request
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
sys.path.insert(0, str(ROOT / "tests" / "explainers"))  # the explainer tests' fake API server
NOT_COMMANDS = {"lmmsae run | collect | train | cache | explain | score | report | steer | compare"}  # a diagram


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) for each `lmmsae ...` in a fenced block; continuations joined, comments cut."""
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                for part in line.split("&&"):
                    part = part.strip()
                    if part.startswith("lmmsae ") and not any(part.startswith(n) for n in NOT_COMMANDS):
                        out.append((page.name, shlex.split(part, comments=True)))
    return out


COMMANDS = documented_commands()
LINES: dict[str, list[str]] = {}  # each distinct command (its words joined by spaces) -> argv
for _, _argv in COMMANDS:
    LINES.setdefault(" ".join(_argv), _argv)

EXEMPT = {  # command prefix or exact line -> why it cannot run here
    "lmmsae run --name myrun --device cuda":
        "needs a GPU (--device cuda)",
    "lmmsae collect --name myrun --device cuda":
        "needs a GPU (--device cuda)",
    "lmmsae cache --config examples/paper-llava-next.yaml":
        "needs LLaVA-NeXT-8B and the released 131k-latent SAE (downloads), and a GPU",
    "lmmsae steer --config examples/paper-llava-next.yaml":
        "needs LLaVA-NeXT-8B and the released 131k-latent SAE (downloads), and a GPU",
    "lmmsae run --model llava-next --hookpoint layers.24 --dataset imagefolder":
        "needs the LLaVA-NeXT-8B checkpoint (a download) and a GPU",
    "lmmsae run --model llava-next --dataset hf":
        "needs the LLaVA-NeXT-8B checkpoint and COCO from the hub (downloads), and a GPU",
    "lmmsae collect --model llava-next -o model.checkpoint=/data/llava-v1.6-mistral-7b-hf":
        "needs a LLaVA-NeXT checkpoint folder on local disk (a download)",
    "lmmsae run --model llava-next --sae topk --explainer llava-ov":
        "needs the LLaVA-NeXT-8B and LLaVA-OneVision-72B checkpoints (downloads) and GPUs",
}


def exemption(line: str) -> str | None:
    return next((why for key, why in EXEMPT.items() if line == key or line.startswith(key + " ")), None)


# ------------------------------------------------------------------------------------ the cases

RUNS: dict = {}     # exact documented line -> case(doc)
SLOW: set[str] = set()

# a new toy-world run, smaller (the default run collects 2,000 images and explains 200 features)
TINY_BUT_SAE = ["-o", "dataset.n=16", "-o", "collect.batch_size=16", "-o", "explain.n_features=3",
                "-o", "train.eval_ce=false", "-o", "report.images=1"]
TINY = [*TINY_BUT_SAE, "-o", "sae.n_latents=32", "-o", "sae.k=8"]
HOOKPOINT = "model.language_model.layers.2"
STAGE_OUTPUTS = {  # what each stage of the small run left, in stage order
    "collect": ["collect"], "train": ["sae", "sae.state.json"], "cache": ["cache"], "explain": ["explanations"],
    "score": ["scores", "categories"], "report": ["report", "report.state.json"],
    "extras": ["steering", "compare", "attribution", "hallucination"],
}


def runs(*lines: str, slow: bool = False):
    def register(case):
        for line in lines:
            assert line not in RUNS, line
            RUNS[line] = case
            if slow:
                SLOW.add(line)
        return case
    return register


def read(path: Path) -> list[dict]:
    from lmmsae.jsonl import read_jsonl

    return list(read_jsonl(path))


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def hookpoints_listed(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if line.startswith("model.")]


@runs("lmmsae run")
def whole_loop(doc):
    """README and Getting started: the shared small run is this command, smaller (tests/small_run.py)."""
    from small_run import RUN_ARGS

    assert RUN_ARGS[0] == "run" and set(RUN_ARGS[1::2]) == {"--name", "-o"}  # sizes only
    run = doc.small_run
    for rel in ["collect/activations.h5", f"sae/{HOOKPOINT}/sae.safetensors", "cache/features.h5",
                "explanations/toy-llava.jsonl", "scores/clip/toy-llava.jsonl", "scores/iou/toy-llava.jsonl",
                "report/index.html", "report/summary.json"]:
        assert (run / rel).is_file(), rel
    assert "iou: explanation scores vs random baselines" in (run.parent / "output.txt").read_text()


@runs("lmmsae cache --resume --name myrun")
def cache_after_train(doc):
    from lmmsae.stores.features import FeatureStore

    run = doc.copy_run("myrun", upto="train")
    doc.lmmsae("--n-images", "32")
    with FeatureStore(run / "cache" / "features.h5") as store:
        assert store.complete and store.n_images == 32 and store.latents == list(range(256))


@runs("lmmsae cache --resume --name myrun --latents 0:200 --n-top 64 --pooling max --batch-size 8")
def cache_options(doc):
    from lmmsae.stores.features import FeatureStore

    run = doc.copy_run("myrun")  # its cache (every latent, base_mean, n_top 32) is made again
    doc.lmmsae("--n-images", "16")
    with FeatureStore(run / "cache" / "features.h5") as store:
        assert store.complete and store.n_images == 16 and store.latents == list(range(200))
        assert store.attrs["pooling"] == "max" and store.attrs["n_top"] == 64


@runs("lmmsae run --resume --name myrun -o explain.n_features=500 --dry-run")
def dry_run(doc):
    run = doc.copy_run("myrun")
    before = mtimes(run)
    out = doc.lmmsae()
    assert re.search(r"explain .*extend .*changed: explain\.n_features", out), out
    assert re.search(r"collect .*current", out) and re.search(r"report .*rerun", out), out
    assert mtimes(run) == before


@runs("lmmsae run --resume --name myrun --overwrite cache")
def overwrite_cache(doc):
    run = doc.copy_run("myrun")
    before = mtimes(run)
    doc.lmmsae()
    after = mtimes(run)
    for rel in ["collect/activations.h5", f"sae/{HOOKPOINT}/sae.safetensors"]:
        assert after[rel] == before[rel], f"{rel} was made again"
    for rel in ["cache/features.h5", "explanations/toy-llava.jsonl", "scores/clip/toy-llava.jsonl",
                "report/index.html"]:
        assert after[rel] != before[rel], f"{rel} was not made again"


@runs("lmmsae explain --resume --name paper")
def explain_after_cache(doc):
    run = doc.copy_run("paper", upto="cache")
    doc.lmmsae("--n-features", "5")
    records = read(run / "explanations" / "toy-llava.jsonl")
    assert len(records) == 5 and {r["hookpoint"] for r in records} == {HOOKPOINT}
    assert sum(1 for r in records if r["status"] == "ok" and r["text"]) >= 3


@runs("lmmsae explain --resume --name myrun")
def explain_interrupted(doc):
    """An explain stage stopped after 5 of its 10 features goes on from there."""
    run = doc.copy_run("myrun", upto="explain")
    path = run / "explanations" / "toy-llava.jsonl"
    kept = [{**r, "text": "kept"} for r in read(path)[:5]]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    state = json.loads(path.with_name(path.name + ".state.json").read_text())
    path.with_name(path.name + ".state.json").write_text(json.dumps({**state, "status": "running"}))
    doc.lmmsae()
    records = read(path)
    assert records[:5] == kept and len(records) == 10
    assert {r["latent"] for r in records} == set(state["info"]["latents"])


@runs("lmmsae run --explainer anthropic")
def run_with_claude(doc):
    doc.lmmsae(*TINY)
    run = doc.new_run()
    records = read(run / "explanations" / "anthropic.jsonl")
    assert len(records) == 3 and any(r["text"].endswith(" regions") for r in records)  # the fake API's answers
    assert (run / "report" / "index.html").is_file() and (run / "scores" / "clip" / "anthropic.jsonl").is_file()


@runs("lmmsae compare --resume --name myrun --explainers toy-llava --explainers anthropic")
def compare_with_claude(doc):
    run = doc.copy_run("myrun")
    out = doc.lmmsae("--latents", "0", "--latents", "3")
    summary = json.loads((run / "compare" / "summary.json").read_text())
    assert {"toy-llava", "anthropic"} <= set(json.dumps(summary).split('"')), summary
    assert len(read(run / "compare" / "explanations" / "anthropic.jsonl")) == 2
    assert (run / "compare" / "scores" / "clip" / "anthropic.jsonl").is_file() and "anthropic" in out


@runs("lmmsae explain --config runs/myrun/run.yaml --name myrun-claude --explainer anthropic "
      "-o explain.features=runs/myrun/cache/features.h5")
def explain_other_run(doc):
    doc.copy_run("myrun")
    doc.lmmsae()
    new = doc.runs / "myrun-claude"
    assert len(read(new / "explanations" / "anthropic.jsonl")) == 10
    assert not (new / "cache").exists() and not (new / "collect").exists()


@runs("lmmsae run --explainer openai-compatible -o explainer.base_url=http://gpu-node:8000/v1 "
      "-o explainer.model=llava-hf/llava-onevision-qwen2-72b-ov-hf -o explainer.concurrency=32")
def run_with_a_server(doc):
    doc.lmmsae(*TINY, replace={"explainer.base_url=http://gpu-node:8000/v1": f"explainer.base_url={doc.api.url}/v1"})
    records = read(doc.new_run() / "explanations" / "openai-compatible.jsonl")
    assert len(records) == 3 and any(r["text"].endswith(" regions") for r in records)
    assert any(e["path"].startswith("/v1/chat/completions") for e in doc.api.log)


@runs("lmmsae run --model llava-next -o model.config=benchmarks/configs/llama3-llava-next-8b.json "
      "-o model.random_init=true -o model.scale=0.125 -o sae.n_latents=16384 -o sae.k=32 --dataset imagefolder "
      "-o dataset.root=~/images --scorer clip", slow=True)
def random_init_llava_next(doc):
    doc.copy_file("benchmarks/configs/llama3-llava-next-8b.json")
    doc.images(doc.here / "images", 12)  # the CLIP baseline draws 5 images besides a feature's own
    doc.monkeypatch.setenv("HOME", str(doc.here))  # ~/images
    doc.plugins()  # imagefolder
    doc.lmmsae("-o", "explain.n_features=3", "-o", "train.batch_size=256", "-o", "train.eval_ce=false",
               "-o", "report.images=1")
    run = doc.new_run()
    cfg = json.loads((run / "sae" / "model.language_model.layers.24" / "cfg.json").read_text())
    assert cfg["n_latents"] == 16384 and cfg["d_in"] == 512
    assert (run / "report" / "index.html").is_file() and not (run / "scores" / "iou").exists()


def expect_layers(output: str, n: int) -> None:
    assert hookpoints_listed(output) == [f"model.language_model.layers.{i}" for i in range(n)], output


@runs("lmmsae models --hookpoints llava-next --config benchmarks/configs/llama3-llava-next-8b.json")
def hookpoints_from_a_config(doc):
    doc.copy_file("benchmarks/configs/llama3-llava-next-8b.json")
    expect_layers(doc.lmmsae(), 32)


@runs("lmmsae models --hookpoints llava-ov --config benchmarks/configs/llava-onevision-qwen2-7b.json")
def hookpoints_of_onevision(doc):
    doc.copy_file("benchmarks/configs/llava-onevision-qwen2-7b.json")
    expect_layers(doc.lmmsae(), 28)


@runs("lmmsae models --hookpoints llava-next")
def hookpoints_of_the_default_checkpoint(doc):
    """Its config.json alone in the Hugging Face cache (no weights), as after a download of the config."""
    import huggingface_hub.constants

    repo = doc.here / "hf" / "hub" / "models--llava-hf--llama3-llava-next-8b-hf"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "configs" / "llama3-llava-next-8b.json",
                repo / "snapshots" / ("0" * 40) / "config.json")
    doc.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(doc.here / "hf" / "hub"))
    expect_layers(doc.lmmsae(), 32)


@runs("lmmsae models --hookpoints llava --checkpoint ./my-llava")
def hookpoints_of_a_local_checkpoint(doc):
    from lmmsae import toyworld

    shutil.copytree(toyworld.LLAVA_DIR, doc.here / "my-llava")  # a llava-hf folder: the toy LLaVA
    expect_layers(doc.lmmsae(), 5)  # 4 trained from scratch, 1 added by phase 3


@runs("lmmsae report --resume --name <run>", "lmmsae report --resume --name paper",
      "lmmsae report --name myrun --resume")
def report_after_score(doc):
    placeholder = doc.name == "<run>"
    run = doc.copy_run("myrun" if placeholder else doc.name, upto="score")
    doc.lmmsae(replace={"<run>": "myrun"} if placeholder else None)
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert (run / "report" / "index.html").is_file() and len(list((run / "report" / "features").glob("*.html"))) == 10
    assert "clip" in json.dumps(summary) and "iou" in json.dumps(summary)


@runs("lmmsae report --resume --name <run> --open")
def report_open(doc):
    import webbrowser

    run = doc.copy_run("myrun")
    opened = []
    doc.monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    before = mtimes(run / "report")
    doc.lmmsae(replace={"<run>": "myrun"})
    assert opened == [(run / "report" / "index.html").resolve().as_uri()]
    assert mtimes(run / "report") == before  # current: --open changes nothing


@runs("lmmsae serve --name <run> --port 8000")
def serve(doc):
    run = doc.copy_run("myrun")
    got = {}

    class OneRequest(http.server.ThreadingHTTPServer):
        """The real server; once it serves, fetch the report from it, then stop it (no Ctrl-C here)."""

        def serve_forever(self, poll_interval=0.05):
            def fetch():
                try:
                    url = f"http://127.0.0.1:{self.server_address[1]}/report/index.html"
                    with urllib.request.urlopen(url, timeout=30) as r:
                        got["body"] = r.read()
                finally:
                    self.shutdown()
            threading.Thread(target=fetch, daemon=True).start()
            super().serve_forever(poll_interval)

    doc.monkeypatch.setattr(http.server, "ThreadingHTTPServer", OneRequest)
    out = doc.lmmsae(replace={"<run>": "myrun", "8000": "0"})  # port 0: a free one, never a busy 8000
    assert got["body"] == (run / "report" / "index.html").read_bytes() and "/report/index.html" in out


@runs("lmmsae train --resume --name myrun")
def train_after_collect(doc):
    run = doc.copy_run("myrun", upto="collect")
    doc.lmmsae("-o", "train.eval_ce=false")
    cfg = json.loads((run / "sae" / HOOKPOINT / "cfg.json").read_text())
    metrics = json.loads((run / "sae" / HOOKPOINT / "metrics.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["n_latents"] == 256 and "fvu" in json.dumps(metrics).lower()


@runs("lmmsae train --sae batchtopk -o sae.k=64 --max-tokens 2000000 --lr 1e-3 --source model")
def train_from_the_model(doc):
    doc.lmmsae("-o", "dataset.n=16", "-o", "train.eval_ce=false", replace={"2000000": "4096"})
    run = doc.new_run()
    cfg = json.loads((run / "sae" / HOOKPOINT / "cfg.json").read_text())
    assert cfg["k"] == 64 and "batchtopk" in json.dumps(cfg)
    assert not (run / "collect").exists()  # streamed, nothing stored


@runs("lmmsae run --sae jumprelu -o sae.expansion_factor=16 -o sae.l0_coefficient=0.02")
def run_jumprelu(doc):
    doc.lmmsae(*TINY_BUT_SAE, replace={"sae.expansion_factor=16": "sae.expansion_factor=2"})
    run = doc.new_run()
    cfg = json.loads((run / "sae" / HOOKPOINT / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["n_latents"] == 2 * 256
    assert (run / "report" / "index.html").is_file()


@runs("lmmsae score --resume --name paper")
def score_after_explain(doc):
    run = doc.copy_run("paper", upto="explain")
    doc.lmmsae("--max-latents", "5")
    for scorer in ("clip", "iou"):
        records = read(run / "scores" / scorer / "toy-llava.jsonl")
        assert len(records) == 5 and all("score" in r for r in records)
    assert (run / "categories" / "toy-llava.jsonl").is_file()


@runs("lmmsae score --name myrun --resume")
def score_what_is_missing(doc):
    run = doc.copy_run("myrun")
    shutil.rmtree(run / "scores" / "iou")  # the run's other scorer, clip, is current
    before = mtimes(run)
    doc.lmmsae()
    after = mtimes(run)
    assert after["scores/clip/toy-llava.jsonl"] == before["scores/clip/toy-llava.jsonl"]
    iou, clip = (read(run / "scores" / scorer / "toy-llava.jsonl") for scorer in ("iou", "clip"))
    assert [r["latent"] for r in iou] == [r["latent"] for r in clip] and all("score" in r for r in iou)


@runs("lmmsae score --name myrun --resume --scorer detection -o scorers.2.judge=anthropic")
def score_detection_by_claude(doc):
    run = doc.copy_run("myrun")
    before = mtimes(run)
    doc.lmmsae("-o", "scorers.2.n_positive=1", "-o", "scorers.2.n_negatives=1")
    records = read(run / "scores" / "detection" / "toy-llava.jsonl")
    assert len(records) == 10 and all(r.get("status") == "ok" for r in records), records[:2]
    assert mtimes(run)["scores/clip/toy-llava.jsonl"] == before["scores/clip/toy-llava.jsonl"]
    assert doc.api.asked["judge"] >= 10 * 2


@runs("lmmsae steer --config runs/RUN/run.yaml --name RUN-steer --sae-path runs/RUN --feature 123 --strength 10 "
      "--strength 50 --mode clamp")
def steer_from_another_run(doc):
    doc.copy_run("RUN")  # its config steers 2 images, 6 new tokens
    doc.lmmsae()
    new = doc.runs / "RUN-steer"
    records = read(new / "steering" / "steer.jsonl")
    assert sorted((r["feature"], r["strength"], r["mode"]) for r in records) == [(123, 10.0, "clamp")] * 2 + [
        (123, 50.0, "clamp")] * 2
    assert not (new / "sae").exists()


@runs("lmmsae attribute --resume --name RUN --prompt <image> a large --answer red --baseline blue --image-index 3")
def attribute(doc):
    run = doc.copy_run("RUN")
    doc.lmmsae("--n-ablate", "2")
    result = json.loads((run / "attribution" / "attribution.json").read_text())
    assert (result["answer"], result["baseline"], result["prompt"]) == ("red", "blue", "<image> a large")
    assert result["sample_indices"] == [3] and result["ranked"] and len(result["ablation"]) == 2


@runs("lmmsae hallucination --resume --name RUN")
def hallucination_toy(doc):
    run = doc.copy_run("RUN")
    doc.lmmsae("--n-images", "2")
    result = json.loads((run / "hallucination" / "hallucination.json").read_text())
    assert result["pope"]["baseline"]["n"] > 0 and result["chair"]["baseline"]["n_captions"] == 2


@runs("lmmsae hallucination --resume --name RUN --pope coco_pope_random.jsonl --image-root val2014/ "
      "--template USER: <image>\\n{question} Answer yes or no. ASSISTANT: --ablate 123")
def hallucination_pope(doc):
    """A POPE file in COCO's layout over two toy-world images."""
    from lmmsae.datasets.shapes import ShapesDataset

    run = doc.copy_run("RUN")
    (doc.here / "val2014").mkdir()
    dataset = ShapesDataset(ShapesDataset.Options(n=2))
    lines = []
    for i in range(2):
        sample = dataset.sample(i)
        sample.image.save(doc.here / "val2014" / f"COCO_val2014_{i:012d}.jpg")
        shown = sample.truth["objects"][0]
        for thing, label in ((f"{shown['color']} {shown['shape']}", "yes"), ("dog", "no")):
            lines.append(json.dumps({"question_id": len(lines) + 1, "image": f"COCO_val2014_{i:012d}.jpg",
                                     "text": f"Is there a {thing} in the image?", "label": label}))
    (doc.here / "coco_pope_random.jsonl").write_text("\n".join(lines) + "\n")
    doc.lmmsae()
    result = json.loads((run / "hallucination" / "hallucination.json").read_text())
    assert len(result["pope"]) == 2 and all(m["n"] == 4 for m in result["pope"].values()), result["pope"]


# ------------------------------------------------------------------------------------ the fixtures


class Doc:
    """One documented command, run in `here` (the current folder) with its runs under here/runs."""

    def __init__(self, line, here, api, request, monkeypatch):
        self.line, self.argv = line, LINES[line]
        self.here, self.runs, self.api, self.request, self.monkeypatch = here, here / "runs", api, request, monkeypatch
        self.name = self.argv[self.argv.index("--name") + 1] if "--name" in self.argv else None
        self.ran = False

    @property
    def small_run(self) -> Path:
        """The shared small run (made on first use: a command making a new run does not wait for it)."""
        return self.request.getfixturevalue("small_run")

    def copy_run(self, name: str, upto: str = "extras") -> Path:
        """The small run as runs/<name>, without what the stages after `upto` made."""
        run = self.runs / name
        shutil.copytree(self.small_run, run)
        stages = list(STAGE_OUTPUTS)
        for stage in stages[stages.index(upto) + 1:]:
            for rel in STAGE_OUTPUTS[stage]:
                path = run / rel
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        return run

    def new_run(self) -> Path:
        """The one run the command created (named by its start time)."""
        made = [p for p in self.runs.iterdir() if p.is_dir()]
        assert len(made) == 1, made
        return made[0]

    def copy_file(self, rel: str) -> None:
        (self.here / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, self.here / rel)

    def images(self, folder: Path, n: int) -> None:
        from lmmsae.datasets.shapes import ShapesDataset

        folder.mkdir(parents=True)
        dataset = ShapesDataset(ShapesDataset.Options(n=n))
        for i in range(n):
            dataset.sample(i).image.save(folder / f"{i}.png")

    def plugins(self) -> None:
        """Installed plugins load (the imagefolder dataset), for this test only."""
        from lmmsae import plugins

        self.monkeypatch.delenv("LMMSAE_LOAD_PLUGINS", raising=False)
        plugins.reset()  # and again after the test

    def lmmsae(self, *extra: str, replace: dict[str, str] | None = None) -> str:
        """Run the documented command with the values in `replace` swapped (old -> new) and `extra`
        appended (and --out, where the command takes it); its terminal output."""
        from click.testing import CliRunner

        from lmmsae.cli import cli

        argv = list(self.argv[1:])
        for old, new in (replace or {}).items():
            assert old in argv, f"{old!r} is not a word of `{self.line}`"
            argv = [new if a == old else a for a in argv]
        command = cli.get_command(None, argv[0])
        if any(p.name == "out" for p in command.params):
            argv += ["--out", str(self.runs)]
        argv += extra
        result = CliRunner().invoke(cli, argv)
        self.ran = True
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            tb = "".join(traceback.format_exception(result.exception))
        else:
            tb = ""
        assert result.exit_code == 0, f"`{self.line}` failed as `lmmsae {shlex.join(argv)}`:\n{result.output}{tb}"
        return result.output


@pytest.fixture(scope="module")
def api():
    """The fake API server of the explainer tests: Claude and OpenAI-compatible explainers and judges."""
    from fake_lmm_server import FakeLMMServer, default_responder, verdict

    def answer(body):
        if "Does this image contain it" in json.dumps(body):  # the detection judge
            server.asked["judge"] += 1
            return verdict(0.7)
        server.asked["explainer"] += 1
        return default_responder(body)

    server = FakeLMMServer(responder=answer).start()
    server.keep_bodies, server.asked = False, collections.Counter()
    yield server
    server.stop()


@pytest.fixture
def doc(request, tmp_path, api, monkeypatch):
    from lmmsae import plugins

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-doc-commands")  # Claude is the fake API server
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    (tmp_path / "runs").mkdir()
    yield Doc(request.param, tmp_path, api, request, monkeypatch)
    plugins.reset()


# ------------------------------------------------------------------------------------ the tests


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30, COMMANDS


@pytest.mark.parametrize("page, argv", COMMANDS, ids=[" ".join(a)[:60] for _, a in COMMANDS])
def test_documented_command_parses(page, argv):
    from lmmsae.cli import cli

    group = cli.make_context("lmmsae", argv[1:2], resilient_parsing=False)
    command = cli.get_command(group, argv[1])
    assert command is not None, f"{page}: `lmmsae {argv[1]}` is not a command"
    try:
        command.make_context(argv[1], argv[2:], parent=group)
    except click.UsageError as exc:
        pytest.fail(f"{page}: `{' '.join(argv)}` does not parse: {exc.format_message()}")


def test_every_documented_command_is_run_or_exempt():
    neither = [line for line in LINES if line not in RUNS and exemption(line) is None]
    both = [line for line in LINES if line in RUNS and exemption(line) is not None]
    assert not neither, f"documented commands neither run nor exempt (a changed command needs its case): {neither}"
    assert not both, both


def test_no_stale_case_or_exemption():
    assert not [line for line in RUNS if line not in LINES], "cases of commands no page shows"
    assert not [key for key in EXEMPT if not any(line == key or line.startswith(key + " ") for line in LINES)]
    assert SLOW <= set(RUNS)


def test_exemptions_are_fewer_than_a_third():
    exempt = [line for line in LINES if exemption(line)]
    assert 3 * len(exempt) < len(LINES), exempt
    assert 3 * sum(1 for _, argv in COMMANDS if exemption(" ".join(argv))) < len(COMMANDS)


@pytest.mark.parametrize("doc", [pytest.param(line, marks=[pytest.mark.slow] if line in SLOW else [], id=line[7:70])
                                 for line in LINES if line in RUNS], indirect=True)
def test_documented_command_runs(doc):
    RUNS[doc.line](doc)
    assert doc.ran or RUNS[doc.line] is whole_loop, "the case never ran its command"
