"""Assigning an unassigned chain to a place in a sequence the user chose (a `thread.hints`
placement): the step a Coot user takes by hand with a chain of UNK residues, done with what the
build knows.

Threading leaves a chain unassigned when its best alignment could be chance among all the chains
searched; `thread.hints` lists where it might go, and the user, who may know more (a
cross-link, a mutant, the fold), picks one. `assign_placement` then gives the chain the
placement's residue numbers and the sequence's residue types, residue by residue as the
alignment pairs them (residues in the alignment's inserts are left out, as threading leaves
out a threaded chain's unaligned residues; the stretches before and after the alignment stay
as they were, an unassigned chain of their own), and rebuilds its atoms as the build's last
pass does: one graph-network pass with the types one-hot as the prior and the model's other
residues within `CONTEXT` Å as fixed context (`pipeline.refine_with_context`), side chains
from the torsions the pass predicts for those types, then relaxation with that context held
fixed (`pipeline.relax_with_context`). The result holds the chain's new residues only;
putting them in place of the old ones is the caller's (`cryobuild.engine.Engine.start_assign`
for a session, ``cryobuild assign`` for a build folder, `with_assignment` for a model).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .errors import InputError
from .features import NetworkMap
from .models import BuiltModel
from .pipeline import (UNASSIGNED_MIN_LENGTH, ChainReport, Networks, refine_with_context,
                       relax_with_context)
from .progress import CancelToken, ProgressCallback, check_cancel, prefixed, report
from .residues import one_hot
from .sequences import Sequence
from .thread.hints import Placement

__all__ = ["CONTEXT", "MIN_ASSIGNED", "Assignment", "assign_placement", "with_assignment"]

#: Fewest residues a placement must give the chain (the graph network needs two nodes).
MIN_ASSIGNED = 2
#: Å: the model's other residues with a Cα this close to one of the chain's are its fixed
#: context (as a region rebuild's, `engine.splice.REGION_CONTEXT`).
CONTEXT = 12.0


@dataclasses.dataclass(frozen=True, eq=False)
class Assignment:
    """An unassigned chain assigned to a placement.

    Attributes
    ----------
    model : BuiltModel
        The chain's residues the placement numbers (``R`` residues), numbered by their sequence
        positions, typed by the sequence, rebuilt and relaxed; its entity sequence is the
        placement's sequence. The chain keeps its ID.
    aa_probs : ``[R, 20]``
        The graph network's residue-type probabilities for them.
    chain : ChainReport
        The chain as a threaded chain (score and E-value: the placement's).
    placement : Placement
        The placement assigned.
    rest : BuiltModel
        The chain's residues before and after the alignment, as they were (unassigned, still
        chain ``placement.chain_id``: the caller names it), stretches of fewer than
        `pipeline.UNASSIGNED_MIN_LENGTH` left out.
    rest_rows : int ``[len(rest)]``
        Their rows in the model given to `assign_placement`.
    left_out : int
        Residues of the chain in neither: in the alignment's inserts, or alone at an end.
    relax_report : object
        `relax.RelaxReport`, or None without relaxation.
    """

    model: BuiltModel
    aa_probs: np.ndarray
    chain: ChainReport
    placement: Placement
    rest: BuiltModel
    rest_rows: np.ndarray
    left_out: int
    relax_report: object = None

    def rest_report(self, chain_id: str) -> ChainReport:
        """`rest` as the unassigned chain ``chain_id``."""
        rest = self.rest
        return ChainReport(chain_id=chain_id, sequence="", first=int(rest.residue_number[0]),
                           last=int(rest.residue_number[-1]), residues=rest.num_residues,
                           score=float("nan"), evalue=float("inf"),
                           mean_confidence=float(rest.confidence.mean()))


def _sequence_named(sequences: list[Sequence], name: str) -> Sequence:
    for sequence in sequences:
        if sequence.name == name:
            return sequence
    raise InputError(f"the placement names sequence {name!r}, which is not among the sequences "
                     f"({', '.join(s.name for s in sequences) or 'none'})")


def _numbered(model: BuiltModel, placement: Placement, sequence: Sequence
              ) -> tuple[BuiltModel, np.ndarray, int]:
    """The residues of ``placement``'s chain in ``model`` that its alignment numbers, renumbered
    and retyped by ``sequence`` (backbone atoms only: the side chains are rebuilt); the rows of
    the chain's residues that stay unassigned (`Assignment.rest`); how many go."""
    rows = np.flatnonzero(model.chain_id == placement.chain_id)
    if not len(rows):
        raise InputError(f"the model has no chain {placement.chain_id!r}")
    if placement.chain_id in model.entity_sequences:
        raise InputError(f"chain {placement.chain_id} is already threaded to a sequence")
    position_of = dict(placement.aligned)
    positions = np.array([position_of.get(int(number), 0) for number in model.residue_number[rows]])
    numbered = positions > 0
    if numbered.sum() < MIN_ASSIGNED:
        raise InputError(f"the placement numbers {int(numbered.sum())} residues of chain "
                         f"{placement.chain_id} (it needs {MIN_ASSIGNED}); was the chain "
                         "pruned or rebuilt since?")
    if positions.max() > len(sequence):
        raise InputError(f"the placement runs past the end of {sequence.name} "
                         f"({len(sequence)} residues)")
    aligned = np.flatnonzero(numbered)
    ends = [rows[:aligned[0]], rows[aligned[-1] + 1:]]
    rest = np.concatenate([end for end in ends if len(end) >= UNASSIGNED_MIN_LENGTH]
                          + [np.zeros(0, np.int64)])
    chain = model.take(rows[numbered])
    positions = positions[numbered]
    backbone = chain.atom_mask.copy()
    backbone[:, 3:] = False  # atom14 slots 0-2: N, CA, C
    chain = dataclasses.replace(chain, aatype=sequence.aatype[positions - 1],
                                residue_number=positions, atom_mask=backbone,
                                entity_sequences={placement.chain_id: sequence.residues})
    return chain, rest, len(rows) - len(aligned) - len(rest)


