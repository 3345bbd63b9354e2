"""Simulated maps line up with their model at any voxel size and origin, and noise is as asked."""

from __future__ import annotations

import numpy as np
import pytest

from cryobuild.data import ca_coordinates, read_structure
from cryobuild.simulate import SimulationOptions, simulate_map


@pytest.fixture(scope="module")
def il2(il2_path):
    structure = read_structure(il2_path)
    return structure, ca_coordinates(structure)


def zscore_at(density, xyz):
    return (density.interpolate(xyz) - density.grid.mean()) / density.grid.std()


@pytest.mark.parametrize("voxel", [0.7, 1.0, 1.23, 1.5])
@pytest.mark.parametrize("origin", [None, (-31.3, -52.0, -29.5)])
def test_density_lies_on_the_atoms(il2, voxel, origin):
    structure, ca = il2
    density = simulate_map(structure, SimulationOptions(resolution=3.0, voxel_size=voxel, origin=origin))
    np.testing.assert_allclose(density.voxel_size, voxel)
    if origin is not None:
        np.testing.assert_allclose(density.origin, origin)
    assert zscore_at(density, ca).mean() > 4.0
    # the density is centred on the atoms: shifting the atoms by 1.5 Å lowers it everywhere
    assert zscore_at(density, ca + 1.5).mean() < zscore_at(density, ca).mean() - 0.5


def test_lower_resolution_is_smoother(il2):
    structure, ca = il2
    sharp = simulate_map(structure, SimulationOptions(resolution=2.5))
    blurry = simulate_map(structure, SimulationOptions(resolution=4.5))
    assert zscore_at(sharp, ca).mean() > zscore_at(blurry, ca).mean()


def test_noise_level_follows_snr(il2):
    structure, _ = il2
    clean = simulate_map(structure, SimulationOptions(resolution=3.0))
    noisy = simulate_map(structure, SimulationOptions(resolution=3.0, snr=2.0), np.random.default_rng(1))
    noise = noisy.grid - clean.grid
    envelope = clean.grid > 0.1 * np.percentile(clean.grid, 99.9)
    measured = clean.grid[envelope].var() / noise.var()
    assert 1.5 < measured < 2.5


def test_noise_colour_sets_how_the_snr_falls_with_frequency(il2):
    from cryobuild.maps import frequency_radius

    structure, _ = il2
    clean = simulate_map(structure, SimulationOptions(resolution=3.0))
    signal = np.abs(np.fft.rfftn(clean.grid))
    shells = frequency_radius(clean.grid.shape, clean.voxel_size[::-1])
    low, high = (shells > 0.05) & (shells < 0.1), (shells > 0.25) & (shells < 0.33)

    def noise_over_signal(colour):
        noisy = simulate_map(structure, SimulationOptions(resolution=3.0, snr=2.0, noise_colour=colour),
                             np.random.default_rng(1))
        noise = np.abs(np.fft.rfftn(noisy.grid - clean.grid))
        return noise[high].mean() / signal[high].mean(), noise[low].mean() / signal[low].mean()

    # shaped like the signal: about the same noise-to-signal in every shell
    high_1, low_1 = noise_over_signal(1.0)
    assert 0.7 < high_1 / low_1 < 1.6
    # whiter: the noise outgrows the signal towards 3-4 Å, as in real maps
    high_half, low_half = noise_over_signal(0.5)
    assert high_half / low_half > 2 * high_1 / low_1


def test_map_model_fsc_is_flat_for_the_training_noise_and_falls_for_whiter_noise(il2):
    """`bench.fsc`: a noise-free map correlates with its model in every shell; noise shaped like
    the signal lowers every shell alike, whiter noise the fine shells most."""
    from cryobuild.bench.fsc import SHELLS, map_model_fsc

    structure, _ = il2
    clean = map_model_fsc(simulate_map(structure, SimulationOptions(resolution=3.0)), structure, 3.0)
    assert np.all(clean[:-1] > 0.9), clean  # the last shell is at the resolution cut itself
    shaped, whiter = (map_model_fsc(simulate_map(structure, SimulationOptions(
        resolution=3.0, snr=2.0, noise_colour=colour), np.random.default_rng(1)), structure, 3.0)
        for colour in (1.0, 0.3))
    fine = SHELLS.index(1.1)
    assert shaped[0] - shaped[fine] < 0.15, shaped
    assert whiter[0] - whiter[fine] > 0.3, whiter


def test_bad_options():
    with pytest.raises(ValueError):
        SimulationOptions(resolution=0)
    with pytest.raises(ValueError):
        SimulationOptions(snr=-1)
    with pytest.raises(ValueError):
        SimulationOptions(noise_colour=1.5)
