"""The search-space mini-language of :class:`learnrun.tuning.OptunaTuner`.

``parse_search_space`` reads comma-separated ``name=distribution`` clauses::

    lr=loguniform(1e-4, 1e-1), units=choice([32], [64, 32]), layers=int(1, 4)

Forms: ``loguniform(low, high)``, ``uniform(low, high[, step=s])``,
``int(low, high[, step=s][, log=true])``, ``choice(v1, v2, ...)`` where values are numbers,
true/false, words or ``[lists]``. Each clause becomes a :class:`Dimension`, which converts to
an optuna distribution (optuna is imported only then) and decodes optuna's stored values back.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["Dimension", "SearchSpaceError", "parse_search_space"]

_FORMS = ("loguniform(low, high), uniform(low, high[, step=s]), "
          "int(low, high[, step=s][, log=true]), choice(a, b, ...)")


class SearchSpaceError(ValueError):
    """A search space that cannot be parsed or used (the message names the part at fault)."""


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One hyperparameter's distribution: ``kind`` is loguniform, uniform, int or choice."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def _labels(self) -> tuple[Any, ...]:
        primitive = all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices)
        return self.choices if primitive else tuple(json.dumps(c) for c in self.choices)

    def to_optuna(self) -> Any:
        """The optuna distribution of this dimension."""
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(self._labels())
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def decode(self, value: Any) -> Any:
        """Turn optuna's stored value back into the hyperparameter value (lists for choices)."""
        if self.kind == "choice":
            labels = self._labels()
            return self.choices[labels.index(value)] if value in labels else value
        return value

    def __str__(self) -> str:
        if self.kind == "choice":
            return f"{self.name}=choice({', '.join(json.dumps(c) for c in self.choices)})"
        extra = (f", step={self.step}" if self.step else "") + (
            ", log=true" if self.log and self.kind == "int" else "")
        return f"{self.name}={self.kind}({self.low}, {self.high}{extra})"


