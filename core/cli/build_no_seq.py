"""``cryobuild build_no_seq``: build without a sequence and write HMM profiles of the chains,
for ``cryobuild hmm_search`` to identify the protein in a sequence database.

The graph network is the one ``build`` uses, reading a background-composition stand-in for
the sequence (`cryobuild.pipeline.composition_stand_in`)."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from .build import add_resolution_arg, fit_summary, round_writer, save_outputs
from .progressbar import add_quiet_arg

HELP = "build a model without a sequence; writes hmm_profiles/ for hmm_search"


def add_args(parser):
    parser.add_argument("-v", "--map", required=True, help="map file (MRC/CCP4)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the outputs")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--mask", default=None, help="mask map restricting the build")
    parser.add_argument("--rounds", type=int, default=3, help="graph network rounds (default 3)")
    add_resolution_arg(parser)
    add_quiet_arg(parser)


def main(args) -> int:
    from ..build_folder import BuildFolder
    from ..build_outputs import write_build
    from ..map_fit import map_fit
    from ..thread.profiles import write_profiles
    from ..maps import read_map, read_mask
    from ..pipeline import BuildOptions, Networks, build
    from .progressbar import terminal_progress

    density = read_map(args.map)
    mask = read_mask(args.mask, density) if args.mask else None
    options = BuildOptions(rounds=args.rounds, resolution=args.resolution)
    networks = Networks.load(args.device)
    with BuildFolder.claim(args.output_dir) as folder:
        write_round = round_writer(folder)

        def on_result(kind, payload):
            if kind == "round":
                write_round(payload)
            elif kind == "warning":
                print(f"cryobuild: warning: {payload}", file=sys.stderr)

        with terminal_progress(quiet=args.quiet) as progress:
            result = build(density, [], networks, options, mask=mask, progress=progress,
                           on_result=on_result)
        result = dataclasses.replace(
            result, fit=map_fit(result.final, density, result.view.map_resolution))
        profiles = final_profiles(result)
        for profile in profiles:
            profile.description = f"cryobuild build {folder.build_id}"

        def write(destination):
            write_build(result, destination, folder.build_id)
            write_profiles(profiles, destination / "hmm_profiles")

        out = save_outputs(folder, write)
    print(f"{result.final.num_residues} residues in {len(profiles)} chains -> {out / 'model.cif'}; "
          f"{len(profiles)} HMM profiles -> {out / 'hmm_profiles'}")
    fit = fit_summary(result)
    if fit is not None:
        print(f"  map fit: {fit}")
    return 0


def final_profiles(result) -> list:
    """Calibrated HMM profiles (`cryobuild.thread.profiles.chain_profiles`) of the final chains of a
    `BuildResult`, named by chain ID (seeded, so the same build gives the same profiles)."""
    from ..thread.profiles import chain_profiles

    final = result.final
    names = [chain.chain_id for chain in result.final_chains]
    rows = [np.flatnonzero(final.chain_id == name) for name in names]
    return chain_profiles(rows, result.final_aa_probs, final.confidence,
                          np.random.default_rng(0), names=names)
