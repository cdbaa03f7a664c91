"""lmmsae.toyworld.yesno_search trains yes/no above the hookpoint: the SAEs' activations stay bit-identical."""

import random

import pytest

from lmmsae.datasets.shapes import ShapesDataset


@pytest.mark.usefixtures("toy_weights")
def test_two_steps_leave_layers_2_alone_and_grow_the_lm_by_one_layer(tmp_path, capsys):
    import torch

    from lmmsae.toyworld import load_llava
    from lmmsae.toyworld.train import build_tokenizer, encode_batch, llava_example_probe, to_pixels
    from lmmsae.toyworld.yesno_search import main

    main(["--steps", "2", "--every", "0", "--threads", "1", "--out", str(tmp_path)])
    log = capsys.readouterr().out
    assert "att_c" not in log  # logged every 25 steps only
    assert "final yes/no present" in log and "saved" in log
    shipped, _ = load_llava()
    trained, _ = load_llava(tmp_path)
    assert trained.config.text_config.num_hidden_layers == shipped.config.text_config.num_hidden_layers + 1
    ds = ShapesDataset(ShapesDataset.Options(n=4, seed=0, split="test"))
    examples = [llava_example_probe(ds.sample(i), random.Random(i), 0.0, 1.0) for i in range(4)]
    ids, att, _, _ = encode_batch([e[:3] for e in examples], build_tokenizer("llava"))
    batch = dict(input_ids=ids, attention_mask=att, pixel_values=to_pixels([e[0] for e in examples]),
                 output_hidden_states=True)
    with torch.no_grad():
        a, b = shipped(**batch), trained(**batch)
    assert torch.equal(a.hidden_states[3], b.hidden_states[3])  # layers.2's output, what the toy SAEs read
    assert not torch.allclose(a.hidden_states[4], b.hidden_states[4])  # layer 3 trained


def test_adding_no_layer_is_refused_in_one_line(tmp_path, capsys):
    from lmmsae.toyworld.yesno_search import main

    with pytest.raises(SystemExit) as exit_:
        main(["--add", "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--add 0: at least one layer must be added" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_near_misses_share_a_colour_or_a_shape_with_a_held_object_and_are_absent():
    from lmmsae.datasets.shapes import probe
    from lmmsae.toyworld.yesno_search import near_miss

    ds = ShapesDataset(ShapesDataset.Options(n=40, seed=0, split="train"))
    rng, kinds = random.Random(0), {"colour": 0, "shape only": 0}
    for i in range(40):
        s = ds.sample(i)
        held = {(o["color"], o["shape"]) for o in s.truth["objects"]}
        absent = (s.image, "unused", "no", s, probe(s.truth, rng, False))
        for _ in range(5):
            image, prompt, answer, sample, (color, shape, where) = near_miss(absent, rng)
            assert image is s.image and sample is s and answer == "no" and where is None
            assert prompt == f"<image> is there a {color} {shape} ?" and (color, shape) not in held
            same_color = any(o["color"] == color for o in s.truth["objects"])
            assert same_color or any(o["shape"] == shape for o in s.truth["objects"])
            kinds["colour" if same_color else "shape only"] += 1
    assert 0.6 < kinds["colour"] / 200 < 0.8, kinds  # 70/30 by design
