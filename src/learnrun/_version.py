"""The version of learnrun (one owner: the package, the CLI and checkpoint metadata read it here)."""

__version__ = "0.1.0"
