"""Unit tests of the CLI helpers: targets, literals, --hparams, tables, parser."""

from __future__ import annotations

import os

import pytest

from learnrun.cli import main as cli_main
from learnrun.cli.overrides import infer_hparams, parse_literal
from learnrun.cli.report import output_locations
from learnrun.cli.targets import load_target
from learnrun.errors import CLIError
from learnrun.model_dir.eval_results import read_all_eval_results
from learnrun.tables import format_metrics, format_table
from learnrun.tuning.search_space import split_top_level


def test_parse_literal_types():
    assert parse_literal("3") == 3
    assert parse_literal("0.5") == 0.5
    assert parse_literal("1e-3") == 1e-3
    assert parse_literal("true") is True and parse_literal("False") is False
    assert parse_literal("none") is None
    assert parse_literal("[1, 2]") == [1, 2]
    assert parse_literal("cpu") == "cpu"
    assert parse_literal("'x,y'") == "x,y"


def test_split_top_level_keeps_brackets():
    assert split_top_level("a=1,b=[1,2],c=choice(3,4)", strict=False) == ["a=1", "b=[1,2]", "c=choice(3,4)"]


def testinfer_hparams_and_errors():
    assert infer_hparams("lr=0.1,units=[64,32],act=relu") == {
        "lr": 0.1, "units": [64, 32], "act": "relu"}
    with pytest.raises(CLIError, match="malformed clause 'lr'"):
        infer_hparams("lr")
    with pytest.raises(CLIError, match="assigned twice"):
        infer_hparams("lr=1,lr=2")
    with pytest.raises(CLIError, match="unclosed list"):
        infer_hparams("units=[1,2")


def test_load_target_file_and_function(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(
        "def experiment_fn(run_config, hparams):\n    return 'e'\n"
        "def other(run_config, hparams):\n    return 'o'\n"
        "def default_hparams():\n    return {'lr': 0.1}\n"
        "NOT_CALLABLE = 3\n"
    )
    loaded = load_target(str(path))
    assert loaded.experiment_fn(None, None) == "e"
    assert loaded.default_hparams() == {"lr": 0.1}
    assert load_target(f"{path}:other").experiment_fn(None, None) == "o"
    with pytest.raises(CLIError, match="has no function 'missing'.*experiment_fn, other"):
        load_target(f"{path}:missing")
    with pytest.raises(CLIError, match="'NOT_CALLABLE' is a int, not a function"):
        load_target(f"{path}:NOT_CALLABLE")
    with pytest.raises(CLIError, match="is not a function name"):
        load_target(f"{path}:1bad")


def test_load_target_module_errors(tmp_path):
    with pytest.raises(CLIError, match="unknown TARGET 'nosuchthing'.*built-in experiment"):
        load_target("nosuchthing")
    with pytest.raises(CLIError, match="no module named 'nosuchpkg'"):
        load_target("nosuchpkg.mod:fn")
    with pytest.raises(CLIError, match="does not exist"):
        load_target(str(tmp_path / "missing.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(CLIError, match="importing .*broken.py' failed: RuntimeError: boom"):
        load_target(str(broken))


def test_load_target_builtin_has_defaults():
    loaded = load_target("digits")
    assert loaded.name == "digits"
    assert loaded.default_model_dir == os.path.join("runs", "digits")
    assert loaded.default_hparams is not None
    assert loaded.default_search_space


def test_tables():
    text = format_table(["a", "bb"], [[1, "x"], ["long", 2.5]])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "bb"]
    assert lines[2].split() == ["1", "x"]
    metrics = format_metrics({"accuracy": 0.96123456789, "loss": 0.1, "global_step": 7})
    rows = [line.split() for line in metrics.splitlines()[2:]]
    assert rows == [["global_step", "7"], ["loss", "0.1"], ["accuracy", "0.961235"]]


def test_read_eval_results_and_locations(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.jsonl").write_text(
        '{"global_step": 5, "loss": 0.5}\n{"global_step": 10, "loss": 0.25}\n{"trunc')
    (tmp_path / "eval_test").mkdir()
    (tmp_path / "eval_test" / "results.jsonl").write_text('{"global_step": 10, "loss": 0.3}\n')
    found = read_all_eval_results(str(tmp_path))
    assert [(n, r["loss"]) for n, r in found] == [("eval", 0.5), ("eval", 0.25), ("test", 0.3)]
    export = tmp_path / "export" / "best" / "1700000000"
    export.mkdir(parents=True)
    text = output_locations(str(tmp_path))
    assert f"tensorboard --logdir {tmp_path}" in text
    assert f"learnrun checkpoints {tmp_path}" in text
    assert str(export) in text


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
