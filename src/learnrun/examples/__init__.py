"""Built-in experiments: ``learnrun run digits`` and ``learnrun run diabetes``.

Each module exposes ``experiment_fn(run_config, hparams) -> Experiment``,
``default_hparams() -> HParams`` and ``default_search_space() -> str`` (for ``learnrun tune``).
The data ship inside the package (``learnrun/examples/data``); nothing is downloaded.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: built-in experiment name -> module holding its ``experiment_fn``
EXAMPLES: dict[str, str] = {
    "digits": "learnrun.examples.digits",
    "diabetes": "learnrun.examples.diabetes",
}


def get_example(name: str) -> ModuleType:
    """Import the module of a built-in experiment; ``ValueError`` naming the choices if unknown."""
    try:
        module_name = EXAMPLES[name]
    except KeyError:
        raise ValueError(
            f"Unknown built-in experiment {name!r}; choose one of {', '.join(sorted(EXAMPLES))}."
        ) from None
    return importlib.import_module(module_name)
