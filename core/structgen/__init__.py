"""The Structure Generator (Li et al. 2021; METHODS §6): a GCN over the Cα contact graph and a
bidirectional LSTM over the sequence that order and label candidate residues along a sequence.

``thread_structgen(chains, aa_probs, ca, sequences, network) -> list[ChainMatch]`` is the
alternative to the HMM threader; `load_structgen` reads the trained network. Modules: `graph`
(contact graphs and samples, NumPy), `model` (the network, its loss and windowed inference),
`samples` (simulated training and benchmark inputs), `thread` (inference on detected nodes).
"""

from .graph import CONTACT_DISTANCE, NodeGraph, ThreadingSample, contact_edges
from .model import (
    StructGenConfig,
    StructureGenerator,
    config_from_dict,
    sequence_log_probs,
    threading_loss,
    tiny_config,
)
from .samples import (
    ChainRecord,
    SampleOptions,
    ScoreNoise,
    make_sample,
    read_chains,
    simulate_scores,
)
from .thread import ThreadOptions, assign_positions, load_structgen, thread_structgen

__all__ = [
    "CONTACT_DISTANCE",
    "ChainRecord",
    "NodeGraph",
    "SampleOptions",
    "ScoreNoise",
    "StructGenConfig",
    "StructureGenerator",
    "ThreadOptions",
    "ThreadingSample",
    "assign_positions",
    "config_from_dict",
    "contact_edges",
    "load_structgen",
    "make_sample",
    "read_chains",
    "sequence_log_probs",
    "simulate_scores",
    "thread_structgen",
    "threading_loss",
    "tiny_config",
]
