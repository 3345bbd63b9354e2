"""Tests of cryobuild.validation: peptide links, restraints, clashes, Ramachandran, reports."""

import dataclasses
import json
import math

import numpy as np
import pytest

from cryobuild.models import BuiltModel, read_model
from cryobuild.residues import AA_INDEX, ATOM14_NAMES
from cryobuild.train.ramachandran import COVERAGE, allowed_regions
from cryobuild.validation import (
    CLASH_OVERLAP,
    PEPTIDE_BOND_LENGTH,
    RAMACHANDRAN_CLASSES,
    VDW_RADII,
    backbone_dihedrals,
    geometry_restraints,
    load_ramachandran,
    nonbonded_topology,
    numbered_out_of_reach,
    peptide_links,
    ramachandran_class,
    ramachandran_outliers,
    validate_geometry,
)

#: Agreement (degrees) expected between two float64 dihedral implementations.
DIHEDRAL_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def il2(il2_path) -> BuiltModel:
    return read_model(il2_path)


def _with_positions(model: BuiltModel, positions: np.ndarray) -> BuiltModel:
    return dataclasses.replace(model, atom_positions=positions.astype(np.float32))


# ----------------------------------------------------------------------------- links


def test_peptide_links_follow_chain_and_numbering(il2):
    model = il2.select(np.arange(il2.num_residues) < 6)
    numbers = np.array([1, 2, 3, 5, 6, 7])
    chains = np.array(["A", "A", "A", "A", "B", "B"])
    model = dataclasses.replace(model, residue_number=numbers, chain_id=chains)
    # 3 -> 5 skips a number, A -> B changes chain, the last residue has no successor.
    np.testing.assert_array_equal(peptide_links(model), [True, True, False, False, True, False])


def test_demo_structure_has_one_numbering_gap(il2):
    links = peptide_links(il2)
    assert links.sum() == il2.num_residues - 2  # the gap 78 -> 83 and the last residue


# ----------------------------------------------------------------------------- the true structure


def test_true_structure_report_is_sane(il2):
    report = validate_geometry(il2)
    assert report.num_residues == il2.num_residues
    assert report.num_atoms == int(il2.atom_mask.sum())
    assert report.num_peptide_bonds == il2.num_residues - 2
    assert report.peptide_bond_ideal_fraction >= 0.9
    assert report.peptide_bond_mean_deviation < 0.03
    assert report.bond_rmsd < 0.02
    assert report.angle_rmsd < 3.0
    assert report.clashscore < 5.0
    assert report.num_ramachandran_residues == il2.num_residues - 4  # 2 chain ends, 2 gap ends
    assert report.ramachandran_outlier_fraction < 0.02


def test_report_to_dict_is_json_ready(il2):
    report = validate_geometry(il2)
    data = json.loads(json.dumps(report.to_dict()))
    assert data == report.to_dict()
    assert set(data) == {field.name for field in dataclasses.fields(report)}


def test_stretched_peptide_bond_is_counted(il2):
    positions = il2.atom_positions.copy()
    # Move residue 10 and everything after it along the C(9)-N(10) direction by 0.5 Å.
    direction = positions[10, 0] - positions[9, 2]
    direction /= np.linalg.norm(direction)
    positions[10:] += 0.5 * direction * il2.atom_mask[10:, :, None]
    before = validate_geometry(il2)
    after = validate_geometry(_with_positions(il2, positions))
    assert after.num_peptide_bonds == before.num_peptide_bonds
    lost = before.peptide_bond_ideal_fraction - after.peptide_bond_ideal_fraction
    assert lost == pytest.approx(1 / before.num_peptide_bonds)


def test_residues_numbered_closer_than_they_lie_are_counted(il2):
    """il2 with residue 30 taken out: its neighbours, numbered 2 apart, are in reach (two
    residues span 8.6 Å); numbered 1 apart, as an alignment that left the node out would, they
    are not (4.8 Å). Its own numbering gap (78 -> 83) is in reach."""
    gapped = il2.select(il2.residue_number != 30)
    assert numbered_out_of_reach(il2) == 0
    assert numbered_out_of_reach(gapped) == 0
    renumbered = dataclasses.replace(gapped, residue_number=np.where(
        gapped.residue_number > 30, gapped.residue_number - 1, gapped.residue_number))
    assert numbered_out_of_reach(renumbered) == 1
    assert validate_geometry(renumbered).num_numbered_out_of_reach == 1


