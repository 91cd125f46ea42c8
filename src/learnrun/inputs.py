"""Input functions over in-memory data: ``numpy_input_fn`` and ``pandas_input_fn``.

Both follow TF's ``tf.estimator.inputs`` argument checks and return an ``input_fn`` for
``Estimator.train/evaluate/predict``. The ``input_fn`` may be given ``input_context``
(:class:`learnrun.distributed.base.InputContext`); it then reads only its shard: with ``n``
pipelines, the example at position ``i`` of an epoch's order goes to pipeline ``i % n``, so no
example is lost or read twice. Shuffling draws one permutation per epoch from
``(seed, epoch)``, identical in every pipeline.

The ``input_fn`` returns an :class:`ArrayBatches` iterable of ``(features, labels)``:
``features`` is a tensor (array ``x``) or a dict of tensors (dict ``x`` / DataFrame);
floats become float32, integers int64, booleans bool, and strings or objects stay numpy
arrays (for categorical feature columns). Numeric columns are converted to tensors once, when
the ``input_fn`` is first called (no copy for float32, int64 and bool arrays: the tensors share
the arrays' memory), and each batch indexes them directly. ``labels`` is ``None`` when ``y`` is ``None``.
Batches run across epoch boundaries, as in TF; only the last batch may be smaller.
``state_dict()`` / ``load_state_dict()`` save the epoch, the position in it and the seed, so a
run restored from a checkpoint continues with the exact next batch.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

_DIRECT_KEY = "__direct_np_input__"
_TARGET_KEY = "__target_key__"


def _check_common(batch_size: Any, num_epochs: Any, shuffle: Any, queue_capacity: Any,
                  num_threads: Any, seed: Any) -> None:
    if not isinstance(shuffle, bool):
        raise ValueError(
            "shuffle must be provided explicitly as a bool, it is now set to "
            f"{shuffle}. Pass shuffle=True for training data, shuffle=False for evaluation "
            "and prediction."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if num_epochs is not None and (
        isinstance(num_epochs, bool) or not isinstance(num_epochs, (int, np.integer)) or num_epochs < 1
    ):
        raise ValueError(
            f"num_epochs must be a positive integer or None (repeat forever), got {num_epochs!r}."
        )
    for name, value in (("queue_capacity", queue_capacity), ("num_threads", num_threads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"seed must be an integer or None, got {seed!r}.")


def _validate_and_convert_features(x: Any) -> collections.OrderedDict:
    if isinstance(x, Mapping):
        if not x:
            raise ValueError("x cannot be an empty dict")
        return collections.OrderedDict(
            (k, _as_array(v, f"x[{k!r}]")) for k, v in sorted(x.items(), key=lambda t: t[0])
        )
    if isinstance(x, np.ndarray):
        if x.size == 0:
            raise ValueError("x cannot be an empty array")
        return collections.OrderedDict({_DIRECT_KEY: x})
    raise TypeError(f"x must be a dict or array; got {type(x).__name__}")


def _as_array(value: Any, what: str) -> np.ndarray:
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.ndim == 0:
        raise ValueError(
            f"{what} must hold one entry per example (an array with a batch dimension), "
            f"got a scalar {value!r}."
        )
    return arr


def _to_batch_value(arr: np.ndarray) -> Any:
    """Turn a column (or a slice of one) into what a batch holds (tensor or numpy strings)."""
    import torch

    kind = arr.dtype.kind
    if kind == "f":
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    elif kind in "iu":
        arr = np.ascontiguousarray(arr, dtype=np.int64)
    elif kind == "b":
        arr = np.ascontiguousarray(arr)
    else:
        return arr  # strings / objects stay numpy for categorical columns
    # torch wants writable memory; batches are indexed copies, so nothing writes to it anyway
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


class ArrayBatches:
    """An iterable of ``(features, labels)`` batches over in-memory columns, with resumable state.

    Iterating continues from the current state; ``state_dict()`` describes the next batch to
    be produced, so saving it after a training step and loading it into a fresh instance
    yields exactly the batches that had not been produced yet.
    """

    def __init__(self, columns: Mapping[str, np.ndarray], feature_keys: list[str],
                 target: str | list[str] | None, *, batch_size: int, num_epochs: int | None,
                 shuffle: bool, seed: int, num_input_pipelines: int = 1,
                 input_pipeline_id: int = 0) -> None:
        if num_input_pipelines < 1 or not 0 <= input_pipeline_id < num_input_pipelines:
            raise ValueError(
                f"input_context has input_pipeline_id={input_pipeline_id} and "
                f"num_input_pipelines={num_input_pipelines}; the id must be in "
                "[0, num_input_pipelines)."
            )
        # tensors (numeric) or numpy arrays (strings, objects)
        self._columns = {k: _to_batch_value(v) if isinstance(v, np.ndarray) else v
                         for k, v in columns.items()}
        self._feature_keys = feature_keys
        self._target = target
        self._batch_size = int(batch_size)
        self._num_epochs = num_epochs
        self._shuffle = shuffle
        self._seed = int(seed)
        self._n = num_input_pipelines
        self._id = input_pipeline_id
        self._num_examples = len(next(iter(self._columns.values())))
        self._shard_size = len(range(self._id, self._num_examples, self._n))
        self.epoch = 0
        self.position = 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._torch_order: tuple[int, Any] | None = None
        self._all_tensors = all(not isinstance(v, np.ndarray) for v in self._columns.values())
        # tensor columns (the index is then a tensor too) and one label column or none: what
        # _take would do for each column (index_select), decided once: (the direct feature's
        # column or None, [(key, column)], the label's column or None)
        self._tensor_plan = None
        if self._all_tensors and (target is None or isinstance(target, str)):
            cols = self._columns
            direct = cols[_DIRECT_KEY] if feature_keys == [_DIRECT_KEY] else None
            self._tensor_plan = (direct, [(k, cols[k]) for k in feature_keys],
                                 None if target is None else cols[target])

    @property
    def shard_size(self) -> int:
        """Examples this pipeline reads per epoch."""
        return self._shard_size

    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is not None and self._order_cache[0] == epoch:
            return self._order_cache[1]
        if self._shuffle:
            perm = np.random.default_rng([self._seed, epoch]).permutation(self._num_examples)
        else:
            perm = np.arange(self._num_examples)
        order = perm[self._id::self._n]
        self._order_cache = (epoch, order)
        return order

    def _exhausted(self) -> bool:
        return self._shard_size == 0 or (
            self._num_epochs is not None and self.epoch >= self._num_epochs
        )

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self

    def _epoch_order(self, epoch: int) -> Any:
        """The epoch's order as a tensor when every column is one, else as numpy."""
        if not self._all_tensors:
            return self._order(epoch)
        if self._torch_order is None or self._torch_order[0] != epoch:
            import torch

            self._torch_order = (epoch, torch.from_numpy(self._order(epoch)))
        return self._torch_order[1]

    def __next__(self) -> tuple[Any, Any]:
        position, wanted = self.position, self._batch_size
        cached = self._torch_order
        if (cached is not None and cached[0] == self.epoch and position + wanted < self._shard_size
                and (self._num_epochs is None or self.epoch < self._num_epochs)):
            # the common case, a batch inside the epoch of tensor columns: one slice of the
            # epoch's order and one index_select per column, nothing else
            self.position = position + wanted
            return self._make_batch(cached[1][position:position + wanted])
        picked: list[Any] = []
        wanted = self._batch_size
        size = self._shard_size  # every epoch's order has this length
        while wanted > 0 and not self._exhausted():
            order = self._epoch_order(self.epoch)
            count = min(wanted, size - self.position)
            picked.append(order[self.position:self.position + count])
            wanted -= count
            self.position += count
            if self.position >= size:
                self.epoch += 1
                self.position = 0
        if not picked:
            raise StopIteration
        if len(picked) == 1:
            idx = picked[0]
        elif self._all_tensors:
            import torch

            idx = torch.cat(picked)
        else:
            idx = np.concatenate(picked)
        return self._make_batch(idx)

    def _take(self, key: str, idx: Any) -> Any:
        column = self._columns[key]
        if isinstance(column, np.ndarray):  # strings / objects: numpy indexing
            return column[np.asarray(idx)]
        if isinstance(idx, np.ndarray):  # a tensor column among numpy ones
            return column[idx]
        return column.index_select(0, idx)  # a third cheaper than column[idx] (same copy)

    def _make_batch(self, idx: Any) -> tuple[Any, Any]:
        plan = self._tensor_plan
        if plan is not None:  # no _take call and no comprehension per batch
            direct, feature_columns, label_column = plan
            if direct is not None:
                features: Any = direct.index_select(0, idx)
            else:
                features = {}
                for key, column in feature_columns:
                    features[key] = column.index_select(0, idx)
            return features, None if label_column is None else label_column.index_select(0, idx)
        take = self._take
        if self._feature_keys == [_DIRECT_KEY]:
            features = take(_DIRECT_KEY, idx)
        else:
            features = {k: take(k, idx) for k in self._feature_keys}
        target = self._target
        if target is None:
            labels = None
        elif isinstance(target, str):
            labels = take(target, idx)
        else:
            labels = {k: take(k, idx) for k in target}
        return features, labels

    def state_dict(self) -> dict[str, int]:
        """Where the next batch starts: ``{"epoch", "position", "seed"}`` (plus the shard)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self._seed,
                "num_input_pipelines": self._n, "input_pipeline_id": self._id}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict()``; the shard layout must be the same as when saved."""
        missing = {"epoch", "position", "seed"} - set(state)
        if missing:
            raise ValueError(
                f"input state is missing {sorted(missing)}; got {dict(state)!r}. Pass a dict "
                "produced by ArrayBatches.state_dict()."
            )
        saved_layout = (state.get("num_input_pipelines", self._n), state.get("input_pipeline_id", self._id))
        if saved_layout != (self._n, self._id):
            raise ValueError(
                f"input state was saved for pipeline {saved_layout[1]} of {saved_layout[0]} but "
                f"this input_fn reads pipeline {self._id} of {self._n}; the examples would be "
                "shuffled differently. Resume with the same number of input pipelines."
            )
        position = int(state["position"])
        if not 0 <= position <= max(self.shard_size, 0):
            raise ValueError(
                f"input state position {position} is outside this shard of {self.shard_size} "
                "examples; the data changed since the state was saved."
            )
        self.epoch = int(state["epoch"])
        self.position = position
        self._seed = int(state["seed"])
        self._order_cache = None
        self._torch_order = None


