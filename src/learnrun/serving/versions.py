"""Model configs, version policies, and loading and switching versions of served models.

A model's base path (a local directory or an fsspec URL) holds integer-named version
directories, e.g. learnrun's ``model_dir/export/<strategy>/<10-digit timestamp>/``. Each
:meth:`ServedModel.poll`:

1. lists the base path and lets the :class:`VersionPolicy` pick the wanted versions;
2. loads each wanted version that is not loaded yet (state LOADING, then AVAILABLE, or END
   with the error in its status). A failed version is tried again only once its files
   change, e.g. when a copy into the base path was still running;
3. swaps in the new set of live versions in one assignment, so a request sees either the old
   set or the new one and never fails during the switch;
4. unloads the versions no longer wanted, but only once a wanted version is available (the
   previous version keeps serving while a new one fails to load), or when their directory
   is gone. An unloaded version ends as END with status OK.

:class:`ModelManager` polls every model from a background thread every
``file_system_poll_wait_seconds`` (0: load once at start).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from learnrun.serving.tensors import NotFoundError, RequestError

logger = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
PLATFORMS = ("learnrun", "tensorflow", "pytorch")


class ConfigError(ValueError):
    """A bad flag or model config: the message says what was wrong and how to fix it."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions to serve: the ``latest`` N, ``all``, or ``specific`` ones.

    Text form (the ``--model_version_policy`` flag): ``latest`` / ``latest:N``, ``all``,
    ``specific:V1,V2``.
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("latest", "all", "specific"):
            raise ConfigError(f"version policy must be latest, all or specific, got {self.kind!r}")
        if self.kind == "latest" and self.num_versions < 1:
            raise ConfigError(f"latest:N needs N >= 1, got {self.num_versions}")
        if self.kind == "specific" and not self.versions:
            raise ConfigError("specific needs at least one version, e.g. specific:1,2")

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Parse ``latest[:N]``, ``all`` or ``specific:V1,V2``."""
        kind, _, arg = str(text).strip().partition(":")
        try:
            if kind == "latest":
                return cls("latest", int(arg) if arg else 1)
            if kind == "all" and not arg:
                return cls("all")
            if kind == "specific":
                return cls("specific", versions=tuple(int(v) for v in arg.split(",") if v.strip()))
        except ValueError:
            pass
        raise ConfigError(f"bad version policy {text!r}: use latest, latest:N, all or "
                          "specific:V1,V2 (integer versions)")

    def select(self, available: Iterable[int]) -> list[int]:
        """The wanted versions among ``available``, ascending."""
        found = sorted(set(available))
        if self.kind == "all":
            return found
        if self.kind == "latest":
            return found[-self.num_versions:]
        return [v for v in found if v in self.versions]

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.num_versions}"
        if self.kind == "specific":
            return "specific:" + ",".join(map(str, self.versions))
        return "all"


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, base path, version policy and version labels."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or ":" in self.name:
            raise ConfigError(f"model name must be non-empty without '/' or ':', got {self.name!r}")
        if not self.base_path:
            raise ConfigError(f"model {self.name!r} needs a base_path")


# ------------------------------------------------------------------------ config file parsing

_TOKEN = re.compile(r"""\s*(?:(#[^\n]*)|([{}:\[\],;<>])|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([^\s{}:\[\],;<>"'#]+))""")


def _parse_text_proto(text: str) -> dict:
    """Protobuf text format as nested dicts; every field maps to a list of values."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ConfigError(f"model config: cannot read text at offset {pos}: {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group(1):
            continue
        if m.group(2):
            tokens.append(("p", m.group(2)))
        elif m.group(3):
            tokens.append(("s", m.group(3)[1:-1].encode().decode("unicode_escape")))
        elif m.group(4):
            tokens.append(("w", m.group(4)))
    index = 0

    def message(closing: str | None) -> dict:
        nonlocal index
        out: dict[str, list] = {}
        while index < len(tokens):
            kind, value = tokens[index]
            if kind == "p" and value == closing:
                index += 1
                return out
            if kind == "p" and value in ",;":
                index += 1
                continue
            if kind != "w":
                raise ConfigError(f"model config: expected a field name, got {value!r}")
            index += 1
            if index < len(tokens) and tokens[index] == ("p", ":"):
                index += 1
            if index >= len(tokens):
                raise ConfigError(f"model config: field {value!r} has no value")
            nkind, nvalue = tokens[index]
            index += 1
            if nkind == "p" and nvalue in "{<":
                item: Any = message("}" if nvalue == "{" else ">")
            elif nkind == "s":
                item = nvalue
            elif nkind == "w":
                item = int(nvalue) if re.fullmatch(r"-?\d+", nvalue) else nvalue
            else:
                raise ConfigError(f"model config: bad value {nvalue!r} for field {value!r}")
            out.setdefault(value, []).append(item)
        if closing is not None:
            raise ConfigError(f"model config: missing {closing!r}")
        return out

    return message(None)


def _one(fields: Mapping, key: str, default: Any = None) -> Any:
    values = fields.get(key)
    return values[-1] if values else default


def _policy_from(value: Any, model: str) -> VersionPolicy:
    if value is None:
        return VersionPolicy()
    if isinstance(value, str):
        return VersionPolicy.parse(value)
    if isinstance(value, Mapping) and len(value) == 1:
        kind, arg = next(iter(value.items()))
        arg = arg[-1] if isinstance(arg, list) and arg and isinstance(arg[-1], Mapping) else arg
        arg = arg if isinstance(arg, Mapping) else {}
        if kind == "latest":
            num = arg.get("num_versions", 1)
            return VersionPolicy("latest", int(num[-1] if isinstance(num, list) else num))
        if kind == "all":
            return VersionPolicy("all")
        if kind == "specific":
            versions = arg.get("versions", [])
            return VersionPolicy("specific", versions=tuple(
                int(v) for v in (versions if isinstance(versions, list) else [versions])))
    raise ConfigError(f"model {model!r}: bad model_version_policy {value!r}; use "
                      "{latest {num_versions: N}}, {all {}} or {specific {versions: V}}")


def parse_model_config(text: str) -> list[ModelConfig]:
    """Parse a model config file: JSON or TF Serving's protobuf text format.

    Text form: ``model_config_list { config { name: 'digits' base_path: '/models/digits'
    model_platform: 'learnrun' model_version_policy { latest { num_versions: 2 } }
    version_labels { key: 'stable' value: 1700000000 } } }``. JSON form:
    ``{"model_config_list": [{"name": ..., "base_path": ..., "model_version_policy":
    "latest:2", "version_labels": {"stable": 1700000000}}]}`` (the policy as text or as
    the nested object of the text form).
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"model config is not valid JSON: {exc}") from None
        configs = doc.get("model_config_list") if isinstance(doc, dict) else None
        if isinstance(configs, Mapping):
            configs = configs.get("config")
        if not isinstance(configs, list):
            raise ConfigError('model config JSON needs {"model_config_list": [{"name": ..., '
                              '"base_path": ...}, ...]}')
        entries = [{k: [v] for k, v in c.items()} if isinstance(c, Mapping) else c for c in configs]
    else:
        doc = _parse_text_proto(text)
        lists = doc.get("model_config_list") or []
        entries = [c for lst in lists if isinstance(lst, Mapping) for c in lst.get("config", [])]
        if not lists:
            raise ConfigError("model config needs model_config_list { config { name: ... "
                              "base_path: ... } }")
    out = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"model config entry must be an object, got {entry!r}")
        name = str(_one(entry, "name", ""))
        platform = _one(entry, "model_platform", "learnrun")
        if platform not in PLATFORMS:
            raise ConfigError(f"model {name!r}: model_platform {platform!r} is not served here; "
                              f"use one of {', '.join(PLATFORMS)}")
        labels_raw = entry.get("version_labels") or []
        labels: dict[str, int] = {}
        for item in labels_raw:
            if isinstance(item, Mapping) and "key" in item:  # text form: {key: [..], value: [..]}
                labels[str(_one(item, "key"))] = int(_one(item, "value"))
            elif isinstance(item, Mapping):
                labels.update({str(k): int(v) for k, v in item.items()})
        out.append(ModelConfig(name, str(_one(entry, "base_path", "")),
                               _policy_from(_one(entry, "model_version_policy"), name), labels))
    names = [c.name for c in out]
    if not out or len(set(names)) != len(names):
        raise ConfigError(f"model config must name at least one model, each once; got {names}")
    return out


