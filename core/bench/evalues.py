"""Are threading's E-values what they say? ``python -m cryobuild.bench.evalues [--cases
NAME...] [--simulated N] [--shuffles K]``.

A chain's E-value is the number of alignments as good as its best that a search of that chain
would find by chance. Read against sequences that are not in the map, the share of chains at
E <= x should therefore be about ``1 - exp(-x)``, and the cuts that decide what threads
(`thread.search.MAX_THREAD_EVALUE`, the whole model's anchor cut
`thread.copies.MODEL_FALSE_THREADS` over the chains searched) mean what they say only then.

Each map (the real maps with a model up to ``--max-resolution``, each with the network pair
that did not train on it as `bench.real` chooses it, and ``--simulated`` held-out structures
simulated at 3 Å) is refined from the Cα the detector finds (3 rounds,
`bench.gnn.detected_refinement`) and linked into chains as a build's round does
(`pipeline.residue_predictions`, `chains.link_chains`, frames turned along the chains). Each
chain of at least `MIN_LENGTH` residues is then read by both threaders' searches, with no
E-value cut, against ``--shuffles`` shuffles of the map's sequences (each keeps its
sequence's composition, not its order), and once against the sequences themselves.

Printed per threader: the readings against shuffles and the share at each E-value cut beside
``1 - exp(-x)``, then the share of true readings at E <= 0.001 (what the right sequence
threads). The graph network saw the true sequence in its rounds, as in a build; how much that
leaks into the types is `bench.decoys --il2-seeds`'s question, not this one's.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from ..chains import MIN_EXISTENCE, link_chains, runs_against
from ..cli.build import add_structgen_checkpoint_arg
from ..models import read_model
from ..pipeline import Networks, residue_predictions
from ..sequences import Sequence, read_fasta
from ..thread.search import thread_chains
from ..thread.structgen import thread_structgen
from .build import model_sequences
from .decoys import shuffled
from .gnn import BenchCase, detected_refinement, folder_case, simulated_cases
from .real import modelled_cases, network_pairs, pair_for

__all__ = ["CUTS", "MIN_LENGTH", "THREADERS", "chain_evalues", "main"]

#: Chains shorter than this (residues) are not read: a build threads none shorter than 4 and
#: the shortest that reach significance are longer.
MIN_LENGTH = 5
#: E-value cuts the shares are printed at.
CUTS = (0.1, 0.03, 0.01, 0.001)
#: Threaders compared.
THREADERS = ("hmm", "structgen")


def chain_evalues(case: BenchCase, sequences: list[Sequence], networks: Networks, shuffles: int,
                  rng: np.random.Generator) -> dict[str, dict[str, list[float]]]:
    """E-values ``{threader: {"shuffled": [...], "true": [...]}}`` of the chains of at least
    `MIN_LENGTH` residues the graph network builds into ``case``'s map (module docstring);
    ``networks`` must hold a Structure Generator."""
    graph, _, _ = detected_refinement(case, networks.gnn, networks.detector, device=networks.device)
    predictions = residue_predictions(graph)
    chains = link_chains(predictions, MIN_EXISTENCE)
    graph = graph.turned(runs_against(predictions.backbone, chains))
    chains = [c for c in chains if len(c) >= MIN_LENGTH]
    ca = graph.atom14_positions[:, 1]

    def search(threader: str, given: list[Sequence]) -> list[float]:
        if threader == "hmm":
            matches = thread_chains(chains, graph.aa_probs, graph.confidence, given, ca=ca,
                                    max_evalue=math.inf, rng=np.random.default_rng(0))
        else:
            matches = thread_structgen(chains, graph.aa_probs, ca, given, networks.structgen,
                                       max_evalue=math.inf)
        return [m.evalue if m.threaded else math.inf for m in matches[:len(chains)]]

    decoys = [shuffled(sequences, 1, rng) for _ in range(shuffles)]
    return {threader: {"shuffled": [e for decoy in decoys for e in search(threader, decoy)],
                       "true": search(threader, sequences)}
            for threader in THREADERS}


def _shares(evalues: list[float]) -> str:
    values = np.asarray(evalues, dtype=np.float64)
    return " | ".join(f"{np.mean(values <= cut):.4f} ({1 - math.exp(-cut):.4f})" if len(values) else "-"
                      for cut in CUTS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", default=None, help="only these real map folders (names)")
    parser.add_argument("--max-resolution", type=float, default=4.5,
                        help="only real maps at this resolution (Å) or better")
    parser.add_argument("--simulated", type=int, default=4, help="held-out structures simulated at 3 Å")
    parser.add_argument("--shuffles", type=int, default=4, help="shuffles of the sequences per map")
    parser.add_argument("--networks", nargs="*", default=None, metavar="DETECTOR.pt,GNN.pt",
                        help="network pairs, as bench.real takes them (default: the bundled ones; "
                             "the simulated maps use the first)")
    add_structgen_checkpoint_arg(parser)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pairs = network_pairs(args.networks, args.structgen)
    work = []
    for case in modelled_cases(args.cases, args.max_resolution):
        reference = read_model(case.model_path)
        sequences = list(read_fasta(case.fasta_path)) if case.fasta_path else model_sequences(reference)
        work.append((folder_case(case.folder), sequences, pair_for(case.name, pairs)[0]))
    for bench_case in simulated_cases(args.simulated, 3.0, seed=args.seed) if args.simulated else []:
        sequences = [Sequence(f"s{i}", s) for i, s in enumerate(bench_case.sequences)]
        work.append((bench_case, sequences, pairs[0]))

    rng = np.random.default_rng(args.seed)
    totals = {threader: {"shuffled": [], "true": []} for threader in THREADERS}
    for bench_case, sequences, pair in work:
        evalues = chain_evalues(bench_case, sequences, pair.networks("cpu"), args.shuffles, rng)
        row = {"case": bench_case.name, "networks": pair.label}
        for threader, readings in evalues.items():
            for kind, values in readings.items():
                totals[threader][kind] += values
            shuffled_e = np.asarray(readings["shuffled"])
            row[threader] = {"chains": len(readings["true"]),
                             "shuffled_at_0.03": int(np.sum(shuffled_e <= 0.03)),
                             "true_at_0.001": int(np.sum(np.asarray(readings["true"]) <= 1e-3))}
        print(json.dumps(row), flush=True)

    print(f"\n{len(work)} maps, {args.shuffles} shuffles of each map's sequences, chains of >= "
          f"{MIN_LENGTH} residues")
    print("| threader | readings vs shuffles | " + " | ".join(f"E <= {c:g} (expected)" for c in CUTS)
          + " | true readings | true at E <= 0.001 |")
    print("|---|---|" + "---|" * len(CUTS) + "---|---|")
    for threader, readings in totals.items():
        true = np.asarray(readings["true"])
        print(f"| {threader} | {len(readings['shuffled'])} | {_shares(readings['shuffled'])} | "
              f"{len(true)} | {np.mean(true <= 1e-3) if len(true) else 0:.3f} |")


if __name__ == "__main__":
    main()
