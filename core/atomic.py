"""Atomic file output: a file appears complete under its name or not at all.

Every output of cryobuild (maps, models, checkpoints, session state) is written to a temporary
file in the target's folder and renamed into place, so a killed run never leaves a half-written
file, and a reader never sees one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import InputError

__all__ = ["atomic_path", "output_folder", "write_bytes_atomic"]

#: Permissions of written files: rw-r--r--.
_FILE_MODE = 0o644


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside ``path``; renamed to ``path`` when the block succeeds,
    removed when it fails (the old ``path``, if any, is untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    # mkstemp makes the file private (0600); outputs are ordinary files anyone may read
    os.chmod(tmp, _FILE_MODE)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a folder that outputs can be written into, created if missing: checked before
    a long job starts, so that an unusable ``-o`` fails at once and not after the build.

    Raises
    ------
    InputError
        ``path`` is a file, or the folder cannot be created or written into.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: is a file, not a folder for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise InputError(f"{path}: cannot write the outputs there ({err.strerror or err})") from None
    return path
