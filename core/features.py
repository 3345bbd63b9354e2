"""The one place where a density map becomes what the networks see: ``DensityMap -> NetworkMap``.

Deposited maps differ in ways that say nothing about the protein: how much they were sharpened
(a global B from about -150 to +150 Å²), how much empty box or zoning surrounds the molecule,
their units and offset, their voxel size. The detector, the graph network, the relaxation and
training all take the map through `standardise`, so none of them can see those differences and
training and inference cannot drift apart:

0. **Erased density.** A thresholded map (`maps.erased_below`: every voxel below a contour
   level set to 0, as some deposited segments are) has a step from that level to 0 at the edge
   of what is left, and its statistics come from the bright core alone. Its erased voxels are
   filled with the map smoothed by a Gaussian of `ERASED_FILL_SIGMA` times the resolution,
   capped at the level: a falling tail where the density was cut, 0 far from it (then empty,
   as zoning is). On four real maps thresholded at the 60th percentile of their non-empty
   voxels (`bench.robust`'s threshold variant), the standardised density within 2 Å of the
   deposited atoms correlated 0.78-0.91 with the unthresholded map's before, 0.95-0.98 after
   (scratch check), and the final Cα recall went 0.94 -> 0.98 (apoferritin), 0.87 -> 0.94 (EMD-2566), 0.72 ->
   0.90 (MAVS) and 0.50 -> 0.76 (T20S α), against 0.99, 0.96, 0.91 and 0.84 unthresholded.
1. **Spectrum.** The radially averaged amplitude spectrum is matched, shell by shell, to one
   target: a Wilson-like fall-off exp(-B s²/4) with ``B = TARGET_B``, cut with a cosine edge at
   the map's resolution (the networks never see detail the map does not hold, nor noise
   amplified beyond it). Below ``1 / ENVELOPE_RESOLUTION`` (the molecular envelope's
   frequencies, which depend on the box and masks) the gain of that shell is kept. A global B
   change multiplies every shell by one factor, so it is undone exactly. LocScale and EMReady
   scale amplitudes to a reference in their own ways; this is the global, model-free form.
2. **Zoning.** Voxels that were exactly empty (zero padding, zoning, thresholding: the value
   that fills at least `EMPTY_MIN_FRACTION` of the box) stay empty after filtering.
3. **Scale.** The values are z-scored with the mean and standard deviation of the molecule (the
   voxels above Otsu's threshold of the smoothed map among the non-empty voxels), not of the
   box, so zero padding, cropping, intensity scale and offset do not change them; empty voxels
   are then set to the solvent's level (the median of the non-molecule, non-empty voxels).

The map's resolution is given (``--resolution``, the figure of its EMDB entry) or estimated
from the spectrum (`estimate_resolution`).

Before step 0, a map of 3.5-4.5 Å is put on 0.9 Å voxels when its own are coarser
(`reading_grid`, with the measurements behind it), for builds and training alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import InputError
from .maps import DensityMap, erased_below, resample

__all__ = [
    "ERASED_FILL_SIGMA",
    "TARGET_B",
    "FINEST_RESOLUTION",
    "NetworkMap",
    "empty_voxels",
    "estimate_resolution",
    "reading_grid",
    "otsu_threshold",
    "standardise",
]

#: Å²: B-factor of the target amplitude fall-off (a sharpened map's look; the training maps'
#: own B spread is undone by the matching, so any fixed value works: it only has to be the same
#: for training and inference).
TARGET_B = 20.0
#: Å: the finest detail the networks see. The graph network's training maps run from 2.5 Å
#: (`cryobuild.train.gnn`); the detector works on 1.5 Å voxels (Nyquist 3 Å) anyway. On the
#: 1.75 Å apoferritin map, low-passing to 2.5 Å raised residue-type accuracy from 0.40 to 0.45
#: (gnn.density's earlier measurement).
FINEST_RESOLUTION = 2.5
#: Gaussian sigma, as a fraction of the map's resolution, of the smoothing that fills a
#: thresholded map's erased voxels (step 0 of the module docstring). One pass at 0.5 brought the
#: thresholded maps' standardised density closest to the unthresholded one's (correlation within
#: 2 Å of the atoms 0.95-0.98; three or ten passes, each filling from the last: 0.90-0.98 and
#: 0.85-0.94; scratch check on MAVS, T20S α, EMD-2566 and apoferritin).
ERASED_FILL_SIGMA = 0.5
#: Å: shells at lower frequency than 1 / this keep the gain of this shell (the envelope's
#: frequencies are shaped by box and mask, not by sharpening).
ENVELOPE_RESOLUTION = 10.0
#: Largest gain of a shell relative to the envelope shell's gain: a map blurred by B = +150 Å²
#: needs 64 at 3 Å; beyond this, what is left is not signal.
MAX_RELATIVE_GAIN = 300.0
#: A value filling at least this fraction of the box marks empty voxels (padding, zoning).
EMPTY_MIN_FRACTION = 0.05
#: Å: Gaussian sigma of the smoothing before the molecule's threshold is chosen.
MASK_SMOOTHING = 2.0
#: Å of mirrored padding around the map before the FFT (the box is not periodic).
FFT_PADDING = 8.0
#: Rfft coefficients per slab when shells are indexed (`_shell_slabs`): 32 MB of index.
SLAB_COEFFICIENTS = 4_000_000
#: `estimate_resolution`: the resolution is where the shell amplitude has fallen this many
#: decades below its mean over 10-20 Å. On the 19 real maps with models, 0.9 gives the stated
#: resolution within 15% for 17 of them (median ratio 0.93; the exceptions: actin 6.6 Å -> 4.5
#: Å, the chaperonin 4.3 Å -> 3.2 Å); 0.7, 0.8 and 1.0 gave 12, 15 and 12 (scratch check,
#: 2026-12-03). Training tells `standardise` the resolution times 0.85-1.2, so such errors are
#: within what the networks saw.
ESTIMATE_DECADES = 0.9


@dataclasses.dataclass(frozen=True)
class NetworkMap:
    """A map as the networks see it.

    Attributes
    ----------
    density : DensityMap
        Standardised values (molecule mean 0, standard deviation 1) on the input's grid, or on
        the finer one `reading_grid` puts it on.
    resolution : float
        Å: the resolution the spectrum was cut at (at least `FINEST_RESOLUTION`).
    map_resolution : float
        Å: the map's own resolution, as given or estimated.
    estimated : bool
        Whether ``map_resolution`` was estimated from the spectrum.
    skewness : float
        Of the standardised values of the non-empty voxels: protein density has a long tail
        of high values (the 22 maps of ``shared/data/real``: 0.40-1.48), noise has none (40
        Gaussian noise maps, white or smoothed: -0.14 to +0.07; `cryobuild.bench.skewness`).
    solvent : float
        The solvent's standardised level (the median of the voxels neither empty nor in the
        molecule), which the empty voxels hold.
    """

    density: DensityMap
    resolution: float
    map_resolution: float
    estimated: bool
    skewness: float
    solvent: float


def empty_voxels(grid: np.ndarray) -> np.ndarray:
    """Bool ``[Z, Y, X]``: voxels holding the value that fills at least `EMPTY_MIN_FRACTION`
    of the box (zero padding, zoning, thresholding), or nothing."""
    values, counts = np.unique(grid[:: max(grid.shape[0] // 32, 1)], return_counts=True)
    top = int(np.argmax(counts))
    candidate = values[top]
    empty = grid == candidate
    return empty if empty.mean() >= EMPTY_MIN_FRACTION else np.zeros_like(empty)


def _fft(grid: np.ndarray) -> np.ndarray:
    """The rfftn of a float32 ``grid`` in single precision (complex64) on every core: a 400³
    map's float64 transform took 600 MB a copy."""
    from scipy import fft

    return fft.rfftn(grid, workers=-1)


