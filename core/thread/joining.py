"""Joining threaded chains that continue each other, and naming chains (METHODS §4).

`join_matches` joins chains threaded onto consecutive stretches of one sequence (after trimming
junction overlaps); `name_chains` orders chains by sequence and copy and gives them chain IDs.
"""

from __future__ import annotations

import numpy as np

from ..chains import chain_ids
from ..sequences import Sequence
from ..residues import CA_CA_DISTANCE, reach
from .matches import ChainMatch, NamedChain, concatenate

__all__ = ["MAX_JOIN_DISTANCE", "MAX_JOIN_GAP", "MAX_JOIN_OVERLAP", "join_matches", "name_chains"]

#: Å: chains are joined only when the C-terminus of one is this close to the N-terminus of the
#: next (METHODS §4, as ModelAngelo).
MAX_JOIN_DISTANCE = 30.0
#: Joined chains must leave 0 < gap < this many residues between their numbering (METHODS §4).
MAX_JOIN_GAP = 40
#: Residues: two chains of one sequence that both claim up to this many positions where one ends
#: and the other begins, with the claimants in the same place, are one chain broken there
#: (`join_matches`). On the simulated il2 demo map two chains both took residue 93, their Cα
#: 2.9 Å apart, and the final model held residue 93 twice.
MAX_JOIN_OVERLAP = 2
# Row of the backbone atoms in ``backbone [N, 3, 3]``.
_N, _CA, _C = 0, 1, 2


def join_matches(matches: list[ChainMatch], backbone: np.ndarray,
                 aa_probs: np.ndarray) -> list[ChainMatch]:
    """Join chains threaded onto consecutive stretches of the same sequence.

    First, junction overlaps (`_trim_overlap`): where chain ``b`` begins with up to
    `MAX_JOIN_OVERLAP` positions that chain ``a`` ends with, and each of those positions has its
    Cα in ``a`` within `CA_CA_DISTANCE` of its Cα in ``b``, the two claim the same residues of
    one chain. The claim of the chain with the larger E-value (the shorter on a tie) is cut
    off, and the cut residues become an unthreaded piece (in the raw model only).

    Then chain ``a`` is followed by chain ``b`` when both match the same sequence and

    * the numbering is compatible: ``gap = first(b) - last(a)`` (first and last assigned residue
      numbers) satisfies ``0 < gap < MAX_JOIN_GAP`` and leaves room for the unassigned residues
      after ``last(a)`` in ``a`` and before ``first(b)`` in ``b``;
    * the C-terminus of ``a`` (C atom of its last residue) is closer than `MAX_JOIN_DISTANCE`
      to the N-terminus of ``b`` (N atom of its first residue);
    * the CAs of the residues numbered ``last(a)`` and ``first(b)`` are at most
      ``gap * CA_CA_DISTANCE + CA_REACH_SLACK`` apart (the missing residues can span the
      distance).

    Candidate joins are accepted greedily, the smallest numbering gap first (ties: closest ends
    first); each chain has at most one chain before and one after it. The gap goes first because
    the 30 Å end distance admits far-apart pieces: on the simulated il2 demo, closest-ends-first
    joined a piece numbered 110-116 after residue 76 of one chain instead of after residue 109
    of another that it continues. Chains whose numbering overlaps are never joined: they are
    different copies of the sequence (homo-oligomers). Unthreaded chains are left alone.

    Parameters
    ----------
    matches : list of ChainMatch
        Threaded chains (`search.thread_chains`).
    backbone : ``[N, 3, 3]``
        N, CA, C positions (Å) of all nodes.
    aa_probs : ``[N, 20]``
        Residue-type probabilities of all nodes (the types of cut-off residues).

    Returns
    -------
    list of ChainMatch
        Joined chains (nodes, numbers and types concatenated; score summed, smallest E-value)
        and the chains not joined, in the order of the first chain of each in ``matches``;
        pieces cut off junction overlaps follow, unthreaded.
    """
    backbone = np.asarray(backbone, dtype=np.float64)
    matches = list(matches)
    cut_off = []
    while (pair := _junction_overlap(matches, backbone[:, _CA])) is not None:
        a, b = pair
        strength = [(matches[i].evalue, -len(matches[i].nodes)) for i in (a, b)]
        weaker = a if strength[0] > strength[1] else b
        kept, cut = _trim_overlap(matches[a], matches[b], at_end=weaker == a)
        if kept.assigned.any():
            matches[weaker] = kept
        else:  # nothing of it is left on the sequence
            matches[weaker], cut = ChainMatch.unthreaded(matches[weaker].nodes, aa_probs), []
        if len(cut):
            cut_off.append(ChainMatch.unthreaded(cut, aa_probs))
    candidates = []
    for a, first in enumerate(matches):
        for b, second in enumerate(matches):
            if a == b or not first.threaded or first.sequence_index != second.sequence_index:
                continue
            gap_and_distance = _join_gap_and_distance(first, second, backbone)
            if gap_and_distance is not None:
                candidates.append((*gap_and_distance, a, b))
    after = {}
    before = {}
    for _, _, a, b in sorted(candidates):
        if a not in after and b not in before:
            after[a], before[b] = b, a
    joined = []
    for start in range(len(matches)):
        if start in before:
            continue
        parts = [start]
        while parts[-1] in after:
            parts.append(after[parts[-1]])
        joined.append(concatenate([matches[index] for index in parts]))
    return joined + cut_off


