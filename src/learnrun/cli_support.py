"""Helpers of the ``learnrun`` command line: targets, overrides, tables (no torch at import)."""

from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib
import importlib.util
import inspect
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from learnrun.search_space import split_top_level

DEFAULT_FUNCTION = "experiment_fn"


class CLIError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


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
    try:
        from learnrun.examples import EXAMPLES
    except ImportError:
        return {}
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


# --------------------------------------------------------------------------- values


def parse_literal(text: str) -> Any:
    """Turn a command-line word into None, a bool, an int, a float, JSON, or keep the string."""
    stripped = text.strip()
    low = stripped.lower()
    if low in ("none", "null"):
        return None
    if low == "true":
        return True
    if low == "false":
        return False
    for cast in (int, float):
        try:
            return cast(stripped)
        except ValueError:
            pass
    if stripped[:1] in "[{\"":
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == "'":
        return stripped[1:-1]
    return stripped


def _run_config_class() -> Any:
    try:
        from learnrun.run_config import RunConfig
    except ImportError as exc:
        raise CLIError(f"learnrun.run_config is not available in this install ({exc})") from exc
    return RunConfig


def parse_config_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``--config key=value`` words into RunConfig keyword arguments (validated names)."""
    result: dict[str, Any] = {}
    if not items:
        return result
    params = inspect.signature(_run_config_class()).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = sorted(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD)
    for item in items:
        for word in _split_top_level(item):
            key, sep, value = word.partition("=")
            key = key.strip()
            if not sep or not key:
                raise CLIError(f"bad --config {word!r}: expected key=value, e.g. --config tf_random_seed=42")
            if not takes_any and key not in params:
                raise CLIError(
                    f"bad --config {word!r}: RunConfig has no argument {key!r}; "
                    f"valid keys: {', '.join(allowed)}"
                )
            if key in result:
                raise CLIError(f"bad --config: {key!r} is given twice")
            result[key] = parse_literal(value)
    return result


def build_run_config(
    model_dir: str | None, overrides: Mapping[str, Any], default_model_dir: str | None
) -> Any:
    """Build ``RunConfig(model_dir=..., **overrides)``; RunConfig reads TF_CONFIG/torchrun."""
    RunConfig = _run_config_class()
    kwargs = dict(overrides)
    if model_dir is not None:
        if "model_dir" in kwargs:
            raise CLIError("model_dir is given twice: use --model-dir or --config model_dir=, not both")
        if not model_dir.strip():
            raise CLIError("--model-dir is empty; give a directory")
        kwargs["model_dir"] = model_dir
    try:
        config = RunConfig(**kwargs)
        if not config.model_dir:
            if not default_model_dir:
                raise CLIError(
                    "no model directory: pass --model-dir DIR (or --output-dir DIR, or set "
                    "model_dir in TF_CONFIG)"
                )
            config = RunConfig(**{**kwargs, "model_dir": default_model_dir})
    except (TypeError, ValueError, KeyError) as exc:
        shown = " ".join(f"{k}={v!r}" for k, v in overrides.items()) or "(none)"
        raise CLIError(f"cannot build RunConfig (--config {shown}): {_text(exc)}") from exc
    return config


def _text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return f"unknown name {exc.args[0]!r}"
    return str(exc)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or parentheses; empty parts dropped."""
    return [p for p in split_top_level(text, strict=False) if p]


def _infer_hparams(spec: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for clause in _split_top_level(spec):
        name, sep, raw = clause.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z][\w.]*", name):
            raise CLIError(f"bad --hparams {spec!r}: malformed clause {clause!r}; expected name=value")
        raw = raw.strip()
        if raw.startswith("["):
            if not raw.endswith("]"):
                raise CLIError(f"bad --hparams {spec!r}: unclosed list in {clause!r}")
            items = [w for w in re.split(r"[\s,]+", raw[1:-1]) if w]
            value: Any = [parse_literal(w) for w in items]
            if not value:
                raise CLIError(f"bad --hparams {spec!r}: {name} is an empty list")
        else:
            value = parse_literal(raw)
        if name in values:
            raise CLIError(f"bad --hparams {spec!r}: {name!r} is assigned twice")
        values[name] = value
    return values


