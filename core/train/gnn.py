"""Train the graph network on simulated maps: ``python -m cryobuild.train.gnn``.

Resumable: every run starts from ``--checkpoint`` (default ``weights/gnn.pt``, or
``weights/gnn_noseq.pt`` with ``--no-sequence``) when it exists and saves back to it every
``--save-every`` steps and at the end, so training can continue over many sessions
(``nohup python -m cryobuild.train.gnn --minutes 60 &``). Progress goes to ``--log`` as JSON
lines: loss parts every ``--log-every`` steps, validation figures every ``--validate-every``.

Each step is one crop (METHODS §3): a training-split structure, a sphere of 64-160 residues
around a random residue (the nearest ones), a map simulated from the atoms near the crop into a
box around it (resolution 2.5-5 Å, B sharpen/blur -100 to +150 Å², coloured noise at a random SNR,
voxel 1.0-1.4 Å), Cα noise N(0, 1/√3) Å per axis, random initial frames, 10% of the
residues replaced by random 2-5-residue peptides (fake nodes, placed at random in the box), and
fake nodes on side-chain atoms (`GraphAugmentation.sidechain_decoys`), where the Cα detector's
false positives lie; the map blemishes of `cryobuild.train.realism`; every map standardised as
at inference (`cryobuild.features.standardise`). With ``--real-fold`` a fraction of the crops
come from that fold's real maps, with their deposited models as targets; with
``--detected-starts`` a share of those start from the Cα candidates of a detector that did not
train on the fold (`GraphAugmentation.detected_start_fraction`), as a build does.
Recycling: r ∈ {1, 2, 3} rounds, the first r-1 without gradients. Losses:
`cryobuild.gnn.losses.graph_loss`. Validation: `cryobuild.bench.gnn` on a few fixed held-out
structures at 3.0 Å (Cα and backbone RMSD, residue-type accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..bench.gnn import run_case, simulated_cases
from ..checkpoints import checkpoint_path, load_checkpoint
from ..data import default_split, fold_cases, read_structure
from ..geometry import Rigid, random_rotations
from ..gnn.config import GraphConfig, config_from_dict, default_config
from ..gnn.density import DensityVolume
from ..features import NetworkMap, standardise
from ..gnn.losses import GraphTargets, graph_loss
from ..gnn.network import GraphInputs, GraphNetwork, run_rounds
from ..maps import DensityMap, crop_box
from ..models import BuiltModel, read_model
from ..residues import AA_ORDER, BACKBONE_NAMES, MAX_ATOMS, NUM_AA, UNK_INDEX
from ..simulate import SimulationOptions, simulate_map
from ..residues import CA_CA_DISTANCE
from ..thread.profiles import background_frequencies
from .loop import TrainingRun, add_noise_colour_arg, add_real_fold_args, random_files, worker_rng
from .realism import Realism, coloured_noise, degrade_map, perturb_atoms

__all__ = ["GraphAugmentation", "GraphSample", "TrainingGraphs", "chain_links", "detected_nodes",
           "main"]

#: Largest C(i)-N(i+1) distance (Å) for a peptide bond between consecutive residues.
PEPTIDE_BOND_MAX = 2.0
#: Residues whose Cα lies this far (Å) outside the map box still go into the simulation
#: (their side chains reach into the box).
CONTEXT_MARGIN = 6.0
_N, _C = (BACKBONE_NAMES.index(name) for name in ("N", "C"))
#: atom14 slot of the first side-chain atom beyond Cβ (N, CA, C, O, CB come first).
_FIRST_BEYOND_CB = 5
#: A crop whose detected candidates stand for fewer residues than this starts from the deposited
#: Cα instead (`detected_nodes`; e.g. a crop centred where the detector found nothing).
MIN_DETECTED_NODES = 16
#: Dirichlet concentration of the compositions of `unrelated_sequences`: each residue type's
#: frequency varies by about +-60% of its background value.
UNRELATED_CONCENTRATION = 50.0


@dataclasses.dataclass(frozen=True)
class GraphAugmentation:
    """Ranges of the random choices per sample: residues per crop, resolution (Å), voxel (Å),
    extra B (Å²), log SNR, fraction of noise-free maps, the start Cα's rms error (Å), fraction of
    residues replaced by fake peptides, fake peptide length, map margin around the crop (Å),
    solvent level, and side-chain decoys: fake nodes on side-chain atoms beyond Cβ (a number
    drawn from this range times the crop's residue count; N(0, `decoy_noise`) Å per axis),
    the resolution `features.standardise` is told as a factor of the true one, and the
    fraction of crops taken from real maps (with their deposited models).

    Why side-chain decoys: the detector's false positives are not random. On two held-out
    simulated 3 Å maps, 25 of 112 and 51 of 188 detected points were more than 2 Å from every
    Cα; their median distance to the nearest atom was 0.8 Å and to the nearest Cα 2.7-3.3 Å,
    and 59 of the 76 sat on a side-chain atom beyond Cβ (`detect_calphas` with the committed
    detector, compared with the deposited atoms). Random peptides in the box teach the network
    little about those. On real maps at 3.2-4.5 Å they are more: 0.18-0.76 per matched Cα
    (MAVS, pneumolysin, 3LOS, ASC, EMD-2566; 72-100% of those on the protein within 1.5 Å of
    an atom of it; the bundled fold-B detector, thirteenth stop).
    """

    crop_residues: tuple[int, int] = (64, 160)
    resolution: tuple[float, float] = (2.5, 5.0)
    voxel_size: tuple[float, float] = (1.0, 1.4)
    b_extra: tuple[float, float] = (-100.0, 150.0)
    log_snr: tuple[float, float] = (math.log(0.5), math.log(8.0))
    noise_free_fraction: float = 0.1
    #: Range of the start Cα's rms error (Å), drawn per crop; each axis gets N(0, rms / sqrt(3)).
    #: (1, 1) is what the bundled networks trained with (a median error of 0.92 Å). The
    #: detector's Cα on real 3.6-4.8 Å maps lie a median 1.0-1.7 Å off (README, "What holds
    #: the bars back"), and the builds' sequence recall there falls from 0.66 to 0.42 when the
    #: deposited Cα are moved a median 0.92 Å rather than 1.23 Å (`bench.candidates`): errors
    #: the network had not seen in training. Trained 85 min with (0.8, 2.0) (`gnn_B26`,
    #: weights/MANIFEST.md, twenty-sixth stop), it read the detector's candidates' types 0.277 ->
    #: 0.287 on the fold-A maps but moved them no nearer and threaded no more: the default stays.
    start_error: tuple[float, float] = (1.0, 1.0)
    fake_fraction: float = 0.1
    fake_length: tuple[int, int] = (2, 5)
    map_margin: float = 6.0
    solvent_level: tuple[float, float] = (0.0, 0.3)
    sidechain_decoys: tuple[float, float] = (0.0, 0.4)
    decoy_noise: float = 0.4
    stated_resolution: tuple[float, float] = (0.85, 1.2)
    real_fraction: float = 0.0
    #: `SimulationOptions.noise_colour` range; (1, 1) is the signal-shaped noise the networks
    #: were first trained on
    noise_colour: tuple[float, float] = (1.0, 1.0)
    #: Fraction of crops whose sequences are replaced by unrelated ones (`unrelated_sequences`),
    #: the types still taught from the structure. Trained only with its own sequences, the
    #: network copied types from whatever sequence it was given: built with an unrelated
    #: sequence, simulated il2 maps threaded a chain to it on 9 of 30 noise seeds at E-values
    #: of 6e-5 to 1e-2 (`bench.decoys --il2-seeds 30`), as if the register were real (5 of 30
    #: with the composition correction, `thread.search.composition_factor`). Fine-tuned with
    #: 0.25 (weights/MANIFEST.md, seventh stop), 1 of 30 with the correction.
    unrelated_fraction: float = 0.0
    #: Fraction of real-map crops that are varied before the network sees them
    #: (`varied_real_crop`): coloured noise of `real_noise` times the molecule's standard
    #: deviation, `train.realism`'s map blemishes, and a stated resolution off by
    #: `stated_resolution`. Unvaried, the same eleven maps' crops come back voxel for voxel,
    #: and fine-tunes learned them by heart (weights/MANIFEST.md, second and eighth stops).
    #: Varied (0.8 of half the crops, 90 min; tenth stop) the fold-A types from the deposited
    #: Cα rose by 0.008 but whole builds threaded less: not in the bundled weights.
    real_vary_fraction: float = 0.0
    real_noise: tuple[float, float] = (0.1, 0.8)
    #: Fraction of real-map crops read at a worse resolution than their map's: varied as
    #: above (`varied_real_crop`) and standardised at a resolution drawn from
    #: `real_blur_resolution` (Å; from the map's own where that is worse than the range's
    #: best; maps worse than the range are left as they are). Why: the graph network reads the
    #: types of a 3.2 Å real map low-passed to 4.5 Å (EMD-2566, from its deposited Cα) 0.34 of
    #: the time and of the same map at 3.2 Å 0.46, while simulated 4 Å maps give 0.51 (scratch,
    #: thirty-ninth stop): at 3.5-5.5 Å it has seen only our simulator's texture and the few
    #: real maps of its fold at those resolutions, and each fold's 2.3-3.2 Å maps can show it
    #: real density at the band's resolutions with their accurate deposited models. Half the
    #: real crops read so for 55 min (`weights/gnn_realblur.pt`, weights/MANIFEST.md,
    #: thirty-ninth stop), the fold-A types from the deposited Cα rose 0.305 -> 0.312 and whole
    #: builds threaded no more: not in the bundled weights.
    real_blur_fraction: float = 0.0
    real_blur_resolution: tuple[float, float] = (3.5, 5.5)
    #: Largest shift of the start Cα along the chain, as a fraction of the step to the next (or
    #: the previous) residue's Cα, drawn per stretch of `chain_shift_run` residues that all
    #: shift alike (`_along_chain_shifts`); below 0.5, so the nearest deposited Cα stays the
    #: node's own. Why: at 3.6-4.5 Å the detector's Cα lie a median 1.3-1.4 Å from the
    #: deposited ones (pneumolysin, ASC, 3LOS, MAVS; 39-48% nearer a Cα-Cα midpoint than to a
    #: Cα), and a network trained only on i.i.d. noise does not move them (pneumolysin: rms
    #: 1.51 -> 1.52 Å over 3 rounds, where i.i.d. noise of 1.45 Å went to 1.06 Å). Deposited Cα
    #: shifted alike by up to half a step cost the residue types about as much as starting
    #: from the detector does (negative log-likelihood of the deposited types 2.51 -> 2.66
    #: nats on pneumolysin, 2.31 -> 2.57 on ASC; scratch checks, thirteenth stop). Off by
    #: default: a 90-minute fine-tune with 0.45 did not learn to move the runs back (its Cα
    #: loss stayed near 1.0; weights/MANIFEST.md, `gnn_B15`).
    chain_shift: float = 0.0
    chain_shift_run: tuple[int, int] = (4, 16)
    #: Fraction of real-map crops whose nodes are the Cα candidates a detector found in that
    #: map (`detected_nodes`), not the deposited Cα plus noise: their errors are the ones a
    #: build starts from (runs shifted along the chain, false candidates on side chains,
    #: residues without a candidate), which neither the noise nor `chain_shift` nor
    #: `sidechain_decoys` reproduce. Candidates get N(0, `detected_jitter`) Å per axis so that
    #: crops of one map differ; a candidate within `detected_match` Å of a deposited Cα (one to
    #: one, `evaluate.match_calpha`) takes that residue's targets, the others are fake nodes.
    detected_start_fraction: float = 0.0
    detected_jitter: float = 0.3
    detected_match: float = 3.0


@dataclasses.dataclass(frozen=True)
class GraphSample:
    """One training crop (NumPy; ``N`` nodes: real ones first, then fake ones).

    Attributes
    ----------
    density : DensityMap
        The map of the box around the crop, standardised (`features.standardise`).
    rotations : float32 ``[N, 3, 3]``
        Random initial frames.
    ca : float32 ``[N, 3]``
        Noisy Cα of the real nodes, fake peptides' Cα; Å.
    real : bool ``[N]``
    aatype : int64 ``[N]`` (20 for fake nodes)
    atom14 : float32 ``[N, 14, 3]`` Å; atom14_mask : bool ``[N, 14]``
    next_node, previous_node : int64 ``[N]`` (-1: none)
    sequences : tuple of str
        The structure's distinct chain sequences.
    """

    density: DensityMap
    rotations: np.ndarray
    ca: np.ndarray
    real: np.ndarray
    aatype: np.ndarray
    atom14: np.ndarray
    atom14_mask: np.ndarray
    next_node: np.ndarray
    previous_node: np.ndarray
    sequences: tuple[str, ...]

    def inputs_and_targets(self, network: GraphNetwork) -> tuple[GraphInputs, GraphTargets]:
        """Tensors for `run_rounds` and `graph_loss` (the sequence embedding keeps gradients)."""
        device = network.device
        density = self.density
        ca = torch.from_numpy(self.ca).to(device)
        inputs = GraphInputs(
            volume=DensityVolume.from_map(density, device),
            frames=Rigid(torch.from_numpy(self.rotations).to(device), ca),
            aa_prior=torch.zeros(len(self.ca), NUM_AA, device=device),
            sequence=network.embed_sequences(list(self.sequences)),
        )
        targets = GraphTargets(
            real=torch.from_numpy(self.real).to(device),
            aatype=torch.from_numpy(self.aatype).to(device),
            atom14=torch.from_numpy(self.atom14).to(device),
            atom14_mask=torch.from_numpy(self.atom14_mask).to(device),
            next_node=torch.from_numpy(self.next_node).to(device),
            previous_node=torch.from_numpy(self.previous_node).to(device),
        )
        return inputs, targets


def chain_links(model: BuiltModel) -> np.ndarray:
    """Bool ``[R]``: residue ``i`` is peptide-bonded to residue ``i + 1`` (same chain, both
    atoms present, C(i)-N(i+1) < `PEPTIDE_BOND_MAX`); the last entry is False."""
    links = np.zeros(model.num_residues, dtype=bool)
    same_chain = model.chain_id[:-1] == model.chain_id[1:]
    present = model.atom_mask[:-1, _C] & model.atom_mask[1:, _N]
    bond = np.linalg.norm(model.atom_positions[:-1, _C] - model.atom_positions[1:, _N], axis=-1)
    links[:-1] = same_chain & present & (bond < PEPTIDE_BOND_MAX)
    return links


def _stretches(n: int, count: int, lengths: tuple[int, int], rng) -> np.ndarray:
    """Bool ``[n]`` with about ``count`` positions set, in stretches of the given lengths."""
    mask = np.zeros(n, dtype=bool)
    while mask.sum() < count:
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        start = int(rng.integers(0, max(n - length, 1)))
        mask[start : start + length] = True
    return mask


def _fake_peptides(count: int, lo: np.ndarray, hi: np.ndarray, lengths, rng) -> np.ndarray:
    """Cα ``[M, 3]`` (M ≈ count) of random-walk peptides starting at random points in a box."""
    chains = []
    total = 0
    while total < count:
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        steps = rng.normal(size=(length, 3))
        steps *= CA_CA_DISTANCE / np.linalg.norm(steps, axis=-1, keepdims=True)
        steps[0] = rng.uniform(lo, hi)
        chains.append(np.cumsum(steps, axis=0))
        total += length
    return np.concatenate([np.zeros((0, 3)), *chains])


def _sidechain_decoys(model: BuiltModel, chosen: np.ndarray, aug: GraphAugmentation,
                      rng) -> np.ndarray:
    """Positions ``[M, 3]`` (Å) of fake nodes on random side-chain atoms beyond Cβ of the
    ``chosen`` residues (see `GraphAugmentation`)."""
    count = round(float(rng.uniform(*aug.sidechain_decoys)) * len(chosen))
    residue, slot = np.nonzero(model.atom_mask[chosen, _FIRST_BEYOND_CB:])
    if count == 0 or len(residue) == 0:
        return np.zeros((0, 3))
    pick = rng.choice(len(residue), size=min(count, len(residue)), replace=False)
    atoms = model.atom_positions[chosen[residue[pick]], _FIRST_BEYOND_CB + slot[pick]]
    return atoms + rng.normal(0, aug.decoy_noise, atoms.shape)


def _along_chain_shifts(model: BuiltModel, kept: np.ndarray, aug: GraphAugmentation,
                        rng) -> np.ndarray:
    """Offsets ``[len(kept), 3]`` (Å) of the ``kept`` residues' start Cα along their chain:
    per stretch of `GraphAugmentation.chain_shift_run` residues one fraction ``f`` drawn from
    ±`GraphAugmentation.chain_shift`, each residue moved ``|f|`` of the way to the next
    residue's Cα (``f > 0``) or the previous one's (``f < 0``); no move where that neighbour
    is not peptide-bonded."""
    offsets = np.zeros((len(kept), 3))
    if aug.chain_shift <= 0 or not len(kept):
        return offsets
    fraction = np.empty(len(kept))
    start = 0
    while start < len(kept):
        length = int(rng.integers(aug.chain_shift_run[0], aug.chain_shift_run[1] + 1))
        fraction[start : start + length] = rng.uniform(-aug.chain_shift, aug.chain_shift)
        start += length
    links = chain_links(model)
    last = model.num_residues - 1
    forward = (fraction > 0) & links[kept]
    backward = (fraction < 0) & (kept > 0) & links[np.maximum(kept - 1, 0)]
    step = np.zeros((len(kept), 3))
    step[forward] = model.ca[np.minimum(kept[forward] + 1, last)] - model.ca[kept[forward]]
    step[backward] = model.ca[kept[backward] - 1] - model.ca[kept[backward]]
    return np.abs(fraction)[:, None] * step


def _box_structure(structure, model: BuiltModel, lo: np.ndarray, hi: np.ndarray):
    """A copy of ``structure`` with only the residues whose Cα lies within `CONTEXT_MARGIN` of
    the box ``lo``-``hi`` (Å), so the periodic simulation cell does not wrap far atoms in."""
    keep = {
        (chain, int(number))
        for chain, number, ca in zip(model.chain_id, model.residue_number, model.ca)
        if np.all(ca > lo - CONTEXT_MARGIN) and np.all(ca < hi + CONTEXT_MARGIN)
    }
    st = structure.clone()
    st.remove_ligands_and_waters()
    for chain in st[0]:
        for index in range(len(chain) - 1, -1, -1):
            if (chain.name, chain[index].seqid.num) not in keep:
                del chain[index]
    st.remove_empty_chains()
    return st


def varied_real_crop(crop: DensityMap, boxed, resolution: float, aug: GraphAugmentation,
                     realism: Realism, rng) -> DensityMap:
    """A standardised real-map crop (molecule sd 1) varied as `GraphAugmentation.
    real_vary_fraction` says: plus coloured noise, `degrade_map`'s blemishes around the atoms
    of ``boxed`` (a `gemmi.Structure`), standardised again at ``resolution`` Å times a factor
    drawn from `GraphAugmentation.stated_resolution`. Same grid as ``crop``."""
    noisy = crop.with_grid(crop.grid + float(rng.uniform(*aug.real_noise))
                           * coloured_noise(crop.grid.shape, crop.voxel_size[::-1], rng))
    atoms = np.array([a.pos.tolist() for ch in boxed[0] for r in ch for a in r]).reshape(-1, 3)
    degraded = degrade_map(noisy, atoms, dataclasses.replace(realism, pad_fraction=0.0), rng)
    return standardise(degraded, resolution * float(rng.uniform(*aug.stated_resolution))).density


def detected_nodes(model: BuiltModel, candidates: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   aug: GraphAugmentation, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detector's candidates ``[M, 3]`` (Å) inside the box ``lo``-``hi`` as a crop's nodes
    (`GraphAugmentation.detected_start_fraction`): residues of ``model`` they stand for
    (int64 ``[K]``, ascending), their start Cα ``[K, 3]`` and the unmatched candidates ``[F, 3]``
    (fake nodes), all jittered by N(0, `GraphAugmentation.detected_jitter`) Å per axis. The
    pairing is the benchmarks' (`evaluate.match_calpha`: one to one, as many pairs as there can
    be, then the shortest)."""
    from ..evaluate import match_calpha

    inside = candidates[np.all((candidates >= lo) & (candidates <= hi), axis=1)]
    inside = inside + rng.normal(0.0, aug.detected_jitter, inside.shape)
    nodes, residues = match_calpha(inside, model.ca, cutoff=aug.detected_match)
    order = np.argsort(residues)
    fake = np.ones(len(inside), dtype=bool)
    fake[nodes] = False
    return residues[order], inside[nodes[order]].reshape(-1, 3), inside[fake]


def make_sample(structure, model: BuiltModel, sequences, aug: GraphAugmentation, rng,
                realism: Realism = Realism(), real_view: NetworkMap | None = None,
                candidates: np.ndarray | None = None) -> GraphSample:
    """One training crop of ``model`` (atom14, from the same file as ``structure``): its map
    simulated with `realism`'s blemishes, or cut from ``real_view`` (the standardised real map
    that ``model`` was deposited with; ``candidates`` ``[M, 3]``, Å: a detector's Cα candidates
    in it, the nodes of `GraphAugmentation.detected_start_fraction` of its crops)."""
    ca_all = model.ca
    centre = ca_all[int(rng.integers(model.num_residues))]
    size = min(int(rng.integers(aug.crop_residues[0], aug.crop_residues[1] + 1)), model.num_residues)
    chosen = np.sort(np.argsort(np.linalg.norm(ca_all - centre, axis=-1))[:size])
    replaced = _stretches(size, round(aug.fake_fraction * size), aug.fake_length, rng)
    kept = chosen[~replaced]

    lo = ca_all[chosen].min(0) - aug.map_margin
    hi = ca_all[chosen].max(0) + aug.map_margin
    if real_view is not None:
        density = crop_box(real_view.density, lo, hi)
        resolution = real_view.map_resolution
        best, worst = aug.real_blur_resolution
        blurred = rng.random() < aug.real_blur_fraction and resolution < worst
        if blurred:
            resolution = float(rng.uniform(max(resolution, best), worst))
        if blurred or rng.random() < aug.real_vary_fraction:
            density = varied_real_crop(density, _box_structure(structure, model, lo, hi),
                                       resolution, aug, realism, rng)
    else:
        voxel = float(rng.uniform(*aug.voxel_size))
        snr = None if rng.random() < aug.noise_free_fraction else math.exp(rng.uniform(*aug.log_snr))
        resolution = float(rng.uniform(*aug.resolution))
        options = SimulationOptions(
            resolution=resolution,
            voxel_size=voxel,
            b_extra=float(rng.uniform(*aug.b_extra)),
            snr=snr,
            solvent_level=float(rng.uniform(*aug.solvent_level)),
            noise_colour=float(rng.uniform(*aug.noise_colour)),
            origin=tuple(lo),
            shape_xyz=tuple(int(n) for n in np.ceil((hi - lo) / voxel).astype(int) + 1),
        )
        boxed = _box_structure(structure, model, lo, hi)
        perturb_atoms(boxed, realism, rng)
        density = simulate_map(boxed, options, rng)
        atoms = np.array([a.pos.tolist() for ch in boxed[0] for r in ch for a in r])
        density = degrade_map(density, atoms, realism, rng)
        # degrade_map may pad; the crop keeps the box the model was simulated in
        density = crop_box(density, lo, hi)
        density = standardise(density, resolution * float(rng.uniform(*aug.stated_resolution))).density

    if rng.random() < aug.unrelated_fraction:
        sequences = unrelated_sequences(sequences, rng)
    detected = (detected_nodes(model, candidates, lo, hi, aug, rng)
                if candidates is not None and rng.random() < aug.detected_start_fraction else None)
    if detected is not None and len(detected[0]) >= MIN_DETECTED_NODES:
        kept, start, fake = detected
    else:
        start = (ca_all[kept] + _along_chain_shifts(model, kept, aug, rng)
                 + rng.normal(0, rng.uniform(*aug.start_error) / math.sqrt(3.0), (len(kept), 3)))
        fake = _fake_peptides(len(chosen) - len(kept), lo + aug.map_margin, hi - aug.map_margin,
                              aug.fake_length, rng)
        fake = np.concatenate([fake, _sidechain_decoys(model, chosen, aug, rng)])
    n_real, n = len(kept), len(kept) + len(fake)
    ca = np.concatenate([start, fake])
    # residue index -> node index of the kept residues
    node_of = np.full(model.num_residues, -1, dtype=np.int64)
    node_of[kept] = np.arange(n_real)
    links = chain_links(model)
    following = np.where(links[kept], node_of[np.minimum(kept + 1, model.num_residues - 1)], -1)
    preceding = np.where(links[np.maximum(kept - 1, 0)] & (kept > 0), node_of[np.maximum(kept - 1, 0)], -1)
    pad = n - n_real
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    return GraphSample(
        density=density,
        rotations=random_rotations((n,), generator).numpy(),
        ca=ca.astype(np.float32),
        real=np.arange(n) < n_real,
        aatype=np.concatenate([model.aatype[kept], np.full(pad, UNK_INDEX)]).astype(np.int64),
        atom14=np.concatenate([model.atom_positions[kept], np.zeros((pad, MAX_ATOMS, 3), np.float32)]),
        atom14_mask=np.concatenate([model.atom_mask[kept], np.zeros((pad, MAX_ATOMS), bool)]),
        next_node=np.concatenate([following, np.full(pad, -1)]).astype(np.int64),
        previous_node=np.concatenate([preceding, np.full(pad, -1)]).astype(np.int64),
        sequences=tuple(dict.fromkeys(s for s in sequences if s)),
    )


def unrelated_sequences(sequences, rng: np.random.Generator) -> tuple[str, ...]:
    """One unrelated sequence per sequence of ``sequences``, of its length: with even odds
    for the whole crop, either shuffles (the same composition, no register: the decoys of
    `bench.decoys`) or i.i.d. residues of a composition drawn per sequence from a Dirichlet
    around HMMER's background (concentration `UNRELATED_CONCENTRATION`: typically a few
    residue types twice as frequent as usual, as in the R-, P- and G-rich sequence of the
    tests)."""
    letters = np.array(list(AA_ORDER))
    if rng.random() < 0.5:
        return tuple("".join(rng.permutation(list(sequence))) for sequence in sequences)
    background = background_frequencies()
    unrelated = []
    for sequence in sequences:
        composition = rng.dirichlet(UNRELATED_CONCENTRATION * background / background.sum())
        unrelated.append("".join(rng.choice(letters, size=len(sequence), p=composition)))
    return tuple(unrelated)


def _read_both(path) -> tuple:
    """The gemmi structure and the `BuiltModel` of one file."""
    return read_structure(path), read_model(path)


class TrainingGraphs(torch.utils.data.IterableDataset):
    """Endless `GraphSample` crops (several per structure) of random training structures in
    simulated maps, and with probability ``aug.real_fraction`` of the real maps
    ``real_cases`` with their deposited models; ``start_detector`` (a detector checkpoint that
    did not train on those maps) finds the candidates of `GraphAugmentation.
    detected_start_fraction`, once per map."""

    def __init__(self, records, aug: GraphAugmentation, crops_per_structure: int, seed: int,
                 real_cases=(), realism: Realism = Realism(), start_detector: Path | None = None):
        self.start_detector = start_detector
        self.records = list(records)
        self.aug = aug
        self.realism = realism
        self.crops_per_structure = crops_per_structure
        self.seed = seed
        self.real_cases = list(real_cases)

    def __iter__(self):
        rng = worker_rng(self.seed)
        real = {}
        detector = None
        if self.start_detector is not None and self.real_cases:
            from ..detect.network import load_detector

            detector = load_detector(self.start_detector)
        for record, (structure, model) in random_files(self.records, _read_both, rng):
            view = candidates = None
            sequences = record.sequences
            if self.real_cases and rng.random() < self.aug.real_fraction:
                case = self.real_cases[int(rng.integers(len(self.real_cases)))]
                if case.name not in real:
                    real[case.name] = _real_case(case, detector)
                structure, model, sequences, view, candidates = real[case.name]
            if model.num_residues < self.aug.crop_residues[0] // 2:
                continue
            for _ in range(self.crops_per_structure):
                yield make_sample(structure, model, sequences, self.aug, rng, self.realism,
                                  real_view=view, candidates=candidates)


def _real_case(case, detector=None) -> tuple:
    """(structure, model, sequences, standardised map, Cα candidates ``[M, 3]`` Å that
    ``detector`` finds in it, or None without one) of a real `DevCase`."""
    from ..detect.inference import detect_calphas
    from ..maps import read_map
    from ..sequences import read_fasta

    structure, model = _read_both(case.model_path)
    sequences = tuple(s.residues for s in read_fasta(case.fasta_path)) if case.fasta_path else ()
    view = standardise(read_map(case.map_path), case.resolution)
    candidates = detect_calphas(view, detector).points.xyz if detector is not None else None
    return structure, model, sequences, view, candidates


def validation_figures(network: GraphNetwork, cases) -> dict[str, float]:
    """Mean Cα RMSD, backbone RMSD and residue-type accuracy over the validation cases."""
    network.eval()
    results = [run_case(case, network, rounds=3, device=network.device) for case in cases]
    network.train()
    return {
        key: round(float(np.nanmean([r[key] for r in results])), 4)
        for key in ("ca_rmsd", "bb_rmsd", "aa_accuracy", "confidence_error_corr")
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="default: weights/gnn.pt (weights/gnn_noseq.pt with --no-sequence)")
    parser.add_argument("--no-sequence", dest="use_sequence", action="store_false",
                        help="the ablation without sequence attention")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--final-lr", type=float, default=None,
                        help="anneal the learning rate on a half cosine from --lr to this over "
                             "the session's --minutes (default: constant --lr)")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--validation-cases", type=int, default=3)
    parser.add_argument("--crops-per-structure", type=int, default=4)
    parser.add_argument("--log", type=Path, default=Path("runs/gnn/log.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    add_real_fold_args(parser, real_fraction=0.3)
    parser.add_argument("--resolution", type=float, nargs=2, metavar=("BEST", "WORST"), default=None,
                        help="resolution range of the training maps in Å (default: "
                             f"{GraphAugmentation.resolution[0]:g} {GraphAugmentation.resolution[1]:g})")
    add_noise_colour_arg(parser)
    parser.add_argument("--element-weight-fraction", type=float,
                        default=Realism.element_weight_fraction,
                        help="fraction of simulated maps whose N, O and S atoms are reweighted "
                             "(realism.ELEMENT_WEIGHTS)")
    parser.add_argument("--unrelated-fraction", type=float,
                        default=GraphAugmentation.unrelated_fraction,
                        help="fraction of crops given unrelated sequences "
                             "(GraphAugmentation.unrelated_fraction)")
    parser.add_argument("--real-vary-fraction", type=float,
                        default=GraphAugmentation.real_vary_fraction,
                        help="fraction of real-map crops varied by noise, blemishes and the "
                             "stated resolution (GraphAugmentation.real_vary_fraction)")
    parser.add_argument("--real-blur-fraction", type=float,
                        default=GraphAugmentation.real_blur_fraction,
                        help="fraction of real-map crops read at a worse resolution, drawn from "
                             "--real-blur-resolution (GraphAugmentation.real_blur_fraction)")
    parser.add_argument("--real-blur-resolution", type=float, nargs=2, metavar=("BEST", "WORST"),
                        default=GraphAugmentation.real_blur_resolution,
                        help="range (Å) of the resolutions --real-blur-fraction reads real crops at")
    parser.add_argument("--chain-shift", type=float, default=GraphAugmentation.chain_shift,
                        help="largest shift of the start Cα along the chain, as a fraction of a "
                             "residue step (GraphAugmentation.chain_shift; below 0.5)")
    parser.add_argument("--start-error", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        default=GraphAugmentation.start_error,
                        help="range of the start Cα's rms error in Å, drawn per crop "
                             "(GraphAugmentation.start_error)")
    parser.add_argument("--sidechain-decoys", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        default=GraphAugmentation.sidechain_decoys,
                        help="range of side-chain decoy nodes per residue of a crop "
                             "(GraphAugmentation.sidechain_decoys)")
    parser.add_argument("--detected-starts", type=float, default=0.0, metavar="FRACTION",
                        help="start this fraction of the real-map crops from the Cα candidates "
                             "that --start-detector finds (GraphAugmentation."
                             "detected_start_fraction)")
    parser.add_argument("--start-detector", type=Path, default=None,
                        help="detector checkpoint of --detected-starts, one that did not train on "
                             "--real-fold's maps (for fold B: weights/detect_foldA.pt)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (the data worker takes "
                             "another core; measured: 1 thread ~0.3 s/step, 2 threads beside "
                             "other CPU load several times slower)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.chain_shift < 0.5:
        parser.error(f"--chain-shift must be in [0, 0.5), got {args.chain_shift}")
    if args.detected_starts and (args.start_detector is None or not args.real_fold):
        parser.error("--detected-starts needs --start-detector and --real-fold")
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        args.checkpoint = checkpoint_path("gnn" if args.use_sequence else "gnn_noseq")

    state = load_checkpoint(args.checkpoint) if args.checkpoint.exists() else None
    config: GraphConfig = (
        config_from_dict(state["config"]) if state else default_config(use_sequence=args.use_sequence)
    )
    if config.use_sequence != args.use_sequence:
        raise SystemExit(f"{args.checkpoint} has use_sequence={config.use_sequence}; "
                         "pass --checkpoint to train the other variant")
    network = GraphNetwork(config)
    optimizer = torch.optim.AdamW(
        [p for p in network.parameters() if p.requires_grad], lr=args.lr, weight_decay=1e-4
    )
    real_cases = fold_cases(args.real_fold) if args.real_fold else []
    run = TrainingRun(args.checkpoint, args.log, network, optimizer, dataclasses.asdict(config),
                      extra={"real_maps": sorted(c.name for c in real_cases),
                             "noise_colour": list(args.noise_colour),
                             "unrelated_fraction": args.unrelated_fraction,
                             "real_vary_fraction": args.real_vary_fraction,
                             "real_blur_fraction": args.real_blur_fraction,
                             "real_blur_resolution": list(args.real_blur_resolution),
                             "element_weight_fraction": args.element_weight_fraction,
                             "chain_shift": args.chain_shift,
                             "start_error": list(args.start_error),
                             "sidechain_decoys": list(args.sidechain_decoys),
                             "detected_starts": args.detected_starts,
                             "start_detector": str(args.start_detector)})
    run.resume(state)
    run.set_lr(args.lr)

    split = default_split()
    augmentation = GraphAugmentation(real_fraction=args.real_fraction if real_cases else 0.0,
                                     noise_colour=tuple(args.noise_colour),
                                     unrelated_fraction=args.unrelated_fraction,
                                     real_vary_fraction=args.real_vary_fraction,
                                     real_blur_fraction=args.real_blur_fraction,
                                     real_blur_resolution=tuple(args.real_blur_resolution),
                                     chain_shift=args.chain_shift,
                                     start_error=tuple(args.start_error),
                                     sidechain_decoys=tuple(args.sidechain_decoys),
                                     detected_start_fraction=args.detected_starts,
                                     **({"resolution": tuple(args.resolution)} if args.resolution else {}))
    dataset = TrainingGraphs(split["train"], augmentation, args.crops_per_structure,
                             seed=args.seed + run.step, real_cases=real_cases,
                             realism=Realism(element_weight_fraction=args.element_weight_fraction),
                             start_detector=args.start_detector if args.detected_starts else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, prefetch_factor=4)
    validation = simulated_cases(args.validation_cases, 3.0) if args.validate_every else []
    rng = np.random.default_rng([args.seed, run.step])

    running: dict[str, list[float]] = {}
    step_seconds: list[float] = []
    run.start()
    for sample in loader:
        began = time.time()
        run.anneal_lr(args.lr, args.final_lr, args.minutes)
        inputs, targets = sample.inputs_and_targets(network)
        output = run_rounds(network, inputs, int(rng.integers(1, 4)))
        loss, parts = graph_loss(output, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        step_seconds.append(run.tick() - began)
        for name, value in {**parts, "nodes": float(len(sample.ca))}.items():
            running.setdefault(name, []).append(value)
        if run.step % args.log_every == 0:
            run.log({"step": run.step, **{k: round(float(np.mean(v)), 4) for k, v in running.items()},
                     "step_seconds": round(float(np.mean(step_seconds)), 3),
                     "lr": float(f"{optimizer.param_groups[0]['lr']:.3g}"), "wall": round(run.wall_seconds)})
            running, step_seconds = {}, []
        if validation and run.step % args.validate_every == 0:
            run.add_validation("validation_3.0A", validation_figures(network, validation))
        if run.end_step(args.save_every, args.minutes, args.steps):
            break
    run.finish()


if __name__ == "__main__":
    main()
