"""Unit tests of learnrun.estimator.preemption: signal handling and DataLoader workers."""

from __future__ import annotations

import signal

import pytest
import torch

from learnrun.errors import PreemptedError
from learnrun.estimator.preemption import (
    PreemptionGuard,
    ProtectedWorkerInit,
    protect_dataloader,
    worker_init_fn,
)


def test_preemption_guard_sets_flag_and_restores_handlers():
    before_term = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)
    with PreemptionGuard() as guard:
        signal.raise_signal(signal.SIGTERM)
        assert guard.triggered and guard.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before_term
    with PreemptionGuard() as guard:
        signal.raise_signal(signal.SIGINT)
        assert guard.triggered
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before_int


def test_sigterm_after_a_preemption_exits_143_again_instead_of_killing():
    # a storm of SIGTERMs: one stops training, the next arrives while PreemptedError
    # propagates (after the guard is gone); it must still end in exit 143, not death by signal
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(PreemptedError) as caught, PreemptionGuard() as guard:
            signal.raise_signal(signal.SIGTERM)
            assert guard.triggered
            raise PreemptedError("preempted")
        assert caught.value.code == 143
        with pytest.raises(PreemptedError) as again:
            signal.raise_signal(signal.SIGTERM)
        assert again.value.code == 143
        # any other way out of training gives Python's default back
        with pytest.raises(RuntimeError), PreemptionGuard():
            raise RuntimeError("boom")
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_worker_init_fn_ignores_sigterm():
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        worker_init_fn(0)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])


def _mark(worker_id):
    _mark.calls.append(worker_id)


_mark.calls = []


def test_protect_dataloader_wraps_only_multiprocess_loaders():
    data = [(torch.zeros(1), torch.zeros(1))] * 4
    assert not protect_dataloader(data)  # not a DataLoader
    single = torch.utils.data.DataLoader(data, num_workers=0)
    assert not protect_dataloader(single) and single.worker_init_fn is None
    loader = torch.utils.data.DataLoader(data, num_workers=2)
    assert protect_dataloader(loader) and isinstance(loader.worker_init_fn, ProtectedWorkerInit)
    assert not protect_dataloader(loader)  # idempotent: no double wrapping
    assert not protect_dataloader(torch.utils.data.DataLoader(data, num_workers=2,
                                                              worker_init_fn=worker_init_fn))
    custom = torch.utils.data.DataLoader(data, num_workers=2, worker_init_fn=_mark)
    assert protect_dataloader(custom)
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        custom.worker_init_fn(1)  # what a worker runs first
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN and _mark.calls == [1]
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
