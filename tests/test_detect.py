"""Cα detection: sliding windows without seams, masks, a tiny network end to end, the baseline,
and (with the bundled weights) real detection quality on a simulated il2 map."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from cryobuild.checkpoints import checkpoint_path
from cryobuild.data import ca_coordinates
from cryobuild.detect.baseline import detect_calphas_baseline
from cryobuild.detect.inference import (
    DetectionOptions, detect_calphas, detection_features, detection_grid, extract_points,
    sliding_window_predict,
)
from cryobuild.detect.network import CalphaDetector, DetectorConfig, load_detector
from cryobuild.errors import Cancelled
from cryobuild.evaluate import match_calpha
from cryobuild.features import standardise
from cryobuild.maps import DensityMap, mask_around, pad_to_shape
from cryobuild.progress import CancelToken


class LocalConvNet(torch.nn.Module):
    """A norm-free network with a 5-voxel receptive field: windowed and whole-map passes must
    agree exactly when windows discard more than 2 edge voxels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.config = types.SimpleNamespace(divisor=1, solvent_frame=False)
        self.layers = torch.nn.Sequential(
            torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 4, 3, padding=1)
        )
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.layers(x)


def test_ridges_without_maxima_are_filled_one_point_per_radius():
    """A ridge of probability along x with one maximum (as along a helix's tube at 4-5 Å) gives
    one point without the fill, and points about every radius along it with the fill, none
    nearer each other than the radius, none off the ridge."""
    grid = np.zeros((9, 9, 40), dtype=np.float32)
    x = np.arange(40)
    grid[4, 4] = 0.9 - 0.6 * np.abs(x - 20) / 20  # 0.3 at the ends, 0.9 in the middle
    probability = DensityMap(grid, 1.5, 0.0)
    alone = extract_points(probability, None, 0.2, drop_isolated=False)
    assert len(alone) == 1
    filled = extract_points(probability, None, 0.2, drop_isolated=False, fill_radius=2.8)
    spacing = np.diff(np.sort(filled.xyz[:, 0]))
    assert len(filled) == 20 and np.all(spacing >= 2.8) and np.all(spacing <= 3.0 + 1e-6)
    assert np.allclose(filled.xyz[:, 1:], 6.0)
    with pytest.raises(ValueError, match="fill radius"):
        DetectionOptions(fill_radius=0)


def test_sliding_windows_have_no_seams(il2_view_3A):
    view, _ = il2_view_3A
    prepared, features = detection_features(detection_grid(view), (1, 1, 1))
    features = features[:, :32, :32, :32]
    net = LocalConvNet()
    whole = sliding_window_predict(net, features, DetectionOptions(window=32, margin=6))
    tiled = sliding_window_predict(net, features, DetectionOptions(window=14, margin=3, batch_size=3))
    np.testing.assert_allclose(tiled[0], whole[0], atol=1e-5)
    np.testing.assert_allclose(tiled[1], whole[1], atol=1e-5)


def test_solvent_frame_reads_a_padded_map_as_the_map(il2_map_3A):
    """Framed by the solvent's level, a map padded with empty voxels gives the network the same
    window as the map itself; framed by 0 (the first detectors' form) it does not: there the
    frame reads as protein-level density around the unpadded box."""
    density, _ = il2_map_3A
    views = [standardise(d, 3.0) for d in (density, pad_to_shape(density, density.shape_xyz + 16))]
    for solvent_frame, least, most in ((True, 0.99, 1.0), (False, -1.0, 0.9)):
        (a, fa), (b, fb) = [
            detection_features(grid, grid.shape_xyz + 30, view.solvent if solvent_frame else None)
            for view, grid in ((view, detection_grid(view)) for view in views)]
        shift = np.round((a.origin - b.origin) / 1.5).astype(int)[::-1]
        same = fb[(slice(None),) + tuple(slice(s, s + n) for s, n in zip(shift, fa.shape[1:]))]
        for channel in range(2):
            correlation = np.corrcoef(fa[channel].ravel(), same[channel].ravel())[0, 1]
            assert least <= correlation <= most, (solvent_frame, channel, correlation)


