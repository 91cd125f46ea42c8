"""The storage seam's URL handling: schemes are never local paths, secrets never shown."""

from __future__ import annotations

import os

import pytest

import learnrun
from learnrun.errors import CheckpointError, StorageError
from learnrun.model_dir import eval_results
from learnrun.model_dir.storage import (
    DEFAULT_OPTIONS,
    is_remote,
    is_url,
    join,
    redact,
    set_storage_options,
    storage_for,
    url_protocol,
)


def test_url_recognition():
    assert url_protocol("s3://b/x") == "s3" and url_protocol("/tmp/x") is None
    assert is_url("memory://x") and is_url("file:///tmp/x") and not is_url("relative/dir")
    assert is_remote("gs://b/x") and not is_remote("file:///tmp/x") and not is_remote("x")
    assert join("s3://b/run", "ckpt-1", "meta.json") == "s3://b/run/ckpt-1/meta.json"
    assert join("/tmp/run", "ckpt-1") == os.path.join("/tmp/run", "ckpt-1")
    st = storage_for("memory://x")
    assert st.normpath("s3://b/run/") == "s3://b/run"
    assert st.basename("s3://b/run/ckpt-5/") == "ckpt-5"
    assert st.dirname("s3://b/run/ckpt-5") == "s3://b/run"


def test_redact_removes_embedded_credentials():
    assert redact("s3://AKIA:SECRET@bucket/x") == "s3://***@bucket/x"
    text = redact("see https://h/x?X-Amz-Signature=abc&part=1 and gs://tok@b/y")
    assert "abc" not in text and "tok" not in text and "part=1" in text


@pytest.mark.parametrize("url, message", [
    ("s3:///x", "names no bucket"),
    ("s3://", "names no bucket"),
    ("xyz://a/b", "unknown file-system scheme 'xyz'"),
    ("s3://KEY:SECRET@bucket/x", "credentials in the URL are not used"),
])
def test_bad_urls_are_bad_input(url, message):
    with pytest.raises(StorageError, match=message) as info:
        storage_for(url)
    assert info.value.bad_input and isinstance(info.value, CheckpointError)
    assert "SECRET" not in str(info.value)


def test_a_url_is_never_a_local_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = learnrun.RunConfig(model_dir="memory://lr-unit/run")
    assert config.model_dir == "memory://lr-unit/run" and config.async_checkpoint is None
    d = eval_results.eval_dir("memory://lr-unit/run", "x")
    assert d == "memory://lr-unit/run/eval_x"
    eval_results.append_eval_result(d, {"global_step": 1})
    eval_results.append_eval_result(d, {"global_step": 2})
    assert [r["global_step"] for r in eval_results.read_eval_results(d)] == [1, 2]
    assert eval_results.eval_dirs("memory://lr-unit/run") == [d]
    with pytest.raises(StorageError, match="unknown file-system scheme"):
        learnrun.Estimator(lambda: None, model_dir="nosuch://bucket/run")
    assert os.listdir(tmp_path) == []


def test_storage_options_merge():
    before = dict(DEFAULT_OPTIONS["s3"])
    try:
        set_storage_options("s3", config_kwargs={"connect_timeout": 1})
        assert DEFAULT_OPTIONS["s3"]["config_kwargs"] == {"connect_timeout": 1}
    finally:
        DEFAULT_OPTIONS["s3"] = before


@pytest.mark.parametrize("form", ["plain", "file_url"])
def test_local_operations_agree_for_plain_paths_and_file_urls(tmp_path, form):
    # Plain local paths go to os directly, file:// URLs through fsspec: the same answers.
    root = str(tmp_path) if form == "plain" else f"file://{tmp_path}"
    st = storage_for(root)
    d = st.join(root, "run")
    assert not st.exists(d) and st.listdir(d) == [] and st.size(st.join(d, "x")) is None
    st.makedirs(st.join(d, "ckpt-1"))
    with st.open_write(st.join(d, "b.txt")) as f:
        f.write(b"bytes")
    st.write_bytes(st.join(d, "a.txt"), b"abc")
    assert st.exists(d) and st.isdir(d) and not st.isfile(d)
    assert st.isfile(st.join(d, "a.txt")) and not st.isdir(st.join(d, "a.txt"))
    assert st.listdir(d) == ["a.txt", "b.txt", "ckpt-1"]
    assert st.read_bytes(st.join(d, "b.txt")) == b"bytes" and st.size(st.join(d, "a.txt")) == 3
    with pytest.raises(FileNotFoundError):
        st.read_bytes(st.join(d, "missing"))
    st.remove(st.join(d, "a.txt"))
    st.remove(st.join(d, "a.txt"))  # missing: not an error
    assert st.listdir(d) == ["b.txt", "ckpt-1"]
    assert sorted(os.listdir(tmp_path / "run")) == ["b.txt", "ckpt-1"]  # the same files on disk