def _make_input_fn(columns: collections.OrderedDict, feature_keys: list[str],
                   target: str | list[str] | None, batch_size: int, num_epochs: int | None,
                   shuffle: bool, seed: int | None) -> Callable[..., ArrayBatches]:
    converted: dict[str, Any] = {}

    def input_fn(input_context: Any = None, config: Any = None) -> ArrayBatches:
        """Return the batches of this pipeline's shard (all data without ``input_context``)."""
        if not converted:  # once, on the first call: numeric columns become tensors
            converted.update({k: _to_batch_value(v) for k, v in columns.items()})
        n = getattr(input_context, "num_input_pipelines", 1) if input_context is not None else 1
        pid = getattr(input_context, "input_pipeline_id", 0) if input_context is not None else 0
        use_seed = seed
        if use_seed is None:
            use_seed = config.tf_random_seed if config is not None else None
        return ArrayBatches(converted, feature_keys, target, batch_size=batch_size,
                            num_epochs=num_epochs, shuffle=shuffle,
                            seed=0 if use_seed is None else int(use_seed),
                            num_input_pipelines=int(n), input_pipeline_id=int(pid))

    input_fn.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("input_context", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
    ])
    return input_fn


def _check_lengths(columns: Mapping[str, np.ndarray], feature_keys: list[str],
                   target: str | list[str] | None, y: Any) -> None:
    if len({len(v) for v in columns.values()}) == 1:
        return
    shapes_x = {k: columns[k].shape for k in feature_keys}
    if target is None:
        shape_y: Any = None
    elif isinstance(target, str):
        shape_y = np.shape(y)
    else:
        shape_y = {k: columns[k].shape for k in target}
    names = {k: ("x" if k == _DIRECT_KEY else f"x[{k!r}]") for k in feature_keys}
    if isinstance(target, str):
        names[target] = "y"
    elif target is not None:
        names.update({k: f"y[{k!r}]" for k in target})
    first = next(iter(names))
    odd = [f"{names[k]} has {len(columns[k])}" for k in names if len(columns[k]) != len(columns[first])]
    raise ValueError(
        "Length of tensors in x and y is mismatched. All elements in x and y must have the "
        f"same length.\nShapes in x: {shapes_x}\nShapes in y: {shape_y}\n"
        f"{'; '.join(odd)} examples but {names[first]} has {len(columns[first])}; give every "
        "array one entry per example.\n"
    )


