"""``--hparams`` and ``--config`` of the command line: literals, RunConfig and HParams overrides."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from learnrun.cli.targets import LoadedTarget
from learnrun.config.run_config import RunConfig
from learnrun.errors import CLIError
from learnrun.hparams import HParams
from learnrun.signatures import keyword_arguments
from learnrun.tuning.search_space import split_top_level

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


def parse_config_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``--config key=value`` words into RunConfig keyword arguments (validated names)."""
    result: dict[str, Any] = {}
    if not items:
        return result
    allowed = sorted(keyword_arguments(RunConfig))
    for item in items:
        for word in _split_top_level(item):
            key, sep, value = word.partition("=")
            key = key.strip()
            if not sep or not key:
                raise CLIError(f"bad --config {word!r}: expected key=value, e.g. --config tf_random_seed=42")
            if key not in allowed:
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


def infer_hparams(spec: str) -> dict[str, Any]:
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
            return HParams(**infer_hparams(spec))
        except ValueError as exc:
            raise CLIError(f"bad --hparams {spec!r}: {exc}") from exc
    try:
        hparams.parse(spec)
    except (ValueError, KeyError, TypeError) as exc:
        known = ", ".join(f"{k}={v}" for k, v in hparams.values().items())
        raise CLIError(f"bad --hparams {spec!r}: {_text(exc)} (known: {known})") from exc
    return hparams


