"""Preflight: each component says what it lacks (a key, a checkpoint, a folder) before any stage starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmmsae import plugins
from lmmsae.checkpoints import check_checkpoint, looks_local
from lmmsae.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def preflight(kind: str, name: str, dataset=None, **options) -> None:
    component = plugins.get(kind, name)
    component.load().preflight(component.options(options), **({"dataset": dataset} if dataset else {}))


def test_local_paths_and_hub_ids_are_told_apart():
    assert looks_local("/data/ckpt") and looks_local("./ckpt") and looks_local("~/m") and looks_local("a/b/c")
    assert not looks_local("llava-hf/llava-1.5-7b-hf") and not looks_local("toy")


def test_checkpoints_that_exist_pass(tmp_path):
    check_checkpoint("toy", "model.checkpoint")
    check_checkpoint(str(tmp_path), "model.checkpoint")


def test_a_missing_folder_names_the_option(tmp_path):
    with pytest.raises(UserError, match=r"checkpoint folder '.*/nope' does not exist: fix -o explainer.checkpoint=PATH"):
        check_checkpoint(str(tmp_path / "nope"), "explainer.checkpoint")


def run_check(checkpoint: str, cache: Path, offline: bool) -> subprocess.CompletedProcess:
    """check_checkpoint in a fresh interpreter: huggingface_hub reads its cache folder at import. Online,
    the hub endpoint is a local socket that accepts connections (no network here)."""
    import socket

    with socket.socket() as hub:
        hub.bind(("127.0.0.1", 0))
        hub.listen(4)
        env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1" if offline else "0",
               "TRANSFORMERS_OFFLINE": "0", "PYTHONPATH": str(ROOT),
               "HF_ENDPOINT": f"http://127.0.0.1:{hub.getsockname()[1]}"}
        code = f"from lmmsae.checkpoints import check_checkpoint; check_checkpoint({checkpoint!r}, 'model.checkpoint')"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_hub_ids_must_be_in_the_cache_only_offline(tmp_path):
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "abc123"  # the hub cache's real layout
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc123")
    assert run_check("org/tiny", tmp_path, offline=True).returncode == 0
    assert run_check("org/other", tmp_path, offline=False).returncode == 0  # online: downloaded when used
    missing = run_check("org/other", tmp_path, offline=True)
    assert missing.returncode == 1
    assert ("UserError: checkpoint 'org/other' is not a local folder and not in the Hugging Face cache, and "
            "downloads are off (HF_HUB_OFFLINE)") in missing.stderr


def test_api_explainers_need_their_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UserError, match="^needs an API key: set the environment variable ANTHROPIC_API_KEY$"):
        preflight("explainers", "anthropic")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    preflight("explainers", "anthropic")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    preflight("explainers", "openai-compatible", model="m")  # local servers need no key
    with pytest.raises(UserError, match="needs a model name"):
        preflight("explainers", "openai-compatible")


def test_local_explainers_and_models_check_their_checkpoint(tmp_path):
    preflight("explainers", "toy-llava")
    preflight("models", "toy-llava")
    with pytest.raises(UserError, match="needs a checkpoint"):
        preflight("explainers", "transformers")
    with pytest.raises(UserError, match="does not exist: fix -o model.checkpoint=PATH"):
        preflight("models", "llava", checkpoint=str(tmp_path / "missing"))


def test_scorers_check_their_models(tmp_path, monkeypatch):
    preflight("scorers", "clip")
    with pytest.raises(UserError, match="CLIP folder '.*' does not exist"):
        preflight("scorers", "clip", model=f"local-dir:{tmp_path / 'none'}")
    with pytest.raises(UserError, match="CLIP weights file '.*' does not exist"):
        preflight("scorers", "clip", model="ViT-B-32", pretrained=str(tmp_path / "w.bin"))
    with pytest.raises(UserError, match="open_clip has no pretrained weights 'nonesuch'"):
        preflight("scorers", "clip", model="ViT-B-32", pretrained="nonesuch")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UserError, match="needs an API key"):
        preflight("scorers", "detection", judge="anthropic")
    with pytest.raises(UserError, match="does not exist: fix -o scorers.N.detector=PATH"):
        preflight("scorers", "iou", regions="segmenter", detector=str(tmp_path / "dino"))


def test_iou_checks_the_segmenter_only_for_images_without_masks(tmp_path):
    from lmmsae.datasets.base import Dataset
    from lmmsae.datasets.shapes import ShapesDataset

    preflight("scorers", "iou", dataset=ShapesDataset, detector=str(tmp_path / "dino"))  # masks: no segmenter
    with pytest.raises(UserError, match="does not exist: fix -o scorers.N.detector=PATH"):
        preflight("scorers", "iou", dataset=Dataset, detector=str(tmp_path / "dino"))


def test_a_run_on_folder_images_names_the_missing_segmenter_before_collect(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (96, 96), "red").save(tmp_path / "images" / "a.png")
    env = {k: v for k, v in os.environ.items() if k != "LMMSAE_LOAD_PLUGINS"}  # the imagefolder plugin
    out = subprocess.run([sys.executable, "-m", "lmmsae", "run", "--out", str(tmp_path / "runs"), "--name", "r",
                          "--dataset", "imagefolder", "-o", f"dataset.root={tmp_path / 'images'}",
                          "-o", f"scorers.1.detector={tmp_path / 'dino'}"], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "scorer 'iou'" in out.stderr and "fix -o scorers.N.detector=PATH" in out.stderr, out.stderr
    assert not (tmp_path / "runs" / "r" / "activations.h5").exists()


def test_datasets_check_their_folders(tmp_path):
    preflight("datasets", "shapes")
    with pytest.raises(UserError, match="folder '.*' does not exist: set -o dataset.path="):
        preflight("datasets", "hf", path=str(tmp_path / "none"))
