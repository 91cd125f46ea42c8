"""The hook protocol: ``SessionRunHook`` and what it receives, plus ``SecondOrStepTimer``.

The lifecycle (``begin``, ``after_create_session``, ``before_run``, ``after_run``, ``end``)
and its exception semantics are the execution trace in :mod:`learnrun.estimator.train_loop`.
:mod:`learnrun.hooks` re-exports the public names here; import from there.
:func:`fetch_value` resolves the names that ``SessionRunArgs`` and ``LoggingTensorHook`` use.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from learnrun.clock import Clock, get_clock

__all__ = [
    "Hook", "RunContext", "RunValues", "SecondOrStepTimer", "SessionRunArgs", "SessionRunHook",
    "skips_idle_steps",
]


class SessionRunArgs:
    """What a hook's ``before_run`` asks of the coming step.

    ``fetches``: a name or list of names (``loss``, ``outputs`` keys, ``global_step``,
    ``learning_rate``, ...); their host values (a device sync) appear in
    ``run_values.fetched`` for that step only.
    """

    def __init__(self, fetches=None) -> None:
        if fetches is None:
            fetches = ()
        elif isinstance(fetches, str):
            fetches = (fetches,)
        self.fetches = tuple(fetches)

    def __repr__(self) -> str:
        return f"SessionRunArgs(fetches={self.fetches!r})"


class RunValues:
    """What ``after_run`` receives about the step that just ran.

    ``results``: ``loss`` (a detached tensor still on the device: reading it syncs),
    ``outputs``, ``features``, ``labels``. ``global_step``: after this step's update.
    ``fetched``: host values of the names requested through ``SessionRunArgs``.
    """

    def __init__(self, results: dict, global_step: int, fetched: dict | None = None) -> None:
        self.results = results
        self.global_step = global_step
        self.fetched = fetched or {}


class RunContext:
    """Passed to ``before_run``/``after_run``: the session, and a way to stop after this step."""

    def __init__(self, session) -> None:
        self.session = session
        self._stop_requested = False

    def request_stop(self) -> None:
        """Stop the loop after the current step (``end`` hooks still run)."""
        self._stop_requested = True
        self.session.request_stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested


class IdleSetting:
    """A ``SessionRunHook`` attribute that the training loop watches (``idle_until_step``,
    ``idle_until_time``, ``idle_clock``): read as usual; each setting, from any method or
    thread, counts in :func:`idle_changes`. The value lives in the instance as ``_<name>``."""

    def __init__(self, default: Any) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, hook: Any, owner: type | None = None) -> Any:
        if hook is None:
            return self
        return getattr(hook, self.slot, self.default)

    def __set__(self, hook: Any, value: Any) -> None:
        setattr(hook, self.slot, value)
        _note_idle_change()


class SessionRunHook:
    """Base class of training/evaluation hooks; override what you need.

    The order of the calls is the execution trace in :mod:`learnrun.estimator.train_loop`.
    ``session`` is the loop's ``RunSession``: ``estimator, module, optimizer, scheduler,
    model_dir, mode, config, is_chief, global_step, last_step, shared_global_step(),
    save_checkpoint(), request_stop()``.

    ``idle_until_step``, ``idle_until_time`` and ``idle_clock``: with an ``after_run`` marked
    :func:`skips_idle_steps`, the training loop does not call ``after_run`` for global steps
    below ``idle_until_step`` (0: none), nor while ``idle_clock.monotonic()`` is below
    ``idle_until_time`` (``idle_clock`` None, or ``-inf``: never). A hook that acts every N
    steps or seconds keeps them at its next due step or time (its
    :class:`SecondOrStepTimer`'s ``next_step``, ``next_time`` and ``clock``), which saves a
    call per step.
    """

    # Setting any of the three counts in idle_changes(): the training loop rereads them only
    # after a change instead of every idle hook's at every step.
    idle_until_step = IdleSetting(0)  # int
    idle_until_time = IdleSetting(-math.inf)  # float, on idle_clock
    idle_clock = IdleSetting(None)  # Clock | None

    def begin(self) -> None:
        """Called once before the loop; the model is built, nothing is restored yet."""

    def after_create_session(self, session, coord=None) -> None:
        """Called once after the checkpoint (if any) was restored."""

    def before_run(self, run_context: RunContext) -> SessionRunArgs | None:
        """Called before each step; may return ``SessionRunArgs`` naming values to fetch."""
        return None

    def after_run(self, run_context: RunContext, run_values: RunValues) -> None:
        """Called after each step; ``run_context.request_stop()`` ends the loop."""

    def end(self, session) -> None:
        """Called once when the loop ends normally (not on exceptions)."""

    def idle_until_due(self, timer: SecondOrStepTimer) -> None:
        """Be idle until ``timer``'s next due step or time: set ``idle_until_step``,
        ``idle_until_time`` and ``idle_clock`` from it (for an ``after_run`` marked
        :func:`skips_idle_steps`; call it whenever the timer triggers or is reset)."""
        if not isinstance(timer, SecondOrStepTimer):
            raise TypeError(f"idle_until_due takes the hook's SecondOrStepTimer, got "
                            f"{type(timer).__name__}: {timer!r:.80}. Set idle_until_step (and "
                            "idle_until_time with idle_clock) directly when there is no timer.")
        self.idle_until_step, self.idle_until_time = timer.next_step, timer.next_time
        self.idle_clock = timer.clock


Hook = SessionRunHook

#: counts the changes of any hook's idle_until_step, idle_until_time or idle_clock
_idle_changes = itertools.count(1)
_idle_changed = [0]


def _note_idle_change() -> None:
    _idle_changed[0] = next(_idle_changes)


def idle_changes() -> int:
    """A number that changes whenever a hook's ``idle_until_step``, ``idle_until_time`` or
    ``idle_clock`` is set (by any hook, in any thread). The training loop keeps the earliest
    moment any idle hook may be due, and recomputes it only when this number moves."""
    return _idle_changed[0]


def skips_idle_steps(after_run):
    """Mark an ``after_run`` that keeps ``self.idle_until_step`` (and, on a clock,
    ``self.idle_until_time``) up to date.

    The training loop then skips the call for global steps below ``idle_until_step`` and
    while ``self.idle_clock`` reads less than ``idle_until_time``. The method must still be
    right when called at any step (evaluation and tests call it at every step); skipping is
    only a saving. A subclass that overrides the marked method without marking its own is
    called at every step.
    """
    if not callable(after_run):
        raise TypeError(f"skips_idle_steps decorates a hook's after_run method, got "
                        f"{type(after_run).__name__}: {after_run!r:.80}. Write it above `def after_run`.")
    after_run.skips_idle_steps = True
    return after_run


class SecondOrStepTimer:
    """Trigger every ``every_secs`` seconds (through ``clock``) or every ``every_steps`` steps.

    ``next_step``: no step below it can trigger (steps count from 0): the next due step of a
    step timer, 0 for a time-based one (any other step may be due, also an earlier one after
    a rollback). ``next_time``: no moment of ``clock.monotonic()`` below it can trigger: the
    next due time of a time-based timer, ``-inf`` before its first trigger and for a step
    timer. A hook marked :func:`skips_idle_steps` keeps them as its ``idle_until_step`` and
    ``idle_until_time``, and ``clock`` as its ``idle_clock``.
    """

    def __init__(self, every_secs: float | None = None, every_steps: int | None = None,
                 clock: Clock | None = None) -> None:
        if every_secs is None and every_steps is None:
            raise ValueError("Either every_steps or every_secs should be provided.")
        if every_secs is not None and every_steps is not None:
            raise ValueError("Can not provide both every_steps and every_secs.")
        self._every_secs = every_secs
        self._every_steps = every_steps
        self._clock = get_clock(clock)
        self.reset()

    @property
    def clock(self) -> Clock:
        """The clock the seconds are counted on."""
        return self._clock

    def reset(self) -> None:
        self._last_time: float | None = None
        self._last_step: int | None = None
        self.next_step = 0
        self.next_time = -math.inf

    def should_trigger_for_step(self, step: int) -> bool:
        """True when the interval has passed since the last trigger (always true the first time)."""
        if self._last_step is None:
            return True
        if step == self._last_step:
            return False
        if self._every_secs is not None:
            return self._clock.monotonic() >= self._last_time + self._every_secs
        return step >= self._last_step + self._every_steps

    def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
        """Record a trigger at ``step``; return ``(elapsed_secs, elapsed_steps)`` since the last."""
        now = self._clock.monotonic()
        if self._last_time is None:
            elapsed = (None, None)
        else:
            elapsed = (now - self._last_time, step - self._last_step)
        self._last_time, self._last_step = now, step
        if self._every_secs is None:
            self.next_step = step + max(self._every_steps, 1)
        else:
            self.next_step, self.next_time = 0, now + self._every_secs
        return elapsed

    def last_triggered_step(self) -> int | None:
        return self._last_step


def to_python(value: Any) -> Any:
    """A host value: a Python number for one-element tensors, a nested list otherwise."""
    if hasattr(value, "detach") and hasattr(value, "numel"):
        value = value.detach()
        return value.item() if value.numel() == 1 else value.cpu().tolist()
    return value


def fetch_value(name: str, session, run_values: RunValues) -> Any:
    """The host value of ``name`` after a step (what ``SessionRunArgs`` fetches).

    ``global_step``, ``learning_rate`` (the first param group's), a key of the step's results
    (``loss``, ``outputs``, ``features``, ``labels``) or a key of ``outputs`` when the module
    returns a dict; KeyError listing the known names for anything else.
    """
    if name == "global_step":
        return run_values.global_step
    if name == "learning_rate":
        rates = learning_rates(session)
        return next(iter(rates.values())) if rates else None
    results = run_values.results
    if name in results:
        return to_python(results[name])
    outputs = results.get("outputs")
    if isinstance(outputs, Mapping) and name in outputs:
        return to_python(outputs[name])
    raise KeyError(
        f"LoggingTensorHook: unknown name {name!r}. Known: global_step, learning_rate, "
        f"{', '.join(sorted(results))}"
        + (f", and outputs keys {sorted(outputs)}" if isinstance(outputs, Mapping) else "") + "."
    )


def fetch_values(names: Iterable[str], session, run_values: RunValues) -> dict[str, Any]:
    """``{name: fetch_value(name, ...)}`` for every name (one device sync per name)."""
    return {name: fetch_value(name, session, run_values) for name in names}


def learning_rates(session) -> dict[str, float]:
    """The session optimizer's learning rates: ``learning_rate``, or ``learning_rate/<i>`` per group."""
    optimizer = session.optimizer
    if optimizer is None:
        return {}
    groups = optimizer.param_groups
    if len(groups) == 1:
        return {"learning_rate": float(groups[0]["lr"])}
    return {f"learning_rate/{i}": float(g["lr"]) for i, g in enumerate(groups)}
