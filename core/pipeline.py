"""The build: map + sequences -> a threaded, relaxed atomic model (METHODS §2-4).

``build()`` runs the stages in order and passes typed objects between them; it takes no file
paths and writes nothing (the CLI and the engine write at the edges):

1. the map as the networks read it (`network_view`: the box around its density, 3.5-4.5 Å maps
   on 0.9 Å voxels, standardised), then Cα detection (`detect.inference.detect_calphas`) ->
   `CalphaPoints`;
2. per round: the graph network (`gnn.refine.refine`, one pass) from the previous round's
   model -> `GraphOutput`; chains linked from predicted peptide links (`chains.link_chains`),
   every frame turned to run along its chain (`GraphOutput.turned`);
   sequence threading (`thread.thread`: pyhmmer profiles, unthreaded chains placed into the
   sequence gaps between threaded ones, joining, gaps of threaded chains filled and their ends
   extended with untraced nodes) and `thread.joining.name_chains`; the threaded model feeds
   the next round (`_traced_and_threaded`). With ``restarts`` K > 1 the rounds run K times
   from the candidates, each start with other random initial frames and threading at the
   E-value cut / K; the start that threads the most residues is the base, and the others'
   threaded chains on density and sequence positions it left free are merged into it
   (`_merged`, `thread.merging`);
3. the threads of each sequence threaded only weakly checked against residue types that
   never saw it (`_blind_checked`: two more graph-network passes without the type prior, one
   given a composition stand-in for the sequences; `thread.confirm`), the unconfirmed ones
   unthreaded; then, with sequences, one more graph-network pass over the threaded chains as
   they stand (`_polish`, adding residues at single gaps: `thread.closure.bridge_positions`);
4. the final model (`_final_residues`): threaded chains of at least `MIN_CHAIN_LENGTH` residues,
   residues with a sequence position only; then, unless ``threaded_only``, the chains that could
   not be threaded, as unassigned chains of UNK residues in runs of at least
   `UNASSIGNED_MIN_LENGTH` residues of `UNASSIGNED_MIN_CONFIDENCE` or more on Cα candidates
   the detector found well enough (`UNASSIGNED_MIN_DETECTION`); relaxed (`relax.relax`). The
   raw model keeps every chain.

With ``threader="structgen"``, each round's threading is checked against the HMM threader's: in a
round where the Structure Generator threads fewer than `thread.STRUCTGEN_MIN_SHARE` of the
residues the HMM threader threads, the build warns and that round keeps the HMM threader's
threading (`BuildOptions.structgen_fallback`). The check is per round: the first round's chains
are short, and on the simulated il2 map the Structure Generator threads none of them where the
HMM threader threads 76 residues, and from the second round on nearly as many (2026-12-05).

Without sequences (``build_no_seq``), threading is skipped and the final model holds every
chain of at least `MIN_CHAIN_LENGTH` residues, numbered from 1, for HMM profiles and
`thread.profiles.search_profiles`. A graph network with sequence attention then reads
`composition_stand_in` (as many residues as there are Cα candidates) in place of a sequence.

``on_result(kind, payload)`` is called with ``("points", CalphaPoints)`` and, after each round,
``("round", RoundResult)``, so a viewer can show progress as it happens.

Fixed context (``context=``, used by the engine for accepted residues and region rebuilds):
residues that must stay as they are. Cα candidates within `CONTEXT_CLEARANCE` of a context Cα
are dropped (the residue is already there); every graph-network pass runs on the context
residues plus the moving nodes, and only the moving nodes' results are kept; relaxation moves
the new residues with the nearby context residues held ``fixed``. ``taken=`` marks the sequence
positions the context already holds, so threading never reuses them. The results hold only
the new residues: splicing them into the context is the caller's job.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Optional

import numpy as np

from .chains import (MIN_EXISTENCE, ResiduePredictions, chain_ids, link_chains, relink_by_shape,
                     runs_against)
from .errors import BuildError, InputError
from .extent import working_map
from .features import NetworkMap, standardise
from .map_fit import MapFit
from .maps import DensityMap, erased_below
from .models import BuiltModel
from .points import CalphaPoints
from .progress import CancelToken, ProgressCallback, check_cancel, prefixed, report
from .residues import MAX_ATOMS, NUM_AA, UNK_INDEX, one_hot
from .sequences import Sequence
from .thread import THREADERS, ChainMatch, NamedChain, thread
from .thread.closure import MAX_SKIP, MIN_SKIP, bridge_positions
from .thread.confirm import confirmed, unsupported
from .thread.hints import Placement, unassigned_placements
from .thread.joining import name_chains
from .thread.search import MAX_THREAD_EVALUE

__all__ = [
    "CONTEXT_CLEARANCE",
    "MAX_VOXEL_SIZE",
    "RESOLUTION_MISMATCH",
    "MIN_CHAIN_LENGTH",
    "INVERTED_ADVICE",
    "INVERTED_SKEWNESS",
    "PROTEIN_SKEWNESS",
    "UNASSIGNED_MIN_CONFIDENCE",
    "UNASSIGNED_MIN_DETECTION",
    "UNASSIGNED_MIN_LENGTH",
    "RESTARTS",
    "BuildOptions",
    "Networks",
    "ChainReport",
    "RoundResult",
    "BuildResult",
    "build",
    "composition_stand_in",
    "join_models",
    "map_warnings",
    "resolution_warning",
    "protein_density_check",
    "refine_with_context",
    "relax_stage",
    "relax_with_context",
    "residue_predictions",
    "round_label",
    "network_view",
]

#: Threaded (and sequence-free) chains shorter than this (residues) are left out of the final
#: model (METHODS §4); unassigned pieces need `UNASSIGNED_MIN_LENGTH`.
MIN_CHAIN_LENGTH = 4
#: Å: maps of this resolution or worse have their linked chains checked against known Cα shapes
#: (`chains.relink_by_shape`). Three seeds of `bench.real`'s maps with the check everywhere:
#: T20S α's sequence recall 0.30 -> 0.41 (0.27 -> 0.40 over six seeds), Nav β1 0.22 -> 0.28,
#: the 3.5-4.5 Å band 0.224 -> 0.233, but TMV at 2.3 Å 0.81 -> 0.77 and 3JB0 D at 2.9 Å 0.98 ->
#: 0.97, whose links are right already (docs/results_log.md, thirty-sixth stop).
SHAPE_FROM_RESOLUTION = 3.5
#: Confidence (0-100) below which a residue of an unassigned chain (traced, not threaded) is
#: left out of the final model, with the stretches of fewer than `UNASSIGNED_MIN_LENGTH`
#: residues it leaves between such residues. 65 is a predicted Cα error of 0.86 Å
#: (`gnn.network.confidence_from_error`); below it, residues of the last round were right (Cα
#: within 3 Å of the deposited one) 5 times in 7, under the 0.90 precision issue 17 asks of the
#: final model. Above it confidence hardly tells right from wrong: on 3 simulated il2 maps and
#: 8 real maps of 2.9-4.5 Å (scratch run with weights/gnn.pt, 2026-12-03; some of the real maps
#: may be in its training folds) the unassigned residues held 65-98 and were right 94% of the
#: time; a cut at 70 kept 84% of the right ones at 93.8% right, at 75 62% at 99% (the 4.3 Å
#: chaperonin's final model then held 3% of the Cα its raw model had right instead of 41%).
UNASSIGNED_MIN_CONFIDENCE = 65.0
#: Fewest residues of a piece of an unassigned chain in the final model: a run of this many
#: confident residues (`UNASSIGNED_MIN_CONFIDENCE`) stays, as its own stretch of UNK backbone.
#: Threaded chains keep METHODS §4's `MIN_CHAIN_LENGTH` (an alignment of fewer residues means
#: nothing), but an unassigned piece claims no sequence, only that the backbone runs there. On
#: real maps of 4-5 Å the traced chains of 1-3 residues, the density's breaks at those
#: resolutions, held much of what the final model lost (residues paired one-to-one with a
#: deposited Cα: 197 on γ-secretase, 105 on pneumolysin, 91 on 3LOS); over all 19 real maps,
#: each built by the networks that did not see it, 64% of the residues of 2-3-residue chains
#: are paired (70% without TMV, whose reference lacks its unmasked neighbours; 4-9: 76%, 10 or
#: more: 87%; single residues 57%, and a lone Cα is not a chain; ``python -m
#: cryobuild.bench.trace``, its last columns); keeping them took the
#: mean final Cα recall of the real maps of 3.5-4.5 Å from 0.69 to 0.79 at final precision
#: 0.91 -> 0.89, of those up to 3.5 Å from 0.81 to 0.86 (0.78 -> 0.75; the spike's thresholded
#: map 0.29 -> 0.52) and beyond 4.5 Å from 0.52 to 0.63 (0.72 -> 0.69) (``bench.real``,
#: 2026-12-04, fifth stop). ``--threaded-only`` leaves all of them out.
UNASSIGNED_MIN_LENGTH = 2
#: Least mean detection support (`_detection_support`) of a run of an unassigned chain in the
#: final model, as a fraction of the map's median Cα-candidate probability. The graph network's
#: confidence does not tell a piece traced through noise from one on protein (the demo's
#: pieces in the solvent noise 6-20 Å from any atom hold confidence 66-76, as right ones do),
#: but the detector does: those pieces' Cα sit on candidates of probability 0.20-0.35 (median
#: 0.25), the threaded chain's on 0.42-0.53, the map's median candidate 0.45. Relative, because
#: the detector's probabilities run lower on poorer maps (median candidate 0.31 on the 6.1 Å
#: PSF1 map, 0.35-0.50 on the other real maps). Scratch check, twelfth stop of 2026-12-05, on
#: final models built without the rule and filtered after the fact (the eleventh stop's
#: `bench.real --keep` outputs of the 10 real maps ≤ 4.5 Å, this stop's of the other 9): on
#: the demo (`cryobuild demo`) final precision 0.75 -> 0.91 at the same Cα recall; on the real
#: maps precision up by 0.01-0.03 on apoferritin, EMD-2566, the spike and Nav β1, final Cα
#: recall down 0.011 on Nav β1 and at most 0.002 elsewhere. An absolute cut of 0.3 did as well
#: on the demo but cost PSF1 0.12 of final Cα recall (0.62 -> 0.50) and γ-secretase 0.012.
UNASSIGNED_MIN_DETECTION = 2 / 3
#: Starts of a build's rounds from the Cα candidates (`BuildOptions.restarts`), each with other
#: random initial frames and threading at the E-value cut / K, their threads merged
#: (`thread.merging.merge_starts`). At 3.5-4.5 Å which chains thread is a near miss that
#: changes with the initial frames (Nav β1 0.00-0.37 over builds that differ in nothing that
#: matters; docs/results_log.md, "Sixteenth stop"), so three starts merged thread more on some
#: maps (T20S α 0.45 -> 0.57, pneumolysin 0.06 -> 0.15, every one of three builds higher) but
#: not on the band (0.23 -> 0.24, Nav β1 0.28 -> 0.22) at 2.5 times the build time
#: (γ-secretase 28 -> 70 s): docs/results_log.md, "Thirty-eighth stop". So one start by default.
RESTARTS = 1
#: Å: a node's detection support is the probability of the nearest Cα candidate within this
#: distance (0 without one): the graph network moves nodes up to about 3 Å from the
#: candidates they started from.
DETECTION_SUPPORT_RADIUS = 3.0
#: Fewest Cα candidates a map must give before a build is attempted.
MIN_POINTS = 8
#: A whole-map build needs `MIN_POINTS` protein-like candidates: with a probability of at least
#: `PROTEIN_LIKE_SCORE` and another candidate at a chain's Cα-Cα spacing (`CHAIN_SPACING`).
#: Pure or smoothed noise maps gave 0-1 such candidates, the dev maps 13-43 and simulated 3 Å
#: maps of 200 and 500 residues 58 and 114 (detector of this version). Large maps are the
#: exception: there the detector's probabilities run lower (a noise-free simulated 3 Å map of
#: 1,979 residues: median 0.38, 6 such candidates, while the detector found 87% of the Cα), so a
#: map also passes when at least `MIN_INSIDE_FRACTION` of its candidates (and `MIN_POINTS`)
#: each have two neighbours at that spacing: the inside of a chain. Noise maps (white or
#: smoothed Gaussian on 0.8-1.5 Å voxels, 48-60 voxels a side, 4 seeds) gave at most 0.10;
#: simulated 3 Å maps of 200-2,000 residues 0.30-0.36, the dev maps 0.11 (the weak spike NTD)
#: to 0.38 (scratch check, 2026-11-30; `tests/test_pipeline.py` builds from two noise maps).
#: A region rebuild (with context) needs 2 candidates with one neighbour at any probability:
#: it may be a short stretch of weak density (a region of a 1,644-residue map gave candidates
#: of 0.3-0.45 only, and was refused under the probability rule).
PROTEIN_LIKE_SCORE = 0.5
MIN_INSIDE_FRACTION = 0.2
#: A map whose candidates fail those rules is refused only when no two candidates lie at a
#: chain's Cα-Cα spacing or when its density also looks like noise: a skewness of its
#: standardised values (`features.NetworkMap.skewness`) below this. Real maps were refused under
#: the candidate rules alone (a 3.8 Å map: 7 of 824 candidates; a detector fine-tuned with a
#: third of its maps of noise found none protein-like among 519 candidates of the 5 Å EngA map,
#: 179 of the 4.8 Å T20S one); they are built now, with a warning. 40 Gaussian noise maps (white
#: or smoothed, 40-80 voxels a side, 0.8-1.6 Å voxels) measure -0.14 to +0.07, the 22 real map
#: boxes of `../shared/data/real` (with and without models) 0.40 (kinesin) to 1.48
#: (`python -m cryobuild.bench.skewness`).
NOISE_SKEWNESS = 0.2
#: Above this skewness a map that fails the candidate rules is built without a warning: the 22
#: real map boxes measure 0.40-1.48 (`bench.skewness`), and with the noise-trained detector
#: (fourth stop of 2026-12-04) the 4.5 Å pneumolysin (6 of 475 candidates protein-like) and 5 Å
#: EngA (0 of 547) maps, which it builds at final Cα recall 0.61 and 0.59, drew the warning "check the
#: resolution, or the map's region", which was wrong for both (scratch check, 2026-12-04).
PROTEIN_SKEWNESS = 0.35
#: At or below this skewness a whole map's contrast looks inverted (protein darker than
#: solvent), and a build says so even when its candidates look like a chain: the 22 real map
#: boxes negated measure -0.40 (kinesin) to -1.48 (`bench.skewness`), and a build of MAVS
#: negated traced 96 residues and threaded none, with no word of why (thirty-third stop).
INVERTED_SKEWNESS = -PROTEIN_SKEWNESS
#: What a map whose contrast looks inverted is told, wherever a build speaks of it.
INVERTED_ADVICE = ("its contrast looks inverted (protein darker than solvent), and cryobuild "
                   "builds into positive density; multiply the map by -1 (e.g. in ChimeraX: "
                   "volume scale #1 factor -1) and build again")
#: Å: Cα-Cα distance of two candidates that look like neighbours in a chain (3.8 Å apart).
CHAIN_SPACING = (3.3, 4.3)
#: Å: a Cα candidate this close to a context residue's Cα is that residue, not a new one
#: (well under the 3.8 Å Cα-Cα spacing).
CONTEXT_CLEARANCE = 2.5
#: Å: context residues with a Cα this close to a new residue take part in its relaxation.
RELAX_CONTEXT = 10.0


#: Å: a map with larger voxels cannot hold the detail a build needs. A voxel of v Å holds no
#: detail finer than 2v Å (Nyquist), and side chains, which threading reads, need about 4.5 Å
#: (the T20S dev map at 4.8 Å threads 0.15 of its residues, `bench.build`); the networks were
#: trained on 1.0-1.5 Å voxels.
MAX_VOXEL_SIZE = 2.25


#: A stated resolution more than this factor coarser or finer than the map's spectrum reads
#: (`features.estimate_resolution`) draws a warning: on the 19 real maps with a stated one the
#: estimate is 0.68 (actin, 4.5 against 6.6 Å) to 1.10 (MAVS) times it (``python -m
#: cryobuild.bench.real --estimate-resolution`` prints each estimate as ``map_resolution``),
#: while a slip of the keyboard (30 for 3.0, or 0.5) is off by 5 or more.
RESOLUTION_MISMATCH = 2.0


def resolution_warning(density: DensityMap, resolution: float) -> str | None:
    """A warning when the stated ``resolution`` (Å) of ``density`` is far from what its
    spectrum reads (`RESOLUTION_MISMATCH`), else None."""
    from .features import estimate_resolution

    estimate = estimate_resolution(working_map(density))
    if 1 / RESOLUTION_MISMATCH <= resolution / estimate <= RESOLUTION_MISMATCH:
        return None
    return (f"the map's stated resolution, {resolution:g} Å, is far from the {estimate:.3g} Å its "
            f"spectrum reads (on real maps the two agree within a factor of 1.5): check it; "
            f"building at {resolution:g} Å as given")


def map_warnings(density: DensityMap) -> list[str]:
    """What about ``density`` will limit a build, as messages for the user (empty: nothing)."""
    messages = []
    voxel = float(density.voxel_size.max())
    if voxel > MAX_VOXEL_SIZE:
        messages.append(f"the map's voxels are {voxel:.3g} Å, so it holds no detail finer than "
                        f"{2 * voxel:.3g} Å; atomic models need about 4.5 Å or better (voxels of "
                        f"{MAX_VOXEL_SIZE:g} Å or less), so expect few threaded residues")
    floor = erased_below(density)
    if floor is not None:
        messages.append(f"the map looks thresholded: every voxel below {floor:.3g} was set to 0 "
                        f"({np.mean(density.grid == 0):.0%} of the map is 0), so weaker density "
                        "(often loops and side chains) is lost; expect gaps and few "
                        "threaded residues, and use the unthresholded map if there is one")
    return messages


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """rounds: graph-network passes, each followed by threading; threader: "hmm" (pyhmmer
    profiles, `thread.search`) or "structgen" (the Structure Generator, `thread.structgen`);
    detection_threshold: Cα probability threshold (None: the detector's default); relax: run
    the geometry relaxation on the final model; seed: random seed (the graph network's initial
    frames, start k's being ``seed + k``; HMM calibration); max_evalue: chains whose best alignment has a larger E-value are not
    threaded (`thread.search.MAX_THREAD_EVALUE`); min_existence: nodes with a lower existence
    probability are not residues (`chains.MIN_EXISTENCE`); placement: place unthreaded chains
    into the sequence gaps between threaded ones (`thread.placement`);
    closure: fill the numbering gaps inside threaded chains with untraced nodes
    (`thread.closure`); structgen_fallback: with the structgen threader, a round where the
    Structure Generator threads fewer than `thread.STRUCTGEN_MIN_SHARE` of the HMM threader's
    residues keeps the HMM threader's threading (False: never, for benchmarks of the Structure
    Generator itself); composition_correction: correct threading's
    E-values for the composition of the sequence stretch hit (`thread.search.composition_factor`,
    hmm threader only); resolution: the map's resolution in Å (None:
    estimated from its spectrum, `features.estimate_resolution`), which sets what the networks
    see (`features.standardise`);
    threaded_only: the final model holds only the threaded chains, not the unassigned ones
    (`_final_residues`); blind_check: after the last round, a sequence threaded only weakly
    keeps its chains only if residue types that never saw it find one of them there too
    (`_blind_checked`, `thread.confirm`); restarts: how many times the rounds run from the Cα
    candidates, each start with other random initial frames and threading at the E-value cut
    divided by their number, their threads merged (`RESTARTS`)."""

    rounds: int = 3
    threader: str = "hmm"
    detection_threshold: float | None = None
    relax: bool = True
    seed: int = 0
    max_evalue: float = MAX_THREAD_EVALUE
    min_existence: float = MIN_EXISTENCE
    placement: bool = True
    closure: bool = True
    structgen_fallback: bool = True
    composition_correction: bool = True
    resolution: float | None = None
    threaded_only: bool = False
    blind_check: bool = True
    restarts: int = RESTARTS

    def __post_init__(self):
        if not isinstance(self.rounds, int) or not 1 <= self.rounds <= 20:
            raise InputError(f"rounds must be a whole number from 1 to 20, got {self.rounds!r}")
        if not isinstance(self.restarts, int) or not 1 <= self.restarts <= 8:
            raise InputError(f"restarts must be a whole number from 1 to 8, got {self.restarts!r}")
        if self.threader not in THREADERS:
            raise InputError(f"threader must be one of {', '.join(THREADERS)}, got {self.threader!r}")
        if self.detection_threshold is not None and not 0 < self.detection_threshold < 1:
            raise InputError(f"detection threshold must be in (0, 1), got {self.detection_threshold}")
        if not self.max_evalue > 0:
            raise InputError(f"max E-value must be positive, got {self.max_evalue}")
        if not 0 <= self.min_existence < 1:
            raise InputError(f"min existence must be in [0, 1), got {self.min_existence}")
        if self.resolution is not None and not 0.5 <= self.resolution <= 30:
            raise InputError(f"resolution must be between 0.5 and 30 Å, got {self.resolution}")


@dataclasses.dataclass(frozen=True, eq=False)
class Networks:
    """The trained networks, loaded once and reused across builds (on ``device``)."""

    detector: object
    gnn: object
    device: object
    structgen: object = None

    @classmethod
    def load(cls, device: str | None = "auto", gnn: str | os.PathLike | None = None,
             detector: str | os.PathLike | None = None,
             structgen: str | os.PathLike | None = None) -> "Networks":
        """Load the networks: the graph network and the Cα detector from the checkpoint files
        ``gnn`` and ``detector`` (by default the bundled ``weights/gnn.pt`` and ``detect.pt``;
        ``weights/gnn_noseq.pt`` is the ablation without sequence attention), the Structure
        Generator from ``structgen`` (by default the threader's,
        `thread.structgen.THREADING_CHECKPOINT`, if it exists)."""
        from .checkpoints import checkpoint_path
        from .detect.network import load_detector
        from .device import resolve_device
        from .gnn.refine import load_gnn
        from .thread.structgen import THREADING_CHECKPOINT, load_structgen

        resolved = resolve_device(device)
        if structgen is None and checkpoint_path(THREADING_CHECKPOINT).exists():
            structgen = checkpoint_path(THREADING_CHECKPOINT)
        generator = load_structgen(structgen, device=resolved) if structgen is not None else None
        graph = load_gnn(gnn, device=resolved)
        return cls(load_detector(detector, device=resolved), graph, resolved, generator)


@dataclasses.dataclass(frozen=True)
class ChainReport:
    """One chain of a model: its ID, the sequence it was threaded to ("" if none: an unassigned
    chain), first and last residue number, residue count, match score (bits), E-value (of the
    best alignment, also when it was rejected) and mean confidence."""

    chain_id: str
    sequence: str
    first: int
    last: int
    residues: int
    score: float
    evalue: float
    mean_confidence: float

    @property
    def threaded(self) -> bool:
        return bool(self.sequence)


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
    with every chain; final: threaded chains of >= `MIN_CHAIN_LENGTH` residues and (unless
    ``threaded_only``) the confident unassigned ones, relaxed (`_final_residues`);
    final_aa_probs ``[R, 20]``; final_chains: reports for ``final``; relax_report (or None);
    seconds: wall time per stage; view: the map as the networks saw it; placements: where the
    final model's unassigned chains might go (`thread.hints`); fit: how the final model fits
    the map (`map_fit.map_fit`), measured by `cryobuild.engine` once the final model is settled
    (None from `build` itself and for a region's job).
    """

    points: CalphaPoints
    rounds: tuple[RoundResult, ...]
    raw: BuiltModel
    final: BuiltModel
    final_aa_probs: np.ndarray
    final_chains: tuple[ChainReport, ...]
    relax_report: object
    seconds: dict
    view: NetworkMap
    placements: tuple[Placement, ...] = ()
    fit: MapFit | None = None


