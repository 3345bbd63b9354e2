"""Geometry checks of atomic models: peptide bonds, bond lengths and angles, clashes, Ramachandran.

This module defines a model's ideal covalent geometry once (`geometry_restraints`) and its
non-bonded contacts once (`NonbondedTopology`); `validate_geometry` scores a model against them
and `cryobuild.relax` minimises against them. Coordinates are in Å, angles in radians unless a
name says degrees. The computations are NumPy; dihedrals and bond angles come from the
project's single implementation in `cryobuild.geometry` (torch, imported when first needed).

Definitions used by `validate_geometry`:

* **Peptide bonds**: C(i)-N(i+1) of residues that follow each other in the model's residue order,
  in the same chain, with consecutive residue numbers (`peptide_links`). A bond is ideal when it
  is within `PEPTIDE_BOND_TOLERANCE` (0.1 Å) of `PEPTIDE_BOND_LENGTH` (1.329 Å).
* **Clashes** (MolProbity-like, heavy atoms only): two atoms clash when their van der Waals
  spheres (`VDW_RADII`) overlap by more than `CLASH_OVERLAP` (0.4 Å), unless they belong to the
  same residue or are at most `MAX_EXCLUDED_BONDS` (3) covalent bonds apart across a peptide
  bond or a disulfide. ``clashscore`` is the number of clashing pairs per 1000 atoms.
* **Numbered out of reach**: residues next to each other in a chain whose Cα lie farther apart
  than their residue numbers can span, ``k * CA_CA_DISTANCE + CA_REACH_SLACK`` (4.8 Å for
  consecutive numbers; `numbered_out_of_reach`): numbering no chain can hold, e.g. a peptide
  bond 9 Å long.
* **Ramachandran outliers**: residues whose (phi, psi) falls in a bin outside the allowed region
  of their class (general, glycine, proline) in ``ramachandran.json``, which holds the bins that
  contain 99.8% of the residues of high-resolution crystal structures
  (``python -m cryobuild.train.ramachandran``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from .residues import (
    AA_INDEX,
    ATOM14_MASK,
    ATOM14_NAMES,
    BUILD_RULES,
    CHI_ATOM_SLOTS,
    MAX_ATOMS,
    NUM_TORSIONS,
    build_tables,
    one_letter,
    reach,
)

if TYPE_CHECKING:
    from .models import BuiltModel

__all__ = [
    "PEPTIDE_BOND_LENGTH",
    "PEPTIDE_BOND_TOLERANCE",
    "PEPTIDE_ANGLES",
    "PROLINE_RING_CLOSURE",
    "VDW_RADII",
    "CLASH_OVERLAP",
    "MAX_EXCLUDED_BONDS",
    "DISULFIDE_MAX_DISTANCE",
    "CIS_OMEGA_LIMIT",
    "RAMACHANDRAN_CLASSES",
    "RAMACHANDRAN_RESOURCE",
    "GeometryRestraints",
    "NonbondedTopology",
    "RamachandranTable",
    "GeometryReport",
    "peptide_links",
    "numbered_out_of_reach",
    "geometry_restraints",
    "nonbonded_topology",
    "backbone_dihedrals",
    "ramachandran_class",
    "load_ramachandran",
    "ramachandran_outliers",
    "ramachandran_restraints",
    "validate_geometry",
]

#: Ideal peptide C-N bond length in Å (Engh & Huber 1991, Acta Cryst. A47:392, C-NH1; the
#: median over 53,350 non-proline peptide bonds of the top240 set is 1.3293 Å).
PEPTIDE_BOND_LENGTH = 1.329
#: Largest deviation (Å) from `PEPTIDE_BOND_LENGTH` of a bond counted as ideal.
PEPTIDE_BOND_TOLERANCE = 0.1
#: Ideal bond angles (degrees) across the peptide bond between residue i and i+1 (Engh &
#: Huber 1991; top240 medians 116.6, 122.8, 121.4).
PEPTIDE_ANGLES = {"CA-C-N": 116.2, "O-C-N": 123.0, "C-N-CA": 121.7}
#: Proline ring closure (Å and degrees): the bond N-CD, the angles CA-N-CD and N-CD-CG, and
#: C(i-1)-N-CD. Medians over the 2,444 peptide-bonded prolines of the Kortemme/Richardson
#: top240 set (the data of ``residue_geometry.json``), measured for this module.
PROLINE_RING_CLOSURE = {"N-CD": 1.4747, "CA-N-CD": 111.22, "N-CD-CG": 102.59, "C-N-CD": 126.76}
#: Heavy-atom van der Waals radii (Å) by element: the radii of MolProbity's probe for C, N, O
#: and S (Word et al. 1999, J. Mol. Biol. 285:1711), carbon taken as the sp3 value for all
#: carbons. With them, deposited top240 structures have about 2 clashes per 1000 atoms.
VDW_RADII = {"C": 1.70, "N": 1.55, "O": 1.40, "S": 1.80}
#: Overlap (Å) of van der Waals spheres above which two atoms clash (MolProbity clashscore:
#: Word et al. 1999; Chen et al. 2010, Acta Cryst. D66:12).
CLASH_OVERLAP = 0.4
#: Atom pairs at most this many covalent bonds apart are never counted as clashes.
MAX_EXCLUDED_BONDS = 3
#: Two cysteine SG atoms closer than this (Å) form a disulfide (ideal S-S 2.03 Å); a
#: non-bonded S-S pair would clash below 3.2 Å anyway.
DISULFIDE_MAX_DISTANCE = 3.0
#: Peptides with |omega| below this (radians, 90 degrees) are cis.
CIS_OMEGA_LIMIT = np.pi / 2
#: Ramachandran classes, in the order of ``ramachandran.json``'s tables.
RAMACHANDRAN_CLASSES = ("general", "glycine", "proline")
#: The package data file written by ``python -m cryobuild.train.ramachandran``.
RAMACHANDRAN_RESOURCE = "ramachandran.json"

_N, _CA, _C, _O = range(4)
_PROLINE = AA_INDEX["P"]
_GLYCINE = AA_INDEX["G"]
_CYSTEINE = AA_INDEX["C"]
_PRO_CG, _PRO_CD = (ATOM14_NAMES["P"].index(name) for name in ("CG", "CD"))
_CYS_SG = ATOM14_NAMES["C"].index("SG")
#: Graph distance standing for "not connected" in `_bond_distances`.
_UNCONNECTED = MAX_ATOMS + 1


# ----------------------------------------------------------------------------- links


def peptide_links(model: BuiltModel) -> np.ndarray:
    """Which residues are peptide-bonded to the next residue in the model.

    Returns
    -------
    bool ``[R]``
        True at ``i`` when residue ``i + 1`` is in the same chain, has the residue number of
        ``i`` plus one, and C of ``i`` and N of ``i + 1`` are present. False for the last residue.
    """
    linked = np.zeros(model.num_residues, dtype=bool)
    linked[:-1] = (
        (model.chain_id[1:] == model.chain_id[:-1])
        & (model.residue_number[1:] == model.residue_number[:-1] + 1)
        & model.atom_mask[:-1, _C]
        & model.atom_mask[1:, _N]
    )
    return linked


def numbered_out_of_reach(model: BuiltModel) -> int:
    """How many pairs of residues next to each other in a chain of ``model`` (model order) lie
    farther apart, Cα to Cα, than their residue numbers can span (module docstring)."""
    same_chain = model.chain_id[1:] == model.chain_id[:-1]
    spans = np.linalg.norm(np.diff(model.ca, axis=0), axis=1)
    return int(np.sum(same_chain & (spans > reach(np.diff(model.residue_number)))))


def _links_or_default(model: BuiltModel, links: np.ndarray | None) -> np.ndarray:
    """``links`` (bool ``[R]``, checked) or, when None, `peptide_links` of ``model``."""
    links = peptide_links(model) if links is None else np.asarray(links, dtype=bool)
    if links.shape != (model.num_residues,):
        raise ValueError(f"links must be bool [{model.num_residues}], got {links.shape}")
    return links


def _disulfides(model: BuiltModel) -> np.ndarray:
    """Residue pairs ``[D, 2]`` (int64, first < second) of cysteines whose SG atoms are closer
    than `DISULFIDE_MAX_DISTANCE`."""
    from scipy.spatial import cKDTree

    cys = np.flatnonzero((model.aatype == _CYSTEINE) & model.atom_mask[:, _CYS_SG])
    if len(cys) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = cKDTree(model.atom_positions[cys, _CYS_SG]).query_pairs(
        DISULFIDE_MAX_DISTANCE, output_type="ndarray"
    )
    return np.sort(cys[pairs], axis=1).astype(np.int64).reshape(-1, 2)


def _atom_ids(model: BuiltModel) -> np.ndarray:
    """Index of every present atom in the flat atom order (row-major over ``atom_mask``),
    int64 ``[R, 14]``, -1 where absent."""
    ids = np.full(model.atom_mask.shape, -1, dtype=np.int64)
    ids[model.atom_mask] = np.arange(int(model.atom_mask.sum()))
    return ids


def _rows(
    ids: np.ndarray, residues: np.ndarray, slots: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flat atom indices ``[..., k]`` of rows of ``k`` atoms given by residue indices and atom14
    slots (broadcast against each other to ``[..., k]``), and whether all ``k`` atoms of a row
    are present ``[...]``."""
    atoms = ids[residues, slots]
    return atoms, (atoms >= 0).all(-1)


