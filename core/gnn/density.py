"""A density map as a torch tensor that can be sampled at arbitrary Å positions.

The Å -> voxel conversion comes from `DensityMap.voxel_affine` (the map owns it); this module
only folds it into the ``[-1, 1]`` coordinates that `torch.nn.functional.grid_sample` expects.
The values are z-scored over the voxels near the graph's Cα positions, so that the scale does
not depend on how much solvent the box holds (a tight training crop and a large real map look
alike to the network). Maps sharper than the training maps are first low-passed to
`INPUT_RESOLUTION` (`input_view`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import InputError
from ..maps import DensityMap, low_pass, mask_around

__all__ = ["INPUT_RESOLUTION", "NORMALISATION_RADIUS", "DensityVolume", "input_view",
           "normalise_near"]

#: Voxels within this distance (Å) of a Cα node set the mean and standard deviation of the map.
NORMALISATION_RADIUS = 3.0
#: Å: detail finer than this is removed from a map before the network sees it: the sharpest of
#: its training maps (`cryobuild.train.gnn`: 2.5-4.5 Å). On the 1.75 Å apoferritin dev map,
#: residue-type accuracy from the deposited Cα (``bench.gnn``, 3 rounds, step-35,949 network)
#: was 0.40 as it is and 0.44 / 0.52 / 0.45 low-passed at 2.5 / 3.0 / 3.5 Å (a scratch script
#: that filtered the map before ``bench.gnn``'s cases; ``bench.gnn`` itself now gives 0.448
#: at 2.5 Å; the 3.2-4.8 Å dev maps changed by at most 0.02); whole builds (``bench.build
#: --cases 4`` with this constant edited, at commit 4ccd211 before the later closure changes;
#: final Cα recall / sequence recall) at 2.5 vs 3.0 Å: apoferritin 0.90 / 0.88 vs 0.87 / 0.85
#: (0.80 / 0.77 unfiltered), simulated 3 Å 0.88 / 0.88 vs 0.86 / 0.84, EMD-2566 0.73 / 0.65 vs
#: 0.69 / 0.63.
INPUT_RESOLUTION = 2.5


def normalise_near(density: DensityMap, ca_xyz: np.ndarray) -> DensityMap:
    """Z-score ``density`` over the voxels within `NORMALISATION_RADIUS` of the points
    ``ca_xyz`` ``[N, 3]`` (Å); over the whole map when no voxel is that close."""
    mask = mask_around(density, ca_xyz, NORMALISATION_RADIUS)
    values = density.grid[mask] if mask.sum() > 1 else density.grid.reshape(-1)
    std = float(values.std())
    if not np.isfinite(std) or std == 0:
        raise InputError("the map has no density variation around the Cα positions")
    return density.with_grid((density.grid - float(values.mean())) / std)


def input_view(density: DensityMap, ca_xyz: np.ndarray) -> DensityMap:
    """The map as the network sees it: low-passed at `INPUT_RESOLUTION` (`maps.low_pass`),
    then `normalise_near` the points ``ca_xyz`` ``[N, 3]`` (Å)."""
    return normalise_near(low_pass(density, INPUT_RESOLUTION), ca_xyz)


@dataclasses.dataclass(frozen=True)
class DensityVolume:
    """A map on a device, sampled trilinearly (0 outside the box).

    Attributes
    ----------
    grid : Tensor ``[1, 1, Z, Y, X]``
        Density values.
    scale, offset : Tensor ``[3]`` (x, y, z)
        ``grid_sample`` coordinate = ``xyz * scale + offset`` for positions in Å.
    """

    grid: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor

    @classmethod
    def from_map(cls, density: DensityMap, device: torch.device | str | None = None) -> DensityVolume:
        """The tensor form of ``density`` (already normalised as wanted)."""
        voxel_scale, voxel_offset = density.voxel_affine()
        # grid_sample with align_corners=True puts -1 and +1 on the first and last voxel centres
        to_unit = 2.0 / np.maximum(density.shape_xyz - 1, 1)
        scale = voxel_scale * to_unit
        offset = voxel_offset * to_unit - 1.0
        grid = torch.from_numpy(np.ascontiguousarray(density.grid, dtype=np.float32))
        return cls(
            # [Z, Y, X] => [1, 1, Z, Y, X]
            grid=grid[None, None].to(device),
            scale=torch.as_tensor(scale, dtype=torch.float32, device=device),
            offset=torch.as_tensor(offset, dtype=torch.float32, device=device),
        )

    def sample(self, xyz: torch.Tensor) -> torch.Tensor:
        """Density at positions ``[*, 3]`` (Å) -> ``[*]`` (float32)."""
        shape = xyz.shape[:-1]
        unit = xyz.float() * self.scale + self.offset
        # [*, 3] => [1, 1, 1, P, 3] (grid_sample's last axis is x, y, z)
        unit = unit.reshape(1, 1, 1, -1, 3)
        values = torch.nn.functional.grid_sample(
            self.grid, unit, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        # [1, 1, 1, 1, P] => [*]
        return values.reshape(shape)
