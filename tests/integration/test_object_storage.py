"""Model directories on object storage: a real S3 endpoint (moto's server) and ``memory://``.

Train, resume, evaluate, export and load on ``s3://``; event files and ``results.jsonl`` reach
the bucket; a SIGKILL during an upload leaves the newest committed checkpoint in use; bad
input (unknown bucket, no credentials, malformed URL, unreachable endpoint) is one line with
exit 2 or 1, in bounded time, and never shows a secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import torch

import learnrun
from learnrun.cli.main import main as cli_main
from learnrun.export import load_export
from learnrun.model_dir import checkpoints as ckpt
from learnrun.model_dir import eval_results
from learnrun.model_dir.storage import storage_for
from tests.conftest import s3_environ
from tests.helpers import REPO_ROOT
from tests.helpers.data import linear_regression_model_fn, sum_batches
from tests.helpers.hooks import StartStep

pytestmark = pytest.mark.timeout(120)


model_fn = linear_regression_model_fn
input_fn = sum_batches


def eval_input_fn():
    return sum_batches(3, seed=1)


def _estimator(model_dir: str, **config) -> learnrun.Estimator:
    config = {"save_checkpoints_steps": 10, "tf_random_seed": 1, "log_step_count_steps": 1000,
              "save_summary_steps": 5, **config}
    return learnrun.Estimator(model_fn, config=learnrun.RunConfig(model_dir=model_dir, **config))


def _round_trip(model_dir: str, tmp_path) -> None:
    """Train, resume, evaluate twice, export and load through ``model_dir`` (a URL)."""
    est = _estimator(model_dir)
    est.train(input_fn, max_steps=20)
    assert [c.step for c in ckpt.list_checkpoints(model_dir)] == [0, 10, 20]
    assert ckpt.latest_checkpoint(model_dir) == f"{model_dir}/ckpt-20"
    assert ckpt.check_checkpoint(f"{model_dir}/ckpt-20") is None  # meta.json and checksums
    hook = StartStep()
    _estimator(model_dir).train(input_fn, hooks=[hook], max_steps=30)
    assert hook.start == 20
    first = est.evaluate(eval_input_fn)
    second = est.evaluate(eval_input_fn, checkpoint_path=f"{model_dir}/ckpt-20")
    assert first["global_step"] == 30 and second["global_step"] == 20
    records = eval_results.read_eval_results(est.eval_dir())
    assert [r["global_step"] for r in records] == [30, 20]  # no line lost without append
    st = storage_for(model_dir)
    names = st.listdir(model_dir)
    assert any(n.startswith("events.out.tfevents") for n in names), names  # uploaded
    assert any(n.startswith("events.out.tfevents") for n in st.listdir(est.eval_dir()))
    export_dir = est.export_savedmodel(f"{model_dir}/export/plain",
                                       lambda: torch.zeros(2, 4))
    assert export_dir.startswith(f"{model_dir}/export/plain/")
    assert st.exists(f"{export_dir}/signature.json")
    predictor = load_export(export_dir)
    out = predictor([[1.0, 2.0, 3.0, 4.0]])["outputs"]
    assert out.shape == (1, 1)
    # nothing was written as a local directory named after the scheme
    assert not any(p.endswith(":") for p in os.listdir(os.getcwd()))


def test_memory_url_round_trip(tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    root = f"memory://lr-{uuid.uuid4().hex[:8]}"
    _round_trip(f"{root}/run", tmp_path)
    # warm start from the URL of another run's model directory
    warm = learnrun.Estimator(model_fn, config=learnrun.RunConfig(model_dir=f"{root}/warm"),
                              warm_start_from=f"{root}/run")
    hook = StartStep()
    warm.train(input_fn, hooks=[hook], max_steps=1)
    assert hook.start == 0
    source = ckpt.load_checkpoint(ckpt.latest_checkpoint(f"{root}/run")).weights
    first = ckpt.load_checkpoint(f"{root}/warm/ckpt-0").weights
    assert all(torch.equal(source[k], first[k]) for k in source)
    assert os.listdir(tmp_path) == []


def test_s3_round_trip_with_async_saves(s3_bucket, tmp_path, monkeypatch, clock):
    monkeypatch.chdir(tmp_path)
    model_dir = f"{s3_bucket}/run"
    assert learnrun.RunConfig(model_dir=model_dir).async_checkpoint is None  # on for remote
    _round_trip(model_dir, tmp_path)
    st = storage_for(model_dir)
    meta = json.loads(st.read_bytes(f"{model_dir}/ckpt-30/meta.json"))
    assert set(meta["files"]) >= {"model.safetensors", "state.pt"}
    assert not st.exists(f"{model_dir}/lease")  # released at the end of training
    assert os.listdir(tmp_path) == []
    # learnrun checkpoints on the URL
    assert cli_main(["checkpoints", model_dir, "--verify"]) == 0


def test_s3_incomplete_export_is_refused(s3_bucket, clock):
    base = f"{s3_bucket}/exports"
    st = storage_for(base)
    st.put(f"{base}/1700000000/model.safetensors", b"x")  # a writer died before signature.json
    with pytest.raises(FileNotFoundError, match="incomplete export"):
        load_export(f"{base}/1700000000")
    from learnrun.serving.versions import list_versions

    assert list_versions(base) == {}


def test_s3_lease_refuses_a_second_writer(s3_bucket):
    from learnrun.model_dir.lease import Lease, LeaseError

    model_dir = f"{s3_bucket}/leased"
    with Lease(model_dir, heartbeat_thread=False):
        with pytest.raises(LeaseError, match="being written by another run"):
            Lease(model_dir, heartbeat_thread=False, host="other-host", pid=1).acquire()
        other = Lease(model_dir, heartbeat_thread=False)
        assert other._read()["host"]  # noqa: SLF001 - the record is on the bucket
    assert not storage_for(model_dir).exists(f"{model_dir}/lease")


# ------------------------------------------------------------------------------ bad input


def _cli(args, capsys) -> tuple[int, str, float]:
    start = time.monotonic()
    code = cli_main(args)
    err = capsys.readouterr().err
    return code, err, time.monotonic() - start


def test_bad_urls_are_one_line_bad_input(s3_bucket, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    bucket = s3_bucket.split("://")[1]
    cases = {
        "s3://no-such-bucket-lr/run": "the bucket does not exist",
        "s3:///run": "names no bucket",
        "xyz://a/b": "unknown file-system scheme 'xyz'",
        f"s3://AKIAEXAMPLE:TOPSECRET@{bucket}/run": "credentials in the URL are not used",
    }
    for url, expected in cases.items():
        code, err, secs = _cli(["checkpoints", url], capsys)
        assert code == 2, (url, err)
        assert expected in err and len(err.strip().splitlines()) == 1, err
        assert "TOPSECRET" not in err and "testing-secret" not in err
        assert secs < 20
    code, err, _ = _cli(["run", "digits", "--model-dir", "s3://no-such-bucket-lr/run"], capsys)
    assert code == 2 and "the bucket does not exist" in err, err
    code, err, _ = _cli(["run", "digits", "--model-dir", "xyz://run"], capsys)
    assert code == 2 and "unknown file-system scheme" in err, err
    assert os.listdir(tmp_path) == []  # no local 'xyz:' or 's3:' directory


def test_no_credentials_and_unreachable_endpoint(s3_bucket, capsys, monkeypatch, tmp_path):
    import s3fs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    s3fs.S3FileSystem.clear_instance_cache()
    code, err, secs = _cli(["checkpoints", f"{s3_bucket}/run"], capsys)
    assert code == 2 and "no credentials found" in err and "AWS_ACCESS_KEY_ID" in err, err
    for key, value in s3_environ("http://127.0.0.1:9").items():  # nothing listens on port 9
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    code, err, secs = _cli(["checkpoints", f"{s3_bucket}/run"], capsys)
    assert code == 1 and "endpoint is unreachable" in err and "AWS_ENDPOINT_URL" in err, err
    assert len(err.strip().splitlines()) == 1 and "testing-secret" not in err
    assert secs < 30  # retries with backoff, then give up


def test_missing_backend_names_the_extra(monkeypatch):
    import fsspec

    from learnrun.errors import StorageError

    def missing(protocol):
        raise ImportError(f"Install gcsfs to access {protocol}")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(StorageError, match=r"pip install 'learnrun\[gcs\]'") as info:
        learnrun.Estimator(model_fn, model_dir="gs://bucket/run")
    assert info.value.bad_input


# ------------------------------------------------------------------- SIGKILL during upload

_TRAINER = textwrap.dedent("""
    import sys, torch, learnrun
    from learnrun.estimator.spec import EstimatorSpec
    from learnrun.hooks import CheckpointSaverListener

    def model_fn():
        m = torch.nn.Sequential(torch.nn.Linear(4, 1500), torch.nn.Linear(1500, 1500),
                                torch.nn.Linear(1500, 1))   # ~9 MB of weights, ~27 MB a save
        return EstimatorSpec(module=m, loss_fn=torch.nn.functional.mse_loss,
                             optimizer=torch.optim.Adam(m.parameters(), lr=1e-4))

    def input_fn():
        g = torch.Generator().manual_seed(0)
        for _ in range(10000):
            x = torch.randn(8, 4, generator=g)
            yield x, x.sum(1, keepdim=True)

    class Say(CheckpointSaverListener):
        def after_save(self, session, step):
            print("committed", step, flush=True)

    config = learnrun.RunConfig(model_dir=sys.argv[1], save_checkpoints_steps=2,
                                save_summary_steps=0, log_step_count_steps=10**6,
                                tf_random_seed=0, keep_checkpoint_max=3)
    learnrun.Estimator(model_fn, config=config).train(input_fn, max_steps=int(sys.argv[2]),
                                                      saving_listeners=[Say()])
