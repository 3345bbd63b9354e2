"""Tests of cryobuild.relax: a distorted il2 relaxed into a 3 Å map of the true structure."""

import dataclasses

import numpy as np
import pytest

from cryobuild.features import standardise
import torch

from cryobuild.data import read_structure
from cryobuild.errors import Cancelled
from cryobuild.models import BuiltModel, read_model, write_model
from cryobuild.progress import CancelToken
from cryobuild.relax import MAX_LINK_CA_DISTANCE, MAX_LINK_DISTANCE, relax
from cryobuild.simulate import SimulationOptions, simulate_map
from cryobuild.validation import peptide_links, validate_geometry

#: Standard deviation (Å) of the Gaussian noise added to every coordinate of every atom
#: (3-D RMS displacement about 0.52 Å).
NOISE = 0.3
#: Copies of il2 (126 residues) in the large model, and their spacing in Å (no contacts).
COPIES = 16
SPACING = 60.0
#: The brief's time limit (s) for 2,000 residues on 2 CPU cores.
TIME_LIMIT_2000 = 30.0


def _rmsd(model: BuiltModel, reference: BuiltModel) -> float:
    """Atom RMSD (Å) over the reference's atoms (same atom layout)."""
    mask = reference.atom_mask
    delta = model.atom_positions[mask] - reference.atom_positions[mask]
    return float(np.sqrt(np.mean(np.sum(delta.astype(np.float64) ** 2, axis=-1))))


def _distorted(model: BuiltModel, seed: int) -> BuiltModel:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, NOISE, model.atom_positions.shape).astype(np.float32)
    return dataclasses.replace(model, atom_positions=model.atom_positions + noise)


@pytest.fixture(scope="module")
def il2_truth(il2_path) -> BuiltModel:
    return read_model(il2_path)


@pytest.fixture(scope="module")
def distorted(il2_truth) -> BuiltModel:
    return _distorted(il2_truth, seed=1)


@pytest.fixture(scope="module")
def relaxed(distorted, il2_view_3A):
    density = il2_view_3A[0].density
    return relax(distorted, density, device="cpu")


def test_relax_repairs_distorted_il2(il2_truth, distorted, relaxed):
    model, report = relaxed
    before, after = report.geometry_before, report.geometry_after
    print(
        f"\npeptide bonds within 0.1 Å: {before.peptide_bond_ideal_fraction:.3f} -> "
        f"{after.peptide_bond_ideal_fraction:.3f}; bond RMSD {before.bond_rmsd:.3f} -> "
        f"{after.bond_rmsd:.3f} Å; angle RMSD {before.angle_rmsd:.1f} -> {after.angle_rmsd:.1f}°; "
        f"clashes {before.num_clashes} -> {after.num_clashes}; Ramachandran outliers "
        f"{before.num_ramachandran_outliers} -> {after.num_ramachandran_outliers}; RMSD to truth "
        f"{_rmsd(distorted, il2_truth):.3f} -> {_rmsd(model, il2_truth):.3f} Å; "
        f"{report.seconds:.2f} s"
    )
    assert before.peptide_bond_ideal_fraction < 0.5
    assert after.peptide_bond_ideal_fraction >= 0.95
    assert after.bond_rmsd < before.bond_rmsd / 10
    assert after.num_clashes <= before.num_clashes
    assert after.num_ramachandran_outliers <= before.num_ramachandran_outliers
    assert _rmsd(model, il2_truth) < _rmsd(distorted, il2_truth)
    assert report.energy_after.total < report.energy_before.total


def test_report_is_consistent(distorted, relaxed):
    model, report = relaxed
    assert report.geometry_before == validate_geometry(distorted)
    assert report.geometry_after == validate_geometry(model)
    assert report.num_free_atoms == int(distorted.atom_mask.sum())
    assert report.iterations > 0
    assert report.device == "cpu"
    moved = np.linalg.norm(model.atom_positions - distorted.atom_positions, axis=-1)
    assert report.max_moved == pytest.approx(float(moved.max()), abs=1e-5)
    assert set(report.to_dict()["energy_after"]) == set(report.energy_after.to_dict())


