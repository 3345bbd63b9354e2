"""Measure ideal residue geometry from high-resolution structures: writes ``residue_geometry.json``.

For every atom of `cryobuild.residues.BUILD_RULES` (per residue type) this measures, over all
complete residues (every atom14 atom of the type present, first alternative conformation), the
bond length ``c-d``, the bond angle ``b-c-d`` and the dihedral ``a-b-c-d`` minus its driving
torsion, and stores their medians (a circular median for dihedrals). The ideal backbone of a
frame comes from the medians of N-CA, CA-C and N-CA-C over all residues. The offset of O from
psi uses only residues followed by a bonded residue (psi = N-CA-C-N of the next residue).

Run as ``python -m cryobuild.train.residue_geometry [--data DIR] [--out FILE]``. The default data
set is the Kortemme/Richardson "top240" set at ``../shared/data/structures/kortemme_top240``
next to the repository (gzipped PDB files listed with their chains in ``index.tsv``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..geometry import bond_angle, dihedral
from ..models import BuiltModel, read_model
from ..residues import (
    AA_ORDER,
    ATOM14_MASK,
    ATOM14_NAMES,
    BUILD_RULES,
    CHI_ANGLES,
    GEOMETRY_RESOURCE,
    UNK_ONE,
)

__all__ = ["measure", "main"]

_REPO = Path(__file__).resolve().parents[2]
_DEFAULT_DATA = _REPO.parent / "shared" / "data" / "structures" / "kortemme_top240"
_DEFAULT_OUT = _REPO / "core" / GEOMETRY_RESOURCE
_SOURCE = (
    "Kortemme/Richardson top240 high-resolution crystal structures "
    "(shared/data/structures/kortemme_top240), chains listed in index.tsv"
)
#: A C(i)-N(i+1) distance above this (Å) is a chain break, not a peptide bond (1.33 Å).
_MAX_PEPTIDE_BOND = 1.5
#: Decimal places kept in the JSON file (Å and degrees).
_DECIMALS = 4


def _circular_median(angles: np.ndarray) -> float:
    """Median of angles (radians) unwrapped around their circular mean; in ``(-pi, pi]``."""
    centre = np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())
    spread = np.angle(np.exp(1j * (angles - centre)))
    return float(np.angle(np.exp(1j * (centre + np.median(spread)))))


def _load(data_dir: Path) -> list[BuiltModel]:
    """The chains listed in ``index.tsv`` (every chain of every file when it is absent)."""
    index = data_dir / "index.tsv"
    if index.is_file():
        with index.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        wanted: dict[str, set[str]] = {}
        for row in rows:
            wanted.setdefault(row["file"], set()).add(row["chain"])
    else:
        wanted = {path.name: set() for path in sorted(data_dir.glob("*.pdb*"))}
    models = []
    for file_name, chains in wanted.items():
        model = read_model(data_dir / file_name)
        models.append(model.select(np.isin(model.chain_id, list(chains))) if chains else model)
    return models


def _next_n(model: BuiltModel) -> tuple[np.ndarray, np.ndarray]:
    """N of the following residue ``[R, 3]`` and whether it is peptide-bonded ``[R]``."""
    following = np.zeros((model.num_residues, 3), dtype=np.float32)
    bonded = np.zeros(model.num_residues, dtype=bool)
    following[:-1] = model.atom_positions[1:, 0]
    same_chain = model.chain_id[1:] == model.chain_id[:-1]
    present = model.atom_mask[1:, 0] & model.atom_mask[:-1, 2]
    distance = np.linalg.norm(model.atom_positions[:-1, 2] - following[:-1], axis=-1)
    bonded[:-1] = same_chain & present & (distance < _MAX_PEPTIDE_BOND)
    return following, bonded


def _angles(*points: np.ndarray) -> np.ndarray:
    """Bond angle (3 points) or dihedral (4 points) in radians for arrays ``[N, 3]``."""
    tensors = [torch.from_numpy(np.asarray(p, dtype=np.float64)) for p in points]
    function = bond_angle if len(tensors) == 3 else dihedral
    return function(*tensors).numpy()


def measure(models: list[BuiltModel]) -> dict:
    """Median internal coordinates of every build-rule atom, as the JSON document's content."""
    positions = np.concatenate([m.atom_positions for m in models]).astype(np.float64)
    mask = np.concatenate([m.atom_mask for m in models])
    aatype = np.concatenate([m.aatype for m in models])
    next_n, bonded = (np.concatenate(parts) for parts in zip(*(_next_n(m) for m in models)))

    backbone = mask[:, :3].all(-1) & (aatype < len(AA_ORDER))
    n, ca, c = (positions[backbone, slot] for slot in range(3))
    n_ca = float(np.median(np.linalg.norm(n - ca, axis=-1)))
    ca_c = float(np.median(np.linalg.norm(c - ca, axis=-1)))
    n_ca_c = float(np.median(_angles(n, ca, c)))
    backbone_local = {
        "N": [n_ca * np.cos(n_ca_c), n_ca * np.sin(n_ca_c), 0.0],
        "CA": [0.0, 0.0, 0.0],
        "C": [ca_c, 0.0, 0.0],
    }

    atoms: dict[str, dict[str, dict[str, float]]] = {}
    counts: dict[str, int] = {}
    o_rule = BUILD_RULES[UNK_ONE][0]
    for index, aa in enumerate(AA_ORDER):
        names = ATOM14_NAMES[aa]
        complete = (aatype == index) & (mask == ATOM14_MASK[index]).all(-1)
        counts[aa] = int(complete.sum())
        if counts[aa] == 0:
            raise InputError(f"no complete {aa} residue in the data: cannot measure its geometry")
        residue = positions[complete]
        torsion_values = [_angles(residue[:, 0], residue[:, 1], residue[:, 2], next_n[complete])]
        torsion_values += [
            _angles(*(residue[:, names.index(atom)] for atom in chi)) for chi in CHI_ANGLES[aa]
        ]
        atoms[aa] = {}
        for rule in BUILD_RULES[aa]:
            a, b, c = (residue[:, names.index(p)] for p in rule.parents)
            d = residue[:, names.index(rule.atom)]
            use = bonded[complete] if rule is o_rule else np.ones(len(d), dtype=bool)
            offset = _angles(a, b, c, d)
            if rule.torsion is not None:
                offset = offset - torsion_values[rule.torsion]
            atoms[aa][rule.atom] = {
                "bond": float(np.median(np.linalg.norm(d - c, axis=-1)[use])),
                "angle": float(np.degrees(np.median(_angles(b, c, d)[use]))),
                "dihedral_offset": float(np.degrees(_circular_median(offset[use]))),
            }

    # Unknown residue type: O from all bonded residues of every type.
    with_o = mask[:, :4].all(-1) & bonded
    n, ca, c, o = (positions[with_o, slot] for slot in range(4))
    psi = _angles(n, ca, c, next_n[with_o])
    atoms[UNK_ONE] = {
        "O": {
            "bond": float(np.median(np.linalg.norm(o - c, axis=-1))),
            "angle": float(np.degrees(np.median(_angles(ca, c, o)))),
            "dihedral_offset": float(np.degrees(_circular_median(_angles(n, ca, c, o) - psi))),
        }
    }
    counts[UNK_ONE] = int(with_o.sum())
    return {
        "backbone": {"N-CA": n_ca, "CA-C": ca_c, "N-CA-C": float(np.degrees(n_ca_c))},
        "backbone_local": backbone_local,
        "atoms": atoms,
        "num_residues": counts,
    }


