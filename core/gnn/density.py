"""A density map as a torch tensor that can be sampled at arbitrary Å positions.

The Å -> voxel conversion comes from `DensityMap.voxel_affine` (the map owns it); this module
only folds it into the ``[-1, 1]`` coordinates that `torch.nn.functional.grid_sample` expects.
The map comes standardised (`cryobuild.features.standardise`), so a tight training crop and a
large real map look alike to the network.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..maps import DensityMap

__all__ = ["DensityVolume"]

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
