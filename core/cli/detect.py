"""``cryobuild detect``: find Cα atoms in a map with the trained 3D CNN."""

from __future__ import annotations


from .build import add_resolution_arg
from .progressbar import add_quiet_arg

HELP = "find the Cα atoms in a map (writes ca_points.cif and ca_probability.mrc)"


def add_args(parser):
    parser.add_argument("-v", "--map", required=True, help="map file (MRC/CCP4, .gz too)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the outputs")
    parser.add_argument("--mask", default=None, help="mask map: only its positive region is searched")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold (default: the trained network's own)")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--baseline", action="store_true",
                        help="use the classical local-maxima detector instead of the network")
    add_resolution_arg(parser)
    add_quiet_arg(parser)


def main(args) -> int:
    from ..atomic import output_folder
    from ..detect.baseline import detect_calphas_baseline
    from ..detect.inference import DetectionOptions, detect_calphas
    from ..detect.network import load_detector
    from ..device import resolve_device
    from ..errors import InputError
    from ..maps import read_map, read_mask, resample_onto, write_map
    from ..models import model_from_ca, write_model
    from ..pipeline import network_view
    from .progressbar import terminal_progress

    density = read_map(args.map)
    mask = read_mask(args.mask, density) if args.mask else None
    if not args.baseline:
        options = DetectionOptions() if args.threshold is None else _options(args.threshold)
        device = resolve_device(args.device)
        network = load_detector(device=device)
    out = output_folder(args.output_dir)
    view = network_view(density, args.resolution)  # as `build` reads it
    if args.baseline:
        result = detect_calphas_baseline(view)
    else:
        with terminal_progress(quiet=args.quiet) as progress:
            try:
                result = detect_calphas(view, network, options, mask=mask, device=device,
                                        progress=progress)
            except ValueError as err:
                raise InputError(f"{args.map}: {err}") from None
    points = result.points
    write_model(model_from_ca(points.xyz, points.score), out / "ca_points.cif")
    write_map(resample_onto(result.probability, density), out / "ca_probability.mrc")
    print(f"{len(points)} Cα points -> {out / 'ca_points.cif'}; probability map -> "
          f"{out / 'ca_probability.mrc'}")
    return 0


def _options(threshold: float):
    from ..detect.inference import DetectionOptions
    from ..errors import InputError

    try:
        return DetectionOptions(threshold=threshold)
    except ValueError as err:
        raise InputError(str(err)) from None
