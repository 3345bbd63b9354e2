"""The graph network (METHODS §3): node features and backbone frames refined layer by layer
from the density, the sequences and the graph, with heads for frames, residue type, torsions,
confidence, existence and chain-neighbour edges; and recycling over rounds.

Shapes: ``N`` nodes, ``K`` neighbours, ``C`` hidden features, ``T`` sequence residues.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..geometry import Rigid, rotation_from_quaternion, torsions_to_atom14
from ..residues import NUM_AA, NUM_TORSIONS
from .config import GraphConfig
from .density import DensityVolume
from .layers import (
    CryoEMAttention,
    EdgeGeometry,
    SequenceAttention,
    SpatialIPA,
    Transition,
    nearest_neighbours,
)
from .sequence import SequenceEncoder

__all__ = [
    "CONFIDENCE_ERROR_SCALE",
    "GraphInputs",
    "GraphNetwork",
    "LayerOutput",
    "RoundOutput",
    "confidence_from_error",
    "run_rounds",
]

#: Predicted Cα error (Å) at which the shown confidence falls to 100/e ≈ 37.
CONFIDENCE_ERROR_SCALE = 2.0
#: Edge logits per neighbour: [j is the next residue of i, j is the previous residue of i].
NUM_EDGE_CLASSES = 2


def confidence_from_error(error: torch.Tensor) -> torch.Tensor:
    """Confidence 0-100 (higher is better) from a predicted Cα error in Å: ``100 exp(-e / 2 Å)``."""
    return 100.0 * torch.exp(-error.clamp_min(0) / CONFIDENCE_ERROR_SCALE)


@dataclasses.dataclass(frozen=True)
class GraphInputs:
    """What one round starts from.

    Attributes
    ----------
    volume : DensityVolume
        The normalised map.
    frames : Rigid ``[N]``
        Backbone frames (Cα positions in Å as translations).
    aa_prior : Tensor ``[N, 20]``
        Residue-type probabilities from the previous round (zeros where unknown).
    sequence : Tensor ``[T, C]`` or None
        Sequence embeddings (`GraphNetwork.embed_sequences`); None for a network without
        sequence attention.
    """

    volume: DensityVolume
    frames: Rigid
    aa_prior: torch.Tensor
    sequence: torch.Tensor | None


@dataclasses.dataclass(frozen=True)
class LayerOutput:
    """Head outputs after one layer.

    Attributes
    ----------
    frames : Rigid ``[N]``
        Updated backbone frames (Å).
    aa_logits : Tensor ``[N, 20]``
    predicted_error : Tensor ``[N]``
        The network's estimate of its own Cα error, Å.
    existence_logit : Tensor ``[N]``
        Logit of "this node is a real residue".
    neighbours : int Tensor ``[N, K]``
        The neighbour graph the layer used.
    edge_logits : Tensor ``[N, K, 2]``
        Logits of "neighbour j is the next / the previous residue of node i".
    """

    frames: Rigid
    aa_logits: torch.Tensor
    predicted_error: torch.Tensor
    existence_logit: torch.Tensor
    neighbours: torch.Tensor
    edge_logits: torch.Tensor


@dataclasses.dataclass(frozen=True)
class RoundOutput:
    """All layers' outputs of one round and the torsions of the last layer.

    Attributes
    ----------
    layers : tuple of LayerOutput
        One per layer, in order; ``layers[-1]`` is the round's result.
    torsions : Tensor ``[N, 20, 5, 2]``
        ``(sin, cos)`` of psi and chi1..4 for every residue type (unnormalised).
    """

    layers: tuple[LayerOutput, ...]
    torsions: torch.Tensor

    @property
    def final(self) -> LayerOutput:
        return self.layers[-1]

    def atom14(self, aatype: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All-atom positions ``[N, 14, 3]`` (Å) and mask ``[N, 14]`` for residue types
        ``aatype`` ``[N]`` (each residue uses the torsions predicted for its type)."""
        index = aatype.clamp_max(NUM_AA - 1)
        # [N, 20, 5, 2] gathered by [N] => [N, 5, 2]
        torsions = self.torsions[torch.arange(len(aatype), device=aatype.device), index]
        return torsions_to_atom14(self.final.frames, aatype, torsions)

    def next_inputs(self, inputs: GraphInputs) -> GraphInputs:
        """The inputs of the next round: this round's frames and residue-type probabilities,
        detached (recycling)."""
        final = self.final
        frames = Rigid(final.frames.rotations.detach(), final.frames.translations.detach())
        prior = torch.softmax(final.aa_logits.detach().float(), dim=-1)
        return dataclasses.replace(inputs, frames=frames, aa_prior=prior)


