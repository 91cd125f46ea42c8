"""Fixtures shared by the whole suite.

* ``clock``: a :class:`~learnrun.clock.FakeClock` (time moves only when code sleeps on it or a
  test advances it), also the default clock of the export functions.
* ``model_dir``: the model directory of one test, under its ``tmp_path``.
* ``s3_server``, ``s3_bucket``: a local S3 endpoint (moto's server) and a bucket of one test.
* ``sync_reference``: one uninterrupted synchronous cluster run that tests compare with.

Small datasets are functions of :mod:`tests.helpers.data` (tests build their ``model_fn`` and
``input_fn`` from them at import time); test doubles live in :mod:`tests.helpers.fakes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from learnrun.clock import FakeClock
from learnrun.export import artifact, strategies


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A FakeClock for the code under test, and for exports that are given no clock.

    ``Estimator.export_savedmodel`` and export strategies built without a clock would use the
    system clock and really sleep 1 s when two exports share a second: they get this one.
    """
    fake = FakeClock()
    for module in (artifact, strategies):
        real_get_clock = module.get_clock
        monkeypatch.setattr(module, "get_clock",
                            lambda c=None, _real=real_get_clock: _real(c or fake))
    return fake


@pytest.fixture
def model_dir(tmp_path) -> str:
    """``<tmp_path>/model``: a model directory of this test (not created)."""
    return str(tmp_path / "model")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint on loopback (moto's server), for the whole session: its URL.

    Skips the test when ``moto[server]`` or s3fs is not installed (``learnrun[dev]`` has both).
    """
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_environ(endpoint: str) -> dict[str, str]:
    """The AWS_* settings that point botocore at ``endpoint`` with dummy credentials only."""
    return {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request) -> str:
    """``s3://<a bucket of this test>`` on the moto endpoint, with the AWS_* env set for it."""
    import re
    import uuid

    import boto3
    import s3fs

    for key, value in s3_environ(s3_server).items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"):
        monkeypatch.delenv(key, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # instances remember the endpoint and credentials
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{stem}-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    from learnrun.model_dir import summaries

    summaries.close_all()  # uploads now, while the endpoint is set, and removes the staging
    s3fs.S3FileSystem.clear_instance_cache()


SYNC_REFERENCE_STEPS = 16
SYNC_REFERENCE_ARGS = dict(num_workers=1, save_steps=3, dist_timeout=10,
                           LRTEST_TRAIN_STEPS=str(SYNC_REFERENCE_STEPS))
"""The cluster of :func:`sync_reference` (``launch_experiment`` arguments): a chief and a
worker train to SYNC_REFERENCE_STEPS, a checkpoint every 3 steps."""


@dataclass(frozen=True)
class ClusterRun:
    model_dir: Path
    out: Any  # tests.helpers.distributed.Collector: what the tasks printed


@pytest.fixture(scope="session")
def sync_reference(tmp_path_factory) -> ClusterRun:
    """One uninterrupted synchronous cluster run (:data:`SYNC_REFERENCE_ARGS`, the test
    experiment of :mod:`tests.helpers.experiments`, TF_CONFIG roles), for the session.

    Tests check it, compare their own runs with it, or resume a copy of it; none writes to it.
    """
    from tests.helpers.distributed import launch_experiment

    model_dir = tmp_path_factory.mktemp("sync-reference") / "model"
    code, out, _ = launch_experiment(model_dir, timeout=150, **SYNC_REFERENCE_ARGS)
    assert code == 0, out.text
    return ClusterRun(model_dir, out)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--fault-runs N --fault-seed S``: how long tests/faults/ runs, and its random plan."""
    group = parser.getgroup("learnrun faults")
    group.addoption("--fault-runs", type=int, default=1,
                    help="scale of tests/faults/: kills per cluster test (local runs get 3x)")
    group.addoption("--fault-seed", type=int, default=20261201,
                    help="seed of tests/faults/'s random kill moments (printed; replay with it)")


# The tests that start a local cluster: several processes that talk over 127.0.0.1 under
# timeouts (RunConfig.distributed_timeout_secs, the launcher's). Under pytest-xdist
# (``-n 2 --dist loadgroup``, as scripts/test.sh runs the suite) they run one after another
# on one worker while the other tests share the workers, so that no two clusters compete for
# the CPUs. Node-id prefixes: xdist's scheduler sees node ids only.
CLUSTER_TESTS = ("tests/distributed/",
                 "tests/faults/test_faults.py::test_sync_cluster_",
                 "tests/faults/test_faults.py::test_parameter_server_")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup``: each test alone, the :data:`CLUSTER_TESTS` as one unit.

    (xdist's own ``xdist_group`` marks do not group under pytest 9, whose node ids xdist can
    no longer rename; this scheduler needs no marks.)
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ClusterScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "cluster" if nodeid.startswith(CLUSTER_TESTS) else nodeid

    return ClusterScheduling(config, log)
