import pytest

from lmmsae.errors import UserError
from lmmsae.steering.loading import find_sae_dir


def test_find_sae_dir_full_short_and_explicit(tmp_path):
    (tmp_path / "sae" / "layers.2").mkdir(parents=True)
    (tmp_path / "sae" / "layers.2" / "cfg.json").write_text("{}")
    assert find_sae_dir(tmp_path, "model.language_model.layers.2") == tmp_path / "sae" / "layers.2"
    assert find_sae_dir("elsewhere", "layers.2", sae_path=str(tmp_path)) == tmp_path / "sae" / "layers.2"
    assert find_sae_dir("x", "layers.9", sae_path=str(tmp_path / "sae" / "layers.2")) == tmp_path / "sae" / "layers.2"
    with pytest.raises(UserError, match="run `lmmsae train` first"):
        find_sae_dir(tmp_path, "model.language_model.layers.3")
