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
* ``gnn`` (with ``--gnn-probs``): the graph network's real residue-type probabilities on
  *detected* Cα (the paper's RotamerNet row). For ``--gnn-structures`` held-out structures
  (`cryobuild.bench.gnn.simulated_cases`: 3.0 Å maps at SNR 3) the detector finds the Cα and
  the graph network refines them for 3 recycling rounds (the build's round count; the build
  threads between its rounds, here no threader's output feeds back:
  `cryobuild.bench.gnn.detected_refinement`); the nodes are those the build hands its threader
  (existent, duplicates removed: `cryobuild.chains.remove_duplicates`) with their refined Cα
  and residue-type probabilities; contact edges from the refined Cα at each network's cutoff.
  Nodes and reference residues are paired one-to-one within 3 Å (`node_targets`); one sample
  per reference chain of at least `MIN_CHAIN_LENGTH` residues, all chains sharing the map's
  graph (the other chains and false detections are the distractors, no dummies). **Positions
  without a matched node are excluded** from the accuracy (target -1: no node is right for
  them); ``matched`` in the JSON lines is the mean fraction of positions that have a node, so
  about ``accuracy * matched`` is the figure with those positions counted as wrong.

Inference modes: ``forward`` (N -> C reading only) and ``ensemble`` (forward and backward
log-probabilities averaged; needs a network trained with ``direction="both"``). (The threader
reads the network's scores along traced chains instead, `cryobuild.thread.structgen`; its
figures are whole builds', ``bench.real`` / ``bench.build --threader structgen``.) Accuracy (eq. 2): the
fraction of positions whose selected node is the true node, averaged over chains. One JSON line
per dataset and checkpoint, then a Markdown table (Table I's layout): one row per dataset, a
``forward`` and an ``ensemble`` column per checkpoint.
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
from ..evaluate import CA_MATCH_CUTOFF, match_calpha
from ..models import BuiltModel
from ..residues import BACKBONE_NAMES
from ..structgen.graph import NodeGraph, ThreadingSample
from ..structgen.model import StructureGenerator, sequence_log_probs
from ..structgen.samples import (
    ChainRecord,
    SampleOptions,
    ScoreNoise,
    make_sample,
    read_chains,
)
from ..thread.structgen import ThreadOptions, load_structgen

__all__ = [
    "MISSING_FRACTION",
    "BuildNodes",
    "benchmark",
    "build_nodes",
    "chain_accuracies",
    "detected_samples",
    "main",
    "markdown_table",
    "node_targets",
    "paper_samples",
    "validation_chains",
]

#: Fraction of Cα made unknown in the ``missing`` dataset.
MISSING_FRACTION = 0.05
#: Shortest validation chain used (the paper's sequences are 50-450 residues).
MIN_CHAIN_LENGTH = 20
#: Resolution (Å) of the simulated maps of the ``gnn`` dataset.
GNN_MAP_RESOLUTION = 3.0
#: Inference modes, the Markdown table's columns per checkpoint.
_INFERENCE = ("forward", "ensemble")
_CA = BACKBONE_NAMES.index("CA")


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


@dataclasses.dataclass(frozen=True, eq=False)
class BuildNodes:
    """The nodes a build hands its threader on one map, and the reference they are scored by.

    Attributes
    ----------
    name : str
    aa_probs : float32 ``[M, 20]``
        The graph network's residue-type probabilities.
    ca : float32 ``[M, 3]``
        Refined Cα positions, Å.
    reference : BuiltModel
        The deposited model, in the map's frame.
    """

    name: str
    aa_probs: np.ndarray
    ca: np.ndarray
    reference: BuiltModel


def build_nodes(case, gnn, detector, *, rounds: int = 3, device=None) -> BuildNodes:
    """Detect and refine the Cα of a `cryobuild.bench.gnn.BenchCase` and keep the nodes the
    build threads (existence at least `cryobuild.chains.MIN_EXISTENCE`, duplicates removed)."""
    from ..chains import remove_duplicates
    from ..pipeline import residue_predictions
    from .gnn import detected_refinement

    output, _, _ = detected_refinement(case, gnn, detector, rounds=rounds, device=device)
    kept = remove_duplicates(residue_predictions(output))
    return BuildNodes(case.name, output.aa_probs[kept], output.translations[kept], case.reference)


def node_targets(node_ca: np.ndarray, reference_ca: np.ndarray, has_ca: np.ndarray) -> np.ndarray:
    """The true node of each reference residue.

    Nodes and reference residues with a Cα are paired one-to-one within `CA_MATCH_CUTOFF`
    (3 Å) by `cryobuild.evaluate.match_calpha` (as many pairs as possible, then the smallest
    summed distance).

    Parameters
    ----------
    node_ca : ``[M, 3]``
        Node Cα positions, Å.
    reference_ca : ``[R, 3]``
        Reference Cα positions, Å (rows without a Cα are ignored).
    has_ca : bool ``[R]``
        Which reference residues have a Cα.

    Returns
    -------
    int64 ``[R]``
        The matched node of each residue, -1 where none is.
    """
    residues = np.flatnonzero(has_ca)
    node_index, matched = match_calpha(node_ca, np.asarray(reference_ca)[residues], cutoff=CA_MATCH_CUTOFF)
    target = np.full(len(has_ca), -1, dtype=np.int64)
    target[residues[matched]] = node_index
    return target


def detected_samples(maps: list[BuildNodes], contact_distance: float) -> list[ThreadingSample]:
    """The ``gnn`` dataset: per map the graph of its nodes (edges at ``contact_distance`` Å
    between refined Cα) and one sample per reference chain of at least `MIN_CHAIN_LENGTH`
    residues with at least one matched node; targets from `node_targets`."""
    samples = []
    for nodes in maps:
        reference = nodes.reference
        graph = NodeGraph.from_nodes(nodes.aa_probs, nodes.ca, contact_distance)
        target = node_targets(nodes.ca, reference.ca, reference.atom_mask[:, _CA])
        for chain in reference.chains():
            residues = np.flatnonzero(reference.chain_id == chain)
            if len(residues) >= MIN_CHAIN_LENGTH and np.any(target[residues] >= 0):
                samples.append(ThreadingSample(graph, reference.aatype[residues], target[residues]))
    return samples


def chain_accuracies(network: StructureGenerator, sample: ThreadingSample, options: ThreadOptions) -> dict[str, float]:
    """Accuracy of one sample per inference mode (``forward``, and with a network that reads both
    ways ``ensemble``; otherwise that uses the network's own direction)."""
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
    picks = {"forward": forward.argmax(1), "ensemble": ensemble.argmax(1)}
    return {mode: float(np.mean(pick[present] == sample.target[present])) for mode, pick in picks.items()}


def benchmark(network: StructureGenerator, samples: list[ThreadingSample], options: ThreadOptions) -> dict[str, float]:
    """Eq. 2: per-chain accuracies averaged over ``samples``, per inference mode, and
    ``matched``: the mean fraction of positions that have a true node."""
    network.eval()
    rows = [chain_accuracies(network, sample, options) for sample in samples]
    result = {mode: round(float(np.mean([row[mode] for row in rows])), 4) for mode in _INFERENCE}
    result["matched"] = round(float(np.mean([np.mean(sample.target >= 0) for sample in samples])), 4)
    return result


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
    parser.add_argument("--score-margin", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="soft scores: range of the true type's logit margin (samples.ScoreNoise)")
    parser.add_argument("--gnn-probs", action="store_true",
                        help="add the 'gnn' dataset (needs weights/detect.pt and weights/gnn.pt)")
    parser.add_argument("--gnn-checkpoint", type=Path, default=None, help="default: weights/gnn.pt")
    parser.add_argument("--gnn-structures", type=int, default=6,
                        help="held-out structures simulated for the 'gnn' dataset")
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
    noise = ScoreNoise(args.score_sigma, args.wrong_fraction,
                         tuple(args.score_margin) if args.score_margin else None)
    maps = []
    if args.gnn_probs:
        from ..detect.network import load_detector
        from ..gnn.refine import load_gnn
        from .gnn import simulated_cases

        gnn, detector = load_gnn(args.gnn_checkpoint), load_detector()
        for case in simulated_cases(args.gnn_structures, GNN_MAP_RESOLUTION, args.seed):
            maps.append(build_nodes(case, gnn, detector))
            print(json.dumps({"gnn_map": case.name, "nodes": len(maps[-1].ca),
                              "residues": int(case.reference.num_residues)}), flush=True)
    options = ThreadOptions()
    table: dict[str, dict[tuple[str, str], float]] = {}
    for label, network in networks.items():
        distance = network.config.contact_distance
        datasets = {
            "simulated": paper_samples(chains, SampleOptions(noise=noise), distance, args.seed),
            "missing": paper_samples(
                chains, SampleOptions(noise=noise, missing_fraction=args.missing), distance, args.seed),
        }
        if maps:
            datasets["gnn"] = detected_samples(maps, distance)
        for dataset, samples in datasets.items():
            result = benchmark(network, samples, options)
            print(json.dumps({"checkpoint": label, "dataset": dataset, "chains": len(samples), **result}), flush=True)
            for mode in _INFERENCE:
                table.setdefault(dataset, {})[label, mode] = result[mode]
    print(markdown_table(table, list(networks)))


def markdown_table(table: dict[str, dict[tuple[str, str], float]], labels: list[str]) -> str:
    """Table I's layout: a row per dataset, a ``forward`` and an ``ensemble`` column per
    checkpoint label; ``table[dataset][label, mode]`` is an accuracy."""
    columns = [(label, mode) for label in labels for mode in _INFERENCE]
    lines = ["", "| dataset | " + " | ".join(f"{label} {mode}" for label, mode in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for dataset, row in table.items():
        lines.append(f"| {dataset} | " + " | ".join(f"{row[column]:.3f}" for column in columns) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
