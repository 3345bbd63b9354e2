"""Tests of cryobuild.models: the BuiltModel type and mmCIF/PDB reading and writing."""

import gzip
import os

import numpy as np
import pytest
import torch

from cryobuild.errors import InputError
from cryobuild.geometry import Rigid, random_rotations, torsions_to_atom14
from cryobuild.models import BuiltModel, model_from_ca, read_model, write_model
from cryobuild.residues import AA_ORDER, ATOM14_MASK, NUM_TORSIONS, UNK_INDEX

#: PDB stores coordinates with 3 decimals (Å) and B-factors with 2.
COORDINATE_TOLERANCE = 1e-3
B_FACTOR_TOLERANCE = 1e-2

# A small PDB text: blank chain names, hydrogens, an alternative conformation, a water, a
# ligand, a non-standard residue (MSE) and a charge in columns 79-80 that gemmi cannot parse.
_ODD_PDB = """\
ATOM      1  N   GLY     1       0.000   0.000   0.000  1.00 10.00           N
ATOM      2  CA  GLY     1       1.458   0.000   0.000  1.00 11.00           C
ATOM      3  C   GLY     1       2.009   1.420   0.000  1.00 12.00           C
ATOM      4  O   GLY     1       1.251   2.390   0.000  1.00 13.00           O
ATOM      5  H   GLY     1      -0.500   0.800   0.000  1.00 10.00           H
ATOM      6  N  ASER     2       3.332   1.536   0.000  0.60 20.00           N
ATOM      7  N  BSER     2       3.400   1.600   0.000  0.40 20.00           N
ATOM      8  CA ASER     2       3.988   2.839   0.000  0.60 21.00           C
ATOM      9  CA BSER     2       4.000   2.900   0.000  0.40 21.00           C
HETATM   10  N   MSE     3       5.000   3.000   1.000  1.00 30.00           N
HETATM   11  CA  MSE     3       6.000   3.500   1.000  1.00 31.00           C
HETATM   12 SE   MSE     3       7.000   4.000   2.000  1.00 32.00          SE
HETATM   13  O   HOH     4      10.000  10.000  10.000  1.00 40.00           O
HETATM   14 ZN    ZN     5      12.000  10.000  10.000  1.00 40.00          ZN2.
END
"""