def composition_stand_in(length: int) -> str:
    """A sequence of ``length`` residues whose composition is the background
    (`thread.profiles.background_frequencies`, HMMER's), to stand in for an unknown sequence.

    The jointly trained small ESM-2 of the graph network passes on little more than the
    composition of its input, so the network is told nothing about which residue is where,
    while it runs as trained (the sequence-free network traced far less: docs/results_log.md).
    Each residue is the type furthest below its expected count so far, so every prefix has the
    background composition as well.
    """
    from .thread.profiles import background_frequencies
    from .residues import AA_ORDER

    frequencies = background_frequencies()
    counts = np.zeros(NUM_AA)
    residues = []
    for position in range(1, length + 1):
        chosen = int(np.argmax(position * frequencies - counts))
        counts[chosen] += 1
        residues.append(AA_ORDER[chosen])
    return "".join(residues)


def _chain_neighbours(points: CalphaPoints) -> np.ndarray:
    """int ``[N]``: how many other candidates lie at a chain's Cα-Cα spacing (`CHAIN_SPACING`)
    from each."""
    from scipy.spatial import cKDTree

    if len(points) < 2:
        return np.zeros(len(points), dtype=np.int64)
    pairs = cKDTree(points.xyz).query_pairs(CHAIN_SPACING[1], output_type="ndarray")
    distance = np.linalg.norm(points.xyz[pairs[:, 0]] - points.xyz[pairs[:, 1]], axis=1)
    return np.bincount(pairs[distance >= CHAIN_SPACING[0]].ravel(), minlength=len(points))


