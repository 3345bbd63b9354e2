"""``cryobuild build``: map + sequences -> a threaded, relaxed atomic model."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from ..errors import Cancelled
from .progressbar import add_quiet_arg

HELP = "build a model into a map from its sequence(s)"


def add_args(parser):
    parser.add_argument("-v", "--map", required=True, help="map file (MRC/CCP4, .gz too)")
    parser.add_argument("-f", "--fasta", required=True, help="FASTA file of the chains' sequences")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the outputs")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--scheduler", default=None,
                        help="tcp://HOST:PORT of a Dask scheduler: build on one of its workers "
                             "(--device is then the worker's)")
    parser.add_argument("--mask", default=None, help="mask map: build only in its positive region")
    parser.add_argument("--rounds", type=int, default=3, help="graph network rounds (default 3)")
    add_threader_args(parser)
    parser.add_argument("--no-relax", dest="relax", action="store_false",
                        help="skip the final geometry relaxation")
    parser.add_argument("--threaded-only", action="store_true",
                        help="model.cif holds the threaded chains only (default: also the "
                             "confident chains that could not be threaded, as unassigned UNK chains)")
    add_tuning_args(parser)
    add_quiet_arg(parser)


def add_threader_args(parser, *, checkpoint: bool = False):
    """The threader's flags, shared with the benchmarks; with ``checkpoint``, also
    ``--structgen PATH`` (the benchmarks measure other Structure Generator checkpoints)."""
    parser.add_argument("--threader", choices=["hmm", "structgen"], default="hmm",
                        help="sequence threader (default hmm)")
    parser.add_argument("--no-structgen-fallback", dest="structgen_fallback", action="store_false",
                        help="with --threader structgen: keep the Structure Generator's threading "
                             "even where the HMM threader threads more (default: fall back to it, "
                             "with a warning)")
    if checkpoint:
        add_structgen_checkpoint_arg(parser)


def add_structgen_checkpoint_arg(parser):
    """``--structgen PATH``: the Structure Generator checkpoint a benchmark measures."""
    parser.add_argument("--structgen", type=Path, default=None, metavar="PATH",
                        help="Structure Generator checkpoint (default: weights/structgen_typed.pt)")


def threader_options(args) -> dict:
    """The `BuildOptions` fields of the `add_threader_args` flags."""
    return {"threader": args.threader, "structgen_fallback": args.structgen_fallback}


def add_tuning_args(parser):
    """Flags of the map's resolution and the threading trade-offs, shared with the
    benchmarks."""
    from ..thread.search import MAX_THREAD_EVALUE
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
    parser.add_argument("--no-composition-correction", dest="composition_correction",
                        action="store_false",
                        help="do not correct threading's E-values for the composition of the "
                             "sequence stretch hit")
    add_blind_check_arg(parser)
    add_restarts_arg(parser)
    parser.add_argument("--detection-threshold", type=float, default=None,
                        help=f"least Cα probability of a candidate (default "
                             f"{DetectionOptions.threshold:g})")


def add_restarts_arg(parser):
    """``--restarts K`` (`pipeline.BuildOptions.restarts`), shared with the benchmarks that
    measure it."""
    from ..pipeline import RESTARTS

    parser.add_argument("--restarts", type=int, default=RESTARTS, metavar="K",
                        help="run the rounds K times from the Cα candidates, each with other random "
                             "initial frames and threading at max E-value / K, and merge their "
                             f"threads (default {RESTARTS})")


def add_blind_check_arg(parser):
    """``--no-blind-check`` (`pipeline.BuildOptions.blind_check`), shared with the benchmarks
    that measure it."""
    parser.add_argument("--no-blind-check", dest="blind_check", action="store_false",
                        help="keep every chain the last round threads, even where residue types "
                             "blind to the sequence do not find it there")


def add_resolution_arg(parser):
    """``-r/--resolution`` (``-r`` as `simulate` and `demo` have it)."""
    parser.add_argument("-r", "--resolution", type=float, default=None,
                        help="the map's resolution in Å, e.g. from its EMDB entry (default: "
                             "estimated from the map's spectrum)")


def tuning_options(args) -> dict:
    """The `BuildOptions` fields of the `add_tuning_args` flags."""
    return {"resolution": args.resolution, "max_evalue": args.max_evalue, "min_existence": args.min_existence,
            "placement": args.placement, "closure": args.closure,
            "composition_correction": args.composition_correction,
            "blind_check": args.blind_check, "detection_threshold": args.detection_threshold,
            "restarts": args.restarts}


def build_with_engine(density, sequences, options, *, device="auto", mask=None, quiet=False,
                      networks=None, on_round=None, scheduler=None):
    """Run one build through the engine in this thread (Ctrl-C cancels it) with a terminal
    progress bar; returns the `BuildResult` and the device used. Shared by ``build`` and
    ``demo`` so the command line has no second pipeline; ``networks`` (`pipeline.Networks`)
    are loaded for ``device`` when not given; ``on_round(round_result)`` is called as each
    round finishes (`pipeline.RoundResult`). With ``scheduler`` (a Dask scheduler's address)
    the build runs on one of its workers (`cryobuild.engine.remote`)."""
    from ..engine import Engine
    from .progressbar import terminal_progress

    if scheduler is None:
        engine = Engine(device, networks=networks)
        networks = engine.networks()
    with terminal_progress(quiet=quiet) as progress:
        on_event = event_printer(progress, "build", on_round)
        if scheduler is not None:
            from ..engine.remote import start_remote_build

            job = start_remote_build(scheduler, density, sequences, options, mask=mask,
                                     device=device, on_event=on_event)
            return job.result(), job.device
        job = engine.start_build(density, sequences, options, mask=mask, on_event=on_event,
                                 threaded=False)
        return job.result(), networks.device


def event_printer(progress, label: str, on_round=None):
    """An engine job's ``on_event`` for the command line: its stages to ``progress`` (a
    `progressbar.terminal_progress` callback, None when quiet) under ``label``, its warnings as
    one line on stderr, and each round's `pipeline.RoundResult` to ``on_round``."""

    def on_event(event):
        if progress is not None and event.kind == "stage":
            progress(label, event.fraction, f"{event.stage}: {event.message}")
        elif event.kind == "warning":
            print(f"cryobuild: warning: {event.message}", file=sys.stderr)
        elif event.kind == "round" and on_round is not None:
            on_round(event.payload)

    return on_event


