"""Tests for learnrun.model_dir.summaries: TensorBoard scalars, one cached writer per directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learnrun.model_dir import summaries as summary


@pytest.fixture(autouse=True)
def _close_writers():
    yield
    summary.close_all()


def _read_scalars(logdir) -> dict:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_read_back_with_tensorboard(tmp_path):
    for step in range(1, 4):
        summary.write_scalars(tmp_path, step, {"loss": torch.tensor(step * 0.5),
                                               "lr": np.float32(0.25), "steps/sec": step})
    summary.flush_all()
    scalars = _read_scalars(tmp_path)
    assert scalars["loss"] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert scalars["lr"] == [(s, 0.25) for s in (1, 2, 3)]
    assert scalars["steps/sec"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    for step in range(4, 30):  # more than the writer's queue holds, then flush one directory
        summary.write_scalars(tmp_path, step, {"loss": step})
    summary.flush(tmp_path)
    assert _read_scalars(tmp_path)["loss"][-1] == (29, 29.0)


def test_writer_is_cached_per_directory_and_reopened_after_close(tmp_path):
    a = summary.get_summary_writer(tmp_path / "a")
    assert summary.get_summary_writer(str(tmp_path / "a")) is a
    assert summary.get_summary_writer(tmp_path / "b") is not a
    summary.close_writer(tmp_path / "a")
    assert summary.get_summary_writer(tmp_path / "a") is not a
    summary.close_all()
    summary.write_scalars(tmp_path / "c", 5, {"x": 1.0})
    summary.close_all()
    assert _read_scalars(tmp_path / "c") == {"x": [(5, 1.0)]}


def test_write_scalars_rejects_non_scalars(tmp_path):
    with pytest.raises(ValueError, match=r"Summary value 'w' must be a real scalar.*Tensor"):
        summary.write_scalars(tmp_path, 1, {"w": torch.ones(3)})
    with pytest.raises(ValueError, match="'name' must be a real scalar"):
        summary.write_scalars(tmp_path, 1, {"name": "abc"})
    with pytest.raises(TypeError, match="dict of tag -> number"):
        summary.write_scalars(tmp_path, 1, [("a", 1.0)])
    with pytest.raises(ValueError, match="needs a log directory"):
        summary.get_summary_writer("")
    with pytest.raises(ValueError, match="write_scalars needs a log directory, got None"):
        summary.write_scalars(None, 1, {"loss": 1.0})
    with pytest.raises(ValueError, match="close_under needs a log directory, got ''"):
        summary.close_under("")  # never "every writer below the working directory"


def test_events_are_written_in_the_calling_thread_and_on_disk_after_flush(tmp_path):
    import threading

    before = threading.active_count()
    summary.write_scalars(tmp_path, 7, {"loss": 0.5, "accuracy": 0.75})
    assert threading.active_count() == before  # no writer thread, no queue
    summary.flush(tmp_path)
    assert _read_scalars(tmp_path) == {"loss": [(7, 0.5)], "accuracy": [(7, 0.75)]}


def test_tags_are_cleaned_as_tensorboardx_add_scalar_cleans_them(tmp_path):
    summary.write_scalars(tmp_path, 1, {"/eval loss": 1.5, "a:b/c": 2.0})
    summary.flush(tmp_path)
    assert _read_scalars(tmp_path) == {"eval_loss": [(1, 1.5)], "a_b/c": [(1, 2.0)]}


def test_events_reach_the_disk_within_flush_secs_without_a_flush_call(tmp_path, monkeypatch):
    summary.write_scalars(tmp_path, 1, {"loss": 1.0})
    assert _read_scalars(tmp_path) == {}  # buffered: FLUSH_SECS (120 s) have not passed
    monkeypatch.setattr(summary, "FLUSH_SECS", 0.0)
    summary.write_scalars(tmp_path, 2, {"loss": 2.0})  # a killed process would keep both
    assert _read_scalars(tmp_path) == {"loss": [(1, 1.0), (2, 2.0)]}


def test_flush_all_flushes_only_the_writers_written_since_their_last_flush(tmp_path, monkeypatch):
    # A process that trained in many model directories (a tuning study) flushes, at the end of
    # each train, the one it wrote to: not every writer it ever opened.
    a, b = summary.get_summary_writer(tmp_path / "a"), summary.get_summary_writer(tmp_path / "b")
    summary.write_scalars(tmp_path / "a", 1, {"x": 1.0})
    summary.write_scalars(tmp_path / "b", 1, {"x": 1.0})
    summary.flush_all()
    flushed = []
    for name, writer in (("a", a), ("b", b)):
        monkeypatch.setattr(writer, "flush",
                            lambda name=name, inner=writer.flush: (flushed.append(name), inner())[1])
    summary.write_scalars(tmp_path / "b", 2, {"x": 2.0})
    summary.flush_all()
    assert flushed == ["b"]
    summary.flush_all()  # nothing written since
    assert flushed == ["b"]
    assert _read_scalars(tmp_path / "b") == {"x": [(1, 1.0), (2, 2.0)]}
    summary.get_summary_writer(tmp_path / "a")  # handed out: its holder may write with it
    summary.flush_all()
    assert flushed == ["b", "a"]


def test_events_not_flushed_reach_the_disk_at_exit(tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT

    script = ("import sys\nfrom learnrun.model_dir import summaries\n"
              "summaries.write_scalars(sys.argv[1], 5, {'loss': 0.5})\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]))
    done = subprocess.run([sys.executable, "-W", "error::ResourceWarning", "-c", script,
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert _read_scalars(tmp_path) == {"loss": [(5, 0.5)]}


def test_close_under_closes_a_directory_and_those_below_it_only(tmp_path):
    run, below, sibling = tmp_path / "run", tmp_path / "run" / "eval", tmp_path / "run2"
    writers = {d: summary.get_summary_writer(d) for d in (run, below, sibling)}
    for d in writers:
        summary.write_scalars(d, 1, {"x": 1.0})
    summary.close_under(str(run) + "/")
    assert summary.get_summary_writer(sibling) is writers[sibling]  # run2 is not below run
    assert summary.get_summary_writer(run) is not writers[run]
    assert summary.get_summary_writer(below) is not writers[below]
    assert _read_scalars(below) == {"x": [(1, 1.0)]}  # closed: on disk


def test_a_writer_reopened_within_the_same_second_keeps_the_earlier_events(tmp_path):
    summary.write_scalars(tmp_path, 1, {"x": 1.0})
    summary.close_writer(tmp_path)
    summary.write_scalars(tmp_path, 2, {"x": 2.0})
    summary.close_writer(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(n.startswith("events.out.tfevents.") for n in names), names
    assert _read_scalars(tmp_path) == {"x": [(1, 1.0), (2, 2.0)]}