def _model() -> BuiltModel:
    """Every residue type (and UNK) with ideal geometry: two chains, gapped numbering, one
    chain with a declared sequence longer than the model."""
    aatype = torch.arange(UNK_INDEX + 1).repeat(2)
    generator = torch.Generator().manual_seed(0)
    rigid = Rigid(
        random_rotations(aatype.shape, generator),
        torch.arange(len(aatype), dtype=torch.float32)[:, None] * torch.tensor([3.8, 0.0, 0.0]),
    )
    torsions = torch.randn(len(aatype), NUM_TORSIONS, 2, generator=generator)
    positions, mask = torsions_to_atom14(rigid, aatype, torsions)
    num = len(aatype)
    chain_id = np.array(["A"] * (num // 2) + ["B"] * (num - num // 2))
    numbers = np.concatenate([np.arange(1, num // 2 + 1), np.arange(101, 101 + num - num // 2) * 2])
    return BuiltModel(
        atom_positions=positions.numpy(),
        atom_mask=mask.numpy(),
        aatype=aatype.numpy(),
        residue_number=numbers,
        chain_id=chain_id,
        confidence=np.linspace(0, 100, num),
        entity_sequences={"A": "MK" + AA_ORDER + "X" + "GS"},
    )


def _assert_same(read: BuiltModel, written: BuiltModel) -> None:
    np.testing.assert_array_equal(read.atom_mask, written.atom_mask)
    np.testing.assert_allclose(
        read.atom_positions, written.atom_positions, atol=COORDINATE_TOLERANCE, rtol=0
    )
    np.testing.assert_array_equal(read.aatype, written.aatype)
    np.testing.assert_array_equal(read.residue_number, written.residue_number)
    np.testing.assert_array_equal(read.chain_id, written.chain_id)
    np.testing.assert_allclose(read.confidence, written.confidence, atol=B_FACTOR_TOLERANCE, rtol=0)
    assert read.entity_sequences == written.entity_sequences


@pytest.mark.parametrize("name", ["model.cif", "model.pdb", "model.cif.gz", "model.pdb.gz"])
def test_round_trip(tmp_path, name):
    model = _model()
    write_model(model, tmp_path / name)
    _assert_same(read_model(tmp_path / name), model)


@pytest.mark.parametrize("fmt", ["cif", "pdb"])
def test_format_argument_overrides_suffix(tmp_path, fmt):
    path = write_model(_model(), tmp_path / "model.txt", fmt=fmt)
    text = path.read_text()
    assert text.startswith("data_") == (fmt == "cif")
    assert read_model(path).num_residues == _model().num_residues


@pytest.mark.parametrize("name", ["ca.cif", "ca.pdb"])
def test_ca_only_model_round_trip(tmp_path, name):
    ca = np.arange(30, dtype=np.float32).reshape(10, 3)
    scores = np.linspace(0.05, 1.0, 10)
    model = model_from_ca(ca, scores, chain_id="C")
    assert model.atom_mask.sum() == 10 and np.all(model.aatype == UNK_INDEX)
    np.testing.assert_allclose(model.confidence, scores * 100, rtol=1e-6)
    np.testing.assert_array_equal(model.ca, ca)
    write_model(model, tmp_path / name)
    _assert_same(read_model(tmp_path / name), model)


def test_an_empty_model_is_a_model_file_other_programs_read(tmp_path):
    """A model of no residues (a build that kept nothing) is still an mmCIF model: gemmi finds
    its atom table and reads it as no atoms, PyMOL loads it as an object of no atoms, and our
    own reader names the problem."""
    import subprocess
    import sys

    import gemmi

    empty = model_from_ca(np.zeros((0, 3)), np.zeros(0))
    path = write_model(empty, tmp_path / "model.cif")
    block = gemmi.cif.read(str(path)).sole_block()
    assert block.find_mmcif_category("_atom_site.").get_prefix() == "_atom_site."
    assert len(block.find_mmcif_category("_atom_site.")) == 0
    structure = gemmi.read_structure(str(path))
    assert sum(len(residue) for model in structure for chain in model for residue in chain) == 0
    pytest.importorskip("pymol", reason="pymol-open-source is not installed")
    pymol = subprocess.run(
        [sys.executable, "-c", "import sys; from pymol import cmd; cmd.load(sys.argv[1], 'm'); "
                               "print(cmd.get_names(), cmd.count_atoms('m'))", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert pymol.returncode == 0 and pymol.stdout.split()[-2:] == ["['m']", "0"], pymol.stderr
    with pytest.raises(InputError, match="no atoms"):
        read_model(path)


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_model(_model(), tmp_path / "out" / "model.cif")
    assert sorted(os.listdir(path.parent)) == ["model.cif"]
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_model(model_from_ca(np.zeros((1, 3)), np.ones(1)), path)
    assert sorted(os.listdir(path.parent)) == ["model.cif"]
    assert path.read_bytes() == before


def test_write_rejects_unknown_format_and_long_pdb_chain_names(tmp_path):
    with pytest.raises(InputError, match="model.xyz"):
        write_model(_model(), tmp_path / "model.xyz")
    long_names = model_from_ca(np.zeros((1, 3)), np.ones(1), chain_id="ABC")
    with pytest.raises(InputError, match="2 characters"):
        write_model(long_names, tmp_path / "model.pdb")
    write_model(long_names, tmp_path / "model.cif")


def test_read_keeps_protein_heavy_atoms_only(tmp_path):
    path = tmp_path / "odd.pdb"
    path.write_text(_ODD_PDB)
    model = read_model(path)
    expected_types = [AA_ORDER.index("G"), AA_ORDER.index("S"), UNK_INDEX]
    np.testing.assert_array_equal(model.aatype, expected_types)
    np.testing.assert_array_equal(model.residue_number, [1, 2, 3])
    np.testing.assert_array_equal(model.chain_id, ["A", "A", "A"])
    assert model.atom_mask.sum(-1).tolist() == [4, 2, 2]  # no H, one N/CA conformer, no SE
    first_conformer_ca = [3.988, 2.839, 0.0]
    np.testing.assert_allclose(model.atom_positions[1, 1], first_conformer_ca, atol=1e-6)
    np.testing.assert_allclose(model.confidence, [11.0, 21.0, 31.0])


def test_read_gzipped(tmp_path):
    path = tmp_path / "odd.pdb.gz"
    path.write_bytes(gzip.compress(_ODD_PDB.encode()))
    assert read_model(path).num_residues == 3


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"  \n\n",
        b"hello, this is not a structure\n",
        b"\x00\x01\x02binary",
        b"data_broken\nloop_\n_atom_site.id\n",
        b"HETATM    1  O   HOH A   1      10.000  10.000  10.000  1.00 40.00           O\n",
    ],
    ids=["empty", "blank", "text", "binary", "cif-without-atoms", "water-only"],
)
def test_read_rejects_bad_files_naming_them(tmp_path, content):
    path = tmp_path / "bad_input.pdb"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad_input.pdb"):
        read_model(path)


def test_read_rejects_missing_file(tmp_path):
    with pytest.raises(InputError, match="absent.cif"):
        read_model(tmp_path / "absent.cif")


def test_built_model_validates_and_selects():
    model = _model()
    assert model.chains() == ("A", "B")
    assert model.ca.shape == (model.num_residues, 3)
    chain_b = model.select(model.chain_id == "B")
    assert chain_b.chains() == ("B",) and chain_b.entity_sequences == {}
    assert model.select(model.chain_id == "A").entity_sequences == model.entity_sequences
    with pytest.raises(ValueError):
        model.select(np.ones(3, dtype=bool))
    fields = dict(
        atom_positions=model.atom_positions,
        atom_mask=model.atom_mask,
        aatype=model.aatype,
        residue_number=model.residue_number,
        chain_id=model.chain_id,
        confidence=model.confidence,
    )
    with pytest.raises(ValueError):
        BuiltModel(**{**fields, "confidence": model.confidence[:-1]})
    with pytest.raises(ValueError):
        BuiltModel(**{**fields, "atom_mask": np.ones_like(model.atom_mask)})  # GLY has no CB
    with pytest.raises(ValueError):
        BuiltModel(**{**fields, "aatype": np.full_like(model.aatype, 21)})
    glycine = model.aatype == AA_ORDER.index("G")
    assert not ATOM14_MASK[AA_ORDER.index("G"), 4] and not model.atom_mask[glycine, 4].any()


def test_cif_items_are_written_and_the_model_still_reads(tmp_path):
    import gemmi

    model = _model()
    path = write_model(model, tmp_path / "m.cif", cif_items={"_cryobuild.build_id": "20261201-101500-a1b2c3"})
    assert gemmi.cif.read(str(path))[0].find_value("_cryobuild.build_id") == "20261201-101500-a1b2c3"
    _assert_same(read_model(path), model)
    with pytest.raises(InputError, match="mmCIF items"):
        write_model(model, tmp_path / "m.pdb", cif_items={"_cryobuild.build_id": "x"})


def test_runs_split_the_residues_where_one_does_not_follow_the_last():
    """`BuiltModel.runs`: a new chain, or a gap in the residue numbers, starts a run; the runs
    hold every residue once, in order."""
    model = model_from_ca(np.arange(18, dtype=np.float32).reshape(6, 3) * 3.8, np.ones(6))
    model = BuiltModel(model.atom_positions, model.atom_mask, model.aatype,
                       residue_number=np.array([1, 2, 3, 5, 6, 1]),
                       chain_id=np.array(["A", "A", "A", "A", "A", "B"]),
                       confidence=model.confidence)
    assert model.follows().tolist() == [True, True, False, True, False]
    assert [run.tolist() for run in model.runs()] == [[0, 1, 2], [3, 4], [5]]
