"""A full disk during collect: one line, no crash, and --resume gives the uninterrupted file bit for bit.

With root (CI) the disk is a real size-limited tmpfs; without, the file size limit (RLIMIT_FSIZE)
makes the kernel refuse the writes the same way (EFBIG instead of ENOSPC).
"""

import contextlib
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from lmmsae.stores.activations import ActivationReader, ActivationWriter

ROOT = Path(__file__).resolve().parents[2]
COLLECT = ["-o", "dataset.n=32", "-o", "collect.batch_size=4", "--until", "collect"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "LMMSAE_LOAD_PLUGINS": ""}


def _limit_file_size(nbytes):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))
    return apply


def _lmmsae(*args, limit=None):
    return subprocess.run([sys.executable, "-m", "lmmsae", "run", *args], capture_output=True, text=True,
                          env=_env(), preexec_fn=_limit_file_size(limit) if limit else None, timeout=900)


@contextlib.contextmanager
def small_disk(path: Path, size: int):
    """A tmpfs of `size` bytes at `path` (yields a function growing it), or None without root."""
    path.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        yield None
        return
    try:
        yield lambda: subprocess.run(["mount", "-o", "remount,size=512m", str(path)], check=True)
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr and "Segmentation" not in stderr, stderr[-3000:]
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def _content(path):
    """Every committed row of every dataset of an activations file."""
    with h5py.File(path, "r") as f:
        n, s = int(f.attrs["n_tokens"]), int(f.attrs["n_samples"])
        out = {}
        f.visititems(lambda name, obj: out.__setitem__(name, obj[: s if name.startswith("samples/") else n])
                     if isinstance(obj, h5py.Dataset) and not name.startswith(("commits/", "skipped/")) else None)
        return out, n


def test_collect_on_a_full_disk_fails_in_one_line_and_resume_equals_an_uninterrupted_run(tmp_path):
    whole = _lmmsae("--out", str(tmp_path / "plain"), "--name", "r", *COLLECT)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected_file = tmp_path / "plain/r/collect/activations.h5"
    size = expected_file.stat().st_size
    with small_disk(tmp_path / "disk", (size - (3 << 19)) // 4096 * 4096) as grow:
        out = tmp_path / "disk/runs"
        first = _lmmsae("--out", str(out), "--name", "r", *COLLECT, limit=None if grow else size - (3 << 19))
        assert first.returncode == 1, first.stderr[-3000:]
        errors = _error_lines(first.stderr)
        path = out / "r/collect/activations.h5"
        assert len(errors) == 1 and str(path) in errors[0] and "--resume" in errors[0], first.stderr[-2000:]
        assert ("no space left" if grow else "file too large") in errors[0]
        with h5py.File(path, "r") as f:  # it failed part-way, after at least one commit
            assert 0 < int(f.attrs["next_sample"]) < 32 and not f.attrs["complete"]
        if grow:
            grow()
        again = _lmmsae("--out", str(out), "--name", "r", "--resume", *COLLECT)
        assert again.returncode == 0, again.stderr[-3000:]
        assert not _error_lines(again.stderr)
        got, n = _content(path)
        want, n_want = _content(expected_file)
        assert n == n_want and sorted(got) == sorted(want)
        for name in want:
            assert np.array_equal(got[name], want[name]), name
        ActivationReader(path).close()  # complete and readable


WRITER_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch
    from lmmsae.errors import UserError
    from lmmsae.stores import activations, disk
    from lmmsae.stores.activations import ActivationWriter, TOKEN_COLUMNS

    if sys.argv[2] == "no-reservation":  # make HDF5 itself meet the full disk
        activations.reserve = lambda path, end: None
    def batch(i, n=300, d=256):
        acts = torch.from_numpy(np.random.default_rng(i).standard_normal((n, d), dtype=np.float32))
        tokens = {c: np.full(n, i, dt) for c, dt in TOKEN_COLUMNS.items()}
        tokens["box"] = np.zeros((n, 4), np.float32)
        return {"h": acts}, tokens, [{"index": i, "id": f"s{i}", "token_count": n}]
    try:
        with ActivationWriter(sys.argv[1], {"h": 256}, "float32", {"model": "m"}) as w:
            for i in range(w.next_sample, 40):
                w.append(*batch(i), [], i + 1)
            w.finish()
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
""")


@pytest.mark.parametrize("mode", ["reservation", "no-reservation"])
def test_writer_on_a_full_disk_never_crashes_and_resumes_exactly(tmp_path, mode):
    """Whether the reservation sees the full disk first or HDF5 itself fails mid-write, the process
    ends with one line (no segfault), and the resumed file equals one written without a failure."""
    script = tmp_path / "w.py"
    script.write_text(WRITER_SCRIPT)
    run = lambda p, limit=None: subprocess.run([sys.executable, str(script), str(p), mode], capture_output=True,  # noqa: E731
                                               text=True, env=_env(), timeout=300,
                                               preexec_fn=_limit_file_size(limit) if limit else None)
    assert run(tmp_path / "whole.h5").returncode == 0
    failed = run(tmp_path / "a.h5", limit=6 << 20)
    assert failed.returncode == 1, failed.stderr[-3000:]
    errors = _error_lines(failed.stderr)
    assert len(errors) == 1 and "a.h5" in errors[0] and "--resume" in errors[0]
    resumed = run(tmp_path / "a.h5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, n = _content(tmp_path / "a.h5")
    want, _ = _content(tmp_path / "whole.h5")
    assert n == 40 * 300 and all(np.array_equal(got[k], want[k]) for k in want)


def test_an_unclean_file_is_cut_after_its_last_intact_commit(tmp_path):
    """A crash can damage rows committed earlier (a failed HDF5 write): a file that was not closed
    cleanly is checked against the commits' CRCs and cut where they stop matching."""
    import torch

    from lmmsae.stores.activations import TOKEN_COLUMNS

    p = tmp_path / "a.h5"
    ident = {"model": "m"}
    with ActivationWriter(p, {"h": 4}, "float32", ident) as w:
        for i in range(5):
            tokens = {c: np.full(3, i, dt) for c, dt in TOKEN_COLUMNS.items()}
            tokens["box"] = np.zeros((3, 4), np.float32)
            w.append({"h": torch.full((3, 4), float(i + 1))}, tokens, [{"index": i, "id": i, "token_count": 3}], [], i + 1)
    with h5py.File(p, "a") as f:  # what the crash left: commit 2's rows zeroed, not closed cleanly
        f["h/acts"][6:9] = 0
        f.attrs["clean"] = False
    with ActivationWriter(p, {"h": 4}, "float32", ident) as w:
        assert w.verified == 2 and w.next_sample == 2 and w.n_tokens == 6
        assert w.f["h/acts"].shape == (6, 4) and w.f["commits/crc"].shape == (2,)
    with ActivationWriter(p, {"h": 4}, "float32", ident) as w:  # closed cleanly: no check needed
        assert w.verified is None and w.next_sample == 2
