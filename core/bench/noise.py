"""Builds of maps of pure noise: ``python -m cryobuild.bench.noise [--networks DETECTOR.pt,GNN.pt]``.

A map with no protein must be refused (`pipeline.protein_density_check`) or build nothing; a
detector that finds chains in noise traces them into real maps' solvent too. Each noise map
(`noise_map`: Gaussian noise, white or smoothed by 1-2 voxels, 40-80 voxels a side, 0.8-1.6 Å
voxels, any scale and offset, seeded) is built with il2's sequence as ``cryobuild build``
would, through `pipeline.build`. One line per map (refused, or the residues of the raw and the
final model), then how many of the maps gave a final model with residues.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .. import simulate
from ..demo_data import demo_structure_path
from ..errors import BuildError
from ..maps import DensityMap
from ..models import read_model
from ..pipeline import BuildOptions, Networks, build
from .build import model_sequences

__all__ = ["main", "noise_map"]


def noise_map(seed: int) -> tuple[DensityMap, float]:
    """The seeded noise map of the module docstring (`simulate.noise_map`) and a resolution
    (Å, 2.5-5) to build or standardise it at."""
    rng = np.random.default_rng(seed)
    edge = int(rng.integers(40, 81))
    smoothing = float(rng.choice([0.0, 1.0, 2.0]))
    density = simulate.noise_map(edge, smoothing, float(rng.uniform(0.8, 1.6)), rng)
    return density, float(rng.uniform(2.5, 5.0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="default: the bundled weights/detect.pt and gnn.pt")
    parser.add_argument("--maps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)

    detector, _, gnn = (args.networks or ",").partition(",")
    networks = Networks.load("cpu", gnn=gnn or None, detector=detector or None)
    sequences = model_sequences(read_model(demo_structure_path()))
    built = 0
    for seed in range(args.maps):
        density, resolution = noise_map(seed)
        began = time.time()
        try:
            options = BuildOptions(resolution=resolution, rounds=args.rounds)
            result = build(density, sequences, networks, options)
        except BuildError as err:
            outcome = f"refused: {str(err)[:90]}"
        else:
            residues = result.final.num_residues
            built += residues > 0
            outcome = f"built: raw {result.raw.num_residues} residues, final {residues}"
        print(f"noise seed {seed:2d}  {density.shape_xyz[0]:3d}^3 at {density.voxel_size[0]:.2f} Å, "
              f"{resolution:.1f} Å, {time.time() - began:4.1f} s: {outcome}", flush=True)
    print(f"\n{built} of {args.maps} noise maps gave a final model with residues")


if __name__ == "__main__":
    main()
