"""Unit tests of learnrun.cli.report: the output locations of a model directory."""

from __future__ import annotations

from learnrun.cli.report import output_locations
from learnrun.model_dir.eval_results import read_all_eval_results


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
