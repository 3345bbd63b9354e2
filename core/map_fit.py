"""How well a model fits its map: CC_mask, the correlation between the map and a map computed
from the model, over the voxels near the model's atoms.

The figure a cryo-EM paper quotes for a model's fit (after phenix.map_model_cc's CC_mask,
Afonine et al. 2018, Acta Cryst. D74, 814), in our own form:

* the model's map is `simulate.simulate_map` of its atoms on the map's own grid (electron form
  factors, low-passed to the map's resolution), every atom at B = 0 Å² (a built model's
  B-factor column holds its confidence, not a displacement);
* the mask holds the voxels whose centres lie within `mask_radius` of an atom, each owned by
  the chain of its nearest atom;
* a chain's figure is the same correlation over its own atoms' mask (the map computed from the
  whole model, so a neighbour's density counts where it reaches), which tells a chain built off
  its density from one that sits in it.

The map is taken as given (no sharpening, no normalisation: a correlation does not see a scale
or an offset); a map of anisotropic voxels is first resampled to its finest spacing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .maps import DensityMap, resample
from .models import BuiltModel, to_structure

__all__ = ["MASK_RADIUS", "MASK_RADIUS_PER_RESOLUTION", "MapFit", "map_fit", "mask_radius"]

#: Å: the least radius of the mask around each atom: a side chain's density at 2-3 Å reaches
#: about this far from its atoms' centres.
MASK_RADIUS = 3.0
#: Beyond 5 Å the mask grows with the blur: radius = this x resolution (3.96 Å at 6.6 Å).
MASK_RADIUS_PER_RESOLUTION = 0.6


@dataclasses.dataclass(frozen=True)
class MapFit:
    """cc_mask: the whole model's correlation with the map inside its mask (-1..1);
    chains: chain ID -> the same over that chain's mask; mask_radius: Å; resolution: Å the
    model's map was computed at."""

    cc_mask: float
    chains: dict
    mask_radius: float
    resolution: float


def mask_radius(resolution: float) -> float:
    """Å: the mask's radius around each atom for a map of ``resolution`` Å."""
    return max(MASK_RADIUS, MASK_RADIUS_PER_RESOLUTION * float(resolution))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or float(a.std()) == 0 or float(b.std()) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def map_fit(model: BuiltModel, density: DensityMap, resolution: float) -> MapFit:
    """CC_mask of ``model`` in ``density`` (module docstring), its map computed at ``resolution``
    Å. Chains without an atom in the map's box get NaN; so does the whole model when none of
    its atoms lies in it."""
    from scipy.spatial import cKDTree

    from .maps import crop_box
    from .simulate import SimulationOptions, simulate_map

    radius = mask_radius(resolution)
    names = model.chains()
    atoms = model.atom_mask.astype(bool)
    xyz = model.atom_positions[atoms].astype(np.float64)
    if not np.allclose(density.voxel_size, density.voxel_size[0]):
        density = resample(density, float(density.voxel_size.min()))
    if len(xyz):  # only the box around the atoms matters
        density = crop_box(density, xyz.min(0) - radius - 1, xyz.max(0) + radius + 1)
    zz, yy, xx = np.indices(density.grid.shape)
    centres = density.voxel_to_xyz(np.stack([xx, yy, zz], -1).reshape(-1, 3))
    distance, nearest = (cKDTree(xyz).query(centres, distance_upper_bound=radius) if len(xyz)
                         else (np.full(len(centres), np.inf), None))
    mask = np.isfinite(distance)
    if not mask.any():
        return MapFit(float("nan"), {name: float("nan") for name in names}, radius, resolution)

    structure = to_structure(model, "model")
    for chain in structure[0]:
        for residue in chain:
            for atom in residue:
                atom.b_iso = 0.0
    computed = simulate_map(structure, SimulationOptions(
        resolution=resolution, voxel_size=float(density.voxel_size[0]),
        origin=tuple(density.origin), shape_xyz=tuple(int(n) for n in density.shape_xyz))).grid
    grid, computed = density.grid.ravel()[mask], computed.ravel()[mask]
    residue_of_atom = np.repeat(np.arange(model.num_residues), atoms.sum(axis=1))
    owner = model.chain_id[residue_of_atom[nearest[mask]]]
    chains = {name: _correlation(grid[owner == name], computed[owner == name]) for name in names}
    return MapFit(_correlation(grid, computed), chains, radius, float(resolution))
