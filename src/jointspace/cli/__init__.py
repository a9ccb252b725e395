"""The `jointspace` command line: the only place that parses arguments and prints.

Results go to stdout (a table for people, one JSON document with --json); progress, logs and
errors go to stderr. Exit codes: 0 success, 1 a bad run (one sentence says what to do), 2 usage.
"""

from . import (  # noqa: F401 - registers commands
    collections,
    evaluate,
    ingest,
    query,
    serve,
    sharing,
    train,
)
from .common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point."""
    app()
