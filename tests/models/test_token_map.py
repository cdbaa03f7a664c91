"""Ground truth for the token map: a marker painted into a known image region changes exactly the
image tokens whose boxes the map says cover it (real transformers classes, tiny random weights)."""

import numpy as np
import pytest
from PIL import Image

import tiny
from markers import check_marker
from lmmsae.datasets.base import Sample
from lmmsae.models.base import TokenKind


@pytest.mark.parametrize("size,rect", [
    ((32, 32), (8, 8, 16, 24)),        # no resampling at all: exact
    ((50, 30), (30, 5, 45, 25)),       # resize shortest edge + centre crop
    ((64, 64), (0, 40, 20, 64)),
])
def test_llava_marker(llava_adapter, size, rect):
    tm, changed = check_marker(llava_adapter, size, rect, 8)
    assert tm.grids[0] == [(4, 4)]


def test_llava_exact_rows_cols(llava_adapter):
    tm, changed = check_marker(llava_adapter, (32, 32), (8, 8, 16, 24), 8)
    rows, cols = tm.row[0][changed], tm.col[0][changed]
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(1, 1), (2, 1)]


def test_llava_pad_to_square(tiny_dir):
    from lmmsae.models.llava import LlavaAdapter

    path = tiny.build_llava(tiny_dir / "llava-pad", image_size=32, patch=4, do_pad=True)
    adapter = LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)))
    tm, _ = check_marker(adapter, (20, 70), (2, 40, 18, 60), 4)
    b = tm.box[0][tm.kind[0] == TokenKind.IMAGE]
    # the padded left and right columns cover no pixels of the original
    assert (b[:, 2] - b[:, 0]).min() == 0 and b[:, 2].max() == 20


def test_llava_full_strategy_keeps_cls_as_special(tiny_dir):
    from lmmsae.models.llava import LlavaAdapter

    path = tiny.build_llava(tiny_dir / "llava-full", strategy="full")
    adapter = LlavaAdapter(LlavaAdapter.Options(checkpoint=str(path)))
    batch = adapter.prepare([Sample("s", Image.new("RGB", (32, 32)), "")])
    kind = batch.token_map.kind[0]
    first_image = np.nonzero(kind == TokenKind.IMAGE)[0][0]
    assert kind[first_image - 1] == TokenKind.SPECIAL and (kind == TokenKind.IMAGE).sum() == 16


@pytest.fixture(scope="module")
def next_adapter(tiny_dir):
    from lmmsae.models.llava_next import LlavaNextAdapter

    path = tiny.build_llava_next(tiny_dir / "next", image_size=32, patch=8,
                                 pinpoints=((32, 64), (64, 32), (64, 64), (96, 32), (32, 96)))
    return LlavaNextAdapter(LlavaNextAdapter.Options(checkpoint=str(path)))


@pytest.mark.parametrize("size,rect", [
    ((64, 32), (40, 4, 60, 28)),       # fits a pinpoint exactly: tiles unresized
    ((50, 30), (2, 2, 20, 14)),        # wide: unpadded rows
    ((200, 70), (150, 30, 190, 60)),   # very wide: 3 tiles
    ((30, 100), (5, 70, 25, 95)),      # tall: unpadded columns
])
def test_llava_next_marker(next_adapter, size, rect):
    tm, changed = check_marker(next_adapter, size, rect, 8)
    view = tm.view[0]
    assert changed[view == 0].any() and changed[view >= 1].any(), "marker seen in base view and tiles"
    n_newline = (tm.kind[0] == TokenKind.IMAGE_NEWLINE).sum()
    rows_in_tiles = len({(v, r) for v, r in zip(view[tm.kind[0] == TokenKind.IMAGE], tm.row[0][tm.kind[0] == TokenKind.IMAGE]) if v >= 1})
    assert n_newline >= 1 and rows_in_tiles >= n_newline


def test_llava_next_newlines_end_rows(next_adapter):
    batch = next_adapter.prepare([Sample("s", Image.new("RGB", (50, 30)), "")])
    kind = batch.token_map.kind[0]
    image_pos = np.nonzero(np.isin(kind, [TokenKind.IMAGE, TokenKind.IMAGE_NEWLINE]))[0]
    seq = kind[image_pos]
    assert seq[-1] == TokenKind.IMAGE_NEWLINE
    # base view (16 tokens) has no newline; then rows of the unpadded tile grid each end with one
    assert (seq[:16] == TokenKind.IMAGE).all()
    runs = np.split(seq[16:], np.nonzero(seq[16:] == TokenKind.IMAGE_NEWLINE)[0] + 1)[:-1]
    assert len({len(r) for r in runs}) == 1


