import numpy as np
import pytest

from lmmsae.cache.latents import parse_latents
from lmmsae.cache.layout import MapLayout, ViewGeometry
from lmmsae.errors import UserError


def test_layout_cells_union_and_remap():
    lay = MapLayout(((2, 3), (1, 2)))
    assert lay.size == 8 and lay.offsets == (0, 6)
    assert lay.cells([0, 0, 1], [1, 0, 0], [2, 1, 1]).tolist() == [5, 1, 7]
    big = lay.union(MapLayout(((3, 3),)))
    assert big.views == ((3, 3), (1, 2))
    flat = np.arange(8.0)
    moved = np.zeros(big.size)
    moved[lay.remap_index(big)] = flat
    assert big.view_map(moved, 0, 2, 3).tolist() == lay.view_map(flat, 0).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert big.view_map(moved, 1).tolist() == [[6, 7]]
    assert MapLayout.of([[ViewGeometry(4, 4, (0, 0, 1, 1))], []]) == MapLayout(((4, 4),))
    assert MapLayout.from_list(big.to_list()) == big


def test_parse_latents(tmp_path):
    assert parse_latents(None, 5) == [0, 1, 2, 3, 4] == parse_latents("all", 5)
    assert parse_latents("1:3", 5) == [1, 2] and parse_latents(":2", 5) == [0, 1] and parse_latents("3:", 5) == [3, 4]
    assert parse_latents([4, 1, 1], 5) == [1, 4] and parse_latents("0,2:4", 5) == [0, 2, 3]
    f = tmp_path / "ids.txt"
    f.write_text("# chosen\n7\n2, 3\n")
    assert parse_latents(str(f), 10) == [2, 3, 7]
    (tmp_path / "ids.json").write_text("[5, 1]")
    assert parse_latents(str(tmp_path / "ids.json"), 10) == [1, 5]
    with pytest.raises(UserError, match="out of range"):
        parse_latents([9], 5)
    with pytest.raises(UserError, match="cannot read latents"):
        parse_latents("a:b", 5)
