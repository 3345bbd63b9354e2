"""Synthetic "graph network output" made from a true model, for the post-processing tests.

`simulate_predictions` turns a deposited model into the arrays the GNN will emit
(`cryobuild.chains.ResiduePredictions`): noisy backbones, residue-type probabilities with a chosen
top-1 accuracy, high-probability links between true sequence neighbours (except at a few chain
breaks), low-probability wrong links to spatial neighbours, duplicate and non-existent nodes, and
a shuffled node order. Everything is drawn from the given seeded generator.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import torch

from cryobuild.chains import ResiduePredictions
from cryobuild.geometry import Rigid
from cryobuild.gnn.refine import GraphOutput
from cryobuild.residues import NUM_AA, UNK_INDEX

#: Å, standard deviation of the noise added to backbone atoms.
BACKBONE_NOISE = 0.1
#: Å, the largest CA-CA distance of sequence neighbours in the true model.
TRUE_LINK_CA = 4.2
#: Å, wrong candidate links go to nodes whose CA is this close.
WRONG_LINK_RADIUS = 10.0
#: Softmax sharpness of the simulated logits (mean top probability close to the accuracy).
PROB_SHARPNESS = 2.0


@dataclasses.dataclass(frozen=True, eq=False)
class Simulated:
    """Simulated predictions and the truth behind them.

    Attributes
    ----------
    predictions : ResiduePredictions
        ``N`` nodes (true residues, duplicates and non-existent nodes, shuffled).
    residue_of_node : int64 ``[N]``
        Index of the true residue (row of the model) of each node; -1 for non-existent nodes.
    kept_truth : bool ``[N]``
        Nodes that post-processing should keep (the original copy of each true residue).
    true_links : set of (int, int)
        ``(i, j)`` node pairs where j's residue follows i's in the model.
    """

    predictions: ResiduePredictions
    residue_of_node: np.ndarray
    kept_truth: np.ndarray
    true_links: set


def noisy_probs(aatype: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Residue-type probabilities ``[R, 20]`` whose most probable type is right with ``accuracy``.

    A noisy one-hot: logits ``beta * onehot(true) + N(0, 1)`` per type, softmax at
    `PROB_SHARPNESS`; ``beta`` is set so that the top type is right with probability
    ``accuracy`` (0.6 -> beta 2.1, top-3 accuracy 0.83, mean top probability 0.58, close to
    what a small network reached on a real map, STACK_NOTES).
    """
    num = len(aatype)
    # [R, 20]
    logits = rng.normal(size=(num, NUM_AA))
    known = aatype != UNK_INDEX
    logits[np.flatnonzero(known), aatype[known]] += _signal_for_accuracy(accuracy)
    logits *= PROB_SHARPNESS
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def _signal_for_accuracy(accuracy: float) -> float:
    """``beta`` with P(beta + z_0 > max(z_1..z_19)) = accuracy, z standard normal (numerically)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    grid = np.linspace(-8.0, 8.0, 4001)

    def top1(beta: float) -> float:
        # P(max of the 19 others < beta + z_0) integrated over z_0
        return float(np.trapezoid(norm.pdf(grid) * norm.cdf(grid + beta) ** (NUM_AA - 1), grid))

    return brentq(lambda beta: top1(beta) - accuracy, -5.0, 10.0)


def simulate_predictions(
    backbone: np.ndarray,
    aatype: np.ndarray,
    residue_number: np.ndarray,
    rng: np.random.Generator,
    *,
    accuracy: float = 0.6,
    num_breaks: int = 3,
    num_duplicates: int = 5,
    num_ghosts: int = 3,
) -> Simulated:
    """Simulate network output for one chain of ``R`` residues.

    Parameters
    ----------
    backbone : ``[R, 3, 3]``
        True N, CA, C positions (Å), in chain order.
    aatype : int ``[R]``
        True residue types.
    residue_number : int ``[R]``
        True residue numbers (sequence neighbours differ by 1).
    rng : numpy.random.Generator
        Seeded source of all randomness.
    accuracy : float
        Top-1 residue-type accuracy.
    num_breaks : int
        True links given a low probability (chain breaks the network misses).
    num_duplicates : int
        Extra, less confident copies of random residues (CA moved 0.5 Å).
    num_ghosts : int
        Extra nodes with existence 0.05 near random residues.
    """
    num = len(aatype)
    duplicated = rng.choice(num, size=num_duplicates, replace=False)
    ghosts = rng.choice(num, size=num_ghosts, replace=False)
    source = np.concatenate([np.arange(num), duplicated, ghosts])
    total = len(source)
    coords = backbone[source] + rng.normal(0.0, BACKBONE_NOISE, size=(total, 3, 3))
    coords[num : num + num_duplicates] += 0.5 / np.sqrt(3.0)
    coords[num + num_duplicates :] += rng.normal(0.0, 3.0, size=(num_ghosts, 1, 3))
    probs = noisy_probs(aatype[source], accuracy, rng)
    confidence = np.clip(rng.normal(70.0, 8.0, size=total), 0, 100)
    confidence[num:] = 20.0
    existence = np.full(total, 0.9)
    existence[num + num_duplicates :] = 0.05

    ca = backbone[:, 1]
    consecutive = (np.diff(residue_number) == 1) & (
        np.linalg.norm(ca[1:] - ca[:-1], axis=-1) < TRUE_LINK_CA
    )
    true_src = np.flatnonzero(consecutive)
    broken = rng.choice(true_src, size=num_breaks, replace=False)
    edges = {
        (int(i), int(i) + 1): (0.1 if i in broken else rng.uniform(0.8, 0.99)) for i in true_src
    }
    from scipy.spatial import cKDTree

    near = cKDTree(coords[:, 1]).query_ball_point(coords[:, 1], WRONG_LINK_RADIUS)
    for i in range(total):
        for j in rng.choice(near[i], size=min(3, len(near[i])), replace=False):
            if i != j and (i, int(j)) not in edges:
                edges[(i, int(j))] = rng.uniform(0.05, 0.7)
    pairs = np.array(list(edges.keys()), dtype=np.int64)
    probabilities = np.array(list(edges.values()))

    order = rng.permutation(total)  # node k of the output is node order[k] above
    new_index = np.empty(total, dtype=np.int64)
    new_index[order] = np.arange(total)
    residue_of_node = np.where(source < num, source, -1)
    residue_of_node[num + num_duplicates :] = -1
    kept_truth = np.arange(total) < num
    true_links = {(int(new_index[i]), int(new_index[i + 1])) for i in true_src if i not in broken}
    predictions = ResiduePredictions(
        backbone=coords[order],
        aa_probs=probs[order],
        confidence=confidence[order],
        existence=existence[order],
        edge_src=new_index[pairs[:, 0]],
        edge_dst=new_index[pairs[:, 1]],
        edge_prob=probabilities,
    )
    return Simulated(
        predictions=predictions,
        residue_of_node=np.where(kept_truth, residue_of_node, -1)[order],
        kept_truth=kept_truth[order],
        true_links=true_links,
    )


def alanine_graph(backbone: np.ndarray) -> GraphOutput:
    """A `GraphOutput` of alanines on ``backbone`` ``[N, 3, 3]`` (Å), no edges."""
    num = len(backbone)
    points = torch.as_tensor(backbone, dtype=torch.float32)
    frames = Rigid.from_3_points(points[:, 0], points[:, 1], points[:, 2])
    torsions = np.zeros((num, 20, 5, 2), np.float32)
    torsions[..., 1] = 1.0  # (sin, cos) of 0
    aa_probs = np.full((num, 20), 0.01, np.float32)
    aa_probs[:, 0] = 0.81
    graph = GraphOutput(
        rotations=frames.rotations.numpy(), translations=points[:, 1].numpy(),
        atom14_positions=np.zeros((num, 14, 3), np.float32),
        atom14_mask=np.zeros((num, 14), bool), aa_probs=aa_probs,
        confidence=np.full(num, 80.0, np.float32), existence=np.ones(num, np.float32),
        edge_index=np.zeros((num, 1), np.int64),
        next_prob=np.full((num, 1), 0.9, np.float32),
        previous_prob=np.full((num, 1), 0.1, np.float32), torsions=torsions,
    )
    positions, mask = graph.atoms_for(np.arange(num), np.zeros(num, np.int64))
    return dataclasses.replace(graph, atom14_positions=positions, atom14_mask=mask)


def with_unassigned_stretch(model, rows: np.ndarray, sequence: str):
    """``model`` (one chain, numbered by its sequence ``sequence``) with the residues ``rows``
    (bool ``[R]``) made an unassigned chain "B" as a build leaves one: UNK residues, backbone
    and Cβ only, numbered 1.. along the trace; the rest chain "A", threaded to ``sequence``."""
    return dataclasses.replace(
        model, chain_id=np.where(rows, "B", "A"),
        residue_number=np.where(rows, np.cumsum(rows), model.residue_number),
        aatype=np.where(rows, UNK_INDEX, model.aatype),
        atom_mask=np.where(rows[:, None], model.atom_mask & (np.arange(model.atom_mask.shape[1]) < 4),
                           model.atom_mask),
        entity_sequences={"A": sequence})
