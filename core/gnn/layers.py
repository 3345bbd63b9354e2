"""The modules of one graph layer (METHODS §3): cryo-EM attention, sequence attention, spatial
invariant point attention over the k-nearest-neighbour graph, and the transition MLP.

Every module reads pre-normalised node features ``[N, C]`` and returns a residual update
``[N, C]``. Geometry enters only through quantities that are invariant under a global rotation
and translation of map and nodes together (densities sampled in local frames, distances,
points compared in the global frame), so the node features are invariant and the frame updates
equivariant.

Shapes: ``N`` nodes, ``K`` neighbours per node, ``H`` heads, ``D`` features per head, ``T``
sequence residues, ``C`` hidden features.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..geometry import Rigid
from .config import GraphConfig
from .density import DensityVolume

__all__ = [
    "CryoEMAttention",
    "CubeEncoder",
    "EdgeGeometry",
    "SequenceAttention",
    "SpatialIPA",
    "Transition",
    "nearest_neighbours",
    "radial_basis",
]

#: Guards vector normalisations (Å) against zero length.
_EPS = 1e-6


def nearest_neighbours(ca: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[N, K]`` of the ``K = min(k, N - 1)`` nearest other nodes of each node.

    Parameters
    ----------
    ca : Tensor ``[N, 3]``
        Cα positions in Å (no gradient flows through the choice).
    """
    if ca.shape[0] < 2:
        raise ValueError(f"a graph needs at least 2 nodes, got {ca.shape[0]}")
    with torch.no_grad():
        distance = torch.cdist(ca.float(), ca.float())  # [N, N]
        distance.fill_diagonal_(float("inf"))
        return distance.topk(min(k, ca.shape[0] - 1), dim=-1, largest=False).indices


def radial_basis(distance: torch.Tensor, bins: int, maximum: float) -> torch.Tensor:
    """Gaussian radial basis ``[*, bins]`` of distances ``[*]`` (Å), centres 0..``maximum``."""
    centres = torch.linspace(0.0, maximum, bins, device=distance.device)
    width = maximum / max(bins - 1, 1)
    return torch.exp(-(((distance[..., None] - centres) / width) ** 2))


class EdgeGeometry:
    """Invariant descriptions of the ``[N, K]`` edges from each node to its neighbours.

    Attributes
    ----------
    neighbours : int Tensor ``[N, K]``
    distance : Tensor ``[N, K]``, Cα-Cα distance in Å.
    basis : Tensor ``[N, K, B]``, `radial_basis` of the distance.
    direction : Tensor ``[N, K, 3]``, unit vector to the neighbour in the node's local frame.
    """

    def __init__(self, frames: Rigid, neighbours: torch.Tensor, config: GraphConfig):
        ca = frames.translations
        self.neighbours = neighbours
        # [N, 3] gathered by [N, K] => [N, K, 3]
        local = frames.unsqueeze(-1).invert_apply(ca[neighbours])
        self.distance = torch.linalg.vector_norm(local, dim=-1)
        self.basis = radial_basis(self.distance, config.distance_bins, config.distance_max)
        self.direction = local / self.distance[..., None].clamp_min(_EPS)


