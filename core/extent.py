"""The part of a map a build works on: the box around its density, so that the work grows with
the protein and not with the box.

Deposited maps are often mostly empty box: 18 of the 19 dev maps with models hold one value in
74-98% of their voxels (zoned by a mask; the spike NTD thresholded), and a small protein may come
in a large zero-padded box. Standardisation (two FFTs of the whole box), detection and
relaxation then spend their time and memory on nothing: il2's 126-residue map in a corner of a
300³ box of zeros took 141 s to build with one round, 133 s of it detection, against about 10 s
in its own box (before this module and the detector's skipping of empty windows, 2026-12-03, 2
shared cores).

`working_map` cuts the map to the box around its non-empty voxels (the empty value as
`features.standardise` finds it: the value filling at least `features.EMPTY_MIN_FRACTION` of the
box), keeping `OCCUPIED_MARGIN` of empty voxels around them. Standardisation sets empty voxels to
the solvent's level wherever they are, so the build sees the same density, only less of the
empty box. A map with no empty value keeps its box; the detector then skips the windows with no
density in them (`detect.inference.FLAT_RANGE`).
"""

from __future__ import annotations

import numpy as np

from .features import empty_voxels
from .maps import DensityMap, crop_box

__all__ = ["OCCUPIED_MARGIN", "occupied_box", "voxel_box", "working_map"]

#: Å of empty voxels kept around the non-empty ones: more than the graph network samples around
#: a node (its density cube reaches 5√3 ≈ 8.7 Å, `gnn.config.GraphConfig.cube_size` 11 at 1 Å)
#: and than the standardisation's mirrored padding (`features.FFT_PADDING`, 8 Å), so a node at
#: the density's edge sees the solvent's level around it, as in the whole box.
OCCUPIED_MARGIN = 12.0


def voxel_box(mask: np.ndarray, margin) -> tuple[np.ndarray, np.ndarray] | None:
    """The first and last voxel (int ``[3]`` each, the axes of ``mask``) of the box around the
    True voxels of ``mask``, widened by ``margin`` voxels (per axis, or one number) and clipped
    to the grid; None when no voxel is True."""
    if not mask.any():
        return None
    ends = []
    for axis in range(mask.ndim):
        used = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        ends.append((used[0], used[-1]))
    margin = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    first = np.maximum(np.array([e[0] for e in ends]) - margin, 0)
    last = np.minimum(np.array([e[1] for e in ends]) + margin, np.array(mask.shape) - 1)
    return first, last


def occupied_box(density: DensityMap) -> tuple[np.ndarray, np.ndarray] | None:
    """The first and last voxel (int ``[3]`` each, x, y, z) of the box around the non-empty voxels
    of ``density`` widened by `OCCUPIED_MARGIN` and clipped to the map; None when the map has no
    empty value or nothing is empty outside that box."""
    empty = empty_voxels(density.grid)
    margin_zyx = np.ceil(OCCUPIED_MARGIN / density.voxel_size[::-1]).astype(int)
    box = voxel_box(~empty, margin_zyx)
    if box is None:
        return None
    first, last = box[0][::-1], box[1][::-1]
    if np.all(first == 0) and np.all(last == density.shape_xyz - 1):
        return None
    return first, last


def working_map(density: DensityMap) -> DensityMap:
    """``density`` cut to `occupied_box` (the same object when there is nothing to cut). Voxels
    keep their positions in Å.

    The map keeps its voxel size: resampling maps finer than 1 Å to 1 Å first (the graph
    network's training voxels are 1.0-1.4 Å) lowered the 0.65 Å apoferritin dev map's raw Cα
    recall from 0.95 to 0.90 and final from 0.94 to 0.91, and saved no memory (the resampling's
    coordinate grids cost more than the smaller FFTs save: 2.4 against 1.9 GB on a 400³ map;
    scratch checks, 2026-12-04).
    """
    box = occupied_box(density)
    if box is None:
        return density
    first, last = box
    return crop_box(density, density.voxel_to_xyz(first), density.voxel_to_xyz(last))
