"""Whether a job's new residues replace the ones a session already has, and the sequence windows
a region rebuild threads into.

A job that would replace residues of a finished model (a second full build, every region
rebuild) leaves the session's model as it is while it runs and, at the end, replaces the old
residues only when the new ones are better (`judge`): at least as many residues, at least as
many of them with a residue type (unassigned chains are UNK), more total confidence or a fit to
the map more than `FIT_TOLERANCE` better, and a fit no worse than `FIT_TOLERANCE`. Otherwise
the session keeps the old residues and the job's `Verdict` holds the new model as a candidate
the user may swap in (`cryobuild.session.Session.swap`).

A region rebuild threads its new residues within the *sequence window* of the region's chains
(`window_records`): between the residue numbers of the kept residues flanking the region in the
same chain. A short stretch cannot reach a confident E-value against a whole sequence, but it
can within a window a few tens of residues long, so the E-value cut is scaled by how much of
the sequence the window leaves open (`WINDOW_MAX_EVALUE` at most). Those flanking residues are
threading's anchors (`thread.closure.Anchor`): a window short enough for closure is filled
between them even when no new chain threads on its own.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..maps import DensityMap
from ..models import BuiltModel
from ..residues import UNK_INDEX
from ..sequences import Sequence
from ..session import SessionState
from .splice import Records, thread_records

__all__ = ["FIT_TOLERANCE", "OFF_DENSITY_FIT", "OFF_DENSITY_SHORTFALL", "OVERLAP_DISTANCE",
           "WINDOW_MAX_EVALUE", "ModelStats", "Verdict", "Windows", "judge", "model_stats",
           "window_records"]

#: Map SD: new residues may fit the map this much worse on average (mean density at their
#: backbone atoms) and still replace old ones -- the network places backbone atoms ~0.5 Å from
#: where a refined model has them, which lowers the density there a little.
FIT_TOLERANCE = 0.25
#: Map SD: new residues that fit the map this much better where the old ones lie
#: (`_fit_where_old`) replace them with up to `OFF_DENSITY_SHORTFALL` of their count fewer
#: residues, and as many fewer of known type (at least one): the old ones lie off the density,
#: and the new ones lack a Cα the detector missed. Of `bench.rebuild`'s stretches moved 2.5 Å
#: off their density (fit 0.5-1 SD, their rebuilds about 3), 10 of the 12 whose old residues
#: stayed had a rebuild short by one to three residues.
OFF_DENSITY_FIT = 2 * FIT_TOLERANCE
OFF_DENSITY_SHORTFALL = 0.1
#: Å: a new residue with its Cα this close to an old one's takes that residue's place (for
#: the fit comparison), under the 3.8 Å Cα-Cα spacing.
OVERLAP_DISTANCE = 3.0
#: Largest E-value cut for threading into sequence windows (the verdict guards the rest).
WINDOW_MAX_EVALUE = 1.0
#: Atom14 slots of the backbone atoms N, CA, C, O.
_BACKBONE = slice(0, 4)


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """residues; typed: those with a residue type (not UNK: threaded, or of a build without
    sequence); confidence: mean 0-100; total: summed confidence; fit: mean density at the
    backbone atoms, in SD of the map above its mean (NaN without residues)."""

    residues: int
    typed: int
    confidence: float
    total: float
    fit: float

    def describe(self) -> str:
        if not self.residues:
            return "no residues"
        unknown = self.residues - self.typed
        untyped = f" ({unknown} of unknown type)" if unknown else ""
        return (f"{self.residues} residues{untyped}, mean confidence {self.confidence:.0f}, "
                f"fit {self.fit:.2f} SD")


@dataclasses.dataclass(frozen=True, eq=False)
class Verdict:
    """What a job that keeps the session's model did with its new residues.

    kept: "new" (they replaced the old ones) or "old" (the session's model stayed); message:
    one line saying which and why; old, new: their `ModelStats`; candidate: with "old", the
    session state with the new residues, for `Session.swap` (None with "new"); base: the state
    it was made against (a swap is refused once the session has changed); sequences: the job's.
    """

    kept: str
    message: str
    old: ModelStats
    new: ModelStats
    candidate: SessionState | None = None
    base: SessionState | None = None
    sequences: tuple[Sequence, ...] = ()


def model_stats(model: BuiltModel, density: DensityMap) -> ModelStats:
    """`ModelStats` of ``model`` in ``density``."""
    if model.num_residues == 0:
        return ModelStats(0, 0, float("nan"), 0.0, float("nan"))
    grid = density.grid.astype(np.float64)
    std = float(grid.std()) or 1.0
    mask = model.atom_mask[:, _BACKBONE]
    atoms = model.atom_positions[:, _BACKBONE][mask]
    fit = float("nan")
    if len(atoms):
        fit = (float(density.interpolate(atoms).mean()) - float(grid.mean())) / std
    confidence = np.asarray(model.confidence, dtype=np.float64)
    typed = int(np.sum(np.asarray(model.aatype) != UNK_INDEX))
    return ModelStats(model.num_residues, typed, float(confidence.mean()), float(confidence.sum()), fit)


def _fit_where_old(old: BuiltModel, new: BuiltModel, density: DensityMap) -> float:
    """Mean fit (SD, as `model_stats`) of the residues of ``new`` with a Cα within
    `OVERLAP_DISTANCE` of one of ``old`` (all of them when none is)."""
    from scipy.spatial import cKDTree

    distance, _ = cKDTree(old.ca).query(new.ca, distance_upper_bound=OVERLAP_DISTANCE)
    near = np.isfinite(distance)
    return model_stats(new.select(near) if near.any() else new, density).fit


def judge(old: BuiltModel, new: BuiltModel, density: DensityMap, *,
          what: str = "model") -> tuple[str, str, ModelStats, ModelStats]:
    """Which residues to keep: ``("new" | "old", message, old stats, new stats)``.

    The new ones win when there are at least as many, with at least as many of known type,
    their summed confidence is higher *or* their mean fit to ``density`` where the old ones are
    (`_fit_where_old`) is more than `FIT_TOLERANCE` better, and that fit is at most
    `FIT_TOLERANCE` worse; with a fit more than `OFF_DENSITY_FIT` better they may be a few
    fewer (`OFF_DENSITY_SHORTFALL`). ``what`` names the old ones in the message ("model",
    "region").

    Why a better fit wins without more confidence: the old residues keep the confidence the
    network gave them when they were built, whatever has moved them since, while the fit
    measures where they are now. A user rebuilds a stretch that looks wrong: on stretches of a
    build of EMD-2566 (3.2 Å) moved 2.5 Å off their density, a rebuild numbered right often
    lost to them on the summed confidence alone, while they fit at 0.5-1 SD and it at about 3
    (`python -m cryobuild.bench.rebuild`; README, "Rebuilding a stretch that lies wrong").

    Why the fit is compared where the old residues are: a map's density varies from region to
    region, so the mean fits of two different sets of residues compare the regions as much as
    the models. A 20-residue stretch of the simulated il2 map fits at 5.31 SD, the whole
    deposited model at 5.18; a new build of all of il2 at 5.01 would lose to the stretch under
    a whole-model comparison, while its 19 residues on the stretch fit at 5.32. Residues a new
    model adds elsewhere are judged by the counts and the summed confidence.
    """
    before, after = model_stats(old, density), model_stats(new, density)
    if before.residues == 0:
        if after.residues:
            return "new", f"new residues: {after.describe()} (the {what} had none)", before, after
        return "old", f"nothing to replace and nothing new: the {what} stays as it was", before, after
    reasons = []
    fit = _fit_where_old(old, new, density) if after.residues else float("nan")
    spared = (max(1, int(OFF_DENSITY_SHORTFALL * before.residues))
              if fit > before.fit + OFF_DENSITY_FIT else 0)
    if after.residues < before.residues - spared:
        reasons.append(f"fewer residues ({after.residues} against {before.residues})")
    elif after.typed < before.typed - spared:
        reasons.append(f"fewer residues of known type ({after.typed} against {before.typed})")
    elif after.total <= before.total and not fit > before.fit + FIT_TOLERANCE:
        reasons.append(f"no more total confidence ({after.total:.0f} against {before.total:.0f}) "
                       f"and no better fit to the map ({fit:.2f} against {before.fit:.2f} SD)")
    if fit < before.fit - FIT_TOLERANCE:
        reasons.append(f"a worse fit to the map ({fit:.2f} against {before.fit:.2f} SD)")
    if not reasons:
        return "new", (f"kept the new residues: {after.describe()} (the {what} had "
                       f"{before.describe()})"), before, after
    return "old", (f"kept the {what}'s residues ({before.describe()}): the new ones have "
                   f"{' and '.join(reasons)}"), before, after


@dataclasses.dataclass(frozen=True, eq=False)
class Windows:
    """How a region rebuild threads (`window_records`): ``records`` with the positions outside
    each region chain's window taken, the E-value cut ``max_evalue``, and as ``anchors``
    (`thread.Anchor`, indices into ``records.records``) the kept residues flanking each window,
    which threading's closure fills the window against."""

    records: Records
    max_evalue: float
    anchors: tuple


def window_records(sequences: list[Sequence], state: SessionState, rows: np.ndarray,
                   max_evalue: float) -> Windows | None:
    """How a region rebuild threads within its sequence windows (`Windows`).

    ``rows`` (bool ``[R]``) are the residues the rebuild replaces. Each region chain copying a
    sequence gets its own record with every position outside its window taken, the window
    running from after the last kept residue before the region to before the first one after
    it (the sequence's ends where there is none), and those two kept residues are its anchors;
    kept residues inside the window stay taken. A chain whose every residue is in the region
    gets a free copy of its sequence. Returns None when a region chain copies no sequence (the
    rebuild threads as a full build does).
    """
    from ..thread import Anchor

    model = state.model
    region_chains = sorted(set(model.chain_id[rows].tolist()))
    by_name = {sequence.name: sequence for sequence in sequences}
    if not region_chains or any(state.chain_sequences.get(c) not in by_name for c in region_chains):
        return None
    kept = state.select(~rows & state.visible)
    records = thread_records(sequences, kept, spare=True)
    windows: dict[str, np.ndarray] = {}
    flanks: dict[str, list[int]] = {}
    whole: set[str] = set()
    for chain in region_chains:
        sequence = by_name[state.chain_sequences[chain]]
        numbers = model.residue_number[rows & (model.chain_id == chain)]
        others = kept.model.residue_number[kept.model.chain_id == chain]
        if not len(others):
            whole.add(sequence.name)
            continue
        below, above = others[others < numbers.min()], others[others > numbers.max()]
        first = int(below.max()) + 1 if len(below) else 1
        last = int(above.min()) - 1 if len(above) else len(sequence)
        outside = np.ones(len(sequence), dtype=bool)
        outside[max(first, 1) - 1:max(last, 0)] = False
        windows[chain] = outside
        flanks[chain] = [n for n in (first - 1, last + 1) if 1 <= n <= len(sequence)
                         and n in others]
    chosen = Records([], [], [], [])
    anchors = []
    for record, taken, name, owner in zip(records.records, records.taken, records.names, records.owners):
        if owner in windows:
            taken = taken | windows[owner]
            chain_rows = kept.model.chain_id == owner
            for number in flanks[owner]:
                row = np.flatnonzero(chain_rows & (kept.model.residue_number == number))[0]
                anchors.append(Anchor(len(chosen.records), number, kept.model.ca[row]))
        elif not (owner == "" and name in whole):
            continue
        chosen.records.append(record)
        chosen.taken.append(taken)
        chosen.names.append(name)
        chosen.owners.append(owner)
    free = sum(int((~taken).sum()) for taken in chosen.taken)
    if not free:
        return None
    total = sum(len(record) for record in chosen.records)
    return Windows(chosen, min(max_evalue * total / free, max(WINDOW_MAX_EVALUE, max_evalue)),
                   tuple(anchors))
