"""The built-in example: a structure that pymol-open-source ships (no download needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import InputError

__all__ = ["demo_structure_path"]

#: Human interleukin-2 (PDB 1M47-like, 133 residues), shipped in PyMOL's demo data.
DEMO_STRUCTURE = "il2.pdb"


def demo_structure_path(name: str = DEMO_STRUCTURE) -> Path:
    """Path of a PDB file in ``pymol/pymol_path/data/demo`` (found without importing PyMOL)."""
    spec = importlib.util.find_spec("pymol")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("pymol-open-source is not installed: the demo structure comes with it")
    path = Path(list(spec.submodule_search_locations)[0]) / "pymol_path" / "data" / "demo" / name
    if not path.is_file():
        raise InputError(f"{path}: demo structure not found in this PyMOL installation")
    return path