def _junction_overlap(matches: list[ChainMatch], ca: np.ndarray) -> tuple[int, int] | None:
    """Indices ``(a, b)`` of two threaded chains of one sequence where ``b`` begins with up to
    `MAX_JOIN_OVERLAP` positions ``a`` ends with, at the same place (`join_matches`), or None."""
    for a, first in enumerate(matches):
        for b, second in enumerate(matches):
            if (a == b or not first.threaded or first.sequence_index != second.sequence_index
                    or not first.assigned.any() or not second.assigned.any()):
                continue
            numbers_a, numbers_b = first.residue_number, second.residue_number
            lo, hi = numbers_b[second.assigned][0], numbers_a[first.assigned][-1]
            if not 1 <= hi - lo + 1 <= MAX_JOIN_OVERLAP or numbers_a[first.assigned][0] >= lo:
                continue
            shared = np.arange(lo, hi + 1)
            in_a = first.nodes[first.assigned][np.isin(numbers_a[first.assigned], shared)]
            in_b = second.nodes[second.assigned][np.isin(numbers_b[second.assigned], shared)]
            if len(in_a) == len(in_b) == len(shared) and np.all(
                    np.linalg.norm(ca[in_a] - ca[in_b], axis=1) <= CA_CA_DISTANCE):
                return a, b
    return None


def _trim_overlap(first: ChainMatch, second: ChainMatch, at_end: bool) -> tuple[ChainMatch, np.ndarray]:
    """``first`` without its residues from the first position ``second`` claims on
    (``at_end``), or ``second`` without its residues up to the last position ``first`` claims;
    and the nodes cut off."""
    if at_end:
        lo = second.residue_number[second.assigned][0]
        keep = np.arange(len(first.nodes)) < np.flatnonzero(first.residue_number >= lo)[0]
        chain = first
    else:
        hi = first.residue_number[first.assigned][-1]
        keep = np.arange(len(second.nodes)) > np.flatnonzero(
            second.assigned & (second.residue_number <= hi))[-1]
        chain = second
    return chain.part(keep), chain.nodes[~keep]


def _join_gap_and_distance(first: ChainMatch, second: ChainMatch,
                           backbone: np.ndarray) -> tuple[int, float] | None:
    """Numbering gap (residues) and end-to-end distance (Å) if ``second`` may follow ``first``
    (`join_matches`), else None."""
    assigned_a, assigned_b = np.flatnonzero(first.assigned), np.flatnonzero(second.assigned)
    if len(assigned_a) == 0 or len(assigned_b) == 0:
        return None
    last_a, first_b = assigned_a[-1], assigned_b[0]
    gap = int(second.residue_number[first_b] - first.residue_number[last_a])
    # Unassigned residues after last_a in the first chain and before first_b in the second.
    dangling = (len(first.nodes) - 1 - last_a) + first_b
    if not (0 < gap < MAX_JOIN_GAP) or gap <= dangling:
        return None
    ends = np.linalg.norm(backbone[first.nodes[-1], _C] - backbone[second.nodes[0], _N])
    span = np.linalg.norm(backbone[first.nodes[last_a], _CA] - backbone[second.nodes[first_b], _CA])
    if ends >= MAX_JOIN_DISTANCE or span > reach(gap):
        return None
    return gap, float(ends)


def name_chains(matches: list[ChainMatch], sequences: list[Sequence]) -> list[NamedChain]:
    """Order chains by sequence and copy and give them chain IDs.

    Chains matched to sequence 0 come first, then sequence 1, and so on; within a sequence the
    copies are ordered by the number of assigned residues (most first; ties by first residue
    number) and numbered 1, 2, ...; unthreaded chains come last, longest first. IDs follow this
    order through `chain_ids`, so a monomer with one chain is ``A``, and the copies of the first
    sequence of a homodimer are ``A`` and ``B``.

    Parameters
    ----------
    matches : list of ChainMatch
        Joined chains (`join_matches`).
    sequences : list of Sequence
        The sequences the ``sequence_index`` values refer to (for the labels).

    Returns
    -------
    list of NamedChain
        In ID order.
    """

    def key(match: ChainMatch) -> tuple:
        numbers = match.residue_number[match.assigned]
        group = match.sequence_index if match.threaded else len(sequences)
        first = int(numbers.min()) if len(numbers) else 0
        return (group, -int(match.assigned.sum()), -len(match.nodes), first)

    ordered = sorted(matches, key=key)
    names = chain_ids(len(ordered))
    named, copies = [], {}
    for chain_id, match in zip(names, ordered):
        copy = copies.get(match.sequence_index, 0) + 1
        copies[match.sequence_index] = copy
        if match.threaded:
            label = f"{sequences[match.sequence_index].name} copy {copy}"
        else:
            label = f"unassigned {copy}"
        named.append(NamedChain(chain_id=chain_id, label=label, copy=copy, match=match))
    return named
