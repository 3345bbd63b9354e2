"""Cα detection: map preparation, sliding-window inference and peak extraction.

``NetworkMap -> CalphaPoints``. The standardised map (`cryobuild.features.standardise`) is
resampled to `DETECTION_VOXEL` Å and given a local-standard-deviation channel
(`detection_grid`, `detection_features`, shared with training); the network runs
on overlapping windows whose edges are discarded and whose overlaps are averaged
(`sliding_window_predict`); points are the local maxima of the probability above a threshold,
moved by the predicted sub-voxel offset, merged into probability-weighted centroids, completed
along the probability's ridges (`fill_ridges`) and cleared of isolated points (`extract_points`,
shared with the classical baseline).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from ..extent import voxel_box
from ..features import NetworkMap
from ..maps import DensityMap, crop_box, pad_to_shape, resample
from ..points import CalphaPoints
from ..progress import check_cancel, report

__all__ = [
    "DETECTION_VOXEL",
    "FLAT_RANGE",
    "DetectionOptions",
    "DetectionResult",
    "detection_features",
    "detection_grid",
    "sliding_window_predict",
    "varied_voxels",
    "extract_points",
    "fill_ridges",
    "detect_calphas",
]

#: Grid spacing (Å) the detector works on: no voxel can hold two Cα atoms (>= 3.8 Å apart).
DETECTION_VOXEL = 1.5
#: Gaussian sigma (Å) of the local standard deviation channel.
LOCAL_STD_SIGMA = 3.0
#: Points closer than this (Å) are merged into one probability-weighted centroid.
MERGE_DISTANCE = 1.65
#: Neighbourhood of a local maximum: the 6 face neighbours. Over the full 3x3x3 cube, Cα 3.8 Å
#: apart on a diagonal (Chebyshev distance 1 voxel after rounding) suppressed each other: recall
#: 0.73-0.82 on held-out 3 Å maps, against 0.91-0.99 with face neighbours (duplicates of one Cα
#: are merged below, since the offsets of its neighbourhood all point at it).
_PEAK_FOOTPRINT = np.array(
    [[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]],
    dtype=bool,
)
#: Standardised density units (the molecule's standard deviation): a detection voxel whose 3³
#: neighbourhood (4.5 Å) spans less than this is flat (empty box, zoning, or the far solvent of a
#: noise-free map), and windows whose kept region is all flat are not run. The neighbourhood of a
#: true Cα spans 0.8 or more on the 19 dev maps with models (except Cα on voxels their zoning or
#: thresholding erased) and 1.5 or more on simulated 2.5-6 Å maps of il2; the solvent of
#: noise-free simulated maps spans less than 0.13 farther than 16 Å from any atom at 3-4 Å (0.35
#: at 6 Å), and zoned dev maps' empty voxels 0 (scratch check, 2026-12-03).
FLAT_RANGE = 0.1
#: Merging passes (as ModelAngelo).
MERGE_PASSES = 3
#: A point with no other point within this distance (Å) is dropped as isolated.
ISOLATION_DISTANCE = 6.0
#: Å: `fill_ridges` adds a point wherever the probability is at the threshold or above and no
#: point lies this near. At 3.5-5 Å the probability along a helix's tube is a ridge with fewer
#: maxima than residues: on the real maps of 3.6-4.8 Å the detectors did not see, the residues
#: without a candidate within 2.5 Å sit at a median probability of 0.18-0.28, those with one at
#: 0.26-0.38, beside a maximum that covers their neighbour. Filled at 2.8 Å, the candidates
#: cover 0.73 (0.68 unfilled) of 3LOS, 0.81 (0.76) of ASC, 0.91 (0.81) of T20S α and 0.75
#: (0.68) of γ-secretase, at a one-to-one precision of 0.70 (0.75), 0.67 (0.69), 0.78 (0.90) and
#: 0.80 (0.83); at 3.2 Å they cover less (3LOS 0.71, T20S α 0.88). ``python -m
#: cryobuild.bench.detect --no-simulated [--fill-radius R] [--checkpoint weights/detect_foldA.pt]``
#: (0: unfilled; the fold-B maps with the fold-A detector). The builds: README, "Results on
#: real maps".
FILL_RADIUS = 2.8
#: Å: maps at better resolutions are not filled (`DetectionOptions.fill_from_resolution`). Their
#: maxima cover the residues already (3JB0 D at 2.9 Å: 0.96, filled 0.98), and filled, TMV's
#: unmasked 2.3 Å box lost sequence recall (0.84 -> 0.75, three seeds: candidates on the
#: neighbours its reference lacks), where the 3.2 Å maps gained (EMD-2566 0.79 -> 0.83). A
#: scratch runner that filled every map measured the first two; ``bench.real`` the third.
FILL_FROM_RESOLUTION = 3.0


@dataclasses.dataclass(frozen=True)
class DetectionOptions:
    """Inference settings: window and discarded margin in voxels (1.5 Å), probability threshold,
    windows per batch."""

    #: 0.2 since the detector was fine-tuned on standardised and real maps (2026-12-04): on the
    #: 8 real maps it did not train on (``bench.real --cases ... --detection-threshold``), 0.2
    #: against 0.3 raised final Cα recall on every map (e.g. EMD-2566 0.75 -> 0.82, EngA 0.26 ->
    #: 0.46) at a detector precision of 0.62-0.85 instead of 0.70-0.95; the graph network's
    #: existence head removes most of the extra candidates.
    threshold: float = 0.2
    window: int = 64
    margin: int = 6
    batch_size: int = 2
    drop_isolated: bool = True
    #: Å, or None for the local maxima alone (`fill_ridges`); used on maps of
    #: ``fill_from_resolution`` Å or worse (`NetworkMap.map_resolution`) only
    fill_radius: float | None = FILL_RADIUS
    fill_from_resolution: float = FILL_FROM_RESOLUTION

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.window <= 2 * self.margin:
            raise ValueError("window must be larger than twice the margin")
        if self.fill_radius is not None and self.fill_radius <= 0:
            raise ValueError(f"fill radius must be positive, got {self.fill_radius}")


@dataclasses.dataclass(frozen=True)
class DetectionResult:
    """Detected points and the per-voxel Cα probability on the 1.5 Å detection grid."""

    points: CalphaPoints
    probability: DensityMap


def detection_grid(view: NetworkMap) -> DensityMap:
    """The standardised map resampled to 1.5 Å, on the lattice of multiples of 1.5 Å in the
    map's frame (`resample`'s ``lattice``: padding or cropping a map does not move its
    samples)."""
    return resample(view.density, DETECTION_VOXEL, lattice=True)


def _framed(grid: DensityMap) -> tuple[DensityMap, np.ndarray]:
    """``grid`` (`detection_grid`) cut to the box around its varied voxels, and those voxels
    (`varied_voxels`, bool ``[Z, Y, X]`` of the cut grid), so that how much empty box surrounds
    the density does not change what the detector sees.

    The bundled detectors frame the box with the molecule's mean level (``frame=None`` of
    `detection_features`), which they read differently at different distances from the density:
    T20S α padded with 20 voxels of zeros gave detector recall 0.70 against 0.86 as deposited,
    its empty margin then being read as solvent before the frame. Cut to its density, the
    padded map is the deposited one (0.85 both, crop and soft mask 0.84 and 0.85; ``python -m
    cryobuild.bench.robust --cases t20s_alpha``, its JSON lines); on the 19 real maps with
    models the detector's recall moved by at most 0.03 and each band's mean final Cα recall by
    at most 0.01 (`bench.real`, 2026-12-05, fifteenth stop). A map that is varied everywhere
    (solvent noise to the faces) keeps its box.
    """
    varied = varied_voxels(grid.grid)
    box = voxel_box(varied, 0)
    if box is None:
        return grid, varied
    first, last = box
    window = tuple(slice(int(a), int(b) + 1) for a, b in zip(first, last))
    cut = crop_box(grid, grid.voxel_to_xyz(first[::-1]), grid.voxel_to_xyz(last[::-1]))
    return cut, varied[window]


def detection_features(grid: DensityMap, min_shape_xyz, frame: float | None = None
                       ) -> tuple[DensityMap, np.ndarray]:
    """``grid`` (`detection_grid`) padded evenly to at least ``min_shape_xyz`` voxels, and the
    network's input on it: features ``[2, Z, Y, X]``, the standardised density and its local
    standard deviation (Gaussian window of `LOCAL_STD_SIGMA`).

    ``frame`` is what lies beyond the box (`DetectorConfig.solvent_frame`): a level (the
    solvent's, `NetworkMap.solvent`) that fills the padding and the local deviation's window
    past the box's faces, so a map boxed tightly reads as one boxed loosely; or None, the
    detectors' first form: both channels 0 in the padding, and the density 0 past the faces
    (0 is the molecule's mean after standardisation, so a tight box is framed by
    protein-level density: on T20S α, padded by 20 voxels, the local deviation correlated
    0.72 with the deposited map's, and the detector found 0.70 of its Cα instead of 0.86).
    """
    from scipy.ndimage import gaussian_filter

    level = 0.0 if frame is None else float(frame)
    padded = pad_to_shape(grid, min_shape_xyz, value=level)
    values = grid.grid if frame is None else padded.grid
    sigma = LOCAL_STD_SIGMA / DETECTION_VOXEL
    mean = gaussian_filter(values, sigma, mode="constant", cval=level)
    mean_sq = gaussian_filter(values * values, sigma, mode="constant", cval=level * level)
    local_std = np.sqrt(np.maximum(mean_sq - mean * mean, 0))
    if frame is None:
        before = np.round(padded.xyz_to_voxel(grid.origin)).astype(int)
        local_std = np.pad(local_std, [(int(b), int(t - n - b)) for b, t, n in
                                       zip(before[::-1], padded.shape_xyz[::-1], grid.shape_xyz[::-1])])
    return padded, np.stack([padded.grid, local_std]).astype(np.float32)


def varied_voxels(density: np.ndarray) -> np.ndarray:
    """Bool ``[Z, Y, X]``: voxels of a standardised ``density`` (on the detection grid) whose
    3³ neighbourhood spans at least `FLAT_RANGE`."""
    from scipy.ndimage import maximum_filter, minimum_filter

    spread = maximum_filter(density, 3, mode="nearest") - minimum_filter(density, 3, mode="nearest")
    return spread >= FLAT_RANGE


def _window_starts(size: int, window: int, margin: int, first: int, last: int) -> list[int]:
    """Starts of the windows along an axis of ``size`` voxels whose kept regions (the window
    less ``margin`` voxels at each end not on the axis's ends) cover voxels ``first..last``, one
    stride apart, the last one shifted back to fit."""
    if size <= window:
        return [0]
    starts = [min(max(first - margin, 0), size - window)]
    while starts[-1] + window - (margin if starts[-1] + window < size else 0) <= last:
        starts.append(min(starts[-1] + window - 2 * margin, size - window))
    return starts


def sliding_window_predict(
    network,
    features: np.ndarray,
    options: DetectionOptions = DetectionOptions(),
    *,
    window_mask: np.ndarray | None = None,
    device=None,
    progress=None,
    cancel=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``network`` over ``features`` ``[C, Z, Y, X]`` (already padded to >= one window).

    Each window's outer ``margin`` voxels are discarded except where the window touches the
    map's edge; overlapping kept regions are averaged. With ``window_mask`` (bool ``[Z, Y, X]``)
    the windows tile only the box around the mask and only those whose kept region touches it
    are run. Returns the probability ``[Z, Y, X]`` and offsets ``[3, Z, Y, X]`` (voxels, x, y,
    z); unvisited voxels get 0.
    """
    import torch

    device = device if device is not None else torch.device("cpu")
    shape = features.shape[1:]
    window, margin = options.window, options.margin
    if any(n < window for n in shape):
        raise ValueError(f"features {shape} smaller than one window ({window}); pad first")
    box = voxel_box(window_mask, 0) if window_mask is not None else None
    low, high = box if box is not None else (np.zeros(3, int), np.array(shape) - 1)
    corners = list(itertools.product(
        *[_window_starts(n, window, margin, a, b) for n, a, b in zip(shape, low, high)]))

    def kept_region(corner):
        region = []
        for start, n in zip(corner, shape):
            lo = start + (margin if start > 0 else 0)
            hi = start + window - (margin if start + window < n else 0)
            region.append(slice(lo, hi))
        return tuple(region)

    if window_mask is not None:
        corners = [c for c in corners if window_mask[kept_region(c)].any()]
    whole_box = np.prod([len(_window_starts(n, window, margin, 0, n - 1)) for n in shape])
    skipped = f" (of {whole_box} over the whole box)" if len(corners) < whole_box else ""
    sums = np.zeros((4,) + shape, dtype=np.float32)
    counts = np.zeros(shape, dtype=np.float32)
    network.eval()
    with torch.inference_mode():
        for first in range(0, len(corners), options.batch_size):
            check_cancel(cancel)
            batch_corners = corners[first : first + options.batch_size]
            batch = np.stack(
                [features[(slice(None),) + tuple(slice(s, s + window) for s in c)] for c in batch_corners]
            )
            output = network(torch.from_numpy(batch).to(device)).float().cpu().numpy()
            output[:, 0] = 1 / (1 + np.exp(-output[:, 0]))
            for corner, values in zip(batch_corners, output):
                region = kept_region(corner)
                local = tuple(slice(r.start - s, r.stop - s) for r, s in zip(region, corner))
                sums[(slice(None),) + region] += values[(slice(None),) + local]
                counts[region] += 1
            report(progress, "detect", (first + len(batch_corners)) / max(len(corners), 1),
                   f"{first + len(batch_corners)}/{len(corners)} windows{skipped}")
    averaged = sums / np.maximum(counts, 1)
    return averaged[0], averaged[1:]


def extract_points(
    probability: DensityMap,
    offsets: np.ndarray | None,
    threshold: float,
    *,
    drop_isolated: bool = True,
    keep_mask: np.ndarray | None = None,
    fill_radius: float | None = None,
) -> CalphaPoints:
    """Points from a probability (or score) map: local maxima (over the 6 face neighbours) at or above
    ``threshold``, shifted by ``offsets`` ``[3, Z, Y, X]`` (voxels, x, y, z) if given, merged
    within `MERGE_DISTANCE` Å into probability-weighted centroids, completed by `fill_ridges`
    at ``fill_radius`` Å (None: not), and (optionally) cleared of points with no neighbour within
    `ISOLATION_DISTANCE` Å. ``keep_mask`` (bool ``[Z, Y, X]``) keeps only voxels inside it."""
    from scipy.ndimage import maximum_filter

    grid = probability.grid
    above = grid >= threshold
    if keep_mask is not None:
        above &= keep_mask
    peaks = above & (grid == maximum_filter(grid, footprint=_PEAK_FOOTPRINT, mode="constant"))
    points = merge_points(_shifted_voxels(probability, offsets, peaks))
    if fill_radius is not None:
        points = fill_ridges(points, _shifted_voxels(probability, offsets, above), fill_radius)
    if drop_isolated:
        points = drop_isolated_points(points)
    return points


def _shifted_voxels(probability: DensityMap, offsets: np.ndarray | None, where: np.ndarray
                    ) -> CalphaPoints:
    """The voxels ``where`` (bool ``[Z, Y, X]``) as points with their probability, each moved
    by its predicted offset (``offsets`` ``[3, Z, Y, X]``, voxels, x, y, z) when given."""
    kk, jj, ii = np.nonzero(where)
    ijk = np.stack([ii, jj, kk], axis=1).astype(np.float64)
    if offsets is not None and len(ijk):
        ijk += offsets[:, kk, jj, ii].T
    return CalphaPoints(probability.voxel_to_xyz(ijk), probability.grid[kk, jj, ii])


def fill_ridges(points: CalphaPoints, voxels: CalphaPoints, radius: float) -> CalphaPoints:
    """``points`` plus those of ``voxels`` (the voxels at or above the threshold, as points)
    that lie farther than ``radius`` Å from every point: taken greedily, most probable first,
    each keeping the others within ``radius`` out. Where the probability runs along a ridge
    with fewer maxima than residues (`FILL_RADIUS`), this puts a candidate about every
    ``radius`` Å along it."""
    from scipy.spatial import cKDTree

    if not len(voxels):
        return points
    order = np.argsort(-voxels.score, kind="stable")
    voxels = voxels.select(order)
    tree = cKDTree(voxels.xyz)
    blocked = np.zeros(len(voxels), dtype=bool)
    if len(points):
        blocked[np.concatenate([np.asarray(near, dtype=np.int64)
                                for near in tree.query_ball_point(points.xyz, radius)])] = True
    added = []
    for index in np.flatnonzero(~blocked):
        if blocked[index]:
            continue
        added.append(index)
        blocked[tree.query_ball_point(voxels.xyz[index], radius)] = True
    extra = voxels.select(np.array(added, dtype=np.int64))
    return CalphaPoints(np.concatenate([points.xyz, extra.xyz]),
                        np.concatenate([points.score, extra.score]))


def merge_points(points: CalphaPoints, distance: float = MERGE_DISTANCE) -> CalphaPoints:
    """Merge points closer than ``distance`` Å into probability-weighted centroids
    (`MERGE_PASSES` passes; the merged score is the highest of the group)."""
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    for _ in range(MERGE_PASSES):
        if len(points) < 2:
            return points
        pairs = cKDTree(points.xyz).query_pairs(distance, output_type="ndarray")
        if len(pairs) == 0:
            return points
        from scipy.sparse import coo_matrix

        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(points),) * 2)
        count, label = connected_components(graph, directed=False)
        weight = points.score.astype(np.float64) + 1e-6
        total = np.bincount(label, weight, minlength=count)
        xyz = np.stack(
            [np.bincount(label, weight * points.xyz[:, a], minlength=count) / total for a in range(3)],
            axis=1,
        )
        score = np.zeros(count, dtype=np.float32)
        np.maximum.at(score, label, points.score)
        points = CalphaPoints(xyz, score)
    return points


def drop_isolated_points(points: CalphaPoints, distance: float = ISOLATION_DISTANCE) -> CalphaPoints:
    """Remove points with no other point within ``distance`` Å."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return points.select(np.zeros(len(points), dtype=bool))
    near, _ = cKDTree(points.xyz).query(points.xyz, k=2, distance_upper_bound=distance)
    return points.select(np.isfinite(near[:, 1]))


def detect_calphas(
    view: NetworkMap,
    network,
    options: DetectionOptions = DetectionOptions(),
    *,
    mask: DensityMap | None = None,
    device=None,
    progress=None,
    cancel=None,
) -> DetectionResult:
    """Find Cα atoms in the standardised map ``view`` with a trained `CalphaDetector`.

    The windows tile only the box around the voxels with density (`varied_voxels`), and a window
    whose kept region holds no such voxel is not run. ``mask`` (a map whose positive voxels mark
    the region of interest, any grid) restricts both the windows run and the points kept. At
    ``options.fill_from_resolution`` Å or worse the candidates are completed along the
    probability's ridges (`fill_ridges`). The probability map is returned on the 1.5 Å grid (0
    where no window ran).
    """
    report(progress, "detect", 0.0, "preparing map")
    prepared, varied = _framed(detection_grid(view))
    divisor = network.config.divisor
    target = np.maximum(prepared.shape_xyz, options.window)
    target = ((target + divisor - 1) // divisor) * divisor
    padded_map, features = detection_features(
        prepared, target, view.solvent if network.config.solvent_frame else None)
    before = np.round(padded_map.xyz_to_voxel(prepared.origin)).astype(int)
    pad_zyx = [(int(b), int(t - s - b)) for b, t, s in zip(before, target, prepared.shape_xyz)][::-1]
    varied = np.pad(varied, pad_zyx)
    keep_mask = None
    if mask is not None:
        centres = padded_map.voxel_to_xyz(
            np.stack(np.meshgrid(*[np.arange(n) for n in padded_map.shape_xyz], indexing="ij"), -1)
        )
        # [X, Y, Z, 3] -> mask sampled at every detection voxel, [Z, Y, X]
        keep_mask = (mask.interpolate(centres.reshape(-1, 3), order=0) > 0).reshape(
            centres.shape[:3]
        ).transpose(2, 1, 0)
        if not keep_mask.any():
            raise ValueError("the mask does not overlap the map")
    probability, offsets = sliding_window_predict(
        network, features, options, window_mask=varied if keep_mask is None else varied & keep_mask,
        device=device, progress=progress, cancel=cancel,
    )
    probability_map = padded_map.with_grid(probability)
    points = extract_points(
        probability_map, offsets, options.threshold,
        drop_isolated=options.drop_isolated, keep_mask=keep_mask,
        fill_radius=options.fill_radius if view.map_resolution >= options.fill_from_resolution else None,
    )
    report(progress, "detect", 1.0, f"{len(points)} Cα candidates")
    return DetectionResult(points, probability_map)
