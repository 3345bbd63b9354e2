"""How signal and noise share the frequencies of real maps and of training maps: ``python -m
cryobuild.bench.fsc [--cases NAME...] [--simulated N] [--noise-colour C ...]``.

The map-model FSC of a shell is the correlation, over the shell's Fourier coefficients, of the
map and a noise-free map computed from the deposited model (`simulate.simulate_map` at
`MODEL_RESOLUTION` on the map's own grid), both inside a soft mask around the model. It falls
where noise and what the model does not explain take over. Printed at the shells
1/(k·R) for k in `SHELLS` (R the stated resolution: 3R, 2R, ... R):

* every real map with a deposited model in ``shared/data/real`` (cubic voxels);
* ``--simulated`` validation structures simulated by `simulate.simulate_map` at 3 and 4 Å with
  the training maps' noise (coloured like the signal, `SimulationOptions.noise_colour` 1; SNR
  0.5, 2 and 8, the graph network's training range being 0.5-8) and, for each
  ``--noise-colour``, noise of that colour.

What it showed (2026-12-05): the real maps fall from 0.86-0.95 at 3R to 0.34-0.80 at 1.1R and
0.10-0.60 at R; the training noise gives a flat curve up to 1.1R (0.70-0.96 by SNR) and then
the resolution cut-off. Noise of colour 0.2-0.5 at SNR 2-8 falls as the real maps do.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy.ndimage import gaussian_filter

from ..maps import DensityMap, frequency_radius, read_map
from ..simulate import SimulationOptions, simulate_map

__all__ = ["MODEL_RESOLUTION", "SHELLS", "map_model_fsc", "main"]

#: Å: resolution of the model's map (finer than any map here, so that it is not the limit).
MODEL_RESOLUTION = 1.8
#: Shells, as multiples k of the stated resolution R (the shell at 1/(k·R)).
SHELLS = (3.0, 2.0, 1.5, 1.25, 1.1, 1.0)
#: 1/Å: half-width of a shell.
SHELL_HALF_WIDTH = 0.01
#: Å: the mask is the model's map above `MASK_LEVEL` of its mean positive value, smoothed by
#: a Gaussian of this sigma.
MASK_SMOOTHING = 3.0
MASK_LEVEL = 0.3
#: SNRs of the simulated rows.
SIMULATED_SNR = (0.5, 2.0, 8.0)


def map_model_fsc(density: DensityMap, structure, resolution: float) -> np.ndarray:
    """float ``[len(SHELLS)]``: the map-model FSC of ``density`` (cubic voxels) against the
    `gemmi.Structure` ``structure`` at the `SHELLS` of ``resolution`` Å (module docstring)."""
    voxel = float(density.voxel_size[0])
    model = simulate_map(structure, SimulationOptions(
        resolution=MODEL_RESOLUTION, voxel_size=voxel, origin=tuple(density.origin),
        shape_xyz=tuple(int(n) for n in density.grid.shape[::-1]))).grid.astype(np.float64)
    inside = (model > MASK_LEVEL * model[model > 0].mean()).astype(np.float64)
    mask = np.clip(3.0 * gaussian_filter(inside, MASK_SMOOTHING / voxel), 0.0, 1.0)
    observed = np.fft.rfftn(density.grid.astype(np.float64) * mask)
    computed = np.fft.rfftn(model * mask)
    radius = frequency_radius(density.grid.shape, voxel)
    values = []
    for k in SHELLS:
        shell = np.abs(radius - 1.0 / (k * resolution)) < SHELL_HALF_WIDTH
        a, b = observed[shell], computed[shell]
        values.append(float(np.real(np.sum(a * np.conj(b)))
                            / math.sqrt(np.sum(np.abs(a) ** 2) * np.sum(np.abs(b) ** 2))))
    return np.array(values)


def _row(label: str, values: np.ndarray) -> str:
    return f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |"


def main(argv=None) -> None:
    from ..data import default_split, read_structure
    from .real import modelled_cases

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=None, help="only these real map folders (names)")
    parser.add_argument("--simulated", type=int, default=4, help="validation structures simulated")
    parser.add_argument("--noise-colour", type=float, nargs="*", default=[0.2, 0.5],
                        help="noise colours simulated besides the training maps' 1")
    args = parser.parse_args(argv)

    print("| map | Å | " + " | ".join(f"{k:g}R" for k in SHELLS) + " |")
    print("|---|---|" + "---|" * len(SHELLS))
    for case in modelled_cases(args.cases):
        density = read_map(case.map_path)
        if not np.allclose(density.voxel_size, density.voxel_size[0]):
            print(f"| {case.name} | {case.resolution} | non-cubic voxels: skipped |")
            continue
        values = map_model_fsc(density, read_structure(case.model_path), case.resolution)
        print(_row(f"{case.name} | {case.resolution}", values), flush=True)

    structures = [read_structure(r.path) for r in default_split()["validation"][:args.simulated]]
    for resolution in (3.0, 4.0):
        for colour in (1.0, *args.noise_colour):
            for snr in SIMULATED_SNR:
                values = [map_model_fsc(simulate_map(structure, SimulationOptions(
                    resolution=resolution, voxel_size=1.1, snr=snr, noise_colour=colour),
                    np.random.default_rng(index)), structure, resolution)
                    for index, structure in enumerate(structures)]
                label = (f"simulated, noise colour {colour:g}{' (training)' if colour == 1 else ''}, "
                         f"SNR {snr:g} | {resolution}")
                print(_row(label, np.mean(values, axis=0)), flush=True)


if __name__ == "__main__":
    main()
