"""Optimizers for canned estimators: TF names, factories, and one optimizer over several.

``optimizer`` may be a name (``'Adagrad'``, ``'Adam'``, ``'AdamW'``, ``'SGD'``, ``'RMSProp'``,
``'Adadelta'``, ``'Ftrl'``; case-insensitive), a ``torch.optim.Optimizer`` subclass, or a
factory ``params -> torch.optim.Optimizer``. PyTorch has no FTRL: ``'Ftrl'`` (TF's default for
linear models) uses ``torch.optim.Adagrad``, which FTRL-Proximal reduces to without L1/L2
regularization (per-coordinate ``1/sqrt(sum g^2)`` learning rates).

Names and classes get torch's fastest implementation for the device the model trains on
(``device_type``): the fused kernels of Adam, AdamW (any device torch has them for) and
Adagrad (CPU only), about 3x faster per step than the single-tensor loop torch defaults to
on CPU; the others keep torch's default. A factory builds its optimizer as it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

_NAMES: dict[str, type[torch.optim.Optimizer]] = {
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adadelta": torch.optim.Adadelta,
    "ftrl": torch.optim.Adagrad,
}
_DISPLAY_NAMES = ["Adagrad", "Adam", "AdamW", "SGD", "RMSProp", "Adadelta", "Ftrl"]


def check_optimizer(optimizer: Any, what: str = "optimizer") -> None:
    """Raise now (at construction, as early as possible) for an optimizer that cannot be built.

    Accepts a known name, a ``torch.optim.Optimizer`` subclass or a callable factory; the
    factory's result is checked when the model is built.
    """
    if isinstance(optimizer, str):
        if optimizer.lower() not in _NAMES:
            raise ValueError(
                f"Unsupported optimizer name: {optimizer}. Supported names are: {_DISPLAY_NAMES} "
                f"(for {what}), or pass a factory `params -> torch.optim.Optimizer`."
            )
        return
    if isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"{what} must be a name or a factory `params -> torch.optim.Optimizer`, not an "
            "optimizer instance (the model is built inside the estimator). Pass e.g. "
            "`lambda params: torch.optim.Adam(params, lr=0.01)`."
        )
    if not callable(optimizer):
        raise TypeError(
            f"{what} must be a name, a torch.optim.Optimizer class or a factory, got "
            f"{type(optimizer).__name__}: {optimizer!r}."
        )


def check_learning_rate(learning_rate: Any, what: str = "learning_rate") -> float | None:
    """``learning_rate`` as a positive float, or None (the model's default); else ValueError."""
    if learning_rate is None:
        return None
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"{what} must be > 0, got {learning_rate!r}.")
    return float(learning_rate)


#: Optimizer classes with a fused kernel, and the device types it runs on (None: every device
#: torch has fused kernels for).
_FUSED: dict[type[torch.optim.Optimizer], frozenset[str] | None] = {
    torch.optim.Adam: None,
    torch.optim.AdamW: None,
    torch.optim.Adagrad: frozenset({"cpu"}),
}


def fast_options(cls: type[torch.optim.Optimizer], params: Sequence[torch.nn.Parameter],
                 device_type: str | None) -> dict[str, Any]:
    """Constructor options that select ``cls``'s fastest implementation on ``device_type``.

    ``{"fused": True}`` for the classes with a fused kernel on that device when every
    parameter is a floating-point tensor; ``{}`` (torch's default) otherwise. ``device_type``
    None means the parameters' own device.
    """
    if cls not in _FUSED or not params:
        return {}
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    types = {device_type} if device_type else {p.device.type for p in params}
    allowed = _FUSED[cls]
    supported = set(_get_fused_kernels_supported_devices())
    if allowed is not None:
        supported &= allowed
    if not types <= supported or not all(torch.is_floating_point(p) for p in params):
        return {}
    return {"fused": True}


def make_optimizer(optimizer: Any, params: Iterable[torch.nn.Parameter],
                   learning_rate: float | None, default_learning_rate: float,
                   device_type: str | None = None) -> torch.optim.Optimizer:
    """Build ``optimizer`` (name, class or factory) over ``params``.

    ``learning_rate`` (default ``default_learning_rate``) applies to names and classes; a
    factory sets its own. Names and classes get :func:`fast_options` for ``device_type``
    (the device the model will train on; None: where the parameters are now).
    """
    check_optimizer(optimizer)
    params = list(params)
    learning_rate = check_learning_rate(learning_rate)
    lr = default_learning_rate if learning_rate is None else learning_rate
    if isinstance(optimizer, str):
        cls = _NAMES[optimizer.lower()]
        return cls(params, lr=lr, **fast_options(cls, params, device_type))
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(params, lr=lr, **fast_options(optimizer, params, device_type))
    built = optimizer(params)
    if not isinstance(built, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer factory {optimizer!r} must return a torch.optim.Optimizer, got "
            f"{type(built).__name__}."
        )
    return built