def save_outputs(folder, write) -> Path:
    """`BuildFolder.save` for the command-line verbs: saves with ``write`` and says on stderr
    which earlier models it kept (`BuildFolder.kept_notices`); returns the output folder."""
    out = folder.save(write)
    for notice in folder.kept_notices():
        print(f"cryobuild: {notice}", file=sys.stderr)
    return out


def round_writer(folder):
    """An ``on_round`` callback writing each round's model into ``folder``'s staging folder
    (`cryobuild.build_folder.BuildFolder`) as it finishes. A failed write is reported once and
    the build goes on: every output is written again when it ends."""
    from ..build_outputs import write_round

    failed = []

    def write(round_result):
        if failed:
            return
        try:
            write_round(round_result, folder.staging, folder.build_id)
        except OSError as err:
            failed.append(err)
            print(f"cryobuild: warning: cannot write round {round_result.index} into "
                  f"{folder.staging} ({err.strerror or err}); the outputs are written when the "
                  "build ends", file=sys.stderr)

    return write


def _rounded(value: float) -> float | None:
    """A figure for build.log: 3 decimals, None for NaN (which JSON cannot hold)."""
    return round(value, 3) if math.isfinite(value) else None


def fit_summary(result) -> str | None:
    """How the final model fits the map in one line (`map_fit.MapFit`); None when the build
    measured none or the model is empty."""
    fit = result.fit
    if fit is None or not math.isfinite(fit.cc_mask):
        return None
    return (f"CC_mask {fit.cc_mask:.2f} (the map against one computed from the model, within "
            f"{fit.mask_radius:.1f} Å of its atoms)")


def geometry_summary(result) -> str | None:
    """The final model's geometry in one line (`validation.GeometryReport.summary`), as the
    relaxation measured it after its last step; None for an empty or unrelaxed model."""
    if result.relax_report is None or not result.final.num_residues:
        return None
    return result.relax_report.geometry_after.summary()


def _say_rounds_left(folder) -> None:
    """On stderr, where a stopped build's finished rounds are (the staging folder's
    ``rounds/``, which the next build into the folder clears), if it finished any."""
    from ..build_folder import ROUNDS

    rounds = sorted((folder.staging / ROUNDS).glob("*.cif"), key=lambda path: path.stat().st_mtime)
    if rounds:
        print(f"cryobuild build: the {len(rounds)} round{'s' if len(rounds) > 1 else ''} "
              f"finished before it stopped {'are' if len(rounds) > 1 else 'is'} in "
              f"{rounds[-1].parent} (the last: {rounds[-1].name}); the next build into "
              f"{folder.path} clears them", file=sys.stderr)


