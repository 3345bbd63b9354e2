"""Threading with the Structure Generator: order and label detected nodes along sequences.

`thread_structgen` is the alternative to the HMM threader (`cryobuild.thread.search.thread_chains`)
and returns the same `ChainMatch` objects. For each sequence copy:

1. the graph of the nodes not used yet (contact edges at the network's cutoff, the nodes'
   residue-type probabilities as scores) and the sequence go through the network: log
   ``p(node | position)`` ``[L, M]``, forward and backward passes averaged, sequences longer
   than `ThreadOptions.window` read by the LSTM in overlapping windows (`cryobuild.structgen.model.sequence_log_probs`);
2. each position gets a node, each node at most one position, maximising the summed
   log-probability (Hungarian assignment, `scipy.optimize.linear_sum_assignment`, over the
   `ThreadOptions.candidates` best nodes of each position); positions whose node has a
   probability below `ThreadOptions.min_probability` stay unassigned;
3. consecutive positions whose nodes are at most `ThreadOptions.link_distance` apart are linked;
   each run of linked positions of at least `ThreadOptions.min_segment` is a chain, numbered by
   its sequence positions (1-based);
4. the copy is accepted when its chains hold at least `ThreadOptions.min_residues` residues;
   their nodes are then used up.

Sequences take turns (one copy each per round, in input order) until no sequence finds another
copy, so homo-oligomers get as many copies as the nodes support, whether the input lists each
copy or each distinct sequence once. Nodes left over form unthreaded chains (runs of unused
nodes within the input chains). Scores are bits: ``sum log2(p * M)`` over a chain's residues,
the log-odds against picking among the ``M`` nodes at random; there is no E-value (NaN).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch

from ..checkpoints import checkpoint_path, load_checkpoint
from ..device import resolve_device
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..sequences import Sequence
from ..structgen.graph import NodeGraph
from ..structgen.model import StructureGenerator, config_from_dict, sequence_log_probs
from .matches import ChainMatch

__all__ = ["ThreadOptions", "assign_positions", "load_structgen", "thread_structgen"]


@dataclasses.dataclass(frozen=True)
class ThreadOptions:
    """Settings of `thread_structgen` (see the module docstring).

    Attributes
    ----------
    window, overlap : int
        LSTM windows for long sequences (positions).
    candidates : int
        Best nodes per position offered to the assignment.
    min_probability : float
        Assigned nodes less probable than this leave their position unassigned.
    link_distance : float
        Å, the longest Cα-Cα distance of consecutive residues (3.8 Å plus slack for detection
        error).
    min_segment : int
        Shortest chain kept (residues).
    min_residues : int
        Fewest residues (over its chains) for a sequence copy to be accepted.
    chunk : int
        Positions scored at once.
    """

    window: int = 500
    overlap: int = 100
    candidates: int = 8
    min_probability: float = 0.05
    link_distance: float = 4.2
    min_segment: int = 3
    min_residues: int = 10
    chunk: int = 32

    def __post_init__(self):
        if self.candidates < 1 or self.min_segment < 1 or self.min_residues < 1 or self.chunk < 1:
            raise ValueError(f"candidates, min_segment, min_residues and chunk must be >= 1: {self}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"need 0 <= overlap < window, got {self.overlap} and {self.window}")


def load_structgen(
    checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> StructureGenerator:
    """The Structure Generator of a checkpoint (default ``weights/structgen.pt``), in eval mode
    on ``device`` (via `resolve_device`)."""
    state = load_checkpoint(checkpoint if checkpoint is not None else checkpoint_path("structgen"))
    network = StructureGenerator(config_from_dict(state["config"]))
    network.load_state_dict(state["model"])
    return network.to(resolve_device(device)).eval()


def assign_positions(log_probs: np.ndarray, options: ThreadOptions) -> np.ndarray:
    """One node per position, each node used at most once (step 2 of the module docstring).

    Parameters
    ----------
    log_probs : ``[L, M]``
        ``log p(node | position)``.
    options : ThreadOptions

    Returns
    -------
    int64 ``[L]``
        The node of each position, -1 where unassigned.
    """
    from scipy.optimize import linear_sum_assignment

    log_probs = np.asarray(log_probs, dtype=np.float64)
    length, num = log_probs.shape
    keep = min(options.candidates, num)
    # [L, k] best nodes per position => the union of candidate columns
    best = np.argpartition(-log_probs, keep - 1, axis=1)[:, :keep]
    columns = np.unique(best)
    rows, picked = linear_sum_assignment(-log_probs[:, columns])
    nodes = np.full(length, -1, dtype=np.int64)
    nodes[rows] = columns[picked]
    confident = np.exp(log_probs[rows, columns[picked]]) >= options.min_probability
    nodes[rows[~confident]] = -1
    return nodes


def _segments(nodes: np.ndarray, ca: np.ndarray, options: ThreadOptions) -> list[np.ndarray]:
    """Runs of linked positions (step 3): int64 position arrays of at least ``min_segment``."""
    assigned = nodes >= 0
    gap = np.linalg.norm(ca[nodes[1:]] - ca[nodes[:-1]], axis=-1)
    linked = assigned[1:] & assigned[:-1] & (gap <= options.link_distance)
    # a new run starts at every assigned position not linked to the one before
    starts = np.flatnonzero(assigned & ~np.concatenate([[False], linked]))
    runs = []
    for start in starts:
        stop = start + 1
        while stop < len(nodes) and linked[stop - 1]:
            stop += 1
        if stop - start >= options.min_segment:
            runs.append(np.arange(start, stop))
    return runs


def _thread_copy(
    free: np.ndarray, aa_probs: np.ndarray, ca: np.ndarray, sequence: Sequence, index: int,
    network: StructureGenerator, options: ThreadOptions,
) -> list[ChainMatch]:
    """The chains of one copy of ``sequence`` among the ``free`` nodes (steps 1-3)."""
    graph = NodeGraph.from_nodes(aa_probs[free], ca[free], network.config.contact_distance)
    with torch.inference_mode():
        log_probs = sequence_log_probs(
            network, graph, sequence.aatype, window=options.window, overlap=options.overlap,
            chunk=options.chunk,
        ).cpu().numpy()
    local = assign_positions(log_probs, options)
    aatype = sequence.aatype
    matches = []
    for positions in _segments(local, ca[free], options):
        picked = log_probs[positions, local[positions]]
        bits = float(np.sum(picked + math.log(graph.num_nodes)) / math.log(2))
        matches.append(
            ChainMatch(
                nodes=free[local[positions]],
                sequence_index=index,
                residue_number=positions + 1,
                aatype=aatype[positions],
                score=bits,
                evalue=math.nan,
            )
        )
    return matches


def _leftovers(chains: list[np.ndarray], used: np.ndarray, aa_probs: np.ndarray) -> list[ChainMatch]:
    """Unthreaded chains: the runs of unused nodes of each input chain."""
    matches = []
    for chain in chains:
        free = ~used[chain]
        # boundaries of runs of free nodes
        edges = np.flatnonzero(np.diff(np.concatenate([[0], free.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            matches.append(ChainMatch.unthreaded(chain[start:stop], aa_probs))
    return matches


def thread_structgen(
    chains: list[np.ndarray],
    aa_probs: np.ndarray,
    ca: np.ndarray,
    sequences: list[Sequence],
    network: StructureGenerator,
    options: ThreadOptions = ThreadOptions(),
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ChainMatch]:
    """Thread the nodes of ``chains`` onto ``sequences`` with the Structure Generator.

    Parameters
    ----------
    chains : list of int ``[L_c]``
        Node indices to use, grouped in chains (`cryobuild.chains.link_chains`; the grouping
        only shapes the unthreaded leftovers, pass ``[np.arange(N)]`` for loose nodes). No node
        may appear twice.
    aa_probs : ``[N, 20]``
        Residue-type probabilities of all nodes.
    ca : ``[N, 3]``
        Cα positions of all nodes, Å.
    sequences : list of Sequence
        The input sequences (one record per chain copy or per distinct sequence).
    network : StructureGenerator
        In eval mode (`load_structgen`).
    options : ThreadOptions
    progress, cancel
        Progress callback (stage ``"thread"``) and cancel token, checked once per copy.

    Returns
    -------
    list of ChainMatch
        Threaded chains in the order they were found (sequence copies in turn, each copy's chains
        N -> C), then the unthreaded leftovers. Every node of ``chains`` is in exactly one.
    """
    if not sequences:
        raise ValueError("thread_structgen needs at least one sequence")
    aa_probs = np.asarray(aa_probs, dtype=np.float32)
    ca = np.asarray(ca, dtype=np.float64)
    if aa_probs.ndim != 2 or ca.shape != (len(aa_probs), 3):
        raise ValueError(f"need aa_probs [N, 20] and ca [N, 3], got {aa_probs.shape} and {ca.shape}")
    chains = [np.asarray(chain, dtype=np.int64).reshape(-1) for chain in chains]
    pool = np.concatenate(chains) if chains else np.zeros(0, dtype=np.int64)
    if len(np.unique(pool)) != len(pool):
        raise ValueError("a node appears in more than one chain (or twice in one)")
    used = np.zeros(len(aa_probs), dtype=bool)
    threaded = []
    active = list(range(len(sequences)))
    while active:
        finding = []
        for index in active:
            check_cancel(cancel)
            free = pool[~used[pool]]
            report(progress, "thread", 1.0 - len(free) / max(len(pool), 1), f"sequence {index + 1}")
            if len(free) < options.min_residues:
                break
            copy = _thread_copy(free, aa_probs, ca, sequences[index], index, network, options)
            if sum(len(match.nodes) for match in copy) < options.min_residues:
                continue
            for match in copy:
                used[match.nodes] = True
            threaded.extend(copy)
            finding.append(index)
        active = finding
    report(progress, "thread", 1.0)
    return threaded + _leftovers(chains, used, aa_probs)