def _protein_like(points: CalphaPoints, region: bool) -> int:
    """How many candidates look like Cα of a chain (the rules at `PROTEIN_LIKE_SCORE`); the
    build needs `MIN_POINTS` of them, a region rebuild (``region``) 2."""
    neighbours = _chain_neighbours(points)
    if region:
        return int(np.sum(neighbours >= 1))
    scored = int(np.sum((neighbours >= 1) & (points.score >= PROTEIN_LIKE_SCORE)))
    inside = int(np.sum(neighbours >= 2))
    if inside >= MIN_INSIDE_FRACTION * len(points):
        return max(scored, inside)
    return scored


def protein_density_check(points: CalphaPoints, skewness: float, *, region: bool) -> str | None:
    """Whether the Cα candidates ``points`` of a map whose standardised values have
    ``skewness`` show protein density: None to build, a warning to build with, or `BuildError`.

    A whole-map build must find chain-like density (`_protein_like`); a region rebuild
    (``region``) may be a short stretch of weak density whose few candidates the graph network
    judges, and is refused only when no two of them lie at a chain's spacing. A map that fails
    the candidate rules is refused only when its density also looks like noise
    (`NOISE_SKEWNESS`) or no two candidates lie at a chain's spacing; it is built with a warning
    when its skewness is between noise's and `PROTEIN_SKEWNESS`, and without one above: there
    the candidates' probabilities, not the map, are in doubt. Of a whole map whose skewness is
    `INVERTED_SKEWNESS` or less, both the warning and the refusal say that its contrast looks
    inverted (a region's crop is not judged so: the core of a large complex may be skewed
    negative).
    """
    protein_like = _protein_like(points, region=region)
    found = f"only {protein_like} of {len(points)} Cα candidates look like a protein chain"
    inverted = (f"the map's values are skewed negative (skewness {skewness:.2f}, where protein "
                f"maps are skewed positive): {INVERTED_ADVICE}")
    if protein_like >= (2 if region else MIN_POINTS):
        return None if region or skewness > INVERTED_SKEWNESS else inverted
    if region:
        why = (f"none of its {len(points)} Cα candidates has another at a chain's Cα-Cα spacing"
               if len(points) else "the detector finds no Cα candidate there")
        raise BuildError(f"nothing to build in this region: {why} (candidates on the residues "
                         "kept around it do not count); its residues stay as they were")
    if skewness <= INVERTED_SKEWNESS:
        raise BuildError(f"{found}, and {inverted}")
    noise_like = skewness < NOISE_SKEWNESS
    if noise_like or not np.any(_chain_neighbours(points)):
        why = (f"the density's values look like noise (skewness {skewness:.2f})" if noise_like
               else "none of them has another at a chain's Cα-Cα spacing")
        raise BuildError(f"{found} and {why}: the map shows no protein density here (check the "
                         "map, its region and resolution)")
    if skewness >= PROTEIN_SKEWNESS:
        return None
    return (f"{found} and the density is weak (skewness {skewness:.2f}); building anyway, since "
            "it does not look like noise (check the resolution, or the map's region)")


