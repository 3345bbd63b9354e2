"""What the networks see does not depend on how a map was processed: zero padding, intensity
scale and offset, global sharpening or blurring, zoning; and noise is told from protein."""

from __future__ import annotations

import numpy as np
import pytest

from cryobuild.features import estimate_resolution, standardise
from cryobuild.maps import DensityMap, fourier_filter, pad_to_shape, resample_onto


def _agreement(reference, other) -> tuple[float, float]:
    """Correlation and largest mean shift of ``other`` against ``reference`` (both `NetworkMap`)
    over the reference's molecule (standardised value > 0.5)."""
    a = reference.density
    b = resample_onto(other.density, a)
    inside = a.grid > 0.5
    return float(np.corrcoef(a.grid[inside], b.grid[inside])[0, 1]), float(
        abs(a.grid[inside].mean() - b.grid[inside].mean()))


@pytest.fixture(scope="module")
def base(il2_map_3A):
    density, _ = il2_map_3A
    return density, standardise(density, 3.0)


@pytest.mark.parametrize("change", ["pad", "scale", "offset", "sharpen", "blur"])
def test_standardise_undoes_processing(base, change):
    density, reference = base
    if change == "pad":
        changed = pad_to_shape(density, density.shape_xyz + 40)
    elif change == "scale":
        changed = density.with_grid(density.grid * 1e3)
    elif change == "offset":
        changed = density.with_grid(density.grid * 1e-3 + 7.0)
    else:
        b = -100.0 if change == "sharpen" else 100.0
        padded = pad_to_shape(density, density.shape_xyz + 32)  # the filter's box is periodic
        filtered = padded.with_grid(fourier_filter(padded.grid, 1.0, 1.0, b))
        changed = filtered
    correlation, shift = _agreement(reference, standardise(changed, 3.0))
    assert correlation > 0.97 and shift < 0.15, (correlation, shift)


def test_zoned_map_stays_zoned_and_keeps_its_scale(base, il2_map_3A):
    """Zoned as deposited maps are: every voxel farther than 3 Å from the model set to 0."""
    from cryobuild.maps import mask_around

    density, reference = base
    atoms = np.array([a.pos.tolist() for r in il2_map_3A[1][0][0] for a in r])
    zone = mask_around(density, atoms, 3.0)
    zoned = density.with_grid(np.where(zone, density.grid, 0.0))
    view = standardise(zoned, 3.0)
    correlation, shift = _agreement(reference, view)
    assert correlation > 0.97 and shift < 0.15, (correlation, shift)
    outside = view.density.grid[~zone]
    assert np.ptp(outside) == 0  # empty voxels hold one value, the solvent's


def test_resolution_is_estimated_near_the_truth(il2_map_3A):
    from cryobuild.simulate import SimulationOptions, simulate_map

    _, structure = il2_map_3A
    for resolution in (3.0, 4.5):
        density = simulate_map(structure, SimulationOptions(resolution=resolution, snr=3.0),
                               np.random.default_rng(1))
        assert abs(estimate_resolution(density) - resolution) < 0.25 * resolution


def test_noise_and_protein_told_apart(base):
    """The noise maps of `bench.skewness` (white or smoothed) fall below the noise bound of
    the protein-density check, a simulated protein map above it, an inverted one far below."""
    from cryobuild.bench.noise import noise_map
    from cryobuild.pipeline import INVERTED_SKEWNESS, NOISE_SKEWNESS

    density, reference = base
    for seed in range(6):
        view = standardise(*noise_map(seed))
        assert abs(view.skewness) < NOISE_SKEWNESS
    assert reference.skewness > 0.5
    inverted = standardise(density.with_grid(-density.grid), 3.0)
    assert inverted.skewness < INVERTED_SKEWNESS - 0.15


