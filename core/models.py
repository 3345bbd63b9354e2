"""Atomic models: the `BuiltModel` type and mmCIF/PDB reading and writing (via gemmi).

A model stores each residue's heavy atoms in the atom14 layout of `cryobuild.residues`
(``N, CA, C, O, CB, ...``); coordinates are in Å. This module is NumPy-only; gemmi is
imported when a file is read or written.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import string
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomic
from .errors import InputError
from .residues import (
    AA_INDEX,
    ATOM14_MASK,
    ATOM14_NAMES,
    MAX_ATOMS,
    ONE_TO_THREE,
    THREE_TO_ONE,
    UNK_INDEX,
    UNK_ONE,
    UNK_THREE,
    one_letter,
)

__all__ = ["BuiltModel", "model_format", "read_model", "to_structure", "write_model", "model_from_ca"]

_GZIP_MAGIC = b"\x1f\x8b"
_CA_SLOT = ATOM14_NAMES[UNK_ONE].index("CA")
#: Columns 79-80 (0-based 78:80) of PDB ATOM/HETATM records: the formal charge.
_PDB_CHARGE_COLUMNS = slice(78, 80)
#: Names tried, in order, for residues whose chain name is blank (old PDB files).
_SPARE_CHAIN_NAMES = string.ascii_uppercase + string.ascii_lowercase + string.digits
_FORMATS = {".cif": "cif", ".mmcif": "cif", ".pdb": "pdb", ".ent": "pdb"}
#: Decimals written for coordinates (Å) and B-factors, as the PDB format has them.
_COORDINATE_DECIMALS = 3
_B_FACTOR_DECIMALS = 2
#: Confidence is a percentage; C-alpha detector scores are probabilities.
_PERCENT = 100.0
#: The ``_atom_site`` columns gemmi 0.7 writes for a model. A model with no residues is written
#: with this table's header and no rows: without the table PyMOL 3.2 loads no object ("no map
#: coefficients or coordinates found"), with it an object of no atoms; gemmi and ChimeraX's
#: reader (readcif: a loop that ends before any value has no rows) read it as no atoms.
_ATOM_SITE_COLUMNS = (
    "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id",
    "label_asym_id", "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y",
    "Cartn_z", "occupancy", "B_iso_or_equiv", "pdbx_formal_charge", "auth_seq_id", "auth_asym_id",
    "pdbx_PDB_model_num",
)


@dataclasses.dataclass(frozen=True, eq=False)
class BuiltModel:
    """A protein model in atom14 layout (one model, protein residues only).

    Attributes
    ----------
    atom_positions : float32 ``[R, 14, 3]``
        Heavy-atom positions in Å (``residues.ATOM14_NAMES`` order); 0 where absent.
    atom_mask : bool ``[R, 14]``
        Which atoms are present (only slots the residue type has).
    aatype : int64 ``[R]``
        Residue type: index into ``AA_ORDER``, or 20 (``UNK``) for an unknown type.
    residue_number : int64 ``[R]``
        Author residue numbers (insertion codes are not kept).
    chain_id : str ``[R]``
        Chain name of each residue.
    confidence : float32 ``[R]``
        Per-residue confidence, 0-100 for models built here (written to every atom's
        B-factor; `read_model` stores the CA B-factor of deposited models).
    entity_sequences : dict[str, str]
        Chain name -> full sequence (one-letter codes, ``X`` for unknown), for chains whose
        full sequence is known; it may be longer than the modelled residues.

    Instances compare by identity (``eq=False``): arrays have no single truth value.
    """

    atom_positions: np.ndarray
    atom_mask: np.ndarray
    aatype: np.ndarray
    residue_number: np.ndarray
    chain_id: np.ndarray
    confidence: np.ndarray
    entity_sequences: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        positions = np.asarray(self.atom_positions, dtype=np.float32)
        mask = np.asarray(self.atom_mask, dtype=bool)
        aatype = np.asarray(self.aatype, dtype=np.int64).reshape(-1)
        numbers = np.asarray(self.residue_number, dtype=np.int64).reshape(-1)
        chains = np.asarray(self.chain_id, dtype=str).reshape(-1)
        confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        num = len(aatype)
        if positions.shape != (num, MAX_ATOMS, 3) or mask.shape != (num, MAX_ATOMS):
            raise ValueError(
                f"need atom_positions [R, {MAX_ATOMS}, 3] and atom_mask [R, {MAX_ATOMS}] with "
                f"R = {num}, got {positions.shape} and {mask.shape}"
            )
        per_residue = {"residue_number": numbers, "chain_id": chains, "confidence": confidence}
        for name, array in per_residue.items():
            if array.shape != (num,):
                raise ValueError(f"{name} must have shape [{num}], got {array.shape}")
        if num and (aatype.min() < 0 or aatype.max() > UNK_INDEX):
            raise ValueError(f"aatype values must be in 0..{UNK_INDEX}")
        if np.any(mask & ~ATOM14_MASK[aatype]):
            raise ValueError("atom_mask marks atoms in slots that the residue type does not have")
        if not np.all(np.isfinite(positions[mask])) or not np.all(np.isfinite(confidence)):
            raise ValueError("atom positions and confidence must be finite")
        if any(len(name) == 0 for name in chains):
            raise ValueError("chain ids must be non-empty strings")
        sequences = {str(chain): str(seq) for chain, seq in dict(self.entity_sequences).items()}
        positions = np.where(mask[..., None], positions, 0).astype(np.float32)
        object.__setattr__(self, "atom_positions", positions)
        object.__setattr__(self, "atom_mask", mask)
        object.__setattr__(self, "aatype", aatype)
        object.__setattr__(self, "residue_number", numbers)
        object.__setattr__(self, "chain_id", chains)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "entity_sequences", sequences)

    @property
    def num_residues(self) -> int:
        return len(self.aatype)

    @property
    def ca(self) -> np.ndarray:
        """CA positions, float32 ``[R, 3]`` Å (0 where a residue has no CA)."""
        return self.atom_positions[:, _CA_SLOT]

    def follows(self) -> np.ndarray:
        """bool ``[R - 1]``: residue ``i + 1`` follows residue ``i`` in its chain (same chain,
        next residue number), so the two are bonded neighbours."""
        return (self.chain_id[1:] == self.chain_id[:-1]) & (np.diff(self.residue_number) == 1)

    def runs(self) -> list[np.ndarray]:
        """The runs of bonded neighbours (`follows`), in order: int64 row arrays that together
        hold every residue once."""
        return np.split(np.arange(self.num_residues), np.flatnonzero(~self.follows()) + 1)

    def chains(self) -> tuple[str, ...]:
        """Chain names in order of first appearance."""
        return tuple(dict.fromkeys(self.chain_id.tolist()))

    def select(self, mask: np.ndarray) -> "BuiltModel":
        """The residues where ``mask`` (bool ``[R]``) is True, with their chains' sequences."""
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (self.num_residues,):
            raise ValueError(
                f"mask must be bool [{self.num_residues}], got {mask.dtype} {mask.shape}"
            )
        return self.take(np.flatnonzero(mask))

    def take(self, rows: np.ndarray) -> "BuiltModel":
        """The residues at ``rows`` (int ``[K]``), in that order (a permutation reorders the
        model), with their chains' sequences."""
        rows = np.asarray(rows, dtype=np.int64)
        kept = set(self.chain_id[rows].tolist())
        return BuiltModel(
            atom_positions=self.atom_positions[rows],
            atom_mask=self.atom_mask[rows],
            aatype=self.aatype[rows],
            residue_number=self.residue_number[rows],
            chain_id=self.chain_id[rows],
            confidence=self.confidence[rows],
            entity_sequences={c: s for c, s in self.entity_sequences.items() if c in kept},
        )