def residue_predictions(graph) -> ResiduePredictions:
    """The graph network's output (`cryobuild.gnn.refine.GraphOutput`) as post-processing's
    input (edge slots flattened)."""
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


def _detection_support(points: CalphaPoints, ca: np.ndarray) -> np.ndarray:
    """float ``[N]``: the detection probability of the Cα candidate nearest each of the Cα
    ``ca`` ``[N, 3]`` (Å) within `DETECTION_SUPPORT_RADIUS`, 0 where there is none."""
    if not len(points) or not len(ca):
        return np.zeros(len(ca), dtype=np.float32)
    from scipy.spatial import cKDTree

    distance, index = cKDTree(points.xyz).query(ca, distance_upper_bound=DETECTION_SUPPORT_RADIUS)
    found = np.isfinite(distance)
    return np.where(found, points.score[np.where(found, index, 0)], 0.0).astype(np.float32)


def _confident_runs(confidence: np.ndarray, detection: np.ndarray, detection_cut: float
                    ) -> np.ndarray:
    """bool ``[L]``: residues of an unassigned chain kept in the final model, those with a
    ``confidence`` ``[L]`` (0-100) of at least `UNASSIGNED_MIN_CONFIDENCE` in runs of at least
    `UNASSIGNED_MIN_LENGTH` consecutive ones whose mean ``detection`` ``[L]``
    (`_detection_support`) is at least ``detection_cut``."""
    confident = np.asarray(confidence) >= UNASSIGNED_MIN_CONFIDENCE
    # starts and ends (exclusive) of the runs of confident residues
    edges = np.diff(np.concatenate([[0], confident.astype(np.int8), [0]]))
    keep = np.zeros(len(confident), dtype=bool)
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        keep[start:end] = (end - start >= UNASSIGNED_MIN_LENGTH
                           and detection[start:end].mean() >= detection_cut)
    return keep


