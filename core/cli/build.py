"""``cryobuild build``: map + sequences -> a threaded, relaxed atomic model."""

from __future__ import annotations

import json
import sys
import time

from .progressbar import add_quiet_arg

HELP = "build a model into a map from its sequence(s)"


def add_args(parser):
    parser.add_argument("-v", "--map", required=True, help="map file (MRC/CCP4, .gz too)")
    parser.add_argument("-f", "--fasta", required=True, help="FASTA file of the chains' sequences")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the outputs")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--mask", default=None, help="mask map: build only in its positive region")
    parser.add_argument("--rounds", type=int, default=3, help="graph network rounds (default 3)")
    parser.add_argument("--threader", choices=["hmm", "structgen"], default="hmm",
                        help="sequence threader (default hmm)")
    parser.add_argument("--no-relax", dest="relax", action="store_false",
                        help="skip the final geometry relaxation")
    add_tuning_args(parser)
    add_quiet_arg(parser)


def add_tuning_args(parser):
    """Flags of the map's resolution and the threading trade-offs, shared with the
    benchmarks."""
    from ..assignment import MAX_THREAD_EVALUE
    from ..chains import MIN_EXISTENCE
    from ..detect.inference import DetectionOptions

    add_resolution_arg(parser)
    parser.add_argument("--max-evalue", type=float, default=MAX_THREAD_EVALUE,
                        help=f"thread chains up to this E-value (default {MAX_THREAD_EVALUE:g})")
    parser.add_argument("--min-existence", type=float, default=MIN_EXISTENCE,
                        help=f"least existence probability of a residue (default {MIN_EXISTENCE:g})")
    parser.add_argument("--no-placement", dest="placement", action="store_false",
                        help="do not place unthreaded chains into the sequence gaps")
    parser.add_argument("--no-closure", dest="closure", action="store_false",
                        help="do not fill gaps inside threaded chains with untraced residues")
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help=f"least Cα probability of a candidate (default "
                             f"{DetectionOptions.threshold:g})")


def add_resolution_arg(parser):
    parser.add_argument("--resolution", type=float, default=None,
                        help="the map's resolution in Å, e.g. from its EMDB entry (default: "
                             "estimated from the map's spectrum)")


def tuning_options(args) -> dict:
    """The `BuildOptions` fields of the `add_tuning_args` flags."""
    return {"resolution": args.resolution, "max_evalue": args.max_evalue, "min_existence": args.min_existence,
            "placement": args.placement, "closure": args.closure,
            "detection_threshold": args.detection_threshold}


def build_with_engine(density, sequences, options, *, device="auto", mask=None, quiet=False,
                      networks=None):
    """Run one build through the engine in this thread (Ctrl-C cancels it) with a terminal
    progress bar; returns the `BuildResult` and the device used. Shared by ``build`` and
    ``demo`` so the command line has no second pipeline; ``networks`` (`pipeline.Networks`)
    are loaded for ``device`` when not given."""
    from ..engine import Engine
    from .progressbar import terminal_progress

    engine = Engine(device, networks=networks)
    networks = engine.networks()
    with terminal_progress(quiet=quiet) as progress:

        def on_event(event):
            if progress is not None and event.kind == "stage":
                progress("build", event.fraction, f"{event.stage}: {event.message}")
            elif event.kind == "warning":
                print(f"cryobuild: warning: {event.message}", file=sys.stderr)

        job = engine.start_build(density, sequences, options, mask=mask, on_event=on_event,
                                 threaded=False)
        return job.result(), networks.device


def main(args) -> int:
    from ..atomic import output_folder, write_bytes_atomic
    from ..build_outputs import write_build
    from ..maps import read_map
    from ..pipeline import BuildOptions
    from ..sequences import read_fasta

    density = read_map(args.map)
    sequences = read_fasta(args.fasta)
    mask = read_map(args.mask) if args.mask else None
    out = output_folder(args.output_dir)
    options = BuildOptions(rounds=args.rounds, threader=args.threader, relax=args.relax,
                           **tuning_options(args))
    started = time.time()
    result, device = build_with_engine(density, sequences, options, device=args.device,
                                       mask=mask, quiet=args.quiet)
    write_build(result, out)
    log = {
        "map": str(args.map), "fasta": str(args.fasta), "device": str(device),
        "rounds": args.rounds, "threader": args.threader, **tuning_options(args),
        "points": len(result.points),
        "raw_residues": result.raw.num_residues, "final_residues": result.final.num_residues,
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "total_seconds": round(time.time() - started, 2),
    }
    if result.relax_report is not None and hasattr(result.relax_report, "to_dict"):
        log["relax"] = result.relax_report.to_dict()
    write_bytes_atomic(out / "build.log", (json.dumps(log, indent=1) + "\n").encode())
    if not args.quiet:
        print(f"{result.final.num_residues} residues in {len(result.final_chains)} chains "
              f"-> {out / 'model.cif'} ({log['total_seconds']:.0f} s)")
        for chain in result.final_chains:
            print(f"  chain {chain.chain_id}: {chain.sequence} {chain.first}-{chain.last}, "
                  f"{chain.residues} residues, E = {chain.evalue:.2g}, "
                  f"confidence {chain.mean_confidence:.0f}")
    return 0
