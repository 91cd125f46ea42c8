"""Tests for learnrun.model_dir.checkpoints: layout, atomicity, retention, corruption, RNG."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from learnrun.clock import FakeClock
from learnrun.errors import CheckpointError
from learnrun.model_dir import checkpoints as ckpt


def _weights(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g), "b": torch.randn(4, generator=g)}


def _manager(tmp_path, **kw) -> ckpt.CheckpointManager:
    kw.setdefault("clock", FakeClock())
    return ckpt.CheckpointManager(str(tmp_path), **kw)


def test_round_trip_layout_and_weights_only(tmp_path):
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": ckpt.capture_rng_state(),
             "data": {"pos": np.int64(7), "arr": np.arange(3)}, "hooks": [("a", 1.5)]}
    path = _manager(tmp_path).save(7, lin.state_dict(), state, meta={"config_uid": "abc"})

    assert path == os.path.join(str(tmp_path), "ckpt-7")
    assert sorted(os.listdir(path)) == ["meta.json", "model.safetensors", "state.pt"]
    index = json.loads((tmp_path / "checkpoint").read_text())
    assert index["latest"] == "ckpt-7" and index["all"] == ["ckpt-7"]
    assert index["timestamps"] == [1_500_000_000.0]
    torch.load(os.path.join(path, "state.pt"), weights_only=True)  # must not raise

    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(str(tmp_path)))
    for k, v in lin.state_dict().items():
        assert torch.equal(loaded.weights[k], v)
    assert loaded.meta["step"] == 7 and loaded.meta["config_uid"] == "abc"
    assert loaded.meta["torch_version"] == torch.__version__ and "learnrun_version" in loaded.meta
    assert loaded.state["data"]["pos"] == 7
    assert torch.equal(loaded.state["data"]["arr"], torch.arange(3))
    assert loaded.state["hooks"] == [("a", 1.5)]
    new_opt = torch.optim.Adam(lin.parameters())
    new_opt.load_state_dict(loaded.state["optimizer"])
    assert ckpt.checkpoint_step(path) == 7
    assert ckpt.list_checkpoints(str(tmp_path)) == [ckpt.CheckpointInfo(path, 7, 1_500_000_000.0)]


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    weights = {"a": base, "tied": base, "t": base.t(), "row": base[1]}
    path = _manager(tmp_path).save(1, weights, {})
    loaded = ckpt.load_checkpoint(path).weights
    for k, v in weights.items():
        assert torch.equal(loaded[k], v), k


def test_no_checkpoint_cases(tmp_path):
    assert ckpt.latest_checkpoint(str(tmp_path / "absent")) is None
    assert ckpt.latest_checkpoint(str(tmp_path)) is None
    assert ckpt.list_checkpoints(str(tmp_path)) == []
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(str(tmp_path / "ckpt-1"))
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.resolve_checkpoint(str(tmp_path / "nope"))
    assert ckpt.resolve_checkpoint(str(tmp_path)) is None


def test_resolve_checkpoint(tmp_path):
    path = _manager(tmp_path).save(3, _weights(), {})
    assert ckpt.resolve_checkpoint(str(tmp_path)) == path
    assert ckpt.resolve_checkpoint(path) == path
    assert ckpt.resolve_checkpoint(os.path.join(path, "model.safetensors")) == path
    with pytest.raises(CheckpointError, match="model directory"):
        ckpt.load_checkpoint(str(tmp_path))


def test_exception_during_save_keeps_previous(tmp_path, monkeypatch):
    manager = _manager(tmp_path)
    first = manager.save(1, _weights(1), {"x": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(CheckpointError, match=r"ckpt-2: disk full; the previous checkpoint .*ckpt-1 is intact"):
        manager.save(2, _weights(2), {"x": 2})
    assert ckpt.latest_checkpoint(str(tmp_path)) == first
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1"]


_CRASH_SCRIPT = textwrap.dedent("""
    import sys, torch
    from learnrun.model_dir import checkpoints as ckpt
    model_dir, point = sys.argv[1], sys.argv[2]
    manager = ckpt.CheckpointManager(model_dir, keep_checkpoint_max=1)
    manager.save(1, {"w": torch.ones(3)}, {"x": 1})

    def block(*args, **kwargs):
        print("BLOCKED", flush=True)
        sys.stdin.read()  # wait here until the parent kills us

    if point == "files":  # the weights are written, the state is being written
        write_parts = ckpt.CheckpointManager._write_parts
        def parts(self, path, data):
            if path.endswith("state.pt"):
                block()
            return write_parts(self, path, data)
        ckpt.CheckpointManager._write_parts = parts
    elif point == "index":
        ckpt.CheckpointManager._write_index = block
    elif point == "retention":
        ckpt.CheckpointManager._delete = block
    manager.save(2, {"w": torch.full((3,), 2.0)}, {"x": 2})
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("point,latest_step", [("files", 1), ("index", 2), ("retention", 2)])
def test_sigkill_during_save_leaves_a_loadable_latest(tmp_path, point, latest_step):
    model_dir = str(tmp_path / "model")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, model_dir, point],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"BLOCKED"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    latest = ckpt.latest_checkpoint(model_dir)
    assert latest == os.path.join(model_dir, f"ckpt-{latest_step}")
    loaded = ckpt.load_checkpoint(latest)
    assert torch.equal(loaded.weights["w"], torch.full((3,), float(latest_step)))
    assert loaded.state == {"x": latest_step}
    if point == "files":  # no meta.json: not a checkpoint, removed by the next save
        assert os.path.isdir(os.path.join(model_dir, "ckpt-2"))
        assert ckpt.list_checkpoints(model_dir)[-1].step == 1
    if point == "index":  # committed, the index is stale: ckpt-2 exists all the same
        with open(os.path.join(model_dir, "checkpoint")) as f:
            assert json.load(f)["latest"] == "ckpt-1"
    ckpt.CheckpointManager(model_dir)  # the chief restarting cleans up
    names = os.listdir(model_dir)
    assert not any(n.startswith("tmp-") for n in names)
    assert ckpt.latest_checkpoint(model_dir) == latest
    if point == "files":
        assert "ckpt-2" not in names