# ----------------------------------------------------------------------------- restraints


@dataclasses.dataclass(frozen=True)
class GeometryRestraints:
    """The ideal covalent geometry of a model, as restraints on its flat atoms.

    Atom indices refer to the model's present atoms in row-major order of ``atom_mask`` (so
    ``model.atom_positions[model.atom_mask]`` gives their positions).

    Attributes
    ----------
    bond_atoms : int64 ``[B, 2]``
        Bonded pairs: within residues (N-CA, CA-C, every build-rule atom to its parent, the
        proline N-CD) and the peptide C(i)-N(i+1).
    bond_ideal : float64 ``[B]``
        Ideal lengths in Å.
    angle_atoms : int64 ``[G, 3]``
        Angles ``a-b-c`` (at ``b``): N-CA-C, the build-rule angles, the proline ring closure and
        the peptide CA-C-N, O-C-N, C-N-CA (C-N-CD for proline).
    angle_ideal : float64 ``[G]``
        Ideal angles in radians.
    dihedral_atoms : int64 ``[D, 4]``
        Fixed dihedrals of build-rule atoms (the CB improper that keeps L chirality, ring and
        guanidinium planarity).
    dihedral_ideal : float64 ``[D]``
        Their ideal values in radians.
    branch_atoms : int64 ``[K, 4]``
        Dihedrals of branch atoms that follow a chi angle with an offset (e.g. LEU CD2,
        ILE CG2: the chirality and planarity of branch points).
    branch_reference : int64 ``[K, 4]``
        The atoms of the chi angle each branch dihedral follows.
    branch_offset : float64 ``[K]``
        Ideal ``dihedral - chi`` in radians.
    omega_atoms : int64 ``[W, 4]``
        CA(i), C(i), N(i+1), CA(i+1) of each peptide bond with all four atoms present.
    omega_ideal : float64 ``[W]``
        pi (trans), or 0 for a proline peptide that is cis in the model.
    """

    bond_atoms: np.ndarray
    bond_ideal: np.ndarray
    angle_atoms: np.ndarray
    angle_ideal: np.ndarray
    dihedral_atoms: np.ndarray
    dihedral_ideal: np.ndarray
    branch_atoms: np.ndarray
    branch_reference: np.ndarray
    branch_offset: np.ndarray
    omega_atoms: np.ndarray
    omega_ideal: np.ndarray

    def __post_init__(self):
        groups = {
            "bond": (self.bond_atoms, self.bond_ideal, 2),
            "angle": (self.angle_atoms, self.angle_ideal, 3),
            "dihedral": (self.dihedral_atoms, self.dihedral_ideal, 4),
            "branch": (self.branch_atoms, self.branch_offset, 4),
            "omega": (self.omega_atoms, self.omega_ideal, 4),
        }
        for name, (atoms, ideal, width) in groups.items():
            if atoms.shape != (len(ideal), width):
                raise ValueError(
                    f"{name} restraints: atoms {atoms.shape} do not match {len(ideal)} values "
                    f"of {width} atoms"
                )
        if self.branch_reference.shape != self.branch_atoms.shape:
            raise ValueError("branch_reference must have the shape of branch_atoms")


