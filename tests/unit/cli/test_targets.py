"""Unit tests of learnrun.cli.targets: file, module and built-in TARGETs."""

from __future__ import annotations

import os

import pytest

from learnrun.cli.targets import load_target
from learnrun.errors import CLIError


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