def build_hparams(loaded: LoadedTarget, spec: str | None) -> Any:
    """The target's ``default_hparams()`` overridden by ``--hparams`` (HParams.parse syntax)."""
    from learnrun.hparams import HParams

    hparams = None
    if loaded.default_hparams is not None:
        defaults = loaded.default_hparams()
        if isinstance(defaults, Mapping):
            hparams = HParams(**dict(defaults))
        elif isinstance(defaults, HParams):
            hparams = defaults
        elif defaults is not None:
            raise CLIError(
                f"default_hparams() of {loaded.description} returned {type(defaults).__name__}; "
                "it must return an HParams or a dict"
            )
    if not spec:
        return hparams
    if hparams is None:
        try:
            return HParams(**_infer_hparams(spec))
        except ValueError as exc:
            raise CLIError(f"bad --hparams {spec!r}: {exc}") from exc
    try:
        hparams.parse(spec)
    except (ValueError, KeyError, TypeError) as exc:
        known = ", ".join(f"{k}={v}" for k, v in hparams.values().items())
        raise CLIError(f"bad --hparams {spec!r}: {_text(exc)} (known: {known})") from exc
    return hparams


# --------------------------------------------------------------------------- roles


_SEED_DEFAULTS = {
    "ps": "serve",
    "worker": "train",
    "master": "local_run",
    "chief": "local_run",
    "evaluator": "continuous_eval",
}


def default_schedule_for(config: Any) -> str:
    """Name the schedule :func:`learnrun.run` will pick for ``config`` (for display)."""
    try:
        from learnrun import runner
    except ImportError:
        runner = None
    for name in ("default_schedule", "get_default_schedule", "_get_default_schedule"):
        fn = getattr(runner, name, None)
        if callable(fn):
            try:
                return str(fn(config))
            except (ValueError, TypeError) as exc:
                return f"(none: {exc})"
    spec = getattr(config, "cluster_spec", None)
    jobs = spec.as_dict() if hasattr(spec, "as_dict") else (spec or {})
    count = sum(len(tasks) for tasks in jobs.values()) if isinstance(jobs, Mapping) else 0
    if count <= 1:
        return "train_and_evaluate"
    task_type = getattr(config, "task_type", None)
    return _SEED_DEFAULTS.get(str(task_type), f"(none for task type {task_type!r})")


def describe_role(config: Any) -> str:
    """One phrase for the process's role: ``chief 0 of 4 tasks (TF_CONFIG)`` or ``local``."""
    source = getattr(config, "cluster_source", None)
    task_type = getattr(config, "task_type", None)
    task_id = getattr(config, "task_id", 0)
    if not source:
        return "local (not distributed)"
    world = getattr(config, "world_size", None)
    if task_type == "evaluator":
        extra = f", outside the {world} training task(s)" if world else ""
    else:
        extra = f", world size {world}" if world else ""
    return f"{task_type} {task_id} ({source}{extra})"


# --------------------------------------------------------------------------- tables


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table with a header rule; cells are ``str()``-ed."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join([line.rstrip(), rule, *body])


