"""Locating, loading and saving network checkpoints (``weights/<name>.pt``).

A checkpoint is a plain dict of tensors and primitives (``config``, ``model`` state dict,
training ``step``, ``history`` ...), loaded with ``weights_only=True``: no pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path

from .atomic import atomic_path
from .errors import InputError

__all__ = ["BUNDLED", "checkpoint_path", "load_checkpoint", "save_checkpoint", "trained_on"]

_PACKAGE_DIR = Path(__file__).resolve().parent

#: The checkpoints installed with the package (setup.py's list, kept equal by a test): those the
#: code loads by name. ``detect`` and ``gnn`` build (`pipeline.Networks`), ``structgen_typed``
#: threads with ``--threader structgen`` (`thread.structgen.THREADING_CHECKPOINT`), ``gnn_noseq``
#: and ``structgen`` are the defaults their training resumes and `bench.structgen` compares, and
#: ``detect_foldA`` + ``gnn_foldA`` build the other fold's maps in the benchmarks
#: (`bench.real.DEFAULT_PAIRS`). The other files in a checkout's weights/ are the records of runs
#: not adopted (weights/MANIFEST.md), taken by path (``--checkpoint weights/NAME.pt``).
BUNDLED = ("detect", "gnn", "gnn_noseq", "structgen", "structgen_typed", "detect_foldA", "gnn_foldA")


def checkpoint_path(name: str) -> Path:
    """Where ``<name>.pt`` lives: the installed package's ``weights/`` or, in a checkout, the
    repository's ``weights/`` beside ``core/``. The path may not exist yet."""
    candidates = [_PACKAGE_DIR / "weights" / f"{name}.pt", _PACKAGE_DIR.parent / "weights" / f"{name}.pt"]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[1] if (_PACKAGE_DIR.parent / "weights").is_dir() else candidates[0]


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint dict on the CPU (move to a device afterwards)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file (reinstall cryobuild or train the network)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise InputError(f"{path}: not a usable checkpoint ({err})") from None


def trained_on(*checkpoints: str | os.PathLike) -> set[str]:
    """Names of the real maps any of ``checkpoints`` trained on (their ``real_maps``): a
    benchmark's figure on one of them is not a figure."""
    return {name for path in checkpoints for name in load_checkpoint(path).get("real_maps", ())}


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Save ``state`` atomically (a temporary file renamed into place)."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path
