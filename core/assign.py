"""Assigning an unassigned chain to a place in a sequence the user chose (a `thread.hints`
placement): the step a Coot user takes by hand with a chain of UNK residues, done with what the
build knows.

Threading leaves a chain unassigned when its best alignment could be chance among all the chains
searched; `thread.hints` lists where it might go, and the user, who may know more (a
cross-link, a mutant, the fold), picks one. `assign_placement` then gives the chain the
placement's residue numbers and the sequence's residue types, residue by residue as the
alignment pairs them (residues in the alignment's inserts, or outside it, are left out, as
threading leaves out a threaded chain's unaligned residues), and rebuilds its atoms as the
build's last pass does: one graph-network pass with the types one-hot as the prior and the
model's other residues near it as fixed context (`pipeline.refine_with_context`), side chains
from the torsions the pass predicts for those types, then relaxation with that context held
fixed (`pipeline.relax_with_context`). The result holds the chain's new residues only; putting
them in place of the old ones is the caller's (`cryobuild.engine.Engine.start_assign`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .errors import InputError
from .features import NetworkMap
from .models import BuiltModel
from .pipeline import ChainReport, Networks, refine_with_context, relax_with_context
from .progress import CancelToken, ProgressCallback, check_cancel, prefixed, report
from .residues import one_hot
from .sequences import Sequence
from .thread.hints import Placement

__all__ = ["MIN_ASSIGNED", "Assignment", "assign_placement"]

#: Fewest residues a placement must give the chain (the graph network needs two nodes).
MIN_ASSIGNED = 2


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
    left_out : int
        Residues of the chain the placement does not number (in its inserts or outside it).
    relax_report : object
        `relax.RelaxReport`, or None without relaxation.
    """

    model: BuiltModel
    aa_probs: np.ndarray
    chain: ChainReport
    placement: Placement
    left_out: int
    relax_report: object = None


def _sequence_named(sequences: list[Sequence], name: str) -> Sequence:
    for sequence in sequences:
        if sequence.name == name:
            return sequence
    raise InputError(f"the placement names sequence {name!r}, which is not among the sequences "
                     f"({', '.join(s.name for s in sequences) or 'none'})")


def _numbered(model: BuiltModel, placement: Placement, sequence: Sequence) -> tuple[BuiltModel, int]:
    """The residues of ``placement``'s chain in ``model`` that its alignment numbers, renumbered
    and retyped by ``sequence`` (backbone atoms only: the side chains are rebuilt), and how
    many of the chain's residues it leaves out."""
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
    chain = model.take(rows[numbered])
    positions = positions[numbered]
    backbone = chain.atom_mask.copy()
    backbone[:, 3:] = False  # atom14 slots 0-2: N, CA, C
    chain = dataclasses.replace(chain, aatype=sequence.aatype[positions - 1],
                                residue_number=positions, atom_mask=backbone,
                                entity_sequences={placement.chain_id: sequence.residues})
    return chain, int((~numbered).sum())


def assign_placement(view: NetworkMap, model: BuiltModel, placement: Placement,
                     sequences: list[Sequence], networks: Networks, *,
                     context: BuiltModel | None = None, relax: bool = True,
                     progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelToken] = None) -> Assignment:
    """Assign ``placement``'s chain of ``model`` to its sequence (module docstring).

    Parameters
    ----------
    view : NetworkMap
        The map as the networks read it (`pipeline.network_view`).
    model : BuiltModel
        A model holding the unassigned chain (``placement.chain_id``, no entity sequence), with
        the residue numbers the placement was found with.
    placement : Placement
        Where the chain goes; its ``aligned`` pairs number the residues.
    sequences : list of Sequence
        The build's sequences (all of them are the graph network's sequence input).
    networks : Networks
        The graph network (and its device) to rebuild the atoms with.
    context : BuiltModel, optional
        Residues held fixed around the chain (the model's others near it).
    relax : bool
        Relax the rebuilt chain (with ``context`` fixed).

    Raises `InputError` when the chain is missing, already threaded, or the placement numbers
    fewer than `MIN_ASSIGNED` of its residues, or names an unknown sequence; `Cancelled` when
    ``cancel`` is set.
    """
    sequence = _sequence_named(sequences, placement.sequence)
    chain, left_out = _numbered(model, placement, sequence)
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
    return Assignment(chain, graph.aa_probs, chain_report, placement, left_out, relax_report)
