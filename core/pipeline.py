"""The build: map + sequences -> a threaded, relaxed atomic model (METHODS §2-4).

``build()`` runs the stages in order and passes typed objects between them; it takes no file
paths and writes nothing (the CLI and the engine write at the edges):

1. Cα detection (`detect.inference.detect_calphas`) -> `CalphaPoints`;
2. per round: the graph network (`gnn.refine.refine`, one pass) from the previous round's
   model -> `GraphOutput`; chains linked from predicted peptide links (`chains.link_chains`);
   sequence threading with pyhmmer (`assignment.thread_chains`, `join_matches`,
   `name_chains`); the threaded model feeds the next round;
3. the final model: threaded chains of at least `MIN_CHAIN_LENGTH` residues, residues with a
   sequence position only, relaxed (`relax.relax`); the raw model keeps every chain.

``on_result(kind, payload)`` is called with ``("points", CalphaPoints)`` and, after each round,
``("round", RoundResult)``, so a viewer can show progress as it happens.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import numpy as np

from .assignment import NamedChain, join_matches, name_chains, thread_chains
from .chains import ResiduePredictions, link_chains
from .errors import BuildError, InputError
from .maps import DensityMap
from .models import BuiltModel
from .points import CalphaPoints
from .progress import CancelToken, ProgressCallback, check_cancel, report
from .residues import NUM_AA
from .sequences import Sequence

__all__ = [
    "MIN_CHAIN_LENGTH",
    "BuildOptions",
    "Networks",
    "ChainReport",
    "RoundResult",
    "BuildResult",
    "build",
]

#: Chains shorter than this (residues) are left out of the final model (METHODS §4).
MIN_CHAIN_LENGTH = 4
#: Fewest Cα candidates a map must give before a build is attempted.
MIN_POINTS = 8
THREADERS = ("hmm", "structgen")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """rounds: graph-network passes, each followed by threading; threader: "hmm" (pyhmmer);
    detection_threshold: Cα probability threshold (None: the detector's default); relax: run
    the geometry relaxation on the final model; seed: random seed (initial frames, HMM
    calibration)."""

    rounds: int = 3
    threader: str = "hmm"
    detection_threshold: float | None = None
    relax: bool = True
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.rounds, int) or not 1 <= self.rounds <= 20:
            raise InputError(f"rounds must be a whole number from 1 to 20, got {self.rounds!r}")
        if self.threader not in THREADERS:
            raise InputError(f"threader must be one of {', '.join(THREADERS)}, got {self.threader!r}")
        if self.detection_threshold is not None and not 0 < self.detection_threshold < 1:
            raise InputError(f"detection threshold must be in (0, 1), got {self.detection_threshold}")


@dataclasses.dataclass(frozen=True, eq=False)
class Networks:
    """The trained networks, loaded once and reused across builds (on ``device``)."""

    detector: object
    gnn: object
    device: object

    @classmethod
    def load(cls, device: str | None = "auto") -> "Networks":
        from .detect.network import load_detector
        from .device import resolve_device
        from .gnn.refine import load_gnn

        resolved = resolve_device(device)
        return cls(load_detector(device=resolved), load_gnn(device=resolved), resolved)


@dataclasses.dataclass(frozen=True)
class ChainReport:
    """One chain of a model: its ID, the sequence it was threaded to ("" if none), first and
    last residue number, residue count, match score (bits), E-value and mean confidence."""

    chain_id: str
    sequence: str
    first: int
    last: int
    residues: int
    score: float
    evalue: float
    mean_confidence: float


@dataclasses.dataclass(frozen=True, eq=False)
class RoundResult:
    """A round's threaded model (every chain) with its per-residue residue-type probabilities
    ``aa_probs`` ``[R, 20]`` and chain reports."""

    index: int
    model: BuiltModel
    aa_probs: np.ndarray
    chains: tuple[ChainReport, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class BuildResult:
    """Everything a build produced.

    points: the detected Cα candidates; rounds: each round's model; raw: the last round's model
    with every chain; final: threaded chains of >= `MIN_CHAIN_LENGTH` residues, relaxed;
    final_aa_probs ``[R, 20]``; final_chains: reports for ``final``; relax_report (or None);
    seconds: wall time per stage.
    """

    points: CalphaPoints
    rounds: tuple[RoundResult, ...]
    raw: BuiltModel
    final: BuiltModel
    final_aa_probs: np.ndarray
    final_chains: tuple[ChainReport, ...]
    relax_report: object
    seconds: dict


def _predictions(graph) -> ResiduePredictions:
    """The graph network's output as post-processing's input (edge slots flattened)."""
    k = graph.edge_index.shape[1]
    src = np.repeat(np.arange(graph.num_nodes), k)
    dst = graph.edge_index.ravel()
    valid = dst >= 0
    return ResiduePredictions(
        backbone=graph.atom14_positions[:, :3],
        aa_probs=graph.aa_probs,
        confidence=graph.confidence,
        existence=graph.existence,
        edge_src=src[valid],
        edge_dst=dst[valid],
        edge_prob=graph.next_prob.ravel()[valid],
    )


def _assemble(graph, named: list[NamedChain], sequences: list[Sequence], *, threaded_only: bool):
    """A `BuiltModel` (+ aa_probs ``[R, 20]`` and chain reports) from named chains.

    With ``threaded_only``, unthreaded chains, residues without a sequence position and chains
    shorter than `MIN_CHAIN_LENGTH` are left out, and residues are numbered by their sequence
    position; otherwise every chain is kept and numbered 1..L in chain order.
    """
    nodes, types, numbers, chain_of, reports = [], [], [], [], []
    for chain in named:
        match = chain.match
        keep = match.assigned if threaded_only else np.ones(len(match.nodes), dtype=bool)
        if threaded_only and (not match.threaded or keep.sum() < MIN_CHAIN_LENGTH):
            continue
        chain_nodes = match.nodes[keep]
        chain_numbers = match.residue_number[keep] if threaded_only else np.arange(1, len(chain_nodes) + 1)
        nodes.append(chain_nodes)
        types.append(match.aatype[keep])
        numbers.append(chain_numbers)
        chain_of += [chain.chain_id] * len(chain_nodes)
        reports.append(
            ChainReport(
                chain_id=chain.chain_id,
                sequence=sequences[match.sequence_index].name if match.threaded else "",
                first=int(chain_numbers[0]),
                last=int(chain_numbers[-1]),
                residues=len(chain_nodes),
                score=float(match.score),
                evalue=float(match.evalue),
                mean_confidence=float(graph.confidence[chain_nodes].mean()),
            )
        )
    if not nodes:
        empty = BuiltModel(
            atom_positions=np.zeros((0, 14, 3), np.float32), atom_mask=np.zeros((0, 14), bool),
            aatype=np.zeros(0, np.int64), residue_number=np.zeros(0, np.int64),
            chain_id=np.zeros(0, dtype=str), confidence=np.zeros(0, np.float32),
        )
        return empty, np.zeros((0, NUM_AA), np.float32), ()
    nodes = np.concatenate(nodes)
    aatype = np.concatenate(types)
    positions, mask = graph.atoms_for(nodes, aatype)
    entity = {}
    for chain in named:
        if chain.match.threaded:
            entity[chain.chain_id] = sequences[chain.match.sequence_index].residues
    chain_id = np.array(chain_of)
    model = BuiltModel(
        atom_positions=positions,
        atom_mask=mask,
        aatype=aatype,
        residue_number=np.concatenate(numbers),
        chain_id=chain_id,
        confidence=graph.confidence[nodes],
        entity_sequences={c: s for c, s in entity.items() if c in set(chain_of)},
    )
    return model, graph.aa_probs[nodes], tuple(reports)


def build(
    density: DensityMap,
    sequences: list[Sequence],
    networks: Networks,
    options: BuildOptions = BuildOptions(),
    *,
    mask: DensityMap | None = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    on_result: Optional[Callable[[str, object], None]] = None,
) -> BuildResult:
    """Build a model of ``sequences`` into ``density``.

    Raises `InputError` for unusable sequences, `BuildError` when the map yields too few Cα
    candidates (e.g. no protein density), `Cancelled` when ``cancel`` is set (checked between
    windows, crops, chains and rounds).
    """
    from .detect.inference import DetectionOptions, detect_calphas
    from .gnn.refine import refine

    if not sequences:
        raise InputError("at least one sequence is needed to build (or use build_no_seq)")
    if options.threader != "hmm":
        raise InputError(f"the {options.threader!r} threader is not in this version of cryobuild")
    seconds = {}
    notify = on_result or (lambda kind, payload: None)
    rng = np.random.default_rng(options.seed)

    start = time.time()
    detection = DetectionOptions() if options.detection_threshold is None else DetectionOptions(
        threshold=options.detection_threshold)
    points = detect_calphas(density, networks.detector, detection, mask=mask,
                            device=networks.device, progress=progress, cancel=cancel).points
    seconds["detect"] = time.time() - start
    if len(points) < MIN_POINTS:
        raise BuildError(
            f"only {len(points)} Cα candidates found: the map shows no protein density at this "
            "threshold (check the map, its contour level and resolution)"
        )
    notify("points", points)

    residue_strings = [s.residues for s in sequences]
    current = points
    rounds = []
    seconds["gnn"] = seconds["thread"] = 0.0
    for index in range(options.rounds):
        check_cancel(cancel)
        start = time.time()
        graph = refine(density, current, residue_strings, networks.gnn, rounds=1,
                       device=networks.device, progress=progress, cancel=cancel)
        seconds["gnn"] += time.time() - start
        start = time.time()
        report(progress, "thread", 0.0, f"round {index + 1}: linking chains")
        predictions = _predictions(graph)
        chains = link_chains(predictions)
        matches = thread_chains(chains, graph.aa_probs, graph.confidence, sequences, rng=rng,
                                cancel=cancel)
        named = name_chains(join_matches(matches, predictions.backbone), sequences)
        model, aa_probs, reports = _assemble(graph, named, sequences, threaded_only=False)
        seconds["thread"] += time.time() - start
        report(progress, "thread", 1.0, f"round {index + 1}: {len(named)} chains")
        result = RoundResult(index + 1, model, aa_probs, reports)
        rounds.append(result)
        notify("round", result)
        current = model if model.num_residues >= MIN_POINTS else graph

    final, final_probs, final_reports = _assemble(graph, named, sequences, threaded_only=True)
    relax_report = None
    if options.relax and final.num_residues:
        from .relax import relax

        start = time.time()
        report(progress, "relax", 0.0, "relaxing geometry")
        final, relax_report = relax(final, density, device=networks.device, cancel=cancel)
        seconds["relax"] = time.time() - start
        report(progress, "relax", 1.0, "done")
    return BuildResult(points, tuple(rounds), rounds[-1].model, final, final_probs,
                       final_reports, relax_report, seconds)
