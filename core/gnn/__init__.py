"""The graph network that refines Cα candidates into residues (METHODS §3).

``refine(density, start, sequences, network) -> GraphOutput``; `load_gnn` reads the trained
network. Modules: `config` (settings and presets), `density` (map sampling in torch),
`sequence` (ESM-2 encoder), `layers` (attention modules), `network` (the model and recycling),
`losses` (training losses), `refine` (inference over spatial crops).
"""

from .config import GraphConfig, config_from_dict, default_config, tiny_config
from .network import GraphInputs, GraphNetwork, RoundOutput, run_rounds
from .refine import GraphOutput, RefineOptions, load_gnn, refine

__all__ = [
    "GraphConfig",
    "GraphInputs",
    "GraphNetwork",
    "GraphOutput",
    "RefineOptions",
    "RoundOutput",
    "config_from_dict",
    "default_config",
    "load_gnn",
    "refine",
    "run_rounds",
    "tiny_config",
]
