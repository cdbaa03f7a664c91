"""The separately installed plugins/lmmsae-imagefolder package appears and works by name."""

import json
from importlib import metadata

import pytest
from click.testing import CliRunner
from PIL import Image

from lmmsae import plugins
from lmmsae.cli import cli
from lmmsae.datasets.base import BadSample
from lmmsae.errors import UserError

pytestmark = pytest.mark.skipif(
    not any(ep.name == "imagefolder" for ep in metadata.entry_points(group="lmmsae")),
    reason="plugins/lmmsae-imagefolder is not installed (pip install ./plugins/lmmsae-imagefolder)",
)


def test_not_loaded_when_plugins_are_disabled():
    plugins.reset()
    assert "imagefolder" not in plugins.registry("datasets")


def test_listed_in_plugins_json(external_plugins):
    data = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).output)
    assert {"name": "imagefolder", "plugin": "imagefolder"} in data["datasets"]
    dist = [p for p in data["plugins"] if p["name"] == "lmmsae-imagefolder"][0]
    assert dist["version"] == metadata.version("lmmsae-imagefolder")
    assert dist["components"] == {"datasets": ["imagefolder"]}


def test_allow_list_by_distribution_name(monkeypatch):
    monkeypatch.setenv("LMMSAE_LOAD_PLUGINS", "lmmsae-imagefolder")
    plugins.reset()
    try:
        assert "imagefolder" in plugins.registry("datasets")
    finally:
        plugins.reset()


def test_usable_by_name(external_plugins, tmp_path):
    for i, colour in enumerate(["red", "blue", "green"]):
        Image.new("RGB", (16, 12), colour).save(tmp_path / f"img{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "labels.json").write_text(json.dumps({"img1.png": "a blue square"}))
    component = plugins.get("datasets", "imagefolder")
    dataset = component.load()(component.options({"root": str(tmp_path), "prompt": "describe"}))
    assert len(dataset) == 3
    sample = dataset.sample(1)
    assert (sample.id, sample.prompt, sample.truth) == ("img1.png", "describe", {"caption": "a blue square"})
    assert sample.image.getpixel((0, 0)) == (0, 0, 255)


def test_bad_root_is_clear_before_any_stage(external_plugins, tmp_path):
    component = plugins.get("datasets", "imagefolder")
    with pytest.raises(UserError, match="is not a folder: set -o dataset.root=<folder of images>"):
        component.load()(component.options({"root": str(tmp_path / "nope")}))
    with pytest.raises(UserError, match="is not a folder"):
        component.load().preflight(component.options({"root": str(tmp_path / "nope")}))


def test_missing_root_hint_names_the_override_path(external_plugins):
    with pytest.raises(UserError) as err:
        plugins.get("datasets", "imagefolder").options({})
    assert str(err.value) == "dataset 'imagefolder' needs option(s) root: set them with -o dataset.root=..."


def test_corrupt_image_is_a_skippable_bad_sample(external_plugins, tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    component = plugins.get("datasets", "imagefolder")
    dataset = component.load()(component.options({"root": str(tmp_path)}))
    assert dataset.sample(0).id == "a.png"
    with pytest.raises(BadSample) as err:
        dataset.sample(1)
    assert isinstance(err.value, UserError)  # one line where nothing skips
    assert (err.value.sample_id, str(err.value)) == (
        "broken.png", "sample 'broken.png': image cannot be read (UnidentifiedImageError): fix or remove it")