def format_value(value: Any) -> str:
    """Format a metric: tensors and numpy scalars become numbers, floats get 6 digits."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """Two-column table of a metrics dict (``global_step`` first, ``loss`` second)."""
    order = sorted(metrics, key=lambda k: (k != "global_step", k != "loss", k))
    return format_table(["metric", "value"], [[k, format_value(metrics[k])] for k in order])


def _human_size(num: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num < 1024 or unit == "GiB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return f"{num:.1f} GiB"


def _dir_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def read_all_eval_results(model_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """Every record of ``model_dir/eval*/results.jsonl`` as ``(eval name, record)`` pairs."""
    found = []
    for path in sorted(glob.glob(os.path.join(model_dir, "eval*", "results.jsonl"))):
        name = os.path.basename(os.path.dirname(path))
        name = "eval" if name == "eval" else name[len("eval_"):]
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    found.append((name, json.loads(line)))
                except ValueError:
                    continue  # a line being written right now
    return found


def format_checkpoints(model_dir: str) -> str:
    """Table of the checkpoints of ``model_dir`` with step, time, size and eval metrics."""
    if not os.path.exists(model_dir):
        raise CLIError(f"no such directory: {model_dir!r}; give a model_dir that training wrote")
    if not os.path.isdir(model_dir):
        raise CLIError(f"{model_dir!r} is a file, not a directory; give a model_dir that "
                       "training wrote")
    from learnrun.estimator.checkpoint import latest_checkpoint, list_checkpoints

    index = os.path.join(model_dir, "checkpoint")
    entries = os.listdir(model_dir)
    looks_like_model_dir = os.path.exists(index) or any(
        e.startswith(("ckpt-", "eval", "events.out.tfevents", "export")) for e in entries)
    if not looks_like_model_dir:
        raise CLIError(
            f"{model_dir!r} is not a model directory: it has no checkpoint index "
            f"({index}), ckpt-*, eval or events files; give the --model-dir that training wrote")
    infos = list_checkpoints(model_dir)
    if not infos:
        return f"no checkpoints in {model_dir} yet (nothing listed in {index})"
    evals = read_all_eval_results(model_dir)
    latest = latest_checkpoint(model_dir)
    rows = []
    for info in infos:
        base = os.path.basename(os.path.normpath(info.path))
        parts = []
        for name, record in evals:
            rec_path = record.get("checkpoint_path")
            same = (
                os.path.basename(os.path.normpath(rec_path)) == base
                if rec_path
                else record.get("global_step") == info.step
            )
            if same:
                metrics = " ".join(
                    f"{k}={format_value(v)}" for k, v in sorted(record.items())
                    if k not in ("checkpoint_path", "global_step", "time", "timestamp")
                    and isinstance(v, (int, float))
                )
                parts.append(f"[{name}] {metrics}")
        when = datetime.datetime.fromtimestamp(info.time).strftime("%Y-%m-%d %H:%M:%S")
        mark = " *" if latest and os.path.normpath(latest) == os.path.normpath(info.path) else ""
        rows.append([f"{info.step}{mark}", when, _human_size(_dir_size(info.path)),
                     "; ".join(parts) or "-"])
    table = format_table(["step", "time", "size", "eval metrics"], rows)
    return f"{model_dir}: {len(infos)} checkpoint(s), * = latest\n{table}"


def latest_export(model_dir: str) -> str | None:
    """The newest ``model_dir/export/<strategy>/<timestamp>`` directory, if any."""
    dirs = [d for d in glob.glob(os.path.join(model_dir, "export", "*", "*")) if os.path.isdir(d)
            and os.path.basename(d).isdigit()]
    return max(dirs, key=lambda d: int(os.path.basename(d))) if dirs else None


def output_locations(model_dir: str) -> str:
    """Where a run left its checkpoints, TensorBoard logs and exports, and how to look."""
    q = shlex.quote(model_dir)
    lines = [
        "outputs:",
        f"  checkpoints: {model_dir}   (learnrun checkpoints {q})",
        f"  TensorBoard: {model_dir}   (tensorboard --logdir {q})",
    ]
    export = latest_export(model_dir)
    if export:
        lines.append(f"  export:      {export}")
        lines.append(
            "               (python -c \"import learnrun; "
            f"p = learnrun.export.load_export({export!r}); print(p)\")"
        )
    return "\n".join(lines)
