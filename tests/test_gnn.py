"""The graph network: a tiny random network end to end on a simulated il2 map, equivariance
under a 90° rotation of map and model together, the no-sequence variant, crops, cancellation
and the training loss."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from cryobuild.errors import Cancelled
from cryobuild.gnn import GraphNetwork, RefineOptions, refine, run_rounds, tiny_config
from cryobuild.gnn.losses import GraphTargets, graph_loss
from cryobuild.maps import DensityMap
from cryobuild.models import BuiltModel, read_model
from cryobuild.points import CalphaPoints
from cryobuild.progress import CancelToken
from cryobuild.residues import one_letter

#: Tolerances of the equivariance test (float32 round-off through a 1-layer network).
POSITION_TOLERANCE = 1e-3  # Å
PROBABILITY_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def il2_model(il2_path):
    return read_model(il2_path)


@pytest.fixture(scope="module")
def sequences(il2_model):
    """The modelled sequence (the PDB file declares none)."""
    return ["".join(one_letter(aatype) for aatype in il2_model.aatype)]


def _tiny_network(**changes) -> GraphNetwork:
    torch.manual_seed(0)
    network = GraphNetwork(tiny_config(**changes))
    # the frame update starts at the identity; make it move so equivariance is tested
    torch.nn.init.normal_(network.frame_update.weight, std=0.05)
    return network.eval()


def _rotate_z90(density: DensityMap, model: BuiltModel) -> tuple[DensityMap, BuiltModel, np.ndarray]:
    """Map and model rotated by 90° about z: (x, y, z) -> (-y, x, z), exactly on the grid."""
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    if not np.allclose(density.voxel_size, density.voxel_size[0]):
        raise ValueError("the test needs cubic voxels")
    ny = density.grid.shape[1]
    # new[k, i, ny - 1 - j] = old[k, j, i]
    grid = density.grid.transpose(0, 2, 1)[:, :, ::-1]
    origin = rotation @ density.origin + density.voxel_size * np.array([-(ny - 1), 0.0, 0.0])
    rotated = DensityMap(grid, density.voxel_size, origin)
    positions = model.atom_positions @ rotation.T.astype(np.float32)
    return rotated, dataclasses.replace(model, atom_positions=positions), rotation


def test_refine_end_to_end(il2_view_3A, il2_model, sequences):
    density, _ = il2_view_3A
    start = CalphaPoints(il2_model.ca, np.ones(il2_model.num_residues))
    events = []
    output = refine(density, start, sequences, _tiny_network(), rounds=2,
                    progress=lambda *event: events.append(event))
    n = il2_model.num_residues
    assert output.rotations.shape == (n, 3, 3)
    assert output.atom14_positions.shape == (n, 14, 3)
    assert output.aa_probs.shape == (n, 20)
    np.testing.assert_allclose(output.aa_probs.sum(-1), 1.0, atol=1e-5)
    assert np.all((output.confidence >= 0) & (output.confidence <= 100))
    assert np.all((output.existence >= 0) & (output.existence <= 1))
    assert output.edge_index.shape == (n, tiny_config().num_neighbours)
    assert np.all((output.edge_index >= 0) & (output.edge_index < n))
    np.testing.assert_allclose(np.linalg.det(output.rotations), 1.0, atol=1e-4)
    assert [event[1] for event in events] == [0.0, 0.5, 1.0]  # start, then each round's crop
    model = output.to_model()
    assert model.num_residues == n and model.atom_mask[:, 1].all()


def test_equivariance_under_90_degree_rotation(il2_view_3A, il2_model, sequences):
    density, _ = il2_view_3A
    network = _tiny_network()
    before = refine(density, il2_model, sequences, network, rounds=2)
    rotated_map, rotated_model, rotation = _rotate_z90(density.density, il2_model)
    after = refine(dataclasses.replace(density, density=rotated_map), rotated_model, sequences, network, rounds=2)
    assert np.abs(before.translations - il2_model.ca).max() > 0.01  # the network moved nodes
    np.testing.assert_allclose(after.translations, before.translations @ rotation.T,
                               atol=POSITION_TOLERANCE)
    np.testing.assert_allclose(after.rotations, rotation @ before.rotations, atol=1e-4)
    np.testing.assert_allclose(after.atom14_positions, before.atom14_positions @ rotation.T,
                               atol=POSITION_TOLERANCE)
    np.testing.assert_allclose(after.aa_probs, before.aa_probs, atol=PROBABILITY_TOLERANCE)
    np.testing.assert_allclose(after.existence, before.existence, atol=PROBABILITY_TOLERANCE)


def test_no_sequence_variant(il2_view_3A, il2_model):
    density, _ = il2_view_3A
    network = _tiny_network(use_sequence=False)
    assert network.sequence_encoder is None
    output = refine(density, il2_model, [], network, rounds=1)
    assert output.num_nodes == il2_model.num_residues


def test_crops_cover_every_node(il2_view_3A, il2_model, sequences):
    density, _ = il2_view_3A
    events = []
    output = refine(density, il2_model, sequences, _tiny_network(), rounds=1,
                    options=RefineOptions(max_crop_nodes=40),
                    progress=lambda *event: events.append(event))
    assert len(events) > 1
    assert np.all(output.edge_index >= 0)
    assert np.all(np.isfinite(output.translations))


def test_crops_given_their_part_of_the_map_match_the_whole_map(il2_view_3A, il2_model, sequences):
    """Each crop samples only the map around its nodes (`CROP_MAP_MARGIN`): as if it had the
    whole box (a margin larger than the map), with the bundled network's 11-sample cube."""
    density, _ = il2_view_3A
    network = _tiny_network(cube_size=11)
    parts = refine(density, il2_model, sequences, network, rounds=2,
                   options=RefineOptions(max_crop_nodes=64))
    whole = refine(density, il2_model, sequences, network, rounds=2,
                   options=RefineOptions(max_crop_nodes=64, map_margin=1e4))
    np.testing.assert_allclose(parts.translations, whole.translations, atol=POSITION_TOLERANCE)
    np.testing.assert_allclose(parts.aa_probs, whole.aa_probs, atol=PROBABILITY_TOLERANCE)
    np.testing.assert_array_equal(parts.edge_index, whole.edge_index)