@pytest.mark.parametrize("max_tiles,size,rect", [
    (9, (70, 40), (10, 10, 30, 30)),    # no downsampling
    (1, (90, 40), (50, 5, 85, 35)),     # bilinear downsampling of the tile grid
    (2, (40, 95), (3, 60, 30, 90)),
])
def test_llava_ov_marker(tiny_dir, max_tiles, size, rect):
    from lmmsae.models.llava_ov import LlavaOnevisionAdapter

    path = tiny.build_llava_ov(tiny_dir / f"ov{max_tiles}", image_size=24, patch=6, max_tiles=max_tiles)
    adapter = LlavaOnevisionAdapter(LlavaOnevisionAdapter.Options(checkpoint=str(path)))
    tm, changed = check_marker(adapter, size, rect, 6)
    assert changed[tm.view[0] >= 1].any()


def test_batch_of_mixed_sizes_and_text_only(next_adapter):
    samples = [Sample("a", Image.new("RGB", (50, 30)), "describe it"), Sample("b", None, "is there a red circle ?"),
               Sample("c", Image.new("RGB", (200, 70)), "")]
    batch = next_adapter.prepare(samples)
    tm = batch.token_map
    assert tm.image_sizes == [(50, 30), None, (200, 70)]
    assert tm.grids[1] == [] and (tm.kind[1] != TokenKind.IMAGE).all()
    # each row's map matches the same sample prepared alone
    for i, s in enumerate(samples):
        alone = next_adapter.prepare([s]).token_map
        n = alone.shape[1]
        assert (tm.kind[i][:n] == alone.kind[0]).all() and (tm.kind[i][n:] == TokenKind.PADDING).all()
        assert np.allclose(tm.box[i][:n], alone.box[0])


def test_view_map_and_table(llava_adapter):
    batch = llava_adapter.prepare([Sample("s", Image.new("RGB", (32, 32)), "describe it")])
    tm = batch.token_map
    values = np.arange(tm.shape[1], dtype=np.float32)
    grid = tm.view_map(0, values)
    first = np.nonzero(tm.kind[0] == TokenKind.IMAGE)[0][0]
    assert grid.shape == (4, 4) and grid[0, 0] == first and grid[3, 3] == first + 15
    table = tm.table(tm.mask(["image"]))
    assert len(table["position"]) == 16 and set(table["kind"]) == {int(TokenKind.IMAGE)}
    assert table["box"].shape == (16, 4)


@pytest.mark.parametrize("family", ["next", "ov"])
def test_real_geometries_agree_with_processor_and_model(tiny_dir, family):
    """The paper-scale geometries (336/14 NeXT pinpoints, 384/14 anyres_max_9): counts agree for odd sizes."""
    from lmmsae.models.llava_next import LlavaNextAdapter
    from lmmsae.models.llava_ov import LlavaOnevisionAdapter

    if family == "next":
        path = tiny.build_llava_next(tiny_dir / "next-real", image_size=336, patch=14,
                                     pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])
        adapter, base = LlavaNextAdapter(LlavaNextAdapter.Options(checkpoint=str(path))), (24, 24)
    else:
        pins = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
        path = tiny.build_llava_ov(tiny_dir / "ov-real", image_size=384, patch=14, max_tiles=9, pinpoints=pins)
        adapter, base = LlavaOnevisionAdapter(LlavaOnevisionAdapter.Options(checkpoint=str(path))), (27, 27)
    batch = adapter.prepare([Sample(str(s), Image.new("RGB", s)) for s in [(640, 480), (300, 1000), (1100, 700)]])
    tm = batch.token_map
    for b in range(3):
        assert tm.grids[b][0] == base and (tm.view[b] == 0).sum() == base[0] * base[1]
        image = tm.kind[b] == TokenKind.IMAGE
        w, h = tm.image_sizes[b]
        assert tm.box[b][image][:, [0, 1]].min() >= 0 and (tm.box[b][image][:, 2] <= w).all()
        assert (tm.box[b][image][:, 3] <= h).all()
    adapter.forward(adapter.prepare([Sample("x", Image.new("RGB", (300, 1000)))]), ["layers.0"])  # model agrees