def _rounded(value):
    if isinstance(value, float):
        return round(value, _DECIMALS) + 0.0
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cryobuild.train.residue_geometry", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=_DEFAULT_DATA, help="directory of structures")
    parser.add_argument("--out", type=Path, default=_DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(
            f"error: data directory {args.data} not found; pass --data DIR (gzipped PDB files, "
            "optionally with index.tsv listing file and chain)",
            file=sys.stderr,
        )
        return 2
    try:
        models = _load(args.data)
        measured = measure(models)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    document = {
        "description": (
            "Ideal residue geometry for cryobuild.residues.BUILD_RULES: per residue type and atom "
            "d built from a, b, c: bond |c-d| (Å), angle b-c-d (degrees), dihedral a-b-c-d minus "
            "its torsion (degrees); backbone_local: N, CA, C in the residue frame (Å)."
        ),
        "source": _SOURCE,
        "statistic": "median over complete residues (circular median for dihedrals)",
        "generated_by": "python -m cryobuild.train.residue_geometry",
        "date": datetime.date.today().isoformat(),
        "num_files": len(models),
        **measured,
    }
    args.out.write_text(json.dumps(_rounded(document), indent=1) + "\n", encoding="utf-8")
    used = sum(measured["num_residues"][aa] for aa in AA_ORDER)
    print(f"wrote {args.out}: {used} complete residues from {len(models)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
