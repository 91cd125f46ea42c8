"""Export versions on disk: list the 10-digit version directories, keep some, delete the rest.

The filters (``largest_export_versions``, ``one_of_every_n_export_versions``,
``mod_export_version``, ``union``, ``negation``) take and return sorted lists of
:class:`Path` and follow TF's ``gc`` module; :func:`garbage_collect_exports` keeps the newest
``exports_to_keep`` exports of a base directory.
"""

from __future__ import annotations

import collections
import heapq
import logging
import math
import os
import re
from collections.abc import Callable

from learnrun.model_dir.storage import join, storage_for

logger = logging.getLogger(__name__)

__all__ = [
    "Path",
    "largest_export_versions",
    "one_of_every_n_export_versions",
    "mod_export_version",
    "union",
    "negation",
    "get_paths",
    "get_most_recent_export",
    "garbage_collect_exports",
    "export_version_of",
]

_VERSION_RE = re.compile(r"^[0-9]{10}$")

Path = collections.namedtuple("Path", "path export_version")


def largest_export_versions(n: int) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping the ``n`` largest export versions (None versions ignored), sorted."""

    def keep(paths):
        heap = [(p.export_version, i) for i, p in enumerate(paths) if p.export_version is not None]
        return sorted(paths[i] for _, i in heapq.nlargest(n, heap))

    return keep


def one_of_every_n_export_versions(n: int) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping the largest version of each interval [0, n], (n, 2n], (2n, 3n], ..."""

    def keep(paths):
        keepers: dict[int, Path] = {}
        for p in paths:
            if p.export_version is None:
                continue
            interval = math.floor((p.export_version - 1) / n) if p.export_version else 0
            if interval not in keepers or keepers[interval].export_version < p.export_version:
                keepers[interval] = p
        return sorted(keepers.values())

    return keep


def mod_export_version(n: int) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping the versions divisible by ``n``."""

    def keep(paths):
        return sorted(p for p in paths if p.export_version is not None and p.export_version % n == 0)

    return keep


def union(lf: Callable, rf: Callable) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping what either ``lf`` or ``rf`` keeps."""

    def keep(paths):
        return sorted(set(lf(paths)) | set(rf(paths)))

    return keep


def negation(f: Callable) -> Callable[[list[Path]], list[Path]]:
    """Filter keeping what ``f`` does not keep."""

    def keep(paths):
        return sorted(set(paths) - set(f(paths)))

    return keep


def get_paths(base_dir: str | bytes, parser: Callable[[Path], Path | None]) -> list[Path]:
    """List ``base_dir``, give each child as ``Path(path, None)`` to ``parser``, drop Nones, sort."""
    base = os.fsdecode(base_dir)
    st = storage_for(base)
    st.refresh(base)
    paths = (parser(Path(join(base, name), None)) for name in st.listdir(base))
    return sorted(p for p in paths if p is not None)


def export_version_of(path: Path) -> Path | None:
    name = storage_for(path.path).basename(path.path)
    return path._replace(export_version=int(name)) if _VERSION_RE.match(name) else None


def get_most_recent_export(export_dir_base: str) -> Path | None:
    """Return ``Path(path, export_version)`` of the newest 10-digit export, or None."""
    base = os.fsdecode(export_dir_base)
    if not storage_for(base).isdir(base):
        return None
    found = largest_export_versions(1)(get_paths(export_dir_base, export_version_of))
    return found[0] if found else None


def garbage_collect_exports(export_dir_base: str, exports_to_keep: int | None) -> None:
    """Delete all but the ``exports_to_keep`` newest exports in ``export_dir_base``.

    Only children named by exactly 10 digits are considered; None keeps everything, 0 deletes
    every export.
    """
    base = os.fsdecode(export_dir_base)
    if exports_to_keep is None or not storage_for(base).isdir(base):
        return
    delete = negation(largest_export_versions(exports_to_keep))
    for p in delete(get_paths(export_dir_base, export_version_of)):
        try:
            storage_for(p.path).rmtree(p.path)
        except FileNotFoundError as e:
            logger.warning("Can not delete %s recursively: %s", p.path, e)


