"""The box a build works on: a map's empty surroundings are cut away, nothing else changes."""

from __future__ import annotations

import numpy as np

from cryobuild.extent import OCCUPIED_MARGIN, working_map
from cryobuild.maps import DensityMap


def test_a_map_in_a_box_of_zeros_is_cut_to_its_density(il2_map_3A):
    density, _ = il2_map_3A
    grid = np.pad(density.grid, [(0, 100)] * 3)  # il2 in a corner, zeros elsewhere
    padded = DensityMap(grid, density.voxel_size, density.origin)
    cut = working_map(padded)
    margin = int(np.ceil(OCCUPIED_MARGIN / density.voxel_size[0]))
    np.testing.assert_array_equal(cut.shape_xyz, density.shape_xyz + margin)
    np.testing.assert_allclose(cut.origin, density.origin)
    inside = cut.grid[: density.grid.shape[0], : density.grid.shape[1], : density.grid.shape[2]]
    np.testing.assert_array_equal(inside, density.grid)  # every voxel where it was
    assert np.all(cut.grid[density.grid.shape[0]:] == 0)


def test_a_map_with_no_empty_voxels_is_left_as_it_is(il2_map_3A):
    density, _ = il2_map_3A
    assert working_map(density) is density