def geometry_restraints(model: BuiltModel, links: np.ndarray | None = None) -> GeometryRestraints:
    """The bonds, angles and dihedrals of ``model`` with their ideal values.

    Intra-residue values come from the measured residue geometry (`residues.build_tables`), the
    peptide values from `PEPTIDE_BOND_LENGTH` and `PEPTIDE_ANGLES`, the proline ring closure
    from `PROLINE_RING_CLOSURE`. A restraint is made only when all of its atoms are present.
    Omega targets are trans, except for proline peptides that are cis in ``model``.

    Parameters
    ----------
    model : BuiltModel
        The model.
    links : bool ``[R]``, optional
        Residues peptide-bonded to the next one; `peptide_links` by default.
    """
    links = _links_or_default(model, links)
    tables = build_tables()
    ids = _atom_ids(model)
    aatype = model.aatype
    num = model.num_residues
    local = tables.backbone_local
    n_ca, ca_c = np.linalg.norm(local[0] - local[1]), np.linalg.norm(local[2] - local[1])
    n_ca_c = _angle_between(local[0] - local[1], local[2] - local[1])

    residue = np.arange(num)[:, None]  # [R, 1]
    built = np.arange(3, MAX_ATOMS)  # [11]: the slots placed by build rules
    parents = tables.parents[aatype][:, 3:]  # [R, 11, 3]
    rule_residue = residue[..., None]  # [R, 1, 1]
    rule_slots = np.broadcast_to(built[:, None], parents.shape[:2] + (1,))  # [R, 11, 1]
    quads = np.concatenate([parents, rule_slots], -1)  # [R, 11, 4]: a, b, c, d
    bonds, angles = [], []

    def add(store, residues, slots, ideal):
        """Rows ``residues [N, k]`` x ``slots [k]`` (broadcast) whose atoms are all present."""
        atoms, present = _rows(ids, residues, np.asarray(slots))
        store.append((atoms[present], np.broadcast_to(ideal, present.shape)[present]))

    # Backbone within residues, then build-rule atoms: bond c-d, angle b-c-d, fixed a-b-c-d.
    add(bonds, residue, (_N, _CA), n_ca)
    add(bonds, residue, (_CA, _C), ca_c)
    add(angles, residue, (_N, _CA, _C), n_ca_c)
    add(bonds, rule_residue, quads[..., 2:], tables.bond[aatype][:, 3:])
    add(angles, rule_residue, quads[..., 1:], tables.angle[aatype][:, 3:])
    torsion = tables.torsion[aatype][:, 3:]  # [R, 11]
    offset = tables.dihedral_offset[aatype][:, 3:]  # [R, 11]
    atoms, present = _rows(ids, rule_residue, quads)
    fixed = present & (torsion == NUM_TORSIONS)
    # Branch atoms: driven by a chi angle whose last atom they are not.
    chi = np.clip(torsion - 1, 0, CHI_ATOM_SLOTS.shape[1] - 1)  # [R, 11]: chi index (0 = chi1)
    chi_slots = CHI_ATOM_SLOTS[aatype[:, None], chi]  # [R, 11, 4]
    reference, reference_present = _rows(ids, rule_residue, chi_slots)
    branch = (torsion >= 1) & (torsion < NUM_TORSIONS) & (chi_slots[..., 3] != built)
    branch &= present & reference_present

    # Proline ring closure.
    closure = PROLINE_RING_CLOSURE
    pro = residue[aatype == _PROLINE]
    add(bonds, pro, (_N, _PRO_CD), closure["N-CD"])
    add(angles, pro, (_CA, _N, _PRO_CD), np.deg2rad(closure["CA-N-CD"]))
    add(angles, pro, (_N, _PRO_CD, _PRO_CG), np.deg2rad(closure["N-CD-CG"]))

    # Peptide bonds between residue i (shift 0) and i + 1 (shift 1).
    first = residue[links]  # [L, 1]
    add(bonds, first + (0, 1), (_C, _N), PEPTIDE_BOND_LENGTH)
    add(angles, first + (0, 0, 1), (_CA, _C, _N), np.deg2rad(PEPTIDE_ANGLES["CA-C-N"]))
    add(angles, first + (0, 0, 1), (_O, _C, _N), np.deg2rad(PEPTIDE_ANGLES["O-C-N"]))
    add(angles, first + (0, 1, 1), (_C, _N, _CA), np.deg2rad(PEPTIDE_ANGLES["C-N-CA"]))
    before_pro = first[aatype[first[:, 0] + 1] == _PROLINE]
    add(angles, before_pro + (0, 1, 1), (_C, _N, _PRO_CD), np.deg2rad(closure["C-N-CD"]))
    omega_atoms, present = _rows(ids, first + (0, 0, 1, 1), np.array((_CA, _C, _N, _CA)))
    omega_atoms = omega_atoms[present]
    positions = model.atom_positions[model.atom_mask].astype(np.float64)
    omega = _angles(positions, omega_atoms, 4)
    cis_proline = (aatype[first[present, 0] + 1] == _PROLINE) & (np.abs(omega) < CIS_OMEGA_LIMIT)

    def stack(store, width):
        atoms = np.concatenate([a for a, _ in store]).reshape(-1, width).astype(np.int64)
        return atoms, np.concatenate([v for _, v in store]).astype(np.float64)

    bond_atoms, bond_ideal = stack(bonds, 2)
    angle_atoms, angle_ideal = stack(angles, 3)
    return GeometryRestraints(
        bond_atoms=bond_atoms,
        bond_ideal=bond_ideal,
        angle_atoms=angle_atoms,
        angle_ideal=angle_ideal,
        dihedral_atoms=atoms[fixed].astype(np.int64).reshape(-1, 4),
        dihedral_ideal=offset[fixed].astype(np.float64),
        branch_atoms=atoms[branch].astype(np.int64).reshape(-1, 4),
        branch_reference=reference[branch].astype(np.int64).reshape(-1, 4),
        branch_offset=offset[branch].astype(np.float64),
        omega_atoms=omega_atoms.astype(np.int64).reshape(-1, 4),
        omega_ideal=np.where(cis_proline, 0.0, np.pi),
    )


