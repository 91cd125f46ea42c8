"""The test suite of learnrun (a package so that ``tests.helpers`` imports from anywhere)."""
