"""The one writer of a model directory: a lease file, ``model_dir/lease``.

The chief holds the lease while it trains; everything that writes checkpoints runs under it.
The file records the holder (``host``, ``pid``, the process's start, ``start`` of the lease,
``heartbeat``, ``heartbeat_secs``, a random ``token``). A daemon thread renews the heartbeat
every ``heartbeat_secs``.

Trace of :meth:`Lease.acquire`:

1. create ``lease`` exclusively; done when this succeeds;
2. else read the holder. It is **gone** when it is on this host and its pid is dead, a
   zombie, or another process now (pid reused, or our own pid in a restarted container),
   or when it is on another host and its heartbeat is older than 3 heartbeat intervals; an
   unreadable lease file (its writer died while writing it) is gone too;
3. a gone holder's lease is taken over with a warning (removed, then step 1 again), so a run
   killed with SIGKILL and restarted at once is never blocked;
4. a live holder: :class:`LeaseError`, one line naming the holder and how to take over
   (stop that run; if it is gone for good, delete the ``lease`` file).

:meth:`Lease.release` (end of training, also after an error) stops the heartbeat and deletes
the file if it is still ours. When another process took the lease over (it judged us gone),
:meth:`Lease.check` raises :class:`LeaseError`; the writer calls it before every commit.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import socket
import threading
from typing import Any

from learnrun.clock import Clock, get_clock
from learnrun.errors import CheckpointError
from learnrun.model_dir.storage import prepare_model_dir, storage_for

logger = logging.getLogger(__name__)

LEASE_FILENAME = "lease"
DEFAULT_HEARTBEAT_SECS = 10.0
STALE_INTERVALS = 3  # a heartbeat older than this many intervals means the holder is gone

_HELD_HERE: set[str] = set()  # tokens of the leases this process holds


class LeaseError(CheckpointError):
    """Another live process holds the model directory's lease, or ours was taken over."""


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None (no such process / no procfs)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _process_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # starttime (field 22)