class CubeEncoder(nn.Module):
    """A small 3D CNN: density cube ``[N, 1, S, S, S]`` -> features ``[N, C]``.

    Two stride-2 convolutions (S = 11: 11³ -> 6³ -> 3³) keep it cheap enough to run in every
    layer on a CPU; with ``config.cube_bf16`` the convolutions run under bfloat16 autocast.
    """

    def __init__(self, config: GraphConfig):
        super().__init__()
        channels = config.cube_channels
        self.bf16 = config.cube_bf16
        self.convolutions = nn.Sequential(
            nn.Conv3d(1, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv3d(channels, 2 * channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        size = config.cube_size
        for _ in range(2):
            size = (size + 1) // 2  # kernel 3, stride 2, padding 1
        self.output = nn.Sequential(
            nn.Linear(2 * channels * size**3, config.hidden), nn.LayerNorm(config.hidden)
        )

    def forward(self, cubes: torch.Tensor) -> torch.Tensor:
        with torch.autocast(cubes.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.convolutions(cubes)
        # [N, 2c, s, s, s] => [N, 2c * s^3]
        return self.output(features.float().flatten(1))


def _cube_points(config: GraphConfig) -> torch.Tensor:
    """Local sample positions ``[S, S, S, 3]`` (Å) of the cube, centred on the Cα."""
    half = config.cube_size // 2
    axis = (torch.arange(config.cube_size, dtype=torch.float32) - half) * config.cube_spacing
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


class CryoEMAttention(nn.Module):
    """Density around each node (a cube in its frame, through `CubeEncoder`) and along each edge
    (an elongated cuboid from the node's Cα to the neighbour's, as attention keys).

    Queries come from the node, values from the neighbours; the attention output and the cube
    features are concatenated and projected to the update.
    """

    def __init__(self, config: GraphConfig):
        super().__init__()
        self.config = config
        heads, dim = config.num_heads, config.head_dim
        self.register_buffer("cube_points", _cube_points(config), persistent=False)
        half = config.edge_width // 2
        across = (torch.arange(config.edge_width, dtype=torch.float32) - half) * config.edge_spacing
        self.register_buffer("across", across, persistent=False)
        self.register_buffer("along", torch.linspace(0.0, 1.0, config.edge_points), persistent=False)
        self.cube = CubeEncoder(config)
        edge_samples = config.edge_points * config.edge_width**2
        self.edge_keys = nn.Sequential(
            nn.Linear(edge_samples + config.distance_bins, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, heads * dim),
        )
        self.queries = nn.Linear(config.hidden, heads * dim, bias=False)
        self.values = nn.Linear(config.hidden, heads * dim)
        self.output = nn.Linear(heads * dim + config.hidden, config.hidden)

    def sample_cubes(self, frames: Rigid, volume: DensityVolume) -> torch.Tensor:
        """Density cubes ``[N, 1, S, S, S]`` in the nodes' local frames (no gradient to the
        frames: the sampling positions are treated as constants)."""
        frames = Rigid(frames.rotations.detach(), frames.translations.detach())
        # [S, S, S, 3] local points against [N, 1, 1, 1] frames => [N, S, S, S, 3]
        points = frames[:, None, None, None].apply(self.cube_points)
        return volume.sample(points)[:, None]

    def sample_edges(self, frames: Rigid, edges: EdgeGeometry, volume: DensityVolume) -> torch.Tensor:
        """Density on cuboids along the edges ``[N, K, P * W * W]`` (P along, W x W across)."""
        ca = frames.translations
        start = ca[:, None]  # [N, 1, 3]
        vector = ca[edges.neighbours] - start  # [N, K, 3]
        along_axis = vector / torch.linalg.vector_norm(vector, dim=-1, keepdim=True).clamp_min(_EPS)
        # the node's z axis made perpendicular to the edge fixes the cuboid's roll
        z_axis = frames.rotations[:, None, :, 2]  # [N, 1, 3]
        side = z_axis - (z_axis * along_axis).sum(-1, keepdim=True) * along_axis
        side = side / torch.linalg.vector_norm(side, dim=-1, keepdim=True).clamp_min(_EPS)
        other_side = torch.cross(along_axis, side, dim=-1)
        # [N, K, P, W, W, 3]
        points = (
            start[:, :, None, None, None]
            + self.along[:, None, None, None] * vector[:, :, None, None, None]
            + self.across[:, None, None] * side[:, :, None, None, None]
            + self.across[:, None] * other_side[:, :, None, None, None]
        )
        # [N, K, P, W, W] => [N, K, P * W * W]
        return volume.sample(points).flatten(2)

    def forward(
        self, features: torch.Tensor, frames: Rigid, edges: EdgeGeometry, volume: DensityVolume
    ) -> torch.Tensor:
        heads, dim = self.config.num_heads, self.config.head_dim
        cube = self.cube(self.sample_cubes(frames, volume))  # [N, C]
        edge_input = torch.cat([self.sample_edges(frames, edges, volume), edges.basis], dim=-1)
        # [N, K, H * D] => [N, K, H, D]
        keys = self.edge_keys(edge_input).unflatten(-1, (heads, dim))
        queries = self.queries(features).unflatten(-1, (heads, dim))  # [N, H, D]
        values = self.values(features)[edges.neighbours].unflatten(-1, (heads, dim))  # [N, K, H, D]
        logits = torch.einsum("nhd,nkhd->nkh", queries, keys) / math.sqrt(dim)
        weights = torch.softmax(logits.float(), dim=1).to(values.dtype)
        # [N, K, H, D] => [N, H * D]
        attended = torch.einsum("nkh,nkhd->nhd", weights, values).flatten(1)
        return self.output(torch.cat([attended, cube.to(attended.dtype)], dim=-1))


class SequenceAttention(nn.Module):
    """Each node attends over the embedded residues of all input sequences ``[T, C]``."""

    def __init__(self, config: GraphConfig):
        super().__init__()
        self.config = config
        heads, dim = config.num_heads, config.head_dim
        self.queries = nn.Linear(config.hidden, heads * dim, bias=False)
        self.keys = nn.Linear(config.hidden, heads * dim, bias=False)
        self.values = nn.Linear(config.hidden, heads * dim)
        self.output = nn.Linear(heads * dim, config.hidden)

    def forward(self, features: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        heads, dim = self.config.num_heads, self.config.head_dim
        queries = self.queries(features).unflatten(-1, (heads, dim))  # [N, H, D]
        keys = self.keys(sequence).unflatten(-1, (heads, dim))  # [T, H, D]
        values = self.values(sequence).unflatten(-1, (heads, dim))  # [T, H, D]
        logits = torch.einsum("nhd,thd->nht", queries, keys) / math.sqrt(dim)
        weights = torch.softmax(logits.float(), dim=-1).to(values.dtype)
        # [N, H, D] => [N, H * D]
        attended = torch.einsum("nht,thd->nhd", weights, values).flatten(1)
        return self.output(attended)


class SpatialIPA(nn.Module):
    """Invariant point attention (AlphaFold2 Alg. 22, without the pair representation) over the
    neighbour graph: scalar query-key terms, squared distances between query points proposed in
    the node's frame and key points proposed in each neighbour's frame (compared in the global
    frame), and a learned bias on the Cα-Cα distance. Value points are averaged globally and
    read back in the node's frame (coordinates and norms)."""

    def __init__(self, config: GraphConfig):
        super().__init__()
        self.config = config
        heads, dim = config.num_heads, config.head_dim
        query_points, value_points = config.ipa_query_points, config.ipa_value_points
        self.queries = nn.Linear(config.hidden, heads * dim, bias=False)
        self.keys = nn.Linear(config.hidden, heads * dim, bias=False)
        self.values = nn.Linear(config.hidden, heads * dim)
        self.query_points = nn.Linear(config.hidden, heads * query_points * 3)
        self.key_points = nn.Linear(config.hidden, heads * query_points * 3)
        self.value_points = nn.Linear(config.hidden, heads * value_points * 3)
        self.distance_bias = nn.Linear(config.distance_bins, heads)
        # softplus(0.541) = 1: AlphaFold2's initial head weight gamma
        self.point_weight = nn.Parameter(torch.full((heads,), 0.541))
        self.output = nn.Linear(heads * (dim + value_points * 4), config.hidden)

    def forward(self, features: torch.Tensor, frames: Rigid, edges: EdgeGeometry) -> torch.Tensor:
        config = self.config
        heads, dim = config.num_heads, config.head_dim
        neighbours = edges.neighbours
        queries = self.queries(features).unflatten(-1, (heads, dim))  # [N, H, D]
        keys = self.keys(features)[neighbours].unflatten(-1, (heads, dim))  # [N, K, H, D]
        values = self.values(features)[neighbours].unflatten(-1, (heads, dim))  # [N, K, H, D]

        # [N, H * P * 3] => [N, H, P, 3], mapped to global coordinates
        query_points = frames[:, None, None].apply(
            self.query_points(features).unflatten(-1, (heads, config.ipa_query_points, 3))
        )
        key_points = frames[:, None, None].apply(
            self.key_points(features).unflatten(-1, (heads, config.ipa_query_points, 3))
        )[neighbours]  # [N, K, H, P, 3]
        value_points = frames[:, None, None].apply(
            self.value_points(features).unflatten(-1, (heads, config.ipa_value_points, 3))
        )[neighbours]  # [N, K, H, Pv, 3]

        scalar = torch.einsum("nhd,nkhd->nkh", queries, keys).float() / math.sqrt(3 * dim)
        # [N, 1, H, P, 3] - [N, K, H, P, 3] => [N, K, H]
        squared = ((query_points[:, None] - key_points) ** 2).sum(dim=(-1, -2))
        gamma = nn.functional.softplus(self.point_weight) * math.sqrt(
            2.0 / (9.0 * config.ipa_query_points)
        )
        logits = (
            scalar
            - 0.5 * gamma * squared / math.sqrt(3)
            + self.distance_bias(edges.basis).float() / math.sqrt(3)
        )
        weights = torch.softmax(logits, dim=1)  # [N, K, H]
        attended = torch.einsum("nkh,nkhd->nhd", weights.to(values.dtype), values)
        # [N, K, H, Pv, 3] => [N, H, Pv, 3], back into the node's frame
        global_points = torch.einsum("nkh,nkhpx->nhpx", weights, value_points.float())
        local_points = frames[:, None, None].invert_apply(global_points)
        norms = torch.linalg.vector_norm(local_points, dim=-1, keepdim=True)
        # [N, H, Pv, 4] => [N, H * Pv * 4]
        point_features = torch.cat([local_points, norms], dim=-1).flatten(1)
        return self.output(torch.cat([attended.flatten(1).float(), point_features], dim=-1))


class Transition(nn.Module):
    """Two-layer MLP ``C -> 2C -> C``."""

    def __init__(self, config: GraphConfig):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(config.hidden, 2 * config.hidden),
            nn.ReLU(),
            nn.Linear(2 * config.hidden, config.hidden),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)