def _final_residues(match: ChainMatch, confidence: np.ndarray, detection: np.ndarray,
                    detection_cut: float, *, with_sequences: bool, threaded_only: bool):
    """Which residues of a chain the final model holds, their numbers and types: bool, int64
    and int64 ``[L]`` for the chain's ``L`` nodes (``confidence`` ``[N]``, 0-100, and
    ``detection`` ``[N]``, `_detection_support`, of all nodes; ``detection_cut`` the least mean
    detection of an unassigned run, `UNASSIGNED_MIN_DETECTION` of the median candidate's), or
    None when the chain is left out.

    * A threaded chain keeps the residues with a sequence position, numbered and typed by it.
    * Without sequences, every chain is kept whole with its predicted types, numbered 1..L.
    * With sequences, a chain that could not be threaded is left out with ``threaded_only``;
      otherwise it is an unassigned chain: the residues of `_confident_runs`, numbered by their
      place in the traced chain (so a pruned stretch is a gap in the numbering, and relaxation
      bonds no residues across it), all of type UNK.

    Why UNK, not the predicted types: UNK is the wwPDB code for an amino acid of unknown type
    (deposited models use it for stretches traced but not assigned), so Coot and Phenix show
    these chains as backbone waiting for a sequence, which their mutate and sequence-assignment
    tools then give. A model file has no field that would flag a predicted type as unassigned:
    side chains of the predicted types would be read as built and assigned (a chain of them
    would also pass for a sequence copy in `session.infer_chain_sequences`), while the types
    could not be threaded onto any sequence, so they are the least reliable ones. Their
    probabilities stay in the build's per-residue probabilities (``aa_probabilities.csv``).

    Threaded and sequence-free chains left with fewer than `MIN_CHAIN_LENGTH` residues are left
    out, unassigned ones with fewer than `UNASSIGNED_MIN_LENGTH`.
    """
    trace_numbers = np.arange(1, len(match.nodes) + 1)
    shortest = MIN_CHAIN_LENGTH
    if match.threaded:
        keep, numbers, types = match.assigned, match.residue_number, match.aatype
    elif not with_sequences:
        keep, numbers, types = np.ones(len(match.nodes), dtype=bool), trace_numbers, match.aatype
    elif threaded_only:
        return None
    else:
        keep = _confident_runs(confidence[match.nodes], detection[match.nodes], detection_cut)
        numbers, types = trace_numbers, np.full(len(match.nodes), UNK_INDEX)
        shortest = UNASSIGNED_MIN_LENGTH
    if keep.sum() < shortest:
        return None
    return keep, numbers, types


def _assemble(graph, named: list[NamedChain], sequences: list[Sequence], *, final: bool,
              threaded_only: bool = False, points: CalphaPoints | None = None):
    """A `BuiltModel` (+ aa_probs ``[R, 20]`` and chain reports) from named chains.

    A round's model (not ``final``) holds every chain, numbered 1..L in chain order, with the
    types threading gave (the sequence's where assigned, the predicted ones elsewhere). The
    final model holds the residues `_final_residues` keeps (``threaded_only`` passed on; the
    Cα candidates ``points`` give the nodes' detection support).
    Every node's frame is first turned to run along its chain as threading left it
    (`GraphOutput.turned`): threading may reverse, join or extend the linked chains, and the
    polish pass predicts frames afresh.
    """
    graph = graph.turned(runs_against(graph.atom14_positions[:, :3],
                                      [chain.match.nodes for chain in named]))
    if final:
        if points is None:
            raise ValueError("the final model needs the Cα candidates (points)")
        detection = _detection_support(points, graph.atom14_positions[:, 1])
        detection_cut = UNASSIGNED_MIN_DETECTION * float(np.median(points.score)) if len(points) else 0.0
    residues = []  # (chain, keep, numbers, types) of the chains the model holds
    for chain in named:
        match = chain.match
        if final:
            kept = _final_residues(match, graph.confidence, detection, detection_cut,
                                   with_sequences=bool(sequences), threaded_only=threaded_only)
            if kept is not None:
                residues.append((chain, *kept))
        else:
            residues.append((chain, np.ones(len(match.nodes), dtype=bool),
                             np.arange(1, len(match.nodes) + 1), match.aatype))
    if final:
        # chains left out leave no gaps in the IDs (A, B, D would read as a chain lost)
        residues = [(dataclasses.replace(chain, chain_id=chain_id), *kept)
                    for chain_id, (chain, *kept) in zip(chain_ids(len(residues)), residues)]
        named = [chain for chain, *_ in residues]
    nodes, types, numbers, chain_of, reports = [], [], [], [], []
    for chain, keep, chain_numbers, chain_types in residues:
        match = chain.match
        chain_nodes, chain_numbers = match.nodes[keep], chain_numbers[keep]
        nodes.append(chain_nodes)
        types.append(chain_types[keep])
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


def join_models(models: list[BuiltModel]) -> BuiltModel:
    """The residues of ``models`` one after another (chain ids as they are; entity sequences
    merged, earlier models first)."""
    sequences = {}
    for model in reversed(models):
        sequences.update(model.entity_sequences)
    return BuiltModel(
        atom_positions=np.concatenate([m.atom_positions for m in models]),
        atom_mask=np.concatenate([m.atom_mask for m in models]),
        aatype=np.concatenate([m.aatype for m in models]),
        residue_number=np.concatenate([m.residue_number for m in models]),
        chain_id=np.concatenate([m.chain_id for m in models]),
        confidence=np.concatenate([m.confidence for m in models]),
        entity_sequences=sequences,
    )


def _empty_reason(traced: int, with_sequences: bool, threaded_only: bool) -> str:
    """The warning for a final model with no residues: why, from the ``traced`` residues of the
    last round, whether sequences were given and ``threaded_only``."""
    if not with_sequences:
        return (f"the final model is empty: none of the {traced} traced residues is in a chain of "
                f"{MIN_CHAIN_LENGTH} or more")
    unthreaded = (f"threaded-only leaves out the {traced} traced residues" if threaded_only else
                  f"none of the {traced} traced residues is in a run of {UNASSIGNED_MIN_LENGTH} or "
                  f"more with a confidence of {UNASSIGNED_MIN_CONFIDENCE:g} or more, which an "
                  "unassigned chain needs")
    return (f"the final model is empty: no chain of {MIN_CHAIN_LENGTH} or more residues could be "
            f"threaded to the sequences, and {unthreaded} (the raw model keeps them)")


