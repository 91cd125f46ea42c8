"""learnrun.model_dir.checkpoints: commit marker, checksums, index healing, move-aside, faults, async."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from learnrun.clock import FakeClock
from learnrun.errors import CheckpointError
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir.storage import Storage


def _weights(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(64, 32, generator=g), "b": torch.randn(64, generator=g),
            "h": torch.randn(8, generator=g).to(torch.bfloat16), "n": torch.arange(5),
            "flag": torch.tensor(True), "empty": torch.zeros(0, 3)}


def _manager(path, **kw) -> ckpt.CheckpointManager:
    kw.setdefault("clock", FakeClock())
    return ckpt.CheckpointManager(str(path), **kw)


def _flip(path: str) -> None:
    data = bytearray(open(path, "rb").read())  # noqa: SIM115
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(bytes(data))


def test_meta_json_records_every_file_and_is_written_last(tmp_path, monkeypatch):
    seen_meta_while_writing = []
    original = ckpt.CheckpointManager._write_parts

    def spy(self, path, parts):
        seen_meta_while_writing.append(os.path.exists(os.path.join(os.path.dirname(path), "meta.json")))
        return original(self, path, parts)

    monkeypatch.setattr(ckpt.CheckpointManager, "_write_parts", spy)
    path = _manager(tmp_path).save(7, _weights(), {"x": 1}, meta={"config_uid": "uid-1"})
    assert seen_meta_while_writing == [False, False]
    meta = json.loads(open(os.path.join(path, "meta.json")).read())  # noqa: SIM115
    assert meta["step"] == 7 and meta["config_uid"] == "uid-1" and meta["checksum"] == "xxh3_64"
    assert meta["time"] == 1_500_000_000.0 and meta["torch_version"] == torch.__version__
    for name in ("model.safetensors", "state.pt"):
        data = open(os.path.join(path, name), "rb").read()  # noqa: SIM115
        assert meta["files"][name] == {"size": len(data), "xxh3_64": ckpt.checksum(data)}
    # the streamed safetensors file is a standard one
    loaded = load_file(os.path.join(path, "model.safetensors"))
    for k, v in _weights().items():
        assert torch.equal(loaded[k], v), k


def test_checksum_detects_a_flipped_byte_of_the_same_size(tmp_path):
    manager = _manager(tmp_path)
    first = manager.save(1, _weights(1), {})
    second = manager.save(2, _weights(2), {})
    _flip(os.path.join(second, "model.safetensors"))
    assert ckpt.latest_checkpoint(str(tmp_path)) == second  # sizes match: looks whole
    with pytest.raises(ckpt.DamagedCheckpointError, match="does not match its checksum"):
        ckpt.load_checkpoint(second)
    assert "checksum" in ckpt.check_checkpoint(second)
    assert ckpt.check_checkpoint(first) is None
    assert [problem is None for _, problem in ckpt.verify_checkpoints(str(tmp_path))] == [True, False]


def test_restore_falls_back_and_moves_the_damaged_one_aside(tmp_path, caplog):
    clock = FakeClock()
    manager = _manager(tmp_path, clock=clock)
    manager.save(1, _weights(1), {"x": 1})
    bad = manager.save(2, _weights(2), {"x": 2})
    _flip(os.path.join(bad, "state.pt"))
    with caplog.at_level(logging.WARNING):
        path, loaded = ckpt.restore_checkpoint(str(tmp_path), move_damaged=True, clock=clock)
    assert path.endswith("ckpt-1") and loaded.state == {"x": 1}
    assert "ckpt-2 is damaged" in caplog.text and "using" in caplog.text and "ckpt-1" in caplog.text
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1", "ckpt-2.damaged-20170714T024000Z"]
    moved = tmp_path / "ckpt-2.damaged-20170714T024000Z"
    assert sorted(os.listdir(moved)) == ["meta.json", "model.safetensors", "state.pt"]  # kept whole
    # a reader (not the writer) reports but moves nothing
    bad = manager.save(3, _weights(3), {"x": 3})
    os.truncate(os.path.join(bad, "model.safetensors"), 10)
    assert ckpt.restore_checkpoint(str(tmp_path))[0].endswith("ckpt-1")
    assert os.path.isdir(bad)


def test_only_damaged_checkpoints_raise_one_line_and_change_nothing(tmp_path):
    manager = _manager(tmp_path)
    for step in (1, 2):
        os.remove(os.path.join(manager.save(step, _weights(), {}), "state.pt"))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ckpt.DamagedCheckpointError) as info:
        ckpt.restore_checkpoint(str(tmp_path), move_damaged=True)
    text = str(info.value)
    assert "\n" not in text and "Every checkpoint in" in text and "ckpt-2" in text and "ckpt-1" in text
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.parametrize("index", ["missing", "garbage", "not a list"])
def test_the_index_is_a_cache_rebuilt_from_committed_checkpoints(tmp_path, caplog, index):
    manager = _manager(tmp_path, keep_checkpoint_max=2)
    for step in (1, 2, 3):
        manager.save(step, _weights(step), {})
    target = tmp_path / "checkpoint"
    if index == "missing":
        target.unlink()
    else:
        target.write_text("{oops" if index == "garbage" else json.dumps({"all": "ckpt-3"}))
    with caplog.at_level(logging.WARNING):
        assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [2, 3]
        assert ckpt.latest_checkpoint(str(tmp_path)).endswith("ckpt-3")
        _manager(tmp_path, keep_checkpoint_max=2)  # the writer rewrites it at once
    assert "rebuilding it from the committed ckpt-*" in caplog.text
    assert json.loads(target.read_text())["all"] == ["ckpt-2", "ckpt-3"]


def test_uncommitted_directory_is_not_a_checkpoint_and_is_removed_by_the_next_save(tmp_path):
    manager = _manager(tmp_path)
    manager.save(1, _weights(), {})
    partial = tmp_path / "ckpt-5"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    (tmp_path / "ckpt-4").mkdir()  # empty
    (tmp_path / "ckpt-3.damaged-x").mkdir()  # moved aside earlier: kept
    assert ckpt.latest_checkpoint(str(tmp_path)).endswith("ckpt-1")
    manager.save(2, _weights(), {})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1", "ckpt-2", "ckpt-3.damaged-x"]


def _write_old_format(path: str, step: int, weights: dict, state: dict, sizes: bool = True) -> None:
    """A checkpoint as learnrun wrote it before checksums: meta.json with sizes only."""
    os.makedirs(path)
    save_file(weights, os.path.join(path, "model.safetensors"), metadata={"step": str(step)})
    torch.save(state, os.path.join(path, "state.pt"))
    meta = {"step": step, "time": 1.0, "format_version": 1}
    if sizes:
        meta["files"] = {n: os.path.getsize(os.path.join(path, n))
                         for n in ("model.safetensors", "state.pt")}
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("sizes", [True, False])
def test_checkpoints_written_before_checksums_still_load(tmp_path, sizes):
    weights = {"w": torch.ones(3)}
    _write_old_format(str(tmp_path / "ckpt-10"), 10, weights, {"global_step": 10}, sizes)
    (tmp_path / "checkpoint").write_text(json.dumps(
        {"latest": "ckpt-10", "all": ["ckpt-10"], "timestamps": [1.0], "format_version": 1}))
    path, loaded = ckpt.restore_checkpoint(str(tmp_path), move_damaged=True)
    assert path.endswith("ckpt-10") and torch.equal(loaded.weights["w"], weights["w"])
    assert ckpt.check_checkpoint(path) is None
    if sizes:
        os.truncate(os.path.join(path, "state.pt"), 5)
        assert "bytes" in ckpt.check_checkpoint(path)
    # the next save writes the new format next to it
    _manager(tmp_path).save(11, weights, {})
    assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == ([11] if sizes else [10, 11])


def test_async_save_copies_the_state_and_commits_in_the_background(tmp_path):
    manager = _manager(tmp_path)
    weights = {"w": torch.zeros(1000)}
    release = threading.Event()
    original = manager._write_parts

    def slow(path, parts):
        release.wait(10)
        return original(path, parts)

    manager._write_parts = slow
    pending = manager.save_async(1, weights, {"step": torch.tensor(1)})
    weights["w"].add_(5)  # training goes on: the saved copy must not change
    assert not pending.done() and not os.path.exists(os.path.join(pending.path, "meta.json"))
    release.set()
    assert manager.wait(timeout=30) == pending.path and pending.done()
    assert torch.equal(ckpt.load_checkpoint(pending.path).weights["w"], torch.zeros(1000))
    manager.save_async(2, weights, {})  # buffers reused for the next copy
    assert manager.wait(timeout=30).endswith("ckpt-2")
    assert torch.equal(ckpt.load_checkpoint(str(tmp_path / "ckpt-2")).weights["w"],
                       torch.full((1000,), 5.0))


def test_async_save_error_is_raised_at_the_next_wait_and_leaves_nothing(tmp_path, monkeypatch):
    manager = _manager(tmp_path)
    manager.save(1, _weights(), {})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "ckpt-2" / "state.pt"))

    monkeypatch.setattr(Storage, "open_write", full)
    manager.save_async(2, _weights(), {})
    with pytest.raises(CheckpointError, match=r"ckpt-2: No space left on device .*ckpt-1 is intact"):
        manager.wait(timeout=30)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1"]


def test_permission_denied_and_model_dir_that_is_a_file_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is an existing file, not a directory") as info:
        ckpt.CheckpointManager(str(tmp_path / "file"))
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="cannot be created"):
        ckpt.CheckpointManager(str(tmp_path / "file" / "sub"))
    manager = _manager(tmp_path / "m")
    if os.geteuid() != 0:  # root ignores permission bits
        os.chmod(tmp_path / "m", 0o500)
        try:
            with pytest.raises(CheckpointError, match="Permission denied"):
                manager.save(1, _weights(), {})
        finally:
            os.chmod(tmp_path / "m", 0o700)
    denied = PermissionError(13, "Permission denied", str(tmp_path / "m" / "ckpt-1" / "model.safetensors"))
    monkeypatch.setattr(Storage, "open_write", lambda self, path: (_ for _ in ()).throw(denied))
    with pytest.raises(CheckpointError) as info:
        manager.save(1, _weights(), {})
    text = str(info.value)
    assert "\n" not in text and "Permission denied" in text and "model.safetensors" in text
    assert os.listdir(tmp_path / "m") == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_disk_full_is_one_line_keeps_the_previous_checkpoint_and_leaves_no_temporaries(tiny_tmpfs):
    model_dir = tiny_tmpfs / "model"
    manager = _manager(model_dir, keep_checkpoint_max=1)
    first = manager.save(1, {"w": torch.zeros(100_000)}, {"x": 1})  # 400 kB of 2 MB
    with pytest.raises(CheckpointError) as info:
        manager.save(2, {"w": torch.ones(1_000_000)}, {"x": 2})  # 4 MB
    text = str(info.value)
    assert "\n" not in text and "No space left on device" in text
    assert str(model_dir / "ckpt-2") in text and f"the previous checkpoint {first} is intact" in text
    assert sorted(os.listdir(model_dir)) == ["checkpoint", "ckpt-1"]
    assert ckpt.restore_checkpoint(str(model_dir))[1].state == {"x": 1}
    # async: the same, raised at the wait
    manager.save_async(3, {"w": torch.ones(1_000_000)}, {"x": 3})
    with pytest.raises(CheckpointError, match="No space left on device"):
        manager.wait(timeout=60)
    assert sorted(os.listdir(model_dir)) == ["checkpoint", "ckpt-1"]