def _angle_between(u: np.ndarray, v: np.ndarray) -> float:
    """Angle in radians between two vectors ``[3]``."""
    return float(np.arctan2(np.linalg.norm(np.cross(u, v)), np.dot(u, v)))


def _angles(positions: np.ndarray, atoms: np.ndarray, width: int) -> np.ndarray:
    """Bond angles (``width`` 3: atom triples ``[N, 3]``) or dihedral angles (``width`` 4:
    quadruples ``[N, 4]``) of atoms in ``positions [A, 3]``; radians ``[N]``."""
    import torch

    from .geometry import bond_angle, dihedral

    points = torch.from_numpy(positions[atoms.reshape(-1, width)])  # [N, width, 3]
    return (bond_angle if width == 3 else dihedral)(*points.unbind(-2)).numpy()


# ----------------------------------------------------------------------------- contacts


@functools.lru_cache(maxsize=None)
def _bond_distances() -> np.ndarray:
    """Covalent-graph distances between the atom14 slots of each residue type.

    Returns int64 ``[21, 14, 14]`` (number of bonds; `_UNCONNECTED` between absent slots).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    tables = build_tables()
    result = np.full(ATOM14_MASK.shape + (MAX_ATOMS,), _UNCONNECTED, np.int64)
    for index in range(len(result)):
        aa = one_letter(index)
        edges = [(_N, _CA), (_CA, _C)]
        edges += [
            (int(tables.parents[index, slot, 2]), slot)
            for slot in range(3, 3 + len(BUILD_RULES[aa]))
        ]
        if index == _PROLINE:
            edges.append((_N, _PRO_CD))
        first, second = np.array(edges).T
        graph = csr_matrix((np.ones(len(edges)), (first, second)), shape=(MAX_ATOMS, MAX_ATOMS))
        hops = shortest_path(graph, directed=False, unweighted=True)
        result[index] = np.where(np.isfinite(hops), hops, _UNCONNECTED).astype(np.int64)
    return result


@functools.lru_cache(maxsize=None)
def _radius_table() -> np.ndarray:
    """Van der Waals radius (Å) of each atom14 slot of each residue type, float64 ``[21, 14]``
    (0 in unused slots); the element is the first letter of the PDB atom name."""
    table = np.zeros(ATOM14_MASK.shape)
    for index in range(len(table)):
        for slot, name in enumerate(ATOM14_NAMES[one_letter(index)]):
            table[index, slot] = VDW_RADII[name[0]]
    return table


@dataclasses.dataclass(frozen=True)
class NonbondedTopology:
    """Which heavy-atom pairs of a model can clash, and at what distance.

    Atom indices refer to the model's present atoms in row-major order of ``atom_mask``.

    Attributes
    ----------
    residue : int64 ``[A]``
        Residue index of each atom; pairs within one residue never clash.
    radius : float64 ``[A]``
        Van der Waals radius of each atom in Å (`VDW_RADII`).
    excluded : int64 ``[E]``
        Sorted keys ``i * A + j`` (``i < j``) of atom pairs in different residues at most
        `MAX_EXCLUDED_BONDS` bonds apart across a peptide bond or a disulfide.
    """

    residue: np.ndarray
    radius: np.ndarray
    excluded: np.ndarray

    def __post_init__(self):
        if self.radius.shape != self.residue.shape:
            raise ValueError(f"radius {self.radius.shape} and residue {self.residue.shape} differ")

    @property
    def max_limit(self) -> float:
        """The largest clash distance of any pair of atoms, in Å."""
        return 2 * float(self.radius.max(initial=0.0)) - CLASH_OVERLAP

    def contacts(self, positions: np.ndarray, margin: float = 0.0) -> tuple[np.ndarray, ...]:
        """Non-bonded pairs closer than their clash distance plus ``margin``.

        Parameters
        ----------
        positions : ``[A, 3]``
            Atom positions in Å.
        margin : float
            Extra distance in Å (a neighbour-list skin); 0 gives exactly the clashing pairs.

        Returns
        -------
        first, second : int64 ``[P]``
            Atom indices with ``first < second``.
        limit : float64 ``[P]``
            The clash distance of each pair, ``r_i + r_j - CLASH_OVERLAP``, in Å.
        """
        from scipy.spatial import cKDTree

        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(self.radius), 3):
            raise ValueError(f"positions must be [{len(self.radius)}, 3], got {positions.shape}")
        pairs = cKDTree(positions).query_pairs(self.max_limit + margin, output_type="ndarray")
        first, second = pairs.T.astype(np.int64).reshape(2, -1)
        keep = self.residue[first] != self.residue[second]
        keys = first * len(self.radius) + second
        keep &= ~np.isin(keys, self.excluded, assume_unique=False)
        first, second = first[keep], second[keep]
        limit = self.radius[first] + self.radius[second] - CLASH_OVERLAP
        distance = np.linalg.norm(positions[first] - positions[second], axis=-1)
        close = distance < limit + margin
        return first[close], second[close], limit[close]


def _cross_bond_exclusions(
    ids: np.ndarray, aatype: np.ndarray, bonds: np.ndarray, slots: tuple[int, int]
) -> np.ndarray:
    """Atom-pair keys (unsorted, ``i * A + j`` with ``i < j``) within `MAX_EXCLUDED_BONDS` bonds
    across bonds between residue pairs ``bonds [K, 2]`` joining slot ``slots[0]`` of the first
    residue to ``slots[1]`` of the second."""
    if len(bonds) == 0:
        return np.zeros(0, dtype=np.int64)
    hops = _bond_distances()
    first, second = bonds[:, 0], bonds[:, 1]
    # [K, 14] hops to the bonded atom in each residue => [K, 14, 14] hops across the bond
    across = (
        hops[aatype[first], :, slots[0]][:, :, None]
        + 1
        + hops[aatype[second], slots[1]][:, None, :]
    )
    near = across <= MAX_EXCLUDED_BONDS
    k, a, b = np.nonzero(near)
    atom_a, atom_b = ids[first[k], a], ids[second[k], b]
    present = (atom_a >= 0) & (atom_b >= 0)
    low, high = np.minimum(atom_a, atom_b)[present], np.maximum(atom_a, atom_b)[present]
    return low * int((ids >= 0).sum()) + high


def nonbonded_topology(model: BuiltModel, links: np.ndarray | None = None) -> NonbondedTopology:
    """The `NonbondedTopology` of ``model``.

    Parameters
    ----------
    model : BuiltModel
        The model; cysteines whose SG atoms are closer than `DISULFIDE_MAX_DISTANCE` are
        treated as disulfide-bonded.
    links : bool ``[R]``, optional
        Residues peptide-bonded to the next one; `peptide_links` by default.
    """
    links = _links_or_default(model, links)
    ids = _atom_ids(model)
    residue, slot = np.nonzero(model.atom_mask)
    radius = _radius_table()[model.aatype[residue], slot]
    first = np.flatnonzero(links)
    excluded = np.concatenate(
        [
            _cross_bond_exclusions(ids, model.aatype, np.stack([first, first + 1], 1), (_C, _N)),
            _cross_bond_exclusions(ids, model.aatype, _disulfides(model), (_CYS_SG, _CYS_SG)),
        ]
    )
    return NonbondedTopology(residue.astype(np.int64), radius, np.unique(excluded))


# ----------------------------------------------------------------------------- Ramachandran


def _phi_psi_atoms(model: BuiltModel, links: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat atom indices of every residue's phi (C(i-1), N, CA, C) and psi (N, CA, C, N(i+1))
    quadruples, int64 ``[R, 4]`` each, and which are defined, bool ``[2, R]`` (linked on that
    side and all four atoms present)."""
    ids = _atom_ids(model)
    num = model.num_residues
    index = np.arange(num)
    previous = np.clip(index - 1, 0, None)
    following = np.clip(index + 1, None, max(num - 1, 0))
    quads, defined = [], []
    for residues, slots, linked in (
        # links[-1] is always False, so rolling it makes the first residue's phi undefined.
        (np.stack([previous, index, index, index], 1), (_C, _N, _CA, _C), np.roll(links, 1)),
        (np.stack([index, index, index, following], 1), (_N, _CA, _C, _N), links),
    ):
        atoms, present = _rows(ids, residues, np.array([slots]).repeat(num, 0))
        quads.append(atoms)
        defined.append(present & linked)
    return quads[0], quads[1], np.array(defined).reshape(2, num)


