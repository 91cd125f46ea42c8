"""The search-space mini-language: forms, mappings, error texts, optuna conversion."""

from __future__ import annotations

import subprocess
import sys

import pytest

import learnrun.tuning
from learnrun.tuning.search_space import (
    Dimension,
    SearchSpaceError,
    parse_search_space,
    split_top_level,
)


def test_parse_search_space_forms():
    dims = parse_search_space(
        "lr=loguniform(1e-4, 1e-1), units=choice([32],[64,32]), layers=int(1,4),"
        "drop=uniform(0, 0.5, step=0.1), act=choice(relu, tanh), width=int(8, 64, log=true)")
    assert dims["lr"] == Dimension("lr", "loguniform", 1e-4, 1e-1, log=True)
    assert dims["units"].choices == ([32], [64, 32])
    assert dims["layers"] == Dimension("layers", "int", 1, 4)
    assert dims["drop"].step == 0.1
    assert dims["act"].choices == ("relu", "tanh")
    assert dims["width"].log is True
    pytest.importorskip("optuna")
    dist = dims["units"].to_optuna()
    assert dims["units"].decode(dist.choices[1]) == [64, 32]
    assert dims["act"].to_optuna().choices == ("relu", "tanh")


def test_parse_search_space_mapping():
    dims = parse_search_space({"lr": "loguniform(0.001, 0.1)", "units": [[8], [16]]})
    assert dims["lr"].kind == "loguniform" and dims["units"].choices == ([8], [16])


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("lr=logunif(1,2)", "unknown distribution 'logunif'"),
        ("lr=loguniform(0, 1)", "needs low > 0, got 0"),
        ("lr=uniform(1, 1)", "needs low < high"),
        ("lr=uniform(a, 1)", "low must be a number, got 'a'"),
        ("lr=uniform(1)", "takes (low, high)"),
        ("n=int(1.5, 3)", "bounds must be integers"),
        ("u=choice()", "at least one value"),
        ("u=choice(1, 1)", "a value twice"),
        ("lr=uniform(0,1),lr=uniform(0,2)", "given twice"),
        ("lr=uniform(0,1", "unclosed"),
        ("lr 0.1", "expected name=distribution"),
        ("lr=uniform(0, 1, bogus=2)", "no option 'bogus'"),
        ("n=int(1, 4, step=1.5)", "step must be a positive integer, got 1.5"),
        ("n=int(1, 4, step=0)", "step must be a positive integer, got 0"),
        ("n=int(1, 4, step=-1)", "step must be a positive integer, got -1"),
        ("lr=loguniform(1e-3, inf)", "high must be a finite number, got 'inf'"),
        ("lr=uniform(0, 1, step=2)", "step=2 is larger than the range"),
        ("lr=uniform(0, 1, step=0.1, step=0.2)", "option 'step' is given twice"),
        ("u=choice(1, 1.0)", "1 and 1.0 compare equal"),
        ("u=choice(true, 1)", "true and 1 compare equal"),
        ("lr=uniform(0,1),", "bad search space clause ''"),
    ],
)
def test_parse_search_space_errors(text, needle):
    with pytest.raises(SearchSpaceError) as info:
        parse_search_space(text)
    assert needle in str(info.value)


def test_tuning_reexports_the_search_space_names():
    assert learnrun.tuning.parse_search_space is parse_search_space
    assert learnrun.tuning.SearchSpaceError is SearchSpaceError
    assert learnrun.tuning.Dimension is Dimension


def test_parsing_does_not_import_optuna():
    code = ("import sys; from learnrun.tuning.search_space import parse_search_space; "
            "parse_search_space('lr=uniform(0, 1)'); print('optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "space, needle",
    [
        (3, "must be a string like"),
        (None, "got NoneType None"),
        (["lr"], "got list"),
        ({}, "empty"),
        ({"lr": []}, "lr: choice() needs at least one value"),
        ({"u": [1, 1]}, "u: choice() lists a value twice"),
        ({3: [1, 2]}, "search space name 3 is not a hyperparameter name"),
        ({"lr": 0.1}, "lr: expected a distribution string"),
    ],
)
def test_parse_search_space_bad_arguments(space, needle):
    with pytest.raises(SearchSpaceError) as info:
        parse_search_space(space)
    assert needle in str(info.value)


def test_split_top_level_keeps_brackets():
    assert split_top_level("a=1,b=[1,2],c=choice(3,4)", strict=False) == ["a=1", "b=[1,2]", "c=choice(3,4)"]