""")


@pytest.mark.slow
def test_sigkill_during_upload_then_restart(s3_bucket, tmp_path):
    model_dir = f"{s3_bucket}/killed"
    script = tmp_path / "trainer.py"
    script.write_text(_TRAINER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), model_dir, "1000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("committed 4"):
                break
        time.sleep(0.3)  # the next asynchronous save is uploading
    finally:
        proc.kill()
        proc.wait(timeout=30)
    st = storage_for(model_dir)
    latest = ckpt.latest_checkpoint(model_dir)
    assert latest is not None and ckpt.checkpoint_step(latest) >= 4
    assert ckpt.check_checkpoint(latest) is None  # committed means whole
    restart = subprocess.run([sys.executable, str(script), model_dir,
                              str(ckpt.checkpoint_step(latest) + 2)],
                             env=env, capture_output=True, text=True, timeout=90)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    final = ckpt.latest_checkpoint(model_dir)
    assert ckpt.checkpoint_step(final) == ckpt.checkpoint_step(latest) + 2
    assert ckpt.check_checkpoint(final) is None
    # leftovers of the killed upload (a ckpt-* without meta.json) are gone
    st.refresh(model_dir)
    for name in st.listdir(model_dir):
        if name.startswith("ckpt-"):
            assert st.exists(f"{model_dir}/{name}/meta.json"), name


def test_staging_of_event_files_is_removed_at_exit(s3_bucket, tmp_path):
    # A remote logdir's events are staged under TMPDIR (here this test's) and uploaded at each
    # flush. The staging does not outlive the process; events written after the last flush
    # cannot be uploaded at exit (S3's client needs threads the interpreter has stopped) and
    # are named in a warning, in bounded time.
    logdir = f"{s3_bucket}/events"
    staging_root = tmp_path / "tmp"
    staging_root.mkdir()
    script = ("import sys\nfrom learnrun.model_dir import summaries\n"
              "summaries.write_scalars(sys.argv[1], 3, {'loss': 0.5})\n"
              "summaries.flush(sys.argv[1])\n"
              "summaries.write_scalars(sys.argv[1], 4, {'loss': 0.25})\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
               TMPDIR=str(staging_root))
    done = subprocess.run([sys.executable, "-c", script, logdir], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"TensorBoard events written to {logdir} since its last flush were not uploaded" \
        in done.stderr
    assert list(staging_root.iterdir()) == []
    st = storage_for(logdir)
    names = [n for n in st.listdir(logdir) if n.startswith("events.out.tfevents")]
    assert len(names) == 1, names
    local = tmp_path / "events"
    local.mkdir()
    (local / names[0]).write_bytes(st.read_bytes(f"{logdir}/{names[0]}"))
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(local), size_guidance={"scalars": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(3, 0.5)]