@pytest.mark.skipif(not checkpoint_path("detect").exists(), reason="no trained detector bundled")
def test_zero_padding_does_not_change_the_candidates(il2_map_3A):
    """A zoned map (zero beyond 4 Å of the atoms, as many deposited maps are) and the same map
    padded with 20 voxels of zeros give the same Cα candidates: the detector sees the box
    around the density, not the empty box around it (`inference._framed`)."""
    density, structure = il2_map_3A
    atoms = np.array([a.pos.tolist() for ch in structure[0] for r in ch for a in r])
    zoned = density.with_grid(np.where(mask_around(density, atoms, 4.0), density.grid, 0.0))
    network = load_detector()
    points = [detect_calphas(standardise(d, 3.0), network).points.xyz
              for d in (zoned, pad_to_shape(zoned, zoned.shape_xyz + 40))]
    assert len(points[0]) == len(points[1]) > 100
    # the two standardisations differ slightly (FFTs of different boxes): 196 of 197 within
    # 0.1 Å; with the box as it comes, 172 moved by more and there were 206 and 196
    nearest = np.linalg.norm(points[0][:, None] - points[1][None], axis=-1).min(1)
    assert np.mean(nearest < 0.1) > 0.95


def test_mask_restricts_windows_and_points(il2_map_3A, monkeypatch):
    from cryobuild.detect import inference

    monkeypatch.setattr(inference, "FLAT_RANGE", 0.0)  # windows over the padding run too
    density, structure = il2_map_3A
    ca = ca_coordinates(structure)
    big = pad_to_shape(density, density.shape_xyz + 60)
    view = standardise(big, 3.0)
    full_net, masked_net = LocalConvNet(), LocalConvNet()
    options = DetectionOptions(window=24, margin=4, batch_size=1, threshold=0.5)
    detect_calphas(view, full_net, options)
    mask = big.with_grid(mask_around(big, ca[:10], 6.0).astype(np.float32))
    result = detect_calphas(view, masked_net, options, mask=mask)
    assert 0 < masked_net.calls < full_net.calls / 4
    if len(result.points):
        # kept on the 1.5 Å detection grid, then moved by their sub-voxel offsets
        distance = np.linalg.norm(result.points.xyz[:, None] - ca[None, :10], axis=-1).min(1)
        assert distance.max() <= 6.0 + 1.5 * np.sqrt(3)


def test_tiny_random_network_end_to_end_and_cancel(il2_view_3A):
    density, _ = il2_view_3A
    torch.manual_seed(0)
    net = CalphaDetector(DetectorConfig(channels=(4, 8), in_channels=2))
    seen = []
    result = detect_calphas(density, net, DetectionOptions(window=32, margin=4),
                            progress=lambda stage, fraction, message="": seen.append(fraction))
    assert result.probability.grid.min() >= 0 and result.probability.grid.max() <= 1
    assert seen[-1] == 1.0
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        detect_calphas(density, net, DetectionOptions(window=32, margin=4), cancel=token)


def test_baseline_finds_some_calphas(il2_view_3A):
    density, structure = il2_view_3A
    ca = ca_coordinates(structure)
    points = detect_calphas_baseline(density).points
    pred, ref = match_calpha(points.xyz, ca)
    assert len(ref) / len(ca) > 0.3


@pytest.mark.skipif(not checkpoint_path("detect").exists(), reason="no trained detector bundled")
def test_trained_detector_on_simulated_il2(il2_view_3A):
    density, structure = il2_view_3A
    ca = ca_coordinates(structure)
    network = load_detector()
    result = detect_calphas(density, network)
    pred, ref = match_calpha(result.points.xyz, ca)
    recall, precision = len(ref) / len(ca), len(pred) / len(result.points)
    # measured with the bundled weights: recall 1.00, precision 0.61 (0.99, 0.62 unfilled; the
    # graph network's existence head removes the extra candidates)
    assert recall >= 0.9 and precision >= 0.5, (recall, precision)
    # windows smaller than the map find the same atoms as one pass over the whole map (instance
    # norm sees each window's own statistics, so weak spurious peaks may differ)
    small = detect_calphas(density, network, DetectionOptions(window=32, margin=6))
    _, small_ref = match_calpha(small.points.xyz, ca)
    assert len(small_ref) >= len(ref) - 0.05 * len(ca)
    # a 3 Å map is filled along ridges: every local maximum stays and points are added; a
    # map better than fill_from_resolution is not filled
    assert density.map_resolution >= DetectionOptions().fill_from_resolution
    maxima = detect_calphas(density, network, DetectionOptions(fill_radius=None))
    assert len(result.points) > len(maxima.points)
    assert cKDTree(result.points.xyz).query(maxima.points.xyz)[0].max() < 1e-9
    gated = detect_calphas(density, network, DetectionOptions(fill_from_resolution=3.5))
    assert np.array_equal(gated.points.xyz, maxima.points.xyz)