def optimizer_class(optimizer: Any) -> type[torch.optim.Optimizer] | None:
    """The class a name or class builds (``'Ftrl'``: Adagrad); None for a factory."""
    if isinstance(optimizer, str):
        return _NAMES[optimizer.lower()]
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer
    return None


def make_part_optimizers(parts: Sequence[tuple[Any, Iterable[torch.nn.Parameter], float | None, float]],
                         device_type: str | None = None) -> torch.optim.Optimizer:
    """One optimizer for the parts of a model (the DNN and linear parts of a combined model).

    ``parts``: ``(optimizer, params, learning_rate, default_learning_rate)`` per part, as
    :func:`make_optimizer` takes them. When every part names the same class (``'Ftrl'`` and
    ``'Adagrad'`` both build Adagrad, as TF's defaults for the combined models), the result
    is one optimizer of that class with one parameter group per learning rate (the parts'
    groups in order, consecutive parts with the same rate in one group): the same update as
    one optimizer per part, with one ``step`` call and one fused kernel launch per group
    instead of one optimizer, its hooks and its kernels per part. Otherwise (different
    classes, factories) each part gets its own, stepped together by :class:`MultiOptimizer`.
    A checkpoint written with another grouping of the same parameters (one optimizer per
    part, or other learning rates) loads into it.
    """
    if not parts:
        raise ValueError("make_part_optimizers needs at least one part.")
    classes = {optimizer_class(optimizer) for optimizer, *_ in parts}
    if len(parts) == 1 or None in classes or len(classes) != 1:
        built = [make_optimizer(opt, params, lr, default, device_type)
                 for opt, params, lr, default in parts]
        return built[0] if len(built) == 1 else MultiOptimizer(built)
    cls = classes.pop()
    groups: list[dict[str, Any]] = []
    for _, params, learning_rate, default in parts:
        learning_rate = check_learning_rate(learning_rate)
        lr = default if learning_rate is None else learning_rate
        if groups and groups[-1]["lr"] == lr:
            groups[-1]["params"].extend(params)
        else:
            groups.append({"params": list(params), "lr": lr})
    every = [p for group in groups for p in group["params"]]
    shared = cls(groups, lr=groups[0]["lr"], **fast_options(cls, every, device_type))
    shared.register_load_state_dict_pre_hook(_regroup_state)
    return shared


def _regroup_state(optimizer: torch.optim.Optimizer, state_dict: Any) -> Any:
    """Load pre-hook: a state of the same parameters in the same order, grouped differently
    (a :class:`MultiOptimizer` state with one optimizer per part, or other groups), as a state
    with ``optimizer``'s groups; each group takes the saved options of its first parameter.
    Any other state is returned as it is (torch then reports what does not match).
    """
    if not isinstance(state_dict, dict):
        return state_dict
    saved = state_dict.get("optimizers") if "param_groups" not in state_dict else [state_dict]
    if not isinstance(saved, list) or not all(isinstance(s, dict) and "param_groups" in s for s in saved):
        return state_dict
    options: list[dict[str, Any]] = []  # per parameter, in order
    states: list[Any] = []
    for part in saved:
        by_id = {int(k): v for k, v in part.get("state", {}).items()}
        for group in part["param_groups"]:
            for pid in group["params"]:
                options.append({k: v for k, v in group.items() if k != "params"})
                states.append(by_id.get(int(pid)))
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    same = len(saved) == 1 and [len(g["params"]) for g in saved[0]["param_groups"]] == sizes
    if same or len(options) != sum(sizes):
        return state_dict
    regrouped: dict[str, Any] = {"state": {}, "param_groups": []}
    start = 0
    for size in sizes:
        regrouped["param_groups"].append({**options[start], "params": list(range(start, start + size))})
        start += size
    regrouped["state"] = {i: st for i, st in enumerate(states) if st is not None}
    return regrouped


class MultiOptimizer(torch.optim.Optimizer):
    """Several optimizers stepped as one (the linear and DNN parts of a combined model).

    ``param_groups`` is the concatenation of the children's groups (the same dicts, so LR
    schedulers and gradient clipping reach every part); the state dict holds each child's.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("MultiOptimizer needs at least one optimizer.")
        self.optimizers = list(optimizers)
        params = [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.param_groups = [g for opt in self.optimizers for g in opt.param_groups]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        states = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(
                f"MultiOptimizer state holds {len(states) if isinstance(states, list) else 'no'} "
                f"optimizer states but this model has {len(self.optimizers)} optimizers."
            )
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)
