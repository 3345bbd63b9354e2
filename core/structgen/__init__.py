"""The Structure Generator (Li et al. 2021; METHODS §6): a GCN over the Cα contact graph and a
bidirectional LSTM over the sequence that order and label candidate residues along a sequence.

Modules: `graph` (contact graphs and samples, NumPy), `model` (the network, its loss and
windowed inference), `samples` (simulated training and benchmark inputs). Threading detected
nodes with it (``thread_structgen``, the alternative to the HMM threader) and reading the
trained network (``load_structgen``) are `cryobuild.thread.structgen`.
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

__all__ = [
    "CONTACT_DISTANCE",
    "ChainRecord",
    "NodeGraph",
    "SampleOptions",
    "ScoreNoise",
    "StructGenConfig",
    "StructureGenerator",
    "ThreadingSample",
    "config_from_dict",
    "contact_edges",
    "make_sample",
    "read_chains",
    "sequence_log_probs",
    "simulate_scores",
    "threading_loss",
    "tiny_config",
]
