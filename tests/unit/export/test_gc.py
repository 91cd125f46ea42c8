"""Tests for learnrun.export.gc: TF 8.6 export garbage collection and filters."""

from __future__ import annotations

import os

import pytest

from learnrun import export as E


def _make_exports(base, versions):
    for v in versions:
        os.makedirs(os.path.join(base, str(v)))


def test_garbage_collect_exports(tmp_path):  # 8.6.2
    versions = [1500000000, 1500000001, 1500000002, 1500000003]
    _make_exports(tmp_path, versions + ["temp-1500000004", "best", 123456789, 12345678901])
    E.garbage_collect_exports(str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["1500000002", "1500000003", "temp-1500000004", "best", "123456789", "12345678901"])
    E.garbage_collect_exports(str(tmp_path), None)
    assert len(os.listdir(tmp_path)) == 6
    E.garbage_collect_exports(str(tmp_path), 0)
    assert sorted(os.listdir(tmp_path)) == sorted(["temp-1500000004", "best", "123456789", "12345678901"])
    E.garbage_collect_exports(str(tmp_path / "missing"), 1)  # no error


def test_get_most_recent_export(tmp_path):  # 8.6.3
    assert E.get_most_recent_export(str(tmp_path)) is None
    _make_exports(tmp_path, [1500000000, 1500000002, 1500000001, "temp-1600000000"])
    recent = E.get_most_recent_export(str(tmp_path))
    assert recent.export_version == 1500000002
    assert recent.path == os.path.join(str(tmp_path), str(recent.export_version))


def _paths(*versions):
    return [E.Path("/foo", v) for v in versions]  # as in TF gc_test


def _versions(paths):
    return [p.export_version for p in paths]


def test_gc_filters():  # 8.6.9
    assert _versions(E.largest_export_versions(2)(_paths(8, 9, 10))) == [9, 10]
    assert _versions(E.largest_export_versions(2)(_paths(0, 3))) == [0, 3]
    assert _versions(E.largest_export_versions(2)(_paths(None, 3))) == [3]
    assert _versions(E.mod_export_version(2)(_paths(4, 5, 6, 9))) == [4, 6]
    assert _versions(E.mod_export_version(3)(_paths(4, 5, 6, 9))) == [6, 9]
    assert _versions(E.one_of_every_n_export_versions(3)(_paths(0, 1, 3, 5, 6, 7, 8, 33))) == [3, 6, 8, 33]
    assert _versions(E.one_of_every_n_export_versions(3)(_paths(0, 4, 5))) == [0, 5]
    both = E.union(E.largest_export_versions(3), E.mod_export_version(3))
    assert _versions(both(_paths(*range(10)))) == [0, 3, 6, 7, 8, 9]
    assert _versions(E.negation(E.mod_export_version(2))(_paths(4, 5, 6, 9))) == [5, 9]
    assert _versions(E.negation(E.mod_export_version(3))(_paths(4, 5, 6, 9))) == [4, 5]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_get_paths(tmp_path, as_bytes):
    for name in ("0", "1", "2", "ignore"):
        os.makedirs(tmp_path / name)

    def parser(path):
        name = os.path.basename(path.path)
        return path._replace(export_version=int(name)) if name.isdigit() else None

    base = os.fsencode(str(tmp_path)) if as_bytes else str(tmp_path)
    paths = E.get_paths(base, parser)
    assert paths == [E.Path(os.path.join(str(tmp_path), str(i)), i) for i in range(3)]