def test_relax_keeps_everything_but_positions(distorted, relaxed):
    model, _ = relaxed
    for field in ("atom_mask", "aatype", "residue_number", "chain_id", "confidence"):
        np.testing.assert_array_equal(getattr(model, field), getattr(distorted, field))
    assert np.all(model.atom_positions[~model.atom_mask] == 0)


def test_fixed_residues_do_not_move(distorted, il2_view_3A):
    density = il2_view_3A[0].density
    fixed = np.zeros(distorted.num_residues, dtype=bool)
    fixed[20:40] = True
    fixed[::7] = True
    model, report = relax(distorted, density, fixed=fixed, steps=30, device="cpu")
    np.testing.assert_array_equal(model.atom_positions[fixed], distorted.atom_positions[fixed])
    assert np.any(model.atom_positions[~fixed] != distorted.atom_positions[~fixed])
    assert report.num_free_atoms == int(distorted.atom_mask[~fixed].sum())


def test_relax_without_map_fixes_geometry(distorted):
    model, report = relax(distorted, None, steps=50, device="cpu")
    assert report.energy_after.density == 0.0
    assert report.geometry_after.peptide_bond_ideal_fraction >= 0.95
    assert report.geometry_after.num_clashes <= report.geometry_before.num_clashes


def test_zero_steps_only_scores(distorted, il2_view_3A):
    density = il2_view_3A[0].density
    model, report = relax(distorted, density, steps=0, device="cpu")
    np.testing.assert_array_equal(model.atom_positions, distorted.atom_positions)
    assert report.iterations == 0
    assert report.energy_after == report.energy_before


def test_chain_break_is_not_closed(il2_truth):
    """Renumbering across il2's 78 -> 83 gap makes the numbers consecutive; the 9.7 Å gap
    must still not be pulled shut."""
    links = peptide_links(il2_truth)
    gap = int(np.flatnonzero(~links[:-1])[0])
    numbers = il2_truth.residue_number.copy()
    numbers[gap + 1 :] -= numbers[gap + 1] - numbers[gap] - 1
    renumbered = dataclasses.replace(il2_truth, residue_number=numbers)
    before = np.linalg.norm(il2_truth.atom_positions[gap, 2] - il2_truth.atom_positions[gap + 1, 0])
    assert before > MAX_LINK_DISTANCE
    model, _ = relax(renumbered, None, steps=20, device="cpu")
    after = np.linalg.norm(model.atom_positions[gap, 2] - model.atom_positions[gap + 1, 0])
    assert after == pytest.approx(before, abs=0.5)


@pytest.mark.parametrize("move", [0.8, 1.6])
def test_turned_residue_between_close_neighbours_is_bonded(il2_truth, move):
    """A residue turned end for end (180° about the normal of its N-Cα-C plane) and moved
    ``move`` Å: its C-N gaps to both neighbours exceed `MAX_LINK_DISTANCE`, but its Cα stays
    within `MAX_LINK_CA_DISTANCE` of theirs (4.8 Å at the larger move, a step closure takes), so
    both peptide bonds are restored."""
    k = 40
    positions = il2_truth.atom_positions.copy()
    n, ca, c, cb = positions[k, [0, 1, 2, 4]]
    normal = np.cross(c - n, cb - ca)
    normal /= np.linalg.norm(normal)
    half_turn = 2 * np.outer(normal, normal) - np.eye(3)
    outward = (cb - ca) / np.linalg.norm(cb - ca)
    atoms = il2_truth.atom_mask[k]
    positions[k][atoms] = (positions[k][atoms] - ca) @ half_turn.T + ca + move * outward
    turned = dataclasses.replace(il2_truth, atom_positions=positions)

    def gaps(model):
        return (np.linalg.norm(model.atom_positions[k - 1, 2] - model.atom_positions[k, 0]),
                np.linalg.norm(model.atom_positions[k, 2] - model.atom_positions[k + 1, 0]))

    assert min(gaps(turned)) > MAX_LINK_DISTANCE
    assert np.linalg.norm(turned.ca[k] - turned.ca[[k - 1, k + 1]], axis=1).max() < MAX_LINK_CA_DISTANCE
    model, _ = relax(turned, None, device="cpu")
    assert max(gaps(model)) == pytest.approx(1.33, abs=0.05)


