"""Writing HDF5 stores safely when the disk fills up (or is read-only).

HDF5 is not crash-safe: a write that fails half-way (ENOSPC) can leave its metadata pointing at
space that was never written (committed rows then read back as zeros), and closing such a file
can crash the interpreter. So the stores (1) reserve the space a batch needs before HDF5 touches
the file, so a full disk is noticed by us, with nothing half-done, and (2) if HDF5 fails anyway,
abandon the handle (its file descriptor is pointed at /dev/null, so nothing more reaches the
disk) and report one line. Resume then trusts only what was committed and verified.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path

from lmmsae.errors import UserError

DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EFBIG: "file too large"}
MARGIN = 256 << 10  # bytes reserved beyond a batch's data, for HDF5's own metadata
WINDOW = 64 << 20  # bytes below the end of the file re-checked for holes at each reservation


def disk_errno(exc: BaseException) -> int | None:
    """The errno of a full / read-only disk behind `exc` (an OSError, or an h5py error whose
    message carries HDF5's "errno = N"), else None."""
    code = getattr(exc, "errno", None)
    if code in DISK_ERRNOS:
        return code
    found = re.search(r"errno = (\d+)", str(exc))
    if found and int(found.group(1)) in DISK_ERRNOS:
        return int(found.group(1))
    return None


def disk_error(path: str | Path, code: int) -> UserError:
    """The one line a user sees when `path` could not be written."""
    if code == errno.EROFS:
        return UserError(f"cannot write {path}: read-only file system; run on a writable --out folder "
                         f"(or remount it read-write) and rerun with --resume")
    return UserError(f"cannot write {path}: {DISK_ERRNOS[code]}; free space and rerun the same command "
                     f"with --resume (what was committed is kept)")


def reserve(path: str | Path, end: int) -> None:
    """Make sure the file's first `end` bytes are allocated on disk (posix_fallocate), so that
    HDF5 writes below `end` cannot fail for lack of space. A UserError when the disk is full;
    filesystems without fallocate fall back to comparing free space."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY)
    try:
        start = max(0, min(end, os.fstat(fd).st_size) - WINDOW)
        os.posix_fallocate(fd, start, max(end - start, 1))
    except OSError as exc:
        code = disk_errno(exc)
        if code is not None:
            raise disk_error(path, code) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        stat = os.statvfs(path.parent)
        if stat.f_bavail * stat.f_frsize < end - os.fstat(fd).st_size:
            raise disk_error(path, errno.ENOSPC) from None
    finally:
        os.close(fd)


def abandon(f) -> None:
    """Close an h5py file after a failed write without writing anything more to disk: HDF5's file
    descriptor is redirected to /dev/null first (a plain close would flush its half-updated
    caches, fail again, and can crash the interpreter)."""
    try:
        fd = f.id.get_vfd_handle()
    except Exception:  # noqa: BLE001 - already closed or not a POSIX driver
        fd = None
    if isinstance(fd, int) and fd >= 0:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    try:
        f.close()
    except Exception:  # noqa: BLE001 - nothing of it reaches the disk any more
        pass


def chunk_bytes(ds, n_new: int) -> int:
    """Bytes HDF5 allocates for appending `n_new` rows to chunked dataset `ds` (whole chunks)."""
    if n_new <= 0:
        return 0
    n0 = ds.shape[0]
    rows = ds.chunks[0] if ds.chunks else 1
    per_row = ds.dtype.itemsize
    for extent in ds.shape[1:]:
        per_row *= extent
    chunks = -(-(n0 + n_new) // rows) - (-(-n0 // rows))
    return chunks * rows * per_row


class GuardedWriter:
    """Base of the stores' writers: `self.f` (an h5py file at `self.path`) is written inside
    `_writing()`, which turns a full or read-only disk into one line and abandons the handle after
    any failed write; `_reserve(n)` allocates the next `n` bytes before HDF5 needs them."""

    path: Path
    f = None
    _broken = False

    @contextlib.contextmanager
    def _writing(self):
        if self._broken:
            raise UserError(f"{self.path} is closed after a failed write: rerun with --resume")
        try:
            yield
        except UserError:
            raise
        except Exception as exc:
            self._broken = True
            abandon(self.f)
            code = disk_errno(exc)
            if code is not None:
                raise disk_error(self.path, code) from None
            raise

    def _reserve(self, nbytes: int) -> None:
        reserve(self.path, self.f.id.get_filesize() + nbytes + MARGIN)

    def _before_close(self) -> None:
        """Last writes of a clean close (a writer marks its file clean here)."""

    def close(self) -> None:
        """Close; after a failed write, close without touching the disk. A failed flush on close is
        never retried by HDF5: the file stays as last committed and is verified when reopened."""
        if not self.f:
            return
        if self._broken:
            abandon(self.f)
            return
        try:
            self._before_close()
            self.f.close()
        except Exception:  # noqa: BLE001
            abandon(self.f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