def model_from_ca(ca: np.ndarray, scores: np.ndarray, chain_id: str = "A") -> BuiltModel:
    """A model of unknown-type residues with only CA atoms (e.g. C-alpha detector output).

    Parameters
    ----------
    ca : ``[N, 3]``
        CA positions in Å.
    scores : ``[N]``
        Detection probabilities (0..1); the confidence (B-factor) is ``100 * score``.
    chain_id : str
        Chain name of all residues; residues are numbered 1..N.
    """
    ca = np.asarray(ca, dtype=np.float32).reshape(-1, 3)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(scores) != len(ca):
        raise ValueError(f"{len(ca)} CA positions but {len(scores)} scores")
    positions = np.zeros((len(ca), MAX_ATOMS, 3), dtype=np.float32)
    positions[:, _CA_SLOT] = ca
    mask = np.zeros((len(ca), MAX_ATOMS), dtype=bool)
    mask[:, _CA_SLOT] = True
    return BuiltModel(
        atom_positions=positions,
        atom_mask=mask,
        aatype=np.full(len(ca), UNK_INDEX, dtype=np.int64),
        residue_number=np.arange(1, len(ca) + 1, dtype=np.int64),
        chain_id=np.full(len(ca), chain_id),
        confidence=scores * _PERCENT,
    )


