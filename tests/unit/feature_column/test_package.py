"""learnrun.feature_column re-exports the public names of its modules."""

from __future__ import annotations

from learnrun import feature_column as fc


def test_package_reexports_every_public_name():
    from learnrun.feature_column import columns, constructors, layers

    for module in (columns, constructors, layers):
        public = set(getattr(module, "__all__", ())) or {
            n for n, v in vars(module).items() if not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__}
        assert public <= set(fc.__all__), (module.__name__, public - set(fc.__all__))
    for name in fc.__all__:
        assert getattr(fc, name) is not None
    assert fc.NumericColumn is columns.NumericColumn and fc.LinearModel is layers.LinearModel
