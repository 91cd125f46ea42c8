"""A local cluster sharing one ``s3://`` model directory (moto's server): no shared volume."""

from __future__ import annotations

import pytest

from learnrun.model_dir import eval_results
from learnrun.model_dir.checkpoints import check_checkpoint, checkpoint_step, latest_checkpoint
from learnrun.model_dir.storage import storage_for
from tests.conftest import s3_environ
from tests.helpers.distributed import launch_experiment

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(150)]


def test_chief_worker_and_evaluator_share_an_s3_model_dir(s3_bucket, s3_server, tmp_path,
                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_dir = f"{s3_bucket}/run"
    steps = 20
    staging = tmp_path / "tmp"  # the tasks' TMPDIR: event files are staged there
    staging.mkdir()
    code, out, _ = launch_experiment(model_dir, num_workers=1, evaluator=True, save_steps=5,
                                     timeout=120, LRTEST_TRAIN_STEPS=str(steps),
                                     TMPDIR=str(staging), **s3_environ(s3_server))
    assert code == 0, out.text
    assert out.exit_codes() == {"chief:0": 0, "worker:0": 0, "evaluator:0": 0}, out.text
    latest = latest_checkpoint(model_dir)
    assert checkpoint_step(latest) == steps and check_checkpoint(latest) is None
    records = eval_results.read_eval_results(f"{model_dir}/eval_continuous")
    assert records and records[-1]["global_step"] == steps
    paths = [r["checkpoint_path"] for r in records]
    assert len(paths) == len(set(paths))  # each checkpoint evaluated once
    st = storage_for(model_dir)
    assert any(n.startswith("events.out.tfevents") for n in st.listdir(model_dir))
    assert list(tmp_path.iterdir()) == [staging]  # nothing written locally
    # the tasks (which leave through os._exit) removed their event files' staging directories
    # (torch may leave its own caches there)
    assert [p.name for p in staging.iterdir() if p.name.startswith("learnrun")] == []
