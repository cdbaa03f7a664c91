"""Hookpoint names without a model: aliases, short forms, globs, errors."""

import pytest

from lmmsae.errors import UserError
from lmmsae.models.hookpoints import canonical, layer_index, resolve, short

LISTED = [f"model.language_model.layers.{i}" for i in range(12)]


@pytest.mark.parametrize("name", ["layers.3", "model.layers.3", "language_model.layers.3",
                                  "language_model.model.layers.3", "model.language_model.layers.3", " layers.3 "])
def test_aliases(name):
    assert canonical(name) == "model.language_model.layers.3"
    assert short(canonical(name)) == "layers.3" and layer_index(canonical(name)) == 3


def test_globs_and_errors():
    assert resolve(["layers.1?"], LISTED) == LISTED[10:12]
    assert resolve("layers.[2-3]", LISTED) == LISTED[2:4]
    with pytest.raises(UserError, match="Did you mean 'model.language_model.layers.11'"):
        resolve(["layers.111"], LISTED)
    with pytest.raises(UserError, match=r"\.\.\. , model.language_model.layers.11 \(12 in all\)"):
        resolve(["nope"], LISTED)


def test_no_heavy_imports():
    import subprocess
    import sys

    code = ("import sys, lmmsae.models, lmmsae.models.hookpoints, lmmsae.models.base, lmmsae.stages.collect, "
            "lmmsae.commands.models, lmmsae.default_plugins.models; "
            "print(any(m in sys.modules for m in ('torch', 'transformers', 'h5py')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
