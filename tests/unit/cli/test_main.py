"""Unit tests of learnrun.cli.main: the parser, one-line errors, --version."""

from __future__ import annotations

import pytest

from learnrun.cli import main as cli_main


def test_parser_commands():
    parser = cli_main.build_parser()
    args = parser.parse_args(["run", "digits", "--model-dir", "d", "--config", "a=1",
                              "--config", "b=2", "--hparams", "lr=0.1"])
    assert (args.target, args.model_dir, args.config, args.hparams) == (
        "digits", "d", ["a=1", "b=2"], "lr=0.1")
    args = parser.parse_args(["tune", "digits", "--trials", "3", "--metric", "accuracy",
                              "--direction", "maximize"])
    assert (args.trials, args.metric, args.direction) == (3, "accuracy", "maximize")
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "digits", "--model-dir", "a", "--output-dir", "b"])


def test_main_reports_one_line(capsys):
    assert cli_main.main(["run", "nosuchthing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("learnrun: error: unknown TARGET")


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("learnrun 0.1.0")
