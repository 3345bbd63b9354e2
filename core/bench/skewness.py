"""The skewness of standardised density, on noise and on real maps: ``python -m
cryobuild.bench.skewness``.

`pipeline.protein_density_check` refuses a map whose standardised values look like noise
(skewness below `pipeline.NOISE_SKEWNESS`), warns between that and
`pipeline.PROTEIN_SKEWNESS`, and warns that a map's contrast looks inverted at
`pipeline.INVERTED_SKEWNESS` or below. This script prints the figures those bounds rest on:

* ``--noise-maps`` Gaussian noise maps (`bench.noise.noise_map`, seeds 0, 1, ...),
  standardised at the resolution each comes with;
* every map of ``shared/data/real`` (with and without a deposited model), standardised at its
  stated resolution (estimated when it has none), as a build standardises it, and the same
  map negated (its contrast inverted);
* the least skewness of each map with a model over the ways `bench.robust` processes it
  (`bench.robust.VARIANTS`: sharpened, blurred, padded, cropped, masked, rescaled, resampled,
  thresholded), none of which may read as inverted.

One line per map, then the range of each group and whether the bounds separate them.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..data import dev_cases
from ..features import standardise
from ..maps import read_map
from ..models import read_model
from ..pipeline import INVERTED_SKEWNESS, NOISE_SKEWNESS, PROTEIN_SKEWNESS
from .noise import noise_map
from .robust import VARIANTS

__all__ = ["main"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise-maps", type=int, default=40)
    args = parser.parse_args(argv)

    groups: dict[str, list[float]] = {"noise": [], "real": [], "inverted": []}
    for seed in range(args.noise_maps):
        density, resolution = noise_map(seed)
        skewness = standardise(density, resolution).skewness
        groups["noise"].append(skewness)
        print(f"noise seed {seed:2d}  {density.shape_xyz[0]:3d}^3 at {density.voxel_size[0]:.2f} Å, "
              f"{resolution:.1f} Å: skewness {skewness:+.2f}", flush=True)
    least = []
    for case in dev_cases():
        density = read_map(case.map_path)
        skewness = standardise(density, case.resolution).skewness
        inverted = standardise(density.with_grid(-density.grid), case.resolution).skewness
        groups["real"].append(skewness)
        groups["inverted"].append(inverted)
        line = (f"real  {case.name:28s} {case.resolution or 'estimated'} Å: skewness "
                f"{skewness:+.2f}, negated {inverted:+.2f}")
        if case.model_path is not None:
            reference = read_model(case.model_path)
            variants = {name: standardise(change(density, reference, case.resolution),
                                          case.resolution).skewness
                        for name, change in VARIANTS.items()}
            name = min(variants, key=variants.get)
            least.append(variants[name])
            line += f"; processed, least {variants[name]:+.2f} ({name})"
        print(line, flush=True)

    noise, real, inverted = (np.array(groups[name]) for name in ("noise", "real", "inverted"))
    print(f"\nnoise maps ({len(noise)}): {noise.min():+.2f} to {noise.max():+.2f}")
    print(f"real maps ({len(real)}): {real.min():+.2f} to {real.max():+.2f}")
    print(f"refused as noise below {NOISE_SKEWNESS}: "
          f"{int((noise < NOISE_SKEWNESS).sum())} of the noise maps, "
          f"{int((real < NOISE_SKEWNESS).sum())} of the real maps; warned below {PROTEIN_SKEWNESS}: "
          f"{int((real < PROTEIN_SKEWNESS).sum())} of the real maps")
    print(f"real maps negated: {inverted.min():+.2f} to {inverted.max():+.2f}; said to look "
          f"inverted at {INVERTED_SKEWNESS} or below: {int((inverted <= INVERTED_SKEWNESS).sum())} "
          f"of them, {int((noise <= INVERTED_SKEWNESS).sum())} of the noise maps, "
          f"{int((real <= INVERTED_SKEWNESS).sum())} of the real maps")
    if least:
        print(f"real maps processed as bench.robust does: least {min(least):+.2f}; said to look "
              f"inverted: {int((np.array(least) <= INVERTED_SKEWNESS).sum())} of {len(least)} maps")


if __name__ == "__main__":
    main()