def test_retention_keep_max(tmp_path):
    clock = FakeClock()
    manager = _manager(tmp_path, keep_checkpoint_max=2, clock=clock)
    for step in range(1, 6):
        clock.advance(60)
        manager.save(step, _weights(step), {})
    assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [4, 5]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-4", "ckpt-5"]


@pytest.mark.parametrize("keep_max", [0, None])
def test_retention_keep_all(tmp_path, keep_max):
    manager = _manager(tmp_path, keep_checkpoint_max=keep_max)
    for step in range(1, 8):
        manager.save(step, _weights(), {})
    assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == list(range(1, 8))


def test_retention_keep_every_n_hours_survives_restart(tmp_path):
    clock = FakeClock(start=0.0)
    manager = _manager(tmp_path, keep_checkpoint_max=2, keep_checkpoint_every_n_hours=1, clock=clock)
    for step in range(1, 5):  # one save every 40 minutes
        clock.advance(2400)
        manager.save(step, _weights(), {})
    # 1 (t=40min) is dropped: less than an hour after construction; 2 (t=80min) is preserved
    assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [2, 3, 4]
    manager = _manager(tmp_path, keep_checkpoint_max=2, keep_checkpoint_every_n_hours=1, clock=clock)
    for step in range(5, 7):
        clock.advance(2400)
        manager.save(step, _weights(), {})
    # 3 (t=120min) is within an hour of 2's preservation (80min): dropped; 4 (160min) kept
    assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [2, 4, 5, 6]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("ckpt-")) == [
        "ckpt-2", "ckpt-4", "ckpt-5", "ckpt-6"]


def test_saving_an_existing_step_replaces_it(tmp_path):
    manager = _manager(tmp_path)
    manager.save(1, _weights(1), {})
    path = manager.save(1, _weights(2), {"second": True})
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(loaded.weights["w"], _weights(2)["w"]) and loaded.state == {"second": True}
    assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [1]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1"]


def test_uncommitted_checkpoint_dirs_are_removed_user_files_kept(tmp_path):
    (tmp_path / "ckpt-9").mkdir()
    (tmp_path / "ckpt-9" / "junk").write_text("x")
    (tmp_path / "ckpt-1").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    assert ckpt.latest_checkpoint(str(tmp_path)) is None
    manager = _manager(tmp_path, keep_checkpoint_max=1)
    manager.save(9, _weights(), {})
    manager.save(10, _weights(), {})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-10", "notes.txt"]


