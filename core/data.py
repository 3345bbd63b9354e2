"""Access to the training structures and dev maps in ``../shared/data`` (never part of the repo).

The training structures (see ``shared/data/README.md``) repeat the same proteins across files
(bound and unbound docking partners, antibodies), so the train/validation split is made by
sequence: files are linked when any of their chains share a 6-residue peptide, and whole
connected groups go to one side. Chains whose sequences appear in a dev map's model are kept out
of training altogether, so the dev set stays a real test.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = [
    "StructureRecord",
    "DevCase",
    "data_root",
    "structure_records",
    "split_records",
    "HIGH_RESOLUTION_SET",
    "HIGH_RESOLUTION_SOURCE",
    "high_resolution_records",
    "read_structure",
    "dev_cases",
]

#: Length of the peptides compared between sequences.
SHARED_KMER = 6
#: Least number, and least fraction of the shorter sequence, of shared peptides that make two
#: sequences related (with 6-mers this links sequences above roughly 50-60% identity).
MIN_SHARED_KMERS = 2
SHARED_KMER_FRACTION = 0.05
#: Peptides found in more sequences than this (His tags, linkers) link nothing.
PROMISCUOUS_KMER = 200
#: Fraction of sequence groups (by file count) held out for validation.
VALIDATION_FRACTION = 0.1
#: Groups larger than this many files (antibody families) always stay in training.
LARGEST_VALIDATION_GROUP = 12

_STRUCTURE_SETS = ("bm5_clean", "kortemme_top240", "kortemme_covariation_pfam40")
#: The high-resolution crystal structures that geometry statistics come from (Ramachandran
#: regions, Cα separations): the Kortemme/Richardson "top240" set, chains listed in its
#: ``index.tsv``.
HIGH_RESOLUTION_SET = "kortemme_top240"
#: How the JSON resources measured from `HIGH_RESOLUTION_SET` name their source.
HIGH_RESOLUTION_SOURCE = (
    "Kortemme/Richardson top240 high-resolution crystal structures "
    "(shared/data/structures/kortemme_top240), chains listed in index.tsv"
)


@dataclasses.dataclass(frozen=True)
class StructureRecord:
    """One structure file and its protein chains, as listed in a set's ``index.tsv``."""

    path: Path
    chains: tuple[str, ...]
    sequences: tuple[str, ...]

    @property
    def num_residues(self) -> int:
        return sum(len(s) for s in self.sequences)


@dataclasses.dataclass(frozen=True)
class DevCase:
    """A real map with (optionally) its deposited model: a folder of ``shared/data/real``."""

    name: str
    folder: Path
    map_path: Path
    resolution: float | None
    model_path: Path | None
    fasta_path: Path | None


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The shared data folder: ``explicit``, else ``$CRYOBUILD_DATA``, else a ``shared/data``
    folder beside the checkout or the working directory. Raises `InputError` when absent."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get("CRYOBUILD_DATA"):
        candidates.append(Path(os.environ["CRYOBUILD_DATA"]))
    else:
        for start in (Path.cwd(), Path(__file__).resolve().parent):
            for parent in [start, *start.parents]:
                candidates.append(parent / "shared" / "data")
                candidates.append(parent.parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "structures").is_dir() or (candidate / "real").is_dir():
            return candidate
    raise InputError(
        "the shared data folder (shared/data with structures/ and real/) was not found; "
        "set CRYOBUILD_DATA or pass --data"
    )


def structure_records(root: Path | None = None) -> list[StructureRecord]:
    """All training structure files with their chains, in index order."""
    root = data_root(root)
    records = []
    for name in _STRUCTURE_SETS:
        index = root / "structures" / name / "index.tsv"
        if not index.is_file():
            continue
        by_file: dict[str, list[tuple[str, str]]] = {}
        for line in index.read_text().splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) < 5:
                continue
            by_file.setdefault(fields[0], []).append((fields[1], fields[4]))
        for file, chains in by_file.items():
            records.append(
                StructureRecord(
                    index.parent / file,
                    tuple(c for c, _ in chains),
                    tuple(s for _, s in chains),
                )
            )
    if not records:
        raise InputError(f"{root / 'structures'}: no index.tsv with structures found")
    return records


