"""``cryobuild assign``: give an unassigned chain of a build the place in a sequence the build
offered for it (``unassigned_placements.csv``), as the plugin's Assign does in PyMOL."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .build import add_resolution_arg
from .progressbar import add_quiet_arg

HELP = "assign an unassigned chain of a build to a place in a sequence its build offered"


def add_args(parser):
    parser.add_argument("output_dir", help="the build's output folder (cryobuild build -o)")
    parser.add_argument("chain", help="the unassigned chain's ID (model.cif, chains.csv)")
    parser.add_argument("--rank", type=int, default=1,
                        help="which of the chain's placements in unassigned_placements.csv "
                             "(default 1, the best)")
    parser.add_argument("-v", "--map", default=None, help="map file (default: the build's, from "
                                                          "its build.log; a batch folder has none)")
    parser.add_argument("-f", "--fasta", default=None, help="FASTA file (default: the build's)")
    add_resolution_arg(parser)
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--no-relax", dest="relax", action="store_false",
                        help="skip relaxing the assigned chain")
    add_quiet_arg(parser)


def main(args) -> int:
    from ..assign import assign_placement, with_assignment
    from ..build_folder import BuildFolder
    from ..device import resolve_device
    from ..maps import read_map
    from ..pipeline import Networks, network_view
    from ..sequences import read_fasta
    from ..thread.hints import chosen_placement
    from .finished import build_inputs, build_log, final_tables, rewrite

    folder = Path(args.output_dir)
    log = build_log(folder, given=bool(args.map and args.fasta))
    map_path, fasta_path, resolution = build_inputs(args, log)
    # the folder is claimed first, so that no build changes it while the chain is assigned
    with BuildFolder.claim(folder) as claimed:
        model, aa_probs, reports, placements = final_tables(folder)
        placement = chosen_placement(placements, args.chain, args.rank, "the build")
        density, sequences = read_map(map_path), read_fasta(fasta_path)
        started = time.time()
        networks = Networks.load(resolve_device(args.device))
        assignment = assign_placement(network_view(density, resolution), model, placement,
                                      sequences, networks, relax=args.relax)
        final, final_probs, reports = with_assignment(model, aa_probs, reports, assignment)
        placements = tuple(p for p in placements if p.chain_id != placement.chain_id)
        log.setdefault("assigned", []).append({
            "chain": placement.chain_id, "rank": placement.rank, "sequence": placement.sequence,
            "first": assignment.chain.first, "last": assignment.chain.last,
            "residues": assignment.chain.residues, "evalue": placement.evalue,
            "seconds": round(time.time() - started, 2), "time": time.strftime("%Y-%m-%d %H:%M:%S")})
        out = rewrite(claimed, log, final, final_probs, reports, placements)
    if not args.quiet:
        chain = assignment.chain
        print(f"chain {placement.chain_id}: {chain.residues} residues as {chain.sequence} "
              f"{chain.first}-{chain.last} (E = {placement.evalue:.2g}) -> {out / 'model.cif'}")
        if assignment.rest.num_residues:
            rest = reports[-1]
            print(f"  chain {rest.chain_id}: the {rest.residues} residues outside the alignment, "
                  "still unassigned")
        print("  the build could not tell this place from chance: check it against the density",
              file=sys.stderr)
    return 0
