"""The ``learnrun`` command line: run, tune and inspect experiments, launch local clusters.

Commands::

    learnrun run TARGET [--model-dir DIR | --output-dir DIR] [--schedule NAME]
                        [--hparams "lr=0.1,units=[64,32]"] [--config key=value ...] [--verbose]
    learnrun tune TARGET --trials N [--space "lr=loguniform(1e-4,1e-1)"] [--storage URL]
                         [--metric accuracy --direction maximize] [--study-name S] [--model-dir DIR]
    learnrun checkpoints DIR [--verify]
    learnrun launch ...          (see ``learnrun launch --help``)
    learnrun model-server --model_base_path DIR --model_name NAME [--rest_api_port 8501] ...
    learnrun --version

``TARGET`` is ``package.module:function``, ``path/to/file.py[:function]`` (default function
``experiment_fn``) or the name of a built-in experiment (``learnrun.examples``). A module
may expose ``default_hparams()`` (an ``HParams`` or a dict); ``--hparams`` overrides it.

Bad input exits with status 2 and one line on stderr (a traceback only with ``--verbose``);
an error raised while running exits with status 1; preemption (SIGTERM after a checkpoint)
exits with 143 so a scheduler requeues the job.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

from learnrun._version import __version__
from learnrun.cli.overrides import build_hparams, build_run_config, parse_config_overrides
from learnrun.cli.report import (
    checkpoint_report,
    default_schedule_for,
    describe_role,
    output_locations,
)
from learnrun.cli.targets import load_target
from learnrun.distributed import add_launch_arguments, exit_process, launch_main
from learnrun.errors import CLIError, PreemptedError, StorageError
from learnrun.model_dir.storage import redact
from learnrun.runner import run, tune
from learnrun.serving.cli import add_model_server_arguments, model_server_main
from learnrun.serving.versions import ConfigError
from learnrun.tables import format_metrics

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

_COMMANDS = ("run", "tune", "checkpoints", "launch", "model-server")
_LAUNCH_PARSER: list[argparse.ArgumentParser] = []  # the latest build_parser()'s launch parser


def _add_run_arguments(parser: argparse.ArgumentParser, *, tune: bool) -> None:
    parser.add_argument(
        "target",
        metavar="TARGET",
        help="package.module:function, path/to/file.py[:function] or a built-in experiment "
        "name (e.g. digits)",
    )
    if tune:
        parser.add_argument(
            "--model-dir",
            metavar="DIR",
            help="base directory: one model_dir per trial (DIR/trial_<n>) and study.db",
        )
    else:
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--model-dir", metavar="DIR", help="checkpoints, logs and exports go here")
        where.add_argument(
            "--output-dir",
            metavar="DIR",
            help="output_dir mode: call experiment_fn(output_dir=DIR) (no --hparams/--config)",
        )
    parser.add_argument(
        "--schedule",
        metavar="NAME",
        help="Experiment method to run (train, evaluate, train_and_evaluate, continuous_eval, "
        "...); default: chosen from the task's role",
    )
    parser.add_argument(
        "--hparams",
        metavar="SPEC",
        help='override hyperparameters, HParams.parse syntax: "lr=0.1,units=[64,32]"',
    )
    parser.add_argument(
        "--config",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="RunConfig argument, repeatable: --config save_checkpoints_steps=100",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")


def build_parser(with_launch: bool = False) -> argparse.ArgumentParser:
    """Build the argument parser; ``with_launch`` imports the distributed launcher's options."""
    parser = argparse.ArgumentParser(
        prog="learnrun",
        description="Make and run machine-learning experiments on PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"learnrun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run an experiment (train, evaluate, ...)")
    _add_run_arguments(run, tune=False)

    tune = sub.add_parser("tune", help="tune hyperparameters with optuna")
    _add_run_arguments(tune, tune=True)
    tune.add_argument("--trials", type=int, required=True, metavar="N", help="trials in the study")
    tune.add_argument(
        "--space",
        metavar="SPEC",
        help='search space: "lr=loguniform(1e-4,1e-1),units=choice([32],[64,32])"; '
        "default: the TARGET's default_search_space()",
    )
    tune.add_argument("--storage", metavar="URL", help="optuna storage (default sqlite:///DIR/study.db)")
    tune.add_argument("--study-name", metavar="S", help="study name (default: from TARGET)")
    tune.add_argument("--metric", default="loss", help="evaluation metric to optimise (default loss)")
    tune.add_argument(
        "--direction", choices=("minimize", "maximize"), default=None,
        help="default: maximize for accuracy/auc/precision/recall, else minimize",
    )
    tune.add_argument("--seed", type=int, default=None, help="sampler seed")

    ckpt = sub.add_parser("checkpoints", help="list a model_dir's checkpoints and eval metrics")
    ckpt.add_argument("model_dir", metavar="DIR")
    ckpt.add_argument("--verify", action="store_true",
                      help="check every checkpoint's sizes and checksums (reads all files); "
                      "exit 1 when one is damaged")
    ckpt.add_argument("-v", "--verbose", action="store_true")

    add_model_server_arguments(sub.add_parser(
        "model-server", help="serve exports over TF Serving's REST API and KServe v2"))

    launch = sub.add_parser("launch", help="start a whole cluster on this machine")
    _LAUNCH_PARSER[:] = [launch]
    if with_launch:
        add_launch_arguments(launch)
    else:
        launch.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname).1s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stdout,  # stderr carries only the one-line error
    )
    if not verbose:  # third-party INFO chatter (optuna, matplotlib, ...) stays quiet
        for name in ("optuna", "matplotlib", "PIL", "urllib3", "torch"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _print(text: str = "") -> None:
    print(text, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    """``learnrun run``: build RunConfig and HParams, call :func:`learnrun.run`, print metrics."""
    loaded = load_target(args.target)
    if args.output_dir is not None:
        if args.hparams:
            raise CLIError(
                f"--hparams {args.hparams!r} cannot be used with --output-dir: experiment_fn is "
                "called as experiment_fn(output_dir=...); use --model-dir instead"
            )
        if args.config:
            raise CLIError(
                f"--config {' '.join(args.config)!r} cannot be used with --output-dir; "
                "use --model-dir instead"
            )
        _print(f"learnrun: running {loaded.description} schedule={args.schedule or '(default)'} "
               f"output_dir={args.output_dir}")
        with _schedule_errors(args.schedule):
            result = run(loaded.experiment_fn, output_dir=args.output_dir, schedule=args.schedule)
        _report_result(result, args.output_dir)
        return 0

    overrides = parse_config_overrides(args.config)
    run_config = build_run_config(args.model_dir, overrides, loaded.default_model_dir)
    hparams = build_hparams(loaded, args.hparams)
    schedule = args.schedule or None
    shown = schedule or default_schedule_for(run_config)
    _print(f"learnrun: {loaded.description}")
    _print(f"  role:      {describe_role(run_config)}")
    _print(f"  schedule:  {shown}")
    _print(f"  model_dir: {redact(run_config.model_dir)}")
    if hparams is not None:
        _print(f"  hparams:   {hparams}")
    if run_config.is_distributed:
        _DISTRIBUTED_RUN.append(True)
    with _schedule_errors(schedule):
        result = run(loaded.experiment_fn, schedule=schedule, run_config=run_config,
                     hparams=hparams)
    _report_result(result, run_config.model_dir)
    if run_config.is_chief:
        _print(output_locations(run_config.model_dir))
    return 0


@contextlib.contextmanager
def _schedule_errors(schedule: str | None) -> Iterator[None]:
    """Turn the runner's unknown/non-callable schedule errors into bad-input (exit 2) lines."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if schedule and str(exc).startswith("Schedule references non-"):
            raise CLIError(f"bad --schedule {schedule!r}: {exc}") from exc
        raise


def _report_result(result: Any, model_dir: str) -> None:
    metrics, exports = None, None
    if isinstance(result, dict):
        metrics = result
    elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict):
        metrics, exports = result
    if metrics:
        _print("final metrics:")
        _print(format_metrics(metrics))
    if exports:
        items = exports if isinstance(exports, (list, tuple)) else [exports]
        for path in items:
            _print(f"exported: {path}")


def cmd_tune(args: argparse.Namespace) -> int:
    """``learnrun tune``: run an optuna study over TARGET's hyperparameters."""
    if args.trials < 1:
        raise CLIError(f"--trials must be >= 1, got {args.trials}")
    loaded = load_target(args.target)
    overrides = parse_config_overrides(args.config)
    base_dir = args.model_dir or (
        f"runs/tune-{loaded.name}" if loaded.default_model_dir else None
    )
    if not base_dir:
        raise CLIError("no base directory for the trials: pass --model-dir DIR")
    hparams = build_hparams(loaded, args.hparams)
    space = args.space or loaded.default_search_space
    if not space:
        raise CLIError(
            f"no search space: pass --space \"lr=loguniform(1e-4,1e-1)\" ({loaded.description} "
            "has no default_search_space())"
        )
    from learnrun.tuning import (  # reason: optuna loads only for `learnrun tune`
        OptunaTuner,
        SearchSpaceError,
    )

    try:
        tuner = OptunaTuner(
            search_space=space,
            study_name=args.study_name or loaded.name,
            storage=args.storage,
            metric=args.metric,
            direction=args.direction,
            n_trials=args.trials,
            base_model_dir=base_dir,
            hparams=hparams,
            config_overrides=overrides,
            schedule=args.schedule,
            seed=args.seed,
            out=sys.stdout,
        )
        tuner.study  # noqa: B018 - open the storage now: a bad URL or direction is bad input
    except (SearchSpaceError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    _print(f"learnrun: tuning {loaded.description}: {args.trials} trials, "
           f"{tuner.direction} {tuner.metric}, storage {tuner.storage_url}")
    tune(loaded.experiment_fn, tuner)
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """``learnrun checkpoints DIR [--verify]``: print the checkpoints with their eval metrics.

    With ``--verify`` every checkpoint is checked against its ``meta.json``; the exit status
    is 1 when any is damaged.
    """
    text, damaged = checkpoint_report(args.model_dir, verify=args.verify)
    _print(text)
    return EXIT_FAILED if damaged else 0


def cmd_launch(argv: Sequence[str]) -> int:
    """``learnrun launch``: hand over to :mod:`learnrun.distributed`'s launcher."""
    parser = build_parser(with_launch=True)
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        _LAUNCH_PARSER[0].error(
            f"unrecognized arguments: {' '.join(unknown)} (options of `learnrun run` go after "
            "TARGET, e.g. learnrun launch --workers 2 TARGET --model-dir DIR)")
    code = launch_main(args)
    return int(code or 0)


#: Set by ``cmd_run`` when this process is a task of a cluster (see :func:`main`).
_DISTRIBUTED_RUN: list[bool] = []


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``learnrun`` console script; returns the process exit status.

    A task of a distributed run leaves through ``learnrun.distributed.exit_process(code)``
    (flush, ``os._exit``): a normal interpreter exit after ``destroy_process_group()`` can
    abort with SIGABRT now and then.
    """
    code = _main(argv)
    if _DISTRIBUTED_RUN:
        exit_process(code)
    return code


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        if command == "launch":
            _setup_logging(verbose)
            return cmd_launch(argv)
        args = build_parser().parse_args(argv)
        _setup_logging(verbose)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "tune":
            return cmd_tune(args)
        if args.command == "checkpoints":
            return cmd_checkpoints(args)
        if args.command == "model-server":
            try:
                return model_server_main(args)
            except ConfigError as exc:
                raise CLIError(str(exc)) from exc
        raise CLIError(f"unknown command {args.command!r}; use one of {', '.join(_COMMANDS)}")
    except CLIError as exc:
        if verbose:
            traceback.print_exc()
        print(f"learnrun: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except StorageError as exc:  # the model directory's file system: never a secret in it
        if verbose:
            traceback.print_exc()
        print(f"learnrun: error: {redact(exc)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED
    except PreemptedError as exc:
        print(f"learnrun: {exc} (exit {exc.code})", file=sys.stderr, flush=True)
        return int(exc.code) if isinstance(exc.code, int) else 143
    except KeyboardInterrupt:
        print("learnrun: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line
        if verbose:
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        first = redact(text[0]) if text else ""
        hint = "" if verbose else " (run with --verbose for the traceback)"
        print(f"learnrun: error: {type(exc).__name__}: {first}{hint}", file=sys.stderr, flush=True)
        return EXIT_FAILED