def high_resolution_records(root: Path | None = None) -> list[StructureRecord]:
    """The structure files of `HIGH_RESOLUTION_SET` with their chains, in index order."""
    records = [r for r in structure_records(root) if r.path.parent.name == HIGH_RESOLUTION_SET]
    if not records:
        raise InputError(f"{data_root(root)}: no {HIGH_RESOLUTION_SET} structures listed")
    return records


def _kmers(sequence: str) -> set[str]:
    return {sequence[i : i + SHARED_KMER] for i in range(len(sequence) - SHARED_KMER + 1)}


def _related(shared: int, length_a: int, length_b: int) -> bool:
    """Two sequences are related when they share at least `MIN_SHARED_KMERS` distinct peptides
    of `SHARED_KMER` residues and at least `SHARED_KMER_FRACTION` of the shorter one's."""
    return shared >= max(MIN_SHARED_KMERS, SHARED_KMER_FRACTION * min(length_a, length_b))


class _UnionFind:
    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def _shared_kmer_counts(sequences: list[str]) -> dict[tuple[int, int], int]:
    """Distinct shared peptides per pair of sequences (indices ``a < b``); peptides found in
    more than `PROMISCUOUS_KMER` sequences (tags, linkers) are ignored."""
    owners: dict[str, list[int]] = {}
    for index, sequence in enumerate(sequences):
        for kmer in _kmers(sequence):
            owners.setdefault(kmer, []).append(index)
    counts: dict[tuple[int, int], int] = {}
    for members in owners.values():
        if 1 < len(members) <= PROMISCUOUS_KMER:
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pair = (members[x], members[y])
                    counts[pair] = counts.get(pair, 0) + 1
    return counts


def split_records(
    records: list[StructureRecord], root: Path | None = None
) -> dict[str, list[StructureRecord]]:
    """Split by sequence into ``{"train": [...], "validation": [...], "dev_overlap": [...]}``.

    Sequences are clustered by shared peptides (`_related`), files by the clusters of their
    chains; "dev_overlap" holds the groups related to a dev map's sequence. Deterministic:
    groups are ordered by a hash of their sequences, and validation takes groups in that order
    until it holds `VALIDATION_FRACTION` of the files.
    """
    dev_sequences: list[str] = []
    try:
        from .sequences import read_fasta

        for case in dev_cases(root):
            if case.fasta_path is not None:
                dev_sequences += [s.residues for s in read_fasta(case.fasta_path)]
    except InputError:
        pass
    sequences = sorted({s for r in records for s in r.sequences} | set(dev_sequences))
    position = {s: i for i, s in enumerate(sequences)}
    clusters = _UnionFind(len(sequences))
    for (a, b), shared in _shared_kmer_counts(sequences).items():
        if _related(shared, len(sequences[a]), len(sequences[b])):
            clusters.union(a, b)
    dev_clusters = {clusters.find(position[s]) for s in dev_sequences}

    files = _UnionFind(len(records))
    first_file: dict[int, int] = {}
    for i, record in enumerate(records):
        for sequence in record.sequences:
            files.union(i, first_file.setdefault(clusters.find(position[sequence]), i))
    groups: dict[int, list[int]] = {}
    for i in range(len(records)):
        groups.setdefault(files.find(i), []).append(i)

    def key(members):
        text = "|".join(sorted(s for i in members for s in records[i].sequences))
        return hashlib.sha1(text.encode()).hexdigest()

    split = {"train": [], "validation": [], "dev_overlap": []}
    target = VALIDATION_FRACTION * len(records)
    for members in sorted(groups.values(), key=key):
        member_records = [records[i] for i in members]
        related_to_dev = any(
            clusters.find(position[s]) in dev_clusters for r in member_records for s in r.sequences
        )
        if related_to_dev:
            split["dev_overlap"].extend(member_records)
        elif len(split["validation"]) < target and len(members) <= LARGEST_VALIDATION_GROUP:
            split["validation"].extend(member_records)
        else:
            split["train"].extend(member_records)
    return split