# ----------------------------------------------------------------------------- reading


def read_model(path: str | os.PathLike) -> BuiltModel:
    """Read the first model of an mmCIF or PDB file (optionally gzipped).

    The format is recognised from the content (mmCIF starts with a ``data_`` block). Kept:
    amino-acid residues that have a CA atom, their first alternative conformation, and their
    heavy atoms that belong to the atom14 layout; residues of a non-standard amino-acid type
    (e.g. MSE) become type 20 (``UNK``) with backbone atoms only. Waters, ligands, nucleic
    acids, hydrogens and other atoms (e.g. OXT) are dropped. PDB files whose columns 79-80
    hold something gemmi cannot read as a charge are read again with those columns blanked.
    A blank chain name becomes the first of A-Z, a-z, 0-9 that the file does not use.
    The full sequences declared in the file (mmCIF ``_entity_poly_seq``, PDB ``SEQRES``) go to
    ``entity_sequences``; each residue's confidence is its CA B-factor.

    Raises
    ------
    InputError
        Naming the file, when it is missing, empty, binary, unparseable or holds no protein
        residues.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise InputError(f"{path}: corrupt gzip data ({err})") from None
    if not raw.strip():
        raise InputError(f"{path}: the model file is empty")
    if b"\0" in raw:
        raise InputError(f"{path}: not a text file, so neither mmCIF nor PDB")
    text = raw.decode("utf-8", errors="replace")
    structure = _parse_structure(text, path)
    if len(structure) == 0:
        raise InputError(f"{path}: no atoms (no model) in the file")
    structure.setup_entities()
    structure.remove_alternative_conformations()
    structure.remove_hydrogens()
    model = _from_structure(structure)
    if model.num_residues == 0:
        raise InputError(f"{path}: no protein residues (with a CA atom) in the first model")
    return model


def _parse_structure(text: str, path: Path):
    import gemmi

    if _is_mmcif(text):
        try:
            document = gemmi.cif.read_string(text)
            return gemmi.make_structure_from_block(document[0])
        except (RuntimeError, ValueError, IndexError) as err:
            raise InputError(f"{path}: not a readable mmCIF file ({err})") from None
    try:
        return gemmi.read_pdb_string(text)
    except RuntimeError as first_error:
        try:
            return gemmi.read_pdb_string(_blank_charge_columns(text))
        except RuntimeError:
            raise InputError(f"{path}: not a readable PDB file ({first_error})") from None


def _is_mmcif(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.startswith("data_")
    return False


def _blank_charge_columns(text: str) -> str:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("ATOM  ", "HETATM")) and len(line) > _PDB_CHARGE_COLUMNS.start:
            lines[index] = line[: _PDB_CHARGE_COLUMNS.start] + line[_PDB_CHARGE_COLUMNS.stop :]
    return "\n".join(lines) + "\n"


def _residue_type(name: str) -> int | None:
    """aatype of a residue name, or None when it is not an amino acid."""
    import gemmi

    if name in THREE_TO_ONE:
        return AA_INDEX[THREE_TO_ONE[name]]
    info = gemmi.find_tabulated_residue(name)
    if info is not None and info.is_amino_acid():
        return UNK_INDEX
    return None


def _from_structure(structure) -> BuiltModel:
    import gemmi

    positions, masks, aatypes, numbers, chains, confidences = [], [], [], [], [], []
    sequences: dict[str, str] = {}
    for chain in structure[0]:
        for residue in chain:
            aatype = _residue_type(residue.name)
            if aatype is None:
                continue
            slot_of = {name: slot for slot, name in enumerate(ATOM14_NAMES[one_letter(aatype)])}
            xyz = np.zeros((MAX_ATOMS, 3), dtype=np.float32)
            mask = np.zeros(MAX_ATOMS, dtype=bool)
            confidence = None
            for atom in residue:
                slot = slot_of.get(atom.name)
                if slot is None or mask[slot]:
                    continue
                xyz[slot] = (atom.pos.x, atom.pos.y, atom.pos.z)
                mask[slot] = True
                if slot == _CA_SLOT:
                    confidence = atom.b_iso
            if confidence is None:
                continue
            positions.append(xyz)
            masks.append(mask)
            aatypes.append(aatype)
            numbers.append(residue.seqid.num)
            chains.append(chain.name)
            confidences.append(confidence)
        entity = structure.get_entity_of(chain.get_polymer())
        if entity is not None and len(entity.full_sequence) and chain.name not in sequences:
            names = (gemmi.Entity.first_mon(item) for item in entity.full_sequence)
            sequences[chain.name] = "".join(THREE_TO_ONE.get(name, UNK_ONE) for name in names)
    present = set(chains)
    if "" in present:
        spare = next(name for name in _SPARE_CHAIN_NAMES if name not in present)
        chains = [name or spare for name in chains]
        sequences = {name or spare: sequence for name, sequence in sequences.items()}
        present = set(chains)
    return BuiltModel(
        atom_positions=np.reshape(positions, (-1, MAX_ATOMS, 3)),
        atom_mask=np.reshape(masks, (-1, MAX_ATOMS)),
        aatype=np.array(aatypes, dtype=np.int64),
        residue_number=np.array(numbers, dtype=np.int64),
        chain_id=np.array(chains, dtype=str),
        confidence=np.array(confidences, dtype=np.float32),
        entity_sequences={c: s for c, s in sequences.items() if c in present},
    )


# ----------------------------------------------------------------------------- writing


def model_format(path: str | os.PathLike) -> str | None:
    """``"cif"`` or ``"pdb"`` by the file name's suffix (before any ``.gz``), None for another."""
    return _FORMATS.get(Path(Path(path).name.removesuffix(".gz")).suffix.lower())


