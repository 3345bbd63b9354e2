"""Benchmark the Structure Generator (Table I of Li et al. 2021): ``python -m cryobuild.bench.structgen``.

``--checkpoint LABEL=PATH ...`` takes one checkpoint per column (one network per number of GCN
layers ``T``, e.g. ``--checkpoint T=0=weights/structgen_t0.pt T=2=weights/structgen.pt``; a bare
PATH is labelled ``T=<its gcn_layers>``). The held-out chains are the validation split (no
sequence related to a training chain, see `cryobuild.data`); each chain is one sample of the
paper's protocol: all its residues, ``500 - n`` dummy nodes (none beyond 500 residues), simulated
scores, nodes shuffled (`cryobuild.structgen.samples`). Datasets (rows):

* ``simulated``: perfect contact maps (the paper's UniRef50 row);
* ``missing``: the same with ``--missing`` (5%) of the Cα unknown: those nodes lose their edges
  (the paper's ProteinNet row);
* ``gnn`` (with ``--gnn-probs``): the trained graph network's residue-type probabilities and
  refined Cα on simulated maps (the paper's RotamerNet row); all residues of the structure are
  nodes (the other chains are the distractors, no dummies), contact edges from the refined Cα.

Inference (sub-rows): ``forward`` (N -> C reading only), ``ensemble`` (forward and backward
log-probabilities averaged; needs a network trained with ``direction="both"``), and
``assigned`` (the ensemble through the threader's one-node-per-position assignment,
`cryobuild.structgen.thread.assign_positions`, as the pipeline uses it). Accuracy (eq. 2): the
fraction of positions whose selected node is the true node, averaged over chains. One JSON line
per dataset and checkpoint, then a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import checkpoint_path
from ..data import default_split
from ..structgen.graph import NodeGraph, ThreadingSample
from ..structgen.model import StructureGenerator, sequence_log_probs
from ..structgen.samples import (
    ChainRecord,
    SampleOptions,
    ScoreNoise,
    make_sample,
    read_chains,
)
from ..structgen.thread import ThreadOptions, assign_positions, load_structgen

__all__ = [
    "MISSING_FRACTION",
    "benchmark",
    "chain_accuracies",
    "gnn_samples",
    "main",
    "paper_samples",
    "validation_chains",
]

#: Fraction of Cα made unknown in the ``missing`` dataset.
MISSING_FRACTION = 0.05
#: Shortest validation chain used (the paper's sequences are 50-450 residues).
MIN_CHAIN_LENGTH = 20
#: Resolution (Å) of the simulated maps of the ``gnn`` dataset.
GNN_MAP_RESOLUTION = 3.0
_INFERENCE = ("forward", "ensemble", "assigned")


def validation_chains(count: int | None = None) -> list[ChainRecord]:
    """The validation split's chains of at least `MIN_CHAIN_LENGTH` residues, distinct
    sequences only, in split order; the first ``count`` (all when None)."""
    chains, seen = [], set()
    for record in default_split()["validation"]:
        for chain in read_chains(record.path, MIN_CHAIN_LENGTH):
            key = chain.aatype.tobytes()
            if key not in seen:
                seen.add(key)
                chains.append(chain)
    return chains[:count]


def paper_samples(
    chains: list[ChainRecord], options: SampleOptions, contact_distance: float, seed: int
) -> list[ThreadingSample]:
    """One whole-chain sample per chain: ``max(num_nodes - n, 0)`` dummy nodes (no cropping)."""
    rng = np.random.default_rng(seed)
    samples = []
    for chain in chains:
        n = len(chain.aatype)
        whole = dataclasses.replace(options, max_length=n, num_nodes=max(options.num_nodes, n), min_dummies=0)
        samples.append(make_sample(chain, whole, rng, contact_distance))
    return samples


def gnn_samples(records, gnn, contact_distance: float, seed: int) -> list[ThreadingSample]:
    """Samples from the graph network's outputs on simulated maps (the ``gnn`` dataset).

    Parameters
    ----------
    records : list of StructureRecord
        Structures to simulate (`GNN_MAP_RESOLUTION`, SNR of `cryobuild.bench.gnn`).
    gnn : cryobuild.gnn.GraphNetwork
        The trained graph network (`cryobuild.gnn.load_gnn`), refining 3 rounds from the
        reference Cα plus noise (`cryobuild.bench.gnn.noisy_start`); node ``i`` is residue ``i``.
    contact_distance : float
        Å, the Structure Generator's edge cutoff, applied to the refined Cα.
    seed : int

    Returns
    -------
    list of ThreadingSample
        One per chain of at least `MIN_CHAIN_LENGTH` residues, all sharing their structure's graph.
    """
    from ..data import read_structure
    from ..gnn.refine import refine
    from ..models import read_model
    from ..simulate import SimulationOptions, simulate_map
    from .gnn import SIMULATED_SNR, noisy_start

    rng = np.random.default_rng(seed)
    samples = []
    for record in records:
        reference = read_model(record.path)
        density = simulate_map(
            read_structure(record.path), SimulationOptions(resolution=GNN_MAP_RESOLUTION, snr=SIMULATED_SNR), rng
        )
        output = refine(density, noisy_start(reference, rng), list(dict.fromkeys(record.sequences)), gnn, rounds=3)
        graph = NodeGraph.from_nodes(output.aa_probs, output.translations, contact_distance)
        for chain in reference.chains():
            nodes = np.flatnonzero(reference.chain_id == chain)
            if len(nodes) >= MIN_CHAIN_LENGTH:
                samples.append(ThreadingSample(graph, reference.aatype[nodes], nodes))
    return samples


def chain_accuracies(network: StructureGenerator, sample: ThreadingSample, options: ThreadOptions) -> dict[str, float]:
    """Accuracy of one sample per inference mode (``forward``, and with a network that reads both
    ways ``ensemble`` and ``assigned``; otherwise those use the network's own direction)."""
    present = sample.target >= 0
    own = network.config.directions
    reading = {"forward": ("forward",) if "forward" in own else own, "ensemble": own}
    log_probs = {}
    with torch.inference_mode():
        for mode, directions in reading.items():
            log_probs[mode] = sequence_log_probs(
                network, sample.graph, sample.sequence, directions=directions, window=options.window,
                overlap=options.overlap, chunk=options.chunk,
            ).cpu().numpy()
    forward, ensemble = log_probs["forward"], log_probs["ensemble"]
    assigned = assign_positions(ensemble, dataclasses.replace(options, min_probability=0.0))
    picks = {"forward": forward.argmax(1), "ensemble": ensemble.argmax(1), "assigned": assigned}
    return {mode: float(np.mean(pick[present] == sample.target[present])) for mode, pick in picks.items()}


def benchmark(network: StructureGenerator, samples: list[ThreadingSample], options: ThreadOptions) -> dict[str, float]:
    """Eq. 2: per-chain accuracies averaged over ``samples``, per inference mode."""
    network.eval()
    rows = [chain_accuracies(network, sample, options) for sample in samples]
    return {mode: round(float(np.mean([row[mode] for row in rows])), 4) for mode in _INFERENCE}


def _parse_checkpoint(text: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` (the label may itself contain ``=``, as in ``T=2=path``) or ``PATH``."""
    label, _, path = text.rpartition("=")
    return (label or None), Path(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", nargs="+", default=None, metavar="[LABEL=]PATH",
                        help="one network per column (default: weights/structgen.pt)")
    parser.add_argument("--chains", type=int, default=None, help="validation chains (default: all)")
    parser.add_argument("--missing", type=float, default=MISSING_FRACTION,
                        help="fraction of unknown Cα of the 'missing' dataset")
    parser.add_argument("--score-sigma", type=float, default=ScoreNoise().sigma,
                        help="wrong-type score noise of the simulated datasets")
    parser.add_argument("--wrong-fraction", type=float, default=ScoreNoise().wrong_fraction,
                        help="fraction of simulated nodes scored as a wrong type")
    parser.add_argument("--gnn-probs", action="store_true",
                        help="add the 'gnn' dataset (needs weights/gnn.pt, or --gnn-checkpoint)")
    parser.add_argument("--gnn-checkpoint", type=Path, default=None)
    parser.add_argument("--gnn-structures", type=int, default=10,
                        help="validation structures simulated for the 'gnn' dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    specs = [_parse_checkpoint(text) for text in args.checkpoint] if args.checkpoint else [
        (None, checkpoint_path("structgen"))]
    networks = {}
    for label, path in specs:
        network = load_structgen(path)
        label = label or f"T={network.config.gcn_layers}"
        if label in networks:
            parser.error(f"two checkpoints are labelled {label!r}: name them LABEL=PATH")
        networks[label] = network
    chains = validation_chains(args.chains)
    noise = ScoreNoise(args.score_sigma, args.wrong_fraction)
    gnn = None
    if args.gnn_probs:
        from ..gnn.refine import load_gnn

        gnn = load_gnn(args.gnn_checkpoint)
        records = default_split()["validation"][: args.gnn_structures]
    options = ThreadOptions()
    table: dict[tuple[str, str], dict[str, float]] = {}
    for label, network in networks.items():
        distance = network.config.contact_distance
        datasets = {
            "simulated": paper_samples(chains, SampleOptions(noise=noise), distance, args.seed),
            "missing": paper_samples(
                chains, SampleOptions(noise=noise, missing_fraction=args.missing), distance, args.seed),
        }
        if gnn is not None:
            datasets["gnn"] = gnn_samples(records, gnn, distance, args.seed)
        for dataset, samples in datasets.items():
            result = benchmark(network, samples, options)
            print(json.dumps({"checkpoint": label, "dataset": dataset, "chains": len(samples), **result}), flush=True)
            for mode, value in result.items():
                table.setdefault((dataset, mode), {})[label] = value
    labels = list(networks)
    print("\n| dataset | inference | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for (dataset, mode), row in table.items():
        print(f"| {dataset} | {mode} | " + " | ".join(f"{row[label]:.4f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