@pytest.mark.skipif(not checkpoint_path("detect").exists(), reason="no trained detector bundled")
def test_windows_without_density_are_not_run(il2_map_3A, monkeypatch):
    """il2 in a corner of a box of zeros: the windows tile only the density's box and skip the
    zeros, and find the Cα that running every window over the box finds."""
    from cryobuild.detect import inference
    from cryobuild.maps import DensityMap

    density, structure = il2_map_3A
    ca = ca_coordinates(structure)
    grid = np.pad(density.grid, [(0, 100)] * 3)  # zeros on the high side of each axis
    view = standardise(DensityMap(grid, density.voxel_size, density.origin), 3.0)
    detector = load_detector()

    class Counting(torch.nn.Module):
        """The detector, counting the windows it is run on."""

        def __init__(self):
            super().__init__()
            self.detector, self.config, self.windows = detector, detector.config, 0

        def forward(self, batch):
            self.windows += len(batch)
            return self.detector(batch)

    skipping, every = Counting(), Counting()
    found = detect_calphas(view, skipping).points
    monkeypatch.setattr(inference, "FLAT_RANGE", 0.0)  # every voxel counts as density
    found_by_all = detect_calphas(view, every).points
    assert skipping.windows < every.windows / 4, (skipping.windows, every.windows)
    # the windows lie elsewhere over the protein (instance norm sees each window's statistics)
    recall, recall_by_all = (len(match_calpha(p.xyz, ca)[1]) / len(ca) for p in (found, found_by_all))
    assert recall >= recall_by_all - 0.02, (recall, recall_by_all)


def test_noise_maps_train_with_no_calpha_targets():
    """`--noise-fraction`: crops of noise maps, with no positive voxel and no offset target."""
    import itertools

    from cryobuild.train.detect import Augmentation, TrainingCrops

    crops = TrainingCrops([], crop=24, crops_per_map=2, aug=Augmentation(noise_map_fraction=1.0), seed=0)
    for features, heat, positive, offsets, offset_mask in itertools.islice(crops._noise(np.random.default_rng(0)), 2):
        assert features.shape == (2, 24, 24, 24) and torch.isfinite(features).all()
        assert not positive.any() and not offset_mask.any() and float(heat.max()) == 0.0


def test_simulated_crops_take_their_noise_colour_from_the_range(il2_path, monkeypatch):
    """`Augmentation.noise_colour` (``train.detect --noise-colour``): each simulated map's
    noise colour is drawn from the range, and (1, 1) keeps the signal-shaped noise."""
    import itertools

    from cryobuild.data import read_structure
    from cryobuild.train import detect as training

    colours = []
    simulate = training.simulate_map

    def recording(structure, options, rng):
        colours.append(options.noise_colour)
        return simulate(structure, options, rng)

    monkeypatch.setattr(training, "simulate_map", recording)
    structure = read_structure(il2_path)
    for low, high in ((0.0, 0.5), (1.0, 1.0)):
        aug = training.Augmentation(noise_colour=(low, high), noise_free_fraction=0.0)
        crops = training.TrainingCrops([], crop=24, crops_per_map=1, aug=aug, seed=0)
        for seed in range(3):
            list(itertools.islice(crops._simulated(structure, np.random.default_rng(seed)), 1))
        drawn = colours[-3:]
        assert all(low <= c <= high for c in drawn), drawn
        assert len(set(drawn)) == (1 if low == high else 3), drawn


def test_neighbour_error_correlation_tells_independent_errors_from_shifted_runs():
    """`bench.detect.neighbour_error_correlation`: near 0 for errors drawn per residue, near 1
    for a chain moved as a whole; residues that do not follow one another in their chain
    (`BuiltModel.follows`) are not neighbours."""
    import dataclasses

    from cryobuild.bench.detect import neighbour_error_correlation
    from cryobuild.models import model_from_ca

    rng = np.random.default_rng(0)
    reference = model_from_ca(np.cumsum(np.tile([[3.8, 0.0, 0.0]], (400, 1)), axis=0), np.ones(400))
    index = np.arange(400)
    independent = reference.ca + rng.normal(0, 1.0, (400, 3))
    shifted = reference.ca + rng.normal(0, 1.0, 3) + rng.normal(0, 0.1, (400, 3))
    assert abs(neighbour_error_correlation(independent, reference, index, index)) < 0.1
    assert neighbour_error_correlation(shifted, reference, index, index) > 0.9
    every_other = dataclasses.replace(reference, residue_number=2 * index)  # no residue follows
    assert np.isnan(neighbour_error_correlation(shifted, every_other, index, index))


