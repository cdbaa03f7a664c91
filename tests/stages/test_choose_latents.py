"""Which latents the explain stage picks: alive ones in order, minus those lit on too little of their top images."""

import numpy as np
import pytest

from truth_features import DATASET, write_truth_features

from lmmsae.stages.explain import Options, active_share, choose_latents

ATTRIBUTES = [("color", "red"), ("background", "black"), ("shape", "circle"), ("background", "white")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from lmmsae.datasets.shapes import ShapesDataset
    from lmmsae.stores.features import FeatureStore

    path = tmp_path_factory.mktemp("features") / "features.h5"
    write_truth_features(path, ShapesDataset(ShapesDataset.Options(**{k: v for k, v in DATASET.items() if k != "name"})),
                         attributes=ATTRIBUTES)
    with FeatureStore(path) as s:
        yield s


def test_active_share_is_the_lit_share_of_the_top_maps(store):
    for latent in range(len(ATTRIBUTES)):
        maps = store.entries(latent, "top")["maps"][:5]
        assert active_share(store, latent) == pytest.approx(float((maps > 0).mean()))
    # an object attribute lights a few patches; a background lights most of its images
    assert active_share(store, 0) < 0.3 and active_share(store, 2) < 0.3
    assert active_share(store, 1) > 0.5 and active_share(store, 3) > 0.5


def test_min_active_share_skips_latents_lit_on_a_patch_or_two(store):
    assert choose_latents(store, Options(), seed=0) == [0, 1, 2, 3]
    assert choose_latents(store, Options(min_active_share=0.3), seed=0) == [1, 3]
    assert choose_latents(store, Options(min_active_share=0.3, n_features=1), seed=0) == [1]
    assert choose_latents(store, Options(min_active_share=0.3, latents=[0]), seed=0) == [0]  # explicit wins
    with pytest.raises(ValueError, match="min_active_share"):
        Options(min_active_share=1.5)
