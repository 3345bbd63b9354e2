"""``cryobuild simulate``: a cryo-EM-like map from an atomic model."""

from __future__ import annotations

import numpy as np

HELP = "simulate a cryo-EM-like map from a model (PDB/mmCIF) at a given resolution"


def add_args(parser):
    parser.add_argument("-m", "--model", required=True, help="model file (PDB or mmCIF, .gz too)")
    parser.add_argument("-r", "--resolution", type=float, required=True, help="resolution (Å)")
    parser.add_argument("-o", "--output", required=True, help="map file to write (.mrc)")
    parser.add_argument("--voxel-size", type=float, default=1.0, help="voxel size (Å), default 1.0")
    parser.add_argument("--snr", type=float, default=None,
                        help="signal-to-noise ratio of added coloured noise (default: no noise)")
    parser.add_argument("--b-extra", type=float, default=0.0,
                        help="extra global B-factor in Å² (negative sharpens)")
    parser.add_argument("--margin", type=float, default=8.0, help="padding around the atoms (Å)")
    parser.add_argument("--origin", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="position of the first voxel (Å); default: the atoms' lower "
                             "corner minus the margin")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the noise")


def main(args) -> int:
    from ..data import read_structure
    from ..errors import InputError
    from ..maps import write_map
    from ..simulate import SimulationOptions, simulate_map

    try:
        options = SimulationOptions(
            resolution=args.resolution, voxel_size=args.voxel_size, margin=args.margin,
            b_extra=args.b_extra, snr=args.snr,
            origin=None if args.origin is None else tuple(args.origin),
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    structure = read_structure(args.model)
    try:
        density = simulate_map(structure, options, np.random.default_rng(args.seed))
    except ValueError as err:
        raise InputError(f"{args.model}: {err}") from None
    write_map(density, args.output)
    nz, ny, nx = density.grid.shape
    print(f"wrote {args.output}: {nx}x{ny}x{nz} voxels of {args.voxel_size:g} Å at "
          f"{args.resolution:g} Å resolution, origin {np.round(density.origin, 2).tolist()} Å")
    return 0