@functools.lru_cache(maxsize=1)
def default_split() -> dict[str, tuple[StructureRecord, ...]]:
    """`split_records` over all structures in the default data root (cached)."""
    return {k: tuple(v) for k, v in split_records(structure_records()).items()}


def read_structure(path: str | os.PathLike):
    """Read a PDB/mmCIF file (gzipped too) as a `gemmi.Structure`, first model only.

    Some training files carry a malformed charge column (PDB columns 79-80) that gemmi
    rejects; those columns are stripped and the file read again.
    """
    import gemmi

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such structure file")
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as handle:
            lines = [
                line.rstrip("\n")[:78] if line.startswith(("ATOM", "HETATM")) else line.rstrip("\n")
                for line in handle
            ]
        try:
            structure = gemmi.read_pdb_string("\n".join(lines))
        except (RuntimeError, ValueError) as err:
            raise InputError(f"{path}: not a readable structure file ({err})") from None
    structure.setup_entities()
    return structure


def dev_cases(root: Path | None = None) -> list[DevCase]:
    """The dev maps of ``shared/data/real``; those with a deposited model have ``model_path``."""
    real = data_root(root) / "real"
    if not real.is_dir():
        raise InputError(f"{real}: no dev maps folder")
    cases = []
    for folder in sorted(p for p in real.iterdir() if p.is_dir()):
        info = {}
        if (folder / "case.json").is_file():
            info = json.loads((folder / "case.json").read_text())
        maps = sorted(folder.glob("*.mrc")) + sorted(folder.glob("*.map"))
        map_path = folder / info["map"] if "map" in info else (maps[0] if maps else None)
        if map_path is None or not map_path.is_file():
            continue
        fastas = [folder / "seq.fasta"] + sorted(folder.glob("*.fasta"))
        fasta = next((f for f in fastas if f.is_file()), None)
        model = folder / "ref.cif"
        cases.append(
            DevCase(
                folder.name,
                folder,
                map_path,
                info.get("resolution"),
                model if model.is_file() else None,
                fasta,
            )
        )
    return cases


#: The real maps with models in two folds by protein, each spanning the resolution bands (maps
#: cut from one EMDB entry share a fold). A network fine-tuned on one fold's maps is measured on
#: the other's only; its checkpoint lists the maps it trained on (``real_maps``).
REAL_FOLDS = {
    "A": ("emd20026_apoferritin", "emd2566_3j6b9", "emd5925_3j6j_mavs", "pdb3los_mmcpn",
          "emd4118_5ly6_pneumolysin", "t20s_alpha", "emd6149_3j8g_enga", "emd8518_5u8s_psf1"),
    "B": ("emd4413_6i5a_tmv", "emd6374_3jb0D", "emd21457_spikeNTD", "emd5830_3j63_asc",
          "pdb5xsy_navbeta1", "emd3240_5fn5_gsecretase", "emd6187_3j8xA_tubulin",
          "emd6187_3j8xK_kinesin", "emd3491_5mdxL", "emd3491_5mdxX", "emd5168_3mfp_actin"),
}


def fold_cases(fold: str, root: Path | None = None) -> list[DevCase]:
    """The real maps with models of ``fold`` (a key of `REAL_FOLDS`)."""
    if fold not in REAL_FOLDS:
        raise InputError(f"no real-map fold {fold!r}; folds: {', '.join(REAL_FOLDS)}")
    names = set(REAL_FOLDS[fold])
    return [c for c in dev_cases(root) if c.name in names and c.model_path is not None]


def ca_coordinates(structure) -> np.ndarray:
    """Cα positions ``[N, 3]`` (Å) of the protein residues in the first model."""
    import gemmi

    xyz = []
    for chain in structure[0]:
        for residue in chain:
            info = gemmi.find_tabulated_residue(residue.name)
            if info is None or not info.is_amino_acid():
                continue
            atom = residue.find_atom("CA", "*")
            if atom is not None:
                xyz.append(atom.pos.tolist())
    return np.array(xyz, dtype=np.float64).reshape(-1, 3)
