"""Unit tests of learnrun.tables: plain-text tables of values and metrics."""

from __future__ import annotations

from learnrun.tables import format_metrics, format_table


def test_tables():
    text = format_table(["a", "bb"], [[1, "x"], ["long", 2.5]])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "bb"]
    assert lines[2].split() == ["1", "x"]
    metrics = format_metrics({"accuracy": 0.96123456789, "loss": 0.1, "global_step": 7})
    rows = [line.split() for line in metrics.splitlines()[2:]]
    assert rows == [["global_step", "7"], ["loss", "0.1"], ["accuracy", "0.961235"]]
