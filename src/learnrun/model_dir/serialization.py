"""What goes into a checkpoint's files, in the form their formats accept; the RNG states.

* :func:`prepare_weights`: weights detached to CPU, shared or non-contiguous tensors cloned
  (safetensors refuses them).
* :func:`to_weights_only_safe`: training state converted to what
  ``torch.load(weights_only=True)`` loads (numpy values become tensors or numbers), or a
  :class:`~learnrun.errors.CheckpointError` naming the offending entry.
* :func:`capture_rng_state` / :func:`restore_rng_state`: the python, numpy, torch (and CUDA)
  RNG states, in a weights_only-safe form.
* :class:`Stager`: a copy of the training state in CPU memory (for asynchronous saves), into
  buffers reused from one save to the next.
* :func:`safetensors_parts`: the bytes of a ``.safetensors`` file as a header and one buffer
  per tensor, written without assembling the file in memory.

Used by :mod:`learnrun.model_dir.checkpoints` (which re-exports these names), the training
loop and ``learnrun.export``.
"""

from __future__ import annotations

import json
import logging
import random
import struct
from collections.abc import Mapping
from typing import Any

from learnrun.errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = ["Stager", "capture_rng_state", "check_weights", "prepare_weights", "restore_rng_state",
           "safetensors_parts", "to_weights_only_safe"]


def to_weights_only_safe(obj: Any, where: str) -> Any:
    """Convert ``obj`` to what ``torch.load(weights_only=True)`` accepts, or raise naming it."""
    import numpy as np
    import torch

    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype,
                                       torch.device, torch.Size)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError(f"Cannot checkpoint {where}: a numpy array of Python objects. "
                                  "Convert it to numbers first.")
        return torch.from_numpy(np.ascontiguousarray(obj)).clone()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: to_weights_only_safe(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_weights_only_safe(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, (list, tuple)):
        return [to_weights_only_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise CheckpointError(
        f"Cannot checkpoint {where}: a {type(obj).__module__}.{type(obj).__qualname__} is not "
        "loadable with torch.load(weights_only=True). Store plain containers, numbers, strings "
        "and tensors (e.g. return them from state_dict())."
    )


def check_weights(weights: Any) -> None:
    """Raise :class:`~learnrun.errors.CheckpointError` unless ``weights`` maps str -> tensor."""
    import torch

    if not isinstance(weights, Mapping):
        raise CheckpointError(f"weights must be a dict of name -> tensor, got {type(weights).__name__}.")
    for name, t in weights.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise CheckpointError(f"weights must map str -> torch.Tensor; entry {name!r} is "
                                  f"a {type(t).__name__}. Pass module.state_dict().")


def prepare_weights(weights: Mapping) -> dict:
    """Detach weights to CPU, cloning shared or non-contiguous tensors (safetensors needs it)."""
    import torch

    check_weights(weights)
    out: dict = {}
    seen: set[int] = set()
    for name, t in weights.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        storage = t.untyped_storage()
        whole = t.is_contiguous() and t.storage_offset() == 0 and \
            t.numel() * t.element_size() == storage.nbytes()
        ptr = storage.data_ptr()
        if not whole or (ptr in seen and t.numel() > 0):
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(ptr)
        out[name] = t
    return out


def capture_rng_state() -> dict:
    """Return the python, numpy, torch CPU (and CUDA) RNG states in a weights_only-safe form."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        # 625 ints as one tensor: as a list, torch.save and the weights_only check walk each
        # (made through numpy: 4x torch.tensor's speed on a tuple of ints)
        "python": {"version": version, "state": torch.from_numpy(np.array(internal, dtype=np.int64)),
                   "gauss_next": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    """Restore RNG states captured by :func:`capture_rng_state` (absent parts are skipped)."""
    import numpy as np
    import torch

    if "python" in state:
        p = state["python"]
        words = p["state"].tolist() if isinstance(p["state"], torch.Tensor) else p["state"]
        random.setstate((p["version"], tuple(int(x) for x in words), p["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = np.asarray(n["keys"].cpu().numpy() if isinstance(n["keys"], torch.Tensor) else n["keys"])
        np.random.set_state((n["kind"], keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = list(state["cuda"])
        count = torch.cuda.device_count()
        if len(cuda) != count:
            logger.warning("Checkpoint holds CUDA RNG states for %d devices, this process sees %d; "
                           "restoring the first %d.", len(cuda), count, min(len(cuda), count))
        for i, s in enumerate(cuda[:count]):
            torch.cuda.set_rng_state(s.cpu(), i)


class Stager:
    """Copy tensors (also inside dicts, lists and tuples) into CPU buffers owned by the stager.

    A buffer is reused by the next :meth:`stage` when the tensor at the same place has the same
    shape and dtype, so steady-state saves copy memory without allocating it. The staged copy
    stays valid until the next :meth:`stage`: a caller writes it out before staging again.
    Non-tensor values are deep-copied.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, Any] = {}
        self._used: set[tuple] = set()

    def stage(self, obj: Any) -> Any:
        """Return a copy of ``obj`` whose tensors live in this stager's CPU buffers."""
        import torch

        self._used = set()
        out = self._copy(obj, (), torch)
        for key in set(self._buffers) - self._used:  # places that no longer hold a tensor
            del self._buffers[key]
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # non_blocking device-to-host copies are complete
        return out

    def _copy(self, obj: Any, key: tuple, torch) -> Any:
        import copy

        if isinstance(obj, torch.Tensor):
            t = obj.detach()
            buf = self._buffers.get(key)
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
                pin = t.device.type == "cuda"
                buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
                self._buffers[key] = buf
            self._used.add(key)
            buf.copy_(t, non_blocking=t.device.type == "cuda")
            return buf
        if isinstance(obj, Mapping):
            return {k: self._copy(v, (*key, k), torch) for k, v in obj.items()}
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):
            return type(obj)(*(self._copy(v, (*key, i), torch) for i, v in enumerate(obj)))
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._copy(v, (*key, i), torch) for i, v in enumerate(obj))
        return copy.deepcopy(obj)


_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "complex64": "C64",
    "uint16": "U16", "uint32": "U32", "uint64": "U64",
}


def safetensors_parts(weights: Mapping, metadata: Mapping[str, str] | None = None) -> list:
    """The ``.safetensors`` encoding of ``weights`` as ``[header, buffer, buffer, ...]``.

    ``weights`` must come from :func:`prepare_weights` or a :class:`Stager` (CPU, contiguous,
    unshared). Each buffer is a view of a tensor's memory: writing the parts one after the
    other gives the file ``safetensors.torch.save_file`` would accept, with no copy.
    """
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    views = []
    offset = 0
    for name in sorted(weights):
        t = weights[name]
        dtype = _SAFETENSORS_DTYPES.get(str(t.dtype).removeprefix("torch."))
        if dtype is None:
            raise CheckpointError(f"Cannot checkpoint weight {name!r}: dtype {t.dtype} has no "
                                  "safetensors encoding. Convert it to a supported dtype.")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
        if size:
            flat = t.reshape(-1)
            views.append(memoryview(flat.view(_uint8()).numpy()))
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    return [struct.pack("<Q", len(encoded)) + encoded, *views]


def _uint8():
    import torch

    return torch.uint8
