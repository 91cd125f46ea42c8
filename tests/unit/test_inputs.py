"""Tests for learnrun.inputs: TF argument checks, sharding, dtypes and resumable state."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from learnrun.distributed.base import InputContext
from learnrun.inputs import numpy_input_fn, pandas_input_fn


def _ids(batches) -> list[int]:
    out: list[int] = []
    for features, _ in batches:
        ids = features["id"] if isinstance(features, dict) else features
        out.extend(int(v) for v in ids.reshape(-1))
    return out


def test_shuffle_must_be_explicit():
    with pytest.raises(ValueError, match="shuffle must be provided explicitly as a bool, it is now set to None"):
        numpy_input_fn(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shuffle must be provided explicitly"):
        pandas_input_fn(pd.DataFrame({"a": [1, 2]}), shuffle="yes")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"x": []}, "x must be a dict or array; got list"),
        ({"x": {}}, "x cannot be an empty dict"),
        ({"x": np.zeros((0, 2))}, "x cannot be an empty array"),
        ({"x": {"a": np.zeros(3)}, "y": {}}, "y cannot be empty dict, use None instead"),
        ({"x": {"a": np.zeros(3)}, "y": {"a": np.zeros(3)}}, "1 duplicate keys are found in both x and y"),
        ({"x": {"a": np.zeros(3)}, "batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"x": {"a": np.zeros(3)}, "num_epochs": 0}, "num_epochs must be a positive integer or None"),
    ],
)
def test_numpy_argument_errors(kwargs, match):
    kwargs.setdefault("shuffle", False)
    with pytest.raises((ValueError, TypeError), match=match):
        numpy_input_fn(**kwargs)


def test_length_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"Length of tensors in x and y is mismatched[\s\S]*'a': \(3,\)[\s\S]*Shapes in y: \(4,\)"):
        numpy_input_fn({"a": np.zeros(3)}, np.zeros(4), shuffle=False)


def test_dtypes_and_structure():
    x = {"f": np.array([1.5, 2.5], dtype=np.float64), "i": np.array([1, 2], dtype=np.int32),
         "s": np.array(["a", "b"]), "o": np.array(["x", "y"], dtype=object)}
    features, labels = next(iter(numpy_input_fn(x, np.array([0, 1]), batch_size=2, shuffle=False)()))
    assert features["f"].dtype == torch.float32
    assert features["i"].dtype == torch.int64
    assert isinstance(features["s"], np.ndarray) and list(features["s"]) == ["a", "b"]
    assert list(features["o"]) == ["x", "y"]
    assert labels.dtype == torch.int64
    # an array x gives a plain tensor; y None gives labels None
    features, labels = next(iter(numpy_input_fn(np.ones((4, 3)), batch_size=4, shuffle=False)()))
    assert isinstance(features, torch.Tensor) and features.shape == (4, 3) and labels is None


def test_batches_cross_epochs_and_end():
    fn = numpy_input_fn({"id": np.arange(5)}, batch_size=2, num_epochs=2, shuffle=False)
    sizes = [len(f["id"]) for f, _ in fn()]
    assert sizes == [2, 2, 2, 2, 2]
    assert _ids(fn()) == [0, 1, 2, 3, 4] * 2


def test_num_epochs_none_repeats_forever():
    it = iter(numpy_input_fn({"id": np.arange(3)}, batch_size=2, num_epochs=None, shuffle=True)())
    seen = [next(it) for _ in range(50)]
    assert len(seen) == 50


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("n", [2, 3])
def test_sharding_loses_and_duplicates_nothing(shuffle, n):
    fn = numpy_input_fn({"id": np.arange(101)}, batch_size=7, num_epochs=1, shuffle=shuffle, seed=3)
    shards = [_ids(fn(input_context=InputContext(n, i))) for i in range(n)]
    merged = sorted(v for s in shards for v in s)
    assert merged == list(range(101))
    if not shuffle:
        assert all(v % n == i for i, s in enumerate(shards) for v in s)


def test_shuffle_differs_per_epoch_and_is_seeded():
    fn = numpy_input_fn({"id": np.arange(50)}, batch_size=50, num_epochs=2, shuffle=True, seed=1)
    ids = _ids(fn())
    assert ids[:50] != ids[50:] and sorted(ids[:50]) == list(range(50))
    assert ids != list(range(50)) * 2
    assert _ids(fn()) == ids
    assert _ids(numpy_input_fn({"id": np.arange(50)}, batch_size=50, num_epochs=2, shuffle=True, seed=2)()) != ids


def test_state_round_trip_resumes_exact_batch():
    x = {"id": np.arange(23)}
    fn = numpy_input_fn(x, np.arange(23), batch_size=4, num_epochs=3, shuffle=True, seed=7)
    full = _ids(fn(input_context=InputContext(2, 1)))
    first = fn(input_context=InputContext(2, 1))
    head = [next(first) for _ in range(5)]
    state = first.state_dict()
    resumed = fn(input_context=InputContext(2, 1))
    resumed.load_state_dict(dict(state))
    assert _ids(head) + _ids(resumed) == full
    other = fn(input_context=InputContext(2, 0))
    with pytest.raises(ValueError, match="saved for pipeline 1 of 2"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        resumed.load_state_dict({"epoch": 0})


def test_seed_from_config_when_not_given():
    class Cfg:
        tf_random_seed = 11

    fn = numpy_input_fn({"id": np.arange(30)}, batch_size=30, shuffle=True)
    a, b = _ids(fn(config=Cfg())), _ids(fn(config=Cfg()))
    assert a == b and a != _ids(fn())


def test_pandas_input_fn_series_and_frame():
    df = pd.DataFrame({"id": [0, 1, 2, 3], "color": ["r", "g", "b", "r"], "v": [0.5, 1, 2, 3]})
    y = pd.Series([1, 0, 1, 0])
    features, labels = next(iter(pandas_input_fn(df, y, batch_size=4, shuffle=False)()))
    assert set(features) == {"id", "color", "v"} and features["v"].dtype == torch.float32
    assert list(features["color"]) == ["r", "g", "b", "r"]
    assert labels.tolist() == [1, 0, 1, 0]
    ydf = pd.DataFrame({"t1": [1, 2, 3, 4], "t2": [0.0, 1, 0, 1]})
    _, labels = next(iter(pandas_input_fn(df, ydf, batch_size=4, shuffle=False)()))
    assert set(labels) == {"t1", "t2"}


def test_pandas_errors():
    df = pd.DataFrame({"target": [1, 2]})
    with pytest.raises(ValueError, match="Cannot use name target for target column"):
        pandas_input_fn(df, pd.Series([1, 2]), shuffle=False)
    with pytest.raises(ValueError, match="Index for x and y are mismatched"):
        pandas_input_fn(pd.DataFrame({"a": [1, 2]}), pd.Series([1, 2], index=[5, 6]), shuffle=False)
    with pytest.raises(TypeError, match="target_column must be a string type"):
        pandas_input_fn(pd.DataFrame({"a": [1, 2]}), shuffle=False, target_column=3)


def test_pandas_missing_gives_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TypeError, match="without pandas installed.*pip install pandas"):
        pandas_input_fn(object(), shuffle=False)


def test_length_mismatch_in_a_dict_names_the_key():
    with pytest.raises(ValueError, match=r"x\['b'\] has 4 examples but x\['a'\] has 3"):
        numpy_input_fn({"a": np.zeros(3), "b": np.zeros(4)}, np.zeros(3), shuffle=False)
    with pytest.raises(ValueError, match=r"y\['m'\] has 2 examples but x has 3"):
        numpy_input_fn(np.zeros((3, 2)), {"l": np.zeros(3), "m": np.zeros(2)}, shuffle=False)


@pytest.mark.parametrize("n", [2, 3])
def test_sharding_over_several_shuffled_epochs(n):
    epochs, size = 3, 50
    fn = numpy_input_fn({"id": np.arange(size)}, batch_size=4, num_epochs=epochs, shuffle=True, seed=5)
    shards = [_ids(fn(input_context=InputContext(n, i))) for i in range(n)]
    for i, ids in enumerate(shards):
        per_epoch = len(range(i, size, n))
        assert len(ids) == per_epoch * epochs
        for e in range(epochs):  # each epoch: the shards together hold every example once
            chunk = ids[e * per_epoch:(e + 1) * per_epoch]
            assert len(set(chunk)) == per_epoch
    for e in range(epochs):
        epoch_ids = [v for i, ids in enumerate(shards)
                     for v in ids[e * len(range(i, size, n)):(e + 1) * len(range(i, size, n))]]
        assert sorted(epoch_ids) == list(range(size))
    first_epochs = [ids[: len(range(i, size, n))] for i, ids in enumerate(shards)]
    second_epochs = [ids[len(range(i, size, n)): 2 * len(range(i, size, n))] for i, ids in enumerate(shards)]
    assert first_epochs != second_epochs  # reshuffled each epoch


def test_y_none_for_predict_with_dict_and_pandas():
    batches = list(numpy_input_fn({"a": np.arange(5.0)}, batch_size=2, shuffle=False)())
    assert [labels for _, labels in batches] == [None, None, None]
    assert [len(f["a"]) for f, _ in batches] == [2, 2, 1]
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0]})
    (features, labels), = list(pandas_input_fn(frame, batch_size=3, shuffle=False)())
    assert labels is None and features["a"].tolist() == [1.0, 2.0, 3.0]


def test_numeric_columns_are_converted_once_and_batches_index_them():
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    y = np.arange(10, dtype=np.int32)
    words = np.array([f"w{i}" for i in range(10)])
    input_fn = numpy_input_fn({"x": x, "s": words}, y, batch_size=4, num_epochs=2, shuffle=True, seed=3)
    first = input_fn()
    assert first._columns["x"] is input_fn()._columns["x"]  # the closure's tensors, not new copies
    seen = []
    for features, labels in first:
        assert features["x"].dtype == torch.float32 and labels.dtype == torch.int64
        assert isinstance(features["s"], np.ndarray)
        np.testing.assert_array_equal(features["x"][:, 0].numpy() / 2, labels.numpy())
        np.testing.assert_array_equal(features["s"], [f"w{i}" for i in labels.tolist()])
        seen += labels.tolist()
    # batches run across the epoch boundary (4 + 4 + 4 + 4 + 4 = 20 = 2 epochs)
    assert sorted(seen) == sorted(list(range(10)) * 2)


def test_tensor_batches_do_not_alias_the_arrays():
    x = np.zeros((6, 3), dtype=np.float32)
    features, _ = next(iter(numpy_input_fn(x, None, batch_size=6, shuffle=False)()))
    features += 1
    assert not x.any()


def test_loading_a_state_with_another_seed_after_iterating_uses_that_seed():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    seeded = numpy_input_fn({"x": x}, batch_size=4, num_epochs=None, shuffle=True, seed=7)()
    want = [next(iter(seeded))[0]["x"] for _ in range(2)]
    other = numpy_input_fn({"x": x}, batch_size=4, num_epochs=None, shuffle=True, seed=3)()
    next(iter(other))  # the epoch order of seed 3 is built
    other.load_state_dict(numpy_input_fn({"x": x}, batch_size=4, num_epochs=None, shuffle=True,
                                         seed=7)().state_dict())
    got = [next(iter(other))[0]["x"] for _ in range(2)]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(np.asarray(g), np.asarray(w))
