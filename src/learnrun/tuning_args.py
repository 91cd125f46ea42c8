"""Checks of :class:`learnrun.tuning.OptunaTuner`'s optional arguments (each error names the
argument, the value received and what to give instead); optuna is imported only when needed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_arguments", "check_config_overrides", "exception_types"]


def check_arguments(**kw: Any) -> None:
    """Type checks of OptunaTuner's optional arguments (each error names the argument)."""
    for name in ("study_name", "schedule"):
        value = kw[name]
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty string or None, got {value!r}")
    storage = kw["storage"]
    if isinstance(storage, str) and not storage.strip():
        raise ValueError("storage must be an optuna storage URL (e.g. 'sqlite:///study.db') or "
                         "None for <base_model_dir>/study.db, got ''")
    if storage is not None and not isinstance(storage, str):
        import optuna

        if not isinstance(storage, optuna.storages.BaseStorage):
            raise ValueError(f"storage must be a URL string or an optuna storage, got "
                             f"{type(storage).__name__} {storage!r}")
    seed = kw["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    hparams = kw["hparams"]
    if hparams is not None:
        from learnrun.hparams import HParams

        if not isinstance(hparams, (HParams, Mapping)):
            raise ValueError(f"hparams must be an HParams, a dict or None, got "
                             f"{type(hparams).__name__} {hparams!r}")
    run_config = kw["run_config"]
    if run_config is not None and not callable(getattr(run_config, "replace", None)):
        raise ValueError(f"run_config must be a learnrun.RunConfig or None, got "
                         f"{type(run_config).__name__} {run_config!r}")
    out = kw["out"]
    if out is not None and not callable(getattr(out, "write", None)):
        raise ValueError(f"out must be a writable text stream (e.g. sys.stdout) or None, got "
                         f"{type(out).__name__} {out!r}")
    for name, base in (("pruner", "BasePruner"), ("sampler", "BaseSampler")):
        value = kw[name]
        if value is None:
            continue
        import optuna

        module = optuna.pruners if name == "pruner" else optuna.samplers
        if not isinstance(value, getattr(module, base)):
            raise ValueError(f"{name} must be an optuna.{module.__name__.split('.')[-1]}."
                             f"{base} (e.g. {'MedianPruner()' if name == 'pruner' else 'TPESampler()'}"
                             f"), got {type(value).__name__} {value!r}")


def exception_types(catch: Any) -> tuple[type[BaseException], ...]:
    """``catch`` as a tuple of exception classes (one class is accepted too)."""
    items = (catch,) if isinstance(catch, type) else catch
    try:
        items = tuple(items)
    except TypeError:
        raise ValueError(f"catch must be an exception class or a tuple of them, got {catch!r}") \
            from None
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValueError(f"catch must hold exception classes, got {item!r} in {catch!r}")
    return items


def check_config_overrides(overrides: Any) -> None:
    """``config_overrides`` must map RunConfig argument names to values."""
    if overrides is None:
        return
    if not isinstance(overrides, Mapping):
        raise ValueError(f"config_overrides must be a dict of RunConfig arguments, got "
                         f"{type(overrides).__name__} {overrides!r}")
    import inspect

    from learnrun.run_config import RunConfig

    params = inspect.signature(RunConfig).parameters
    for key in overrides:
        if key not in params or key == "model_dir":
            valid = ", ".join(sorted(n for n in params if n != "model_dir"))
            raise ValueError(f"config_overrides: RunConfig has no argument {key!r} (model_dir "
                             f"is set per trial); valid keys: {valid}")