def write_model(model: BuiltModel, path: str | os.PathLike, fmt: str | None = None,
                cif_items: dict[str, str] | None = None) -> Path:
    """Write ``model`` as mmCIF or PDB, atomically (a temporary file renamed into place).

    Parameters
    ----------
    model : BuiltModel
        The model; residues of a chain are written in their order in the model, chains in the
        order of `BuiltModel.chains`.
    path : path-like
        Output file; a name ending in ``.gz`` is gzipped.
    fmt : {"cif", "pdb"}, optional
        Format; by default from the suffix (``.cif``/``.mmcif`` or ``.pdb``/``.ent``, before
        any ``.gz``).
    cif_items : dict of str to str, optional
        mmCIF items (tag -> value) added to the data block, e.g. the build that wrote the file
        (mmCIF only).

    Every atom's B-factor is its residue's confidence and its occupancy 1. Chains with the same
    declared full sequence (or, without one, the same modelled residues) share an entity; a
    declared sequence is written as ``_entity_poly_seq`` / ``SEQRES``. In mmCIF, a model with no
    residues keeps an ``_atom_site`` table of no rows (`_ATOM_SITE_COLUMNS`), so other programs
    read it as a model of no atoms.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    InputError
        For an unknown format, chain names too long for PDB (more than 2 characters), or
        ``cif_items`` with PDB.
    """
    path = Path(path)
    fmt = fmt or model_format(path)
    if fmt not in ("cif", "pdb"):
        raise InputError(f"{path}: cannot tell the model format; use .cif or .pdb, or fmt=")
    if fmt == "pdb" and any(len(chain) > 2 for chain in model.chains()):
        raise InputError(f"{path}: PDB format allows chain names of at most 2 characters")
    structure = to_structure(model, name=path.name.split(".")[0] or "model")
    if fmt == "cif":
        import gemmi

        document = structure.make_mmcif_document()
        for tag, value in (cif_items or {}).items():
            document[0].set_pair(tag, gemmi.cif.quote(value))
        text = document.as_string()
        if not model.num_residues:  # gemmi writes no table that has no rows
            text += "loop_\n" + "".join(f"_atom_site.{column}\n" for column in _ATOM_SITE_COLUMNS)
    elif cif_items:
        raise InputError(f"{path}: mmCIF items cannot be written in PDB format")
    else:
        text = structure.make_pdb_string()
    data = text.encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    write_bytes_atomic(path, data)
    return path


