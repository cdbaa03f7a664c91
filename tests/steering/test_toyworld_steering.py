"""Science on the trained toy LLaVA: a ground-truth 'red' SAE feature, clamped, makes the model say
'red'; attribution of a colour answer finds a feature that fires on the named object.

Needs the shipped toy weights (lmmsae/toyworld/weights/llava); fails without them.
Rates are printed (pytest -s) as well as asserted.
"""

import pytest


pytestmark = pytest.mark.usefixtures("toy_weights")  # core data: fail, never skip, without it

HOOK = "layers.1"
N_TRAIN = 300


@pytest.fixture(scope="module")
def toy():
    import torch

    from lmmsae import plugins
    from lmmsae.datasets.shapes import ShapesDataset
    from toy_helpers import collect, color_latent, train_topk

    torch.set_num_threads(1)
    comp = plugins.get("models", "toy-llava")
    adapter = comp.load()(comp.options())
    hp = adapter.resolve_hookpoints([HOOK])[0]
    train = ShapesDataset(ShapesDataset.Options(n=N_TRAIN, split="val"))
    x, colors = collect(adapter, hp, [train.sample(i) for i in range(N_TRAIN)])
    sae = train_topk(x, n_latents=256, k=8, steps=400)
    red, purity, max_act = color_latent(sae, x, colors, "red")
    return {"adapter": adapter, "hp": hp, "sae": sae, "red": red, "purity": purity, "max_act": max_act,
            "test": ShapesDataset(ShapesDataset.Options(n=400, split="test"))}


def test_clamping_a_red_feature_makes_the_model_say_red(toy):
    from lmmsae.steering.evaluate import concept_rate
    from lmmsae.steering.steer import Steering
    from lmmsae.steering.sweep import SteerSpec, generate

    assert toy["purity"] >= 0.8, f"no clean red feature: best purity {toy['purity']:.2f}"
    test = toy["test"]
    no_red = [s for s in (test.sample(i) for i in range(len(test)))
              if all(o["color"] != "red" for o in s.truth["objects"])][:40]
    base = generate(toy["adapter"], no_red, "<image>", None, batch_size=20)
    rates = {}
    for mult in (1.0, 3.0):
        spec = SteerSpec(toy["hp"], toy["sae"], Steering([toy["red"]], [mult * toy["max_act"]], "clamp"),
                         token_kinds=["image"])
        rates[mult] = concept_rate(generate(toy["adapter"], no_red, "<image>", spec, batch_size=20), "red")
    base_rate = concept_rate(base, "red")
    print(f"\nred latent {toy['red']} (purity {toy['purity']:.2f}, max {toy['max_act']:.2f}): 'red' in captions "
          f"of {len(no_red)} images without red: {base_rate:.2f} unsteered, "
          + ", ".join(f"{r:.2f} clamped at {m:g}x max" for m, r in rates.items()))
    assert base_rate <= 0.05
    assert max(rates.values()) >= base_rate + 0.5


def test_attribution_of_a_colour_answer_finds_the_objects_feature(toy):
    from lmmsae.attribution import attribute_answer
    from toy_helpers import patch_objects

    test = toy["test"]
    hits, tried = 0, 0
    for i in range(len(test)):
        s = test.sample(i)
        first = sorted(s.truth["objects"], key=lambda o: (o["row"], o["col"]))[0]
        k = s.truth["objects"].index(first)
        baseline = "blue" if first["color"] != "blue" else "green"
        res = attribute_answer(toy["adapter"], toy["sae"], toy["hp"], [s], f"<image> a {first['size']}",
                               first["color"], baseline, top_k=5, n_ablate=0, rank_by="image", n_maps=5)
        if res.metric[0] <= 0:
            continue  # the model does not prefer the right colour here
        owner = patch_objects(s, res.activation_maps[res.ranked[0]][0].shape)
        on_object = owner == k
        for latent in res.ranked[:5]:
            act = res.activation_maps[latent][0]
            if act.sum() > 0 and act[on_object].sum() >= 0.5 * act.sum():
                hits += 1
                break
        tried += 1
        if tried == 20:
            break
    print(f"\nattribution: a top-5 feature fires mainly on the named object in {hits}/{tried} images")
    assert tried >= 10 and hits >= 0.7 * tried
