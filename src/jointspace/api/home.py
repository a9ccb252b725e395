"""The home folder: the embedded store, the feature cache and the logs live under it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import JointspaceError

DEFAULT_HOME = Path("jointspace-data")


def resolve_home(home: str | Path | None = None) -> Path:
    """`home`, else $JOINTSPACE_HOME, else ./jointspace-data; created if missing. A home that
    cannot be a writable folder (a file, a path under a file, a read-only place) is a bad run."""
    path = Path(home if home is not None else os.environ.get("JOINTSPACE_HOME") or DEFAULT_HOME)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise JointspaceError(
            f"The home {path} is a file, not a folder; pass --home DIR (or set JOINTSPACE_HOME) "
            "to a folder."
        ) from None
    except OSError as error:
        raise JointspaceError(
            f"Cannot use {path} as the home folder ({error.strerror or error}); pass --home DIR "
            "(or set JOINTSPACE_HOME) to a writable folder."
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise JointspaceError(
            f"The home folder {path} is not writable; pass --home DIR (or set JOINTSPACE_HOME) "
            "to a writable folder."
        )
    return path
