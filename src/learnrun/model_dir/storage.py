"""The model directory's file I/O: one small seam over fsspec.

Everything :mod:`learnrun.model_dir` reads or writes goes through :class:`Storage`, so a model
directory may be a local path or any fsspec URL: ``s3://bucket/run`` (s3fs, the
``learnrun[s3]`` extra), ``gs://bucket/run`` (gcsfs, ``learnrun[gcs]``), ``memory://run`` (in
this process, no extra) or another protocol fsspec knows. Nothing here relies on an atomic
rename: a file is written whole (``open_write`` or ``put``) and a directory is committed by the
marker file its writer puts last.

A string with a scheme (``xyz://...``) is never a local path: an unknown scheme, a missing
backend or a malformed URL raises :class:`~learnrun.errors.StorageError` (bad input) naming the
URL (credentials embedded in it are redacted, see :func:`redact`) and what to do.

Local files: ``put`` replaces a small file through a temporary name and ``os.replace`` (readers
never see half a file), files are fsynced on close, and ``create_exclusive`` uses ``O_EXCL``.
Object stores: ``put`` is one whole-object write (an object store has neither rename nor
append: a file that grows, like ``results.jsonl``, is read, extended in memory and written
whole), directories are prefixes (``makedirs`` creates nothing), listings are not cached
across polls (:meth:`Storage.refresh`), and ``create_exclusive`` (the lease) is a conditional
put (``If-None-Match: *`` on S3) where the file system has one.

Credentials come only from each backend's standard sources (environment, config files,
instance metadata); an S3 endpoint override is botocore's ``AWS_ENDPOINT_URL``. The S3 client
uses short connect/read timeouts and few retries (:data:`DEFAULT_OPTIONS`, changed through
:func:`set_storage_options`), so an unreachable endpoint fails within seconds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import secrets
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from learnrun.errors import CheckpointError, StorageError

__all__ = ["DEFAULT_OPTIONS", "Storage", "describe_error", "is_url", "is_remote", "join",
           "prepare_model_dir", "redact", "set_storage_options", "storage_for", "url_protocol"]

_LOCAL_PROTOCOLS = ("file", "local")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
#: The extra of learnrun that installs each backend, by protocol.
_EXTRAS = {"s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"), "gs": ("gcs", "gcsfs"),
           "gcs": ("gcs", "gcsfs")}
#: Protocols whose first path element is a bucket that must exist (never created here).
_BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")

#: Options passed to each backend's file system, by protocol (see :func:`set_storage_options`).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {
        # botocore: a refused or silent endpoint fails fast; a few retries with backoff
        "config_kwargs": {"connect_timeout": 5, "read_timeout": 30,
                          "retries": {"max_attempts": 3, "mode": "standard"}},
    },
}
DEFAULT_OPTIONS["s3a"] = DEFAULT_OPTIONS["s3"]
_options_lock = threading.Lock()


def set_storage_options(protocol: str, **options: Any) -> None:
    """Change the options the ``protocol`` file system is created with (merged into the defaults).

    For ``s3``: ``config_kwargs`` (botocore ``Config``: ``connect_timeout``, ``read_timeout``,
    ``retries``), ``retries`` (s3fs), ``client_kwargs``... Never credentials: those come from
    the backend's standard sources.
    """
    with _options_lock:
        merged = dict(DEFAULT_OPTIONS.get(protocol, {}))
        merged.update(options)
        DEFAULT_OPTIONS[protocol] = merged


def url_protocol(path: str | os.PathLike) -> str | None:
    """The scheme of ``path`` (``"s3"`` for ``s3://b/x``), or None for a plain local path."""
    m = _URL.match(os.fspath(path)) if isinstance(path, (str, os.PathLike)) else None
    return m.group(1).lower() if m else None


def is_url(path: str | os.PathLike) -> bool:
    """True when ``path`` has a scheme (``xyz://...``): never taken as a local path."""
    return url_protocol(path) is not None


def is_remote(path: str | os.PathLike) -> bool:
    """True when ``path`` is a URL of a file system other than the local one."""
    protocol = url_protocol(path)
    return protocol is not None and protocol not in _LOCAL_PROTOCOLS


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:[^=&]*(?:secret|token|key|sig|signature|credential|password)[^=&]*)=)[^&]*")


