"""``cryobuild rebuild``: rebuild a region of a build's final model -- residues named by chain
and number, or everything near a point -- as the plugin's Rebuild selection does in PyMOL
(`cryobuild.engine.Engine.start_rebuild`): the rest of the model stays as it is, the new
residues are threaded within the sequence window the kept residues flanking the region leave
open, and they replace the old ones only if they are better (``--take-new``: in any case)."""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .build import add_resolution_arg
from .progressbar import add_quiet_arg

HELP = "rebuild a region of a build's final model (its old residues stay unless the new are better)"

#: Å: the default radius of ``--around``.
DEFAULT_RADIUS = 8.0
_RESIDUES = re.compile(r"^([^:\s]+)(?::(-?\d+)(?:-(-?\d+))?)?$")


def add_args(parser):
    parser.add_argument("output_dir", help="the build's output folder (cryobuild build -o)")
    parser.add_argument("residues", nargs="*", metavar="CHAIN[:FIRST[-LAST]]",
                        help="the residues to rebuild, e.g. A:20-45 or B:7 (several allowed; a "
                             "chain ID alone names the whole chain)")
    parser.add_argument("--around", nargs=3, type=float, metavar=("X", "Y", "Z"), default=None,
                        help="instead: rebuild every residue with an atom within --radius of this "
                             "point (Å, the map's frame), and build into empty density there")
    parser.add_argument("--radius", type=float, default=DEFAULT_RADIUS,
                        help=f"with --around, Å (default {DEFAULT_RADIUS:g})")
    parser.add_argument("-v", "--map", default=None, help="map file (default: the build's, from "
                                                          "its build.log; a batch folder has none)")
    parser.add_argument("-f", "--fasta", default=None, help="FASTA file (default: the build's)")
    add_resolution_arg(parser)
    parser.add_argument("--rounds", type=int, default=None,
                        help="graph network rounds (default: the build's)")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--no-relax", dest="relax", action="store_false",
                        help="skip relaxing the new residues")
    parser.add_argument("--take-new", action="store_true",
                        help="write the new residues even when they are not better than the old")
    add_quiet_arg(parser)


def region_keys(specs: list[str], model) -> list[tuple[str, int]]:
    """The ``(chain, number)`` keys of ``model``'s residues named by ``specs``
    (``CHAIN[:FIRST[-LAST]]``); `InputError` for a spec that is malformed or names none."""
    from ..errors import InputError

    keys = []
    for spec in specs:
        match = _RESIDUES.match(spec)
        if match is None:
            raise InputError(f"{spec!r}: name residues as CHAIN, CHAIN:NUMBER or CHAIN:FIRST-LAST "
                             "(e.g. A:20-45)")
        chain, first, last = match.groups()
        rows = model.chain_id == chain
        if first is not None:
            low, high = int(first), int(first if last is None else last)
            if high < low:
                raise InputError(f"{spec!r}: the last residue comes before the first")
            rows &= (model.residue_number >= low) & (model.residue_number <= high)
        if not rows.any():
            spans = ", ".join(f"{c} {model.residue_number[model.chain_id == c].min()}-"
                              f"{model.residue_number[model.chain_id == c].max()}"
                              for c in model.chains())
            raise InputError(f"{spec!r} names no residue of the model (its chains: {spans})")
        keys += zip(model.chain_id[rows].tolist(), model.residue_number[rows].tolist())
    return list(dict.fromkeys(keys))


def main(args) -> int:
    from ..build_folder import BuildFolder
    from ..device import resolve_device
    from ..engine import Engine
    from ..engine.splice import spliced_reports
    from ..errors import InputError
    from ..maps import read_map
    from ..sequences import read_fasta
    from .build import chain_lines, event_printer
    from .finished import build_inputs, build_log, build_options, final_tables, rewrite
    from .progressbar import terminal_progress

    if bool(args.residues) == (args.around is not None):
        raise InputError("name the residues to rebuild (e.g. A:20-45) or give --around X Y Z, "
                         "not both")
    folder = Path(args.output_dir)
    log = build_log(folder, given=bool(args.map and args.fasta))
    map_path, fasta_path, resolution = build_inputs(args, log)
    changes = {"resolution": resolution, "relax": args.relax}
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    options = build_options(log, **changes)
    # the folder is claimed first, so that no build changes it while the region is rebuilt
    with BuildFolder.claim(folder) as claimed:
        model, aa_probs, reports, placements = final_tables(folder)
        keys = region_keys(args.residues, model) if args.residues else None
        density, sequences = read_map(map_path), read_fasta(fasta_path)
        started = time.time()
        engine = Engine(resolve_device(args.device))
        try:
            with tempfile.TemporaryDirectory(prefix="cryobuild-rebuild-") as scratch:
                session = engine.open_session(scratch)
                session.set_model(model, sequences=sequences, built=True)
                with terminal_progress(quiet=args.quiet) as progress:
                    job = engine.start_rebuild(
                        session, density, keys=keys, centre=args.around,
                        radius=args.radius if args.around is not None else None,
                        options=options, on_event=event_printer(progress, "rebuild"),
                        threaded=False)
                result, verdict = job.result(), job.verdict
                state = (session.state if verdict.kept == "new" else
                         verdict.candidate if args.take_new else None)
        finally:
            engine.close()
        region = " ".join(args.residues) if args.residues else (
            "within {:g} Å of ({:g}, {:g}, {:g})".format(args.radius, *args.around))
        if state is None:
            if not args.quiet:
                # the verdict itself came as a warning
                print(f"{region}: the old residues stay; {folder / 'model.cif'} is as it was"
                      + ("" if verdict.candidate is None else " (--take-new writes the new residues)"))
            return 0
        final = state.model.select(state.visible)
        old_keys = list(zip(model.chain_id.tolist(), model.residue_number.tolist()))
        new_keys = list(zip(result.final.chain_id.tolist(), result.final.residue_number.tolist()))
        final_keys = list(zip(final.chain_id.tolist(), final.residue_number.tolist()))
        probabilities = {**dict(zip(old_keys, aa_probs)), **dict(zip(new_keys, result.final_aa_probs))}
        final_probs = np.stack([probabilities[key] for key in final_keys])
        kept = set(final_keys) - set(new_keys)
        touched = ({chain for chain, number in old_keys if (chain, number) not in kept}
                   | set(result.final.chains()))
        final_reports = spliced_reports(final, reports, result.final_chains, state.chain_sequences)
        placements = (tuple(p for p in placements if p.chain_id not in touched)
                      + tuple(result.placements))
        log.setdefault("rebuilt", []).append({
            "region": region, "replaced": len(old_keys) - len(kept), "new": len(new_keys),
            "kept": verdict.kept, "verdict": verdict.message,
            "seconds": round(time.time() - started, 2), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        out = rewrite(claimed, log, final, final_probs, final_reports, placements)
    if not args.quiet:
        taken = "" if verdict.kept == "new" else " (--take-new)"
        print(f"{region}: {len(old_keys) - len(kept)} residues replaced by {len(new_keys)}{taken}: "
              f"{verdict.message} -> {out / 'model.cif'}")
        for line in chain_lines([r for r in final_reports if r.chain_id in touched],
                                [p for p in placements if p.chain_id in touched], out):
            print(line)
    if verdict.kept != "new":
        print("cryobuild: warning: the new residues were not better than the old ones: check them "
              "against the density", file=sys.stderr)
    return 0
