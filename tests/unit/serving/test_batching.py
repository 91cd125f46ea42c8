"""Dynamic batching: batch planning, concatenation, splitting and the event-loop batcher."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
import torch

from learnrun.serving.batching import (
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
    assert torch.equal(torch.as_tensor(parts[0]["out"]), a["x"] * 2)
    assert torch.equal(torch.as_tensor(parts[1]["out"]), b["x"] * 2)
    bf16 = split_outputs({"out": torch.ones(3, 1, dtype=torch.bfloat16)}, [1, 2])
    assert bf16[1]["out"].dtype == torch.bfloat16 and bf16[1]["out"].shape == (2, 1)
    with pytest.raises(ValueError, match="no batch dimension of 3 rows"):
        split_outputs({"out": torch.ones(2, 1)}, [1, 2])


# ------------------------------------------------------------------ LoopBatcher (asyncio)

from learnrun.serving.batching import LoopBatcher, ThreadRunner, run_batch  # noqa: E402


def _add_one(calls):
    def fn(features):
        calls.append(features["x"].shape[0])
        return {"y": features["x"] + 1}
    return fn


def test_loop_batcher_full_batch_runs_at_once_in_order():
    calls = []
    batcher = LoopBatcher(_add_one(calls), max_batch_size=4, batch_timeout_micros=10_000_000)

    async def main():
        futures = [batcher.submit({"x": torch.full((1, 2), float(i))}) for i in range(4)]
        assert all(f.done() for f in futures)  # the fourth request filled the batch
        return [await f for f in futures]

    outs = asyncio.run(main())
    assert calls == [4]
    for i, out in enumerate(outs):
        assert torch.equal(torch.as_tensor(out["y"]), torch.full((1, 2), i + 1.0))


def test_loop_batcher_timeout_closes_a_partial_batch():
    calls = []
    batcher = LoopBatcher(_add_one(calls), max_batch_size=32, batch_timeout_micros=20_000)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = [batcher.submit({"x": torch.zeros(2, 1)}), batcher.submit({"x": torch.ones(1, 1)})]
        outs = await asyncio.gather(*futures)
        return outs, loop.time() - start

    (a, b), waited = asyncio.run(main())
    assert calls == [3] and batcher.batch_sizes == [3]
    assert a["y"].shape == (2, 1) and torch.equal(torch.as_tensor(b["y"]), torch.full((1, 1), 2.0))
    assert 0.015 <= waited < 5


def test_loop_batcher_max_batch_size_splits_and_oversized_runs_alone():
    calls = []
    batcher = LoopBatcher(_add_one(calls), max_batch_size=4, batch_timeout_micros=1000)

    async def main():
        sizes = [3, 2, 9, 1, 1, 2]
        futures = [batcher.submit({"x": torch.full((n, 1), float(n))}) for n in sizes]
        outs = await asyncio.gather(*futures)
        return sizes, outs

    sizes, outs = asyncio.run(main())
    # 3 | 2 (3+2 > 4) | 9 alone | 1+1+2
    assert calls == [3, 2, 9, 4]
    for n, out in zip(sizes, outs, strict=True):
        assert torch.equal(torch.as_tensor(out["y"]), torch.full((n, 1), n + 1.0))


def test_loop_batcher_one_bad_request_fails_alone():
    def fn(features):
        if (features["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": features["x"] * 2}

    batcher = LoopBatcher(fn, max_batch_size=3, batch_timeout_micros=1000)

    async def main():
        futures = [batcher.submit({"x": torch.full((1, 1), v)}) for v in (1.0, -1.0, 3.0)]
        return await asyncio.gather(*futures, return_exceptions=True)

    good, bad, other = asyncio.run(main())
    assert torch.equal(torch.as_tensor(good["y"]), torch.full((1, 1), 2.0))
    assert torch.equal(torch.as_tensor(other["y"]), torch.full((1, 1), 6.0))
    assert isinstance(bad, ValueError) and "negative" in str(bad)


def test_run_batch_mismatched_output_falls_back_to_single_calls():
    # an output without the batch dimension cannot be split: each request runs alone
    def fn(features):
        return {"y": features["x"], "total": features["x"].sum().reshape(1)}

    results = run_batch(fn, [{"x": torch.ones(1, 1)}, {"x": torch.full((1, 1), 2.0)}], [1, 1])
    assert [r["total"].item() for r, exc in results] == [1.0, 2.0]
    assert all(exc is None for _, exc in results)


def test_loop_batcher_with_an_executor_runs_batches_in_its_threads():
    threads = []

    def fn(features):
        threads.append(threading.current_thread().name)
        return {"y": features["x"] + 1}

    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="model") as pool:
        batcher = LoopBatcher(fn, max_batch_size=2, batch_timeout_micros=1000, executor=pool)

        async def main():
            futures = [batcher.submit({"x": torch.full((1, 1), float(i))}) for i in range(3)]
            assert not any(f.done() for f in futures)  # the full batch runs in a thread
            return [await asyncio.wait_for(f, 10) for f in futures]

        outs = asyncio.run(main())
    assert [out["y"].item() for out in outs] == [1.0, 2.0, 3.0]
    assert batcher.batch_sizes == [2, 1] and all(name.startswith("model") for name in threads)


def test_thread_runner_runs_each_request_in_a_thread_until_closed():
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
        runner = ThreadRunner(lambda f: {"y": f["x"] * 2, "thread": threading.current_thread().name},
                              pool)

        async def main():
            out = await asyncio.wait_for(runner.submit({"x": torch.ones(1)}), 10)
            runner.close()
            with pytest.raises(BatcherClosed):
                runner.submit({"x": torch.ones(1)})
            return out

        out = asyncio.run(main())
    assert out["y"].item() == 2.0 and out["thread"].startswith("model")


def test_loop_batcher_close_finishes_waiting_requests_from_another_thread():
    calls = []
    batcher = LoopBatcher(_add_one(calls), max_batch_size=32, batch_timeout_micros=5_000_000)

    async def main():
        future = batcher.submit({"x": torch.zeros(1, 1)})
        closer = threading.Thread(target=batcher.close)
        closer.start()
        out = await asyncio.wait_for(future, 10)
        await asyncio.get_running_loop().run_in_executor(None, closer.join, 10)
        with pytest.raises(BatcherClosed):
            batcher.submit({"x": torch.zeros(1, 1)})
        return out

    assert torch.equal(torch.as_tensor(asyncio.run(main())["y"]), torch.ones(1, 1))
    assert calls == [1]


@pytest.mark.parametrize("kwargs", [{"max_batch_size": 0}, {"batch_timeout_micros": -1}])
def test_loop_batcher_bad_parameters(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LoopBatcher(lambda f: f, **kwargs)
