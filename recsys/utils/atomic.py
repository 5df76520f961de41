"""Crash-safe writes: write beside the target, then rename into place.

A reader therefore sees either the old complete file/directory or the new complete one, never a
half-written one. Used for manifests, checkpoints, generated data sets and metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same directory + os.replace)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Serialize `obj` as indented JSON and write it atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory that is renamed to `path` only if the block succeeds.

    On an exception the staging directory is removed and `path` is left untouched. With
    `overwrite`, an existing `path` is replaced (moved aside first, then deleted).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists")
        replace_directory(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def replace_directory(staging: Path, target: Path) -> None:
    """Rename a finished `staging` directory to `target`, replacing an older one if present.

    The old directory is first renamed aside, so `target` is always either the old or the new
    complete directory, never a mix.
    """
    if target.exists():
        trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)
    _fsync_dir(target.parent)
