"""The skewness of standardised density, on noise and on real maps: ``python -m
cryobuild.bench.skewness``.

`pipeline.protein_density_check` refuses a map whose standardised values look like noise
(skewness below `pipeline.NOISE_SKEWNESS`) and warns between that and
`pipeline.PROTEIN_SKEWNESS`. This script prints the figures those bounds rest on:

* ``--noise-maps`` Gaussian noise maps (seeded), white or smoothed by 1-2 voxels, 40-80
  voxels a side, 0.8-1.6 Å voxels, any scale and offset, standardised at 2.5-5 Å;
* every map of ``shared/data/real`` (with and without a deposited model), standardised at its
  stated resolution (estimated when it has none), as a build standardises it.

One line per map, then the range of each group and whether the bounds separate them.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..data import dev_cases
from ..features import standardise
from ..maps import DensityMap, read_map
from ..pipeline import NOISE_SKEWNESS, PROTEIN_SKEWNESS

__all__ = ["noise_map", "main"]


def noise_map(seed: int) -> tuple[DensityMap, float]:
    """A Gaussian noise map (as the module docstring) and the resolution (Å) to standardise it at."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    edge = int(rng.integers(40, 81))
    grid = rng.standard_normal((edge, edge, edge))
    smoothing = float(rng.choice([0.0, 1.0, 2.0]))
    if smoothing:
        grid = gaussian_filter(grid, smoothing)
    grid = grid * float(np.exp(rng.uniform(-3, 3))) + float(rng.normal(0, 1))
    voxel = float(rng.uniform(0.8, 1.6))
    return DensityMap(grid.astype(np.float32), voxel, np.zeros(3)), float(rng.uniform(2.5, 5.0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise-maps", type=int, default=40)
    args = parser.parse_args(argv)

    groups: dict[str, list[float]] = {"noise": [], "real": []}
    for seed in range(args.noise_maps):
        density, resolution = noise_map(seed)
        skewness = standardise(density, resolution).skewness
        groups["noise"].append(skewness)
        print(f"noise seed {seed:2d}  {density.shape_xyz[0]:3d}^3 at {density.voxel_size[0]:.2f} Å, "
              f"{resolution:.1f} Å: skewness {skewness:+.2f}", flush=True)
    for case in dev_cases():
        skewness = standardise(read_map(case.map_path), case.resolution).skewness
        groups["real"].append(skewness)
        print(f"real  {case.name:28s} {case.resolution or 'estimated'} Å: skewness {skewness:+.2f}", flush=True)

    noise, real = np.array(groups["noise"]), np.array(groups["real"])
    print(f"\nnoise maps ({len(noise)}): {noise.min():+.2f} to {noise.max():+.2f}")
    print(f"real maps ({len(real)}): {real.min():+.2f} to {real.max():+.2f}")
    print(f"refused as noise below {NOISE_SKEWNESS}: {int((noise < NOISE_SKEWNESS).sum())} of the noise maps, "
          f"{int((real < NOISE_SKEWNESS).sum())} of the real maps; warned below {PROTEIN_SKEWNESS}: "
          f"{int((real < PROTEIN_SKEWNESS).sum())} of the real maps")


if __name__ == "__main__":
    main()
