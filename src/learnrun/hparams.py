"""Hyperparameters: TF 1.15's ``tf.contrib.training.HParams``, without protocol buffers.

An ``HParams`` object holds named values whose type is fixed when they are added::

    hp = HParams(learning_rate=0.1, units=[64, 32], activation="relu", use_bn=False)
    hp.parse("learning_rate=0.05,units=[128,64,32],use_bn=true")
    hp.learning_rate            # 0.05
    hp.to_json(sort_keys=True)  # '{"activation": "relu", "learning_rate": 0.05, ...}'

Types and casting follow TF exactly (``int`` -> ``float`` is allowed, ``float`` -> ``int``,
``str`` -> number and ``int`` <-> ``bool`` are not), and so do the error texts.

Differences from TF 1.15 (deliberate):

* ``hparam_def`` (an ``HParamDef`` protocol buffer) is not supported: passing one raises
  ``NotImplementedError`` (TF raised ``AssertionError`` for non-protos); ``to_proto`` and
  ``from_proto`` do not exist. Use ``to_json`` / ``parse_json`` to serialise.
* Names starting with ``_`` are reserved (TF let them overwrite internal attributes).
* ``set_hparam`` / ``override_from_dict`` / ``parse`` are atomic: when one value fails,
  nothing is changed (TF could apply the values before the failing one).
* A value that the parameter type cannot be built from (for example ``parse('x=1')`` on a
  parameter whose value is ``None``) raises the documented ``ValueError`` instead of TF's
  ``TypeError``; tuples are accepted wherever TF accepted lists.
* ``str(hp)`` is the 1.15 form ``'a=1,b=2.0'``; ``repr(hp)`` is ``"HParams([('a', 1), ...])"``.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HParams", "parse_values", "PARAM_RE"]

# The grammar of one clause of ``parse``: name, optional [index], '=', scalar or [list].
PARAM_RE = re.compile(
    r"""
  (?P<name>[a-zA-Z][\w\.]*)      # variable name: "var" or "x"
  (\[\s*(?P<index>\d+)\s*\])?    # (optional) index: "1" or None
  \s*=\s*
  ((?P<val>[^,\[]*)              # single value: "a" or None
   |
   \[(?P<vals>[^\]]*)\])         # list of values: None or "1,2,3"
  ($|,\s*)""",
    re.VERBOSE,
)


def _parse_fail(name: str, var_type: type, value: Any, values: str) -> None:
    raise ValueError(
        f"Could not parse hparam '{name}' of type '{var_type.__name__}' with value '{value}' in {values}"
    )


def _reuse_fail(name: str, values: str) -> None:
    raise ValueError(f"Multiple assignments to variable '{name}' in {values}")


def _make_parser(name: str, type_: type, values: str) -> Callable[[str], Any]:
    """Return the function that turns one textual value into a ``type_`` value."""
    if type_ is bool:

        def parse_bool(value: str) -> bool:
            if value in ("true", "True"):
                return True
            if value in ("false", "False"):
                return False
            try:
                return bool(int(value))
            except ValueError:
                _parse_fail(name, type_, value, values)
            raise AssertionError("unreachable")  # pragma: no cover

        return parse_bool

    def parse_other(value: str) -> Any:
        try:
            return type_(value)
        except (TypeError, ValueError, OverflowError):
            # TypeError: a type that cannot be built from a string (NoneType, a class).
            raise ValueError(f"cannot build {type_.__name__} from {value!r}") from None

    return parse_other


def _process_scalar_value(name, parse_fn, var_type, m_dict, values, results) -> None:
    try:
        parsed_value = parse_fn(m_dict["val"])
    except ValueError:
        _parse_fail(name, var_type, m_dict["val"], values)

    if not m_dict["index"]:
        if name in results:
            _reuse_fail(name, values)
        results[name] = parsed_value
        return
    if name in results:
        # A scalar or list assignment to `name` maps to a non-dict.
        if not isinstance(results[name], dict):
            _reuse_fail(name, values)
    else:
        results[name] = {}
    index = int(m_dict["index"])
    if index in results[name]:
        _reuse_fail(f"{name}[{index}]", values)
    results[name][index] = parsed_value


def _process_list_value(name, parse_fn, var_type, m_dict, values, results) -> None:
    if m_dict["index"] is not None:
        raise ValueError("Assignment of a list to a list index.")
    elements = [e for e in re.split("[ ,]", m_dict["vals"]) if e]
    if name in results:
        _reuse_fail(name, values)
    try:
        results[name] = [parse_fn(e) for e in elements]
    except ValueError:
        _parse_fail(name, var_type, m_dict["vals"], values)


def parse_values(values: str, type_map: Mapping[str, type], ignore_unknown: bool = False) -> dict:
    """Parse ``"name=value,name2=[v1,v2],arr[3]=v"`` into a dict, casting with ``type_map``.

    ``type_map`` maps each known name to the type of its value (the element type for lists).
    The result maps names to a scalar, a list, or ``{index: scalar}`` for indexed clauses,
    e.g. ``"x=5,L=[1,2],arr[1]=3"`` -> ``{'x': 5, 'L': [1, 2], 'arr': {1: 3}}``.

    Raises:
      ValueError: malformed text, an unknown name (unless ``ignore_unknown``), a value that
        does not parse as its type, a name assigned twice, or a list assigned to an index.
    """
    if not isinstance(values, str):
        raise ValueError(
            f"Hyperparameter values must be a string like 'a=1,b=[2,3]', got {values!r}"
        )
    results: dict[str, Any] = {}
    pos = 0
    while pos < len(values):
        m = PARAM_RE.match(values, pos)
        if not m:
            raise ValueError(f"Malformed hyperparameter value: {values[pos:]}")
        pos = m.end()
        m_dict = m.groupdict()
        name = m_dict["name"]
        if name not in type_map:
            if ignore_unknown:
                continue
            raise ValueError(f"Unknown hyperparameter type for {name}")
        type_ = type_map[name]
        parse_fn = _make_parser(name, type_, values)
        if m_dict["val"] is not None:
            _process_scalar_value(name, parse_fn, type_, m_dict, values, results)
        elif m_dict["vals"] is not None:
            _process_list_value(name, parse_fn, type_, m_dict, values, results)
        else:  # pragma: no cover - the regex always sets one of the two groups
            _parse_fail(name, type_, "", values)
    return results


def _cast_to_type_if_compatible(name: str, param_type: type, value: Any) -> Any:
    """Return ``value`` as ``param_type`` if TF's casting rules allow it, else ValueError."""
    fail_msg = f"Could not cast hparam '{name}' of type '{param_type}' from value {value!r}"
    if type(value) is param_type:
        return value
    if issubclass(param_type, type(None)):
        return value
    if issubclass(param_type, (str, bytes)) and not isinstance(value, (str, bytes)):
        raise ValueError(fail_msg)
    if issubclass(param_type, bool) != isinstance(value, bool):
        raise ValueError(fail_msg)
    if issubclass(param_type, numbers.Integral) and not isinstance(value, numbers.Integral):
        raise ValueError(fail_msg)
    if issubclass(param_type, numbers.Number) and not isinstance(value, numbers.Number):
        raise ValueError(fail_msg)
    try:
        return param_type(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{fail_msg}: {e}") from None


class HParams:
    """A set of typed hyperparameters, settable from code, text (``parse``) or JSON.

    ``HParams(**kwargs)`` adds each keyword as a hyperparameter (in keyword order). Values are
    attributes (``hp.learning_rate``). A list value makes a multi-valued parameter whose
    element type is the type of its first element.
    """

    def __init__(self, hparam_def: Any = None, model_structure: Any = None, **kwargs: Any):
        self._hparam_types: dict[str, tuple[type, bool]] = {}
        self._model_structure = model_structure
        if hparam_def:
            raise NotImplementedError(
                "HParams(hparam_def=...) is not supported: learnrun does not use TensorFlow "
                f"protocol buffers (got {hparam_def!r}). Pass the values as keyword arguments, "
                "HParams(**values), or load them with HParams(...).parse_json(text)."
            )
        for name, value in kwargs.items():
            self.add_hparam(name, value)

    # -- registration ----------------------------------------------------------------------
    def add_hparam(self, name: str, value: Any) -> None:
        """Add a hyperparameter ``name`` whose type is ``type(value)`` (or of its 1st element).

        Raises:
          ValueError: the name is reserved (a method, a private name, or a hyperparameter
            whose value is not None), or ``value`` is an empty list.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"Hyperparameter names must be non-empty strings, got {name!r}")
        if name.startswith("_") or getattr(self, name, None) is not None:
            raise ValueError(f"Hyperparameter name is reserved: {name}")
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"Multi-valued hyperparameters cannot be empty: {name}")
            self._hparam_types[name] = (type(value[0]), True)
        else:
            self._hparam_types[name] = (type(value), False)
        setattr(self, name, value)

    def del_hparam(self, name: str) -> None:
        """Remove hyperparameter ``name``; a name that is not registered is ignored."""
        if name in self._hparam_types:
            if hasattr(self, name):
                delattr(self, name)
            del self._hparam_types[name]

    # -- setting values --------------------------------------------------------------------
    def _cast_value(self, name: str, value: Any) -> Any:
        if name not in self._hparam_types:
            raise KeyError(
                f"Unknown hyperparameter {name!r}; known: {sorted(self._hparam_types)}. Use add_hparam() to add it."
            )
        param_type, is_list = self._hparam_types[name]
        if isinstance(value, (list, tuple)):
            if not is_list:
                raise ValueError(f"Must not pass a list for single-valued parameter: {name}")
            return [_cast_to_type_if_compatible(name, param_type, v) for v in value]
        if is_list:
            raise ValueError(f"Must pass a list for multi-valued parameter: {name}.")
        return _cast_to_type_if_compatible(name, param_type, value)

    def set_hparam(self, name: str, value: Any) -> None:
        """Set ``name`` to ``value`` cast to the parameter's type.

        Raises:
          KeyError: ``name`` is not a hyperparameter.
          ValueError: list-ness differs, or the value cannot be cast (TF rules and texts).
        """
        setattr(self, name, self._cast_value(name, value))

    def override_from_dict(self, values_dict: Mapping[str, Any]) -> HParams:
        """Set every ``name: value`` of ``values_dict`` (all or nothing); return ``self``."""
        if not isinstance(values_dict, Mapping):
            raise ValueError(
                f"override_from_dict expects a mapping of name -> value, got {values_dict!r}"
            )
        cast = {name: self._cast_value(name, value) for name, value in values_dict.items()}
        for name, value in cast.items():
            setattr(self, name, value)
        return self

    def set_from_map(self, values_map: Mapping[str, Any]) -> HParams:
        """Deprecated alias of :meth:`override_from_dict`."""
        return self.override_from_dict(values_map)

    def parse(self, values: str) -> HParams:
        """Override values from ``"a=1,b=[2,3],c=text"`` (grammar: :func:`parse_values`).

        Raises:
          ValueError: the text is malformed, names an unknown hyperparameter, holds a value
            that does not parse as its type, or assigns a name twice. Nothing is changed then.
        """
        type_map = {name: t for name, (t, _) in self._hparam_types.items()}
        return self.override_from_dict(parse_values(values, type_map))

    def parse_json(self, values_json: str) -> HParams:
        """Override values from a JSON object text; return ``self``.

        Raises:
          ValueError: the text is not JSON, not a JSON object, or a value does not fit.
          KeyError: a key is not a hyperparameter.
        """
        try:
            values = json.loads(values_json)
        except (TypeError, ValueError, RecursionError) as e:
            raise ValueError(f"Could not parse hparams JSON {values_json!r}: {e}") from None
        if not isinstance(values, dict):
            raise ValueError(
                f'Hparams JSON must be an object like {{"lr": 0.1}}, got {values_json!r}'
            )
        return self.override_from_dict(values)

    # -- reading ---------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Return ``{name: value}`` in registration order."""
        return {name: getattr(self, name) for name in self._hparam_types}

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` when ``key`` is not a hyperparameter.

        Raises:
          ValueError: ``key`` exists and a non-None ``default`` is incompatible with its type.
        """
        if key not in self._hparam_types:
            return default
        if default is not None:
            param_type, is_param_list = self._hparam_types[key]
            type_str = f"list<{param_type}>" if is_param_list else str(param_type)
            fail_msg = f"Hparam '{key}' of type '{type_str}' is incompatible with default={default}"
            is_default_list = isinstance(default, list)
            if is_param_list != is_default_list:
                raise ValueError(fail_msg)
            try:
                for value in default if is_default_list else [default]:
                    _cast_to_type_if_compatible(key, param_type, value)
            except ValueError as e:
                raise ValueError(f"{fail_msg}. {e}") from None
        return getattr(self, key)

    def to_json(
        self,
        indent: int | str | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        """Serialise the values (callables left out) with ``json.dumps`` and these arguments.

        Raises:
          TypeError: a value is not JSON-serialisable (e.g. an arbitrary object).
        """

        def remove_callables(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: remove_callables(v) for k, v in x.items() if not callable(v)}
            if isinstance(x, (list, tuple)):
                return [remove_callables(i) for i in x if not callable(i)]
            return x

        return json.dumps(
            remove_callables(self.values()),
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    def set_model_structure(self, model_structure: Any) -> None:
        """Attach an arbitrary model-structure object (kept as is)."""
        self._model_structure = model_structure

    def get_model_structure(self) -> Any:
        """Return the object given to ``set_model_structure`` or the constructor."""
        return self._model_structure

    def __contains__(self, key: object) -> bool:
        return key in self._hparam_types

    def __str__(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.values().items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(sorted(self.values().items()))})"
