"""Decoy sequences: does threading put chains on sequences that are not in the map? ``python -m
cryobuild.bench.decoys``.

Each real map with a deposited model (or those of ``--cases``) is built, with the network pair
that did not train on it (as ``bench.real`` picks), from its true sequences plus ``--decoys``
shuffles of each (the same residues in a random order: the same length and composition, no
homology). One JSON line per map, then a table: the final chains and residues threaded to
decoys (the issue-17 bar: none), to the true sequences, and the final Cα and sequence recall
against the deposited model, to show that the right chains are not thrown away to keep the
decoys out. ``--no-true`` builds with the decoys alone (an unrelated sequence of the right
composition). The table also counts the unassigned chains' placements a build names to the user
(`cryobuild.thread.hints.named_placements`) onto decoys and onto true sequences: with 20 shuffles
of each sequence, placements by chance alone would fall 20 times as often on decoys.

``--il2-seeds N`` instead builds N simulated 3 Å maps of il2 (PyMOL's demo structure, SNR 3,
noise seeds 0 .. N-1) with `UNRELATED` alone, the unrelated sequence of the tests, and prints
how many threaded a chain to it (a shuffle keeps the true composition; this sequence, rich in
R, P and G, does not).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ..cli.build import (add_blind_check_arg, add_restarts_arg, add_threader_args, build_with_engine,
                         threader_options)
from ..evaluate import evaluate
from ..maps import read_map
from ..models import read_model
from ..pipeline import BuildOptions
from ..sequences import Sequence, read_fasta
from ..thread.hints import named_placements
from .build import model_sequences
from .real import modelled_cases, network_pairs, pair_for

__all__ = ["UNRELATED", "main", "shuffled", "unrelated_on_il2"]

#: Name prefix of the decoy sequences.
DECOY = "decoy"
#: An unrelated sequence (no homology to il2), R-, P- and G-rich.
UNRELATED = "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRGRRQPIPKARRPEGRTWAQPGYPWPLYGNEG"


def shuffled(sequences: list[Sequence], count: int, rng: np.random.Generator) -> list[Sequence]:
    """``count`` shuffles of each of ``sequences``, named ``decoy<k>_<name>``."""
    return [Sequence(f"{DECOY}{k}_{sequence.name}",
                     "".join(rng.permutation(list(sequence.residues))))
            for sequence in sequences for k in range(count)]


def run_map(case, pairs, decoys: int, with_true: bool, options: BuildOptions, device) -> dict:
    pair, seen = pair_for(case.name, pairs)
    reference = read_model(case.model_path)
    true = read_fasta(case.fasta_path) if case.fasta_path else model_sequences(reference)
    sequences = (true if with_true else []) + shuffled(true, decoys, np.random.default_rng(0))
    row = {"case": case.name, "resolution": case.resolution, "networks": pair.label,
           "seen": seen, "sequences": len(sequences)}
    started = time.time()
    result, _ = build_with_engine(read_map(case.map_path), sequences, options, quiet=True,
                                  networks=pair.networks(device))
    row["seconds"] = round(time.time() - started, 1)
    threaded = [r for r in result.final_chains if r.sequence]
    to_decoys = [r for r in threaded if r.sequence.startswith(DECOY)]
    row.update(decoy_chains=len(to_decoys), decoy_residues=sum(r.residues for r in to_decoys),
               decoy_best_evalue=min((r.evalue for r in to_decoys), default=None),
               true_chains=len(threaded) - len(to_decoys),
               true_residues=sum(r.residues for r in threaded) - sum(r.residues for r in to_decoys))
    named = named_placements(result.placements)
    row.update(named_to_decoys=sum(p.sequence.startswith(DECOY) for p in named),
               named_to_true=sum(not p.sequence.startswith(DECOY) for p in named))
    metrics = evaluate(result.final, reference)
    row.update(final_ca_recall=round(metrics.ca_recall, 3),
               final_sequence_recall=round(metrics.sequence_recall, 3))
    print(json.dumps(row), flush=True)
    return row


def unrelated_on_il2(seeds: int, pair, options: BuildOptions, device) -> int:
    """Build il2 maps of ``seeds`` noise seeds with `UNRELATED` (module docstring) with the
    networks of ``pair`` (`bench.real.NetworkPair`); one line per map; returns how many
    threaded a chain."""
    from ..data import read_structure
    from ..demo_data import demo_structure_path
    from ..simulate import SimulationOptions, simulate_map

    structure = read_structure(demo_structure_path())
    networks = pair.networks(device)
    hits = 0
    for seed in range(seeds):
        density = simulate_map(structure, SimulationOptions(resolution=3.0, snr=3.0),
                               np.random.default_rng(seed))
        result, _ = build_with_engine(density, [Sequence("unrelated", UNRELATED)], options, quiet=True,
                                      networks=networks)
        threaded = [r for r in result.final_chains if r.sequence]
        hits += bool(threaded)
        print(json.dumps({"il2_seed": seed, "threaded_chains": len(threaded),
                          "threaded_residues": sum(r.residues for r in threaded),
                          "evalues": [r.evalue for r in threaded]}), flush=True)
    return hits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=None, help="only these map folders (names)")
    parser.add_argument("--decoys", type=int, default=20, help="shuffles of each sequence")
    parser.add_argument("--no-true", action="store_true", help="build with the decoys alone")
    parser.add_argument("--max-resolution", type=float, default=4.5,
                        help="only maps at this resolution (Å) or better")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, as bench.real takes them (default: the bundled ones; "
                             "--il2-seeds uses the first)")
    parser.add_argument("--il2-seeds", type=int, default=None, metavar="N",
                        help="build N simulated il2 maps with UNRELATED instead of the real maps")
    add_threader_args(parser, checkpoint=True)
    parser.add_argument("--no-composition-correction", dest="composition_correction",
                        action="store_false",
                        help="builds without threading's composition correction "
                             "(pipeline.BuildOptions.composition_correction)")
    add_blind_check_arg(parser)
    add_restarts_arg(parser)
    args = parser.parse_args(argv)
    pairs = network_pairs(args.networks, args.structgen)
    if args.il2_seeds:
        options = BuildOptions(rounds=args.rounds, resolution=3.0,
                               composition_correction=args.composition_correction,
                               blind_check=args.blind_check, restarts=args.restarts,
                               **threader_options(args))
        hits = unrelated_on_il2(args.il2_seeds, pairs[0], options, args.device)
        print(f"\nil2 maps with a chain threaded to the unrelated sequence ({args.rounds} rounds): "
              f"{hits} of {args.il2_seeds}")
        return
    rows = []
    for case in modelled_cases(args.cases, args.max_resolution):
        options = BuildOptions(rounds=args.rounds, resolution=case.resolution,
                               composition_correction=args.composition_correction,
                               blind_check=args.blind_check, restarts=args.restarts,
                               **threader_options(args))
        rows.append(run_map(case, pairs, args.decoys, not args.no_true, options, args.device))
    print(f"\n{args.decoys} decoys per sequence{'' if not args.no_true else ', no true sequence'}")
    print("| map | Å | sequences | chains to decoys | residues to decoys | chains to true | "
          "residues to true | named placements to decoys | to true | final Cα | final seq. | "
          "networks | saw it |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['resolution']} | {r['sequences']} | {r['decoy_chains']} | "
              f"{r['decoy_residues']} | {r['true_chains']} | {r['true_residues']} | "
              f"{r['named_to_decoys']} | {r['named_to_true']} | "
              f"{r['final_ca_recall']:.2f} | {r['final_sequence_recall']:.2f} | {r['networks']} | "
              f"{'yes' if r['seen'] else 'no'} |")
    print(f"\nmaps with a chain threaded to a decoy: {sum(r['decoy_chains'] > 0 for r in rows)} "
          f"of {len(rows)}; named placements of unassigned chains to decoys "
          f"{sum(r['named_to_decoys'] for r in rows)}, to true sequences "
          f"{sum(r['named_to_true'] for r in rows)}")


if __name__ == "__main__":
    main()
