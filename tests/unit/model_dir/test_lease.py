"""learnrun.model_dir.lease: one writer per model directory; a gone holder is taken over."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from learnrun.clock import FakeClock
from learnrun.model_dir.lease import LEASE_FILENAME, Lease, LeaseError


def _record(path, **fields) -> None:
    base = {"host": "elsewhere", "pid": 1, "process_start": None, "start": 1_500_000_000.0,
            "heartbeat": 1_500_000_000.0, "heartbeat_secs": 10.0, "token": "theirs"}
    base.update(fields)
    (path / LEASE_FILENAME).write_text(json.dumps(base))


def test_acquire_renew_release(tmp_path):
    clock = FakeClock()
    lease = Lease(str(tmp_path), clock=clock, heartbeat_thread=False).acquire()
    rec = json.loads((tmp_path / LEASE_FILENAME).read_text())
    assert rec["pid"] == os.getpid() and rec["heartbeat"] == clock.time() and lease.held
    clock.advance(5)
    lease.renew()
    assert json.loads((tmp_path / LEASE_FILENAME).read_text())["heartbeat"] == clock.time()
    lease.release()
    lease.release()  # idempotent
    assert os.listdir(tmp_path) == []


def test_second_writer_is_refused_with_one_line_naming_the_holder(tmp_path):
    with Lease(str(tmp_path), heartbeat_thread=False), pytest.raises(LeaseError) as info:
        Lease(str(tmp_path), heartbeat_thread=False).acquire()
    text = str(info.value)
    assert "\n" not in text and "is being written by another run" in text
    assert f"pid {os.getpid()}" in text and f"delete {tmp_path / LEASE_FILENAME} to take over" in text


def test_live_holder_on_this_host_is_refused(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        _record(tmp_path, host=Lease(str(tmp_path)).host, pid=proc.pid)
        with pytest.raises(LeaseError, match=f"pid {proc.pid}"):
            Lease(str(tmp_path), heartbeat_thread=False).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # its holder is dead now: taken over at once
    lease = Lease(str(tmp_path), heartbeat_thread=False).acquire()
    assert json.loads((tmp_path / LEASE_FILENAME).read_text())["pid"] == os.getpid()
    lease.release()


def test_dead_pid_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)
    dead = int(proc.stdout)
    _record(tmp_path, host=Lease(str(tmp_path)).host, pid=dead)
    with caplog.at_level(logging.WARNING):
        lease = Lease(str(tmp_path), heartbeat_thread=False).acquire()
    assert "Taking over the lease" in caplog.text and f"process {dead} is dead" in caplog.text
    lease.release()


def test_own_pid_from_an_earlier_run_is_taken_over(tmp_path):
    # a container restarted at once often gives the new run the pid the old one had
    _record(tmp_path, host=Lease(str(tmp_path)).host, pid=os.getpid())
    Lease(str(tmp_path), heartbeat_thread=False).acquire().release()


@pytest.mark.parametrize("age,taken", [(29, False), (31, True)])
def test_other_host_is_gone_after_three_missed_heartbeats(tmp_path, age, taken):
    clock = FakeClock()
    _record(tmp_path, heartbeat=clock.time() - age)
    lease = Lease(str(tmp_path), clock=clock, heartbeat_thread=False)
    if taken:
        lease.acquire().release()
    else:
        with pytest.raises(LeaseError, match="host elsewhere pid 1"):
            lease.acquire()


def test_unreadable_lease_file_is_taken_over(tmp_path):
    (tmp_path / LEASE_FILENAME).write_text("{half")
    Lease(str(tmp_path), heartbeat_thread=False).acquire().release()


def test_a_lease_taken_over_by_another_process_is_noticed(tmp_path):
    clock = FakeClock()
    lease = Lease(str(tmp_path), clock=clock, heartbeat_thread=False).acquire()
    _record(tmp_path, token="intruder")
    with pytest.raises(LeaseError, match="lost the lease"):
        lease.check()
    lease.release()
    assert json.loads((tmp_path / LEASE_FILENAME).read_text())["token"] == "intruder"  # not ours


def test_heartbeat_thread_renews(tmp_path):
    lease = Lease(str(tmp_path), heartbeat_secs=0.01).acquire()
    try:
        first = json.loads((tmp_path / LEASE_FILENAME).read_text())["heartbeat"]
        for _ in range(500):
            rec = json.loads((tmp_path / LEASE_FILENAME).read_text())
            if rec["heartbeat"] > first:
                break
            threading.Event().wait(0.01)
        assert rec["heartbeat"] > first
    finally:
        lease.release()
    assert not os.path.exists(tmp_path / LEASE_FILENAME)
