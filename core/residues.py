"""Amino-acid alphabet, the atom14 atom layout, chi angles, the side-chain build table, and how
far apart a chain's Cα can lie (`reach`).

The order is alphabetical by one-letter code (as in HMMER's amino alphabet, so residue-type
probabilities map onto pyhmmer profiles column for column). Index `UNK_INDEX` (20, one-letter
``"X"``, ``UNK``) stands for a residue of unknown type: it keeps only its backbone atoms.

Atom layout ("atom14"): every residue type stores its heavy atoms in at most `MAX_ATOMS` slots,
``N, CA, C, O, CB`` first (glycine has no CB) and then the side-chain atoms in the order and
naming of PDB files (`ATOM14_NAMES`).

Building atoms from torsions: N, CA and C come from the residue frame (`geometry.ideal_backbone`);
every later atom ``d`` is placed from three atoms ``a, b, c`` placed before it, with the bond
length ``|c-d|``, the bond angle ``b-c-d`` and the dihedral ``a-b-c-d`` (`BUILD_RULES`). The
dihedral is ``torsion + offset`` where the torsion is psi (for O), one of chi1..chi4, or none
(a fixed dihedral, e.g. inside aromatic rings). Which atoms define which atom is chemistry and is
written here; the numbers (lengths, angles, offsets and the ideal backbone in the frame) are
measured from high-resolution crystal structures by `cryobuild.train.residue_geometry` and read
from the package data file ``residue_geometry.json`` (`load_residue_geometry`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources

import numpy as np

__all__ = [
    "AA_ORDER",
    "AA_INDEX",
    "ONE_TO_THREE",
    "THREE_TO_ONE",
    "NUM_AA",
    "UNK_INDEX",
    "UNK_ONE",
    "UNK_THREE",
    "MAX_ATOMS",
    "BACKBONE_NAMES",
    "ATOM14_NAMES",
    "ATOM14_MASK",
    "TORSION_NAMES",
    "NUM_TORSIONS",
    "CHI_ANGLES",
    "CHI_ATOM_SLOTS",
    "CHI_MASK",
    "BuildRule",
    "BUILD_RULES",
    "AtomGeometry",
    "ResidueGeometry",
    "BuildTables",
    "GEOMETRY_RESOURCE",
    "load_residue_geometry",
    "build_tables",
    "one_letter",
    "one_hot",
    "CA_CA_DISTANCE",
    "CA_REACH_SLACK",
    "reach",
]

#: One-letter codes in network/profile order (HMMER's "ACDEFGHIKLMNPQRSTVWY").
AA_ORDER = "ACDEFGHIKLMNPQRSTVWY"
NUM_AA = len(AA_ORDER)
AA_INDEX = {aa: i for i, aa in enumerate(AA_ORDER)}

ONE_TO_THREE = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE",
    "G": "GLY", "H": "HIS", "I": "ILE", "K": "LYS", "L": "LEU",
    "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN", "R": "ARG",
    "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR",
}
THREE_TO_ONE = {three: one for one, three in ONE_TO_THREE.items()}

#: Residue-type index, one-letter and three-letter code of a residue of unknown type.
UNK_INDEX = NUM_AA
UNK_ONE = "X"
UNK_THREE = "UNK"
#: All residue types including the unknown one, indexed by aatype (0..20).
_TYPES = AA_ORDER + UNK_ONE

# ----------------------------------------------------------------------------- atom14 layout

#: Number of atom slots per residue (tryptophan has 14 heavy atoms).
MAX_ATOMS = 14
#: The backbone atoms every residue type has, in slots 0..3.
BACKBONE_NAMES = ("N", "CA", "C", "O")

_SIDE_CHAINS = {
    "A": ("CB",),
    "C": ("CB", "SG"),
    "D": ("CB", "CG", "OD1", "OD2"),
    "E": ("CB", "CG", "CD", "OE1", "OE2"),
    "F": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ"),
    "G": (),
    "H": ("CB", "CG", "ND1", "CD2", "CE1", "NE2"),
    "I": ("CB", "CG1", "CG2", "CD1"),
    "K": ("CB", "CG", "CD", "CE", "NZ"),
    "L": ("CB", "CG", "CD1", "CD2"),
    "M": ("CB", "CG", "SD", "CE"),
    "N": ("CB", "CG", "OD1", "ND2"),
    "P": ("CB", "CG", "CD"),
    "Q": ("CB", "CG", "CD", "OE1", "NE2"),
    "R": ("CB", "CG", "CD", "NE", "CZ", "NH1", "NH2"),
    "S": ("CB", "OG"),
    "T": ("CB", "OG1", "CG2"),
    "V": ("CB", "CG1", "CG2"),
    "W": ("CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"),
    "Y": ("CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH"),
    UNK_ONE: (),
}

#: Heavy-atom names per one-letter code (``"X"`` included), in atom14 slot order.
ATOM14_NAMES: dict[str, tuple[str, ...]] = {
    aa: BACKBONE_NAMES + _SIDE_CHAINS[aa] for aa in _TYPES
}


def _make_atom14_mask() -> np.ndarray:
    mask = np.zeros((len(_TYPES), MAX_ATOMS), dtype=bool)
    for index, aa in enumerate(_TYPES):
        mask[index, : len(ATOM14_NAMES[aa])] = True
    return mask


#: bool ``[21, 14]``: which slots a residue type (aatype index, 20 = unknown) uses.
ATOM14_MASK = _make_atom14_mask()

# ----------------------------------------------------------------------------- torsions

#: The torsions that drive atom placement; torsion arrays are ``[*, NUM_TORSIONS, 2]``.
TORSION_NAMES = ("psi", "chi1", "chi2", "chi3", "chi4")
NUM_TORSIONS = len(TORSION_NAMES)

#: Side-chain dihedral angles (IUPAC-IUB 1970 definitions): four atom names per chi.
CHI_ANGLES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "A": (),
    "C": (("N", "CA", "CB", "SG"),),
    "D": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "E": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "F": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "G": (),
    "H": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "I": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "K": (
        ("N", "CA", "CB", "CG"),
        ("CA", "CB", "CG", "CD"),
        ("CB", "CG", "CD", "CE"),
        ("CG", "CD", "CE", "NZ"),
    ),
    "L": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "M": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "N": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "P": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "Q": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "R": (
        ("N", "CA", "CB", "CG"),
        ("CA", "CB", "CG", "CD"),
        ("CB", "CG", "CD", "NE"),
        ("CG", "CD", "NE", "CZ"),
    ),
    "S": (("N", "CA", "CB", "OG"),),
    "T": (("N", "CA", "CB", "OG1"),),
    "V": (("N", "CA", "CB", "CG1"),),
    "W": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "Y": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    UNK_ONE: (),
}


def _make_chi_tables() -> tuple[np.ndarray, np.ndarray]:
    slots = np.zeros((len(_TYPES), NUM_TORSIONS - 1, 4), dtype=np.int64)
    mask = np.zeros((len(_TYPES), NUM_TORSIONS - 1), dtype=bool)
    for index, aa in enumerate(_TYPES):
        for k, names in enumerate(CHI_ANGLES[aa]):
            slots[index, k] = [ATOM14_NAMES[aa].index(name) for name in names]
            mask[index, k] = True
    return slots, mask


#: int64 ``[21, 4, 4]`` atom14 slots of the four atoms of chi1..chi4 (0 where absent) and
#: bool ``[21, 4]`` whether the residue type has that chi.
CHI_ATOM_SLOTS, CHI_MASK = _make_chi_tables()

# ----------------------------------------------------------------------------- build rules


@dataclasses.dataclass(frozen=True)
class BuildRule:
    """How one atom is placed from three atoms placed before it.

    Attributes
    ----------
    atom : str
        The atom placed (``d``).
    parents : tuple of 3 str
        ``(a, b, c)``: ``d`` is bonded to ``c``; the angle is ``b-c-d``, the dihedral ``a-b-c-d``.
    torsion : int or None
        Index into `TORSION_NAMES` of the torsion the dihedral follows (``dihedral = torsion +
        offset``), or None for a fixed dihedral.
    """

    atom: str
    parents: tuple[str, str, str]
    torsion: int | None


_PSI, _CHI1, _CHI2, _CHI3 = 0, 1, 2, 3

# Atoms that are neither O, CB nor the last atom of a chi angle: (atom, a, b, c, torsion).
# A branch atom follows the chi of its sibling (e.g. LEU CD2 = chi2 + offset); ring and
# guanidinium atoms beyond the last chi have fixed dihedrals.
_OTHER_RULES: dict[str, tuple[tuple[str, str, str, str, int | None], ...]] = {
    "D": (("OD2", "CA", "CB", "CG", _CHI2),),
    "E": (("OE2", "CB", "CG", "CD", _CHI3),),
    "F": (
        ("CD2", "CA", "CB", "CG", _CHI2),
        ("CE1", "CB", "CG", "CD1", None),
        ("CE2", "CB", "CG", "CD2", None),
        ("CZ", "CG", "CD1", "CE1", None),
    ),
    "H": (
        ("CD2", "CA", "CB", "CG", _CHI2),
        ("CE1", "CB", "CG", "ND1", None),
        ("NE2", "CB", "CG", "CD2", None),
    ),
    "I": (("CG2", "N", "CA", "CB", _CHI1),),
    "L": (("CD2", "CA", "CB", "CG", _CHI2),),
    "N": (("ND2", "CA", "CB", "CG", _CHI2),),
    "Q": (("NE2", "CB", "CG", "CD", _CHI3),),
    "R": (("NH1", "CD", "NE", "CZ", None), ("NH2", "CD", "NE", "CZ", None)),
    "T": (("CG2", "N", "CA", "CB", _CHI1),),
    "V": (("CG2", "N", "CA", "CB", _CHI1),),
    "W": (
        ("CD2", "CA", "CB", "CG", _CHI2),
        ("NE1", "CB", "CG", "CD1", None),
        ("CE2", "CB", "CG", "CD2", None),
        ("CE3", "CB", "CG", "CD2", None),
        ("CZ2", "CG", "CD2", "CE2", None),
        ("CZ3", "CG", "CD2", "CE3", None),
        ("CH2", "CD2", "CE2", "CZ2", None),
    ),
    "Y": (
        ("CD2", "CA", "CB", "CG", _CHI2),
        ("CE1", "CB", "CG", "CD1", None),
        ("CE2", "CB", "CG", "CD2", None),
        ("CZ", "CG", "CD1", "CE1", None),
        ("OH", "CD1", "CE1", "CZ", None),
    ),
}

_O_RULE = BuildRule("O", ("N", "CA", "C"), _PSI)
_CB_RULE = BuildRule("CB", ("N", "C", "CA"), None)


def _make_build_rules() -> dict[str, tuple[BuildRule, ...]]:
    rules = {}
    for aa in _TYPES:
        names = ATOM14_NAMES[aa]
        by_atom = {_O_RULE.atom: _O_RULE}
        if "CB" in names:
            by_atom["CB"] = _CB_RULE
        for k, (a, b, c, d) in enumerate(CHI_ANGLES[aa]):
            by_atom[d] = BuildRule(d, (a, b, c), _CHI1 + k)
        for d, a, b, c, torsion in _OTHER_RULES.get(aa, ()):
            by_atom[d] = BuildRule(d, (a, b, c), torsion)
        ordered = []
        for slot, name in enumerate(names[3:], start=3):
            rule = by_atom.get(name)
            if rule is None:
                raise ValueError(f"{ONE_TO_THREE.get(aa, UNK_THREE)} {name}: no build rule")
            late = [p for p in rule.parents if names.index(p) >= slot]
            if late:
                raise ValueError(f"{aa} {name}: parents {late} are not placed before it")
            ordered.append(rule)
        rules[aa] = tuple(ordered)
    return rules


#: Build rules per one-letter code (``"X"`` included) for slots 3.. in atom14 order.
BUILD_RULES: dict[str, tuple[BuildRule, ...]] = _make_build_rules()

# ----------------------------------------------------------------------------- measured geometry

#: The package data file written by ``python -m cryobuild.train.residue_geometry``.
GEOMETRY_RESOURCE = "residue_geometry.json"


@dataclasses.dataclass(frozen=True)
class AtomGeometry:
    """Internal coordinates of one atom (see `BuildRule`).

    Attributes
    ----------
    bond : float
        Bond length ``|c-d|`` in Å.
    angle : float
        Bond angle ``b-c-d`` in degrees.
    dihedral_offset : float
        Dihedral ``a-b-c-d`` minus the driving torsion, in degrees (the dihedral itself for a
        fixed one; 0 for the last atom of a chi angle).
    """

    bond: float
    angle: float
    dihedral_offset: float


@dataclasses.dataclass(frozen=True)
class ResidueGeometry:
    """The measured geometry in ``residue_geometry.json``.

    Attributes
    ----------
    source : str
        The data set the values were measured on.
    date : str
        ISO date of the measurement.
    num_residues : dict[str, int]
        Complete residues measured per one-letter code.
    backbone_local : float64 ``[3, 3]``
        Ideal positions in Å of N, CA, C in the residue frame (CA at the origin, C on +x,
        N in the xy-plane with y > 0; `geometry.Rigid.from_3_points`).
    atoms : dict[str, dict[str, AtomGeometry]]
        One-letter code -> atom name -> internal coordinates, for every `BUILD_RULES` atom.
    """

    source: str
    date: str
    num_residues: dict[str, int]
    backbone_local: np.ndarray
    atoms: dict[str, dict[str, AtomGeometry]]


@functools.lru_cache(maxsize=None)
def load_residue_geometry() -> ResidueGeometry:
    """Read ``residue_geometry.json`` from the package (once per process).

    Raises
    ------
    ValueError
        If the file lacks the geometry of an atom in `BUILD_RULES`.
    """
    text = resources.files("cryobuild").joinpath(GEOMETRY_RESOURCE).read_text(encoding="utf-8")
    data = json.loads(text)
    local = np.array([data["backbone_local"][name] for name in ("N", "CA", "C")], dtype=np.float64)
    atoms = {
        aa: {name: AtomGeometry(**values) for name, values in per_atom.items()}
        for aa, per_atom in data["atoms"].items()
    }
    missing = [
        f"{aa}:{rule.atom}"
        for aa, rules in BUILD_RULES.items()
        for rule in rules
        if rule.atom not in atoms.get(aa, {})
    ]
    if missing:
        raise ValueError(f"{GEOMETRY_RESOURCE} lacks the geometry of {', '.join(missing)}")
    return ResidueGeometry(
        source=data["source"],
        date=data["date"],
        num_residues=dict(data["num_residues"]),
        backbone_local=local,
        atoms=atoms,
    )


@dataclasses.dataclass(frozen=True)
class BuildTables:
    """`BUILD_RULES` and the measured geometry as arrays indexed by ``[aatype, slot]``.

    Slots without an atom (and slots 0..2, which come from the frame) have parents ``(0, 1, 2)``,
    a 1 Å bond, a 90° angle and a fixed dihedral, so that vectorised code placing them stays
    finite; their positions are masked out with `ATOM14_MASK`.

    Attributes
    ----------
    parents : int64 ``[21, 14, 3]``
        Slots of the atoms ``a, b, c`` each slot is built from.
    bond : float64 ``[21, 14]``
        Bond lengths in Å.
    angle : float64 ``[21, 14]``
        Bond angles in radians.
    dihedral_offset : float64 ``[21, 14]``
        Dihedral offsets in radians.
    torsion : int64 ``[21, 14]``
        Index into `TORSION_NAMES` of the driving torsion; ``NUM_TORSIONS`` for a fixed dihedral.
    backbone_local : float64 ``[3, 3]``
        Ideal N, CA, C in the residue frame (Å).
    """

    parents: np.ndarray
    bond: np.ndarray
    angle: np.ndarray
    dihedral_offset: np.ndarray
    torsion: np.ndarray
    backbone_local: np.ndarray


@functools.lru_cache(maxsize=None)
def build_tables() -> BuildTables:
    """Array form of `BUILD_RULES` with the geometry of `load_residue_geometry` (cached)."""
    geometry = load_residue_geometry()
    shape = (len(_TYPES), MAX_ATOMS)
    parents = np.broadcast_to(np.arange(3), shape + (3,)).copy()
    bond = np.ones(shape)
    angle = np.full(shape, np.pi / 2)
    offset = np.zeros(shape)
    torsion = np.full(shape, NUM_TORSIONS, dtype=np.int64)
    for index, aa in enumerate(_TYPES):
        names = ATOM14_NAMES[aa]
        for slot, rule in enumerate(BUILD_RULES[aa], start=3):
            values = geometry.atoms[aa][rule.atom]
            parents[index, slot] = [names.index(p) for p in rule.parents]
            bond[index, slot] = values.bond
            angle[index, slot] = np.deg2rad(values.angle)
            offset[index, slot] = np.deg2rad(values.dihedral_offset)
            torsion[index, slot] = NUM_TORSIONS if rule.torsion is None else rule.torsion
    return BuildTables(parents, bond, angle, offset, torsion, geometry.backbone_local)


def one_letter(aatype: int) -> str:
    """One-letter code of a residue-type index (0..19, or `UNK_INDEX` for ``"X"``)."""
    if not 0 <= aatype <= UNK_INDEX:
        raise ValueError(f"residue type index must be in 0..{UNK_INDEX}, got {aatype}")
    return _TYPES[aatype]


def one_hot(aatype: np.ndarray) -> np.ndarray:
    """float32 ``[R, 20]``: residue-type indices ``aatype`` ``[R]`` one-hot; `UNK_INDEX` gives a
    row of zeros (no type)."""
    return np.eye(NUM_AA + 1, dtype=np.float32)[np.asarray(aatype, dtype=np.int64)][:, :NUM_AA]


#: Å, CA-CA distance of consecutive residues (trans peptide): the most a residue can span.
CA_CA_DISTANCE = 3.8
#: Å added to ``gap * CA_CA_DISTANCE`` when asking whether residues ``gap`` apart in sequence
#: can be where they are: predicted Cα are off by a few tenths of an Å (consecutive Cα 3.81 Å
#: apart were refused without it).
CA_REACH_SLACK = 1.0


def reach(numbers_apart):
    """Å: the farthest apart the Cα of two residues ``numbers_apart`` apart in the sequence (an
    int or int array) may lie, ``numbers_apart * CA_CA_DISTANCE + CA_REACH_SLACK``: the one test
    of every threading stage, and of `cryobuild.validation`, whether numbering can hold."""
    return numbers_apart * CA_CA_DISTANCE + CA_REACH_SLACK
