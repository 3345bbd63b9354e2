"""Training losses of the graph network (METHODS §3).

At every layer: backbone position loss (N, Cα, C of the ideal backbone against the true atoms)
plus a Cα position loss (Cα counted twice on purpose, as in ModelAngelo), residue-type cross
entropy, chain-neighbour edge BCE, confidence regression to the detached actual Cα error, and
existence BCE; the layer losses are averaged. At the last layer: the torsion loss (psi and
chi1..4 of the true residue type, with pi-periodic side chains compared to both answers).
Fake nodes (random peptides added in training) have existence target 0 and no other target.

Shapes: ``N`` nodes, ``K`` neighbours.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from ..geometry import atom14_to_torsions, ideal_backbone
from ..residues import AA_INDEX, NUM_AA, NUM_TORSIONS, TORSION_NAMES, UNK_INDEX
from .network import RoundOutput

__all__ = ["POSITION_CLAMP", "GraphTargets", "LossWeights", "graph_loss"]

#: Position errors (Å) are clamped here so a few lost nodes do not dominate.
POSITION_CLAMP = 10.0
#: Side-chain torsions that are symmetric under a 180° flip (AlphaFold2's chi_pi_periodic).
_PI_PERIODIC = {"D": "chi2", "E": "chi3", "F": "chi2", "Y": "chi2"}
_CA = 1
_EPS = 1e-8


def _make_pi_periodic() -> np.ndarray:
    table = np.zeros((NUM_AA + 1, NUM_TORSIONS), dtype=bool)
    for aa, torsion in _PI_PERIODIC.items():
        table[AA_INDEX[aa], TORSION_NAMES.index(torsion)] = True
    return table


#: bool ``[21, 5]``: which torsions of each residue type are pi-periodic.
PI_PERIODIC = _make_pi_periodic()


@dataclasses.dataclass(frozen=True)
class GraphTargets:
    """The truth for one graph.

    Attributes
    ----------
    real : bool Tensor ``[N]``
        False for fake nodes.
    aatype : int64 Tensor ``[N]``
        True residue type (20 = unknown or fake: no type or torsion loss).
    atom14 : Tensor ``[N, 14, 3]``
        True atom positions, Å.
    atom14_mask : bool Tensor ``[N, 14]``
        Which true atoms exist (all False for fake nodes).
    next_node, previous_node : int64 Tensor ``[N]``
        Index of the node holding the next / previous residue of the chain (peptide-bonded),
        -1 if there is none among the nodes.
    """

    real: torch.Tensor
    aatype: torch.Tensor
    atom14: torch.Tensor
    atom14_mask: torch.Tensor
    next_node: torch.Tensor
    previous_node: torch.Tensor


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (positions are in Å)."""

    backbone: float = 0.5
    calpha: float = 0.5
    residue_type: float = 1.0
    edge: float = 0.5
    confidence: float = 0.1
    existence: float = 0.2
    torsion: float = 0.5
    torsion_norm: float = 0.02


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _torsion_loss(output: RoundOutput, targets: GraphTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance of unit (sin, cos) vectors to the truth, and the norm penalty."""
    known = targets.real & (targets.aatype < UNK_INDEX)
    true, present = atom14_to_torsions(targets.atom14, targets.atom14_mask, targets.aatype)
    index = targets.aatype.clamp_max(NUM_AA - 1)
    # [N, 20, 5, 2] gathered by [N] => [N, 5, 2]
    predicted = output.torsions[torch.arange(len(index), device=index.device), index]
    norm = torch.linalg.vector_norm(predicted, dim=-1)  # [N, 5]
    unit = predicted / norm[..., None].clamp_min(_EPS)
    periodic = torch.as_tensor(PI_PERIODIC, device=index.device)[targets.aatype]  # [N, 5]
    error = ((unit - true) ** 2).sum(-1)
    flipped = ((unit + true) ** 2).sum(-1)
    error = torch.where(periodic, torch.minimum(error, flipped), error)
    mask = present & known[:, None]
    return _masked_mean(error, mask), _masked_mean((norm - 1.0).abs(), mask)


def graph_loss(
    output: RoundOutput, targets: GraphTargets, weights: LossWeights = LossWeights()
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss (a scalar tensor) and its parts as floats (averaged over layers)."""
    real = targets.real
    known_type = real & (targets.aatype < UNK_INDEX)
    backbone_mask = targets.atom14_mask[:, :3] & real[:, None]  # [N, 3]
    true_backbone = targets.atom14[:, :3]
    parts = dict.fromkeys(("backbone", "calpha", "residue_type", "edge", "confidence", "existence"), 0.0)
    total = torch.zeros((), device=real.device)
    for layer in output.layers:
        # [N, 3 atoms, 3] => [N, 3 atoms]
        distance = torch.sqrt(((ideal_backbone(layer.frames) - true_backbone) ** 2).sum(-1) + _EPS)
        clamped = distance.clamp_max(POSITION_CLAMP)
        terms = {
            "backbone": _masked_mean(clamped, backbone_mask),
            "calpha": _masked_mean(clamped[:, _CA], backbone_mask[:, _CA]),
            "residue_type": _masked_mean(
                nn.functional.cross_entropy(
                    layer.aa_logits, targets.aatype.clamp_max(NUM_AA - 1), reduction="none"
                ),
                known_type,
            ),
            "confidence": _masked_mean(
                nn.functional.smooth_l1_loss(
                    layer.predicted_error, distance[:, _CA].detach(), reduction="none"
                ),
                backbone_mask[:, _CA],
            ),
            "existence": nn.functional.binary_cross_entropy_with_logits(
                layer.existence_logit, real.float()
            ),
        }
        # [N, K, 2] targets: neighbour k is the next / the previous residue of node n
        partner = torch.stack([targets.next_node, targets.previous_node], dim=-1)  # [N, 2]
        edge_target = (layer.neighbours[..., None] == partner[:, None, :]).float()
        edge_loss = nn.functional.binary_cross_entropy_with_logits(
            layer.edge_logits, edge_target, reduction="none"
        ).mean(dim=(1, 2))
        terms["edge"] = _masked_mean(edge_loss, real)
        for name, value in terms.items():
            total = total + getattr(weights, name) * value / len(output.layers)
            parts[name] += float(value.detach()) / len(output.layers)
    torsion, torsion_norm = _torsion_loss(output, targets)
    total = total + weights.torsion * torsion + weights.torsion_norm * torsion_norm
    parts["torsion"] = float(torsion.detach())
    parts["total"] = float(total.detach())
    return total, parts
