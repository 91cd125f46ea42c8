"""What one step of the Estimator's loops needs: input, batches, placement, precision, weights.

Helpers shared by :mod:`learnrun.estimator.train_loop`, :mod:`learnrun.estimator.eval_loop`
and :mod:`learnrun.estimator.estimator`: calling ``input_fn``, splitting and moving batches
(and back to numpy), describing them in errors, mixed precision (autocast and the fp16
gradient scaler), RNG forks, and loading checkpoint weights (restore and warm start).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from learnrun.errors import CheckpointError
from learnrun.model_dir import checkpoints as ckpt
from learnrun.signatures import call_with_accepted

logger = logging.getLogger(__name__)

#: The float dtypes numpy has; others (bfloat16) are returned as float32.
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def call_input_fn(input_fn, mode: str, params: Any, config: Any, input_context: Any):
    """Call ``input_fn`` with whichever of ``params``, ``config``, ``mode``, ``input_context`` it names."""
    if not callable(input_fn):
        raise TypeError(f"`input_fn` must be callable, given: {input_fn!r}")
    result = call_with_accepted(input_fn, {"params": params, "config": config, "mode": mode,
                                           "input_context": input_context})
    if result is None or not hasattr(result, "__iter__"):
        raise TypeError(f"input_fn must return an iterable of (features, labels) batches (a "
                        f"DataLoader, a generator, a list), got {type(result).__name__}: {result!r:.80}.")
    return result


class RNGFork:
    """Save the python/numpy/torch RNG states on entry and put them back on exit."""

    def __enter__(self) -> RNGFork:
        self._state = ckpt.capture_rng_state()
        return self

    def __exit__(self, *exc) -> None:
        ckpt.restore_rng_state(self._state)


def autocast_context(config: Any, device):
    """``torch.autocast`` for ``config.precision`` ("bf16-mixed", "16-mixed"), else a no-op."""
    precision = config.precision
    if precision in (None, "32", "32-true", 32):
        return contextlib.nullcontext()
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        if device.type != "cuda":
            raise ValueError(f"precision='16-mixed' needs a CUDA device, got {device}. Use "
                             "precision='bf16-mixed' on CPU.")
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    raise ValueError(f"Unknown precision {precision!r}: use None/'32', 'bf16-mixed' or '16-mixed'.")


def make_grad_scaler(config: Any, device):
    """The fp16 gradient scaler for ``precision="16-mixed"`` on CUDA, else None."""
    if config.precision == "16-mixed" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def to_device(obj: Any, device) -> Any:
    """Move tensors (also inside dicts, lists and tuples) to ``device``."""
    if type(obj) is torch.Tensor:  # the common case first
        return obj if obj.device == device else obj.to(device, non_blocking=True)
    if hasattr(obj, "to") and hasattr(obj, "device"):
        return obj.to(device, non_blocking=True) if obj.device != device else obj
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj) if not hasattr(obj, "_fields") \
            else type(obj)(*(to_device(v, device) for v in obj))
    return obj


def to_numpy(value: Any) -> Any:
    """A tensor as a numpy array (floats numpy lacks, such as bfloat16, as float32); else as is."""
    if hasattr(value, "detach"):
        value = value.detach()
        if value.dtype.is_floating_point and value.dtype not in _NUMPY_FLOATS:
            value = value.float()
        return value.cpu().numpy()
    return value


def split_batch(batch: Any, what: str) -> tuple[Any, Any]:
    """``(features, labels)`` from a batch, or a clear error."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError(f"{what}: each batch of input_fn must be a (features, labels) pair, got "
                     f"{type(batch).__name__}{f' of length {len(batch)}' if hasattr(batch, '__len__') else ''}. "
                     "Make input_fn yield (features, labels).")


def describe(obj: Any) -> str:
    """A short description of a batch element: dtype and shape of tensors (also nested)."""
    if hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return f"{type(obj).__name__}(dtype={obj.dtype}, shape={tuple(obj.shape)})"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in list(obj.items())[:8]) + "}"
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__ + "(" + ", ".join(describe(v) for v in obj[:8]) + ")"
    return f"{type(obj).__name__}"


def forward(module, features: Any, what: str, step: int | None = None) -> Any:
    """``module(features)``; a dtype/shape error names ``what`` (and ``step``) and the input."""
    try:
        return module(features)
    except (RuntimeError, TypeError, ValueError) as exc:
        if type(exc) not in (RuntimeError, TypeError, ValueError):
            raise
        if step is not None:
            what = f"{what} {step}"
        raise type(exc)(f"{what}: the model failed on the features of this batch, "
                        f"received {describe(features)}: {exc}. Check that input_fn yields "
                        "features of the dtype and shape the model expects.") from exc


def load_weights(module, weights: dict, path: str, strict: bool = True) -> None:
    """Load checkpoint ``weights`` into ``module`` with a clear error on mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"Checkpoint {path} does not match the model built by model_fn: missing "
            f"{missing[:10]}, unexpected {unexpected[:10]}. Did model_fn change? Use a new "
            "model_dir, or warm_start_from with vars_to_warm_start to load a subset.")
    for name, value in weights.items():
        if name in own and tuple(own[name].shape) != tuple(value.shape):
            hint = ("Leave it out of WarmStartSettings.vars_to_warm_start." if not strict else
                    "Did model_fn change? Use a new model_dir.")
            raise CheckpointError(f"Checkpoint {path}: {name} has shape {tuple(value.shape)}, "
                                  f"the model's is {tuple(own[name].shape)}. {hint}")
    module.load_state_dict(weights, strict=strict)


def warm_start(module, settings) -> None:
    """Copy the weights matching ``settings.vars_to_warm_start`` from another run."""
    path = ckpt.resolve_checkpoint(settings.ckpt_to_initialize_from)
    if path is None:
        raise CheckpointError(f"warm_start_from={settings.ckpt_to_initialize_from!r} holds no "
                              "checkpoint. Point it at a ckpt-<step> directory or a trained model_dir.")
    loaded = ckpt.load_checkpoint(path)
    selected = {k: v for k, v in loaded.weights.items()
                if k in module.state_dict() and any(p.match(k) for p in settings.vars_to_warm_start)}
    if not selected:
        raise CheckpointError(f"Warm start from {path}: no weight matched {[p.pattern for p in settings.vars_to_warm_start]} "
                              f"among the model's {sorted(module.state_dict())[:10]}.")
    load_weights(module, selected, path, strict=False)
    logger.info("Warm-started %d weights from %s.", len(selected), path)
