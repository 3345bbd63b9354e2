"""The Structure Generator network (Li et al. 2021, §III-A; METHODS §6).

Nodes: ``f(v) = NN(s(v))`` from the 20-d residue-type scores (one linear layer + ReLU), then
``T`` GCN layers (Kipf & Welling 2017: ``H' = ReLU(D^-1/2 (A + I) D^-1/2 H W)`` over the contact
graph), then ``h_add(v) = NN(h(v))``. Sequence: a residue-type embedding (32-d) read by a
bidirectional LSTM (2 x 256), projected to the node width: ``h_P(t)``. Score of node ``v`` at
position ``t``: ``z(t, v) = w . ReLU(h_add(v) + h_P(t)) + b`` (a single-layer net on the sum;
a nonlinearity is needed, or ``h_P`` would add the same constant to every node's score; ReLU
rather than tanh: the ``[L, M, D]`` activation is most of a training step, and ReLU made the
step about 15% faster), plus ``a log s_v(P_t)`` with `StructGenConfig.type_log_odds` (not in
the paper); softmax over nodes, cross-entropy against the true node (eq. 1).

Reading direction: ``"forward"`` feeds the sequence N -> C, ``"backward"`` feeds it reversed
(C -> N); outputs are always returned in N -> C order. A network trained with ``direction =
"both"`` reads either way (one direction drawn per training step), and inference averages the
log-probabilities of the two passes (the paper's ensemble).

Long sequences are read in windows (`sequence_log_probs`): the LSTM runs over overlapping
windows and each position takes its output from the window where it lies farthest from an edge.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
from torch import nn

from ..residues import NUM_AA, UNK_INDEX
from .graph import CONTACT_DISTANCE, NodeGraph, ThreadingSample

__all__ = [
    "DIRECTIONS",
    "GCNLayer",
    "StructGenConfig",
    "StructureGenerator",
    "config_from_dict",
    "sequence_log_probs",
    "threading_loss",
    "tiny_config",
]

#: Reading directions of the sequence.
DIRECTIONS = ("forward", "backward")
#: Residue-type tokens of the sequence embedding: 20 types and ``X``.
_NUM_TOKENS = UNK_INDEX + 1
#: Least residue-type score whose log `StructGenConfig.type_log_odds` takes (a node scored 0
#: for a type costs ln 1e-4 = -9.2, not minus infinity).
TYPE_SCORE_FLOOR = 1e-4


@dataclasses.dataclass(frozen=True)
class StructGenConfig:
    """Settings of the Structure Generator (defaults: Li et al. 2021, §III-C).

    Attributes
    ----------
    gcn_layers : int
        ``T``, the number of GCN layers (0: node features go straight to ``h_add``).
    node_dim : int
        Width of node features, GCN layers, ``h_add`` and ``h_P`` (paper: 128).
    sequence_embedding_dim : int
        Residue-type embedding fed to the LSTM (paper: 32).
    lstm_hidden : int
        LSTM hidden size per direction (paper: 256, so 2 x 256).
    contact_distance : float
        Å, nodes closer than this are joined by an edge (paper: 4.0).
    direction : str
        Reading directions the network is trained on and uses: ``"forward"``, ``"backward"``
        or ``"both"`` (inference then ensembles the two).
    type_log_odds : bool
        Add ``a * log s_v(P_t)``, the log of node ``v``'s own score for position ``t``'s
        residue type, to ``z(t, v)`` (``a`` learned, `StructureGenerator.type_weight`; not in
        the paper). Why: with that term alone the softmax over nodes is the plain likelihood
        match an HMM profile makes, so the network learns a correction to it (from the
        neighbours' types and the sequence context) rather than the match itself. Without
        it, on maps whose types are flat (the second recipe of ``bench.build`` at 3 Å: raw
        sequence recall 0.37 at raw Cα recall 0.92, about 0.4 of the types right) the network
        read chains worse than the HMM threader (sequence recall 0.17 against 0.27;
        docs/results_log.md, "Structure Generator against the HMM threader").
    """

    gcn_layers: int = 2
    node_dim: int = 128
    sequence_embedding_dim: int = 32
    lstm_hidden: int = 256
    contact_distance: float = CONTACT_DISTANCE
    direction: str = "both"
    type_log_odds: bool = False

    def __post_init__(self):
        if self.gcn_layers < 0:
            raise ValueError(f"gcn_layers must be >= 0, got {self.gcn_layers}")
        if self.direction not in DIRECTIONS + ("both",):
            raise ValueError(f"direction must be one of {DIRECTIONS + ('both',)}, got {self.direction!r}")

    @property
    def directions(self) -> tuple[str, ...]:
        """The reading directions inference ensembles."""
        return DIRECTIONS if self.direction == "both" else (self.direction,)


def config_from_dict(values: dict) -> StructGenConfig:
    """A config from a checkpoint's ``dataclasses.asdict`` (unknown keys are an error)."""
    return StructGenConfig(**values)


def tiny_config(**changes) -> StructGenConfig:
    """A small network for tests: 32-d nodes, 8-d embedding, 32 LSTM units, T = 2."""
    values = {"gcn_layers": 2, "node_dim": 32, "sequence_embedding_dim": 8, "lstm_hidden": 32}
    values.update(changes)
    return StructGenConfig(**values)


class GCNLayer(nn.Module):
    """One Kipf & Welling layer: ``ReLU(Â H W)`` with ``Â = D^-1/2 (A + I) D^-1/2``."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, features: torch.Tensor, edges: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """
        Parameters
        ----------
        features : ``[M, C]``
        edges : int64 ``[2, E']``
            Directed edges ``src -> dst`` including both directions and self-loops.
        weight : ``[E']``
            Normalised adjacency entries ``1 / sqrt(d_src d_dst)``.

        Returns
        -------
        ``[M, C]``
        """
        projected = self.linear(features)
        # [E', C] => [M, C]: sum of weighted messages into each destination
        messages = projected[edges[0]] * weight[:, None]
        return torch.relu(torch.zeros_like(projected).index_add_(0, edges[1], messages))


class StructureGenerator(nn.Module):
    """GCN node encoder + bidirectional-LSTM sequence decoder (see the module docstring)."""

    def __init__(self, config: StructGenConfig):
        super().__init__()
        self.config = config
        dim = config.node_dim
        self.node_features = nn.Sequential(nn.Linear(NUM_AA, dim), nn.ReLU())
        self.gcn = nn.ModuleList(GCNLayer(dim) for _ in range(config.gcn_layers))
        self.node_add = nn.Linear(dim, dim)
        self.embedding = nn.Embedding(_NUM_TOKENS, config.sequence_embedding_dim)
        self.lstm = nn.LSTM(config.sequence_embedding_dim, config.lstm_hidden, bidirectional=True)
        self.sequence_out = nn.Linear(2 * config.lstm_hidden, dim)
        self.score = nn.Linear(dim, 1)
        #: ``a`` of `StructGenConfig.type_log_odds` (None without it); starts at 1, the plain
        #: likelihood match plus whatever the network already scores.
        self.type_weight = nn.Parameter(torch.ones(())) if config.type_log_odds else None

    @property
    def device(self) -> torch.device:
        return self.score.weight.device

    def encode_nodes(self, graph: NodeGraph) -> torch.Tensor:
        """``h_add`` ``[M, D]`` of the graph's nodes."""
        device = self.device
        num = graph.num_nodes
        loops = torch.arange(num, device=device)
        undirected = torch.from_numpy(graph.edges).to(device)
        # [2, 2E + M]: both directions and self-loops
        edges = torch.cat([undirected, undirected.flip(0), torch.stack([loops, loops])], dim=1)
        degree = torch.bincount(edges[1], minlength=num).float()
        weight = degree[edges[0]].rsqrt() * degree[edges[1]].rsqrt()
        hidden = self.node_features(torch.from_numpy(graph.scores).to(device))
        for layer in self.gcn:
            hidden = layer(hidden, edges, weight)
        return self.node_add(hidden)

    def encode_sequence(self, sequence: torch.Tensor) -> torch.Tensor:
        """``h_P`` ``[L, D]`` of residue types ``[L]`` (int64, 0..20), read in the given order."""
        # [L] => [L, 1, E] => [L, 1, 2H] => [L, D]
        embedded = self.embedding(sequence)[:, None]
        output, _ = self.lstm(embedded)
        return self.sequence_out(output[:, 0])

    def type_scores(self, graph: NodeGraph, sequence: torch.Tensor) -> torch.Tensor | None:
        """``log s_v(P_t)`` ``[L, M]`` of `StructGenConfig.type_log_odds` for residue types
        ``[L]`` (0 at ``X``, which no node's score names), or None without it."""
        if self.type_weight is None:
            return None
        scores = torch.from_numpy(graph.scores).to(self.device)
        # [M, 20] => [M, 21] (X: log 1 = 0) => [L, M]
        log_scores = torch.log(scores.clamp_min(TYPE_SCORE_FLOOR))
        log_scores = torch.cat([log_scores, log_scores.new_zeros(len(log_scores), 1)], dim=1)
        return log_scores[:, sequence].T

    def node_logits(self, node_add: torch.Tensor, sequence_state: torch.Tensor,
                    type_scores: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` ``[L, M]`` from ``h_add [M, D]``, ``h_P [L, D]`` and, with
        `StructGenConfig.type_log_odds`, ``type_scores [L, M]`` (`type_scores`)."""
        # [L, 1, D] + [1, M, D] => [L, M, D] => [L, M]
        logits = self.score(torch.relu(sequence_state[:, None] + node_add[None]))[..., 0]
        if self.type_weight is not None:
            logits = logits + self.type_weight * type_scores
        return logits


def _windows(length: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, keep_start, keep_stop)`` of LSTM windows covering ``0..length``: each
    position is kept from exactly one window, the one where it is farthest from an edge."""
    if length <= window:
        return [(0, length, 0, length)]
    if not 0 <= overlap < window:
        raise ValueError(f"window overlap must be in 0..{window - 1}, got {overlap}")
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    bounds = []
    for index, start in enumerate(starts):
        keep_start = 0 if index == 0 else (starts[index - 1] + window + start) // 2
        keep_stop = length if index == len(starts) - 1 else (start + window + starts[index + 1]) // 2
        bounds.append((start, start + window, keep_start, keep_stop))
    return bounds


def _sequence_state(network: StructureGenerator, sequence: torch.Tensor, window: int, overlap: int) -> torch.Tensor:
    """``h_P`` ``[L, D]`` of ``sequence [L]`` read in windows of at most ``window`` positions."""
    parts = []
    for start, stop, keep_start, keep_stop in _windows(len(sequence), window, overlap):
        state = network.encode_sequence(sequence[start:stop])
        parts.append(state[keep_start - start : keep_stop - start])
    return torch.cat(parts)


def sequence_log_probs(
    network: StructureGenerator,
    graph: NodeGraph,
    sequence: np.ndarray,
    *,
    directions: tuple[str, ...] | None = None,
    window: int = 500,
    overlap: int = 100,
    chunk: int = 64,
) -> torch.Tensor:
    """Log-probability of each node at each sequence position, averaged over directions.

    Parameters
    ----------
    network : StructureGenerator
    graph : NodeGraph
        ``M`` nodes.
    sequence : int ``[L]``
        Residue types (0..20), N -> C.
    directions : tuple of str, optional
        Reading directions to average (default: the network's `StructGenConfig.directions`).
    window, overlap : int
        Sequences longer than ``window`` are read in windows overlapping by ``overlap``.
    chunk : int
        Positions scored at once (bounds the ``[chunk, M, D]`` intermediate).

    Returns
    -------
    ``[L, M]``
        ``log p(node v | position t)`` in N -> C order (rows are log-softmaxes; with several
        directions the mean of theirs). Gradients flow when called outside inference mode.
    """
    directions = network.config.directions if directions is None else directions
    node_add = network.encode_nodes(graph)
    tokens = torch.from_numpy(np.asarray(sequence, dtype=np.int64)).to(network.device)
    type_scores = network.type_scores(graph, tokens)
    type_parts = type_scores.split(chunk) if type_scores is not None else itertools.repeat(None)
    total = None
    for direction in directions:
        reverse = direction == "backward"
        state = _sequence_state(network, tokens.flip(0) if reverse else tokens, window, overlap)
        state = state.flip(0) if reverse else state
        log_probs = torch.cat(
            [torch.log_softmax(network.node_logits(node_add, part, types), dim=-1)
             for part, types in zip(state.split(chunk), type_parts)]
        )
        total = log_probs if total is None else total + log_probs
    return total / len(directions)


def threading_loss(
    network: StructureGenerator, sample: ThreadingSample, direction: str
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 1: summed cross-entropy of the true nodes, for one reading direction.

    Parameters
    ----------
    network : StructureGenerator
    sample : ThreadingSample
        Positions with target -1 are left out.
    direction : str
        ``"forward"`` or ``"backward"``.

    Returns
    -------
    loss : scalar tensor
        Sum over positions of ``-log p(true node)``.
    parts : dict
        ``loss_per_position`` and ``accuracy`` (top-1 node) over the positions with a node.
    """
    # training windows are short: one LSTM window, all positions scored at once
    log_probs = sequence_log_probs(
        network, sample.graph, sample.sequence, directions=(direction,),
        window=len(sample.sequence), chunk=len(sample.sequence),
    )
    target = torch.from_numpy(sample.target).to(log_probs.device)
    present = target >= 0
    picked = log_probs[present].gather(1, target[present, None])[:, 0]
    loss = -picked.sum()
    count = max(int(present.sum()), 1)
    accuracy = (log_probs[present].argmax(-1) == target[present]).float().sum() / count
    return loss, {"loss_per_position": float(loss.detach()) / count, "accuracy": float(accuracy)}
