"""A second map simulation recipe, which no training ever uses: a standing out-of-distribution
check beside `cryobuild.simulate` (``bench.build`` prints both).

It differs from `cryobuild.simulate` where simulators differ: each atom is one Gaussian
weighted by its atomic number (X-ray-like, no electron form factors, no per-atom B-factors),
with the width ChimeraX's ``molmap`` gives a resolution d (sd = 0.225 d), and the noise is white
Gaussian noise low-passed with the same Gaussian, not noise shaped like the signal's spectrum.
Defaults as the issue that asked for it measured: SNR 1.5, 1.1 Å voxels.
"""

from __future__ import annotations

import numpy as np

from ..maps import DensityMap

__all__ = ["BENCH_SNR", "MOLMAP_SD_PER_RESOLUTION", "MOLMAP_SNR", "RECIPES", "RECIPE_SNR", "molmap_map"]

#: Gaussian sd of an atom per Å of resolution (ChimeraX ``molmap`` sigmaFactor).
MOLMAP_SD_PER_RESOLUTION = 0.225
#: Å of box around the atoms.
MARGIN = 8.0
#: Signal-to-noise ratio of the recipe (as the issue that asked for it measured).
MOLMAP_SNR = 1.5


def molmap_map(structure, resolution: float, rng: np.random.Generator, *, voxel_size: float = 1.1,
               snr: float = MOLMAP_SNR) -> DensityMap:
    """A map of a `gemmi.Structure`'s first model (waters and ligands dropped): Gaussian atoms
    weighted by atomic number at ``resolution`` Å on ``voxel_size`` Å voxels, plus white noise
    low-passed by the same Gaussian at ``snr`` (signal variance inside the envelope over noise
    variance; ``inf`` for none)."""
    from scipy.ndimage import gaussian_filter

    st = structure.clone()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    atoms = [atom for chain in st[0] for residue in chain for atom in residue]
    xyz = np.array([atom.pos.tolist() for atom in atoms])
    weight = np.array([atom.element.atomic_number * atom.occ for atom in atoms], dtype=np.float64)
    origin = xyz.min(0) - MARGIN
    shape_xyz = np.ceil((xyz.max(0) + MARGIN - origin) / voxel_size).astype(int) + 1
    grid = np.zeros(shape_xyz[::-1], dtype=np.float64)
    ijk = (xyz - origin) / voxel_size
    base = np.floor(ijk).astype(int)
    frac = ijk - base
    for corner in np.ndindex(2, 2, 2):
        offset = np.array(corner)
        share = np.prod(np.where(offset == 1, frac, 1 - frac), axis=1)
        i, j, k = (base + offset).T
        np.add.at(grid, (k, j, i), weight * share)
    sigma = MOLMAP_SD_PER_RESOLUTION * resolution / voxel_size
    signal = gaussian_filter(grid, sigma)
    envelope = signal > 0.1 * np.percentile(signal, 99.9)
    noise = gaussian_filter(rng.standard_normal(signal.shape), sigma)
    noise *= np.sqrt(signal[envelope].var() / snr) / max(float(noise.std()), 1e-12)
    return DensityMap((signal + noise).astype(np.float32), np.full(3, voxel_size), origin)


def _simulated(structure, resolution: float, snr: float, rng: np.random.Generator) -> DensityMap:
    from ..simulate import SimulationOptions, simulate_map

    return simulate_map(structure, SimulationOptions(resolution=resolution, snr=snr or None), rng)


#: Noise of the benchmarks' maps from our simulator (signal variance / noise variance in the
#: envelope).
BENCH_SNR = 3.0
#: Each recipe's default SNR (``bench.build``, ``bench.detect``).
RECIPE_SNR = {"simulate": BENCH_SNR, "molmap": MOLMAP_SNR}

#: The recipes the benchmarks make held-out maps by (``bench.build --recipes``, ``bench.detect
#: --recipe``): ``(structure, resolution Å, SNR, rng) -> DensityMap``, an SNR of 0 (or inf)
#: meaning no noise. ``simulate`` is the training maps' simulator, ``molmap`` this module's.
RECIPES = {
    "simulate": _simulated,
    "molmap": lambda structure, resolution, snr, rng: molmap_map(
        structure, resolution, rng, snr=snr or float("inf")),
}
