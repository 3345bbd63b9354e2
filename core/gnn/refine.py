"""Inference: refine Cα candidates (or a previous model) in a map into residues with frames,
atoms, residue-type probabilities, confidence, existence and chain-neighbour links.

``refine(density, start, sequences, network) -> GraphOutput``. Large graphs are cut into
spatial crops of at most ``max_crop_nodes`` nodes around seed nodes; every node is predicted
with its spatial context and takes its result from the crop where it is most central (closest
to the seed); a crop is given the map around its nodes only (`CROP_MAP_MARGIN`), so the work
follows the candidates, not the box. Each round runs all crops from the previous round's merged
result. Sequence embeddings are computed once per call; progress is reported per crop and
cancellation is checked between crops.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from ..checkpoints import checkpoint_path, load_checkpoint
from ..device import resolve_device
from ..errors import InputError
from ..geometry import Rigid, random_rotations, torsions_to_atom14
from ..maps import crop_box
from ..models import BuiltModel
from ..points import CalphaPoints
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..residues import BACKBONE_NAMES, NUM_AA, one_hot
from .config import config_from_dict
from ..features import NetworkMap
from .density import DensityVolume
from .network import GraphInputs, GraphNetwork, confidence_from_error

__all__ = [
    "CROP_MAP_MARGIN", "GraphOutput", "RefineOptions", "concatenate_graphs", "crop_assignment",
    "load_gnn", "refine",
]

_N, _CA, _C = (BACKBONE_NAMES.index(name) for name in ("N", "CA", "C"))
#: Progress stage name.
STAGE = "gnn"
#: Å of map kept around the nodes of a crop: each crop gets the map only where its nodes are,
#: not the whole box (a GPU holds a crop's few MB, not a 400³ map's 256 MB). More than the
#: network samples around a node (its density cube's corner: 5√3 ≈ 8.7 Å with 11 samples at
#: 1 Å; edges run between the crop's own nodes) plus the nodes' moves within a pass; beyond the
#: map's box the network sees 0 as before.
CROP_MAP_MARGIN = 16.0


@dataclasses.dataclass(frozen=True)
class RefineOptions:
    """Crop sizes (nodes), the seed of the random initial frames of `CalphaPoints` starts, and
    the Å of map around a crop's nodes that the network is given (`CROP_MAP_MARGIN`)."""

    max_crop_nodes: int = 300
    frame_seed: int = 0
    map_margin: float = CROP_MAP_MARGIN

    def __post_init__(self):
        if self.max_crop_nodes < 2:
            raise ValueError(f"max_crop_nodes must be at least 2, got {self.max_crop_nodes}")
        if not self.map_margin > 0:
            raise ValueError(f"map_margin must be positive (Å), got {self.map_margin}")