def redact(text: Any) -> str:
    """``text`` with credentials embedded in URLs replaced by ``***``.

    ``s3://KEY:SECRET@bucket/x`` -> ``s3://***@bucket/x``; a query parameter whose name looks
    secret (``X-Amz-Signature=...``, ``token=...``) keeps its name and loses its value.
    """
    out = str(text)
    out = re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@", r"\1***@", out)
    return _SECRET_QUERY.sub(r"\1***", out)


def join(base: str, *parts: str) -> str:
    """Join path elements below ``base``: ``/`` for URLs, ``os.path.join`` for local paths."""
    if is_url(base):
        return posixpath.join(base.rstrip("/") + "/" if base.endswith("//") else base, *parts)
    return os.path.join(base, *parts)


def storage_for(path: str | os.PathLike) -> Storage:
    """The :class:`Storage` that holds ``path``: a local path, a ``file://`` URL or any fsspec URL.

    :class:`~learnrun.errors.StorageError` (bad input) for a malformed URL, an unknown scheme,
    or a backend that is not installed (naming the extra to install).
    """
    text = os.fspath(path)
    protocol = url_protocol(text)
    if protocol is None or protocol in _LOCAL_PROTOCOLS:
        return _local_storage()
    rest = text.split("://", 1)[1]
    if not rest.strip("/") or (protocol in _BUCKET_PROTOCOLS and
                               (rest.startswith("/") or not rest.split("/", 1)[0])):
        raise StorageError(f"{redact(text)} is not a valid {protocol}:// URL: it names no "
                           f"bucket. Write {protocol}://BUCKET/PATH.", bad_input=True)
    if "@" in rest.split("/", 1)[0]:
        raise StorageError(f"{redact(text)}: credentials in the URL are not used; give them "
                           "through the backend's standard sources (environment variables, "
                           "config files, instance metadata) and write the URL without them.",
                           bad_input=True)
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        extra, package = _EXTRAS.get(protocol, (None, None))
        how = (f"pip install 'learnrun[{extra}]' (it installs {package})" if extra
               else f"install the fsspec backend of {protocol}:// ({e})")
        raise StorageError(f"{redact(text)}: the {protocol}:// file system is not installed; "
                           f"{how}.", bad_input=True) from None
    except ValueError:
        raise StorageError(f"{redact(text)}: unknown file-system scheme {protocol!r}. Use a "
                           "local path or an fsspec URL such as s3://BUCKET/PATH, "
                           "gs://BUCKET/PATH or memory://PATH.", bad_input=True) from None
    with _options_lock:
        options = dict(DEFAULT_OPTIONS.get(protocol, {}))
    try:
        fs = cls(**options)  # fsspec caches instances with the same options
    except Exception as e:  # noqa: BLE001 - a backend's constructor failing is bad input
        raise describe_error(e, text) from None
    return Storage(fs)


_LOCAL: list[Storage] = []


def _local_storage() -> Storage:
    if not _LOCAL:
        _LOCAL.append(Storage())
    return _LOCAL[0]


def _error_names(exc: BaseException) -> str:
    names, seen = [], set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        names.append(f"{type(e).__name__} {e}")
        e = e.__cause__ or e.__context__
    return " | ".join(names)


def describe_error(exc: BaseException, url: str, doing: str = "access") -> StorageError:
    """One-line :class:`StorageError` for ``exc`` raised while ``doing`` something to ``url``.

    No credentials, an unknown bucket, or access denied are bad input (``bad_input=True``);
    an unreachable endpoint or another failure is not. The text names the redacted URL and
    what to check, never a secret.
    """
    if isinstance(exc, StorageError):
        return exc
    text = _error_names(exc)
    where = redact(url)
    protocol = url_protocol(url) or "file"
    if "NoCredentials" in text or "Unable to locate credentials" in text or \
            "DefaultCredentialsError" in text:
        hint = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the "
                "machine a role" if protocol.startswith("s3") else
                "configure the backend's standard credentials (environment, config file or "
                "instance metadata)")
        return StorageError(f"cannot {doing} {where}: no credentials found; {hint}.",
                            bad_input=True)
    if "NoSuchBucket" in text or "does not exist" in text and "ucket" in text:
        bucket = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        return StorageError(f"cannot {doing} {where}: the bucket {bucket!r} does not exist; "
                            "check the bucket name (learnrun never creates buckets).",
                            bad_input=True)
    if "AccessDenied" in text or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text \
            or isinstance(exc, PermissionError) or "Forbidden" in text:
        return StorageError(f"cannot {doing} {where}: access denied; check the credentials and "
                            "their permissions on this bucket.", bad_input=True)
    if any(s in text for s in ("EndpointConnectionError", "ConnectTimeout", "ConnectionError",
                               "ClientConnectorError", "Connection refused",
                               "Could not connect", "ConnectError", "timed out")):
        return StorageError(f"cannot {doing} {where}: the storage endpoint is unreachable; "
                            "check the network and AWS_ENDPOINT_URL (or the backend's endpoint "
                            "setting).", bad_input=False)
    first = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    return StorageError(f"cannot {doing} {where}: {type(exc).__name__}: {first}",
                        bad_input=False)