def test_cancel_raises(il2_view_3A, il2_model, sequences):
    density, _ = il2_view_3A
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        refine(density, il2_model, sequences, _tiny_network(), cancel=token)


def test_training_loss_backpropagates(il2_view_3A, il2_model, sequences):
    from cryobuild.geometry import Rigid, random_rotations
    from cryobuild.gnn.density import DensityVolume
    from cryobuild.gnn.network import GraphInputs

    density, _ = il2_view_3A
    network = _tiny_network().train()
    n = il2_model.num_residues
    ca = torch.from_numpy(il2_model.ca)
    inputs = GraphInputs(
        volume=DensityVolume.from_map(density.density),
        frames=Rigid(random_rotations((n,), torch.Generator().manual_seed(1)), ca),
        aa_prior=torch.zeros(n, 20),
        sequence=network.embed_sequences(sequences),
    )
    following = torch.arange(1, n + 1)
    following[-1] = -1
    targets = GraphTargets(
        real=torch.ones(n, dtype=torch.bool),
        aatype=torch.from_numpy(il2_model.aatype),
        atom14=torch.from_numpy(il2_model.atom_positions),
        atom14_mask=torch.from_numpy(il2_model.atom_mask),
        next_node=following,
        previous_node=torch.arange(-1, n - 1),
    )
    loss, parts = graph_loss(run_rounds(network, inputs, 2), targets)
    loss.backward()
    assert np.isfinite(parts["total"]) and parts["torsion"] > 0
    gradients = [p.grad for p in network.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert network.sequence_encoder.language_model.embed_tokens.weight.grad is not None


def test_training_samples_carry_sidechain_decoys(il2_map_3A, il2_model):
    """Fake nodes of a training crop: the side-chain decoys sit on side-chain atoms beyond Cβ
    (the detector's typical false positives), are not real and have no links."""
    from scipy.spatial import cKDTree

    from cryobuild.train.gnn import GraphAugmentation, make_sample

    structure = il2_map_3A[1].clone()
    structure[0][0].name = "A"  # the PDB file's chain is blank; read_model names it A
    aug = GraphAugmentation(fake_fraction=0.0, sidechain_decoys=(0.3, 0.3), decoy_noise=0.0,
                            noise_free_fraction=1.0)
    sample = make_sample(structure, il2_model, ["A"], aug, np.random.default_rng(2))
    decoys = sample.ca[~sample.real]
    chosen = sample.real.sum()
    assert len(decoys) == round(0.3 * chosen)
    beyond_cb = il2_model.atom_positions[:, 5:][il2_model.atom_mask[:, 5:]]
    distance, _ = cKDTree(beyond_cb).query(decoys)
    assert distance.max() < 1e-3
    assert np.all(sample.next_node[~sample.real] == -1) and np.all(sample.aatype[~sample.real] == 20)


def test_training_crops_start_from_detected_candidates(il2_map_3A, il2_model):
    """`GraphAugmentation.detected_start_fraction`: a real-map crop's nodes are the detector's
    candidates in its box; each candidate near a deposited Cα (one to one, `evaluate.match_calpha`)
    stands for that residue, with its links; the others (a false candidate, the second of two
    on one residue) are fake nodes; residues without a candidate have no node."""
    from cryobuild.train.gnn import GraphAugmentation, detected_nodes, make_sample

    ca = il2_model.ca
    missing = 10
    candidates = np.vstack([
        np.delete(ca, missing, axis=0) + [0.8, 0.0, 0.0],  # every residue but one, 0.8 Å off
        ca[20] + [0.0, 1.6, 0.0],  # a second candidate on residue 20: farther, so fake
        ca.mean(0) + [0.0, 0.0, 40.0],  # nowhere near the protein, but in the box below
    ])
    aug = GraphAugmentation(detected_jitter=0.0, detected_start_fraction=1.0)
    lo, hi = ca.min(0) - 50.0, ca.max(0) + 50.0
    residues, start, fake = detected_nodes(il2_model, candidates, lo, hi, aug, np.random.default_rng(0))
    expected = np.delete(np.arange(il2_model.num_residues), missing)
    np.testing.assert_array_equal(residues, expected)
    np.testing.assert_allclose(start, ca[expected] + [0.8, 0.0, 0.0], atol=1e-5)
    assert len(fake) == 2

    structure = il2_map_3A[1].clone()
    structure[0][0].name = "A"
    from cryobuild.features import standardise

    view = standardise(il2_map_3A[0], 3.0)
    sample = make_sample(structure, il2_model, ["A"], dataclasses.replace(aug, crop_residues=(500, 500)),
                         np.random.default_rng(1), real_view=view, candidates=candidates)
    real = np.flatnonzero(sample.real)
    assert len(real) == il2_model.num_residues - 1
    np.testing.assert_allclose(sample.atom14[real, 1], ca[expected], atol=1e-5)
    # the residues on either side of the missing one have no link across it
    assert sample.next_node[missing - 1] == -1 and sample.previous_node[missing] == -1
    assert sample.next_node[0] == 1 and sample.previous_node[1] == 0
    assert np.all(sample.next_node[~sample.real] == -1)


def test_training_starts_shift_along_the_chain(il2_model):
    """`GraphAugmentation.chain_shift` moves each start Cα towards a bonded neighbour's Cα, by
    one fraction per stretch, never past halfway: every node stays nearest its own Cα."""
    from scipy.spatial import cKDTree

    from cryobuild.train.gnn import GraphAugmentation, _along_chain_shifts, chain_links

    kept = np.arange(il2_model.num_residues)
    assert not _along_chain_shifts(il2_model, kept, GraphAugmentation(), np.random.default_rng(0)).any()
    aug = GraphAugmentation(chain_shift=0.45, chain_shift_run=(5, 5))
    offsets = _along_chain_shifts(il2_model, kept, aug, np.random.default_rng(0))
    ca = il2_model.ca
    links = chain_links(il2_model)
    to_next = np.vstack([ca[1:] - ca[:-1], np.zeros((1, 3))])
    to_previous = np.vstack([np.zeros((1, 3)), ca[:-1] - ca[1:]])
    fractions = []
    for i, offset in enumerate(offsets):
        candidates = [(step, ok) for step, ok in ((to_next[i], links[i]),
                                                  (to_previous[i], i > 0 and links[i - 1])) if ok]
        fit = [np.dot(offset, step) / np.dot(step, step) for step, _ in candidates
               if np.allclose(offset, np.dot(offset, step) / np.dot(step, step) * step, atol=1e-6)]
        assert fit, f"residue {i}: offset not along a bond to a neighbour"
        fractions.append(max(fit))
    fractions = np.array(fractions)
    assert fractions.max() < 0.45 + 1e-9 and (fractions > 0.05).mean() > 0.5
    moved = (np.linalg.norm(offsets, axis=1) > 0).reshape(-1)
    stretch = fractions[:5][moved[:5]]
    assert np.allclose(stretch, stretch[0])  # one fraction per stretch
    _, nearest = cKDTree(ca).query(ca + offsets)
    assert np.array_equal(nearest, kept)


def test_training_crops_given_unrelated_sequences_keep_their_types(il2_map_3A, il2_model):
    """With ``unrelated_fraction`` 1 a crop's sequences are replaced by unrelated ones of the
    same lengths (shuffles or another composition), while the types taught stay the
    structure's."""
    from cryobuild.train.gnn import GraphAugmentation, make_sample, unrelated_sequences

    own = "".join(one_letter(int(aatype)) for aatype in il2_model.aatype)
    rng = np.random.default_rng(3)
    replaced = [unrelated_sequences((own, own[:40]), rng) for _ in range(20)]
    assert all([len(s) for s in pair] == [len(own), 40] for pair in replaced)
    assert all(pair[0] != own for pair in replaced)
    shuffles = [pair for pair in replaced if sorted(pair[0]) == sorted(own)]
    assert 0 < len(shuffles) < len(replaced)

    structure = il2_map_3A[1].clone()
    structure[0][0].name = "A"

    def sample(fraction: float):
        aug = GraphAugmentation(unrelated_fraction=fraction, noise_free_fraction=1.0,
                                fake_fraction=0.0, sidechain_decoys=(0.0, 0.0))
        return make_sample(structure, il2_model, [own], aug, np.random.default_rng(2))

    given, unrelated = sample(0.0), sample(1.0)
    assert given.sequences == (own,)
    assert unrelated.sequences != (own,) and len(unrelated.sequences[0]) == len(own)
    np.testing.assert_array_equal(unrelated.aatype, given.aatype)


def test_real_map_crops_are_varied_only_when_asked(il2_view_3A, il2_model):
    """A crop of a real map (here il2's standardised map standing in for one) comes back
    voxel for voxel without ``real_vary_fraction``; with it, it is varied (noise, blemishes)
    on the same grid and standardised again (molecule sd 1, so its overall sd stays near the
    plain crop's), and the types taught stay the structure's."""
    from cryobuild.train.gnn import GraphAugmentation, make_sample

    view, structure = il2_view_3A
    structure = structure.clone()
    structure[0][0].name = "A"

    def sample(fraction: float):
        aug = GraphAugmentation(real_vary_fraction=fraction, fake_fraction=0.0,
                                sidechain_decoys=(0.0, 0.0))
        return make_sample(structure, il2_model, ["A"], aug, np.random.default_rng(5), real_view=view)

    plain, varied = sample(0.0), sample(1.0)
    np.testing.assert_array_equal(plain.density.origin, varied.density.origin)
    assert plain.density.grid.shape == varied.density.grid.shape
    grid = plain.density.grid
    lo = np.round(view.density.xyz_to_voxel(plain.density.origin)).astype(int)[::-1]
    window = view.density.grid[tuple(slice(a, a + n) for a, n in zip(lo, grid.shape))]
    np.testing.assert_array_equal(grid, window)
    difference = varied.density.grid - grid
    assert float(np.abs(difference).mean()) > 0.1
    assert 0.5 < float(varied.density.grid.std()) / float(grid.std()) < 2.0
    np.testing.assert_array_equal(varied.aatype, plain.aatype)


def test_real_map_crops_read_at_a_worse_resolution_lose_the_finer_detail(il2_view_3A, il2_model):
    """``real_blur_fraction`` reads a real crop at a resolution drawn from
    ``real_blur_resolution``: its detail finer than that range is gone; a map already worse
    than the range comes back as it is."""
    from cryobuild.maps import frequency_radius
    from cryobuild.train.gnn import GraphAugmentation, make_sample

    view, structure = il2_view_3A
    structure = structure.clone()
    structure[0][0].name = "A"

    def sample(blur_range):
        aug = GraphAugmentation(real_blur_fraction=1.0, real_blur_resolution=blur_range,
                                real_noise=(0.0, 0.0), fake_fraction=0.0,
                                sidechain_decoys=(0.0, 0.0))
        return make_sample(structure, il2_model, ["A"], aug, np.random.default_rng(5),
                           real_view=view).density

    def fine_share(density) -> float:
        """Share of the crop's power at frequencies finer than 1/3.6 Å⁻¹."""
        power = np.abs(np.fft.rfftn(density.grid - density.grid.mean())) ** 2
        s = frequency_radius(density.grid.shape, density.voxel_size[::-1])
        return float(power[s > 1 / 3.6].sum() / power.sum())

    plain = sample((2.0, 2.5))
    lo = np.round(view.density.xyz_to_voxel(plain.origin)).astype(int)[::-1]
    window = view.density.grid[tuple(slice(a, a + n) for a, n in zip(lo, plain.grid.shape))]
    np.testing.assert_array_equal(plain.grid, window)
    blurred = sample((4.5, 5.0))
    assert fine_share(blurred) < 0.2 * fine_share(plain)
    assert 0.5 < float(blurred.grid.std()) / float(plain.grid.std()) < 2.0


def test_training_starts_take_their_rms_error_from_the_range(il2_view_3A, il2_model):
    """`GraphAugmentation.start_error` is the rms distance (Å) of a crop's start Cα from the
    deposited ones, drawn per crop from its range."""
    from cryobuild.train.gnn import GraphAugmentation, make_sample

    view, structure = il2_view_3A
    structure = structure.clone()
    structure[0][0].name = "A"

    def rms_error(low: float, high: float, seed: int) -> float:
        aug = GraphAugmentation(start_error=(low, high), fake_fraction=0.0,
                                sidechain_decoys=(0.0, 0.0))
        sample = make_sample(structure, il2_model, ["A"], aug, np.random.default_rng(seed),
                             real_view=view)
        start = sample.ca[sample.real]
        truth = sample.atom14[sample.real, 1]
        return float(np.sqrt(((start - truth) ** 2).sum(-1).mean()))

    assert abs(rms_error(0.5, 0.5, 0) - 0.5) < 0.1
    assert abs(rms_error(2.0, 2.0, 0) - 2.0) < 0.3
    spread = [rms_error(0.5, 2.0, seed) for seed in range(6)]
    assert 0.4 < min(spread) < max(spread) < 2.3 and max(spread) - min(spread) > 0.3


def test_realism_perturbs_atoms(il2_map_3A):
    """Training structures get B-factors that grow towards the surface and along side chains
    and weaker carboxylate oxygens; other occupancies stay."""
    from cryobuild.train.realism import Realism, perturb_atoms

    structure = il2_map_3A[1].clone()
    before = {(r.seqid.num, a.name): (a.b_iso, a.occ) for r in structure[0][0] for a in r}
    realism = Realism(surface_b=(60.0, 60.0), sidechain_b=(20.0, 20.0), local_blur_fraction=0.0,
                      carboxylate_occupancy=(0.5, 0.5))
    perturb_atoms(structure, realism, np.random.default_rng(0))
    extra, occupancy, xyz, side = [], {}, [], []
    for residue in structure[0][0]:
        for atom in residue:
            b, occ = before[(residue.seqid.num, atom.name)]
            extra.append(atom.b_iso - b)
            xyz.append(atom.pos.tolist())
            side.append(atom.name not in ("N", "CA", "C", "O", "CB"))
            occupancy[(residue.name, atom.name)] = atom.occ / occ
    extra, xyz, side = np.array(extra), np.array(xyz), np.array(side)
    radial = np.linalg.norm(xyz - xyz.mean(0), axis=1)
    backbone = ~side
    assert np.corrcoef(radial[backbone], extra[backbone])[0, 1] > 0.9
    assert extra[side].mean() > extra[backbone].mean() + 10
    assert occupancy[("ASP", "OD1")] == pytest.approx(0.5) and occupancy[("GLU", "OE2")] == pytest.approx(0.5)
    assert occupancy[("ASP", "CG")] == pytest.approx(1.0) and occupancy[("LYS", "NZ")] == pytest.approx(1.0)


def test_realism_reweights_elements(il2_map_3A):
    """With ``element_weight_fraction`` 1, all atoms of one element get one occupancy factor
    within its `ELEMENT_WEIGHTS` range and carbon none; with 0 nothing changes."""
    from cryobuild.train.realism import ELEMENT_WEIGHTS, Realism, perturb_atoms

    def factors(fraction: float) -> dict[str, set]:
        structure = il2_map_3A[1].clone()
        before = [a.occ for r in structure[0][0] for a in r]
        perturb_atoms(structure, Realism(element_weight_fraction=fraction, carboxylate_occupancy=(1.0, 1.0)),
                      np.random.default_rng(4))
        after = [(a.element.name, a.occ) for r in structure[0][0] for a in r]
        out: dict[str, set] = {}
        for occ, (element, new) in zip(before, after):
            out.setdefault(element, set()).add(round(new / occ, 6))
        return out

    reweighted = factors(1.0)
    assert reweighted["C"] == {1.0}
    drawn = {}
    for element, (low, high) in ELEMENT_WEIGHTS.items():
        [drawn[element]] = reweighted[element]
        assert low <= drawn[element] <= high
    # a factor of exactly 1 is inside every range: the draws must differ from it
    assert all(abs(factor - 1.0) > 1e-3 for factor in drawn.values()), drawn
    assert all(values == {1.0} for values in factors(0.0).values())


def test_realism_thresholds_like_a_deposited_segment(il2_map_3A):
    """A thresholded training map: voxels below a contour level taken among the atoms'
    voxels are exactly 0 (as the spike NTD segment), a share of the atoms lies on them, and
    the rest of the map is unchanged."""
    from cryobuild.train.realism import _thresholded

    density, structure = il2_map_3A
    atoms = np.array([a.pos.tolist() for r in structure[0][0] for a in r])
    grid = density.grid.astype(np.float64)
    out = _thresholded(grid, density, atoms, 0.3)
    ijk = np.round(density.xyz_to_voxel(atoms)).astype(int)[:, ::-1]
    erased = out[tuple(ijk.T)] == 0
    assert 0.2 < erased.mean() < 0.4
    kept = out != 0
    assert np.array_equal(out[kept], grid[kept]) and (out == 0).mean() > 0.5
    assert np.array_equal(_thresholded(grid, density, atoms[:0] + 1e6, 0.3), grid)


def test_bench_direction_right_reads_which_way_the_backbone_runs(il2_model):
    """`bench.gnn.score_refinement`'s ``direction_right``: the deposited backbone's C - N points
    to the next residue nearly everywhere, the same backbone with N and C swapped nearly
    nowhere."""
    from types import SimpleNamespace

    from cryobuild.bench.gnn import score_refinement

    def output(positions):
        return SimpleNamespace(aa_probs=np.eye(21, 20)[il2_model.aatype], translations=il2_model.ca,
                               atom14_positions=positions, atom14_mask=il2_model.atom_mask,
                               confidence=np.linspace(0, 100, il2_model.num_residues))

    deposited = il2_model.atom_positions
    swapped = deposited.copy()
    swapped[:, [0, 2]] = deposited[:, [2, 0]]
    assert score_refinement(output(deposited), il2_model)["direction_right"] > 0.95
    assert score_refinement(output(swapped), il2_model)["direction_right"] < 0.05


def test_bench_chain_error_parts_split_along_and_across_the_chain(il2_model):
    """`bench.gnn.chain_error_parts`: every Cα moved along its chain shows as error along it
    only; moved across it, as error across it only."""
    from cryobuild.bench.gnn import chain_error_parts

    ca = il2_model.ca
    tangent = np.zeros_like(ca)
    tangent[1:-1] = ca[2:] - ca[:-2]
    tangent[1:-1] /= np.linalg.norm(tangent[1:-1], axis=-1, keepdims=True)
    across = np.cross(tangent, [0.0, 0.0, 1.0])
    across /= np.maximum(np.linalg.norm(across, axis=-1, keepdims=True), 1e-9)
    along, off = chain_error_parts(ca + 0.7 * tangent, il2_model)
    assert abs(along - 0.7) < 0.05 and off < 0.05
    along, off = chain_error_parts(ca + 1.0 * across, il2_model)
    assert along < 0.05 and abs(off - 1.0 / np.sqrt(2)) < 0.05
    # paired nodes (as the detector's, after matching) are read at their residues
    residues = np.arange(10, 40)[::-1]
    along, off = chain_error_parts(ca[residues] + 0.7 * tangent[residues], il2_model, residues)
    assert abs(along - 0.7) < 0.05 and off < 0.05


def test_concatenated_graphs_keep_each_graphs_edges_on_its_own_nodes():
    from cryobuild.gnn.refine import GraphOutput, concatenate_graphs

    def graph(n, k, first):
        edges = np.full((n, k), -1)
        edges[:, 0] = (np.arange(n) + 1) % n  # each node's next one, in a ring
        probs = np.zeros((n, k), np.float32)
        probs[:, 0] = 0.9
        return GraphOutput(
            rotations=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
            translations=np.full((n, 3), first, np.float32),
            atom14_positions=np.zeros((n, 14, 3), np.float32), atom14_mask=np.zeros((n, 14), bool),
            aa_probs=np.full((n, 20), 0.05, np.float32), confidence=np.full(n, first, np.float32),
            existence=np.ones(n, np.float32), edge_index=edges, next_prob=probs,
            previous_prob=probs.copy(), torsions=np.zeros((n, 20, 5, 2), np.float32))

    joined = concatenate_graphs([graph(3, 2, 0.0), graph(4, 3, 1.0)])
    assert joined.num_nodes == 7 and joined.edge_index.shape == (7, 3)
    np.testing.assert_array_equal(joined.edge_index[:, 0], [1, 2, 0, 4, 5, 6, 3])
    assert (joined.edge_index[:3, 1:] == -1).all() and (joined.next_prob[:3, 2] == 0).all()
    np.testing.assert_array_equal(joined.confidence, [0, 0, 0, 1, 1, 1, 1])