def to_structure(model: BuiltModel, name: str):
    """``model`` as a `gemmi.Structure` named ``name``, as `write_model` writes it (each atom's
    B-factor the residue's confidence)."""
    import gemmi

    structure = gemmi.Structure()
    structure.name = name
    positions = np.round(model.atom_positions.astype(np.float64), _COORDINATE_DECIMALS)
    b_factors = np.round(model.confidence.astype(np.float64), _B_FACTOR_DECIMALS).tolist()
    gemmi_model = gemmi.Model(1)
    for chain_name in model.chains():
        chain = gemmi.Chain(chain_name)
        for index in np.flatnonzero(model.chain_id == chain_name):
            aa = one_letter(int(model.aatype[index]))
            residue = gemmi.Residue()
            residue.name = ONE_TO_THREE.get(aa, UNK_THREE)
            residue.seqid = gemmi.SeqId(int(model.residue_number[index]), " ")
            residue.entity_type = gemmi.EntityType.Polymer
            residue.het_flag = "A"
            for slot in np.flatnonzero(model.atom_mask[index]):
                atom_name = ATOM14_NAMES[aa][slot]
                atom = gemmi.Atom()
                atom.name = atom_name
                atom.element = gemmi.Element(atom_name[0])
                atom.pos = gemmi.Position(*positions[index, slot])
                atom.occ = 1.0
                atom.b_iso = b_factors[index]
                residue.add_atom(atom)
            chain.add_residue(residue)
        gemmi_model.add_chain(chain)
    structure.add_model(gemmi_model)
    structure.add_entity_types()
    structure.assign_subchains()
    _add_entities(structure, model)
    return structure


def _add_entities(structure, model: BuiltModel) -> None:
    """One polymer entity per distinct declared (or, lacking one, modelled) sequence."""
    import gemmi

    entity_of_key: dict[tuple, object] = {}
    for chain in structure[0]:
        polymer = chain.get_polymer()
        declared = model.entity_sequences.get(chain.name)
        if declared is not None:
            key = ("declared", declared)
        else:
            key = ("modelled", tuple(residue.name for residue in polymer))
        entity = entity_of_key.get(key)
        if entity is None:
            entity = gemmi.Entity(str(len(entity_of_key) + 1))
            entity.entity_type = gemmi.EntityType.Polymer
            entity.polymer_type = gemmi.PolymerType.PeptideL
            if declared is not None:
                entity.full_sequence = [ONE_TO_THREE.get(aa, UNK_THREE) for aa in declared]
            entity_of_key[key] = entity
        entity.subchains = list(entity.subchains) + [polymer.subchain_id()]
    for entity in entity_of_key.values():
        structure.entities.append(entity)
    structure.assign_label_seq_id(True)
    # Chains without a declared sequence: number the modelled residues 1..n.
    for chain in structure[0]:
        if chain.name not in model.entity_sequences:
            for number, residue in enumerate(chain, start=1):
                residue.label_seq = number