def _frequencies(shape: tuple[int, ...], voxel_zyx: np.ndarray) -> tuple[np.ndarray, ...]:
    """The z, y and x frequencies (1/Å) of the rfftn of a box of ``shape``, and its shell
    width (1 / the box's longest edge)."""
    kz = np.fft.fftfreq(shape[0], d=voxel_zyx[0])
    ky = np.fft.fftfreq(shape[1], d=voxel_zyx[1])
    kx = np.fft.rfftfreq(shape[2], d=voxel_zyx[2])
    return kz, ky, kx, 1.0 / float(np.max(np.array(shape) * voxel_zyx))


def _shell_slabs(shape: tuple[int, ...], voxel_zyx: np.ndarray):
    """``(slab, index)`` pairs: the shell index (int64 ``[z, Y, X // 2 + 1]``) of the rfftn
    coefficients of a box of ``shape``, a slab of z planes at a time (about
    `SLAB_COEFFICIENTS` each, so no box-sized index is held)."""
    kz, ky, kx, width = _frequencies(shape, voxel_zyx)
    plane = kx[None, :] ** 2 + ky[:, None] ** 2  # [Y, X // 2 + 1]
    step = max(SLAB_COEFFICIENTS // plane.size, 1)
    for first in range(0, shape[0], step):
        slab = slice(first, min(first + step, shape[0]))
        s = np.sqrt(plane[None] + kz[slab, None, None] ** 2)
        yield slab, np.floor(s / width).astype(np.int64)


def _shell_amplitude(spectrum: np.ndarray, voxel_zyx: np.ndarray, shape: tuple[int, ...]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mean amplitude per shell of ``spectrum`` (the rfftn of a box of ``shape``) and the
    shells' centres in 1/Å (out to the box's corner)."""
    kz, ky, kx, width = _frequencies(shape, voxel_zyx)
    n = int(np.floor(np.sqrt(np.max(kx**2) + np.max(ky**2) + np.max(kz**2)) / width)) + 1
    amplitude, counts = np.zeros(n), np.zeros(n)
    for slab, index in _shell_slabs(shape, voxel_zyx):
        amplitude += np.bincount(index.ravel(), np.abs(spectrum[slab]).ravel(), minlength=n)
        counts += np.bincount(index.ravel(), minlength=n)
    return amplitude / np.maximum(counts, 1), (np.arange(n) + 0.5) * width


def _padded(density: DensityMap) -> tuple[np.ndarray, tuple[slice, ...]]:
    """float32: the map mirrored out by `FFT_PADDING` on each side, less its mean."""
    voxel_zyx = density.voxel_size[::-1]
    pad = [min(int(np.ceil(FFT_PADDING / v)), n - 1) for v, n in zip(voxel_zyx, density.grid.shape)]
    grid = np.pad(density.grid, [(p, p) for p in pad], mode="reflect")
    grid -= np.float32(grid.mean(dtype=np.float64))
    inner = tuple(slice(p, p + n) for p, n in zip(pad, density.grid.shape))
    return grid, inner


def estimate_resolution(density: DensityMap) -> float:
    """The map's resolution (Å) from its spectrum: where the shell amplitude falls
    `ESTIMATE_DECADES` below its mean over 10-20 Å; at least Nyquist (2 voxels)."""
    grid, _ = _padded(density)
    amplitude, centres = _shell_amplitude(_fft(grid), density.voxel_size[::-1], grid.shape)
    low = (centres >= 1 / 20) & (centres <= 1 / 10)
    nyquist = 1.0 / (2 * float(density.voxel_size.max()))
    if not low.any() or amplitude[low].mean() <= 0:
        return 2 / nyquist
    level = amplitude[low].mean() * 10 ** (-ESTIMATE_DECADES)
    beyond = np.nonzero((centres > 1 / 10) & (centres <= nyquist) & (amplitude < level))[0]
    s_cut = centres[beyond[0]] if len(beyond) else nyquist
    return float(max(1.0 / s_cut, 1.0 / nyquist))


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (256 bins): the level that best splits their histogram in
    two (here: solvent and molecule; the plugin's mesh contour uses it too)."""
    counts, edges = np.histogram(values, bins=256)
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _erased_filled(density: DensityMap, level: float, resolution: float) -> DensityMap:
    """``density``, thresholded at ``level`` (`maps.erased_below`), with its erased voxels
    filled (module docstring, step 0). ``resolution`` in Å."""
    from scipy.ndimage import gaussian_filter

    grid = density.grid.astype(np.float64)
    erased = grid == 0
    smooth = gaussian_filter(grid, ERASED_FILL_SIGMA * resolution / density.voxel_size[::-1])
    grid[erased] = np.minimum(smooth[erased], level)
    return density.with_grid(grid.astype(np.float32))


#: Å: the networks read a map of a resolution within `FINE_SAMPLING_RESOLUTIONS` on voxels of this
#: size when its own are coarser (`reading_grid`). Measured with ``python -m cryobuild.bench.real
#: --seeds 0 1 2`` (three builds per map, the bundled networks; docs/results_log.md, "Sixteenth
#: stop"): on the six real maps of 3.5-4.5 Å the final Cα / sequence recall went from 0.80 / 0.17
#: (range over the seeds 0.79-0.81 / 0.13-0.19; commit 8976da4) to 0.82 / 0.24 (0.82 / 0.21-0.26),
#: MAVS 0.79-0.86 -> 0.90-0.97 and ASC 0.00 -> 0.26-0.28 in two builds of three.
#: On the eight maps beyond 4.5 Å (a scratch runner resampling every map, the same seeds) it
#: cost final Cα 0.64 -> 0.62 (tubulin on 1.99 Å voxels 0.72 -> 0.65,
#: actin on 1.74 Å 0.53 -> 0.47; T20S α gained 0.82 -> 0.85), hence the upper bound. Why a
#: trilinear resampling that adds no detail helps is not understood. It is not the accuracy of
#: the networks' trilinear reading of coarse voxels: the standardised map upsampled exactly (by
#: zero-padding its spectrum, 2x) gave the band 0.17 (0.15-0.20 over the three seeds, scratch
#: runner, seventeenth stop), as without any resampling, while its values at random points
#: matched the 0.9 Å reading's spread within 7%. Read on 0.9 Å by the detector alone, 0.20
#: (0.13-0.27); by the graph network alone, 0.16 (0.12-0.19). The networks before the
#: seventeenth stop trained on their maps' own 0.8-1.4 Å voxels; since then `standardise` reads
#: every map, training's too, through `reading_grid`.
FINE_SAMPLING_VOXEL = 0.9
#: Å: the resolutions (exclusive, inclusive) at which `reading_grid` resamples.
FINE_SAMPLING_RESOLUTIONS = (3.5, 4.5)
#: Å: maps on voxels this fine or finer keep them (`reading_grid`). 1.05, not 0.9: the demo's
#: 3 Å map on 1.0 Å voxels (`cryobuild demo`), whose resolution the build estimates at 3.5-4.5
#: Å, read on 0.9 Å voxels gave a final model of 121 residues at sequence recall 0.46 instead of
#: 134 at 0.90 (commit 77043a0, which resampled voxels coarser than 0.95 Å). The real maps of 3.5-4.5 Å that gained are on 1.08-1.40 Å voxels.
FINE_SAMPLING_COARSEST_KEPT = 1.05
#: Voxels: a map that would hold more than this many on `FINE_SAMPLING_VOXEL` keeps its own
#: (the trilinear resampling holds three coordinate grids of that size: 1.2 GB here).
FINE_SAMPLING_MAX_VOXELS = 48_000_000


def reading_grid(density: DensityMap, resolution: float) -> DensityMap:
    """``density`` on the voxels the networks read it on (`standardise`, before step 0 of the
    module docstring):
    resampled (trilinear, `maps.resample`) to `FINE_SAMPLING_VOXEL` Å when its ``resolution``
    (Å) is within `FINE_SAMPLING_RESOLUTIONS` and its voxels are coarser than
    `FINE_SAMPLING_COARSEST_KEPT`, unless that would make more than `FINE_SAMPLING_MAX_VOXELS`
    voxels; otherwise ``density`` itself. `standardise` does not call it for a thresholded map
    (`maps.erased_below`): the interpolation would blur the step at the contour level that it
    fills from (MAVS thresholded as `bench.robust` does it kept 0.90 of its Cα as it is, 0.81
    resampled, in a run of the code before this exception, not committed)."""
    low, high = FINE_SAMPLING_RESOLUTIONS
    extent = density.shape_xyz * density.voxel_size
    if (density.voxel_size.max() <= FINE_SAMPLING_COARSEST_KEPT or not low < resolution <= high
            or np.prod(np.floor(extent / FINE_SAMPLING_VOXEL) + 1) > FINE_SAMPLING_MAX_VOXELS):
        return density
    return resample(density, FINE_SAMPLING_VOXEL)


def standardise(density: DensityMap, resolution: float | None = None) -> NetworkMap:
    """``density`` as the networks see it (module docstring). ``resolution``: the map's
    resolution in Å, or None to estimate it.

    Raises `InputError` when the map has no density variation.
    """
    from scipy import fft
    from scipy.ndimage import gaussian_filter

    if resolution is not None and not resolution > 0:
        raise InputError(f"resolution must be positive (Å), got {resolution}")
    grid = density.grid
    if not np.all(np.isfinite(grid)):
        raise InputError("the map holds values that are not finite numbers")
    if float(grid.std()) == 0:
        raise InputError("the map has no density variation (it is constant)")
    estimated = resolution is None
    map_resolution = estimate_resolution(density) if estimated else float(resolution)
    cut = max(map_resolution, FINEST_RESOLUTION)
    # one scan for erased density: a thresholded map is filled on its own voxels (resampling
    # would blur the step it fills from), any other is read on `reading_grid`'s
    level = erased_below(density)
    density = (_erased_filled(density, level, map_resolution) if level is not None
               else reading_grid(density, map_resolution))
    grid = density.grid
    empty = empty_voxels(grid)
    voxel_zyx = density.voxel_size[::-1]

    padded, inner = _padded(density)
    shape = padded.shape
    spectrum = _fft(padded)
    del padded
    amplitude, centres = _shell_amplitude(spectrum, voxel_zyx, shape)
    target = np.exp(-TARGET_B * centres**2 / 4)
    gain = np.where(amplitude > 0, target / np.maximum(amplitude, 1e-30), 0.0)
    envelope = int(np.searchsorted(centres, 1.0 / ENVELOPE_RESOLUTION))
    envelope = min(envelope, len(centres) - 1)
    reference = gain[envelope] if gain[envelope] > 0 else float(np.max(gain))
    gain[:envelope] = reference
    gain = np.minimum(gain, MAX_RELATIVE_GAIN * reference)
    s_cut = 1.0 / cut
    edge = np.clip((centres - 0.9 * s_cut) / (0.1 * s_cut), 0, 1)
    gain = gain * 0.5 * (1 + np.cos(np.pi * edge))
    gain = gain.astype(np.float32)
    for slab, index in _shell_slabs(shape, voxel_zyx):
        spectrum[slab] *= gain[index]
    filtered = fft.irfftn(spectrum, s=shape, workers=-1, overwrite_x=True)
    filtered = np.ascontiguousarray(filtered[inner])
    del spectrum

    smooth = gaussian_filter(filtered, MASK_SMOOTHING / voxel_zyx)
    occupied = ~empty
    if occupied.sum() < 16:
        raise InputError("the map has no density variation outside its empty (zero) region")
    # Otsu over every voxel: zoning or padding add voxels at the solvent's level, where the
    # threshold between solvent and protein already lies on one side
    molecule = (smooth > otsu_threshold(smooth.ravel())) & occupied
    values = filtered[molecule] if molecule.sum() > 8 else filtered[occupied]
    mean, std = float(values.mean()), float(values.std())
    if not np.isfinite(std) or std == 0:
        raise InputError("the map has no density variation")
    out = (filtered - mean) / std
    solvent = occupied & ~molecule
    inside = out[occupied]
    skewness = float(np.mean(inside**3) - 3 * inside.mean() * inside.var() - inside.mean() ** 3) / max(
        float(inside.std()) ** 3, 1e-12)
    level = float(np.median(out[solvent])) if solvent.any() else float(out[occupied].min())
    out[empty] = level
    return NetworkMap(density.with_grid(out.astype(np.float32)), cut, map_resolution, estimated,
                      skewness, level)
