"""Cryo-EM-like maps simulated from atomic models (training data, tests and the demo).

The density is the electron-scattering potential of the atoms (gemmi's `DensityCalculatorE`,
Mott-Bethe electron form factors), each atom blurred by its own B-factor (so flexible loops come
out at a lower local resolution, as in real maps) plus a global blur that gives the look of the
target resolution, then low-passed at that resolution with a soft edge. Optional realism:
a global B-factor sharpening/blurring (as deposited maps are post-processed), a constant solvent
level inside a smoothed molecular envelope, and coloured noise whose power spectrum follows the
signal's, scaled to a chosen signal-to-noise ratio.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .maps import DensityMap, fourier_filter, frequency_radius

__all__ = ["SimulationOptions", "noise_map", "simulate_map", "resolution_blur"]

#: Global blur (Å²) that makes a map computed from atoms look like a map at resolution d:
#: B = 8 pi^2 (0.225 d)^2, i.e. a Gaussian whose sd is ~0.225 d (cryobuild STACK_NOTES, checked
#: against gemmi's density calculator).
_BLUR_SD_PER_RESOLUTION = 0.225

#: Padding (Å) around the atoms in a simulated box when no box is given.
DEFAULT_MARGIN = 8.0


def resolution_blur(resolution: float) -> float:
    """Global B-factor (Å²) giving a map of ``resolution`` Å its look."""
    return float(8 * np.pi**2 * (_BLUR_SD_PER_RESOLUTION * resolution) ** 2)


@dataclasses.dataclass(frozen=True)
class SimulationOptions:
    """How to simulate a map.

    resolution: Å; voxel_size: Å; margin: Å of padding around the atoms; b_extra: Å², added to
    the global blur (negative sharpens); snr: signal-to-noise ratio (variance of the signal
    inside the molecular envelope over the variance of the noise), ``None`` for no noise;
    solvent_level: density of bulk solvent as a fraction of the mean protein density inside
    the envelope (0 for none); noise_colour: how the noise's amplitude spectrum follows the
    signal's, as the exponent of the signal's radially averaged amplitude (1: the signal's own
    shape, the same SNR in every shell; 0: white up to Nyquist; between, the SNR per shell falls
    with frequency, as a real map's half-map FSC does); origin: Å (x, y, z) of the first voxel,
    ``None`` to place the box around the atoms with ``margin``; shape_xyz: box size in voxels
    (``None``: up to the atoms plus ``margin``).
    """

    resolution: float = 3.0
    voxel_size: float = 1.0
    margin: float = DEFAULT_MARGIN
    b_extra: float = 0.0
    snr: float | None = None
    solvent_level: float = 0.0
    noise_colour: float = 1.0
    origin: tuple[float, float, float] | None = None
    shape_xyz: tuple[int, int, int] | None = None

    def __post_init__(self):
        if not self.resolution > 0:
            raise ValueError(f"resolution must be positive (Å), got {self.resolution}")
        if not self.voxel_size > 0:
            raise ValueError(f"voxel size must be positive (Å), got {self.voxel_size}")
        if self.snr is not None and not self.snr > 0:
            raise ValueError(f"SNR must be positive, got {self.snr}")
        if not 0.0 <= self.noise_colour <= 1.0:
            raise ValueError(f"noise colour must be in [0, 1], got {self.noise_colour}")
        if self.shape_xyz is not None and self.origin is None:
            raise ValueError("shape_xyz needs an origin")


def simulate_map(
    structure,
    options: SimulationOptions = SimulationOptions(),
    rng: np.random.Generator | None = None,
) -> DensityMap:
    """Simulate a map from a `gemmi.Structure` (first model; waters and ligands dropped).

    Returns a `DensityMap` in the structure's own frame (coordinates in the map and the model
    agree), values scaled so the protein envelope has unit mean before noise.
    """
    import gemmi

    rng = rng if rng is not None else np.random.default_rng()
    st = structure.clone()
    st.setup_entities()
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    st.remove_empty_chains()
    if len(st) > 1:
        for index in range(len(st) - 1, 0, -1):
            del st[index]
    xyz = np.array([atom.pos.tolist() for chain in st[0] for res in chain for atom in res])
    if len(xyz) == 0:
        raise ValueError("the structure has no atoms to simulate a map from")

    voxel = float(options.voxel_size)
    if options.origin is None:
        origin = xyz.min(0) - options.margin
    else:
        origin = np.asarray(options.origin, dtype=np.float64)
    if options.shape_xyz is None:
        shape = np.ceil((xyz.max(0) + options.margin - origin) / voxel).astype(int) + 1
    else:
        shape = np.asarray(options.shape_xyz, dtype=int)
    if np.any(shape < 2):
        raise ValueError("the box given by origin and shape holds no atoms")
    # gemmi computes on a periodic cell starting at 0: shift the atoms into it, with room so
    # that density does not wrap around.
    pad = int(np.ceil(options.margin / voxel)) + 4
    cell_shape = shape + 2 * pad
    cell_shape = np.array([_fft_friendly(int(n)) for n in cell_shape])
    shift = -(origin - pad * voxel)
    st[0].transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*shift)))
    lengths = cell_shape * voxel
    st.cell = gemmi.UnitCell(*lengths, 90, 90, 90)
    st.spacegroup_hm = "P 1"

    calc = gemmi.DensityCalculatorE()
    calc.d_min = options.resolution
    calc.blur = resolution_blur(options.resolution)
    calc.set_grid_cell_and_spacegroup(st)
    calc.grid.set_size(*[int(n) for n in cell_shape])
    # not put_model_density_on_grid(): it re-sizes the grid from d_min, losing the exact spacing
    calc.add_model_density_to_grid(st[0])
    calc.grid.symmetrize_sum()
    full = np.array(calc.grid, copy=True).transpose(2, 1, 0)  # gemmi [x, y, z] -> [z, y, x]

    full = fourier_filter(full, voxel, options.resolution, options.b_extra)
    envelope = _molecular_envelope(full)
    signal_mean = float(full[envelope].mean()) if envelope.any() else float(full.std())
    full = full / signal_mean
    if options.solvent_level > 0:
        from scipy.ndimage import gaussian_filter

        soft = gaussian_filter((~envelope).astype(np.float32), sigma=1.5 / voxel)
        full = full + options.solvent_level * soft
    if options.snr is not None:
        full = full + _coloured_noise(full, envelope, options.snr, rng, options.noise_colour)

    sl = tuple(slice(pad, pad + n) for n in shape[::-1])
    return DensityMap(full[sl].astype(np.float32), np.full(3, voxel), origin)


def noise_map(edge: int, smoothing: float, voxel: float, rng: np.random.Generator) -> DensityMap:
    """A map of Gaussian noise and nothing else: ``edge``³ voxels of ``voxel`` Å (origin 0),
    smoothed by a Gaussian of ``smoothing`` voxels (0: white), at a random scale (e^±3) and
    offset (N(0, 1)). What a map without protein looks like: the detector's noise training maps
    (`train.detect`) and the maps of `bench.noise` and `bench.skewness`."""
    from scipy.ndimage import gaussian_filter

    grid = gaussian_filter(rng.standard_normal((edge, edge, edge)), smoothing)
    grid = grid * float(np.exp(rng.uniform(-3, 3))) + float(rng.normal(0, 1))
    return DensityMap(grid.astype(np.float32), voxel, np.zeros(3))


def _fft_friendly(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _molecular_envelope(grid: np.ndarray) -> np.ndarray:
    """Voxels above 10% of the 99.9th percentile: a rough protein envelope."""
    level = 0.1 * float(np.percentile(grid, 99.9))
    return grid > level


def _coloured_noise(grid: np.ndarray, envelope: np.ndarray, snr: float, rng,
                    colour: float = 1.0) -> np.ndarray:
    """Gaussian noise with the radially averaged amplitude spectrum of ``grid`` raised to
    ``colour`` (`SimulationOptions.noise_colour`), scaled so var(signal in envelope) /
    var(noise) = ``snr``."""
    spectrum = np.abs(np.fft.rfftn(grid))
    shape = grid.shape
    s_index = np.round(frequency_radius(shape, 1.0) * max(shape)).astype(int)
    radial = np.bincount(s_index.ravel(), spectrum.ravel()) / np.maximum(
        np.bincount(s_index.ravel()), 1
    )
    white = np.fft.rfftn(rng.standard_normal(shape).astype(np.float32))
    noise = np.fft.irfftn(white * (radial**colour)[s_index], s=shape, axes=(0, 1, 2))
    signal_var = float(grid[envelope].var()) if envelope.any() else float(grid.var())
    noise *= np.sqrt(signal_var / snr) / max(float(noise.std()), 1e-12)
    return noise.astype(np.float32)