@dataclasses.dataclass(frozen=True, eq=False)
class GraphOutput:
    """The refined graph (NumPy). ``N`` nodes, ``K`` neighbour slots.

    Attributes
    ----------
    rotations : float32 ``[N, 3, 3]``
        Backbone frame rotations (columns = local axes in the map frame).
    translations : float32 ``[N, 3]``
        Cα positions, Å.
    atom14_positions : float32 ``[N, 14, 3]``
        All heavy atoms of the most probable residue type, Å (atom14 layout).
    atom14_mask : bool ``[N, 14]``
    aa_probs : float32 ``[N, 20]``
        Residue-type probabilities (``residues.AA_ORDER``).
    confidence : float32 ``[N]``
        0-100, from the predicted Cα error (`network.confidence_from_error`).
    existence : float32 ``[N]``
        Probability 0-1 that the node is a real residue.
    edge_index : int64 ``[N, K]``
        Neighbour node of each edge slot, -1 for an empty slot.
    next_prob, previous_prob : float32 ``[N, K]``
        Probability that ``edge_index[i, k]`` is the next / previous residue of node ``i``.
    torsions : float32 ``[N, 20, 5, 2]``
        ``(sin, cos)`` of psi and chi1..4 predicted for every residue type, so residues can be
        rebuilt with another type (`atoms_for`) once the sequence is threaded.
    """

    rotations: np.ndarray
    translations: np.ndarray
    atom14_positions: np.ndarray
    atom14_mask: np.ndarray
    aa_probs: np.ndarray
    confidence: np.ndarray
    existence: np.ndarray
    edge_index: np.ndarray
    next_prob: np.ndarray
    previous_prob: np.ndarray
    torsions: np.ndarray

    def __post_init__(self):
        n = len(self.translations)
        expected = {
            "rotations": (n, 3, 3), "translations": (n, 3), "atom14_positions": (n, 14, 3),
            "atom14_mask": (n, 14), "aa_probs": (n, NUM_AA), "confidence": (n,),
            "existence": (n,), "torsions": (n, NUM_AA, 5, 2),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {getattr(self, name).shape}")
        k = self.edge_index.shape[1] if self.edge_index.ndim == 2 else -1
        for name in ("edge_index", "next_prob", "previous_prob"):
            if getattr(self, name).shape != (n, k):
                raise ValueError(f"{name} must have shape [{n}, K], got {getattr(self, name).shape}")

    @property
    def num_nodes(self) -> int:
        return len(self.translations)

    def atoms_for(self, nodes: np.ndarray, aatype: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heavy atoms ``[M, 14, 3]`` (Å) and mask ``[M, 14]`` of ``nodes`` ``[M]`` rebuilt as
        residue types ``aatype`` ``[M]`` (20 = unknown: backbone only) from their frames and
        the torsions predicted for those types."""
        nodes = np.asarray(nodes, dtype=np.int64)
        aatype = torch.as_tensor(np.asarray(aatype, dtype=np.int64))
        frames = Rigid(torch.from_numpy(self.rotations[nodes]), torch.from_numpy(self.translations[nodes]))
        # [M, 20, 5, 2] gathered by type => [M, 5, 2] (unknown takes alanine's, unused)
        torsions = torch.from_numpy(self.torsions[nodes, aatype.clamp_max(NUM_AA - 1).numpy()])
        with torch.inference_mode():
            positions, mask = torsions_to_atom14(frames, aatype, torsions)
        return positions.numpy(), mask.numpy()

    def turned(self, nodes: np.ndarray) -> "GraphOutput":
        """This graph with the backbone frames of ``nodes`` (bool ``[N]``) turned to run the
        other way along their chain: each frame is rebuilt with its N and C swapped
        (`Rigid.from_3_points`), so the side chain and peptide atoms rebuilt from it
        (`atoms_for`, the predicted torsions) follow the chain, and their next- and
        previous-residue probabilities trade places. `cryobuild.chains.runs_against` tells
        which nodes point against the chain they were linked into."""
        nodes = np.flatnonzero(nodes)
        if not len(nodes):
            return self
        backbone = torch.from_numpy(self.atom14_positions[nodes, :3].astype(np.float32))
        frames = Rigid.from_3_points(backbone[:, 2], backbone[:, 1], backbone[:, 0])
        rotations = self.rotations.copy()
        rotations[nodes] = frames.rotations.numpy()
        next_prob, previous_prob = self.next_prob.copy(), self.previous_prob.copy()
        next_prob[nodes], previous_prob[nodes] = self.previous_prob[nodes], self.next_prob[nodes]
        turned = dataclasses.replace(self, rotations=rotations, next_prob=next_prob,
                                     previous_prob=previous_prob)
        positions, mask = turned.atoms_for(nodes, self.aa_probs[nodes].argmax(-1))
        atom14_positions, atom14_mask = self.atom14_positions.copy(), self.atom14_mask.copy()
        atom14_positions[nodes], atom14_mask[nodes] = positions, mask
        return dataclasses.replace(turned, atom14_positions=atom14_positions,
                                   atom14_mask=atom14_mask)

    def to_model(self, chain_id: str = "A") -> BuiltModel:
        """A `BuiltModel` of all nodes as residues of the most probable type, numbered 1..N in
        node order in one chain, with the confidence as B-factor (chains are not traced here)."""
        return BuiltModel(
            atom_positions=self.atom14_positions,
            atom_mask=self.atom14_mask,
            aatype=self.aa_probs.argmax(-1),
            residue_number=np.arange(1, self.num_nodes + 1),
            chain_id=np.full(self.num_nodes, chain_id),
            confidence=self.confidence,
        )


def concatenate_graphs(graphs: list[GraphOutput]) -> GraphOutput:
    """One graph of the nodes of ``graphs``, in order (a node ``i`` of the ``g``-th graph is
    node ``i`` plus the nodes of the graphs before it): each graph's edges shifted with its
    nodes, none between graphs, edge slots filled to the widest with empty ones (-1, p = 0)."""
    width = max(g.edge_index.shape[1] for g in graphs)
    edges, nexts, previous, shift = [], [], [], 0
    for g in graphs:
        pad = ((0, 0), (0, width - g.edge_index.shape[1]))
        edges.append(np.pad(np.where(g.edge_index >= 0, g.edge_index + shift, -1), pad, constant_values=-1))
        nexts.append(np.pad(g.next_prob, pad))
        previous.append(np.pad(g.previous_prob, pad))
        shift += g.num_nodes
    joined = {field.name: np.concatenate([getattr(g, field.name) for g in graphs])
              for field in dataclasses.fields(GraphOutput)
              if field.name not in ("edge_index", "next_prob", "previous_prob")}
    return GraphOutput(edge_index=np.concatenate(edges), next_prob=np.concatenate(nexts),
                       previous_prob=np.concatenate(previous), **joined)


Start = CalphaPoints | GraphOutput | BuiltModel


def _start_state(start: Start, options: RefineOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotations ``[N, 3, 3]``, Cα ``[N, 3]`` (Å) and residue-type prior ``[N, 20]`` of a start."""
    if isinstance(start, GraphOutput):
        return start.rotations, start.translations, start.aa_probs
    generator = torch.Generator().manual_seed(options.frame_seed)
    if isinstance(start, CalphaPoints):
        ca = start.xyz.astype(np.float32)
        rotations = random_rotations((len(ca),), generator).numpy()
        return rotations, ca, np.zeros((len(ca), NUM_AA), dtype=np.float32)
    if isinstance(start, BuiltModel):
        positions = torch.from_numpy(start.atom_positions)
        frames = Rigid.from_3_points(positions[:, _N], positions[:, _CA], positions[:, _C])
        has_backbone = torch.from_numpy(start.atom_mask[:, [_N, _CA, _C]].all(-1))
        random = random_rotations((start.num_residues,), generator)
        rotations = torch.where(has_backbone[:, None, None], frames.rotations, random)
        return rotations.numpy(), start.ca.astype(np.float32), one_hot(start.aatype)
    raise TypeError(f"start must be CalphaPoints, GraphOutput or BuiltModel, not {type(start).__name__}")


def crop_assignment(ca: np.ndarray, max_nodes: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Spatial crops covering all nodes, and the crop each node takes its result from.

    Seeds are chosen greedily: the first node not yet in any crop's inner half seeds a crop of
    its ``max_nodes`` nearest nodes, whose nearest half counts as covered. Each node belongs to
    the crop whose seed is closest to it.

    Parameters
    ----------
    ca : ``[N, 3]``
        Node positions, Å.
    max_nodes : int
        Largest crop.

    Returns
    -------
    crops : list of int64 ``[M_c]``
        Node indices of each crop.
    owner : int64 ``[N]``
        Index into ``crops`` of the crop each node's result comes from.
    """
    from scipy.spatial import cKDTree

    n = len(ca)
    if n <= max_nodes:
        return [np.arange(n)], np.zeros(n, dtype=np.int64)
    tree = cKDTree(ca)
    covered = np.zeros(n, dtype=bool)
    crops, seeds = [], []
    while not covered.all():
        seed = int(np.flatnonzero(~covered)[0])
        _, members = tree.query(ca[seed], k=max_nodes)
        crops.append(np.sort(members))
        seeds.append(seed)
        covered[members[: max_nodes // 2]] = True
        covered[seed] = True
    seed_distance = np.linalg.norm(ca[:, None] - ca[seeds][None], axis=-1)  # [N, crops]
    inside = np.zeros_like(seed_distance, dtype=bool)
    for index, members in enumerate(crops):
        inside[members, index] = True
    owner = np.where(inside, seed_distance, np.inf).argmin(1)
    return crops, owner.astype(np.int64)


def refine(
    view: NetworkMap,
    start: Start,
    sequences: list[str],
    network: GraphNetwork,
    *,
    rounds: int = 3,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    options: RefineOptions = RefineOptions(),
    prior: np.ndarray | None = None,
) -> GraphOutput:
    """Refine a graph of Cα nodes in the map ``view``.

    Parameters
    ----------
    view : NetworkMap
        The map as the networks see it (`cryobuild.features.standardise`; any voxel size).
    start : CalphaPoints, GraphOutput or BuiltModel
        Nodes to refine: points get random frames (seed ``options.frame_seed``) and no type
        prior; a previous output keeps its frames and probabilities; a model gives frames from
        its N, CA, C (random where missing) and its residue types as the prior.
    sequences : list of str
        The sample's sequences (one-letter codes); ignored by a network without sequence
        attention, required (non-empty) otherwise.
    network : GraphNetwork
        The trained network (`load_gnn`).
    rounds : int
        Recycling rounds (each runs every crop).
    device : str or torch.device, optional
        Via `resolve_device` (default: CUDA if available).
    progress : callable, optional
        ``progress(stage, fraction, message)`` at the start and once per crop and round.
    cancel : CancelToken, optional
        Checked between crops; raises `Cancelled`.
    prior : float ``[N, 20]``, optional
        The residue-type prior of the start's nodes, in place of the start's own (e.g. a
        model's known types one-hot and the probabilities a pass gave the others).

    Returns
    -------
    GraphOutput
        One row per start node, in the start's order.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    rotations, ca, own_prior = _start_state(start, options)
    if prior is None:
        prior = own_prior
    elif np.shape(prior) != own_prior.shape:
        raise ValueError(f"prior must have shape {own_prior.shape}, got {np.shape(prior)}")
    if len(ca) < 2:
        raise InputError(f"the graph network needs at least 2 nodes, got {len(ca)}")
    if network.config.use_sequence and not any(len(s) for s in sequences):
        raise InputError("this network needs the sample's sequence(s)")
    device = resolve_device(device)
    network = network.to(device).eval()
    crops, owner = crop_assignment(ca, options.max_crop_nodes)
    k = network.config.num_neighbours
    state = {
        "rotations": torch.as_tensor(rotations, dtype=torch.float32, device=device),
        "translations": torch.as_tensor(ca, dtype=torch.float32, device=device),
        "aa_prior": torch.as_tensor(prior, dtype=torch.float32, device=device),
    }
    n = len(ca)
    report(progress, STAGE, 0.0, f"{n} nodes in {len(crops)} crop{'s' if len(crops) > 1 else ''}")
    with torch.inference_mode():
        sequence = network.embed_sequences([s for s in sequences if len(s)])
        for round_index in range(rounds):
            last_round = round_index == rounds - 1
            merged = {
                "rotations": torch.empty(n, 3, 3, device=device),
                "translations": torch.empty(n, 3, device=device),
                "aa_prior": torch.empty(n, NUM_AA, device=device),
                "error": torch.empty(n, device=device),
                "existence": torch.empty(n, device=device),
                "atom14": torch.zeros(n, 14, 3, device=device),
                "atom14_mask": torch.zeros(n, 14, dtype=torch.bool, device=device),
                "edge_index": torch.full((n, k), -1, dtype=torch.long, device=device),
                "edge_prob": torch.zeros(n, k, 2, device=device),
                "torsions": torch.zeros(n, NUM_AA, 5, 2, device=device),
            }
            for crop_index, members in enumerate(crops):
                check_cancel(cancel)
                index = torch.as_tensor(members, device=device)
                ca_now = state["translations"][index].cpu().numpy()
                region = crop_box(view.density, ca_now.min(0) - options.map_margin,
                                  ca_now.max(0) + options.map_margin)
                inputs = GraphInputs(
                    volume=DensityVolume.from_map(region, device),
                    frames=Rigid(state["rotations"][index], state["translations"][index]),
                    aa_prior=state["aa_prior"][index],
                    sequence=sequence,
                )
                result = network(inputs)
                final = result.final
                mine = torch.as_tensor(owner[members] == crop_index, device=device)
                target = index[mine]
                merged["rotations"][target] = final.frames.rotations[mine]
                merged["translations"][target] = final.frames.translations[mine]
                probabilities = torch.softmax(final.aa_logits, dim=-1)
                merged["aa_prior"][target] = probabilities[mine]
                merged["error"][target] = final.predicted_error[mine]
                merged["existence"][target] = torch.sigmoid(final.existence_logit[mine])
                if last_round:
                    positions, mask = result.atom14(probabilities.argmax(-1))
                    merged["atom14"][target] = positions[mine]
                    merged["atom14_mask"][target] = mask[mine]
                    merged["torsions"][target] = result.torsions[mine].float()
                    width = final.neighbours.shape[1]
                    merged["edge_index"][target, :width] = index[final.neighbours[mine]]
                    merged["edge_prob"][target, :width] = torch.sigmoid(final.edge_logits[mine])
                done = round_index * len(crops) + crop_index + 1
                # "round r/R" only when this call recycles: the build's rounds call it once each
                # and name their round themselves.
                recycling = f"round {round_index + 1}/{rounds}, " if rounds > 1 else ""
                report(progress, STAGE, done / (rounds * len(crops)),
                       f"{recycling}crop {crop_index + 1}/{len(crops)}")
            state = {key: merged[key] for key in ("rotations", "translations", "aa_prior")}
    edge_prob = merged["edge_prob"].cpu().numpy()
    return GraphOutput(
        rotations=merged["rotations"].cpu().numpy(),
        translations=merged["translations"].cpu().numpy(),
        atom14_positions=merged["atom14"].cpu().numpy(),
        atom14_mask=merged["atom14_mask"].cpu().numpy(),
        aa_probs=merged["aa_prior"].cpu().numpy(),
        confidence=confidence_from_error(merged["error"]).cpu().numpy(),
        existence=merged["existence"].cpu().numpy(),
        edge_index=merged["edge_index"].cpu().numpy(),
        next_prob=edge_prob[..., 0],
        previous_prob=edge_prob[..., 1],
        torsions=merged["torsions"].cpu().numpy(),
    )


def load_gnn(
    checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None
) -> GraphNetwork:
    """The graph network of a checkpoint (default ``weights/gnn.pt``), in eval mode on
    ``device`` (via `resolve_device`)."""
    path = checkpoint if checkpoint is not None else checkpoint_path("gnn")
    state = load_checkpoint(path)
    network = GraphNetwork(config_from_dict(state["config"]))
    network.load_state_dict(state["model"])
    return network.to(resolve_device(device)).eval()