def check_access(url: str) -> None:
    """Fail fast with one line when ``url``'s file system cannot be used (remote URLs only).

    One listing request: it proves the endpoint answers, the credentials work and the bucket
    exists (a missing prefix below it is fine: it is created by the first write).
    """
    if not is_remote(url):
        return
    st = storage_for(url)
    protocol = url_protocol(url)
    try:
        if protocol in _BUCKET_PROTOCOLS:
            bucket = url.split("://", 1)[1].split("/", 1)[0]
            st.fs.ls(f"{protocol}://{bucket}", detail=False)
        else:
            st.fs.exists(url)
    except FileNotFoundError as e:
        raise StorageError(f"cannot access {redact(url)}: the bucket does not exist; check the "
                           "bucket name (learnrun never creates buckets).",
                           bad_input=True) from e
    except Exception as e:  # noqa: BLE001 - every backend failure becomes one line
        raise describe_error(e, url) from None


class Storage:
    """File operations on one fsspec file system; paths are plain strings of that system.

    Every operation takes the full path (a local path, or a URL of this file system), so the
    paths a caller gets back (checkpoint directories, files) are the ones it gave.
    """

    def __init__(self, fs: Any = None) -> None:
        if fs is None:
            import fsspec

            fs = fsspec.filesystem("file")
        self.fs = fs
        self.local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))

    # -- paths ---------------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return join(*parts)

    def normpath(self, path: str) -> str:
        """``path`` without ``.``/``..``/trailing separators (a URL keeps its ``scheme://``)."""
        if is_url(path):
            scheme, rest = path.split("://", 1)
            return f"{scheme}://{posixpath.normpath(rest) if rest else rest}".rstrip("/") \
                if rest.strip("/") else path
        return os.path.normpath(path)

    def basename(self, path: str) -> str:
        if is_url(path):
            return posixpath.basename(path.split("://", 1)[1].rstrip("/"))
        return os.path.basename(os.path.normpath(path))

    def dirname(self, path: str) -> str:
        if is_url(path):
            scheme, rest = path.split("://", 1)
            return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
        return os.path.dirname(os.path.normpath(path))

    def refresh(self, path: str | None = None) -> None:
        """Forget cached listings (object stores), so the next read sees new files.

        The whole cache goes (it is local and cheap to rebuild): a path's own invalidation
        would keep the listings of the directories below it.
        """
        del path
        if not self.local:
            self.fs.invalidate_cache()

    def _plain(self, path: str) -> bool:
        """True when ``path`` is a plain local path (a ``str`` without a scheme or ``:``): the
        local file system's hot operations then call ``os`` directly instead of going through
        fsspec (a checkpoint save makes some dozen of them: 4.6 -> 3.6 ms of CPU for a small
        model). Anything else (``file://`` URLs, object stores) takes fsspec's path."""
        return self.local and isinstance(path, str) and ":" not in path

    # -- reading -------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        if self._plain(path):
            return os.path.exists(path)
        return bool(self.fs.exists(path))

    def isdir(self, path: str) -> bool:
        if self._plain(path):
            return os.path.isdir(path)
        return bool(self.fs.isdir(path))

    def isfile(self, path: str) -> bool:
        if self._plain(path):
            return os.path.isfile(path)
        return bool(self.fs.isfile(path))

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of directory ``path``; ``[]`` when it is missing."""
        if self._plain(path):
            try:
                return sorted(os.listdir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            return sorted({self.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False)}
                          - {""})
        except (FileNotFoundError, NotADirectoryError):
            return []

    def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern`` (``*`` wildcards), in the caller's form, sorted."""
        found = self.fs.glob(pattern)
        if self.local or not is_url(pattern):
            relative = not os.path.isabs(pattern) and not is_url(pattern)
            return sorted(os.path.relpath(p) if relative else p for p in found)
        scheme = pattern.split("://", 1)[0]
        return sorted(f"{scheme}://{p.lstrip('/')}" for p in found)

    def file_sizes(self, root: str) -> dict[str, int] | None:
        """Every file below ``root`` as ``relative/path -> size`` in one listing (object stores).

        An object store answers with one paginated request (1000 objects a page), so a poller
        learns what exists and how big it is without a request per file. None for local files
        (their per-file checks are cheap).
        """
        if self.local:
            return None
        self.refresh(root)
        base = self.fs._strip_protocol(root).rstrip("/")  # noqa: SLF001 - fsspec's public-in-practice helper
        try:
            found = self.fs.find(root, detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for p, info in found.items():
            p = p.rstrip("/")
            if p.startswith(base + "/") and info.get("type", "file") == "file":
                out[p[len(base) + 1:]] = int(info.get("size") or 0)
        return out

    def du(self, path: str) -> int:
        """Total size in bytes of the files below directory ``path`` (0 when missing)."""
        try:
            return int(self.fs.du(path, total=True))
        except (FileNotFoundError, OSError):
            return 0

    def size(self, path: str) -> int | None:
        """Size in bytes of file ``path``, or None when it does not exist."""
        try:
            if self._plain(path):
                return os.stat(path).st_size
            return int(self.fs.info(path)["size"])
        except FileNotFoundError:
            return None

    def read_bytes(self, path: str) -> bytes:
        """The whole content of file ``path`` (FileNotFoundError when missing)."""
        if self._plain(path):
            with open(path, "rb") as f:
                return f.read()
        return self.fs.cat_file(path)

    def get(self, path: str, local_path: str) -> None:
        """Copy file ``path`` to the local file ``local_path``."""
        self.fs.get_file(path, local_path)

    # -- writing -------------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        """Create directory ``path`` (local files; object stores have no directories)."""
        if self._plain(path):
            os.makedirs(path, exist_ok=True)
        elif self.local or not any(p in _BUCKET_PROTOCOLS for p in _protocols(self.fs)):
            self.fs.makedirs(path, exist_ok=True)

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        """Write file ``path`` (created or truncated); durable (fsynced) when the block ends."""
        with (open(path, "wb") if self._plain(path) else self.fs.open(path, "wb")) as f:
            yield f
            if self.local:
                f.flush()
                os.fsync(f.fileno())

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write ``data`` to file ``path`` in place (durable when this returns)."""
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        with self.open_write(path) as f:
            f.write(data)

    def append(self, path: str, data: bytes) -> None:
        """Add ``data`` at the end of file ``path`` (created when missing); durable on return.

        Local files are appended to and fsynced. An object store cannot append: the object is
        read, extended in memory and written whole, so a reader sees the old or the new object
        and no earlier line is lost (one writer per file).
        """
        if self.local:
            with self.fs.open(path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return
        try:
            old = self.read_bytes(path)
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old += b"\n"  # a torn last line stays torn but never swallows the new one
        self.fs.pipe_file(path, old + data)

    def put_file(self, local_path: str, path: str) -> None:
        """Copy the local file ``local_path`` to ``path`` whole."""
        if self.local:
            with open(local_path, "rb") as f:
                self.put(path, f.read())
            return
        self.fs.put_file(local_path, path)

    def put(self, path: str, data: bytes) -> None:
        """Replace file ``path`` with ``data`` whole: readers see the old or the new content.

        Local files go through a ``tmp-<name>-<hex>`` neighbour and ``os.replace``; the
        neighbour is removed when the write fails. An object is always replaced whole.
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
        if not self.local:  # a conditional put where the store has one; the caller reads back
            self.refresh(self.dirname(path))
            if self.exists(path):
                return False
            try:
                self.fs.pipe_file(path, data, mode="create")  # S3: If-None-Match: *
            except FileExistsError:
                return False
            except TypeError:  # a file system without exclusive creation: check-then-write
                self.fs.pipe_file(path, data)
            except OSError as e:
                if "PreconditionFailed" in f"{type(e).__name__} {e} {e.__cause__!r}":
                    return False
                raise
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
            if self._plain(path):
                os.remove(path)
            else:
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


def _protocols(fs: Any) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def prepare_model_dir(model_dir: str) -> None:
    """Create ``model_dir`` if needed; one-line error when it is a file, not writable or unreachable.

    A remote URL is checked with one request (:func:`check_access`); its prefix needs no creating.
    """
    st = storage_for(model_dir)
    if not st.local:
        check_access(model_dir)
        st.makedirs(model_dir)
        return
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