def numpy_input_fn(x: Any, y: Any = None, batch_size: int = 128, num_epochs: int | None = 1,
                   shuffle: bool | None = None, queue_capacity: int = 1000, num_threads: int = 1,
                   seed: int | None = None) -> Callable[..., ArrayBatches]:
    """Return an ``input_fn`` that feeds dicts of numpy arrays (or one array) to a model.

    Args:
      x: a numpy array (features are then one tensor) or a dict of name -> array.
      y: labels: an array, a dict of name -> array, or None (prediction).
      batch_size: examples per batch.
      num_epochs: passes over the data; None repeats forever.
      shuffle: required: True to shuffle every epoch (seeded, the same in every pipeline).
      queue_capacity, num_threads: accepted for TF compatibility and validated; data is indexed
        directly, so no queue or thread is used.
      seed: the shuffle seed; None uses ``config.tf_random_seed`` when the Estimator passes a
        config, else 0 (a fixed seed keeps shards disjoint and resumed runs exact).

    Raises:
      ValueError: shuffle not a bool, empty x or y, keys in both x and y, lengths that differ.
      TypeError: x neither a dict nor an array.
    """
    _check_common(batch_size, num_epochs, shuffle, queue_capacity, num_threads, seed)
    columns = _validate_and_convert_features(x)
    feature_keys = list(columns)
    target: str | list[str] | None
    if y is None:
        target = None
    elif isinstance(y, Mapping):
        if not y:
            raise ValueError("y cannot be empty dict, use None instead.")
        target = sorted(y)
        duplicate_keys = set(feature_keys) & set(target)
        if duplicate_keys:
            raise ValueError(
                f"{len(duplicate_keys)} duplicate keys are found in both x and y: {duplicate_keys}"
            )
        for k in target:
            columns[k] = _as_array(y[k], f"y[{k!r}]")
    else:
        target = _TARGET_KEY
        while target in columns:
            target += "_n"
        columns[target] = _as_array(y, "y")
    _check_lengths(columns, feature_keys, target, y)
    return _make_input_fn(columns, feature_keys, target, batch_size, num_epochs, shuffle, seed)


