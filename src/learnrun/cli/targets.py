"""TARGET of ``learnrun run``/``tune``: a built-in experiment, ``package.module:fn`` or ``file.py[:fn]``."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from learnrun.errors import CLIError
from learnrun.examples import EXAMPLES

DEFAULT_FUNCTION = "experiment_fn"


@dataclasses.dataclass
class LoadedTarget:
    """An experiment_fn resolved from a TARGET, with what its module offers besides."""

    name: str
    description: str
    experiment_fn: Callable[..., Any]
    default_hparams: Callable[[], Any] | None = None
    default_search_space: str | None = None
    default_model_dir: str | None = None


# --------------------------------------------------------------------------- targets


def _builtin_examples() -> dict[str, str]:
    return dict(EXAMPLES)


def _import_file(path: str) -> Any:
    path = os.path.abspath(path)
    name = "_learnrun_target_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot load {path!r} as a Python module; TARGET files must end in .py")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(path)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # lets the file import its sibling modules
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise CLIError(f"importing {path!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(name: str, target: str) -> Any:
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `python -m`-like: modules in the working directory
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise CLIError(
                f"unknown TARGET {target!r}: no module named {exc.name!r}; use "
                "package.module:function, path/to/file.py[:function] or a built-in experiment "
                f"({', '.join(sorted(_builtin_examples())) or 'none installed'})"
            ) from exc
        raise CLIError(f"importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise CLIError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from exc


def _module_extras(module: Any, fn: Any) -> tuple[Callable[[], Any] | None, str | None]:
    hp = getattr(fn, "default_hparams", None) or getattr(module, "default_hparams", None)
    space = getattr(fn, "default_search_space", None) or getattr(
        module, "default_search_space", None
    )
    if callable(space):
        space = space()
    return (hp if callable(hp) else None), space


def load_target(target: str) -> LoadedTarget:
    """Resolve ``package.module:function``, ``file.py[:function]`` or a built-in name."""
    if not target or not target.strip():
        raise CLIError("TARGET is empty; give package.module:function, file.py or a built-in name")
    builtins = _builtin_examples()
    if target in builtins:
        module = _import_module(builtins[target], target)
        fn = getattr(module, DEFAULT_FUNCTION)
        hp, space = _module_extras(module, fn)
        return LoadedTarget(
            target, f"built-in experiment {target!r}", fn, hp, space, os.path.join("runs", target)
        )
    location, function = target, None
    if ":" in target:
        location, function = target.rsplit(":", 1)
        if not function.isidentifier():
            raise CLIError(
                f"bad TARGET {target!r}: {function!r} is not a function name; "
                "use package.module:function or path/to/file.py:function"
            )
    is_file = location.endswith(".py") or "/" in location or os.sep in location
    if is_file:
        if not os.path.isfile(location):
            raise CLIError(f"bad TARGET {target!r}: file {location!r} does not exist")
        module = _import_file(location)
        name = os.path.splitext(os.path.basename(location))[0]
    elif function is not None or "." in location:
        module = _import_module(location, target)
        name = location.rsplit(".", 1)[-1]
    else:
        raise CLIError(
            f"unknown TARGET {target!r}: not a built-in experiment "
            f"({', '.join(sorted(builtins)) or 'none installed'}), a file path "
            "(path/to/file.py[:function]) or package.module:function"
        )
    function = function or DEFAULT_FUNCTION
    fn = getattr(module, function, None)
    if fn is None:
        defined = sorted(
            k for k, v in vars(module).items()
            if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise CLIError(
            f"bad TARGET {target!r}: {location} has no function {function!r} "
            f"(it defines: {', '.join(defined) or 'nothing callable'})"
        )
    if not callable(fn):
        raise CLIError(f"bad TARGET {target!r}: {function!r} is a {type(fn).__name__}, not a function")
    hp, space = _module_extras(module, fn)
    return LoadedTarget(name, f"{function} from {location}", fn, hp, space, None)