def _take_nodes(graph, first: int):
    """Nodes ``first..N-1`` of a `GraphOutput` (edges to the nodes left out become empty)."""
    keep = slice(first, None)
    edges = graph.edge_index[keep]
    return dataclasses.replace(
        graph,
        rotations=graph.rotations[keep], translations=graph.translations[keep],
        atom14_positions=graph.atom14_positions[keep], atom14_mask=graph.atom14_mask[keep],
        aa_probs=graph.aa_probs[keep], confidence=graph.confidence[keep],
        existence=graph.existence[keep], torsions=graph.torsions[keep],
        edge_index=np.where(edges >= first, edges - first, -1),
        next_prob=np.where(edges >= first, graph.next_prob[keep], 0).astype(np.float32),
        previous_prob=np.where(edges >= first, graph.previous_prob[keep], 0).astype(np.float32),
    )


def refine_with_context(view: NetworkMap, current, context: BuiltModel | None, sequences, networks,
                        progress, cancel, prior: np.ndarray | None = None, frame_seed: int = 0):
    """One graph-network pass over ``current`` (points, graph or model; ``prior`` ``[N, 20]``
    its residue-type prior, see `gnn.refine.refine`; points get random frames from
    ``frame_seed``) with the ``context`` residues as fixed neighbours (their types one-hot):
    only ``current``'s nodes come back."""
    from .gnn.refine import GraphOutput, RefineOptions, refine
    from .models import model_from_ca

    options = RefineOptions(frame_seed=frame_seed)
    if context is None or context.num_residues == 0:
        return refine(view, current, sequences, networks.gnn, rounds=1, device=networks.device,
                      progress=progress, cancel=cancel, prior=prior, options=options)
    if isinstance(current, CalphaPoints):
        current = model_from_ca(current.xyz, current.score)
    elif isinstance(current, GraphOutput):
        current = current.to_model()
    start = join_models([context, current])
    if prior is not None:
        prior = np.concatenate([one_hot(context.aatype), prior])
    graph = refine(view, start, sequences, networks.gnn, rounds=1, device=networks.device,
                   progress=progress, cancel=cancel, prior=prior, options=options)
    return _take_nodes(graph, context.num_residues)


def _blind_checked(view: NetworkMap, graph, named: list[NamedChain], context, sequences,
                   networks, options: BuildOptions, rng, progress, cancel) -> tuple[list[NamedChain], int]:
    """``named`` (the last round's chains, nodes of ``graph``) with the chains of the sequences
    `thread.confirm.confirmed` finds no support for unthreaded, in place (the polish pass relies
    on the order), and how many. The two readings are graph-network passes over ``graph``'s nodes,
    frames turned along ``named`` as `_assemble` turns them, with no type prior: one given a
    composition stand-in for the sequences, one given the sequences."""
    turned = graph.turned(runs_against(graph.atom14_positions[:, :3], [c.match.nodes for c in named]))
    start = turned.to_model()
    backbone_only = start.atom_mask.copy()
    backbone_only[:, 3:] = False
    start = dataclasses.replace(start, aatype=np.full(start.num_residues, UNK_INDEX),
                                atom_mask=backbone_only)
    readings = []
    for residue_strings in ([composition_stand_in(start.num_residues)], [s.residues for s in sequences]):
        check_cancel(cancel)
        reading = refine_with_context(view, start, context, residue_strings, networks,
                                      prefixed(progress, "thread check"), cancel)
        readings.append((reading.aa_probs, reading.confidence))
    matches, dropped = confirmed([c.match for c in named], readings, graph.aa_probs, sequences,
                                 max_evalue=options.max_evalue, rng=rng,
                                 ca=graph.atom14_positions[:, 1])
    return [dataclasses.replace(c, match=m) for c, m in zip(named, matches)], dropped


def _next_prior(model: BuiltModel, aa_probs: np.ndarray, named: list[NamedChain]) -> np.ndarray:
    """The residue-type prior ``[R, 20]`` of the next pass over a round's ``model`` (rows in
    ``named``'s order; ``aa_probs`` the round's probabilities of them): the residues threading
    gave a sequence position read its type one-hot, the others the round's probabilities, as
    the network's own recycling passes them on (`gnn.network.RoundOutput.next_inputs`).

    Why: a model start alone gives every residue its type one-hot, so an unassigned residue's
    most probable type (what the round's model shows) was read as a certainty, which training
    never shows the network. At 4.5 Å that guess is right for 17-18% of pneumolysin's residues;
    fed back, the negative log-likelihood of the deposited types over the three rounds went
    2.77 -> 2.83 -> 2.84 nats (2.87 in the final model); with the probabilities, 2.77 -> 2.70 ->
    2.71 (2.72), and 0.21 of the final residues' types right instead of 0.18 (fold-B networks,
    residues within 2 Å of a deposited Cα). No prior at all for those residues gave 2.74 and
    2.79 but cost the 3 Å demo map sequence recall (0.87 -> 0.80), whose guesses are mostly
    right; with the probabilities it gives 0.90 (scratch checks, thirteenth stop).
    """
    assigned = np.concatenate([chain.match.assigned for chain in named])
    guessed = np.asarray(aa_probs, dtype=np.float32)
    return np.where(assigned[:, None], one_hot(model.aatype), guessed)


def _polish(view: NetworkMap, model: BuiltModel, prior: np.ndarray, named: list[NamedChain], context,
            sequences, networks, progress, cancel):
    """One more graph-network pass over the last round's ``model`` (every chain, as threaded;
    ``prior`` ``[R, 20]`` its residue-type prior, `_next_prior`),
    without re-linking: residues that closure or placement put into a chain after the last
    pass get their frames and side chains from the network with their chain and sequence
    around them. Without it, closure's residues kept the frames of their old chains: on the
    simulated 3 Å build benchmark 2% of peptide bonds stayed stretched and clashscore was 13.4
    against 10.2 with it (``bench.build --no-dev`` at commit b7f5f16 with and without the
    pass, before bridging and the relaxation's present weights). Single residues
    missing inside a threaded chain (its numbering skips one, the Cα on either side
    `thread.closure.MIN_SKIP` to `thread.closure.MAX_SKIP` apart) are added first, at
    `thread.closure.bridge_positions` clear of every other Cα (context included), for the pass to
    refine.

    Returns the new `GraphOutput`, whose nodes are ``model``'s rows followed by the added
    residues, and ``named`` re-indexed to them.
    """
    renamed, row, added = [], 0, []
    for chain in named:
        match = chain.match
        rows = np.arange(row, row + len(match.nodes))
        row += len(rows)
        numbers, types = match.residue_number, match.aatype
        if match.threaded:
            ca = model.ca[rows]
            span = np.linalg.norm(ca[1:] - ca[:-1], axis=1)
            bridge = np.flatnonzero((numbers[:-1] >= 0) & (numbers[1:] - numbers[:-1] == 2)
                                    & (span >= MIN_SKIP) & (span <= MAX_SKIP))
            if len(bridge):
                new_rows = model.num_residues + len(added) + np.arange(len(bridge))
                new_numbers = numbers[bridge] + 1
                new_types = sequences[match.sequence_index].aatype[new_numbers - 1]
                added += [(chain.chain_id, t, n, ca[k], ca[k + 1])
                          for k, t, n in zip(bridge, new_types, new_numbers)]
                rows = np.insert(rows, bridge + 1, new_rows)
                numbers = np.insert(numbers, bridge + 1, new_numbers)
                types = np.insert(types, bridge + 1, new_types)
        match = dataclasses.replace(match, nodes=rows, residue_number=numbers, aatype=types)
        renamed.append(dataclasses.replace(chain, match=match))
    if added:
        chain_ids, added_types, added_numbers, before, after = zip(*added)
        others = model.ca if context is None else np.concatenate([model.ca, context.ca])
        backbone = bridge_positions(np.array(before), np.array(after), view.density, others)
        positions = np.zeros((len(added), MAX_ATOMS, 3), np.float32)
        mask = np.zeros((len(added), MAX_ATOMS), bool)
        positions[:, :3], mask[:, :3] = backbone, True  # atom14 slots N, CA, C
        extra = BuiltModel(atom_positions=positions, atom_mask=mask,
                           aatype=np.array(added_types, dtype=np.int64),
                           residue_number=np.array(added_numbers, dtype=np.int64),
                           chain_id=np.array(chain_ids), confidence=np.zeros(len(added), np.float32))
        model = join_models([model, extra])
        prior = np.concatenate([prior, one_hot(extra.aatype)])
    graph = refine_with_context(view, model, context, [s.residues for s in sequences],
                                networks, prefixed(progress, "last pass"), cancel, prior)
    return graph, renamed