# ----------------------------------------------------------------------------- restraints


def test_restraints_cover_every_bond_once(il2):
    restraints = geometry_restraints(il2)
    pairs = {tuple(sorted(pair)) for pair in restraints.bond_atoms.tolist()}
    assert len(pairs) == len(restraints.bond_atoms)
    # A tree per residue has atoms - 1 bonds; add peptide bonds and one ring closure per Pro.
    num_pro = int((il2.aatype == AA_INDEX["P"]).sum())
    expected = int(il2.atom_mask.sum()) - il2.num_residues + int(peptide_links(il2).sum()) + num_pro
    assert len(pairs) == expected
    ideal_peptide = restraints.bond_ideal == PEPTIDE_BOND_LENGTH
    assert ideal_peptide.sum() == peptide_links(il2).sum()
    assert np.all(restraints.omega_ideal == np.pi)  # il2 has no cis peptide


def test_restraints_reject_links_of_wrong_shape(il2):
    with pytest.raises(ValueError, match="links"):
        geometry_restraints(il2, links=np.ones(3, dtype=bool))


def test_cis_proline_keeps_a_cis_target(il2):
    pro = int(np.flatnonzero((il2.aatype == AA_INDEX["P"]) & np.roll(peptide_links(il2), 1))[0])
    positions = il2.atom_positions.astype(np.float64)
    # Rotate residue `pro` and everything after it by 180° about the C(i-1)-N(i) bond: omega
    # flips from trans to cis.
    axis_start = positions[pro - 1, 2]
    axis = positions[pro, 0] - axis_start
    axis /= np.linalg.norm(axis)
    rel = positions[pro:] - axis_start
    along = (rel @ axis)[..., None] * axis
    rotated = axis_start + 2 * along - rel
    positions[pro:] = np.where(il2.atom_mask[pro:, :, None], rotated, 0)
    restraints = geometry_restraints(_with_positions(il2, positions))
    assert (restraints.omega_ideal == 0).sum() == 1


# ----------------------------------------------------------------------------- clashes


def test_overlapping_atoms_clash(il2):
    positions = il2.atom_positions.copy()
    far = 60  # put the CA of residue 60 1 Å from the CA of residue 10: a deep overlap
    positions[far, 1] = positions[10, 1] + np.array([1.0, 0.0, 0.0])
    report = validate_geometry(_with_positions(il2, positions))
    assert report.num_clashes >= 1
    assert report.clashscore == pytest.approx(1000 * report.num_clashes / report.num_atoms)


def test_clash_distance_is_radii_minus_overlap(il2):
    topology = nonbonded_topology(il2)
    positions = il2.atom_positions[il2.atom_mask].astype(np.float64)
    first, second, limit = topology.contacts(positions, margin=2.0)
    assert np.all(first < second)
    assert np.all(topology.residue[first] != topology.residue[second])
    carbon_pair = (topology.radius[first] == VDW_RADII["C"]) & (
        topology.radius[second] == VDW_RADII["C"]
    )
    np.testing.assert_allclose(limit[carbon_pair], 2 * VDW_RADII["C"] - CLASH_OVERLAP)


def test_bonded_neighbours_and_disulfide_are_excluded(il2):
    topology = nonbonded_topology(il2)
    positions = il2.atom_positions[il2.atom_mask].astype(np.float64)
    first, second, _ = topology.contacts(positions, margin=3.0)
    ids = np.full(il2.atom_mask.shape, -1)
    ids[il2.atom_mask] = np.arange(il2.atom_mask.sum())
    found = set(zip(first.tolist(), second.tolist(), strict=True))
    link = int(np.flatnonzero(peptide_links(il2))[0])
    assert (ids[link, 2], ids[link + 1, 0]) not in found  # C(i)-N(i+1)
    assert (ids[link, 3], ids[link + 1, 1]) not in found  # O(i)-CA(i+1): 3 bonds
    sg = ATOM14_NAMES["C"].index("SG")
    cys = np.flatnonzero(il2.aatype == AA_INDEX["C"])
    sg_ids = sorted(ids[cys, sg].tolist())
    assert len(sg_ids) >= 2
    bonded = [
        (a, b)
        for i, a in enumerate(sg_ids)
        for b in sg_ids[i + 1 :]
        if np.linalg.norm(positions[a] - positions[b]) < 2.5
    ]
    assert len(bonded) == 1  # il2's disulfide 58-105
    assert bonded[0] not in found