def _context(model: BuiltModel, chain_rows: np.ndarray) -> BuiltModel | None:
    """The residues of ``model`` outside ``chain_rows`` (bool ``[R]``) with a Cα within
    `CONTEXT` Å of one of the chain's (None when there are none)."""
    from scipy.spatial import cKDTree

    others = np.flatnonzero(~chain_rows)
    if not len(others):
        return None
    distance, _ = cKDTree(model.ca[chain_rows]).query(model.ca[others], distance_upper_bound=CONTEXT)
    near = others[np.isfinite(distance)]
    return model.take(near) if len(near) else None


def assign_placement(view: NetworkMap, model: BuiltModel, placement: Placement,
                     sequences: list[Sequence], networks: Networks, *, relax: bool = True,
                     progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelToken] = None) -> Assignment:
    """Assign ``placement``'s chain of ``model`` to its sequence (module docstring).

    Parameters
    ----------
    view : NetworkMap
        The map as the networks read it (`pipeline.network_view`).
    model : BuiltModel
        A model holding the unassigned chain (``placement.chain_id``, no entity sequence), with
        the residue numbers the placement was found with; its other residues near the chain
        are held fixed around it.
    placement : Placement
        Where the chain goes; its ``aligned`` pairs number the residues.
    sequences : list of Sequence
        The build's sequences (all of them are the graph network's sequence input).
    networks : Networks
        The graph network (and its device) to rebuild the atoms with.
    relax : bool
        Relax the rebuilt chain (with its context fixed).

    Raises `InputError` when the chain is missing, already threaded, or the placement numbers
    fewer than `MIN_ASSIGNED` of its residues, or names an unknown sequence; `Cancelled` when
    ``cancel`` is set.
    """
    sequence = _sequence_named(sequences, placement.sequence)
    chain, rest_rows, left_out = _numbered(model, placement, sequence)
    context = _context(model, model.chain_id == placement.chain_id)
    check_cancel(cancel)
    report(progress, "gnn", 0.0, f"chain {placement.chain_id} as {sequence.name} "
                                 f"{placement.first}-{placement.last}")
    graph = refine_with_context(view, chain, context, [s.residues for s in sequences], networks,
                                prefixed(progress, "assign"), cancel, prior=one_hot(chain.aatype))
    nodes = np.arange(chain.num_residues)
    positions, mask = graph.atoms_for(nodes, chain.aatype)
    chain = dataclasses.replace(chain, atom_positions=positions, atom_mask=mask,
                                confidence=graph.confidence.astype(np.float32))
    relax_report = None
    if relax:
        check_cancel(cancel)
        report(progress, "relax", 0.0, "relaxing geometry")
        chain, relax_report = relax_with_context(chain, context, view, device=networks.device,
                                                 cancel=cancel)
        report(progress, "relax", 1.0, "done")
    chain_report = ChainReport(
        chain_id=placement.chain_id, sequence=sequence.name,
        first=int(chain.residue_number[0]), last=int(chain.residue_number[-1]),
        residues=chain.num_residues, score=placement.score, evalue=placement.evalue,
        mean_confidence=float(chain.confidence.mean()))
    return Assignment(chain, graph.aa_probs, chain_report, placement, model.take(rest_rows),
                      rest_rows, left_out, relax_report)


def with_assignment(model: BuiltModel, aa_probs: np.ndarray, reports: tuple[ChainReport, ...],
                    assignment: Assignment
                    ) -> tuple[BuiltModel, np.ndarray, tuple[ChainReport, ...]]:
    """``model`` (its residue-type probabilities ``aa_probs`` ``[R, 20]`` and chain
    ``reports``, as `assign_placement` was given them) with the assigned chain's residues in
    place of the unassigned ones, under the chain's ID and in its place in the chain order; its
    `Assignment.rest`, if any, becomes a new unassigned chain with the first unused ID, after
    the others."""
    from .chains import chain_ids
    from .pipeline import join_models

    chain = assignment.placement.chain_id
    keep = model.chain_id != chain
    parts, probs = [model.select(keep), assignment.model], [aa_probs[keep], assignment.aa_probs]
    reports = tuple(assignment.chain if r.chain_id == chain else r for r in reports)
    if assignment.rest.num_residues:
        used = set(model.chains())
        rest_id = next(name for name in chain_ids(len(used) + 1) if name not in used)
        parts.append(dataclasses.replace(assignment.rest,
                                         chain_id=np.full(assignment.rest.num_residues, rest_id)))
        probs.append(aa_probs[assignment.rest_rows])
        reports += (assignment.rest_report(rest_id),)
    joined = join_models(parts)
    rank = {c: i for i, c in enumerate(r.chain_id for r in reports)}
    order = np.lexsort((joined.residue_number, [rank[c] for c in joined.chain_id.tolist()]))
    return joined.take(order), np.concatenate(probs)[order], reports