def relax_with_context(model: BuiltModel, context: BuiltModel | None, view: NetworkMap, *, device=None,
                       cancel: Optional[CancelToken] = None):
    """Relax ``model`` with the context residues within `RELAX_CONTEXT` Å of it held fixed.

    The residues are relaxed in (chain, number) order, so a residue of ``model`` that continues
    a context chain (same chain id, the next or previous number) is peptide-bonded to it --
    unless its C-N gap exceeds `relax.MAX_LINK_DISTANCE`, which keeps unrelated residues
    apart. Name ``model``'s chains as they will be spliced in before calling this. Returns the
    relaxed ``model`` (same residue order) and the `RelaxReport`.
    """
    from scipy.spatial import cKDTree

    from .relax import relax

    near = np.zeros(context.num_residues if context is not None else 0, dtype=bool)
    if near.size and model.num_residues:
        distance, _ = cKDTree(model.ca).query(context.ca, distance_upper_bound=RELAX_CONTEXT)
        near = np.isfinite(distance)
    if not near.any():
        return relax(model, view.density, device=device, cancel=cancel)
    neighbours = context.select(near)
    joined = join_models([neighbours, model])
    order = np.lexsort((joined.residue_number, joined.chain_id))
    fixed = order < neighbours.num_residues
    relaxed, relax_report = relax(joined.take(order), view.density, fixed=fixed,
                                  device=device, cancel=cancel)
    positions = np.empty_like(relaxed.atom_positions)
    positions[order] = relaxed.atom_positions
    return dataclasses.replace(model, atom_positions=positions[neighbours.num_residues:]), relax_report


def relax_stage(model: BuiltModel, context: BuiltModel | None, view: NetworkMap, device,
                seconds: dict, *, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelToken] = None):
    """The build's relaxation stage: `relax_with_context` on the torch ``device`` with progress
    reports (stage ``"relax"``) and its wall time added to ``seconds["relax"]``. Returns the
    relaxed model and the `RelaxReport` (None for an empty model, which is returned as it is)."""
    if not model.num_residues:
        return model, None
    start = time.time()
    report(progress, "relax", 0.0, "relaxing geometry")
    model, relax_report = relax_with_context(model, context, view, device=device,
                                             cancel=cancel)
    seconds["relax"] = time.time() - start
    report(progress, "relax", 1.0, "done")
    return model, relax_report


@dataclasses.dataclass(frozen=True, eq=False)
class _Start:
    """One start of a build's rounds (`_traced_and_threaded`): each round's result, the last
    round's `GraphOutput` and named chains (after the blind check, which unthreaded
    ``dropped`` chains), and how many residues its chains thread."""

    rounds: list[RoundResult]
    graph: object
    named: list[NamedChain]
    dropped: int

    @property
    def threaded_residues(self) -> int:
        return int(sum(chain.match.assigned.sum() for chain in self.named if chain.match.threaded))


def _merged(starts: list[_Start], sequences: list[Sequence]) -> _Start:
    """One start from several (`BuildOptions.restarts`), the first the base: its chains, and
    the threaded chains of the others that stand on density and sequence positions it left
    free (`thread.merging.merge_starts`), fitted into its copies after its own chains and joined
    to the pieces they continue as one start's chains are (`thread.copies.assign_copies`,
    `thread.joining.join_matches`). The graph holds every start's last-round nodes; the last
    round's model is the merged one (so the raw model holds every merged chain); the other
    rounds and the blind check's count are the base's."""
    from .gnn.refine import concatenate_graphs
    from .thread.copies import assign_copies
    from .thread.joining import join_matches
    from .thread.merging import merge_starts

    graph = concatenate_graphs([start.graph for start in starts])
    shifts = np.cumsum([0] + [start.graph.num_nodes for start in starts[:-1]])
    chains = [[dataclasses.replace(chain.match, nodes=chain.match.nodes + shift) for chain in start.named]
              for start, shift in zip(starts, shifts)]
    ca = graph.atom14_positions[:, 1]
    merged = merge_starts(chains, ca, min_length=MIN_CHAIN_LENGTH)
    matches = assign_copies(merged.chains, ca, graph.aa_probs, graph.confidence, sequences,
                            placed_last=merged.added)
    matches = join_matches(matches, graph.atom14_positions[:, :3], graph.aa_probs)
    named = name_chains(matches, sequences)
    model, aa_probs, reports = _assemble(graph, named, sequences, final=False)
    base = starts[0]
    last = RoundResult(base.rounds[-1].index, model, aa_probs, reports)
    return _Start(base.rounds[:-1] + [last], graph, named, base.dropped)


def round_label(index: int, rounds: int, restarts: int = 1) -> str:
    """How progress, warnings and round events name round ``index`` (1-based over all starts)
    of a build of ``rounds`` rounds per start and ``restarts`` starts: ``"round 2/3"``, or with
    more than one start ``"start 2/3, round 1/3"`` (a start's rounds may be discarded for a
    later start's, `BuildOptions.restarts`, so they are not numbered as refinements of each
    other)."""
    if restarts <= 1:
        return f"round {index}/{rounds}"
    start, within = divmod(index - 1, rounds)
    return f"start {start + 1}/{restarts}, round {within + 1}/{rounds}"