def test_cancel_raises(distorted):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        relax(distorted, None, device="cpu", cancel=token)


def test_progress_is_reported(distorted):
    calls = []
    relax(distorted, None, steps=30, device="cpu", progress=lambda *a: calls.append(a))
    assert calls and calls[-1][:2] == ("relax", 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fixed": np.zeros(3, dtype=bool)},
        {"fixed": np.zeros(126, dtype=int)},
        {"steps": -1},
        {"steps": 2.5},
        {"density_weight": -1.0},
    ],
)
def test_bad_arguments(distorted, kwargs):
    with pytest.raises(ValueError):
        relax(distorted, None, device="cpu", **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_relax_on_gpu_matches_cpu_quality(distorted, il2_view_3A):
    density = il2_view_3A[0].density
    _, report = relax(distorted, density, device="cuda")
    assert report.device.startswith("cuda")
    assert report.geometry_after.peptide_bond_ideal_fraction >= 0.95


def test_2000_residues_within_time_limit(il2_truth, tmp_path):
    offsets = np.array([(i % 4, i // 4, 0) for i in range(COPIES)], dtype=np.float32) * SPACING
    mask = np.tile(il2_truth.atom_mask, (COPIES, 1))
    positions = np.concatenate([il2_truth.atom_positions + offset for offset in offsets])
    big = BuiltModel(
        atom_positions=np.where(mask[..., None], positions, 0),
        atom_mask=mask,
        aatype=np.tile(il2_truth.aatype, COPIES),
        residue_number=np.tile(il2_truth.residue_number, COPIES),
        chain_id=np.repeat([chr(ord("A") + i) for i in range(COPIES)], il2_truth.num_residues),
        confidence=np.tile(il2_truth.confidence, COPIES),
    )
    path = write_model(big, tmp_path / "tiled.cif")
    density = standardise(simulate_map(read_structure(path), SimulationOptions(resolution=3.0)), 3.0).density
    model, report = relax(_distorted(big, seed=2), density, device="cpu")
    print(f"\n{big.num_residues} residues, {report.num_free_atoms} atoms: {report.seconds:.1f} s")
    assert big.num_residues >= 2000
    assert report.seconds < TIME_LIMIT_2000
    assert report.geometry_after.peptide_bond_ideal_fraction >= 0.95


def test_ramachandran_outliers_are_pulled_into_the_allowed_region(il2_truth):
    """Turning residue 100's atoms (all but N) by 50° about its N-CA bond moves its phi from
    -52° to -2°, an outlier. Relaxation without a map brings it back into the allowed region
    only with the Ramachandran term: with the other terms alone it stays an outlier (phi -60°,
    psi -149°; measured by setting `RAMACHANDRAN_SIGMA` to 1e6)."""
    from scipy.spatial.transform import Rotation

    from cryobuild.validation import ramachandran_outliers

    model, row = il2_truth, 100
    n, ca = model.atom_positions[row, 0].astype(np.float64), model.atom_positions[row, 1]
    turn = Rotation.from_rotvec(np.deg2rad(50.0) * (ca - n) / np.linalg.norm(ca - n))
    positions = model.atom_positions.astype(np.float64).copy()
    positions[row, 1:] = turn.apply(positions[row, 1:] - n) + n
    bent = dataclasses.replace(model, atom_positions=positions.astype(np.float32))
    assert ramachandran_outliers(bent)[0][row]
    relaxed, report = relax(bent, None, device="cpu")
    assert report.energy_before.ramachandran > 0
    assert report.energy_after.ramachandran < 0.1 * report.energy_before.ramachandran
    assert not ramachandran_outliers(relaxed)[0][row]