def test_constant_and_non_finite_maps_are_refused():
    from cryobuild.errors import InputError

    with pytest.raises(InputError, match="constant"):
        standardise(DensityMap(np.ones((16, 16, 16), np.float32), 1.0, 0.0), 3.0)
    grid = np.zeros((16, 16, 16), np.float32)
    grid[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="finite"):
        standardise(DensityMap(grid, 1.0, 0.0), 3.0)


def test_thresholded_map_has_its_erased_density_filled(il2_map_3A, monkeypatch):
    """A noisy map thresholded as some deposited segments are (every voxel below the 75th
    percentile set to 0) keeps the scale of the unthresholded map once its erased voxels are
    filled (`features.ERASED_FILL_SIGMA`); with no filling its molecule reads half a standard
    deviation off."""
    from cryobuild import features
    from cryobuild.maps import erased_below
    from cryobuild.simulate import SimulationOptions, simulate_map

    density = simulate_map(il2_map_3A[1], SimulationOptions(resolution=3.0, snr=3.0),
                           np.random.default_rng(0))
    reference = standardise(density, 3.0)
    grid = density.grid
    thresholded = density.with_grid(np.where(grid >= np.percentile(grid[grid != 0], 75), grid, 0.0))
    assert erased_below(thresholded) is not None
    correlation, shift = _agreement(reference, standardise(thresholded, 3.0))
    assert correlation > 0.97 and shift < 0.3, (correlation, shift)
    monkeypatch.setattr(features, "ERASED_FILL_SIGMA", 1e-6)  # no filling
    _, unfilled_shift = _agreement(reference, standardise(thresholded, 3.0))
    assert unfilled_shift > 0.4


def test_maps_of_3_5_to_4_5_angstrom_are_read_on_finer_voxels(monkeypatch):
    """`features.reading_grid`: a 4 Å map on 1.4 Å voxels is read on 0.9 Å voxels over the same
    extent; a 3 Å or a 5 Å map, a 4 Å map already on fine voxels and one that would grow too
    big are read as they are. `standardise` reads through it, with the resolution given or
    estimated, so builds and training see the same grid, but keeps a thresholded map's voxels."""
    from cryobuild import features
    from cryobuild.features import FINE_SAMPLING_VOXEL, reading_grid

    grid = np.random.default_rng(0).normal(size=(20, 22, 24)).astype(np.float32)
    coarse = DensityMap(grid, np.full(3, 1.4), np.array([5.0, -3.0, 2.0]))
    fine = reading_grid(coarse, 4.0)
    assert np.allclose(fine.voxel_size, FINE_SAMPLING_VOXEL) and np.allclose(fine.origin, coarse.origin)
    assert np.all((fine.shape_xyz - 1) * fine.voxel_size <= (coarse.shape_xyz - 1) * 1.4 + 1e-6)
    assert np.all((fine.shape_xyz - 1) * fine.voxel_size > (coarse.shape_xyz - 1) * 1.4 - 0.9)
    assert reading_grid(coarse, 3.0) is coarse and reading_grid(coarse, 5.0) is coarse
    for voxel in (0.92, 1.0):  # as fine as the finest training maps
        already = DensityMap(grid, np.full(3, voxel), np.zeros(3))
        assert reading_grid(already, 4.0) is already
    assert np.allclose(standardise(coarse, 4.0).density.voxel_size, FINE_SAMPLING_VOXEL)
    assert np.allclose(standardise(coarse, 3.0).density.voxel_size, 1.4)
    monkeypatch.setattr(features, "estimate_resolution", lambda density: 4.0)
    assert np.allclose(standardise(coarse).density.voxel_size, FINE_SAMPLING_VOXEL)
    thresholded = DensityMap(np.where(grid > 0.5, grid, 0).astype(np.float32), np.full(3, 1.4), np.zeros(3))
    assert np.allclose(standardise(thresholded, 4.0).density.voxel_size, 1.4)
    monkeypatch.setattr(features, "FINE_SAMPLING_MAX_VOXELS", 1000)
    assert reading_grid(coarse, 4.0) is coarse
