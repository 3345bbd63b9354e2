"""Threading with the Structure Generator: the network scores nodes against sequence positions,
and each traced chain is read along its own order.

`thread_structgen` is the search stage of the ``"structgen"`` threader, the alternative to the
HMM profiles of `cryobuild.thread.search.thread_chains`: it returns one `ChainMatch` per chain
(plus overhangs) with an E-value, and the stages after the search (support, placement, copies,
joining, closure) are the same for both threaders (`cryobuild.thread.thread`).

1. **Scores.** For each sequence, the graph of the nodes of all chains (contact edges at the
   network's cutoff, the nodes' residue-type probabilities as scores) and the sequence go
   through the network: ``log p(node | position)`` ``[L, M]``, forward and backward readings
   averaged, long sequences read in overlapping windows (`sequence_log_probs`). As log-odds
   against picking one of the ``M`` nodes at random, floored at `SCORE_FLOOR`:
   ``S[t, v] = max(log p(v | t) + log M, SCORE_FLOOR)``. Positions already ``taken`` by
   accepted residues score `TAKEN_SCORE`, so that no alignment crosses them.
2. **Chain order.** A chain's residues ``c_0 .. c_{n-1}`` placed at offset ``d`` sit at
   positions ``d + i``; the best run of consecutive residues along that diagonal (the maximum
   sum of ``S[d + i, c_i]``) is the offset's score. The best offset over all sequences wins.
3. **Significance.** The same chain read against shuffles of each sequence (its composition, no
   order; `NULL_POSITIONS` positions in all) is its null: the best runs of all their offsets
   give a Gumbel by moments, and the E-value is the number of the chain's offsets times the
   chance of one scoring as high. Read against shuffles of their maps' sequences, the built
   chains of 11 real maps of 1.75-4.5 Å and 4 simulated ones (`python -m
   cryobuild.bench.evalues`: 1,180 readings of chains of at least 5 residues,
   `structgen_typed.pt`, 2026-12-05) scored E <= 0.1, 0.03, 0.01 and 0.001 in 11.7%, 4.0%,
   0.93% and 0.08% of the readings, where calibrated E-values give 9.5%, 3.0%, 1.0% and 0.1%
   (the HMM threader's search: 15.2%, 3.1%, 0.85%, 0.17%). With the chain's other offsets on
   the true sequence as the null instead (`structgen_soft.pt`, a scratch check), 5.5% and
   0.43% at 0.03 and 0.001. A chain is threaded when its E-value is at most ``max_evalue``:
   its residues are numbered ``d + i`` along the stretch of untaken positions that holds the
   best run, and overhangs are cut off as by the HMM threader (`search.numbered_match`).

Why chain order: Li et al. read each position's node on its own (our first decoding: a
Hungarian assignment of nodes to positions, then links between consecutive positions' nodes).
On real maps at 1.75-3.2 Å the network's top node is right for few positions (0.17 of them in
Table I case (c)), and that decoding threaded 0-17 residues where the HMM threader threaded
150-236. The right node's probability is raised all along a chain, though, and a traced chain
(`cryobuild.chains.link_chains`) says which nodes follow each other: summed along it, the
network's scores thread all 80 chains the HMM threader threads at E < 1e-5 in the rounds of
builds of six real maps, four simulated ones and the tests' il2 map, each on the HMM threader's
register (2026-12-05, `structgen_built.pt`; a scratch check on threading inputs captured from
those builds).
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
from .search import MAX_THREAD_EVALUE, numbered_match

__all__ = [
    "NULL_POSITIONS",
    "SCORE_FLOOR",
    "TAKEN_SCORE",
    "THREADING_CHECKPOINT",
    "ThreadOptions",
    "chain_offsets",
    "load_structgen",
    "thread_structgen",
]

#: nats: the lowest log-odds a node scores at a position. One node the network rules out (a
#: false detection, a misread type) costs a chain at most this much instead of vetoing it.
SCORE_FLOOR = -3.0
#: nats: the score of a position already taken by accepted residues; no run crosses it.
TAKEN_SCORE = -1e6
#: Sequence positions (summed over shuffles of all the sequences) whose scores are a chain's
#: null (step 3): each sequence is shuffled ``ceil(NULL_POSITIONS / total length)`` times, so
#: a small protein's null has enough offsets and a large complex's costs one network pass per
#: sequence.
NULL_POSITIONS = 1000
#: Fewest offsets in a chain's null; with fewer, the chain stays unthreaded.
MIN_NULL = 8
#: The checkpoint the threader loads by default: the Structure Generator trained half on inputs
#: like a build's (soft scores, Cα error, missing Cα, false detections) and half on builds' own
#: (the graph network's types on detected Cα of simulated training maps), then resumed with the
#: nodes' own log scores of each position's type added to its logits
#: (`StructGenConfig.type_log_odds`; `weights/MANIFEST.md`). `structgen.pt`, trained on the
#: paper's peaked scores, reproduces Table I. Of the 33 chains of at least 10 residues the HMM
#: threader threaded in the last rounds of six real maps at 1.75-4 Å, `structgen.pt` put 21 on
#: its register and `structgen_soft.pt` 31, with best runs about three times as high
#: (2026-12-05; scratch checks on captured threading inputs). Against shuffles and the true sequences
#: (`bench.evalues`, step 3), `structgen_typed.pt` threads 23.1% of the true readings at E <=
#: 0.001 and `structgen_built.pt`, the network it was resumed from without the type scores,
#: 18.3% (the HMM threader's search 23.7%).
THREADING_CHECKPOINT = "structgen_typed"


@dataclasses.dataclass(frozen=True)
class ThreadOptions:
    """Settings of `thread_structgen`.

    Attributes
    ----------
    window, overlap : int
        LSTM windows for long sequences (positions).
    chunk : int
        Positions scored at once (bounds the network's ``[chunk, M, D]`` intermediate).
    """

    window: int = 500
    overlap: int = 100
    chunk: int = 32

    def __post_init__(self):
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1: {self}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"need 0 <= overlap < window, got {self.overlap} and {self.window}")


def load_structgen(
    checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> StructureGenerator:
    """The Structure Generator of a checkpoint (default: `THREADING_CHECKPOINT` in
    ``weights/``), in eval mode on ``device`` (via `resolve_device`)."""
    state = load_checkpoint(checkpoint if checkpoint is not None
                            else checkpoint_path(THREADING_CHECKPOINT))
    network = StructureGenerator(config_from_dict(state["config"]))
    network.load_state_dict(state["model"])
    return network.to(resolve_device(device)).eval()


def chain_offsets(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best run of each diagonal of one chain's scores (step 2 of the module docstring).

    Parameters
    ----------
    scores : ``[L, n]``
        ``S[t, c_i]``: the chain's ``n`` residues (columns, N -> C) at the ``L`` positions.

    Returns
    -------
    offsets : int64 ``[L + n - 1]``
        Every offset ``d`` at which the chain overlaps the sequence, ``-(n - 1) .. L - 1``.
    best : float64 ``[L + n - 1]``
        The largest sum of ``S[d + i, c_i]`` over a run of consecutive ``i`` (at least one).
    runs : int64 ``[L + n - 1, 2]``
        That run's first and last ``i``.
    """
    length, n = scores.shape
    offsets = np.arange(-(n - 1), length)
    # [K, n] positions of each residue at each offset; outside the sequence a run cannot go
    positions = offsets[:, None] + np.arange(n)[None]
    inside = (positions >= 0) & (positions < length)
    diagonal = np.where(inside, scores[np.clip(positions, 0, length - 1), np.arange(n)[None]],
                        TAKEN_SCORE)
    # best run ending at i = prefix[i + 1] - min(prefix[0 .. i])
    prefix = np.concatenate([np.zeros((len(offsets), 1)), np.cumsum(diagonal, axis=1)], axis=1)
    lowest = np.minimum.accumulate(prefix[:, :-1], axis=1)
    gain = prefix[:, 1:] - lowest
    last = np.argmax(gain, axis=1)
    rows = np.arange(len(offsets))
    # the run starts after the lowest prefix up to its end
    beyond = np.arange(n + 1)[None] > last[:, None]
    first = np.argmin(np.where(beyond, np.inf, prefix), axis=1)
    return offsets, gain[rows, last], np.stack([first, last], axis=1)


def _evalue(score: float, null: np.ndarray, offsets_total: int) -> float:
    """E-value of a chain's best run ``score`` given its ``null`` runs (step 3)."""
    null = null[null > TAKEN_SCORE / 2]
    if len(null) < MIN_NULL or null.std() == 0:
        return math.inf
    beta = float(null.std()) * math.sqrt(6) / math.pi
    location = float(null.mean()) - np.euler_gamma * beta
    tail = -math.expm1(-math.exp(-(score - location) / beta))
    return tail * offsets_total


def _numbered_positions(offset: int, run: np.ndarray, n: int, free: np.ndarray) -> np.ndarray:
    """Position of each of a chain's ``n`` residues at ``offset``, along the stretch of
    ``free`` positions that holds the residues of ``run`` (first, last); -1 elsewhere."""
    positions = offset + np.arange(n)
    usable = (positions >= 0) & (positions < len(free))
    usable[usable] = free[positions[usable]]
    # the stretch of usable residues around the run
    first, last = int(run[0]), int(run[1])
    while first > 0 and usable[first - 1]:
        first -= 1
    while last < n - 1 and usable[last + 1]:
        last += 1
    numbered = np.full(n, -1, dtype=np.int64)
    numbered[first:last + 1] = positions[first:last + 1]
    return numbered


def thread_structgen(
    chains: list[np.ndarray],
    aa_probs: np.ndarray,
    ca: np.ndarray,
    sequences: list[Sequence],
    network: StructureGenerator,
    options: ThreadOptions = ThreadOptions(),
    *,
    taken: list[np.ndarray] | None = None,
    max_evalue: float = MAX_THREAD_EVALUE,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ChainMatch]:
    """Assign each chain to the sequence stretch the Structure Generator reads it on best.

    Parameters
    ----------
    chains : list of int ``[L_c]``
        Node indices of each chain in N -> C order (`cryobuild.chains.link_chains`). No node
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
    taken : list of bool ``[len(sequences[s])]``, optional
        Positions already held by accepted residues; no chain is numbered on them.
    max_evalue : float
        Chains whose best offset has a larger E-value stay unthreaded.
    progress, cancel
        Progress callback (stage ``"thread"``) and cancel token, checked once per sequence.

    Returns
    -------
    list of ChainMatch
        One per chain in the order of ``chains``, then the overhangs cut off, each threaded
        on its own as the HMM threader does (`search.numbered_match`). Scores are the best
        run's, in bits. Chains are independent, as the HMM threader's: two may take the same
        positions (`copies.assign_copies` keeps them apart as copies).
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
    if not len(pool):
        return []
    column = np.full(len(aa_probs), -1, dtype=np.int64)
    column[pool] = np.arange(len(pool))
    graph = NodeGraph.from_nodes(aa_probs[pool], ca[pool], network.config.contact_distance)
    free = [np.ones(len(s), dtype=bool) if taken is None else ~np.asarray(taken[k], dtype=bool)
            for k, s in enumerate(sequences)]
    shuffle_rng = np.random.default_rng(0)

    def odds(aatype: np.ndarray, free: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            log_probs = sequence_log_probs(network, graph, aatype, window=options.window,
                                           overlap=options.overlap, chunk=options.chunk)
        values = np.maximum(log_probs.cpu().numpy().astype(np.float64) + math.log(len(pool)),
                            SCORE_FLOOR)
        values[~free] = TAKEN_SCORE
        return values

    # [L_s, M] per sequence, and per shuffle of each
    shuffles = math.ceil(NULL_POSITIONS / sum(len(sequence) for sequence in sequences))
    scores, shuffled = [], []
    for index, sequence in enumerate(sequences):
        check_cancel(cancel)
        report(progress, "thread", index / len(sequences), f"sequence {index + 1}")
        scores.append(odds(sequence.aatype, free[index]))
        shuffled.extend(odds(shuffle_rng.permutation(sequence.aatype), free[index])
                        for _ in range(shuffles))
    report(progress, "thread", 1.0)

    matches = []
    queue = list(chains)
    while queue:
        chain = queue.pop(0)
        per_sequence = [chain_offsets(values[:, column[chain]]) for values in scores]
        best = np.concatenate([b for _, b, _ in per_sequence])
        winner = int(np.argmax(best))
        # the winner's sequence and its row there
        sizes = np.cumsum([len(b) for _, b, _ in per_sequence])
        index = int(np.searchsorted(sizes, winner, side="right"))
        row = winner - (int(sizes[index - 1]) if index else 0)
        null = np.concatenate([chain_offsets(values[:, column[chain]])[1] for values in shuffled])
        evalue = _evalue(float(best[winner]), null, len(best))
        score = float(best[winner]) / math.log(2)
        if evalue > max_evalue or score <= 0:
            matches.append(ChainMatch.unthreaded(chain, aa_probs, score, evalue))
            continue
        offsets, _, runs = per_sequence[index]
        positions = _numbered_positions(int(offsets[row]), runs[row], len(chain), free[index])
        match, overhangs = numbered_match(chain, positions, aa_probs, sequences[index].aatype,
                                          index, 0, score, evalue)
        matches.append(match)
        queue.extend(overhangs)
    return matches
