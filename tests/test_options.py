"""Option parsing coerces what YAML and -o give, and rejects what cannot mean the declared type."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmmsae.errors import UserError
from lmmsae.options import parse_options


@dataclass
class Opts:
    n_latents: int = 1024
    lr: float | None = None
    normalize: bool = False
    mode: Literal["clamp", "add"] = "clamp"
    layers: list[int] = field(default_factory=list)


def test_coercions():
    opts = parse_options(Opts, {"n_latents": "2048", "lr": "1e-3", "normalize": "true", "layers": 3}, "sae")
    assert opts == Opts(n_latents=2048, lr=1e-3, normalize=True, mode="clamp", layers=[3])


@pytest.mark.parametrize("values, message", [
    ({"n_latents": "many"}, "sae.n_latents = 'many' should be an integer"),
    ({"n_latents": 2.5}, "sae.n_latents = 2.5 should be an integer"),
    ({"normalize": "maybe"}, "sae.normalize = 'maybe' should be true or false"),
    ({"mode": "replace"}, "sae.mode = 'replace' must be one of 'clamp', 'add'"),
    ({"nlatents": 3}, "unknown option 'nlatents' for sae. Did you mean 'n_latents'?"),
])
def test_bad_values_are_one_line_errors(values, message):
    with pytest.raises(UserError) as err:
        parse_options(Opts, values, "sae")
    assert message in str(err.value)


def test_required_option_named():
    @dataclass
    class Needs:
        root: str

    with pytest.raises(UserError, match=r"dataset needs option\(s\) root: set them with -o dataset.root=\.\.\."):
        parse_options(Needs, {}, "dataset")
