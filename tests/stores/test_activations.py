"""activations.h5: exact round trip, resume after a crash mid-batch, shuffled batches, dtypes."""

import numpy as np
import pytest
import torch

from lmmsae.errors import UserError
from lmmsae.stores.activations import ActivationReader, ActivationWriter, TOKEN_COLUMNS

IDENTITY = {"model": {"checkpoint": "x"}, "dataset": {"name": "d"}, "kinds": ["image"]}


def batch(start, n_samples, per=3, d=4):
    n = n_samples * per
    acts = torch.arange(start * per * d, (start * per + n) * d, dtype=torch.float32).reshape(n, d)
    tokens = {c: np.zeros(n, dt) for c, dt in TOKEN_COLUMNS.items()}
    tokens["sample_index"] = np.repeat(np.arange(start, start + n_samples), per)
    tokens["position"] = np.tile(np.arange(per), n_samples)
    tokens["kind"] = np.tile([3, 1, 1], n_samples)[:n]
    tokens["box"] = np.zeros((n, 4), np.float32)
    samples = [{"index": i, "id": f"s{i}", "token_count": per, "width": 8, "height": 8, "grids": [[2, 2]]}
               for i in range(start, start + n_samples)]
    return {"h": acts}, tokens, samples


def write(path, ranges, dtype="float32"):
    with ActivationWriter(path, {"h": 4}, dtype, IDENTITY) as w:
        for a, b in ranges:
            acts, tokens, samples = batch(a, b - a)
            w.append(acts, tokens, samples, [], b)
        return w.next_sample


def test_round_trip_and_metadata(tmp_path):
    p = tmp_path / "a.h5"
    write(p, [(0, 2), (2, 5)])
    with ActivationWriter(p, {"h": 4}, "float32", IDENTITY) as w:
        w.finish()
    r = ActivationReader(p)
    assert r.hookpoints == ["h"] and r.d_in("h") == 4 and r.n_tokens == 15
    assert np.array_equal(r.read("h"), np.arange(60, dtype=np.float32).reshape(15, 4))
    assert r.tokens()["sample_index"].tolist() == np.repeat(np.arange(5), 3).tolist()
    s = r.samples()
    assert s["token_start"].tolist() == [0, 3, 6, 9, 12] and s["id"].tolist() == ["s0", "s1", "s2", "s3", "s4"]
    assert r.model == {"checkpoint": "x"} and r.n_tokens_of(["image"]) == 10


def test_incomplete_file_is_refused_then_resumes_without_duplicates(tmp_path):
    p = tmp_path / "a.h5"
    write(p, [(0, 2)])
    with pytest.raises(UserError, match="incomplete"):
        ActivationReader(p)
    # a crash after data was written but before the commit: rows exist, counts do not
    w = ActivationWriter(p, {"h": 4}, "float32", IDENTITY)
    acts, tokens, samples = batch(2, 2)
    w.f["h/acts"].resize(10, axis=0)
    w.f["tokens/position"].resize(10, axis=0)
    w.close()
    with ActivationWriter(p, {"h": 4}, "float32", IDENTITY) as w:
        assert w.next_sample == 2 and w.f["h/acts"].shape[0] == 6
        for a, b in [(2, 4), (4, 5)]:
            acts, tokens, samples = batch(a, b - a)
            w.append(acts, tokens, samples, [], b)
        w.finish()
    r = ActivationReader(p)
    assert np.array_equal(r.read("h"), np.arange(60, dtype=np.float32).reshape(15, 4))


def test_resume_with_other_settings_is_refused(tmp_path):
    p = tmp_path / "a.h5"
    write(p, [(0, 1)])
    with pytest.raises(UserError, match="different"):
        ActivationWriter(p, {"h": 4}, "float16", IDENTITY)


@pytest.mark.parametrize("dtype,tol", [("float16", 1e-3), ("bfloat16", 1e-2)])
def test_half_dtypes(tmp_path, dtype, tol):
    p = tmp_path / "a.h5"
    with ActivationWriter(p, {"h": 4}, dtype, IDENTITY) as w:
        x = torch.randn(7, 4)
        acts, tokens, samples = batch(0, 7, per=1)
        w.append({"h": x}, tokens, samples, [], 7)
        w.finish()
    r = ActivationReader(p)
    assert r.read("h").dtype == np.float32
    assert np.allclose(r.read("h"), x.numpy(), rtol=tol, atol=tol)


def test_iter_batches_shuffled_covers_every_row_once(tmp_path):
    p = tmp_path / "a.h5"
    write(p, [(0, 10), (10, 33)])
    with ActivationWriter(p, {"h": 4}, "float32", IDENTITY) as w:
        w.finish()
    r = ActivationReader(p)
    plain = torch.cat(list(r.iter_batches("h", 8)))
    assert torch.equal(plain, torch.from_numpy(r.read("h")))
    batches = list(r.iter_batches("h", 8, shuffle_buffer=20, seed=1))
    assert all(b.dtype == torch.float32 and b.shape[1] == 4 for b in batches)
    assert [len(b) for b in batches[:-1]] == [8] * (len(batches) - 1)
    rows = torch.cat(batches)
    assert not torch.equal(rows, plain)
    assert sorted(rows[:, 0].tolist()) == plain[:, 0].tolist()
    again = torch.cat(list(r.iter_batches("h", 8, shuffle_buffer=20, seed=1)))
    assert torch.equal(rows, again)
    image_only = torch.cat(list(r.iter_batches("h", 5, kinds=["image"])))
    assert len(image_only) == r.n_tokens_of(["image"]) == 66
    assert len(list(r.iter_batches("h", 8, drop_last=True))) == 99 // 8


def test_nan_rows_are_refused_naming_the_file_and_rows(tmp_path):
    p = tmp_path / "a.h5"
    write(p, [(0, 5)])
    with ActivationWriter(p, {"h": 4}, "float32", IDENTITY) as w:
        w.finish()
    import h5py

    with h5py.File(p, "a") as f:  # what random bytes over the data give: NaN / Inf rows
        f["h/acts"][4, 1] = np.nan
        f["h/acts"][9, 0] = np.inf
    r = ActivationReader(p)
    with pytest.raises(UserError, match=r"a\.h5: 2 row\(s\) of h hold NaN or Inf \(rows 4\.\.9\)"):
        list(r.iter_batches("h", 4))


def test_identity_is_exposed_and_checked(tmp_path):
    from lmmsae.stores.identity import check_identity

    p = tmp_path / "a.h5"
    write(p, [(0, 2)])
    with ActivationWriter(p, {"h": 4}, "float32", IDENTITY) as w:
        w.finish()
    r = ActivationReader(p)
    assert r.identity() == {**IDENTITY, "hookpoints": ["h"], "dtype": "float32"}
    check_identity({"model": {"checkpoint": "x"}, "hookpoints": ["h"]}, r.identity(), p)
    with pytest.raises(UserError, match=r"model\.checkpoint: file has \"x\", this run has \"y\""):
        check_identity({"model": {"checkpoint": "y"}}, r.identity(), p)
