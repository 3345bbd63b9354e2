"""Does a build depend on how a map was processed? ``python -m cryobuild.bench.robust``.

Each real map (default: four maps the bundled networks did not train on, 1.75-4.8 Å) is
changed the ways deposited maps differ, and built each time with its stated resolution
(`bench.real.run_map`, the same networks throughout):

* a global B of -150, -75, +75 and +150 Å² with a low-pass at the map's resolution, as
  post-processing applies them (and applied where the map is not empty, so a zoned map stays
  zoned, as when a map is sharpened before it is masked);
* 20 voxels of zero padding on every side; a crop to the deposited model plus 6 Å;
* a soft mask around the deposited model (3 Å, then a 3 Å cosine edge);
* the values times 10⁻³ plus 5, and times 10³ minus 50;
* resampling to 0.7 Å and 2.0 Å voxels;
* thresholding: every voxel below the 60th percentile of the non-empty ones set to 0.

Prints one JSON line per build, then per map the final Cα recall of each variant and the
spread (max - min; the target is a spread <= 0.05), and the spread left when the one variant
that narrows it most is left out (a map held back by a single variant). With several ``--seeds`` each variant's
figure is the mean over its builds, and the table adds the seeds' own range (the mean over the
variants of max - min over the seeds): how far builds of one map differ with nothing changed,
which a single build's spread includes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from ..data import dev_cases
from ..maps import DensityMap, crop_box, fourier_filter, pad_to_shape, read_map, resample, write_map
from ..models import read_model
from ..pipeline import BuildOptions
from .real import network_pairs, run_map

__all__ = ["VARIANTS", "main"]

DEFAULT_CASES = ("emd20026_apoferritin", "emd2566_3j6b9", "emd5925_3j6j_mavs", "t20s_alpha")


def _empty(grid: np.ndarray) -> np.ndarray:
    return grid == 0


def _b_factor(b: float):
    def change(density: DensityMap, reference, resolution: float) -> DensityMap:
        empty = _empty(density.grid)
        pad = 16
        grid = np.pad(density.grid, pad, mode="reflect" if not empty.any() else "constant")
        filtered = fourier_filter(grid, density.voxel_size[::-1], resolution, b)[pad:-pad, pad:-pad, pad:-pad]
        return density.with_grid(np.where(empty, 0.0, filtered))
    return change


def _soft_mask(density: DensityMap, reference, resolution: float) -> DensityMap:
    from scipy.spatial import cKDTree

    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in density.shape_xyz], indexing="ij"), -1)
    distance, _ = cKDTree(reference.atom_positions[reference.atom_mask]).query(
        density.voxel_to_xyz(ijk.reshape(-1, 3)))
    distance = distance.reshape(ijk.shape[:3]).transpose(2, 1, 0)
    weight = np.clip(1 - (distance - 3.0) / 3.0, 0, 1)
    return density.with_grid(density.grid * weight)


def _crop(density: DensityMap, reference, resolution: float) -> DensityMap:
    return crop_box(density, reference.ca.min(0) - 6.0, reference.ca.max(0) + 6.0)


def _threshold(density: DensityMap, reference, resolution: float) -> DensityMap:
    grid = density.grid
    level = np.percentile(grid[grid != 0], 60)
    return density.with_grid(np.where(grid >= level, grid, 0.0))


#: name -> change(map, deposited model, stated resolution in Å) -> map
VARIANTS = {
    "as deposited": lambda d, r, res: d,
    "B -150": _b_factor(-150.0),
    "B -75": _b_factor(-75.0),
    "B +75": _b_factor(75.0),
    "B +150": _b_factor(150.0),
    "pad 20": lambda d, r, res: pad_to_shape(d, d.shape_xyz + 40),
    "crop": _crop,
    "soft mask": _soft_mask,
    "x1e-3 +5": lambda d, r, res: d.with_grid(d.grid * 1e-3 + 5),
    "x1e3 -50": lambda d, r, res: d.with_grid(d.grid * 1e3 - 50),
    "voxel 0.7": lambda d, r, res: resample(d, 0.7),
    "voxel 2.0": lambda d, r, res: resample(d, 2.0),
    "threshold": _threshold,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), help="map folders (names)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S",
                        help="build seeds (`BuildOptions.seed`); a variant's figure is the mean "
                             "over them")
    args = parser.parse_args(argv)

    pairs = network_pairs(args.networks)
    table = {}
    with tempfile.TemporaryDirectory(prefix="cryobuild-robust-") as tmp:
        for case in dev_cases():
            if case.name not in args.cases or case.model_path is None:
                continue
            density = read_map(case.map_path)
            reference = read_model(case.model_path)
            for variant in args.variants:
                path = Path(tmp) / f"{case.name}.mrc"
                write_map(VARIANTS[variant](density, reference, case.resolution), path)
                changed = dataclasses.replace(case, map_path=path)
                for seed in args.seeds:
                    options = BuildOptions(rounds=args.rounds, resolution=case.resolution,
                                           seed=seed)
                    row = run_map(changed, pairs, options, args.device, reference_figures=False)
                    print(json.dumps({"variant": variant, "case": case.name, "seed": seed}),
                          flush=True)
                    table.setdefault(case.name, {}).setdefault(variant, []).append(
                        row.get("final_ca_recall", 0.0))

    several = len(args.seeds) > 1
    print("\nFinal Cα recall per variant" + (f", mean over seeds {args.seeds}" if several else "")
          + "; spread = max - min (target <= 0.05)")
    print("| map | " + " | ".join(args.variants) + " | spread | spread without one variant |"
          + (" seeds' range |" if several else ""))
    print("|---|" + "---|" * (len(args.variants) + 2 + several))
    for name, figures in table.items():
        means = [float(np.mean(figures[v])) for v in args.variants]
        # the variant whose leaving out narrows the spread most, and the spread without it
        without = min((np.ptp(means[:k] + means[k + 1:]), variant)
                      for k, variant in enumerate(args.variants)) if len(means) > 2 else None
        line = (f"| {name} | " + " | ".join(f"{v:.2f}" for v in means)
                + f" | {max(means) - min(means):.3f} | "
                + (f"{without[0]:.3f} (without {without[1]}) |" if without else "- |"))
        if several:
            line += f" {np.mean([np.ptp(figures[v]) for v in args.variants]):.2f} |"
        print(line)


if __name__ == "__main__":
    main()