class _GraphLayer(nn.Module):
    """Cryo-EM attention, sequence attention (if enabled), spatial IPA and transition, each a
    pre-normalised residual update of the node features."""

    def __init__(self, config: GraphConfig):
        super().__init__()
        hidden = config.hidden
        self.cryo_norm = nn.LayerNorm(hidden)
        self.cryo_em = CryoEMAttention(config)
        self.sequence_norm = nn.LayerNorm(hidden) if config.use_sequence else None
        self.sequence_attention = SequenceAttention(config) if config.use_sequence else None
        self.ipa_norm = nn.LayerNorm(hidden)
        self.ipa = SpatialIPA(config)
        self.transition_norm = nn.LayerNorm(hidden)
        self.transition = Transition(config)

    def forward(
        self,
        features: torch.Tensor,
        frames: Rigid,
        edges: EdgeGeometry,
        volume: DensityVolume,
        sequence: torch.Tensor | None,
    ) -> torch.Tensor:
        features = features + self.cryo_em(self.cryo_norm(features), frames, edges, volume)
        if self.sequence_attention is not None:
            features = features + self.sequence_attention(self.sequence_norm(features), sequence)
        features = features + self.ipa(self.ipa_norm(features), frames, edges)
        return features + self.transition(self.transition_norm(features))


class GraphNetwork(nn.Module):
    """The graph network; build with a `GraphConfig`, run one round with `forward` or several
    with `run_rounds`."""

    def __init__(self, config: GraphConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden
        self.sequence_encoder = SequenceEncoder(config) if config.use_sequence else None
        self.prior_embedding = nn.Linear(NUM_AA, hidden)
        self.layers = nn.ModuleList(_GraphLayer(config) for _ in range(config.num_layers))
        self.head_norm = nn.LayerNorm(hidden)
        # (quaternion b, c, d; translation x, y, z in Å), in the node's frame; starts at identity
        self.frame_update = nn.Linear(hidden, 6)
        nn.init.zeros_(self.frame_update.weight)
        nn.init.zeros_(self.frame_update.bias)
        self.aa_head = nn.Linear(hidden, NUM_AA)
        self.error_head = nn.Linear(hidden, 1)
        self.existence_head = nn.Linear(hidden, 1)
        edge_input = 2 * hidden + config.distance_bins + 3
        self.edge_head = nn.Sequential(
            nn.Linear(edge_input, hidden), nn.ReLU(), nn.Linear(hidden, NUM_EDGE_CLASSES)
        )
        self.torsion_head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, NUM_AA * NUM_TORSIONS * 2)
        )

    @property
    def device(self) -> torch.device:
        return self.prior_embedding.weight.device

    def embed_sequences(self, sequences: list[str]) -> torch.Tensor | None:
        """Sequence embeddings ``[T, C]`` for `GraphInputs.sequence` (None without sequence
        attention, whatever ``sequences`` holds)."""
        if self.sequence_encoder is None:
            return None
        return self.sequence_encoder(sequences)

    def _heads(self, features: torch.Tensor, frames: Rigid, edges: EdgeGeometry) -> LayerOutput:
        normed = self.head_norm(features)
        update = self.frame_update(normed).float()
        # (1, b, c, d) => rotation [N, 3, 3]; translation [N, 3] Å in the local frame
        quaternion = torch.cat([torch.ones_like(update[:, :1]), update[:, :3]], dim=-1)
        frames = frames.compose(Rigid(rotation_from_quaternion(quaternion), update[:, 3:]))
        neighbours = edges.neighbours
        # [N, C] and [N, K, C] => [N, K, 2C + B + 3]
        pair = torch.cat(
            [
                normed[:, None].expand(-1, neighbours.shape[1], -1),
                normed[neighbours],
                edges.basis.to(normed.dtype),
                edges.direction.to(normed.dtype),
            ],
            dim=-1,
        )
        return LayerOutput(
            frames=frames,
            aa_logits=self.aa_head(normed).float(),
            predicted_error=nn.functional.softplus(self.error_head(normed).float()[:, 0]),
            existence_logit=self.existence_head(normed).float()[:, 0],
            neighbours=neighbours,
            edge_logits=self.edge_head(pair).float(),
        )

    def forward(self, inputs: GraphInputs) -> RoundOutput:
        """One round over all layers.

        Between layers the rotations are detached (as in AlphaFold2's structure module), so
        gradients reach earlier layers through the Cα positions only.
        """
        if self.config.use_sequence and inputs.sequence is None:
            raise ValueError("this network uses sequences: pass GraphInputs.sequence")
        frames = inputs.frames
        features = self.prior_embedding(inputs.aa_prior.to(self.prior_embedding.weight.dtype))
        outputs = []
        for layer in self.layers:
            edges = EdgeGeometry(
                frames, nearest_neighbours(frames.translations, self.config.num_neighbours), self.config
            )
            features = layer(features, frames, edges, inputs.volume, inputs.sequence)
            output = self._heads(features, frames, edges)
            outputs.append(output)
            frames = Rigid(output.frames.rotations.detach(), output.frames.translations)
        # [N, 20 * 5 * 2] => [N, 20, 5, 2]
        torsions = self.torsion_head(self.head_norm(features)).float()
        return RoundOutput(tuple(outputs), torsions.unflatten(-1, (NUM_AA, NUM_TORSIONS, 2)))


def run_rounds(network: GraphNetwork, inputs: GraphInputs, rounds: int) -> RoundOutput:
    """Recycling: ``rounds - 1`` rounds without gradients, each starting from the previous
    round's frames and residue-type probabilities, then the last round (with gradients when
    they are enabled). Returns the last round's output."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    for _ in range(rounds - 1):
        with torch.no_grad():
            inputs = network(inputs).next_inputs(inputs)
    return network(inputs)

