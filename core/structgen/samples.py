"""Simulated inputs for training and benchmarking the Structure Generator (Li et al. 2021, §III-B).

A sample is one chain of a deposited structure: its true Cα contact map, simulated residue-type
scores, and dummy (false-positive) nodes up to `SampleOptions.num_nodes`, all shuffled.

* **Scores** (`simulate_scores`): ``s_i = |N(0, sigma)|`` for the wrong types and ``s_j = 1 -
  sum(s_i)`` on the type ``j`` (paper: sigma = 0.01; read as the standard deviation, since with
  a variance of 0.01 the 19 wrong scores would already sum to about 1.5). With probability
  ``wrong_fraction`` a node's ``j`` is a random other type (a misclassified residue). Stage 2 of
  training raises both as a stand-in for the graph network's real residue-type probabilities.
  Those are soft, not peaked (on real maps at 3.5-4.5 Å the top type is right for about a
  quarter of the nodes at a mean top probability near 0.3; `cryobuild.bench.calibration`), so
  ``margin`` replaces the peaks with ``softmax(z + m_i onehot(j))``, ``z ~ N(0, 1)`` per type,
  ``m_i = m + N(0, 1)`` per node and ``m`` uniform in ``margin`` per sample: a margin of 1, 2,
  3, 4 puts the top score on the true type for about 30%, 55%, 78% and 92% of the nodes.
  Residues of unknown type (``X``) get a random type.
* **Dummy nodes** (paper: "(500 - n) dummy nodes with random edges"): their types are drawn
  from the chain's own composition (so type frequencies do not tell them apart) and their edges
  join random pairs of dummy nodes, as many per node as the real nodes have, so the degree does
  not tell them apart either.
* **Cα error** (``ca_noise``): N(0, ca_noise) Å per axis on the real Cα before the contact map
  is made, as on detected Cα (consecutive Cα then fall beyond the cutoff now and then).
* **Decoy nodes near the chain** (``decoy_fraction``): false detections of a build lie on
  side-chain density, 2-4 Å from a Cα, and share contact edges with the chain (unlike dummy
  nodes); that many per real node are put at a random direction 2-4 Å from random Cα, with
  types drawn from the chain's composition.
* **Missing Cα** (``missing_fraction``): as in the paper's ProteinNet test, a residue whose Cα is
  unknown keeps its node and score but loses all its edges.
* **Long chains** are cropped: the targets are a window of at most ``max_length`` positions, the
  real nodes a stretch of the chain around it of at most ``num_nodes - min_dummies`` residues
  (the rest of the chain is a realistic distractor, as at inference).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..models import read_model
from ..residues import NUM_AA
from .graph import NodeGraph, ThreadingSample, contact_edges

__all__ = [
    "ChainRecord",
    "SampleOptions",
    "ScoreNoise",
    "make_sample",
    "read_chains",
    "simulate_scores",
]


@dataclasses.dataclass(frozen=True)
class ScoreNoise:
    """sigma: standard deviation of the wrong types' scores; wrong_fraction: fraction of nodes
    whose score peak is on a random wrong type; margin: range of the soft scores' logit margin
    (None: peaked scores; see the module docstring)."""

    sigma: float = 0.01
    wrong_fraction: float = 0.0
    margin: tuple[float, float] | None = None

    def __post_init__(self):
        if self.sigma < 0 or not 0 <= self.wrong_fraction <= 1:
            raise ValueError(f"need sigma >= 0 and wrong_fraction in 0..1, got {self}")
        if self.margin is not None and not 0 <= self.margin[0] <= self.margin[1]:
            raise ValueError(f"need 0 <= margin[0] <= margin[1], got {self.margin}")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """num_nodes: nodes per graph, real + dummy (paper: 500); max_length: longest window of
    target positions; min_dummies: dummy nodes kept even beside long chains; ca_noise: Å per
    axis on the real Cα; missing_fraction: residues whose Cα (edges) are missing;
    decoy_fraction: decoy nodes near the chain per real node; noise: the score simulation."""

    num_nodes: int = 500
    max_length: int = 300
    min_dummies: int = 100
    ca_noise: float = 0.0
    missing_fraction: float = 0.0
    decoy_fraction: float = 0.0
    noise: ScoreNoise = ScoreNoise()

    def __post_init__(self):
        if not 0 < self.max_length <= self.num_nodes - self.min_dummies or self.min_dummies < 0:
            raise ValueError(f"need 0 < max_length <= num_nodes - min_dummies, got {self}")
        if self.ca_noise < 0 or not 0 <= self.missing_fraction < 1 or self.decoy_fraction < 0:
            raise ValueError("need ca_noise >= 0, missing_fraction in [0, 1) and decoy_fraction >= 0, "
                             f"got {self}")


@dataclasses.dataclass(frozen=True, eq=False)
class ChainRecord:
    """One modelled chain: ``name`` (file stem and chain), ``ca`` float64 ``[n, 3]`` Å,
    ``aatype`` int64 ``[n]`` (0..20), in N -> C order of the modelled residues."""

    name: str
    ca: np.ndarray
    aatype: np.ndarray


def read_chains(path, min_length: int = 1) -> list[ChainRecord]:
    """The chains of a structure file with at least ``min_length`` modelled residues."""
    model = read_model(path)
    chains = []
    for chain in model.chains():
        selected = model.chain_id == chain
        if selected.sum() >= min_length:
            name = f"{Path(path).name.split('.', 1)[0]}:{chain}"
            chains.append(ChainRecord(name, model.ca[selected].astype(np.float64), model.aatype[selected]))
    return chains


def simulate_scores(aatype: np.ndarray, noise: ScoreNoise, rng: np.random.Generator) -> np.ndarray:
    """Simulated residue-type scores ``[M, 20]`` (float32) for true types ``aatype [M]`` (0..20)."""
    num = len(aatype)
    peak = np.where(aatype >= NUM_AA, rng.integers(0, NUM_AA, num), aatype)
    wrong = rng.random(num) < noise.wrong_fraction
    # a different type: shift by 1..19
    peak = np.where(wrong, (peak + rng.integers(1, NUM_AA, num)) % NUM_AA, peak)
    if noise.margin is not None:
        logits = rng.normal(0.0, 1.0, (num, NUM_AA))
        logits[np.arange(num), peak] += rng.uniform(*noise.margin) + rng.normal(0.0, 1.0, num)
        scores = np.exp(logits - logits.max(1, keepdims=True))
        return (scores / scores.sum(1, keepdims=True)).astype(np.float32)
    scores = np.abs(rng.normal(0.0, noise.sigma, (num, NUM_AA)))
    scores[np.arange(num), peak] = 0.0
    scores[np.arange(num), peak] = np.maximum(1.0 - scores.sum(1), 0.0)
    return (scores / scores.sum(1, keepdims=True)).astype(np.float32)


def _dummy_edges(first: int, count: int, num_edges: int, rng: np.random.Generator) -> np.ndarray:
    """``num_edges`` distinct random edges ``[2, E]`` among nodes ``first .. first + count - 1``."""
    if count < 2 or num_edges == 0:
        return np.zeros((2, 0), dtype=np.int64)
    pairs = rng.integers(0, count, (2 * num_edges, 2))
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    pairs = pairs[rng.permutation(len(pairs))[:num_edges]]
    return first + pairs.T


def make_sample(
    chain: ChainRecord, options: SampleOptions, rng: np.random.Generator, contact_distance: float
) -> ThreadingSample:
    """A shuffled graph of ``chain`` (cropped when long) and dummy nodes, with its targets.

    Parameters
    ----------
    chain : ChainRecord
        ``n`` modelled residues.
    options : SampleOptions
    rng : numpy.random.Generator
    contact_distance : float
        Å, the network's edge cutoff.

    Returns
    -------
    ThreadingSample
        ``max(num_nodes, n')`` nodes where ``n'`` is the stretch of the chain used; a sequence of
        ``min(n, max_length)`` positions, each with its node as target.
    """
    n = len(chain.aatype)
    length = min(n, options.max_length)
    window_start = int(rng.integers(0, n - length + 1))
    span = min(n, options.num_nodes - options.min_dummies) if n > length else n
    # the real nodes: a stretch of `span` residues containing the window
    lowest = max(0, window_start + length - span)
    highest = min(window_start, n - span)
    stretch_start = int(rng.integers(lowest, highest + 1))
    residues = np.arange(stretch_start, stretch_start + span)

    ca = chain.ca[residues] + rng.normal(0.0, options.ca_noise, (span, 3))
    num_decoys = int(round(options.decoy_fraction * span))
    decoys = np.zeros((0, 3))
    if num_decoys:
        direction = rng.normal(size=(num_decoys, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        decoys = ca[rng.integers(0, span, num_decoys)] + direction * rng.uniform(2.0, 4.0, (num_decoys, 1))
    placed = span + num_decoys
    real_edges = contact_edges(np.concatenate([ca, decoys]), contact_distance)
    missing = np.concatenate([rng.random(span) < options.missing_fraction, np.zeros(num_decoys, bool)])
    real_edges = real_edges[:, ~(missing[real_edges[0]] | missing[real_edges[1]])]
    num_dummies = max(options.num_nodes - placed, 0)
    edges_per_node = real_edges.shape[1] / max(placed, 1)
    dummy_edges = _dummy_edges(placed, num_dummies, round(edges_per_node * num_dummies), rng)
    others = rng.choice(chain.aatype[residues], num_decoys + num_dummies)
    types = np.concatenate([chain.aatype[residues], others])
    graph = NodeGraph(simulate_scores(types, options.noise, rng), np.concatenate([real_edges, dummy_edges], 1))

    new_index = rng.permutation(graph.num_nodes)
    target = new_index[np.arange(window_start, window_start + length) - stretch_start]
    return ThreadingSample(graph.relabelled(new_index), chain.aatype[window_start : window_start + length], target)