def test_garbled_index_is_rebuilt_from_the_committed_checkpoints(tmp_path, caplog):
    manager = _manager(tmp_path, keep_checkpoint_max=1)
    first = manager.save(1, _weights(), {})
    (tmp_path / "checkpoint").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest_checkpoint(str(tmp_path)) == first
        assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [1]
    assert "is unreadable" in caplog.text and "rebuilding it" in caplog.text
    manager.save(2, _weights(), {})
    manager.save(3, _weights(), {})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-3"]
    assert json.loads((tmp_path / "checkpoint").read_text())["all"] == ["ckpt-3"]


def test_missing_listed_dir_falls_back_to_earlier(tmp_path, caplog):
    manager = _manager(tmp_path)
    first = manager.save(1, _weights(), {})
    second = manager.save(2, _weights(), {})
    os.remove(os.path.join(second, "state.pt"))
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest_checkpoint(str(tmp_path)) == first
        assert [i.step for i in ckpt.list_checkpoints(str(tmp_path))] == [1]
    assert "lacks state.pt" in caplog.text
    with pytest.raises(CheckpointError, match="lacks state.pt"):
        ckpt.load_checkpoint(second)


def _corrupt(path, name, how):
    file = os.path.join(path, name)
    with open(file, "rb") as f:
        data = bytearray(f.read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:  # same size, garbage bytes
        data[: min(64, len(data))] = b"\xff" * min(64, len(data))
    with open(file, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "state.pt", "meta.json"])
@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_corrupt_file_raises_checkpoint_error(tmp_path, name, how):
    path = _manager(tmp_path).save(1, _weights(), {"opt": {"step": torch.tensor(3.0)}})
    _corrupt(path, name, how)
    with pytest.raises(CheckpointError, match="corrupt or was not completely written") as info:
        ckpt.load_checkpoint(path)
    assert path in str(info.value)


def test_unsafe_state_object_is_rejected_with_its_location(tmp_path):
    manager = _manager(tmp_path)
    with pytest.raises(CheckpointError, match=r"state\['hooks'\]\[0\].*weights_only=True"):
        manager.save(1, _weights(), {"hooks": [object()]})
    assert ckpt.latest_checkpoint(str(tmp_path)) is None
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_bad_step(tmp_path, step):
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        _manager(tmp_path).save(step, _weights(), {})


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep_checkpoint_max"):
        ckpt.CheckpointManager(str(tmp_path), keep_checkpoint_max=-1)
    with pytest.raises(ValueError, match="keep_checkpoint_every_n_hours"):
        ckpt.CheckpointManager(str(tmp_path), keep_checkpoint_every_n_hours=0)
    manager = _manager(tmp_path)
    with pytest.raises(CheckpointError, match="entry 'w' is a list"):
        manager.save(1, {"w": [1.0]}, {})
    with pytest.raises(CheckpointError, match="JSON-serialisable"):
        manager.save(1, _weights(), {}, meta={"x": object()})
    with pytest.raises(CheckpointError, match="global step"):
        ckpt.checkpoint_step(str(tmp_path / "weird"))


def test_cleanup_temporaries_only_removes_own_leftovers(tmp_path):
    (tmp_path / "tmp-5-abcd").mkdir()
    (tmp_path / "tmp-del-3-00ff").mkdir()
    (tmp_path / "tmp-checkpoint-1234").write_text("{}")
    (tmp_path / "tmp-user-data").mkdir()
    removed = ckpt.cleanup_temporaries(str(tmp_path))
    assert len(removed) == 3
    assert os.listdir(tmp_path) == ["tmp-user-data"]


def test_rng_state_round_trip(tmp_path):
    state = ckpt.capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(2))
    path = _manager(tmp_path).save(1, _weights(), {"rng": state})
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    ckpt.restore_rng_state(ckpt.load_checkpoint(path).state["rng"])
    got = (random.random(), np.random.rand(), torch.rand(2))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_python_rng_state_is_one_tensor_and_the_old_list_form_still_restores():
    state = ckpt.capture_rng_state()
    words = state["python"]["state"]
    assert isinstance(words, torch.Tensor) and words.dtype == torch.int64 and words.numel() == 625
    expected = random.random()
    old_form = {"python": {**state["python"], "state": words.tolist()}}  # checkpoints before the change
    random.seed(7)
    ckpt.restore_rng_state(old_form)
    assert random.random() == expected