def _traced_and_threaded(view: NetworkMap, points: CalphaPoints, sequences: list[Sequence],
                         residue_strings: list[str], networks: Networks, options: BuildOptions,
                         context: BuiltModel | None, taken, seconds: dict, progress, cancel, notify,
                         *, frame_seed: int, first_round: int, anchors: tuple = ()) -> _Start:
    """The rounds of one start from the Cα candidates ``points`` (the graph network's first
    pass gives them random frames, and threading its random numbers, from ``frame_seed``),
    numbered from ``first_round + 1``, then the blind check (`_blind_checked`) of the last
    round's threads. Adds to ``seconds``' "gnn" and "thread"."""
    rng = np.random.default_rng(frame_seed)
    current, prior = points, None
    rounds = []
    for index in range(first_round, first_round + options.rounds):
        check_cancel(cancel)
        label = round_label(index + 1, options.rounds, options.restarts)
        start = time.time()
        graph = refine_with_context(view, current, context, residue_strings, networks,
                                    prefixed(progress, label), cancel, prior,
                                    frame_seed=frame_seed)
        seconds["gnn"] += time.time() - start
        start = time.time()
        report(progress, "thread", 0.0, f"{label}: linking chains")
        predictions = residue_predictions(graph)
        chains = link_chains(predictions, options.min_existence)
        if view.map_resolution >= SHAPE_FROM_RESOLUTION:
            chains = relink_by_shape(chains, predictions.backbone[:, 1])
        graph = graph.turned(runs_against(predictions.backbone, chains))
        threading = thread(chains, graph.aa_probs, graph.confidence,
                           graph.atom14_positions[:, :3], sequences,
                           threader=options.threader, max_evalue=options.max_evalue,
                           placement=options.placement, closure=options.closure,
                           composition_correction=options.composition_correction,
                           structgen_fallback=options.structgen_fallback,
                           min_length=MIN_CHAIN_LENGTH, taken=taken, structgen=networks.structgen,
                           rng=rng, cancel=cancel, anchors=anchors)
        for warning in threading.warnings:
            notify("warning", f"{label}: {warning}")
        named = name_chains(threading.matches, sequences)
        model, aa_probs, reports = _assemble(graph, named, sequences, final=False)
        seconds["thread"] += time.time() - start
        report(progress, "thread", 1.0, f"{label}: {len(named)} chains")
        result = RoundResult(index + 1, model, aa_probs, reports)
        rounds.append(result)
        notify("round", result)
        if model.num_residues >= MIN_POINTS:
            current, prior = model, _next_prior(model, aa_probs, named)
        else:
            current, prior = graph, None

    dropped = 0
    if options.blind_check and unsupported([chain.match for chain in named]):
        start = time.time()
        named, dropped = _blind_checked(view, graph, named, context, sequences, networks, options,
                                        rng, progress, cancel)
        seconds["gnn"] += time.time() - start
    return _Start(rounds, graph, named, dropped)


def network_view(density: DensityMap, resolution: float | None) -> NetworkMap:
    """What a build's networks read of ``density``: the box around its density
    (`extent.working_map`), standardised (`features.standardise`) for ``resolution`` (Å; None:
    estimated from the map's spectrum)."""
    return standardise(working_map(density), resolution)


def build(
    density: DensityMap,
    sequences: list[Sequence],
    networks: Networks,
    options: BuildOptions = BuildOptions(),
    *,
    mask: DensityMap | None = None,
    context: BuiltModel | None = None,
    taken: list[np.ndarray] | None = None,
    anchors: tuple = (),
    region: bool = False,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    on_result: Optional[Callable[[str, object], None]] = None,
) -> BuildResult:
    """Build a model of ``sequences`` into ``density``.

    ``context`` holds residues that stay as they are (fixed neighbours of the new ones, see the
    module docstring) and ``taken`` (bool ``[len(sequences[s])]`` per sequence) the sequence
    positions they hold; ``anchors`` (`thread.Anchor`) are those of them that flank a stretch
    to rebuild, which threading closes gaps against; ``region``: the build is a region's
    rebuild (``mask`` its region), whose few candidates are judged as such
    (`protein_density_check`). The result holds only new residues.

    Raises `InputError` for unusable sequences, `BuildError` when the map yields too few Cα
    candidates (e.g. no protein density), `Cancelled` when ``cancel`` is set (checked between
    windows, crops, chains and rounds).
    """
    from .detect.inference import DetectionOptions, detect_calphas

    if options.threader == "structgen":
        if networks.structgen is None:
            from .thread.structgen import THREADING_CHECKPOINT

            raise InputError("the structgen threader needs trained weights "
                             f"(weights/{THREADING_CHECKPOINT}.pt)")
    seconds = {}
    notify = on_result or (lambda kind, payload: None)

    start = time.time()
    view = network_view(density, options.resolution)
    # At 3.2-4 Å a build at the estimate threads less than at the stated resolution (README,
    # "The map's resolution: stated or estimated"), so the message asks for it.
    how = ("estimated from its spectrum; give the map's stated resolution if known, which "
           "threads more at 3-4 Å" if view.estimated else "as set")
    report(progress, "detect", 0.0, f"map resolution {view.map_resolution:.2g} Å ({how})")
    mismatch = None if view.estimated or region else resolution_warning(density, view.map_resolution)
    if mismatch:
        notify("warning", mismatch)
    detection = DetectionOptions() if options.detection_threshold is None else DetectionOptions(
        threshold=options.detection_threshold)
    points = detect_calphas(view, networks.detector, detection, mask=mask,
                            device=networks.device, progress=progress, cancel=cancel).points
    seconds["detect"] = time.time() - start
    if context is not None and context.num_residues and len(points):
        from scipy.spatial import cKDTree

        distance, _ = cKDTree(context.ca).query(points.xyz, distance_upper_bound=CONTEXT_CLEARANCE)
        points = points.select(~np.isfinite(distance))
    warning = protein_density_check(points, view.skewness, region=region)
    if warning:
        notify("warning", warning)
    notify("points", points)

    residue_strings = [s.residues for s in sequences]
    if not sequences and networks.gnn.config.use_sequence:
        residue_strings = [composition_stand_in(len(points))]
    seconds["gnn"] = seconds["thread"] = 0.0
    # With more than one start each threads at a stricter E-value cut, so that merging them
    # does not make a chance thread likelier than one start makes it.
    start_options = dataclasses.replace(options, max_evalue=options.max_evalue / options.restarts)
    starts = []
    for number in range(options.restarts):
        starts.append(_traced_and_threaded(
            view, points, sequences, residue_strings, networks, start_options, context, taken,
            seconds, progress, cancel, notify, frame_seed=options.seed + number,
            first_round=number * options.rounds, anchors=anchors))
    chosen = max(starts, key=lambda s: s.threaded_residues)  # the first of equals
    if len(starts) > 1:
        chosen = _merged([chosen] + [s for s in starts if s is not chosen], sequences)
    rounds, graph, named, dropped = chosen.rounds, chosen.graph, chosen.named, chosen.dropped
    if dropped:
        notify("warning", f"{dropped} chain{'s' if dropped > 1 else ''} threaded in the last "
                          "round not found there by residue types blind to the sequence: "
                          "kept unassigned")
    # The polish pass needs two residues (or context) for the graph network's neighbours.
    context_size = context.num_residues if context is not None else 0
    if sequences and rounds[-1].model.num_residues + context_size >= 2:
        start = time.time()
        # the prior again: the blind check may have taken threads back since the last round
        graph, named = _polish(view, rounds[-1].model,
                               _next_prior(rounds[-1].model, rounds[-1].aa_probs, named), named,
                               context, sequences, networks, progress, cancel)
        seconds["gnn"] += time.time() - start
    if dropped:
        named = name_chains([chain.match for chain in named], sequences)
    final, final_probs, final_reports = _assemble(graph, named, sequences, final=True,
                                                  threaded_only=options.threaded_only,
                                                  points=points)
    if not final.num_residues:
        notify("warning", _empty_reason(rounds[-1].model.num_residues, bool(sequences),
                                        options.threaded_only))
    relax_report = None
    if options.relax:
        final, relax_report = relax_stage(final, context, view, networks.device, seconds,
                                          progress=progress, cancel=cancel)
    start = time.time()
    placements = unassigned_placements(final, final_probs, sequences, cancel=cancel)
    seconds["thread"] += time.time() - start
    return BuildResult(points, tuple(rounds), rounds[-1].model, final, final_probs,
                       final_reports, relax_report, seconds, view, placements)