def pandas_input_fn(x: Any, y: Any = None, batch_size: int = 128, num_epochs: int | None = 1,
                    shuffle: bool | None = None, queue_capacity: int = 1000,
                    num_threads: int = 1, target_column: str = "target",
                    seed: int | None = None) -> Callable[..., ArrayBatches]:
    """Return an ``input_fn`` that feeds a pandas DataFrame (features dict keyed by column).

    Args:
      x: a ``pandas.DataFrame``; each column becomes a feature (object/string columns stay
        numpy arrays of strings for categorical feature columns).
      y: a ``pandas.Series`` (labels a tensor), a DataFrame (labels a dict) or None; its
        index must equal ``x``'s.
      target_column: the name y takes among the columns; it must not be a column of x.
      batch_size, num_epochs, shuffle, queue_capacity, num_threads, seed: as in
        :func:`numpy_input_fn`.

    Raises:
      TypeError: pandas is not installed, or target_column is not a string.
      ValueError: shuffle not a bool, target_column already in x, indexes of x and y differ.
    """
    try:
        import pandas as pd
    except ImportError:
        raise TypeError(
            "pandas_input_fn should not be called without pandas installed. Install it with "
            "`pip install pandas` (or `pip install learnrun[pandas]`)."
        ) from None
    _check_common(batch_size, num_epochs, shuffle, queue_capacity, num_threads, seed)
    if not isinstance(target_column, str):
        raise TypeError("target_column must be a string type")
    if not isinstance(x, pd.DataFrame):
        raise TypeError(f"x must be a pandas.DataFrame; got {type(x).__name__}.")
    if x.shape[1] == 0 or len(x) == 0:
        raise ValueError(f"x cannot be an empty DataFrame; got shape {x.shape}.")
    columns: collections.OrderedDict = collections.OrderedDict(
        (str(c), x[c].to_numpy()) for c in sorted(x.columns, key=str)
    )
    feature_keys = list(columns)
    target: str | list[str] | None = None
    if y is not None:
        if target_column in x:
            raise ValueError(
                f"Cannot use name {target_column} for target column: DataFrame already has a "
                f"column with that name: {x.columns}"
            )
        if not hasattr(y, "index") or not np.array_equal(x.index, y.index):
            raise ValueError(
                f"Index for x and y are mismatched.\nIndex for x: {x.index}\n"
                f"Index for y: {getattr(y, 'index', None)}\n"
            )
        if isinstance(y, pd.DataFrame):
            target = []
            for c in y.columns:
                key = str(c)
                while key in columns:
                    key += "_n"
                columns[key] = y[c].to_numpy()
                target.append(key)
        else:
            target = target_column
            columns[target] = np.asarray(y)
    return _make_input_fn(columns, feature_keys, target, batch_size, num_epochs, shuffle, seed)
