"""``python -m learnrun`` runs the command line."""

from learnrun.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
