"""Exceptions shared by every layer of learnrun (pure Python, no torch import)."""

from __future__ import annotations

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: schedulers requeue a job that exits with it


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used (evaluate, predict, export) before any checkpoint exists.

    TF text: ``Couldn't find trained model at <model_dir>.``
    """


class NanLossDuringTrainingError(RuntimeError):
    """Raised by ``NanTensorHook`` when the training loss becomes NaN or infinite."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "NaN loss during training."


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read (missing file, corrupt data, bad index)."""


class StorageError(CheckpointError):
    """A model directory's file system cannot be used: a bad URL, a missing backend, no
    credentials, an unknown bucket (``bad_input`` True: the CLI exits 2) or an unreachable
    endpoint or other failure (``bad_input`` False: exit 1). The text never holds a secret.
    """

    def __init__(self, message: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.bad_input = bool(bad_input)


class DistributedError(RuntimeError):
    """A peer of a distributed job failed, timed out, or the cluster is misconfigured."""


class PreemptedError(SystemExit):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint.

    A ``SystemExit`` whose code is 143, so a script (or the CLI) exits 143 and a scheduler
    requeues the job; ``except Exception`` does not swallow it.
    """

    def __init__(self, message: str = "", code: int = PREEMPTED_EXIT_CODE) -> None:
        super().__init__(code)
        self.message = message or "Training was preempted; a checkpoint was saved."

    def __str__(self) -> str:
        return self.message


class CLIError(Exception):
    """Bad command-line input: the CLI prints it as one ``learnrun: error:`` line, exit status 2."""
