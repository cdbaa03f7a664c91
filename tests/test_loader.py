"""One bad-sample policy: a corrupt image in an image folder is skipped by collect and by cache
(reported, counted, recorded in both outputs), or stops the run with one line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lmmsae import artifacts
from lmmsae.cli import cli


@pytest.fixture
def folder(tmp_path):
    from lmmsae.datasets.shapes import ShapesDataset

    root = tmp_path / "images"
    root.mkdir()
    shapes = ShapesDataset(ShapesDataset.Options(n=10))
    for i in range(10):
        shapes.sample(i).image.save(root / f"img{i:02d}.png")
    (root / "img04.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))  # a torn download
    return root


ARGS = ["--dataset", "imagefolder", "-o", "sae.n_latents=64", "-o", "sae.k=4", "-o", "train.eval_ce=false",
        "-o", "train.batch_size=64", "-o", "collect.batch_size=4", "-o", "cache.batch_size=4", "--until", "cache"]


def test_a_corrupt_image_is_skipped_and_recorded_by_collect_and_cache(folder, tmp_path, external_plugins):
    from lmmsae.stores.activations import ActivationReader
    from lmmsae.stores.features import FeatureStore

    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "runs"), "--name", "r", *ARGS,
                                      "-o", f"dataset.root={folder}"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "r"
    with ActivationReader(run / artifacts.ACTIVATIONS) as reader:
        assert [s["id"] for s in reader.skipped()] == ["img04.png"]
        assert 4 not in set(reader.tokens()["sample_index"].tolist())
    with FeatureStore(run / artifacts.FEATURES) as store:
        assert [s["id"] for s in store.attrs["skipped"]] == ["img04.png"] and store.n_images == 9
    events = [json.loads(x) for x in (run / artifacts.EVENTS).read_text().splitlines()]
    skipped = [(e["stage"], e["id"]) for e in events if e["event"] == "sample-skipped"]
    assert skipped == [("collect", "img04.png"), ("cache", "img04.png")]
    for rel in (artifacts.ACTIVATIONS, artifacts.FEATURES):
        state = json.loads((run / (rel + artifacts.STATE_SUFFIX)).read_text())
        assert state["status"] == "complete" and state["info"]["skipped"] == 1


def test_on_bad_sample_stop_ends_in_one_line(folder, tmp_path, external_plugins):
    result = CliRunner().invoke(cli, ["run", "--out", str(tmp_path / "runs"), "--name", "r", *ARGS,
                                      "-o", f"dataset.root={folder}", "--on-bad-sample", "stop"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "collect: sample 'img04.png' (index 4): image cannot be read" in result.output
    assert "--on-bad-sample skip" in result.output
