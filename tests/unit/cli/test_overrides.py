"""Unit tests of learnrun.cli.overrides: literals and --hparams."""

from __future__ import annotations

import pytest

from learnrun.cli.overrides import infer_hparams, parse_literal
from learnrun.errors import CLIError


def test_parse_literal_types():
    assert parse_literal("3") == 3
    assert parse_literal("0.5") == 0.5
    assert parse_literal("1e-3") == 1e-3
    assert parse_literal("true") is True and parse_literal("False") is False
    assert parse_literal("none") is None
    assert parse_literal("[1, 2]") == [1, 2]
    assert parse_literal("cpu") == "cpu"
    assert parse_literal("'x,y'") == "x,y"


def testinfer_hparams_and_errors():
    assert infer_hparams("lr=0.1,units=[64,32],act=relu") == {
        "lr": 0.1, "units": [64, 32], "act": "relu"}
    with pytest.raises(CLIError, match="malformed clause 'lr'"):
        infer_hparams("lr")
    with pytest.raises(CLIError, match="assigned twice"):
        infer_hparams("lr=1,lr=2")
    with pytest.raises(CLIError, match="unclosed list"):
        infer_hparams("units=[1,2")
