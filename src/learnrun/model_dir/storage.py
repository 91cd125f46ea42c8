"""The model directory's file I/O: one small seam over fsspec.

Everything :mod:`learnrun.model_dir` reads or writes goes through :class:`Storage`, so that a
model directory on an object store only needs another ``Storage`` (another fsspec file
system). Nothing here relies on an atomic rename: a file is written whole (``open_write`` or
``put``) and a directory is committed by the marker file its writer puts last.

Local files are the only backend today (``fsspec.filesystem("file")``). On it, ``put``
replaces a small file through a temporary name and ``os.replace`` (an optimisation: readers
never see half a file), files are fsynced on close, and ``create_exclusive`` uses
``O_EXCL``. A URL with another protocol (``s3://``, ``memory://``) raises
:class:`~learnrun.errors.CheckpointError` until a backend for it is added.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import Any, BinaryIO

from learnrun.errors import CheckpointError

__all__ = ["Storage", "prepare_model_dir", "storage_for"]

_LOCAL_PROTOCOLS = ("file", "local")


def storage_for(path: str | os.PathLike) -> Storage:
    """The :class:`Storage` that holds ``path`` (a local path or a ``file://`` URL)."""
    text = os.fspath(path)
    protocol, sep, rest = text.partition("://")
    if sep and protocol not in _LOCAL_PROTOCOLS:
        raise CheckpointError(
            f"model_dir {text!r} uses the {protocol}:// file system, which learnrun does not "
            "support yet; use a local directory."
        )
    return Storage()


class Storage:
    """File operations on one fsspec file system; paths are plain strings of that system.

    Every operation takes the full path (``os.path.join`` style for local files), so the paths
    a caller gets back (checkpoint directories, files) are the ones it gave.
    """

    def __init__(self, fs: Any = None) -> None:
        if fs is None:
            import fsspec

            fs = fsspec.filesystem("file")
        self.fs = fs
        self.local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))

    # -- paths ---------------------------------------------------------------------------------
    @staticmethod
    def join(*parts: str) -> str:
        return os.path.join(*parts)

    @staticmethod
    def basename(path: str) -> str:
        return os.path.basename(os.path.normpath(path))

    @staticmethod
    def dirname(path: str) -> str:
        return os.path.dirname(os.path.normpath(path))

    # -- reading -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def isdir(self, path: str) -> bool:
        return bool(self.fs.isdir(path))

    def isfile(self, path: str) -> bool:
        return bool(self.fs.isfile(path))

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of directory ``path``; ``[]`` when it is missing."""
        try:
            return sorted(self.basename(p) for p in self.fs.ls(path, detail=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def size(self, path: str) -> int | None:
        """Size in bytes of file ``path``, or None when it does not exist."""
        try:
            return int(self.fs.info(path)["size"])
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str) -> bytes:
        """The whole content of file ``path`` (FileNotFoundError when missing)."""
        return self.fs.cat_file(path)

    # -- writing -------------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        """Write file ``path`` (created or truncated); durable (fsynced) when the block ends."""
        with self.fs.open(path, "wb") as f:
            yield f
            if self.local:
                f.flush()
                os.fsync(f.fileno())

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to file ``path`` in place (durable when this returns)."""
        with self.open_write(path) as f:
            f.write(data)

    def put(self, path: str, data: bytes) -> None:
        """Replace file ``path`` with ``data`` whole: readers see the old or the new content.

        Local files go through a ``tmp-<name>-<hex>`` neighbour and ``os.replace``; the
        neighbour is removed when the write fails.
        """
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        parent = self.dirname(path)
        tmp = self.join(parent, f"tmp-{self.basename(path)}-{secrets.token_hex(4)}")
        try:
            self.write_bytes(tmp, data)
            os.replace(tmp, path)
        except BaseException:
            self.remove(tmp)
            raise
        self.sync_dir(parent)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create file ``path`` holding ``data`` unless it exists; True when this call created it."""
        if not self.local:  # best effort: write, then the caller reads it back to confirm
            if self.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.remove(path)
            raise
        return True

    def remove(self, path: str) -> None:
        """Delete file ``path``; a missing file is not an error."""
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def rmtree(self, path: str) -> None:
        """Delete directory ``path`` and everything in it; a missing one is not an error."""
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def move(self, src: str, dst: str) -> None:
        """Move ``src`` (a file or directory) to ``dst``; not atomic on object stores."""
        self.fs.mv(src, dst, recursive=True)

    def sync_dir(self, path: str) -> None:
        """Make the directory entries of ``path`` durable (local files; a no-op elsewhere)."""
        if not self.local:
            return
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:  # platforms that cannot open directories
            return
        try:
            os.fsync(fd)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):
                raise
        finally:
            os.close(fd)


def prepare_model_dir(model_dir: str) -> None:
    """Create ``model_dir`` if needed; one-line CheckpointError when it is a file or not writable."""
    st = storage_for(model_dir)
    if st.exists(model_dir) and not st.isdir(model_dir):
        raise CheckpointError(f"model_dir {model_dir!r} is an existing file, not a directory. "
                              "Pass a directory (it is created if missing).")
    try:
        st.makedirs(model_dir)
    except FileExistsError as e:
        raise CheckpointError(f"model_dir {model_dir!r} cannot be created: {e.filename or model_dir} "
                              "is a file. Pass another directory.") from e
    except OSError as e:
        raise CheckpointError(f"model_dir {model_dir!r} cannot be created: {e.strerror or e}. "
                              "Fix its permissions or choose another directory.") from e