# ----------------------------------------------------------------------------- Ramachandran


def test_backbone_dihedrals_match_gemmi(il2_path, il2):
    import gemmi

    phi, psi, defined = backbone_dihedrals(il2)
    chain = gemmi.read_structure(str(il2_path))[0][0]
    residues = [r for r in chain if r.find_atom("CA", "*") is not None]
    assert len(residues) == il2.num_residues
    for index in np.flatnonzero(defined):
        expected = gemmi.calculate_phi_psi(
            residues[index - 1], residues[index], residues[index + 1]
        )
        assert phi[index] == pytest.approx(math.degrees(expected[0]), abs=DIHEDRAL_TOLERANCE)
        assert psi[index] == pytest.approx(math.degrees(expected[1]), abs=DIHEDRAL_TOLERANCE)
    assert np.all(np.isnan(phi[~np.roll(peptide_links(il2), 1)]))


@pytest.mark.parametrize(
    ("residue_class", "phi", "psi", "allowed"),
    [
        ("general", -63, -43, True),  # right-handed alpha helix
        ("general", -120, 130, True),  # beta strand
        ("general", 60, -150, False),
        ("glycine", 60, -150, True),  # glycine's mirror-image regions
        ("proline", -65, 145, True),  # polyproline II
        ("proline", 60, 40, False),  # proline's phi is held near -65 by its ring
    ],
)
def test_ramachandran_regions(residue_class, phi, psi, allowed):
    table = load_ramachandran()
    index = RAMACHANDRAN_CLASSES.index(residue_class)
    assert table.allowed[index, table.bin_index(phi), table.bin_index(psi)] == allowed


def test_ramachandran_class_of_types():
    aatype = np.array([AA_INDEX["A"], AA_INDEX["G"], AA_INDEX["P"], 20])
    names = [RAMACHANDRAN_CLASSES[c] for c in ramachandran_class(aatype)]
    assert names == ["general", "glycine", "proline", "general"]


def test_bin_index_wraps_angles():
    table = load_ramachandran()
    assert table.bin_index(-180.0) == 0
    assert table.bin_index(180.0) == 0  # 180 and -180 are the same angle
    assert table.bin_index(179.9) == table.allowed.shape[1] - 1
    assert table.bin_index(540.0) == table.bin_index(180.0)


def test_generator_covers_its_own_data(il2):
    """Regions derived from one structure leave at most 0.2% of its residues outside."""
    regions = allowed_regions([il2])
    _, _, defined = backbone_dihedrals(il2)
    counted = defined & (il2.confidence < 30.0)
    assert sum(r["num_residues"] for r in regions.values()) == counted.sum()
    table = load_ramachandran()
    allowed = np.array(
        [
            [[c == "1" for c in row] for row in regions[name]["allowed"]]
            for name in RAMACHANDRAN_CLASSES
        ]
    )
    phi, psi, _ = backbone_dihedrals(il2)
    inside = allowed[ramachandran_class(il2.aatype), table.bin_index(phi), table.bin_index(psi)]
    assert (counted & ~inside).sum() <= (1 - COVERAGE) * counted.sum()


def test_outliers_only_where_defined(il2):
    outlier, defined = ramachandran_outliers(il2)
    assert not np.any(outlier & ~defined)


def test_ramachandran_outside_distance_is_zero_exactly_on_allowed_bins():
    from cryobuild.validation import load_ramachandran

    table = load_ramachandran()
    distance = table.outside_distance
    assert np.all((distance == 0) == table.allowed)
    assert np.all(distance[~table.allowed] >= table.bin_degrees - 1e-9)


def test_ramachandran_outside_distance_wraps_around():
    """One allowed bin at (-175°, -175°): the bin at (175°, 175°) is one diagonal step away
    across both borders, not 350° away along each axis."""
    from cryobuild.validation import RamachandranTable

    allowed = np.zeros((3, 36, 36), dtype=bool)
    allowed[:, 0, 0] = True
    distance = RamachandranTable(10.0, allowed, "test").outside_distance
    assert distance[0, 35, 35] == pytest.approx(np.hypot(10.0, 10.0))
    assert distance[0, 18, 0] == pytest.approx(180.0)
