"""learnrun.hooks re-exports the names of its modules."""

from __future__ import annotations

from learnrun.hooks import ValidationMonitor


def test_hooks_module_reexports_every_hook_name():
    import learnrun.hooks as facade
    import learnrun.hooks.base as base
    import learnrun.hooks.basic as basic
    import learnrun.hooks.early_stopping as early_stopping
    import learnrun.hooks.saver as saver
    import learnrun.hooks.validation as validation

    modules = (base, basic, early_stopping, saver, validation)
    for module in modules:
        for name in module.__all__:
            assert getattr(facade, name) is getattr(module, name), name
    assert set(facade.__all__) == set().union(*(m.__all__ for m in modules))
    assert facade.ValidationMonitor is ValidationMonitor