def split_top_level(text: str, *, strict: bool = True) -> list[str]:
    """Split ``text`` on the commas outside brackets and parentheses; each part stripped.

    ``strict`` raises :class:`SearchSpaceError` for an unbalanced bracket; without it the
    text is split as far as its nesting allows (the command line's ``--config`` words).
    """
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if strict and depth < 0:
                raise SearchSpaceError(f"unbalanced {ch!r} at position {i} in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if strict and depth:
        raise SearchSpaceError(f"unclosed bracket or parenthesis in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _literal(text: str) -> Any:
    word = text.strip()
    low = word.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    if word.startswith("["):
        if not word.endswith("]"):
            raise SearchSpaceError(f"unclosed list {word!r}")
        return [_literal(w) for w in split_top_level(word[1:-1]) if w]
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    if not word:
        raise SearchSpaceError("empty value")
    return word


def _number(name: str, what: str, text: str) -> float | int:
    value = _literal(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SearchSpaceError(f"{name}: {what} must be a number, got {text.strip()!r}")
    if not math.isfinite(value):
        raise SearchSpaceError(f"{name}: {what} must be a finite number, got {text.strip()!r}")
    return value


def _check_choices(name: str, choices: tuple[Any, ...], shown: str) -> None:
    """Reject an empty choice list and values that compare equal (1 and 1.0, true and 1)."""
    if not choices:
        raise SearchSpaceError(f"{name}: choice() needs at least one value, e.g. choice(32, 64)")
    for i, first in enumerate(choices):
        for second in choices[i + 1:]:
            if first == second:
                raise SearchSpaceError(
                    f"{name}: choice() lists a value twice ({json.dumps(first)} and "
                    f"{json.dumps(second)} compare equal) in {shown!r}; give distinct values")


def _parse_dimension(name: str, func: str, raw_args: str) -> Dimension:
    args = split_top_level(raw_args) if raw_args.strip() else []
    if func == "choice":
        if not args or any(not a for a in args):
            raise SearchSpaceError(f"{name}: choice() needs at least one value, e.g. choice(32, 64)")
        choices = tuple(_literal(a) for a in args)
        _check_choices(name, choices, raw_args)
        return Dimension(name, "choice", choices=choices)
    positional = [a for a in args if "=" not in a]
    keywords: dict[str, str] = {}
    for arg in args:
        if "=" in arg:
            key, value = (w.strip() for w in arg.split("=", 1))
            if key in keywords:
                raise SearchSpaceError(f"{name}: {func}() option {key!r} is given twice")
            keywords[key] = value
    if len(positional) != 2:
        raise SearchSpaceError(f"{name}: {func}() takes (low, high), got ({raw_args})")
    low, high = (_number(name, w, a) for w, a in zip(("low", "high"), positional, strict=True))
    allowed = {"uniform": {"step"}, "int": {"step", "log"}, "loguniform": set()}[func]
    unknown = set(keywords) - allowed
    if unknown:
        raise SearchSpaceError(
            f"{name}: {func}() has no option {sorted(unknown)[0]!r}; forms: {_FORMS}")
    step = _number(name, "step", keywords["step"]) if "step" in keywords else None
    log = _literal(keywords.get("log", "false"))
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{name}: log must be true or false, got {keywords['log']!r}")
    if not low < high:
        raise SearchSpaceError(f"{name}: {func}() needs low < high, got low={low}, high={high}")
    if func == "loguniform":
        if low <= 0:
            raise SearchSpaceError(f"{name}: loguniform() needs low > 0, got {low}")
        return Dimension(name, "loguniform", float(low), float(high), log=True)
    if func == "int":
        if not (float(low).is_integer() and float(high).is_integer()):
            raise SearchSpaceError(f"{name}: int() bounds must be integers, got {low}, {high}")
        if log and low <= 0:
            raise SearchSpaceError(f"{name}: int(..., log=true) needs low > 0, got {low}")
        if step is not None and (not float(step).is_integer() or step < 1):
            raise SearchSpaceError(f"{name}: int() step must be a positive integer, got {step}")
        if log and step not in (None, 1):
            raise SearchSpaceError(f"{name}: int() cannot combine log=true with step={step}")
        return Dimension(name, "int", int(low), int(high), step=int(step) if step else None, log=log)
    if step is not None and step <= 0:
        raise SearchSpaceError(f"{name}: step must be > 0, got {step}")
    if step is not None and step > high - low:
        raise SearchSpaceError(
            f"{name}: step={step} is larger than the range {low}..{high}; give a smaller step")
    return Dimension(name, "uniform", float(low), float(high), step=step)


def parse_search_space(space: str | Mapping[str, Any]) -> dict[str, Dimension]:
    """Parse ``"lr=loguniform(1e-4,1e-1),units=choice([32],[64,32])"`` into dimensions.

    A mapping is accepted too: name -> Dimension, a distribution string (``"int(1, 4)"``) or a
    list (a choice). Raises :class:`SearchSpaceError` naming the faulty part.
    """
    if isinstance(space, Mapping):
        dims: dict[str, Dimension] = {}
        for name, spec in space.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w.]*", name):
                raise SearchSpaceError(
                    f"search space name {name!r} is not a hyperparameter name (letters, digits, "
                    "_ and ., starting with a letter)")
            if isinstance(spec, Dimension):
                dims[name] = dataclasses.replace(spec, name=name)
            elif isinstance(spec, (list, tuple)):
                _check_choices(name, tuple(spec), repr(spec))
                dims[name] = Dimension(name, "choice", choices=tuple(spec))
            elif isinstance(spec, str):
                dims.update(parse_search_space(f"{name}={spec}"))
            else:
                raise SearchSpaceError(
                    f"{name}: expected a distribution string ({_FORMS}), a list of choices or a "
                    f"Dimension, got {type(spec).__name__} {spec!r}")
        if not dims:
            raise SearchSpaceError("the search space is empty")
        return dims
    if not isinstance(space, str):
        raise SearchSpaceError(
            f"the search space must be a string like \"lr=loguniform(1e-4,1e-1)\" or a mapping "
            f"of name -> distribution, got {type(space).__name__} {space!r}")
    if not space.strip():
        raise SearchSpaceError(
            f"the search space is empty; give e.g. \"lr=loguniform(1e-4,1e-1)\" ({_FORMS})")
    dims = {}
    for clause in split_top_level(space):
        match = re.fullmatch(r"([A-Za-z_][\w.]*)\s*=\s*(\w+)\s*\((.*)\)", clause, re.S)
        if not match:
            raise SearchSpaceError(
                f"bad search space clause {clause!r} in {space!r}: expected name=distribution "
                f"with one of {_FORMS}")
        name, func, args = match.groups()
        if func not in ("loguniform", "uniform", "int", "choice"):
            raise SearchSpaceError(
                f"{name}: unknown distribution {func!r} in {clause!r}; use one of {_FORMS}")
        if name in dims:
            raise SearchSpaceError(f"{name} is given twice in {space!r}")
        try:
            dims[name] = _parse_dimension(name, func, args)
        except SearchSpaceError as exc:
            raise SearchSpaceError(f"bad search space {space!r}: {exc}") from None
    return dims