def test_coverage_counts_the_residues_a_candidate_is_nearest_to_and_their_runs():
    """Two candidates at one residue cover it once; the residue between two covered runs is a
    gap; a candidate far from the chain covers nothing."""
    from cryobuild.bench.detect import coverage

    chain = np.stack([np.arange(10) * 3.8, np.zeros(10), np.zeros(10)], 1)
    candidates = chain[[0, 1, 2, 5, 6]] + 0.5
    candidates = np.concatenate([candidates, chain[[1]] - 0.6, [[0.0, 20.0, 0.0]]])
    assert coverage(candidates, chain) == (5, 2.5)
    assert coverage(np.zeros((0, 3)), chain) == (0, 0.0)
    # the probability at the residues without a candidate and with one, read from the map
    from cryobuild.bench.detect import score
    from cryobuild.models import model_from_ca

    grid = np.zeros((3, 3, 40), dtype=np.float32)
    grid[:, :, :] = 0.9
    grid[:, :, 12:] = 0.2  # from x = 12 Å: residues 4-9, of which 5 and 6 are covered
    figures = score(candidates, model_from_ca(chain, np.ones(len(chain))), DensityMap(grid, 1.0, (0.0, -1.0, -1.0)))
    assert figures["p_covered"] == pytest.approx(0.9) and figures["p_uncovered"] == pytest.approx(0.2)


def test_the_oracle_candidates_are_what_each_mode_says(il2_path):
    """bench.candidates: the deposited Cα alone; with the detector's far candidates added; with
    a share left out; each detector candidate moved onto its nearest deposited Cα; one detector
    candidate per residue; shifted runs stay between a residue and its neighbour."""
    from cryobuild.bench.candidates import oracle_points
    from cryobuild.models import read_model
    from cryobuild.points import CalphaPoints

    reference = read_model(il2_path)
    ca = reference.ca
    detected = CalphaPoints(np.concatenate([ca[:50] + 0.4, ca[:5] + 0.3, [[500.0, 0, 0]]]),
                            np.full(56, 0.6))
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(oracle_points("deposited", reference, detected, rng).xyz, ca)
    assert len(oracle_points("false", reference, detected, rng)) == len(ca) + 1
    assert abs(len(oracle_points("drop:0.3", reference, detected, rng)) - 0.7 * len(ca)) < 0.15 * len(ca)
    nearest = oracle_points("nearest", reference, detected, rng)
    assert len(nearest) == 51 and np.all(nearest.score == np.float32(0.6))
    # one candidate per residue, the nearer of two, as the detector placed it; the far one gone
    def rows_sorted(xyz):
        return xyz[np.lexsort(xyz.T)]

    taken = oracle_points("taken", reference, detected, rng).xyz
    np.testing.assert_allclose(rows_sorted(taken),
                               rows_sorted(np.concatenate([ca[:5] + 0.3, ca[5:50] + 0.4])), atol=1e-5)
    shifted = oracle_points("shift:0.5", reference, detected, rng).xyz
    step = np.linalg.norm(np.diff(ca, axis=0), axis=1).max()
    assert np.all(np.linalg.norm(shifted - ca, axis=1) <= 0.5 * step + 1e-6)


def test_fragment_oracle_averages_independent_errors_and_fills_missing_residues(il2_path):
    """bench.candidates ``fragments:K``: rigid fits of the deposited fragments to candidates
    with independent errors of 0.8 Å per axis bring them nearer than they were, give residues
    without a candidate a position, and keep the candidates far from the protein."""
    from cryobuild.bench.candidates import oracle_points
    from cryobuild.models import read_model
    from cryobuild.points import CalphaPoints

    reference = read_model(il2_path)
    ca = reference.ca
    rng = np.random.default_rng(1)
    kept = rng.random(len(ca)) >= 0.2
    noisy = ca[kept] + rng.normal(0.0, 0.8, (int(kept.sum()), 3))
    detected = CalphaPoints(np.concatenate([noisy, [[500.0, 0, 0]]]), np.full(len(noisy) + 1, 0.6))
    fitted = oracle_points("fragments:8", reference, detected, rng).xyz
    # every residue, then the candidates farther than NEAR from the protein, in their order
    assert len(fitted) > len(ca) and np.allclose(fitted[-1], [500.0, 0, 0])
    before = np.median(np.linalg.norm(noisy - ca[kept], axis=1))
    after = np.linalg.norm(fitted[:len(ca)] - ca, axis=1)
    assert np.median(after) < 0.7 * before
    assert np.median(after[~kept]) < before