# ------------------------------------------------------------------------- versions and models


class Servable(NamedTuple):
    """A live version as a request sees it; stays usable after the version unloads."""

    version: int
    predictor: Any
    runner: Any


@dataclass
class VersionState:
    """One version of a model: where it is, its state, its error and its loaded servable."""

    version: int
    path: str
    state: str = START
    error: str | None = None
    predictor: Any = None
    runner: Any = None
    fingerprint: Any = None


#: An export's commit marker, written last (``learnrun.export.write_export``).
SIGNATURE_FILENAME = "signature.json"
#: Version directories already seen holding ``signature.json`` (checked once each).
_COMPLETE: set[str] = set()


def list_versions(base_path: str) -> dict[int, str]:
    """``{version: path}`` of the complete integer-named directories under ``base_path``.

    ``base_path`` is local or any fsspec URL. A version directory without ``signature.json``
    (written last) is incomplete: still being written, or its writer died; it is left out.
    """
    import fsspec.core

    fs, root = fsspec.core.url_to_fs(base_path)
    fs.invalidate_cache()  # object stores cache listings: a poll must see new versions
    try:
        entries = fs.ls(root, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    protocol = base_path.split("://", 1)[0] + "://" if "://" in base_path else ""
    out = {}
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") == "directory" and name.isdigit():
            path = entry["name"].rstrip("/")
            if path not in _COMPLETE:
                if not fs.exists(f"{path}/{SIGNATURE_FILENAME}"):
                    continue
                _COMPLETE.add(path)
            out[int(name)] = protocol + path if protocol else path
    return out


def _fingerprint(path: str) -> Any:
    import fsspec.core

    try:
        fs, root = fsspec.core.url_to_fs(path)
        return sorted((e["name"], e.get("size")) for e in fs.ls(root, detail=True))
    except OSError:
        return None


class ServedModel:
    """One model's versions: polled from its base path, loaded, switched and looked up.

    ``loader(path)`` loads a version (``learnrun.export.load_export``); ``make_runner(
    predictor)`` wraps it for serving (a batcher, or None) and the runner's ``close()`` is
    called when the version unloads.
    """

    def __init__(self, config: ModelConfig, loader: Callable[[str], Any],
                 make_runner: Callable[[Any], Any] | None = None,
                 lister: Callable[[str], Mapping[int, str]] = list_versions) -> None:
        self.config = config
        self.name = config.name
        self._loader = loader
        self._make_runner = make_runner
        self._lister = lister
        self._lock = threading.Lock()
        self._states: dict[int, VersionState] = {}
        self._live: dict[int, Servable] = {}

    def poll(self) -> None:
        """Discover, load, switch and unload versions once (see the module docstring)."""
        try:
            found = dict(self._lister(self.config.base_path))
        except Exception as exc:  # noqa: BLE001 - a file system error must not stop serving
            logger.warning("model %s: cannot list %s: %s", self.name, self.config.base_path, exc)
            return
        wanted = self.config.policy.select(found)
        for version in wanted:
            with self._lock:
                state = self._states.get(version)
            if state is not None and state.state == AVAILABLE:
                continue
            fingerprint = _fingerprint(found[version])
            if state is not None and state.state == END and state.error is not None \
                    and state.fingerprint == fingerprint:
                continue  # failed, and its files have not changed since
            self._load(version, found[version], fingerprint)
        with self._lock:
            available_wanted = [v for v in wanted if self._states[v].state == AVAILABLE]
            keep = set(available_wanted)
            if not available_wanted:  # nothing wanted is up yet: the previous keeps serving
                keep.update(v for v in self._live if v in found)
            retired = [self._states[v] for v in self._live if v not in keep]
            self._live = {v: Servable(v, self._states[v].predictor, self._states[v].runner)
                          for v in sorted(keep)}
            for state in retired:
                state.state = UNLOADING
        for state in retired:
            self._unload(state)

    def _load(self, version: int, path: str, fingerprint: Any) -> None:
        state = VersionState(version, path, LOADING, fingerprint=fingerprint)
        with self._lock:
            self._states[version] = state
        logger.info("model %s: loading version %d from %s", self.name, version, path)
        try:
            predictor = self._loader(path)
            runner = self._make_runner(predictor) if self._make_runner is not None else None
        except Exception as exc:  # noqa: BLE001 - a broken version is reported, never fatal
            text = str(exc).strip().splitlines()
            state.error = f"{type(exc).__name__}: {text[0] if text else ''}"
            state.state = END
            logger.error("model %s: version %d failed to load: %s", self.name, version, state.error)
            return
        state.predictor, state.runner = predictor, runner
        state.state = AVAILABLE
        logger.info("model %s: version %d is available", self.name, version)

    def _unload(self, state: VersionState) -> None:
        logger.info("model %s: unloading version %d", self.name, state.version)
        if state.runner is not None:
            state.runner.close()
        state.predictor = state.runner = None
        state.state = END

    def get(self, version: int | None = None, label: str | None = None) -> Servable:
        """The live version asked for (default: the newest), or :class:`NotFoundError`."""
        live = self._live
        if label is not None:
            if label not in self.config.labels:
                raise NotFoundError(f"Unrecognized servable version label: {label} (model "
                                    f"{self.name} has labels {sorted(self.config.labels)})")
            version = self.config.labels[label]
        if version is None:
            if not live:
                raise NotFoundError(f"Servable not found for request: Latest({self.name}): no "
                                    "version is available yet; see GET /v1/models/"
                                    f"{self.name} for the versions' status")
            return live[max(live)]
        state = live.get(version)
        if state is None:
            raise NotFoundError(f"Servable not found for request: Specific({self.name}, "
                                f"{version}); available versions: {sorted(live)}")
        return state

    def statuses(self, version: int | None = None) -> list[VersionState]:
        """Every known version's state, newest first (one version: that one, or NotFoundError)."""
        with self._lock:
            states = sorted(self._states.values(), key=lambda s: -s.version)
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise NotFoundError(f"Could not find version {version} of model {self.name}")
        elif not states:
            raise NotFoundError(f"Could not find any versions of model {self.name}")
        return states

    def ready(self) -> bool:
        """Whether at least one version is serving."""
        return bool(self._live)

    def close(self) -> None:
        """Unload every version (queued batches finish first)."""
        with self._lock:
            live, self._live = self._live, {}
            states = [self._states[v] for v in live]
        for state in states:
            self._unload(state)


class ModelManager:
    """Every served model, polled for new versions from a background thread."""

    def __init__(self, models: Iterable[ServedModel], poll_wait_seconds: float = 1.0) -> None:
        self.models = {m.name: m for m in models}
        self.poll_wait_seconds = float(poll_wait_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def model(self, name: str) -> ServedModel:
        """The model called ``name``, or :class:`NotFoundError`."""
        model = self.models.get(name)
        if model is None:
            raise NotFoundError(f"Servable not found for request: model {name!r} is not served "
                                f"here (models: {sorted(self.models)})")
        return model

    def get(self, name: str, version: Any = None, label: str | None = None) -> Servable:
        """The live version of model ``name`` (``version`` as int or decimal text)."""
        model = self.model(name)
        if version is not None and not isinstance(version, int):
            if not str(version).isdigit():
                raise RequestError(f"Failed to convert version: {version} to numeric.")
            version = int(version)
        return model.get(version, label)

    def poll_once(self) -> None:
        """Poll every model once."""
        for model in self.models.values():
            model.poll()

    def start(self) -> None:
        """Load every model now, then poll in the background (unless the wait is 0)."""
        self.poll_once()
        if self.poll_wait_seconds > 0:
            self._thread = threading.Thread(target=self._run, name="learnrun-version-poller",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - keep polling whatever one poll did
                logger.exception("version polling failed")

    def ready(self) -> bool:
        """Whether every model has a version serving."""
        return all(m.ready() for m in self.models.values())

    def close(self) -> None:
        """Stop polling and unload every model."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for model in self.models.values():
            model.close()
