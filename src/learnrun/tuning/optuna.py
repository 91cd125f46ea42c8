"""Hyperparameter tuning on optuna: ``OptunaTuner`` implements :class:`learnrun.runner.Tuner`.

Use it with :func:`learnrun.tune` (or ``learnrun tune TARGET --trials N`` on the command line)::

    tuner = OptunaTuner("lr=loguniform(1e-4,1e-1),units=choice([32],[64,32])",
                        metric="accuracy", direction="maximize", n_trials=20,
                        base_model_dir="runs/tune", hparams=learnrun.HParams(lr=0.1, units=[32]))
    learnrun.tune(experiment_fn, tuner)

Each trial gets its own ``model_dir`` (``<base_model_dir>/trial_<n>``), hyperparameters
sampled from the search space on top of ``hparams``, and runs the Experiment's
``train_and_evaluate`` (or ``schedule``). The objective is ``metric`` of the trial's final
evaluation; evaluations during training (``min_eval_frequency``) are reported to optuna and a
trial the pruner rejects stops training early and ends PRUNED.

Studies resume: the storage (default ``sqlite:///<base_model_dir>/study.db``; any optuna
storage URL, e.g. ``postgresql://...`` for trials spread over machines) keeps every trial, and
``n_trials`` is the total the study should reach. A trial interrupted by a crash, Ctrl-C or
preemption on this machine is marked FAIL when the study resumes and its hyperparameters are
tried again in the same ``model_dir``, so training continues from its latest checkpoint.
Trials running in other processes on other machines count towards ``n_trials`` and are left
alone.

The search-space mini-language (``parse_search_space``, ``Dimension``, ``SearchSpaceError``)
lives in :mod:`learnrun.tuning.search_space`; both are re-exported by :mod:`learnrun.tuning`.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from learnrun.clock import Clock, get_clock
from learnrun.config.run_config import RunConfig
from learnrun.errors import NanLossDuringTrainingError
from learnrun.hooks import SessionRunHook
from learnrun.hparams import HParams
from learnrun.model_dir import eval_results, summaries
from learnrun.model_dir.storage import is_url, join, redact, storage_for
from learnrun.runner import Tuner
from learnrun.signatures import keyword_arguments
from learnrun.tables import format_table
from learnrun.tuning.search_space import SearchSpaceError, parse_search_space

logger = logging.getLogger(__name__)

__all__ = ["OptunaTuner", "read_eval_records"]

_MAXIMIZE_METRICS = frozenset(
    {"accuracy", "auc", "auc_precision_recall", "precision", "recall", "r2", "f1"}
)
_OWNER = "learnrun_owner"
_MODEL_DIR = "learnrun_model_dir"
_RETRY_OF = "learnrun_retry_of"
_ACTIVE_TOKENS: set[str] = set()  # tuners of this process that hold a trial right now


def _fmt(value: Any) -> str:
    """Short display of a hyperparameter value (floats to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_eval_records(model_dir: str) -> list[dict[str, Any]]:
    """Records of ``model_dir/eval/results.jsonl`` and ``eval_intermediate_export``, by step."""
    records = [record for name in (None, "intermediate_export")
               for record in eval_results.read_eval_results(eval_results.eval_dir(model_dir, name))]
    return sorted(records, key=lambda r: r.get("global_step", 0))


def _make_pruning_hook(trial: Any, model_dir: str, metric: str) -> Any:
    """A training hook reporting each new in-training evaluation to optuna; stops if pruned."""
    class PruningHook(SessionRunHook):
        def __init__(self) -> None:
            self.pruned_at: int | None = None
            self._reported: set[int] = set()
            self._sizes: tuple[int, ...] = ()

        def _sizes_now(self) -> tuple[int, ...]:
            sizes = []
            for name in (None, "intermediate_export"):
                path = eval_results.results_path(eval_results.eval_dir(model_dir, name))
                try:
                    sizes.append(os.path.getsize(path))
                except OSError:
                    sizes.append(-1)
            return tuple(sizes)

        def after_run(self, run_context: Any, run_values: Any) -> None:
            sizes = self._sizes_now()
            if sizes == self._sizes:
                return
            self._sizes = sizes
            for record in read_eval_records(model_dir):
                step, value = record.get("global_step"), record.get(metric)
                if step is None or step in self._reported or not isinstance(value, (int, float)):
                    continue
                self._reported.add(step)
                trial.report(float(value), int(step))
                if trial.should_prune():
                    self.pruned_at = int(step)
                    logger.info("trial %d pruned at step %d (%s=%s)", trial.number, step,
                                metric, value)
                    run_context.request_stop()
                    return

    return PruningHook()


# ------------------------------------------------------------------- argument checks


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
    if hparams is not None and not isinstance(hparams, (HParams, Mapping)):
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
    params = keyword_arguments(RunConfig)
    for key in overrides:
        if key not in params or key == "model_dir":
            valid = ", ".join(sorted(n for n in params if n != "model_dir"))
            raise ValueError(f"config_overrides: RunConfig has no argument {key!r} (model_dir "
                             f"is set per trial); valid keys: {valid}")


class OptunaTuner(Tuner):
    """A :class:`learnrun.runner.Tuner` on optuna: one model_dir per trial, resumable studies.

    Args:
      search_space: mini-language string or mapping (see :func:`parse_search_space`).
      study_name: optuna study name (default ``"learnrun"``); the same name and storage resume.
      storage: optuna storage URL; default ``sqlite:///<base_model_dir>/study.db``.
      metric: key of the evaluation result to optimise (``loss``, ``accuracy``, ...).
      direction: ``minimize`` or ``maximize``; default maximize for accuracy/auc/precision/
        recall, else minimize.
      n_trials: the number of finished trials the study should reach (counted across resumes
        and processes).
      base_model_dir: trial ``n`` writes to ``<base_model_dir>/trial_<n>``.
      pruner, sampler: optuna objects; default ``MedianPruner(n_startup_trials=2)`` and
        ``TPESampler(seed=seed)``.
      hparams: base HParams (or dict); sampled values override or extend them.
      run_config: base RunConfig, ``replace(model_dir=...)``-ed per trial; else
        ``RunConfig(model_dir=..., **config_overrides)``.
      schedule: Experiment method each trial runs (default ``train_and_evaluate``).
      catch: exceptions that fail a trial without stopping the study.
      out: where progress lines and the final table are printed (default stdout).
    """

    def __init__(
        self,
        search_space: str | Mapping[str, Any],
        *,
        study_name: str | None = None,
        storage: str | Any | None = None,
        metric: str = "loss",
        direction: str | None = None,
        n_trials: int = 10,
        base_model_dir: str = "runs/tune",
        pruner: Any = None,
        sampler: Any = None,
        seed: int | None = None,
        hparams: Any = None,
        run_config: Any = None,
        config_overrides: Mapping[str, Any] | None = None,
        schedule: str | None = None,
        catch: tuple[type[BaseException], ...] = (NanLossDuringTrainingError,),
        out: TextIO | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.dimensions = parse_search_space(search_space)
        if not isinstance(metric, str) or not metric:
            raise ValueError(f"metric must be the name of an evaluation result (e.g. 'loss', "
                             f"'accuracy'), got {metric!r}")
        if direction is None:
            direction = "maximize" if metric in _MAXIMIZE_METRICS else "minimize"
        if direction not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
        if not isinstance(base_model_dir, (str, os.PathLike)) or not os.fspath(base_model_dir):
            raise ValueError(f"base_model_dir must be a non-empty directory path, got "
                             f"{base_model_dir!r}")
        base_model_dir = os.fspath(base_model_dir)
        check_arguments(study_name=study_name, storage=storage, seed=seed, schedule=schedule,
                        hparams=hparams, run_config=run_config, out=out, pruner=pruner,
                        sampler=sampler)
        catch = exception_types(catch)
        if run_config is not None and config_overrides:
            raise ValueError("give run_config or config_overrides, not both")
        check_config_overrides(config_overrides)
        self.metric, self.direction, self.n_trials = metric, direction, n_trials
        self.base_model_dir = base_model_dir
        self.study_name = study_name or "learnrun"
        if storage is None and is_url(base_model_dir):
            storage_for(base_model_dir)  # a bad URL or a missing backend: one line, now
            # optuna's sqlite file cannot live on an object store: the study stays in memory
            # (pass storage= a database URL to share or resume it); trials write there
            logger.info("Trial directories under %s; the study is kept in memory (pass "
                        "--storage to keep it).", redact(base_model_dir))
        elif storage is None:
            os.makedirs(base_model_dir, exist_ok=True)
            storage = "sqlite:///" + os.path.abspath(os.path.join(base_model_dir, "study.db"))
        self.storage = storage
        self.storage_url = storage if isinstance(storage, str) else \
            "in memory" if storage is None else type(storage).__name__
        self.schedule = schedule or "train_and_evaluate"
        self.catch = catch
        self._pruner, self._sampler, self._seed = pruner, sampler, seed
        self._hparams, self._run_config = hparams, run_config
        self._config_overrides = dict(config_overrides or {})
        self._out = out
        self._clock = get_clock(clock)
        self._token = uuid.uuid4().hex[:12]
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{self._token}"
        self._study: Any = None
        self._current: Any = None
        self._summarised = False

    # ------------------------------------------------------------------ study
    @property
    def study(self) -> Any:
        """The optuna study (created or loaded on first use)."""
        if self._study is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            pruner = self._pruner or optuna.pruners.MedianPruner(n_startup_trials=2)
            sampler = self._sampler or optuna.samplers.TPESampler(seed=self._seed)
            try:
                self._study = optuna.create_study(
                    storage=self.storage, study_name=self.study_name, direction=self.direction,
                    pruner=pruner, sampler=sampler, load_if_exists=True,
                )
            except Exception as exc:  # a bad URL, unknown dialect, missing driver, ...
                if not isinstance(exc, (ImportError, ValueError, TypeError, OSError)) and \
                        type(exc).__module__.split(".")[0] != "sqlalchemy":
                    raise
                raise ValueError(f"cannot open the optuna storage {self.storage_url!r} (study "
                                 f"{self.study_name!r}): {type(exc).__name__}: {exc}") from exc
            if self._study.direction.name.lower() != self.direction:
                raise ValueError(
                    f"study {self.study_name!r} in {self.storage_url} was created to "
                    f"{self._study.direction.name.lower()}; got direction={self.direction!r}. "
                    "Use another study name or the same direction.")
        return self._study

    def trial_model_dir(self, number: int) -> str:
        """The model_dir of trial ``number``."""
        return join(self.base_model_dir, f"trial_{number:03d}")

    def _print(self, text: str) -> None:
        print(text, file=self._out or sys.stdout, flush=True)

    def _is_stale(self, trial: Any) -> bool:
        owner = trial.user_attrs.get(_OWNER, "")
        host, _, rest = owner.partition(":")
        pid_text, _, token = rest.partition(":")
        if host != socket.gethostname() or not pid_text.isdigit():
            return False  # another machine's trial: optuna heartbeats handle it, if configured
        if int(pid_text) == os.getpid():
            return token not in _ACTIVE_TOKENS
        return not _pid_alive(int(pid_text))

    def _retry_stale_trials(self) -> None:
        from optuna.trial import TrialState

        study = self.study
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not self._is_stale(trial):
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):
                continue  # another process retried it first
            model_dir = trial.user_attrs.get(_MODEL_DIR) or self.trial_model_dir(trial.number)
            study.enqueue_trial(dict(trial.params),
                                user_attrs={_MODEL_DIR: model_dir, _RETRY_OF: trial.number})
            self._print(f"trial {trial.number} was interrupted; retrying its hyperparameters "
                        f"in {model_dir}")

    def _counted(self) -> int:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(_RETRY_OF) for t in trials} - {None}
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        return sum(
            1 for t in trials
            if t.state in finished
            or (t.state == TrialState.FAIL and t.number not in retried)
            or (t.state == TrialState.RUNNING and t.user_attrs.get(_OWNER) != self._owner)
        )

    # ------------------------------------------------------------------ Tuner
    def next_trial(self) -> bool:
        """Ask optuna for the next trial; False (after printing the table) when done."""
        if self._current is not None:
            return True
        self._retry_stale_trials()
        if self._counted() >= self.n_trials:
            if not self._summarised:
                self._summarised = True
                self._print(self.summary())
            return False
        distributions = {n: d.to_optuna() for n, d in self.dimensions.items()}
        trial = self.study.ask(distributions)
        model_dir = trial.user_attrs.get(_MODEL_DIR) or self.trial_model_dir(trial.number)
        trial.set_user_attr(_MODEL_DIR, model_dir)
        trial.set_user_attr(_OWNER, self._owner)
        self._current = trial
        _ACTIVE_TOKENS.add(self._token)
        return True

    def trial_hparams(self, params: Mapping[str, Any]) -> Any:
        """The base hparams with ``params`` set (added when the base lacks them)."""
        base = self._hparams
        if base is None:
            return HParams(**dict(params))
        values = dict(base.values() if isinstance(base, HParams) else base)
        hparams = HParams(**values)
        for name, value in params.items():
            if name not in hparams:
                hparams.add_hparam(name, value)
                continue
            try:
                hparams.set_hparam(name, value)
            except ValueError as exc:
                raise SearchSpaceError(
                    f"search space value {name}={value!r} does not fit the hyperparameter "
                    f"{name}={values[name]!r}: {exc}") from exc
        return hparams

    def _trial_run_config(self, model_dir: str) -> Any:
        if self._run_config is not None:
            return self._run_config.replace(model_dir=model_dir)
        return RunConfig(model_dir=model_dir, **self._config_overrides)

    def run_experiment(self, experiment_fn: Callable[..., Any]) -> dict[str, Any] | None:
        """Run the current trial and tell optuna its result; returns the final metrics."""
        from optuna.trial import TrialState

        trial = self._current
        if trial is None:
            raise RuntimeError("run_experiment() called without a trial; call next_trial() first")
        model_dir = trial.user_attrs[_MODEL_DIR]
        params = {n: d.decode(trial.params[n]) for n, d in self.dimensions.items()}
        started = self._clock.monotonic()
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        self._print(f"trial {trial.number}: {shown} -> {model_dir}")
        try:
            hparams = self.trial_hparams(params)
            experiment = experiment_fn(run_config=self._trial_run_config(model_dir),
                                       hparams=hparams)
            hook = _make_pruning_hook(trial, model_dir, self.metric)
            experiment.extend_train_hooks([hook])
            method = getattr(experiment, self.schedule, None)
            if not callable(method):
                allowed = sorted(n for n in dir(experiment)
                                 if not n.startswith("_") and callable(getattr(experiment, n)))
                raise ValueError(f"schedule {self.schedule!r} is not a method of the Experiment; "
                                 f"allowed: {', '.join(allowed)}")
            result = method()
            metrics = self._final_metrics(result, model_dir)
        except self.catch as exc:
            self._finish(trial, TrialState.FAIL, None, started, f"{type(exc).__name__}: {exc}")
            return None
        except Exception as exc:
            self._finish(trial, TrialState.FAIL, None, started, f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:
            # Ctrl-C or preemption: leave the trial RUNNING; a resumed study retries it.
            self._current = None
            _ACTIVE_TOKENS.discard(self._token)
            raise
        finally:  # the trial's event files are complete; none of them stays open
            try:
                summaries.close_under(model_dir)
            except Exception as exc:  # an upload failing must not hide the trial's outcome
                logger.warning("Closing the event files of %s failed: %s", model_dir, exc)
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items()
                                        if isinstance(v, (int, float, str, bool))})
        if hook.pruned_at is not None:
            self._finish(trial, TrialState.PRUNED, None, started, f"pruned at step {hook.pruned_at}")
            return metrics
        value = float(metrics[self.metric])
        if math.isnan(value):
            self._finish(trial, TrialState.FAIL, None, started, f"{self.metric} is NaN")
            return metrics
        self._finish(trial, TrialState.COMPLETE, value, started, "")
        return metrics

    def _final_metrics(self, result: Any, model_dir: str) -> dict[str, Any]:
        metrics: Any = None
        if isinstance(result, tuple) and result and isinstance(result[0], Mapping):
            metrics = result[0]
        elif isinstance(result, Mapping):
            metrics = result
        else:
            records = read_eval_records(model_dir)
            metrics = records[-1] if records else None
        if not metrics:
            raise ValueError(
                f"schedule {self.schedule!r} produced no evaluation in {model_dir}; tune with "
                "a schedule that evaluates (train_and_evaluate)")
        metrics = {k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        if self.metric not in metrics:
            raise ValueError(
                f"metric {self.metric!r} is not in the trial's evaluation results "
                f"({', '.join(sorted(metrics))}); pass one of them as metric (--metric on the "
                "command line)")
        return metrics

    def _finish(self, trial: Any, state: Any, value: float | None, started: float,
                note: str) -> None:
        if value is None:
            self.study.tell(trial, state=state)
        else:
            self.study.tell(trial, value, state=state)
        self._current = None
        _ACTIVE_TOKENS.discard(self._token)
        secs = self._clock.monotonic() - started
        result = f"{self.metric}={value:.6g}" if value is not None else note
        self._print(f"trial {trial.number} {state.name}: {result} ({secs:.1f} s)")

    # ------------------------------------------------------------------ report
    def summary(self) -> str:
        """A table of every trial (number, state, objective, params) and the best params."""
        trials = self.study.get_trials(deepcopy=False)
        names = list(self.dimensions)
        headers = ["trial", "state", self.metric, *names, "model_dir"]
        rows = []
        for t in trials:
            dims = self.dimensions
            values = [_fmt(dims[n].decode(t.params[n])) if n in t.params else "-" for n in names]
            objective = f"{t.value:.6g}" if t.value is not None else "-"
            rows.append([t.number, t.state.name, objective, *values,
                         t.user_attrs.get(_MODEL_DIR, "-")])
        lines = [format_table(headers, rows)]
        best = self.best_trial
        if best is None:
            lines.append("no trial completed")
        else:
            params = ", ".join(f"{n}={_fmt(self.dimensions[n].decode(v))}"
                               for n, v in best.params.items()
                               if n in self.dimensions)
            lines.append(f"best trial {best.number}: {self.metric}={best.value:.6g} ({params}) "
                         f"in {best.user_attrs.get(_MODEL_DIR)}")
        return "\n".join(lines)

    @property
    def best_trial(self) -> Any:
        """The best completed optuna FrozenTrial, or None."""
        from optuna.trial import TrialState

        done = [t for t in self.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        return self.study.best_trial if done else None

    @property
    def best_hparams(self) -> dict[str, Any] | None:
        """The best completed trial's sampled hyperparameters (decoded), or None."""
        best = self.best_trial
        if best is None:
            return None
        return {n: self.dimensions[n].decode(v) for n, v in best.params.items()
                if n in self.dimensions}
