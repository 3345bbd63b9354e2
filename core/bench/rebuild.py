"""Rebuilding a stretch that lies wrong: ``python -m cryobuild.bench.rebuild``.

What *Rebuild selection* (PyMOL) and ``cryobuild rebuild`` are for: a user sees a stretch of a
build that does not sit in its density and rebuilds it. Each real map (default: those of
`DEFAULT_MAX_RESOLUTION` or better with a deposited model) is built once (seed 0, its stated
resolution) by the network pair that did not train on it (`bench.real.pair_for`). Windows of L
consecutive residues of its longest threaded chain, one every ``--stride`` residues (with
``--at-ends``: its first and last residues, which have a kept neighbour on one side only), are
then each moved ``--shift`` Å in a random direction -- a stretch built into the wrong density
-- and rebuilt by their residue keys (`engine.Engine.start_rebuild`, the same networks and
options), as the user would.

A residue is *right* when its Cα lies within `RIGHT_DISTANCE` of a deposited Cα (one to one) and
it carries that residue's place in its chain's sequence (`evaluate.offered_numbering`); a
stretch moved 2.5 Å has none. Per map and window length it prints the windows, the residues of
the windows the build had right, how many of them are right after the rebuilds (the model's
right residues less those of the untouched rest), and how many rebuilds replaced the stretch;
then the totals per length. ``--shift 0`` rebuilds the stretches where they lie: a rebuild must
not make right residues wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile

import numpy as np

from ..cli.build import build_with_engine
from ..device import resolve_device
from ..errors import CryobuildError
from ..evaluate import offered_numbering
from ..maps import read_map
from ..models import BuiltModel, read_model
from ..pipeline import BuildOptions
from ..sequences import read_fasta
from .build import model_sequences
from .real import modelled_cases, network_pairs, pair_for

__all__ = ["DEFAULT_MAX_RESOLUTION", "RIGHT_DISTANCE", "main", "right_residues", "run_case"]

#: Å: the maps rebuilt by default, this resolution or better (a user's rebuild of a stretch
#: needs residue types that can thread it).
DEFAULT_MAX_RESOLUTION = 3.6
#: Å: a right residue's Cα lies this near its deposited one (a refined residue at 3 Å lies a
#: median 0.5 Å off; a stretch moved 2.5 Å is never right).
RIGHT_DISTANCE = 1.5
#: Residues left at either end of the chain, outside every window.
END_MARGIN = 5


def right_residues(model: BuiltModel, reference: BuiltModel) -> int:
    """How many residues of ``model``'s threaded chains are right against ``reference``
    (module docstring)."""
    right = 0
    for chain in model.chains():
        sequence = model.entity_sequences.get(chain)
        if not sequence:
            continue
        rows = model.chain_id == chain
        right += offered_numbering(model.ca[rows], model.residue_number[rows], sequence, reference,
                                   cutoff=RIGHT_DISTANCE)[1]
    return right


def _windows(numbers: np.ndarray, length: int, stride: int, at_ends: bool) -> list[int]:
    """First residue numbers of the windows of ``length`` residues in a chain numbered
    ``numbers``: one every ``stride`` inside it (`END_MARGIN` from its ends), or with
    ``at_ends`` its first and last ``length`` residues."""
    first, last = int(numbers.min()), int(numbers.max())
    if at_ends:
        return [first, last - length + 1]
    return list(range(first + END_MARGIN, last - length - END_MARGIN + 2, stride))


def run_case(case, pair, lengths: list[int], shift: float, stride: int, device,
             seed: int = 0, at_ends: bool = False, estimated: bool = False,
             rounds: int = BuildOptions.rounds, sphere: float | None = None) -> list[dict]:
    """Build ``case`` with ``pair``'s networks, then move and rebuild its windows (module
    docstring, `_windows`), each in a direction drawn from ``seed`` and the window; one row per
    window. ``estimated``: build and rebuild without the map's stated resolution, as the PyMOL
    panel does (it has no field for one); ``rounds``: the rebuilds' graph-network rounds (the
    build's are the default); ``sphere``: rebuild what lies within this many Å of the moved
    window's middle Cα (`engine.Engine.start_rebuild`'s centre and radius, as ``cryobuild
    rebuild --around``) instead of the window's residues."""
    from ..engine import Engine

    networks = pair.networks(device)
    reference = read_model(case.model_path)
    sequences = read_fasta(case.fasta_path) if case.fasta_path else model_sequences(reference)
    density = read_map(case.map_path)
    options = BuildOptions(resolution=None if estimated else case.resolution)
    built, _ = build_with_engine(density, sequences, options, quiet=True, networks=networks)
    options = dataclasses.replace(options, rounds=rounds)
    model = built.final
    threaded = [report for report in built.final_chains if report.threaded]
    if not threaded:
        return []
    chain = max(threaded, key=lambda report: report.residues).chain_id
    numbers = model.residue_number[model.chain_id == chain]
    built_right = right_residues(model, reference)
    engine = Engine(networks=networks)
    rows = []
    try:
        for length in lengths:
            for start in _windows(numbers, length, stride, at_ends):
                window = ((model.chain_id == chain) & (model.residue_number >= start)
                          & (model.residue_number < start + length))
                if window.sum() < length:
                    continue  # a window across a gap of the build
                direction = np.random.default_rng([seed, length, start]).normal(size=3)
                positions = model.atom_positions.copy()
                positions[window] += (shift * direction / np.linalg.norm(direction)).astype(np.float32)
                moved = dataclasses.replace(model, atom_positions=positions)
                rest = right_residues(model.select(~window), reference)
                keys = list(zip(model.chain_id[window].tolist(), model.residue_number[window].tolist()))
                failed = ""
                with tempfile.TemporaryDirectory(prefix="cryobuild-bench-rebuild-") as folder:
                    session = engine.open_session(folder)
                    session.set_model(moved, sequences=sequences, built=True)
                    where = (dict(keys=keys) if sphere is None else dict(
                        centre=moved.ca[np.flatnonzero(window)[length // 2]], radius=sphere))
                    job = engine.start_rebuild(session, density, options=options, threaded=False,
                                               **where)
                    try:
                        job.result()
                    except CryobuildError as err:  # the stretch stays as it was: counted so
                        failed = str(err)
                    after = session.model
                rows.append({"case": case.name, "resolution": case.resolution,
                             "networks": pair.label, "length": length, "start": start,
                             "shift": shift, "right_before": built_right - rest,
                             "right_after": right_residues(after, reference) - rest,
                             "replaced": not failed and job.verdict.kept == "new", "failed": failed})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        engine.close()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, help="only these map folders (names)")
    parser.add_argument("--max-resolution", type=float, default=DEFAULT_MAX_RESOLUTION,
                        help=f"without --cases, the maps this resolution or better (Å; default "
                             f"{DEFAULT_MAX_RESOLUTION:g})")
    parser.add_argument("--lengths", type=int, nargs="+", default=[6, 10, 16, 24],
                        help="window lengths (residues)")
    parser.add_argument("--shift", type=float, default=2.5, help="Å each window is moved")
    parser.add_argument("--stride", type=int, default=29, help="residues from one window to the next")
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, as bench.real's")
    parser.add_argument("--at-ends", action="store_true",
                        help="the windows are the first and last residues of the chain (one "
                             "kept neighbour each) instead of stretches inside it")
    parser.add_argument("--seed", type=int, default=0, help="the windows' directions")
    parser.add_argument("--estimated-resolution", action="store_true",
                        help="build and rebuild without the maps' stated resolutions (each "
                             "estimated from its map's spectrum), as the PyMOL panel does")
    parser.add_argument("--rounds", type=int, default=BuildOptions.rounds,
                        help=f"the rebuilds' rounds (default {BuildOptions.rounds}, as the builds')")
    parser.add_argument("--sphere", type=float, default=None, metavar="Å",
                        help="rebuild what lies within this radius of each moved window's middle "
                             "Cα (as cryobuild rebuild --around) instead of the window's residues")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    pairs = network_pairs(args.networks)
    device = resolve_device(args.device)
    rows = []
    for case in modelled_cases(args.cases, None if args.cases else args.max_resolution):
        pair, seen = pair_for(case.name, pairs)
        if seen:
            print(f"{case.name}: every network pair trained on it; left out")
            continue
        rows += run_case(case, pair, args.lengths, args.shift, args.stride, device, args.seed,
                         args.at_ends, args.estimated_resolution, args.rounds, args.sphere)

    print(f"\nStretches moved {args.shift:g} Å and rebuilt (right: Cα within {RIGHT_DISTANCE:g} Å "
          "of the deposited one, numbered as its place in the sequence):\n")
    print("| map | Å | residues per window | windows | right before | right after | replaced | failed |")
    print("|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["resolution"], r["case"], r["length"]) for r in rows})
    for resolution, name, length in keys:
        group = [r for r in rows if r["case"] == name and r["length"] == length]
        before, after = sum(r["right_before"] for r in group), sum(r["right_after"] for r in group)
        print(f"| {name} | {resolution:g} | {length} | {len(group)} | {before} | {after} | "
              f"{sum(r['replaced'] for r in group)} | {sum(bool(r['failed']) for r in group)} |")
    for length in sorted({r["length"] for r in rows}):
        group = [r for r in rows if r["length"] == length]
        before, after = sum(r["right_before"] for r in group), sum(r["right_after"] for r in group)
        print(f"| **all** | | {length} | {len(group)} | {before} | {after} ({after / max(before, 1):.2f}) | "
              f"{sum(r['replaced'] for r in group)} | {sum(bool(r['failed']) for r in group)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
