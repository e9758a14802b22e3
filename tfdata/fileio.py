"""Outputs that mark completion (manifests, metrics, exports, CSVs) are written under a temporary
name and renamed into place, so a reader finds the whole file or none (a full disk or a kill part
way leaves only a `*.tmp-*` file behind)."""

from __future__ import annotations

import os
import shutil
import uuid

import tensorflow as tf


def _write_file(path: str, data: bytes) -> None:
    if "://" in path:
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomically(path: str, data: bytes | str) -> None:
    """Writes data to path through a temporary file in the same directory and a rename."""
    data = data.encode() if isinstance(data, str) else data
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        _write_file(tmp, data)
        if "://" in path:
            tf.io.gfile.rename(tmp, path, overwrite=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            tf.io.gfile.remove(tmp)
        except (OSError, tf.errors.OpError):
            pass
        raise


def replace_directory(tmp_dir: str, target: str) -> None:
    """Moves a finished directory (written at tmp_dir, beside target) to target, replacing an older one."""
    if "://" in target:  # object stores have no directory rename: copy-free fallback, not atomic
        if tf.io.gfile.exists(target):
            tf.io.gfile.rmtree(target)
        tf.io.gfile.rename(tmp_dir, target)
        return
    old = None
    if os.path.lexists(target):
        old = f"{target}.old-{uuid.uuid4().hex[:12]}"
        os.rename(target, old)
    os.rename(tmp_dir, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def temporary_sibling(path: str) -> str:
    """A fresh name beside path for writing it before replace_directory."""
    return f"{path.rstrip('/')}.tmp-{uuid.uuid4().hex[:12]}"