def backbone_dihedrals(
    model: BuiltModel, links: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """Phi and psi of every residue.

    Parameters
    ----------
    model : BuiltModel
        The model.
    links : bool ``[R]``, optional
        Residues peptide-bonded to the next one; `peptide_links` by default.

    Returns
    -------
    phi, psi : float64 ``[R]``
        C(i-1)-N-CA-C and N-CA-C-N(i+1) in degrees, in ``(-180, 180]``; NaN where undefined.
    defined : bool ``[R]``
        Both angles are defined: the residue is linked on both sides and its N, CA, C and the
        neighbours' C and N are present.
    """
    phi_atoms, psi_atoms, valid = _phi_psi_atoms(model, _links_or_default(model, links))
    positions = model.atom_positions[model.atom_mask].astype(np.float64)
    angles = []
    for atoms, ok in zip((phi_atoms, psi_atoms), valid):
        values = np.full(model.num_residues, np.nan)
        values[ok] = np.degrees(_angles(positions, atoms[ok], 4))
        angles.append(values)
    phi, psi = angles
    return phi, psi, np.isfinite(phi) & np.isfinite(psi)


def ramachandran_restraints(
    model: BuiltModel, links: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The residues a Ramachandran restraint applies to: those with phi and psi defined.

    Returns
    -------
    phi_atoms, psi_atoms : int64 ``[M, 4]``
        Flat atom indices (row-major over ``atom_mask``) of their phi and psi quadruples.
    classes : int64 ``[M]``
        Their `RAMACHANDRAN_CLASSES` index.
    """
    phi_atoms, psi_atoms, valid = _phi_psi_atoms(model, _links_or_default(model, links))
    both = valid.all(0)
    return phi_atoms[both], psi_atoms[both], ramachandran_class(model.aatype)[both]


def ramachandran_class(aatype: np.ndarray) -> np.ndarray:
    """Index into `RAMACHANDRAN_CLASSES` of residue types ``[R]`` (unknown types are general)."""
    aatype = np.asarray(aatype)
    classes = np.zeros(aatype.shape, dtype=np.int64)
    classes[aatype == _GLYCINE] = RAMACHANDRAN_CLASSES.index("glycine")
    classes[aatype == _PROLINE] = RAMACHANDRAN_CLASSES.index("proline")
    return classes


@dataclasses.dataclass(frozen=True)
class RamachandranTable:
    """Allowed (phi, psi) regions per residue class, from ``ramachandran.json``.

    Attributes
    ----------
    bin_degrees : float
        Bin width in degrees; bins start at -180.
    allowed : bool ``[C, B, B]``
        Per class (`RAMACHANDRAN_CLASSES` order), phi bin, psi bin: whether the bin is allowed.
    source : str
        The structures the table was derived from.
    """

    bin_degrees: float
    allowed: np.ndarray
    source: str

    def __post_init__(self):
        bins = int(round(360 / self.bin_degrees))
        if self.allowed.shape != (len(RAMACHANDRAN_CLASSES), bins, bins):
            raise ValueError(f"allowed must be [{len(RAMACHANDRAN_CLASSES)}, {bins}, {bins}]")

    @functools.cached_property
    def outside_distance(self) -> np.ndarray:
        """Degrees from each bin's centre to the nearest allowed bin's centre of its class,
        float64 ``[C, B, B]``, read-only (0 on allowed bins; distances on the (phi, psi) torus).
        Computed once per table (~0.1 s): every relaxation reads it."""
        bins = self.allowed.shape[1]
        centres = (np.arange(bins) + 0.5) * self.bin_degrees - 180.0
        phi, psi = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([phi.ravel(), psi.ravel()], -1)  # [B*B, 2]
        distance = np.zeros(self.allowed.shape)
        for index, allowed in enumerate(self.allowed):
            # [B*B, K, 2] wrapped angle differences to the K allowed bins
            delta = np.abs(grid[:, None] - grid[allowed.ravel()][None])
            delta = np.minimum(delta, 360.0 - delta)
            distance[index] = np.sqrt((delta**2).sum(-1)).min(1).reshape(bins, bins)
        distance.flags.writeable = False
        return distance

    def bin_index(self, degrees: np.ndarray) -> np.ndarray:
        """Bin index (int64, same shape) of angles in degrees (any range; NaN gives bin 0)."""
        wrapped = np.mod(np.nan_to_num(np.asarray(degrees, dtype=np.float64)) + 180.0, 360.0)
        return np.minimum((wrapped // self.bin_degrees).astype(np.int64), self.allowed.shape[1] - 1)


@functools.lru_cache(maxsize=None)
def load_ramachandran() -> RamachandranTable:
    """Read ``ramachandran.json`` from the package (once per process).

    The file stores, per class, one string per phi bin with one character per psi bin
    (``"1"`` allowed, ``"0"`` not).
    """
    text = resources.files("cryobuild").joinpath(RAMACHANDRAN_RESOURCE).read_text(encoding="utf-8")
    data = json.loads(text)
    allowed = np.array(
        [
            [[c == "1" for c in row] for row in data["classes"][name]["allowed"]]
            for name in RAMACHANDRAN_CLASSES
        ],
        dtype=bool,
    )
    return RamachandranTable(float(data["bin_degrees"]), allowed, data["source"])


def ramachandran_outliers(
    model: BuiltModel, links: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Residues whose (phi, psi) lies outside the allowed region of their class.

    Returns
    -------
    outlier : bool ``[R]``
        True for outliers (only where ``defined``).
    defined : bool ``[R]``
        Residues with both phi and psi defined (see `backbone_dihedrals`).
    """
    table = load_ramachandran()
    phi, psi, defined = backbone_dihedrals(model, links)
    classes = ramachandran_class(model.aatype)
    allowed = table.allowed[classes, table.bin_index(phi), table.bin_index(psi)]
    return defined & ~allowed, defined


# ----------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class GeometryReport:
    """Geometry quality of a model (see the module docstring for the definitions)."""

    num_residues: int
    num_atoms: int
    num_peptide_bonds: int  # consecutive residues of a chain with C(i) and N(i+1) present
    peptide_bond_ideal_fraction: float  # of peptide bonds within 0.1 Å of 1.329 Å
    peptide_bond_mean_deviation: float  # Å, mean |C-N - 1.329|
    bond_rmsd: float  # Å, all bond restraints of `geometry_restraints`
    angle_rmsd: float  # degrees, all angle restraints of `geometry_restraints`
    num_clashes: int  # non-bonded pairs with van der Waals overlap > 0.4 Å
    clashscore: float  # clashes per 1000 atoms
    num_ramachandran_residues: int  # residues with phi and psi defined
    num_ramachandran_outliers: int
    ramachandran_outlier_fraction: float  # of residues with phi and psi defined
    num_numbered_out_of_reach: int  # `numbered_out_of_reach`

    def to_dict(self) -> dict[str, int | float]:
        """The report as a flat ``{name: value}`` dict of Python ints and floats (JSON-ready)."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for a person: what a refinement program's validation would show first."""
        return (f"bonds {self.bond_rmsd:.3f} Å and angles {self.angle_rmsd:.2f}° rms from ideal, "
                f"{self.peptide_bond_ideal_fraction:.0%} of peptide bonds within 0.1 Å of 1.33 Å, "
                f"clashscore {self.clashscore:.1f}, Ramachandran outliers "
                f"{self.ramachandran_outlier_fraction:.1%} ({self.num_ramachandran_outliers} of "
                f"{self.num_ramachandran_residues})")


#: Atoms per "1000 atoms" of the clashscore.
_PER_THOUSAND = 1000.0


def _fraction(count: float, total: int) -> float:
    return float(count) / total if total else 0.0


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if len(values) else 0.0


def validate_geometry(model: BuiltModel) -> GeometryReport:
    """Score the covalent geometry, clashes and backbone conformation of ``model``.

    All fractions are 0 when their denominator is 0. Takes well under a second for 2,000
    residues.
    """
    links = peptide_links(model)
    positions = model.atom_positions[model.atom_mask].astype(np.float64)
    num_atoms = len(positions)

    index = np.flatnonzero(links)
    peptide = np.linalg.norm(
        model.atom_positions[index, _C].astype(np.float64) - model.atom_positions[index + 1, _N],
        axis=-1,
    )
    deviation = np.abs(peptide - PEPTIDE_BOND_LENGTH)

    restraints = geometry_restraints(model, links)
    bonds = positions[restraints.bond_atoms]  # [B, 2, 3]
    bond_error = np.linalg.norm(bonds[:, 0] - bonds[:, 1], axis=-1) - restraints.bond_ideal
    angle_error = _angles(positions, restraints.angle_atoms, 3) - restraints.angle_ideal

    first, _, _ = nonbonded_topology(model, links).contacts(positions)
    outliers, defined = ramachandran_outliers(model, links)
    return GeometryReport(
        num_residues=model.num_residues,
        num_atoms=num_atoms,
        num_peptide_bonds=len(index),
        peptide_bond_ideal_fraction=_fraction(
            np.sum(deviation <= PEPTIDE_BOND_TOLERANCE), len(index)
        ),
        peptide_bond_mean_deviation=float(deviation.mean()) if len(index) else 0.0,
        bond_rmsd=_rms(bond_error),
        angle_rmsd=float(np.degrees(_rms(angle_error))),
        num_clashes=len(first),
        clashscore=_PER_THOUSAND * _fraction(len(first), num_atoms),
        num_ramachandran_residues=int(defined.sum()),
        num_ramachandran_outliers=int(outliers.sum()),
        ramachandran_outlier_fraction=_fraction(outliers.sum(), int(defined.sum())),
        num_numbered_out_of_reach=numbered_out_of_reach(model),
    )
