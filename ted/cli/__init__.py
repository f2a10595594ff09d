"""The `ted` command."""

from ted.cli.main import main, run

__all__ = ["main", "run"]
