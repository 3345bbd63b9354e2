"""``cryobuild assign``: give an unassigned chain of a build the place in a sequence the build
offered for it (``unassigned_placements.csv``), as the plugin's Assign does in PyMOL."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .build import add_resolution_arg
from .progressbar import add_quiet_arg

HELP = "assign an unassigned chain of a build to a place in a sequence its build offered"

#: Outputs of the build that an assignment leaves as they are (copied into the new outputs).
UNCHANGED_OUTPUTS = ("ca_points.cif", "model_raw.cif", "rounds")


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


def _build_log(folder: Path, given: bool) -> dict:
    """The folder's ``build.log`` (empty when there is none and the map and FASTA are
    ``given``: a ``cryobuild batch`` folder has none)."""
    from ..errors import InputError

    path = folder / "build.log"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if (folder / "hmm_profiles").is_dir():
            raise InputError(f"{folder}: a build without sequences (build_no_seq) offers no "
                             "places in a sequence: build with the FASTA (cryobuild build)") from None
        if not (folder / "model.cif").is_file():
            raise InputError(f"{folder}: no model.cif here (is it a cryobuild build folder?)") from None
        if given:
            return {}
        raise InputError(f"{folder}: no build.log to name the map and FASTA the build used "
                         "(a cryobuild batch folder): give them with -v and -f") from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read ({err})") from None


def _final_tables(folder: Path):
    """A build folder's final model with its residue-type probabilities ``[R, 20]``, chain
    reports and placements, as its build wrote them (`InputError` otherwise)."""
    from ..build_folder import as_written
    from ..build_outputs import (PLACEMENTS_FILE, read_aa_probabilities_csv, read_chains_csv,
                                 read_placements_csv)
    from ..errors import InputError
    from ..models import read_model

    if not as_written(folder, "model.cif"):
        raise InputError(f"{folder / 'model.cif'} is not as its build wrote it (changed since, or "
                         "written before cryobuild kept a record): assign works on a build's own "
                         "model, so that its chains and tables agree")
    model = read_model(folder / "model.cif")
    probabilities = read_aa_probabilities_csv(folder / "aa_probabilities.csv")
    keys = list(zip(model.chain_id.tolist(), model.residue_number.tolist()))
    if any(key not in probabilities for key in keys):
        raise InputError(f"{folder / 'aa_probabilities.csv'} does not list every residue of "
                         "model.cif")
    return (model, np.stack([probabilities[key] for key in keys]),
            read_chains_csv(folder / "chains.csv"),
            read_placements_csv(folder / PLACEMENTS_FILE))


def main(args) -> int:
    from ..assign import assign_placement, with_assignment
    from ..atomic import write_bytes_atomic
    from ..build_folder import BuildFolder
    from ..build_outputs import write_final
    from ..device import resolve_device
    from ..errors import InputError
    from ..maps import read_map
    from ..pipeline import Networks, network_view
    from ..sequences import read_fasta
    from ..thread.hints import chosen_placement
    from .build import save_outputs

    folder = Path(args.output_dir)
    log = _build_log(folder, given=bool(args.map and args.fasta))
    map_path, fasta_path = args.map or log.get("map"), args.fasta or log.get("fasta")
    if not map_path or not fasta_path:
        raise InputError("the build.log names no map or FASTA file: give them with -v and -f")
    # the folder is claimed first, so that no build changes it while the chain is assigned
    with BuildFolder.claim(folder) as claimed:
        model, aa_probs, reports, placements = _final_tables(folder)
        placement = chosen_placement(placements, args.chain, args.rank, "the build")
        density, sequences = read_map(map_path), read_fasta(fasta_path)
        resolution = args.resolution if args.resolution is not None else log.get("resolution")
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
        log["build_id"] = claimed.build_id

        def write(destination: Path) -> None:
            for name in UNCHANGED_OUTPUTS:
                source = folder / name
                if source.is_dir():
                    shutil.copytree(source, destination / name)
                elif source.is_file():
                    shutil.copy2(source, destination / name)
            write_bytes_atomic(destination / "build.log", (json.dumps(log, indent=1) + "\n").encode())
            write_final(final, final_probs, reports, placements, destination, claimed.build_id)

        out = save_outputs(claimed, write)
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
