"""Threading chains onto sequences, joining and naming them (METHODS §4).

Threading (`thread_chains`). Each chain's profile (`cryobuild.hmm.profile_from_probs`,
calibrated) is searched with every filter open against every input sequence, cut at the
positions already ``taken`` into segments; the best-scoring segment wins if its E-value is at
most ``max_evalue`` (default `MAX_THREAD_EVALUE`; otherwise the chain is unthreadable). Along the alignment, match
states give their residue the sequence position (1-based residue number) and type; residues in
insert states or between aligned domains stay unassigned, and residues beyond either end of the
alignment continue its numbering outward (`_extend_ends`). A run of at least `MIN_OVERHANG`
residues left unassigned at either end (the numbering cannot continue: the sequence segment
ends there) is cut off and threaded as a chain of its own: chain linking had run from one
chain of a complex into the next (the C-terminus of one touching the N-terminus of another),
and the alignment holds only one of them.

Joining (`join_matches`) and naming (`name_chains`) are described there.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from pyhmmer import easel, plan7

from .chains import chain_ids
from .hmm import ALPHABET, calibrate, digital_sequence, profile_from_probs
from .progress import CancelToken, ProgressCallback, check_cancel, report
from .sequences import Sequence

__all__ = [
    "MAX_THREAD_EVALUE",
    "MIN_OVERHANG",
    "MAX_JOIN_DISTANCE",
    "MAX_JOIN_GAP",
    "MAX_JOIN_OVERLAP",
    "CA_CA_DISTANCE",
    "CA_REACH_SLACK",
    "ChainMatch",
    "NamedChain",
    "thread_chains",
    "join_matches",
    "name_chains",
]

#: A chain whose best alignment has a larger E-value is unthreadable. Measured with
#: ``python -m cryobuild.bench.build --cases 4 --max-evalue E`` (graph network at step 21,428,
#: placement on; final sequence recall / Cα precision):
#:
#: ========================  ===========  ===========  ===========
#: data                      E <= 0.01    E <= 0.03    E <= 0.1
#: ========================  ===========  ===========  ===========
#: held-out simulated 3 Å    0.65 / 0.92  0.69 / 0.93  0.70 / 0.91
#: held-out simulated 4 Å    0.46 / 0.93  0.50 / 0.93  0.54 / 0.90
#: apoferritin (1.75 Å)      0.69 / 0.99  0.72 / 0.97  0.70 / 0.98
#: EMD-2566 (3.2 Å)          0.54 / 0.95  0.54 / 0.94  0.52 / 0.89
#: ========================  ===========  ===========  ===========
#:
#: 0.03 gains everywhere at no cost in precision; 0.1 threads more fragments wrongly (precision
#: and backbone RMSD worse, 0.77 -> 0.82 Å at 3 Å). The chosen value was tuned on these
#: benchmark cases. With the network fine-tuned on side-chain decoys (step 35,949) the cut
#: matters less: 0.81 / 0.80 / 0.83 at 3 Å and 0.60 / 0.62 / 0.60 at 4 Å, precision 0.97-0.98.
MAX_THREAD_EVALUE = 3e-2
#: Residues: unassigned runs at least this long at a threaded chain's ends are cut off and
#: threaded on their own (the shortest chain the final model keeps).
MIN_OVERHANG = 4
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
#: Å, CA-CA distance of consecutive residues (trans peptide): the most a residue can span.
CA_CA_DISTANCE = 3.8
#: Å added to ``gap * CA_CA_DISTANCE`` when asking whether residues ``gap`` apart in sequence
#: can be where they are: predicted Cα are off by a few tenths of an Å (consecutive Cα 3.81 Å
#: apart were refused without it).
CA_REACH_SLACK = 1.0

# Row of the backbone atoms in ``backbone [N, 3, 3]``.
_N, _CA, _C = 0, 1, 2
# Column characters of pyhmmer alignments: insert columns in the HMM row, deletions in the target.
_INSERT, _DELETION = ".", "-"


@dataclasses.dataclass(frozen=True, eq=False)
class ChainMatch:
    """A chain and the sequence positions threading gave its residues.

    Attributes
    ----------
    nodes : int64 ``[L]``
        Node indices of the chain's residues in N -> C order.
    sequence_index : int
        Index of the matched input sequence, or -1 when the chain is unthreadable.
    residue_number : int64 ``[L]``
        1-based position in the matched sequence of each residue; -1 where unassigned.
    aatype : int64 ``[L]``
        Residue type (index into ``AA_ORDER``; 20 for ``X``): the sequence's where assigned,
        the most probable predicted type elsewhere.
    score : float
        Bit score of the best alignment (summed over joined chains); NaN when nothing aligned.
    evalue : float
        Its E-value (the smallest of joined chains); inf when nothing aligned.

    Instances compare by identity (``eq=False``).
    """

    nodes: np.ndarray
    sequence_index: int
    residue_number: np.ndarray
    aatype: np.ndarray
    score: float
    evalue: float

    def __post_init__(self):
        nodes = np.asarray(self.nodes, dtype=np.int64).reshape(-1)
        numbers = np.asarray(self.residue_number, dtype=np.int64).reshape(-1)
        aatype = np.asarray(self.aatype, dtype=np.int64).reshape(-1)
        if numbers.shape != nodes.shape or aatype.shape != nodes.shape:
            raise ValueError(
                f"nodes, residue_number and aatype must have one length, got {nodes.shape}, "
                f"{numbers.shape}, {aatype.shape}"
            )
        if self.sequence_index < 0 and np.any(numbers >= 0):
            raise ValueError("an unthreaded chain (sequence_index -1) has no residue numbers")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "residue_number", numbers)
        object.__setattr__(self, "aatype", aatype)

    @classmethod
    def unthreaded(cls, nodes: np.ndarray, aa_probs: np.ndarray, score: float = math.nan,
                   evalue: float = math.inf) -> ChainMatch:
        """A chain given no sequence: no residue numbers, the most probable type of each node
        (``aa_probs`` ``[N, 20]`` of all nodes), and the best alignment's ``score`` and
        ``evalue`` if one was found but rejected."""
        return cls(
            nodes=nodes,
            sequence_index=-1,
            residue_number=np.full(len(nodes), -1),
            aatype=np.argmax(aa_probs[nodes], axis=1),
            score=score,
            evalue=evalue,
        )

    @property
    def threaded(self) -> bool:
        return self.sequence_index >= 0

    @property
    def assigned(self) -> np.ndarray:
        """bool ``[L]``: residues with a residue number."""
        return self.residue_number >= 0


@dataclasses.dataclass(frozen=True)
class NamedChain:
    """A chain with its name (see `name_chains`).

    Attributes
    ----------
    chain_id : str
        Chain name for the model file (1 character for the first 62 chains, then 2).
    label : str
        Human-readable origin: ``"<sequence name> copy <k>"`` or ``"unassigned <k>"``.
    copy : int
        1-based copy number among the chains of the same sequence (or of the unassigned ones).
    match : ChainMatch
        The chain.
    """

    chain_id: str
    label: str
    copy: int
    match: ChainMatch


# ----------------------------------------------------------------------------- threading


def _untaken_segments(
    sequences: list[Sequence], taken: list[np.ndarray] | None
) -> tuple[easel.DigitalSequenceBlock, list[tuple[int, int, int]]]:
    """The stretches of the sequences not yet taken, and (sequence index, 0-based start,
    length) of each."""
    if taken is not None and len(taken) != len(sequences):
        raise ValueError(f"{len(sequences)} sequences but {len(taken)} taken masks")
    segments, origins = [], []
    for index, sequence in enumerate(sequences):
        free = np.ones(len(sequence), dtype=bool)
        if taken is not None:
            mask = np.asarray(taken[index], dtype=bool)
            if mask.shape != free.shape:
                raise ValueError(
                    f"taken[{index}] must have shape [{len(sequence)}], got {mask.shape}"
                )
            free = ~mask
        # Starts and ends (exclusive) of the runs of free positions.
        edges = np.diff(np.concatenate([[0], free.astype(np.int8), [0]]))
        for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            segments.append(digital_sequence(str(len(origins)), sequence.residues[start:end]))
            origins.append((index, int(start), int(end - start)))
    return easel.DigitalSequenceBlock(ALPHABET, segments), origins


def _alignment_positions(alignment: plan7.Alignment, length: int) -> np.ndarray:
    """0-based target position of each profile node in one domain alignment, -1 if none.

    Returns
    -------
    int64 ``[length]``
        Position in the aligned (segment) sequence of the residue in each match state.
    """
    positions = np.full(length, -1, dtype=np.int64)
    node, target = alignment.hmm_from - 1, alignment.target_from - 1
    for hmm_column, target_column in zip(alignment.hmm_sequence, alignment.target_sequence):
        if hmm_column == _INSERT:
            target += 1
        elif target_column == _DELETION:
            node += 1
        else:
            positions[node] = target
            node += 1
            target += 1
    return positions


def _hit_positions(hit: plan7.Hit, length: int, max_evalue: float) -> np.ndarray:
    """Target positions of each node from a hit's co-linear, non-overlapping domains.

    The best domain is always used; further domains with ``i_evalue <= max_evalue`` are
    added in order of score when they neither overlap nor cross the ones already used.
    """
    positions = np.full(length, -1, dtype=np.int64)
    used: list[tuple[int, int, int, int]] = []
    domains = sorted(hit.domains, key=lambda domain: -domain.score)
    for rank, domain in enumerate(domains):
        if rank > 0 and domain.i_evalue > max_evalue:
            continue
        a = domain.alignment
        box = (a.hmm_from, a.hmm_to, a.target_from, a.target_to)
        compatible = all(
            (box[1] < other[0] and box[3] < other[2]) or (box[0] > other[1] and box[2] > other[3])
            for other in used
        )
        if compatible:
            used.append(box)
            domain_positions = _alignment_positions(a, length)
            positions = np.where(domain_positions >= 0, domain_positions, positions)
    return positions


def _extend_ends(positions: np.ndarray, segment_length: int) -> np.ndarray:
    """Continue the numbering from the first and last aligned residue to the chain's ends.

    The residues of a chain are peptide-bonded, so the ones a local alignment leaves out at
    either end most likely follow the sequence outward; they are numbered so while the
    sequence segment lasts.

    Parameters
    ----------
    positions : int64 ``[L]``
        Segment position of each node, -1 where unaligned (at least one aligned).
    segment_length : int
        Length of the aligned sequence segment.

    Returns
    -------
    int64 ``[L]``
        The positions with the chain's unaligned ends filled in where they fit the segment.
    """
    aligned = np.flatnonzero(positions >= 0)
    first, last = aligned[0], aligned[-1]
    nodes = np.arange(len(positions))
    extended = positions.copy()
    # [L] position each node would have continuing from the first / last aligned node
    before = positions[first] - (first - nodes)
    after = positions[last] + (nodes - last)
    head = (nodes < first) & (before >= 0)
    tail = (nodes > last) & (after < segment_length)
    extended[head] = before[head]
    extended[tail] = after[tail]
    return extended


def thread_chains(
    chains: list[np.ndarray],
    aa_probs: np.ndarray,
    confidence: np.ndarray,
    sequences: list[Sequence],
    *,
    taken: list[np.ndarray] | None = None,
    max_evalue: float = MAX_THREAD_EVALUE,
    rng: np.random.Generator | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ChainMatch]:
    """Assign each chain to the input sequence its profile aligns to best.

    Parameters
    ----------
    chains : list of int ``[L_c]``
        Node indices of each chain in N -> C order (`cryobuild.chains.link_chains`).
    aa_probs : ``[N, 20]``
        Residue-type probabilities of all nodes.
    confidence : ``[N]``
        Confidence of all nodes, 0-100.
    sequences : list of Sequence
        The input sequences (one record per chain copy or per distinct sequence).
    taken : list of bool ``[len(sequences[s])]``, optional
        Positions already used by accepted residues; alignments never use them.
    max_evalue : float
        Chains whose best alignment has a larger E-value stay unthreaded.
    rng : numpy.random.Generator, optional
        For profile calibration; by default ``numpy.random.default_rng(0)``.
    progress, cancel
        Progress callback (stage ``"thread"``) and cancel token, checked once per chain.

    Returns
    -------
    list of ChainMatch
        One per chain, in the order of ``chains``, followed by the overhangs cut off (module
        docstring). Chains are independent: two chains may be given the same positions
        (`join_matches` keeps overlapping ones apart as copies).
    """
    if not sequences:
        raise ValueError("thread_chains needs at least one sequence")
    aa_probs = np.asarray(aa_probs, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    rng = np.random.default_rng(0) if rng is None else rng
    block, origins = _untaken_segments(sequences, taken)
    sequence_types = [sequence.aatype for sequence in sequences]
    matches = []
    queue = [np.asarray(chain, dtype=np.int64) for chain in chains]
    while queue:
        check_cancel(cancel)
        report(progress, "thread", len(matches) / max(len(matches) + len(queue), 1),
               f"chain {len(matches) + 1}")
        chain = queue.pop(0)
        hmm = profile_from_probs(aa_probs[chain], confidence[chain], f"chain{len(matches)}")
        calibrate(hmm, rng)
        hits = _search(hmm, block, len(sequences)) if len(block) else []
        best = max(hits, key=lambda hit: hit.score, default=None)
        if best is None or best.evalue > max_evalue:
            matches.append(
                ChainMatch.unthreaded(chain, aa_probs)
                if best is None
                else ChainMatch.unthreaded(chain, aa_probs, best.score, best.evalue)
            )
            continue
        index, start, segment_length = origins[int(best.name)]
        positions = _extend_ends(_hit_positions(best, len(chain), max_evalue), segment_length)
        aligned = np.flatnonzero(positions >= 0)
        head, tail = aligned[0], len(chain) - 1 - aligned[-1]
        if head >= MIN_OVERHANG:
            queue.append(chain[:head])
        if tail >= MIN_OVERHANG:
            queue.append(chain[len(chain) - tail:])
        keep = slice(head if head >= MIN_OVERHANG else 0,
                     len(chain) - tail if tail >= MIN_OVERHANG else len(chain))
        chain, positions = chain[keep], positions[keep]
        assigned = positions >= 0
        predicted = np.argmax(aa_probs[chain], axis=1)
        numbers = np.where(assigned, start + positions + 1, -1)
        aatype = np.where(
            assigned, sequence_types[index][np.maximum(start + positions, 0)], predicted
        )
        matches.append(
            ChainMatch(
                nodes=chain,
                sequence_index=index,
                residue_number=numbers,
                aatype=aatype,
                score=best.score,
                evalue=best.evalue,
            )
        )
    report(progress, "thread", 1.0)
    return matches


def _search(hmm: plan7.HMM, block: easel.DigitalSequenceBlock, num_sequences: int) -> list:
    """Hits of ``hmm`` in ``block`` with every filter open; E-values for ``num_sequences``."""
    pipeline = plan7.Pipeline(
        ALPHABET, bias_filter=False, F1=1.0, F2=1.0, F3=1.0, Z=num_sequences, E=math.inf
    )
    return list(pipeline.search_hmm(hmm, block))


# ----------------------------------------------------------------------------- joining


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
        Threaded chains (`thread_chains`).
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
        joined.append(_concatenate([matches[index] for index in parts]))
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
    kept = dataclasses.replace(chain, nodes=chain.nodes[keep], residue_number=chain.residue_number[keep],
                               aatype=chain.aatype[keep])
    return kept, chain.nodes[~keep]


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
    if ends >= MAX_JOIN_DISTANCE or span > gap * CA_CA_DISTANCE + CA_REACH_SLACK:
        return None
    return gap, float(ends)


def _concatenate(parts: list[ChainMatch]) -> ChainMatch:
    if len(parts) == 1:
        return parts[0]
    return ChainMatch(
        nodes=np.concatenate([part.nodes for part in parts]),
        sequence_index=parts[0].sequence_index,
        residue_number=np.concatenate([part.residue_number for part in parts]),
        aatype=np.concatenate([part.aatype for part in parts]),
        score=float(sum(part.score for part in parts)),
        evalue=float(min(part.evalue for part in parts)),
    )


# ----------------------------------------------------------------------------- naming


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
