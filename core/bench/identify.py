"""Identify dev maps from a build without sequence: ``python -m cryobuild.bench.identify``.

For each dev map with a sequence (``--cases`` picks some by name), builds without a sequence
as ``cryobuild build_no_seq`` does, searches the database -- every chain of
``shared/data/structures/*/chains.fasta`` plus the map's own sequences (named ``map:<name>``)
-- with the final chains' HMM profiles (`cryobuild.thread.profiles.search_profiles`, as
``hmm_search``), and ranks the database sequences by their best E-value over the profiles.
Prints per case one JSON line: the rank and E-value of the right sequence (the map's own, or a
database chain with an identical sequence), the best wrong hit and its E-value (None: no wrong hit with
``E <= REPORTED_EVALUE``), chains and residues built, and which networks built it and whether
they trained on the map; then how many of the maps the networks did not train on rank their
own sequence first. Each map is built, as in `bench.real`, by the first network pair that did
not train on it (``--networks``; a map without a deposited model trained none). ``--networks
weights/detect.pt,weights/gnn_noseq.pt`` runs the sequence-free graph network instead of the
composition stand-in (the ablation).
"""

from __future__ import annotations

import argparse
import json
import time

from ..cli.build_no_seq import final_profiles
from ..data import data_root, dev_cases
from ..thread.profiles import search_profiles
from ..maps import read_map
from ..models import read_model
from ..pipeline import BuildOptions, build
from ..sequences import Sequence, read_fasta
from .build import model_sequences
from .real import network_pairs, pair_for

#: Prefix of the map's own sequences in the database.
OWN = "map:"
#: Hits up to this E-value are reported (``hmm_search``'s default).
REPORTED_EVALUE = 10.0


def structure_chains() -> list[Sequence]:
    """Every chain sequence of the shared structure sets."""
    paths = sorted((data_root() / "structures").glob("*/chains.fasta"))
    return [sequence for path in paths for sequence in read_fasta(path)]


def ranked_targets(hits) -> list[tuple[str, float]]:
    """Database sequences hit by any profile, by their best E-value (then name)."""
    best = {}
    for hit in hits:
        best[hit.target] = min(hit.evalue, best.get(hit.target, float("inf")))
    return sorted(best.items(), key=lambda item: (item[1], item[0]))


def identify(case, pairs, device, decoys: list[Sequence], options: BuildOptions) -> dict:
    """Build ``case`` without a sequence, with the first of ``pairs`` (`bench.real.NetworkPair`)
    that did not train on it, and rank its own sequence among ``decoys``."""
    pair, seen = pair_for(case.name, pairs)
    own = read_fasta(case.fasta_path) if case.fasta_path else model_sequences(read_model(case.model_path))
    database = decoys + [Sequence(OWN + s.name, s.residues) for s in own]
    right_residues = {s.residues for s in own}
    right = {s.name for s in database if s.residues in right_residues}
    started = time.time()
    result = build(read_map(case.map_path), [], pair.networks(device), options)
    profiles = final_profiles(result)
    hits = search_profiles(profiles, database, max_evalue=REPORTED_EVALUE) if profiles else []
    ranked = ranked_targets(hits)
    row = {"case": case.name, "database": len(database), "chains": len(profiles),
           "residues": result.final.num_residues, "rank": None, "evalue": None,
           "best_wrong": None, "best_wrong_evalue": None, "networks": pair.label,
           "seen": seen}
    for rank, (target, evalue) in enumerate(ranked, start=1):
        if target in right and row["rank"] is None:
            row.update(rank=rank, evalue=float(f"{evalue:.3g}"))
        if target not in right and row["best_wrong"] is None:
            row.update(best_wrong=target, best_wrong_evalue=float(f"{evalue:.3g}"))
    row["seconds"] = round(time.time() - started, 1)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=None,
                        help="dev map names (default: every dev map with a sequence)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--networks", nargs="*", metavar="DETECTOR.pt,GNN.pt", default=None,
                        help="network pairs, as bench.real takes them (default: the bundled "
                             "pairs of both folds)")
    args = parser.parse_args(argv)

    cases = [c for c in dev_cases() if c.fasta_path or c.model_path]
    if args.cases:
        cases = [c for c in cases if c.name in args.cases]
    pairs = network_pairs(args.networks)
    decoys = structure_chains()
    options = BuildOptions(rounds=args.rounds, relax=False)
    rows = []
    for case in cases:
        rows.append(identify(case, pairs, args.device, decoys, options))
        print(json.dumps(rows[-1]), flush=True)
    fair = [row for row in rows if not row["seen"]]
    first = [row["case"] for row in fair if row["rank"] == 1]
    wrong = [row["case"] for row in fair if row["best_wrong"] is not None]
    print(f"maps the networks did not train on: {len(fair)} of {len(rows)}; own sequence ranked "
          f"first: {len(first)} ({', '.join(first) or 'none'}); a wrong hit at E <= "
          f"{REPORTED_EVALUE:g}: {len(wrong)} ({', '.join(wrong) or 'none'})")


if __name__ == "__main__":
    main()
