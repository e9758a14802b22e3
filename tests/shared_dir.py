"""A directory that the xdist workers of one test run build once and share."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path


def shared_dir(tmp_path_factory, name: str, build) -> Path:
    """Directory `name` in the temp dir that every xdist worker of this run shares (the session's own without
    xdist), filled once by build(directory) under a file lock; the others wait for it and reuse it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/ holds one basetemp per worker
    directory = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / ".built").exists():
            shutil.rmtree(directory, ignore_errors=True)  # a failed build's leftovers
            directory.mkdir()
            build(directory)
            (directory / ".built").touch()
    return directory