def main(args) -> int:
    from ..atomic import write_bytes_atomic
    from ..build_folder import BUILD_LOG, BuildFolder
    from ..build_outputs import write_build
    from ..device import resolve_device
    from ..maps import read_map, read_mask
    from ..pipeline import BuildOptions
    from ..sequences import read_fasta

    density = read_map(args.map)
    sequences = read_fasta(args.fasta)
    mask = read_mask(args.mask, density) if args.mask else None
    options = BuildOptions(rounds=args.rounds, relax=args.relax, threaded_only=args.threaded_only,
                           **threader_options(args), **tuning_options(args))
    device = args.device if args.scheduler else resolve_device(args.device)
    started = time.time()
    with BuildFolder.claim(args.output_dir) as folder:
        try:
            result, device = build_with_engine(density, sequences, options, device=device,
                                               mask=mask, quiet=args.quiet,
                                               on_round=round_writer(folder),
                                               scheduler=args.scheduler)
        except (KeyboardInterrupt, Cancelled):  # a stop leaves the staging folder
            _say_rounds_left(folder)
            raise
        log = {
            "build_id": folder.build_id,
            "map": str(args.map), "fasta": str(args.fasta), "device": str(device),
            "rounds": args.rounds, **threader_options(args), **tuning_options(args),
            "map_resolution": (round(float(result.view.map_resolution), 2)
                               if result.view is not None else None),
            "resolution_estimated": result.view.estimated if result.view is not None else None,
            "points": len(result.points),
            "raw_residues": result.raw.num_residues, "final_residues": result.final.num_residues,
            "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
            "total_seconds": round(time.time() - started, 2),
        }
        if result.relax_report is not None and hasattr(result.relax_report, "to_dict"):
            log["relax"] = result.relax_report.to_dict()
        if result.fit is not None:
            log["map_fit"] = {"cc_mask": _rounded(result.fit.cc_mask),
                              "mask_radius": result.fit.mask_radius,
                              "chains": {c: _rounded(v) for c, v in result.fit.chains.items()}}

        def write(destination):
            write_build(result, destination, folder.build_id)
            write_bytes_atomic(destination / BUILD_LOG, (json.dumps(log, indent=1) + "\n").encode())

        out = save_outputs(folder, write)
    if not args.quiet:
        print(f"{result.final.num_residues} residues in {len(result.final_chains)} chains "
              f"-> {out / 'model.cif'} ({log['total_seconds']:.0f} s)")
        for line in chain_lines(result.final_chains, result.placements, out, result.fit):
            print(line)
        geometry = geometry_summary(result)
        if geometry is not None:
            print(f"  geometry: {geometry}")
        fit = fit_summary(result)
        if fit is not None:
            print(f"  map fit: {fit}")
        if result.view is not None and result.view.estimated:
            print(f"  resolution: read at {result.view.map_resolution:.1f} Å, estimated from the "
                  "map's spectrum; --resolution gives its stated one, which threads more at 3-4 Å")
    return 0


#: Most chain lines `cryobuild build` prints: threaded chains and unassigned ones with a named
#: placement always, then the longest other unassigned chains up to this count, the rest in one
#: line (a 4-5 Å map leaves tens of short unassigned chains; chains.csv lists them all).
CHAIN_LINES = 12


def chain_lines(reports, placements, out: Path, fit=None) -> list[str]:
    """The lines `cryobuild build` prints about the final chains (`pipeline.ChainReport`, in ID
    order), how each fits the map (``fit``, `map_fit.MapFit`, if measured) and where the
    unassigned ones might go (`thread.hints.Placement`), for the output folder ``out``."""
    from ..build_outputs import PLACEMENTS_FILE
    from ..thread.hints import named_placements

    best = {p.chain_id: p for p in named_placements(placements)}
    listed = [r for r in reports if r.threaded or r.chain_id in best]
    others = sorted((r for r in reports if r not in listed), key=lambda r: -r.residues)
    room = max(CHAIN_LINES - len(listed), 0)
    listed = {r.chain_id for r in listed + others[:room]}
    lines = []
    for chain in reports:
        if chain.chain_id not in listed:
            continue
        line = (f"  chain {chain.chain_id}: {chain.sequence or 'unassigned'} {chain.first}-"
                f"{chain.last}, {chain.residues} residues")
        place = best.get(chain.chain_id)
        if chain.threaded:
            line += f", E = {chain.evalue:.2g}"
        elif place is not None:
            line += f", might be {place.sequence} {place.first}-{place.last} (E = {place.evalue:.2g})"
        line += f", confidence {chain.mean_confidence:.0f}"
        cc = fit.chains.get(chain.chain_id) if fit is not None else None
        lines.append(f"{line}, CC {cc:.2f}" if cc is not None and math.isfinite(cc) else line)
    rest = others[room:]
    if rest:
        lines.append(f"  and {len(rest)} more unassigned chains of {min(r.residues for r in rest)}-"
                     f"{max(r.residues for r in rest)} residues ({out / 'chains.csv'})")
    if placements:
        lines.append(f"  (places for the unassigned chains: {out / PLACEMENTS_FILE}; "
                     f"cryobuild assign {out} CHAIN gives a chain its best one, or Assign in "
                     f"PyMOL after cryobuild gui MAP FASTA --model {out / 'model.cif'})")
    return lines
