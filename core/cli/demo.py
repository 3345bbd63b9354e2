"""``cryobuild demo``: the whole job on a built-in example.

Simulates a 3 Å map from the interleukin-2 structure that PyMOL ships, builds into it with its
sequence and prints the scores of the raw and final models against the known structure.
"""

from __future__ import annotations

import time

import numpy as np

from .progressbar import add_quiet_arg

HELP = "simulate a map from PyMOL's il2.pdb, build into it and print the scores"


def add_args(parser):
    parser.add_argument("-o", "--output-dir", default="cryobuild_demo", help="folder for the outputs")
    parser.add_argument("-r", "--resolution", type=float, default=3.0, help="map resolution (Å)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_quiet_arg(parser)


def main(args) -> int:
    from ..build_folder import BuildFolder
    from ..build_outputs import write_build
    from ..checkpoints import checkpoint_path
    from ..data import read_structure
    from ..demo_data import demo_structure_path
    from ..device import resolve_device
    from ..evaluate import evaluate
    from ..maps import write_map
    from ..models import read_model
    from ..pipeline import BuildOptions
    from ..residues import AA_ORDER
    from ..sequences import Sequence
    from ..simulate import SimulationOptions, simulate_map
    from .build import build_with_engine, fit_summary, geometry_summary, round_writer, save_outputs

    device = resolve_device(args.device)
    source = demo_structure_path()
    reference = read_model(source)
    density = simulate_map(
        read_structure(source),
        SimulationOptions(resolution=args.resolution, voxel_size=1.0, snr=3.0),
        np.random.default_rng(0),
    )
    sequence = Sequence("il2", "".join(AA_ORDER[a] for a in reference.aatype if a < len(AA_ORDER)))
    print(f"simulated a map from {source.name} ({reference.num_residues} residues) at "
          f"{args.resolution:g} Å")
    missing = [name for name in ("detect", "gnn") if not checkpoint_path(name).exists()]
    with BuildFolder.claim(args.output_dir) as folder:

        def write_simulated(destination):
            write_map(density, destination / "map.mrc", label=f"cryobuild build {folder.build_id}")

        if missing:
            out = save_outputs(folder, write_simulated)
            print(f"stopping: no trained weights for {', '.join(missing)} in this installation "
                  f"(the map is {out / 'map.mrc'})")
            return 0
        started = time.time()
        # built at the resolution it was simulated at, as a user gives a map's stated one: the
        # map's spectrum reads 3.7 Å for 3 Å, and the estimate threaded 0.88 of il2 against 0.96
        # (README, "The map's resolution: stated or estimated")
        result, _ = build_with_engine(density, [sequence], BuildOptions(resolution=args.resolution),
                                      device=device, quiet=args.quiet, on_round=round_writer(folder))

        def write(destination):
            write_simulated(destination)
            write_build(result, destination, folder.build_id)

        out = save_outputs(folder, write)
    seconds = time.time() - started
    print(f"built {result.final.num_residues} residues in {len(result.final_chains)} chains in "
          f"{seconds:.0f} s -> {out / 'model.cif'} (map: {out / 'map.mrc'})")
    for name, model in (("raw model", result.raw), ("final model", result.final)):
        metrics = evaluate(model, reference)
        print(f"{name:>12}: Cα recall {metrics.ca_recall:.2f}, precision {metrics.ca_precision:.2f}, "
              f"sequence recall {metrics.sequence_recall:.2f}, backbone RMSD "
              f"{metrics.backbone_rmsd:.2f} Å, connectivity {metrics.connectivity:.2f}")
    geometry = geometry_summary(result)  # the relaxation measured it: not again here
    if geometry is not None:
        print(f"    geometry: {geometry}")
    fit = fit_summary(result)
    if fit is not None:
        print(f"     map fit: {fit}")
    return 0
