"""Configuration of the graph network (`GraphConfig`) and the named presets.

Numbers with a physical meaning are in Å; every size is a count. The default preset is the
CPU-trainable network of METHODS §3 (hidden 128, 4 layers, 4 heads, k = 16); `tiny_config` is
the test network (hidden 16, 1 layer), which runs end to end in well under a second.
"""

from __future__ import annotations

import dataclasses

__all__ = ["GraphConfig", "config_from_dict", "default_config", "tiny_config"]


@dataclasses.dataclass(frozen=True)
class GraphConfig:
    """Sizes and switches of `cryobuild.gnn.network.GraphNetwork`.

    Attributes
    ----------
    hidden : int
        Node feature size ``C``.
    num_layers : int
        Graph layers (cryo-EM attention, sequence attention, spatial IPA, transition).
    num_heads : int
        Attention heads ``H`` of every attention module.
    head_dim : int
        Features per head in the attention modules.
    num_neighbours : int
        ``k`` of the k-nearest-neighbour graph (recomputed from the Cα positions each layer).
    cube_size : int
        Edge of the density cube sampled in each node's frame, in samples (odd, centred on Cα).
    cube_spacing : float
        Sample spacing of the cube, Å.
    cube_channels : int
        Channels of the first convolution of the cube CNN (doubled by the second).
    cube_bf16 : bool
        Run the cube CNN under bfloat16 autocast. Measured on 2 cores with AVX-512 BF16: no
        gain for this small CNN (about 15 ms fwd+bwd for 150 cubes either way), so off.
    edge_points : int
        Samples along each edge (from the node's Cα to the neighbour's, both ends included).
    edge_width : int
        Samples across each edge in each of the two perpendicular directions (odd).
    edge_spacing : float
        Spacing of the across-edge samples, Å.
    ipa_query_points, ipa_value_points : int
        Points per head of the spatial IPA (AlphaFold2 Alg. 22 without the pair term).
    distance_bins : int
        Radial basis functions of Cα-Cα distances (edge features).
    distance_max : float
        Centre of the last radial basis function, Å (the first is at 0).
    use_sequence : bool
        With False, the network has no sequence encoder and no sequence attention (the
        ablation); everything else is the same network.
    sequence_layers, sequence_dim, sequence_heads : int
        The small ESM-2 (fair-esm ``ESM2``) trained jointly with the network.
    esm_checkpoint : str or None
        Path of an official ESM-2 checkpoint on disk; when set it replaces the small encoder,
        its weights are frozen and its embedding is projected to ``hidden``.
    """

    hidden: int = 128
    num_layers: int = 4
    num_heads: int = 4
    head_dim: int = 32
    num_neighbours: int = 16
    cube_size: int = 11
    cube_spacing: float = 1.0
    cube_channels: int = 16
    cube_bf16: bool = False
    edge_points: int = 5
    edge_width: int = 3
    edge_spacing: float = 1.0
    ipa_query_points: int = 4
    ipa_value_points: int = 4
    distance_bins: int = 16
    distance_max: float = 16.0
    use_sequence: bool = True
    sequence_layers: int = 2
    sequence_dim: int = 96
    sequence_heads: int = 4
    esm_checkpoint: str | None = None

    def __post_init__(self):
        for name in ("hidden", "num_layers", "num_heads", "head_dim", "num_neighbours",
                     "cube_channels", "edge_points", "ipa_query_points", "ipa_value_points",
                     "distance_bins", "sequence_layers", "sequence_dim", "sequence_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("cube_size", "edge_width"):
            if getattr(self, name) % 2 != 1:
                raise ValueError(f"{name} must be odd (centred samples), got {getattr(self, name)}")
        if self.cube_size < 5:
            raise ValueError(f"cube_size must be at least 5 samples, got {self.cube_size}")
        if self.edge_points < 2:
            raise ValueError(f"edge_points must be at least 2 (both ends), got {self.edge_points}")
        if self.sequence_dim % self.sequence_heads:
            raise ValueError("sequence_dim must be a multiple of sequence_heads")
        if not (self.cube_spacing > 0 and self.edge_spacing > 0 and self.distance_max > 0):
            raise ValueError("spacings and distance_max must be positive (Å)")


def default_config(**changes) -> GraphConfig:
    """The CPU-trainable preset, with ``changes`` applied (e.g. ``use_sequence=False``)."""
    return dataclasses.replace(GraphConfig(), **changes)


def tiny_config(**changes) -> GraphConfig:
    """A network small enough for tests: hidden 16, 1 layer, 2 heads, 7³ cube."""
    tiny = GraphConfig(
        hidden=16,
        num_layers=1,
        num_heads=2,
        head_dim=8,
        num_neighbours=8,
        cube_size=7,
        cube_channels=4,
        edge_points=3,
        ipa_query_points=2,
        ipa_value_points=2,
        distance_bins=8,
        sequence_layers=1,
        sequence_dim=16,
        sequence_heads=2,
    )
    return dataclasses.replace(tiny, **changes)


def config_from_dict(values: dict) -> GraphConfig:
    """A `GraphConfig` from a checkpoint's ``config`` dict; unknown keys raise ``ValueError``."""
    known = {field.name for field in dataclasses.fields(GraphConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown graph network settings: {sorted(unknown)}")
    return GraphConfig(**values)