def _pid_state(pid: int, start: Any) -> str | None:
    """Why process ``pid`` (started at ``start``) is gone, or None while it runs."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return f"pid {pid!r} is not a process id"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"process {pid} is dead"
    except PermissionError:
        pass  # it exists, owned by another user
    except OSError as e:
        return f"process {pid} cannot be checked ({e})"
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return f"process {pid} is dead (a zombie)"
        if start is not None and fields[19:20] and fields[19] != str(start):
            return f"pid {pid} now belongs to another process"
    return None


class Lease:
    """The writer's lease on ``model_dir`` (see the module docstring for the protocol).

    Args:
      model_dir: the model directory (created if missing).
      heartbeat_secs: how often the daemon thread renews the heartbeat (> 0).
      clock: time source of the ``start`` and ``heartbeat`` stamps (tests pass a FakeClock).
      heartbeat_thread: False to renew only through :meth:`renew` (tests).
      host, pid: who holds it (default: this host and process; tests fake other hosts).
    """

    def __init__(self, model_dir: str, heartbeat_secs: float = DEFAULT_HEARTBEAT_SECS,
                 clock: Clock | None = None, *, heartbeat_thread: bool = True,
                 host: str | None = None, pid: int | None = None) -> None:
        if isinstance(heartbeat_secs, bool) or not isinstance(heartbeat_secs, (int, float)) \
                or not heartbeat_secs > 0:
            raise ValueError(f"heartbeat_secs must be a number > 0, got {heartbeat_secs!r}.")
        self.model_dir = str(model_dir)
        self._st = storage_for(self.model_dir)
        self.path = self._st.join(self.model_dir, LEASE_FILENAME)
        self.heartbeat_secs = float(heartbeat_secs)
        self._clock = get_clock(clock)
        self._thread_wanted = heartbeat_thread
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self._token: str | None = None
        self._start = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- the record -------------------------------------------------------------------------------
    def _record(self) -> bytes:
        return json.dumps({
            "host": self.host, "pid": self.pid,
            "process_start": _process_start(self.pid) if self.pid == os.getpid() else None,
            "start": self._start, "heartbeat": self._clock.time(),
            "heartbeat_secs": self.heartbeat_secs, "token": self._token,
        }, indent=1).encode("utf-8")

    def _read(self) -> dict | None:
        """The lease on disk; None when absent; ``{}`` when unreadable."""
        try:
            data = json.loads(self._st.read_bytes(self.path).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _gone(self, rec: dict) -> str | None:
        """Why the holder of ``rec`` is gone, or None when it may still be writing."""
        if not rec:
            return "the lease file is unreadable (its writer died while writing it)"
        if rec.get("token") in _HELD_HERE:
            return None
        if rec.get("host") == self.host:
            pid = rec.get("pid")
            if pid == os.getpid():
                return "it was this process's pid in an earlier run"
            return _pid_state(pid, rec.get("process_start"))
        beat, every = rec.get("heartbeat"), rec.get("heartbeat_secs")
        if not isinstance(beat, (int, float)) or not isinstance(every, (int, float)):
            return "the lease records no heartbeat"
        age = self._clock.time() - beat
        if age > STALE_INTERVALS * every:
            return f"its last heartbeat is {age:.0f} s old (renewed every {every:g} s)"
        return None

    def describe(self, rec: dict) -> str:
        """``host H pid P (started ..., last heartbeat N s ago)`` for messages."""
        start = rec.get("start")
        when = datetime.datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M:%S") \
            if isinstance(start, (int, float)) else "?"
        beat = rec.get("heartbeat")
        ago = f"{self._clock.time() - beat:.0f} s ago" if isinstance(beat, (int, float)) else "?"
        return f"host {rec.get('host')} pid {rec.get('pid')} (started {when}, last heartbeat {ago})"

    # -- protocol -----------------------------------------------------------------------------------
    def acquire(self) -> Lease:
        """Take the lease or raise :class:`LeaseError` (see the module docstring); returns self."""
        if self._token is not None:
            return self
        prepare_model_dir(self.model_dir)
        for name in self._st.listdir(self.model_dir):  # what an interrupted renewal left
            if name.startswith(f"tmp-{LEASE_FILENAME}-"):
                self._st.remove(self._st.join(self.model_dir, name))
        self._token = secrets.token_hex(8)
        self._start = self._clock.time()
        try:
            for _ in range(5):
                if self._st.create_exclusive(self.path, self._record()):
                    if (self._read() or {}).get("token") == self._token:
                        break
                    continue
                rec = self._read()
                if rec is None:
                    continue  # released meanwhile
                reason = self._gone(rec)
                if reason is None:
                    raise LeaseError(
                        f"model_dir {self.model_dir} is being written by another run: "
                        f"{self.describe(rec)}. Stop that run first; if it is gone for good, "
                        f"delete {self.path} to take over.")
                logger.warning("Taking over the lease of %s from %s: %s.", self.model_dir,
                               self.describe(rec) if rec else "an unknown writer", reason)
                if self._read() == rec:  # still the same holder: nobody took it meanwhile
                    self._st.remove(self.path)
            else:
                raise LeaseError(f"Could not take the lease {self.path}: other writers keep "
                                 "taking it. Run one writer per model_dir.")
        except BaseException:
            self._token = None
            raise
        _HELD_HERE.add(self._token)
        self._lost = None
        if self._thread_wanted:
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="learnrun-lease",
                                            daemon=True)
            self._thread.start()
        return self

    @property
    def held(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release` (unless lost)."""
        return self._token is not None and self._lost is None

    def renew(self) -> None:
        """Rewrite the heartbeat now; :class:`LeaseError` when the lease is no longer ours."""
        with self._lock:
            self.check()
            self._st.put(self.path, self._record())

    def check(self) -> None:
        """Raise :class:`LeaseError` unless this process still holds the lease."""
        if self._token is None:
            raise LeaseError(f"The lease {self.path} is not held; acquire() it first.")
        if self._lost is None:
            rec = self._read()
            if rec is None or rec.get("token") != self._token:
                holder = self.describe(rec) if rec else "nobody (the file was deleted)"
                self._lost = f"now held by {holder}"
        if self._lost is not None:
            raise LeaseError(f"This run lost the lease of model_dir {self.model_dir}: it is "
                             f"{self._lost}. Stop one of the runs; one writer per model_dir.")

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_secs):
            try:
                self.renew()
            except LeaseError as e:
                logger.error("%s", e)
                return
            except OSError as e:  # a transient storage error: the next beat retries
                logger.warning("Could not renew the lease %s: %s", self.path, e)

    def release(self) -> None:
        """Stop the heartbeat and delete the lease file if it is still ours (idempotent)."""
        token = self._token
        if token is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.heartbeat_secs))
            self._thread = None
        with self._lock:
            rec = self._read()
            if rec is not None and rec.get("token") == token:
                self._st.remove(self.path)
            self._token = None
        _HELD_HERE.discard(token)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
