"""Dynamic batching: batch planning, concatenation, splitting and the Batcher thread."""

from __future__ import annotations

import threading

import pytest
import torch

from learnrun.serving.batching import (
    Batcher,
    BatcherClosed,
    concat_features,
    plan_batch,
    split_outputs,
)


@pytest.mark.parametrize("sizes,limit,expected", [
    ([1, 1, 1], 2, 2), ([3, 1], 2, 1), ([1, 5], 4, 1), ([2, 2, 2], 4, 2), ([], 4, 0), ([1], 1, 1),
])
def test_plan_batch(sizes, limit, expected):
    assert plan_batch(sizes, limit) == expected


def test_concat_and_split_round_trip():
    a = {"x": torch.ones(2, 3), "y": torch.zeros(2)}
    b = {"x": torch.full((1, 3), 2.0), "y": torch.ones(1)}
    batch = concat_features([a, b])
    assert batch["x"].shape == (3, 3)
    parts = split_outputs({"out": batch["x"] * 2}, [2, 1])
    assert torch.equal(parts[0]["out"], a["x"] * 2) and torch.equal(parts[1]["out"], b["x"] * 2)


def test_concurrent_requests_share_one_call():
    gate = threading.Event()
    calls = []

    def fn(features):
        gate.wait(10)
        calls.append(features["x"].shape[0])
        return {"y": features["x"] + 1}

    batcher = Batcher(fn, max_batch_size=8, batch_timeout_micros=200_000)
    try:
        first = batcher.submit({"x": torch.zeros(1, 2)})  # the worker blocks on it
        futures = [batcher.submit({"x": torch.full((1, 2), float(i))}) for i in range(6)]
        gate.set()
        assert torch.equal(first.result(10)["y"], torch.ones(1, 2))
        for i, future in enumerate(futures):
            assert torch.equal(future.result(10)["y"], torch.full((1, 2), i + 1.0))
        assert sum(calls) == 7 and len(calls) <= 3 and max(calls) >= 6
    finally:
        gate.set()
        batcher.close()


def test_max_batch_size_and_oversized_request():
    seen = []
    batcher = Batcher(lambda f: seen.append(f["x"].shape[0]) or {"y": f["x"]}, max_batch_size=2,
                      batch_timeout_micros=0)
    try:
        assert batcher.submit({"x": torch.zeros(5, 1)}).result(10)["y"].shape == (5, 1)
    finally:
        batcher.close()
    assert seen == [5]


def test_errors_reach_every_request_and_close_drains():
    def fn(features):
        raise RuntimeError("model failed")

    batcher = Batcher(fn, max_batch_size=4, batch_timeout_micros=1000)
    future = batcher.submit({"x": torch.zeros(1)})
    batcher.close()
    with pytest.raises(RuntimeError, match="model failed"):
        future.result(10)
    with pytest.raises(BatcherClosed):
        batcher.submit({"x": torch.zeros(1)})


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"batch_timeout_micros": -1}])
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Batcher(lambda f: f, **kwargs)
