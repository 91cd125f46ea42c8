"""Which arguments a user's function takes: the one place learnrun inspects signatures.

learnrun calls ``model_fn``, ``input_fn``, export functions and hook classes with only the
arguments they name (or all of them when they take ``**kwargs``), as TensorFlow did.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["accepted_args", "accepts", "call_with_accepted", "parameter_names",
           "keyword_arguments", "required_parameters"]


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return None


def accepted_args(fn: Callable[..., Any], names: Iterable[str], *,
                  if_unknown: bool = False) -> set[str]:
    """The subset of ``names`` that ``fn`` accepts as keyword arguments.

    All of them when ``fn`` takes ``**kwargs``; all or none (``if_unknown``) when the signature
    cannot be read.
    """
    names = tuple(names)
    params = _parameters(fn)
    if params is None:
        return set(names) if if_unknown else set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return set(names)
    return {n for n in names
            if n in params and params[n].kind is not inspect.Parameter.POSITIONAL_ONLY}


def accepts(fn: Callable[..., Any], name: str, *, if_unknown: bool = True) -> bool:
    """True when ``fn`` can be called with keyword ``name`` (declared or via ``**kwargs``)."""
    return name in accepted_args(fn, (name,), if_unknown=if_unknown)


def call_with_accepted(fn: Callable[..., Any], available: Mapping[str, Any]) -> Any:
    """Call ``fn`` with the entries of ``available`` that it accepts as keyword arguments."""
    return fn(**{n: available[n] for n in accepted_args(fn, available)})


def parameter_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``fn``'s parameters, in order (empty when they cannot be read)."""
    params = _parameters(fn)
    return tuple(params) if params is not None else ()


def keyword_arguments(cls: Callable[..., Any]) -> tuple[str, ...]:
    """The named arguments of ``cls`` (a class or function), ``*args``/``**kwargs`` left out."""
    params = _parameters(cls) or {}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(n for n, p in params.items() if p.kind not in variadic)


def required_parameters(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``fn``'s parameters without a default, ``*args``/``**kwargs`` left out.

    Empty when the signature cannot be read.
    """
    params = _parameters(fn) or {}
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return tuple(n for n, p in params.items()
                 if p.kind not in variadic and p.default is inspect.Parameter.empty)
