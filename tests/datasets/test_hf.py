"""The `hf` dataset reads a real `datasets` dataset written by save_to_disk (no hub access in tests)."""

import numpy as np
import pytest
from PIL import Image

from lmmsae import plugins
from lmmsae.errors import UserError

datasets = pytest.importorskip("datasets")


@pytest.fixture
def saved(tmp_path):
    images = [Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)) for i in range(3)]
    data = datasets.Dataset.from_dict(
        {"picture": images, "question": ["what?", "why?", "how?"], "key": ["a", "b", "c"],
         "caption": ["dark", "grey", "light"]},
        features=datasets.Features({"picture": datasets.Image(), "question": datasets.Value("string"),
                                    "key": datasets.Value("string"), "caption": datasets.Value("string")}))
    datasets.DatasetDict({"validation": data}).save_to_disk(str(tmp_path / "ds"))
    return tmp_path / "ds"


def make(**options):
    comp = plugins.get("datasets", "hf")
    return comp.load()(comp.options(options))


def test_rows_become_samples_in_order(saved):
    ds = make(path=str(saved), split="validation", image_column="picture", prompt_column="question",
              id_column="key", caption_column="caption", limit=2)
    assert len(ds) == 2
    samples = list(ds)
    assert [s.id for s in samples] == ["a", "b"] and [s.prompt for s in samples] == ["what?", "why?"]
    assert samples[1].image.mode == "RGB" and samples[1].image.size == (30, 20)
    assert np.asarray(samples[1].image)[0, 0].tolist() == [40, 40, 40]
    assert samples[0].truth == {"caption": "dark"}


def test_default_ids_and_prompt(saved):
    ds = make(path=str(saved), split="validation", image_column="picture", prompt="<image>")
    assert [s.id for s in ds] == ["validation-0", "validation-1", "validation-2"]
    assert ds.sample(2).prompt == "<image>" and ds.sample(2).truth is None


@pytest.mark.parametrize("options, message", [
    ({"split": "train", "image_column": "picture"}, "has no split 'train'; splits: validation"),
    ({"split": "validation"}, "has no column 'image' (image_column); columns: caption, key, picture, question"),
    ({"split": "validation", "image_column": "question"}, "holds no image"),
])
def test_bad_options_are_one_line(saved, options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ds = make(path=str(saved), **options)
        ds.sample(0)