def test_library_oracle_fits_the_library_fragment_that_matches(il2_path, monkeypatch):
    """bench.candidates ``library:K``: given a library holding the deposited windows besides
    straight ones, each window of noisy candidates is fitted by its own deposited window (it
    fits best), as ``fragments:K`` fits it; averaging the best few still brings the candidates
    nearer; a library of straight fragments does not."""
    import cryobuild.bench.candidates as candidates
    from cryobuild.models import read_model
    from cryobuild.points import CalphaPoints

    reference = read_model(il2_path)
    ca = reference.ca.astype(np.float64)
    rng = np.random.default_rng(2)
    noisy = ca + rng.normal(0.0, 0.5, ca.shape)
    detected = CalphaPoints(noisy, np.full(len(ca), 0.6))
    run = reference.runs()[0]
    windows = np.stack([ca[run[i:i + 8]] for i in range(len(run) - 7)])
    straight = np.arange(8)[:, None] * np.array([3.8, 0.0, 0.0])
    library = np.concatenate([windows, np.repeat(straight[None], 50, axis=0)])
    averaged = candidates.oracle_points("library:8", reference, detected, rng, library).xyz
    lines = candidates.oracle_points("library:8", reference, detected, rng, straight[None]).xyz
    # with little noise, each window's own deposited window is the one that fits best
    near = CalphaPoints(ca + rng.normal(0.0, 0.05, ca.shape), np.full(len(ca), 0.6))
    monkeypatch.setattr(candidates, "LIBRARY_BEST", 1)
    best = candidates.oracle_points("library:8", reference, near, rng, library).xyz
    own = candidates.oracle_points("fragments:8", reference, near, rng).xyz
    np.testing.assert_allclose(best[run], own[run], atol=0.1)  # helical windows nearly alike
    error = {name: np.median(np.linalg.norm(xyz[run] - ca[run], axis=1))
             for name, xyz in (("noisy", noisy), ("averaged", averaged), ("lines", lines))}
    assert error["averaged"] < error["noisy"] < error["lines"]
    # a run shorter than the library's fragments is not fitted: its candidates stay
    short = reference.take(run[:5])
    kept = candidates.oracle_points("library:8", short, CalphaPoints(noisy[run[:5]], np.ones(5)),
                                    rng, library).xyz
    np.testing.assert_allclose(kept, noisy[run[:5]], atol=1e-5)


def test_oracle_candidates_stand_in_for_the_detector_while_active(il2_path, il2_view_3A):
    """bench.candidates.OracleCandidates: inside it, `inference.detect_calphas` returns the
    mode's candidates for the model given to `use` (what `bench.real.run_map` builds from, in
    bench.candidates and bench.trace); outside it, the detector's own again."""
    from cryobuild.bench.candidates import OracleCandidates
    from cryobuild.detect import inference
    from cryobuild.detect.network import load_detector
    from cryobuild.models import read_model

    reference, view = read_model(il2_path), il2_view_3A[0]
    network = load_detector()
    original = inference.detect_calphas
    with OracleCandidates("deposited") as oracle:
        oracle.use(reference, np.random.default_rng(0))
        np.testing.assert_allclose(inference.detect_calphas(view, network).points.xyz, reference.ca)
    assert inference.detect_calphas is original
    own = original(view, network).points.xyz
    assert own.shape != reference.ca.shape or not np.allclose(own, reference.ca)
    with pytest.raises(ValueError, match="mode must be one of"):
        OracleCandidates("perfect")


def test_detection_loss_weights_its_offset_term():
    """`train.detect.detection_loss`: the offset L1 enters the total ``offset_weight`` times."""
    from cryobuild.train.detect import detection_loss, make_targets

    heat, positive, offsets, offset_mask = map(torch.from_numpy, make_targets(np.array([[4.3, 3.8, 4.1]]), 8))
    output = torch.zeros(1, 4, 8, 8, 8)
    batch = (heat[None], positive[None], offsets[None], offset_mask[None])
    one, parts = detection_loss(output, *batch, offset_weight=1.0)
    five, _ = detection_loss(output, *batch, offset_weight=5.0)
    assert parts["offset"] > 0
    assert float(five - one) == pytest.approx(4.0 * parts["offset"], rel=1e-5)
