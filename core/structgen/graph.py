"""Node graphs for the Structure Generator (NumPy only): contact edges and threading samples.

A node is a candidate residue: a Cα position and a 20-d residue-type score vector. Two nodes are
joined by an undirected edge when their Cα are closer than the contact distance (Li et al. 2021,
§III-A; 4.0 Å, just above the 3.8 Å spacing of consecutive Cα, so the graph is mostly the chain
itself plus the odd close contact).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..residues import NUM_AA, UNK_INDEX

__all__ = ["CONTACT_DISTANCE", "NodeGraph", "ThreadingSample", "contact_edges"]

#: Å: nodes closer than this are joined by an edge (Li et al. 2021, §III-A).
CONTACT_DISTANCE = 4.0


def contact_edges(ca: np.ndarray, cutoff: float = CONTACT_DISTANCE) -> np.ndarray:
    """Undirected contact edges of Cα positions.

    Parameters
    ----------
    ca : ``[M, 3]``
        Node positions, Å.
    cutoff : float
        Nodes closer than this (Å) are joined.

    Returns
    -------
    int64 ``[2, E]``
        Each pair once, ``edges[0] < edges[1]``, sorted.
    """
    from scipy.spatial import cKDTree

    ca = np.asarray(ca, dtype=np.float64).reshape(-1, 3)
    pairs = cKDTree(ca).query_pairs(cutoff, output_type="ndarray") if len(ca) else np.zeros((0, 2))
    pairs = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return np.ascontiguousarray(pairs.T)


@dataclasses.dataclass(frozen=True, eq=False)
class NodeGraph:
    """The Structure Generator's input graph.

    Attributes
    ----------
    scores : float32 ``[M, 20]``
        Residue-type scores per node (``residues.AA_ORDER``), rows summing to about 1.
    edges : int64 ``[2, E]``
        Undirected edges, each pair once (`contact_edges`); self-loops are added by the network.

    Instances compare by identity (``eq=False``).
    """

    scores: np.ndarray
    edges: np.ndarray

    def __post_init__(self):
        scores = np.asarray(self.scores, dtype=np.float32)
        edges = np.asarray(self.edges, dtype=np.int64).reshape(2, -1)
        if scores.ndim != 2 or scores.shape[1] != NUM_AA:
            raise ValueError(f"scores must have shape [M, {NUM_AA}], got {scores.shape}")
        if edges.size and (edges.min() < 0 or edges.max() >= len(scores)):
            raise ValueError(f"edge node indices must be in 0..{len(scores) - 1}")
        if np.any(edges[0] == edges[1]):
            raise ValueError("edges must not be self-loops")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "edges", edges)

    @property
    def num_nodes(self) -> int:
        return len(self.scores)

    @classmethod
    def from_nodes(cls, scores: np.ndarray, ca: np.ndarray, cutoff: float = CONTACT_DISTANCE) -> NodeGraph:
        """The graph of nodes with ``scores [M, 20]`` at ``ca [M, 3]`` (Å), edges by `contact_edges`."""
        return cls(scores, contact_edges(ca, cutoff))

    def relabelled(self, new_index: np.ndarray) -> NodeGraph:
        """The same graph with node ``i`` renumbered ``new_index[i]`` (a permutation ``[M]``)."""
        new_index = np.asarray(new_index, dtype=np.int64)
        scores = np.empty_like(self.scores)
        scores[new_index] = self.scores
        return NodeGraph(scores, np.sort(new_index[self.edges], axis=0))


@dataclasses.dataclass(frozen=True, eq=False)
class ThreadingSample:
    """A graph, a sequence and the true node of each sequence position.

    Attributes
    ----------
    graph : NodeGraph
        ``M`` nodes.
    sequence : int64 ``[L]``
        Residue types of the sequence (0..19, `UNK_INDEX` 20 for ``X``), N -> C.
    target : int64 ``[L]``
        Node of each position; -1 where the position has no node (left out of loss and accuracy).

    Instances compare by identity (``eq=False``).
    """

    graph: NodeGraph
    sequence: np.ndarray
    target: np.ndarray

    def __post_init__(self):
        sequence = np.asarray(self.sequence, dtype=np.int64).reshape(-1)
        target = np.asarray(self.target, dtype=np.int64).reshape(-1)
        if target.shape != sequence.shape or len(sequence) == 0:
            raise ValueError(
                f"sequence and target must be non-empty [L] arrays, got {sequence.shape} and {target.shape}"
            )
        if sequence.min() < 0 or sequence.max() > UNK_INDEX:
            raise ValueError(f"sequence residue types must be in 0..{UNK_INDEX}")
        if target.max() >= self.graph.num_nodes or target.min() < -1:
            raise ValueError(f"targets must be -1 or node indices in 0..{self.graph.num_nodes - 1}")
        object.__setattr__(self, "sequence", sequence)
        object.__setattr__(self, "target", target)
