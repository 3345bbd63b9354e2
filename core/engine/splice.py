"""Splicing new residues into a session's model, and what a job keeps fixed.

* `thread_records`: the sequence records threading sees when residues are kept, with the
  positions they hold marked ``taken``. Each kept chain that is a copy of a sequence gets its
  own record of that sequence (its own taken positions), so the copies of a homo-oligomer given
  as one FASTA record do not block each other; a full build adds one untaken record per
  sequence for copies not modelled yet.
* `select_region`: the residues a region rebuild replaces and the mask it detects in.
* `plan_chain_names`: the session's chain id for each new chain -- the kept chain of the same
  sequence copy when their numbering fits, otherwise a fresh one. The engine names new residues
  before relaxing them, so a stretch that continues a kept chain is relaxed bonded to it.
* `splice`: kept residues + the named new ones -> the next `SessionState`;
  `spliced_reports`: the chain reports of what it holds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..chains import chain_ids
from ..errors import InputError
from ..maps import DensityMap, crop_box, mask_around
from ..models import BuiltModel
from ..pipeline import ChainReport, RoundResult, join_models
from ..sequences import Sequence
from ..session import SessionState
from ..thread.hints import Placement

__all__ = [
    "REGION_CONTEXT",
    "REGION_MAP_MARGIN",
    "REGION_MASK_RADIUS",
    "SPHERE_BRIDGE",
    "Records",
    "Region",
    "context_near",
    "plan_chain_names",
    "rename_model",
    "rename_placements",
    "rename_reports",
    "rename_round",
    "select_region",
    "splice",
    "spliced_reports",
    "thread_records",
]

#: Å around the region's atoms (and sphere) where Cα are detected (issue: 6 Å).
REGION_MASK_RADIUS = 6.0
#: Å of map kept around the mask for the detector's and graph network's view.
REGION_MAP_MARGIN = 16.0
#: Å: kept residues with a Cα this close to the mask are the graph network's fixed context.
REGION_CONTEXT = 12.0
#: A sphere's region takes the residues of a chain between two of its own when at most this
#: many lie between them: an 8 Å sphere in an EMD-2566 build took 10-24 residues in 2-7 runs,
#: split by one or two residues (e.g. A44-45 and A47-51), each an island the rebuild would keep
#: and thread around. `bench.rebuild --sphere 8` (an 8 Å sphere around the middle of each
#: moved window, five real maps): right residues back 0.18 -> 0.47 (10-residue windows) and
#: 0.09 -> 0.18 (16) with this bridging (thirty-first stop).
SPHERE_BRIDGE = 2
#: Separates a sequence name from the copy's chain in internal record names.
_RECORD_MARK = "\x1f"


@dataclasses.dataclass(frozen=True)
class Records:
    """Sequence records for threading: ``records[i]`` is a copy of the input sequence named
    ``names[i]``, meant for kept chain ``owners[i]`` ("" for a free copy), with ``taken[i]``
    (bool ``[len]``) the positions already held."""

    records: list
    taken: list
    names: list
    owners: list


def thread_records(sequences: list[Sequence], kept: SessionState, *, spare: bool) -> Records:
    """Records and taken positions for threading around the ``kept`` residues (see module)."""
    if not sequences:
        raise InputError("at least one sequence is needed to build")
    records, taken, names, owners = [], [], [], []
    model = kept.model
    for sequence in sequences:
        copies = [c for c in model.chains() if kept.chain_sequences.get(c) == sequence.name]
        for chain in copies:
            rows = model.chain_id == chain
            numbers = model.residue_number[rows]
            mask = np.zeros(len(sequence), dtype=bool)
            inside = numbers[(numbers >= 1) & (numbers <= len(sequence))]
            mask[inside - 1] = True
            records.append(dataclasses.replace(sequence, name=f"{sequence.name}{_RECORD_MARK}{chain}"))
            taken.append(mask)
            names.append(sequence.name)
            owners.append(chain)
        if spare or not copies:
            records.append(dataclasses.replace(sequence, name=f"{sequence.name}{_RECORD_MARK}"))
            taken.append(np.zeros(len(sequence), dtype=bool))
            names.append(sequence.name)
            owners.append("")
    return Records(records, taken, names, owners)


def _record_origin(name: str) -> tuple[str, str]:
    """(input sequence name, owner chain) of an internal record name ("" if not one)."""
    if _RECORD_MARK not in name:
        return name, ""
    sequence, owner = name.split(_RECORD_MARK, 1)
    return sequence, owner


def rename_reports(reports: tuple[ChainReport, ...], renames: dict[str, str]) -> tuple[ChainReport, ...]:
    """Chain reports with chains renamed and record names turned back into sequence names."""
    return tuple(dataclasses.replace(r, chain_id=renames.get(r.chain_id, r.chain_id),
                                     sequence=_record_origin(r.sequence)[0]) for r in reports)


def rename_placements(placements: tuple[Placement, ...], renames: dict[str, str]
                      ) -> tuple[Placement, ...]:
    """Placements of unassigned chains (`thread.hints`) with chains renamed and record names
    turned back into sequence names, as `rename_reports`."""
    return tuple(dataclasses.replace(p, chain_id=renames.get(p.chain_id, p.chain_id),
                                     sequence=_record_origin(p.sequence)[0]) for p in placements)


def rename_round(result: RoundResult, renames: dict[str, str]) -> RoundResult:
    """A round's model and reports with the session's chain names."""
    return dataclasses.replace(result, model=rename_model(result.model, renames),
                               chains=rename_reports(result.chains, renames))


@dataclasses.dataclass(frozen=True, eq=False)
class Region:
    """What a region rebuild replaces and where it looks.

    rows: bool ``[R]`` residues replaced; kept_accepted: number of accepted residues named in
    the region (they stay); density: the map cropped around the region; mask: 1 inside the
    detection mask, on ``density``'s grid; points ``[M, 3]`` Å: the region's atoms (and the
    sphere's centre), for choosing the context."""

    rows: np.ndarray
    kept_accepted: int
    density: DensityMap
    mask: DensityMap
    points: np.ndarray


def _bridged(model: BuiltModel, named: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``named`` (bool ``[R]``) with the ``visible`` residues of a chain numbered between two
    named residues of it `SPHERE_BRIDGE` or fewer apart added."""
    named = named.copy()
    for chain in np.unique(model.chain_id[named]):
        rows = np.flatnonzero((model.chain_id == chain) & visible)
        numbers = model.residue_number[rows]
        marked = np.sort(numbers[named[rows]])
        for first, last in zip(marked[:-1], marked[1:]):
            if 1 < last - first <= SPHERE_BRIDGE + 1:
                named[rows[(numbers > first) & (numbers < last)]] = True
    return named


def select_region(state: SessionState, density: DensityMap, *, keys=None, centre=None,
                  radius: float | None = None) -> Region:
    """The residues to rebuild (named by ``keys``, or with an atom within ``radius`` Å of
    ``centre`` and those `SPHERE_BRIDGE` or fewer between two of them), minus accepted ones,
    and the detection mask: `REGION_MASK_RADIUS` around their
    atoms (and, for a sphere, the whole sphere, so empty density can be built into).

    Raises `InputError` for no or both selections, a bad radius, or a region with nothing to
    rebuild that lies outside the map.
    """
    if (keys is None) == (centre is None):
        raise InputError("a region is given by residue keys or by a centre and radius, not both or neither")
    model = state.model
    atoms = [np.zeros((0, 3))]
    if keys is not None:
        named = state.rows(keys)
        if not named.any():
            raise InputError("the region names no residues")
        sphere = None
    else:
        centre = np.asarray(centre, dtype=np.float64).reshape(-1)
        if centre.shape != (3,) or not np.all(np.isfinite(centre)):
            raise InputError(f"the region centre must be 3 finite numbers (Å), got {centre!r}")
        if radius is None or not 0 < radius <= 100:
            raise InputError(f"the region radius must be in (0, 100] Å, got {radius!r}")
        distance = np.linalg.norm(model.atom_positions - centre, axis=-1)
        named = _bridged(model, state.visible & np.any(model.atom_mask & (distance <= radius), axis=1),
                         state.visible)
        sphere = (centre, float(radius))
        atoms.append(centre[None])
    rows = named & ~state.accepted
    kept_accepted = int((named & state.accepted).sum())
    if not rows.any() and sphere is None:
        raise InputError("every residue of the region is accepted: nothing to rebuild")
    atoms.append(model.atom_positions[rows][model.atom_mask[rows]])
    points = np.concatenate(atoms)
    reach = REGION_MASK_RADIUS + (sphere[1] if sphere is not None else 0.0)
    lo = points.min(0) - reach - REGION_MAP_MARGIN
    hi = points.max(0) + reach + REGION_MAP_MARGIN
    map_lo, map_hi = density.extent
    if np.any(hi < map_lo) or np.any(lo > map_hi):
        raise InputError("the region lies outside the map")
    cropped = crop_box(density, np.maximum(lo, map_lo), np.minimum(hi, map_hi))
    inside = mask_around(cropped, model.atom_positions[rows][model.atom_mask[rows]], REGION_MASK_RADIUS)
    if sphere is not None:
        inside |= mask_around(cropped, sphere[0][None], sphere[1] + REGION_MASK_RADIUS)
    if not inside.any():
        raise InputError("the region's mask does not overlap the map")
    mask = cropped.with_grid(inside.astype(np.float32))
    return Region(rows, kept_accepted, cropped, mask, points)


def context_near(kept: SessionState, points: np.ndarray, distance: float) -> BuiltModel:
    """The kept residues with a Cα within ``distance`` Å of any of ``points`` ``[M, 3]``."""
    from scipy.spatial import cKDTree

    if kept.num_residues == 0 or len(points) == 0:
        return kept.model.select(np.zeros(kept.num_residues, dtype=bool))
    near, _ = cKDTree(points).query(kept.model.ca, distance_upper_bound=distance)
    return kept.model.select(np.isfinite(near))


def plan_chain_names(kept: BuiltModel, new: BuiltModel, reports: tuple[ChainReport, ...],
                     chain_sequences: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Chain id in the session for each chain of ``new``, and the updated chain -> sequence map.

    A new chain threaded to a copy of a sequence joins the kept chain that copy was meant for
    (its record's owner) or else the nearest kept chain of the same sequence, if its residue
    numbers are all free there; otherwise (and for unthreaded chains) it gets the first unused
    chain id.
    """
    from scipy.spatial import cKDTree

    used = set(kept.chains())
    numbers = {c: set(kept.residue_number[kept.chain_id == c].tolist()) for c in used}
    chain_sequences = dict(chain_sequences)
    report_of = {r.chain_id: r for r in reports}
    fresh = (name for name in chain_ids(len(used) + len(new.chains()) + 1) if name not in used)
    renames = {}
    for chain in new.chains():
        rows = new.chain_id == chain
        mine = set(new.residue_number[rows].tolist())
        report = report_of.get(chain)
        sequence, owner = _record_origin(report.sequence) if report is not None else ("", "")
        target = None
        if sequence:
            candidates = [c for c in sorted(used)
                          if chain_sequences.get(c) == sequence and not (mine & numbers[c])]
            if owner in candidates:
                target = owner
            elif candidates:
                tree = cKDTree(new.ca[rows])

                def distance(candidate):
                    # a candidate is a kept chain, or a fresh one earlier new chains went to
                    parts = [kept.ca[kept.chain_id == candidate]]
                    parts += [new.ca[new.chain_id == n] for n, t in renames.items() if t == candidate]
                    return tree.query(np.concatenate(parts))[0].min()

                target = min(candidates, key=distance)
        if target is None:
            target = next(fresh)
            used.add(target)
            numbers[target] = set()
        numbers[target] |= mine
        if sequence:
            chain_sequences[target] = sequence
        renames[chain] = target
    return renames, chain_sequences


def rename_model(model: BuiltModel, renames: dict[str, str]) -> BuiltModel:
    """``model`` with its chains renamed (chains not in ``renames`` keep their ids)."""
    if not renames or model.num_residues == 0:
        return model
    return dataclasses.replace(
        model,
        chain_id=np.array([renames.get(c, c) for c in model.chain_id.tolist()]),
        entity_sequences={renames.get(c, c): s for c, s in model.entity_sequences.items()},
    )


def splice(kept: SessionState, new: BuiltModel, chain_sequences: dict[str, str]) -> SessionState:
    """``kept`` plus the ``new`` residues (flags: built, not accepted, not pruned), whose chains
    are already named by `plan_chain_names` (``chain_sequences`` is its updated chain ->
    sequence map); pruned kept residues whose key a new residue takes are dropped. Residues are
    ordered by chain (kept chains first) and number."""
    new_keys = set(zip(new.chain_id.tolist(), new.residue_number.tolist()))
    superseded = np.array([key in new_keys for key in kept.keys()], dtype=bool) & kept.pruned
    kept = kept.select(~superseded)
    joined = join_models([kept.model, new])
    count = new.num_residues
    flags = {
        "accepted": np.concatenate([kept.accepted, np.zeros(count, bool)]),
        "built": np.concatenate([kept.built, np.ones(count, bool)]),
        "pruned": np.concatenate([kept.pruned, np.zeros(count, bool)]),
    }
    rank = {c: i for i, c in enumerate(joined.chains())}
    order = np.lexsort((joined.residue_number, [rank[c] for c in joined.chain_id.tolist()]))
    return SessionState(joined.take(order), *(flag[order] for flag in flags.values()),
                        chain_sequences=chain_sequences)


def spliced_reports(model: BuiltModel, kept: tuple[ChainReport, ...], new: tuple[ChainReport, ...],
                    chain_sequences: dict[str, str]) -> tuple[ChainReport, ...]:
    """One report per chain of ``model`` (new residues spliced among kept ones, `splice`), in
    its chain order, from the reports of the kept chains and of the new ones (already renamed,
    `rename_reports`): the residue count, first and last number and mean confidence of what the
    chain holds now, its sequence from ``chain_sequences``, and the score and E-value of the
    best alignment among its parts (a chain that kept some residues and gained new ones was
    never aligned as a whole)."""
    parts: dict[str, list[ChainReport]] = {}
    for report in kept + new:
        parts.setdefault(report.chain_id, []).append(report)
    reports = []
    for chain in model.chains():
        rows = model.chain_id == chain
        numbers = model.residue_number[rows]
        best = min(parts.get(chain, ()), key=lambda report: report.evalue, default=None)
        reports.append(ChainReport(
            chain, chain_sequences.get(chain, ""), int(numbers.min()), int(numbers.max()),
            int(rows.sum()), best.score if best is not None else float("nan"),
            best.evalue if best is not None else float("inf"), float(model.confidence[rows].mean())))
    return tuple(reports)
