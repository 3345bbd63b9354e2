"""Threading chains onto sequences by HMM search (METHODS §4).

Each chain's profile (`cryobuild.thread.profiles.profile_from_probs`, calibrated) is searched
with every filter open against every input sequence, cut at the positions already ``taken`` into
segments; the best-scoring segment wins if its E-value, corrected for the segment's
composition (`composition_factor`), is at most ``max_evalue`` (default `MAX_THREAD_EVALUE`;
otherwise the chain is unthreadable). Along the alignment, match
states give their residue the sequence position (1-based residue number) and type; residues in
insert states or between aligned domains stay unassigned, and residues beyond either end of the
alignment continue its numbering outward (`_extend_ends`). A run of at least `MIN_OVERHANG`
residues left unassigned at either end (the numbering cannot continue: the sequence segment
ends there) is cut off and threaded as a chain of its own: chain linking had run from one
chain of a complex into the next (the C-terminus of one touching the N-terminus of another),
and the alignment holds only one of them. A further domain of the hit whose numbers its
junctions with the best one cannot hold (`_junctions_in_reach`) marks a stretch joined on from
elsewhere too: it is cut off and threaded on its own (`_hit_positions`).

A delete state leaves a node out and numbers the nodes on either side as consecutive residues,
which only nodes within one residue's reach of each other can be. HMMER's profiles open deletes
anywhere, and on a 4.0 Å Nav β1 map (`bench.real`, 2 of 3 builds) alignments left out nodes 6.8
and 9.8 Å across, numbering 2 residues too high on one side. A chain whose best alignment leaves
out nodes between flanks farther apart than `MAX_DELETE_SPAN` (`deletions_in_reach`) is searched
again with deletes opened only where they can end within one residue's reach
(`profiles.step_delete_opens`, `profiles.DELETE_REACH`), and numbered by that alignment when it
lies in the same sequence segment. Whether it threads, and its E-value, stay the first
search's: a gated profile moves a chain's E-value, and so which chains near the cut thread.
Gating every profile cost TMV (2.3 Å) sequence recall 0.77 -> 0.72 over nine builds (a right
7-residue chain went from E 0.015 to 0.04), and taking the gated search's E-value for the
chains searched again lost Nav β1's one true 60-residue chain in `bench.decoys`, where 20
shuffles of each sequence make every E-value 21 times larger (thirty-fourth stop).
"""

from __future__ import annotations

import math

import numpy as np
from pyhmmer import easel, plan7

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from ..sequences import Sequence
from ..residues import reach
from .matches import ChainMatch
from .profiles import (ALPHABET, background_block, calibrate, digital_sequence,
                       profile_from_probs)

__all__ = ["MAX_DELETE_SPAN", "MAX_THREAD_EVALUE", "MIN_OVERHANG", "SHUFFLES",
           "alignment_positions", "composition_factor", "deletions_in_reach", "numbered_match",
           "search_all", "thread_chains"]

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
#: Å: a chain whose best alignment leaves out nodes between two it numbers as consecutive
#: residues farther apart than this is searched again with deletes only where they can be (module
#: docstring). Nodes lie off their residue's Cα by 1-2 Å at 4 Å: on `bench.build`'s simulated 4 Å
#: maps (four held-out structures, a scratch log of the thirty-fourth stop's redo events, which
#: then came at 4.8 Å; docs/results_log.md) alignments that left out one node numbered
#: its flanks right up to 6.2 Å apart, and searching those again at `profiles.DELETE_REACH`
#: numbered fewer of their residues right (e.g. 11 -> 8, 22 -> 15); on a 4.0 Å Nav β1 build
#: (`bench.real`) flanks 9.8 Å apart were numbered wrong.
MAX_DELETE_SPAN = 6.5
#: Residues: unassigned runs at least this long at a threaded chain's ends are cut off and
#: threaded on their own (the shortest chain the final model keeps).
MIN_OVERHANG = 4
#: Shuffles of a hit's sequence segment, and background sequences, that give its E-value's
#: correction for composition (`composition_factor`).
SHUFFLES = 32
# Index of the Forward lambda in pyhmmer's EvalueParameters vector (m_mu, m_lambda, v_mu,
# v_lambda, f_tau, f_lambda); pyhmmer 0.12's attribute getters of EvalueParameters fail.
_F_LAMBDA = 5
# Column characters of pyhmmer alignments: insert columns in the HMM row, deletions in the target.
_INSERT, _DELETION = ".", "-"


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


def alignment_positions(alignment: plan7.Alignment, length: int) -> np.ndarray:
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


def _hit_positions(hit: plan7.Hit, length: int, max_evalue: float,
                   ca: np.ndarray | None = None) -> tuple[np.ndarray, list[int]]:
    """Target positions of each node from a hit's co-linear, non-overlapping domains, and
    where the chain is cut.

    The best domain is always used; further domains with ``i_evalue <= max_evalue`` are
    added in order of score when they neither overlap nor cross the ones already used and,
    given the chain's Cα ``ca`` ``[length, 3]`` (Å), when their junctions with them are in
    reach (`_junctions_in_reach`). A domain left out for its junctions that lies wholly before
    or after the ones used aligns a stretch that chain linking joined on from elsewhere: the
    chain is cut at that domain's first (last) node and at the used domains' nearest end, so
    that the stretch is threaded on its own and the nodes between them, which neither
    alignment holds, are not numbered on as the used domains' ends would be
    (`_extend_ends`).

    Returns
    -------
    positions : int64 ``[length]``
        Target position of each node, -1 where unaligned.
    cuts : list of int
        Ascending node indices before which the chain is cut (`numpy.split`'s); the piece
        holding the used domains is the one these positions number.
    """
    positions = np.full(length, -1, dtype=np.int64)
    used: list[tuple[int, int, int, int]] = []
    out_of_reach: list[tuple[int, int]] = []
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
        if not compatible:
            continue
        domain_positions = alignment_positions(a, length)
        if ca is not None and not _junctions_in_reach(positions, domain_positions, ca):
            out_of_reach.append((a.hmm_from - 1, a.hmm_to))
            continue
        used.append(box)
        positions = np.where(domain_positions >= 0, domain_positions, positions)
    aligned = np.flatnonzero(positions >= 0)
    first, end = int(aligned[0]), int(aligned[-1]) + 1
    before = [stop for start, stop in out_of_reach if stop <= first]
    after = [start for start, stop in out_of_reach if start >= end]
    cuts = ([max(before), first] if before else []) + ([end, min(after)] if after else [])
    return positions, sorted(set(cuts) - {0, length})


def _junctions_in_reach(positions: np.ndarray, added: np.ndarray, ca: np.ndarray) -> bool:
    """Whether a domain's positions ``added`` meet those already taken, ``positions`` (both int
    ``[L]``, -1 where unaligned), only where the chain's Cα ``ca`` ``[L, 3]`` (Å) can hold the
    numbers: the aligned nodes on either side of each junction lie no farther apart than the
    residues their numbers leave between them span (``k * CA_CA_DISTANCE + CA_REACH_SLACK``
    for numbers k apart), or than `MAX_DELETE_SPAN` for neighbours in the sequence.

    Two domains of one hit number a chain as one, but HMMER scores each alone: on `bench.build`'s
    simulated 4 Å maps a second domain numbered residues 4 apart that lay 19-29 Å apart
    (thirty-fourth stop, a scratch log of one round's searches), the chain linking having
    joined a stretch from elsewhere. A guard: no final model of `bench.build --cases 4` or of
    `bench.real --seeds 0 1 2` changed with it (thirty-fifth stop), later stages having
    dropped or split such chains.
    """
    combined = np.where(added >= 0, added, positions)
    aligned, _, numbers_apart, spans = _aligned_steps(combined, ca)
    from_added = added[aligned] >= 0
    junction = from_added[1:] != from_added[:-1]
    return bool(np.all(spans[junction]
                       <= np.maximum(reach(numbers_apart[junction]), MAX_DELETE_SPAN)))


def _aligned_steps(positions: np.ndarray, ca: np.ndarray) -> tuple[np.ndarray, ...]:
    """The aligned nodes of ``positions`` (int ``[L]``, -1 where unaligned) and, between each
    and the next, how many nodes and how many positions apart they are and their Cα distance
    (``ca`` ``[L, 3]``, Å): ``[A]`` and three ``[A - 1]``."""
    aligned = np.flatnonzero(positions >= 0)
    spans = np.linalg.norm(ca[aligned[1:]] - ca[aligned[:-1]], axis=1)
    return aligned, np.diff(aligned), np.diff(positions[aligned]), spans


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
    ca: np.ndarray | None = None,
    taken: list[np.ndarray] | None = None,
    max_evalue: float = MAX_THREAD_EVALUE,
    composition_correction: bool = True,
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
    ca : ``[N, 3]``, optional
        Cα of all nodes, Å: each profile's insert-open probabilities follow its chain's steps
        (`profiles.step_insert_opens`), and a chain whose best alignment leaves out nodes
        between flanks farther apart than `MAX_DELETE_SPAN` is aligned again with deletes only
        where they can be (`profiles.step_delete_opens`; module docstring).
    taken : list of bool ``[len(sequences[s])]``, optional
        Positions already used by accepted residues; alignments never use them.
    max_evalue : float
        Chains whose best alignment has a larger E-value (times `composition_factor` with
        ``composition_correction``) stay unthreaded.
    rng : numpy.random.Generator, optional
        For profile calibration; by default ``numpy.random.default_rng(0)``.
    progress, cancel
        Progress callback (stage ``"thread"``) and cancel token, checked once per chain.

    Returns
    -------
    list of ChainMatch
        One per chain, in the order of ``chains``, followed by the overhangs and stretches cut
        off (module docstring). Chains are independent: two chains may be given the same positions
        (`joining.join_matches` keeps overlapping ones apart as copies).
    """
    if not sequences:
        raise ValueError("thread_chains needs at least one sequence")
    aa_probs = np.asarray(aa_probs, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    rng = np.random.default_rng(0) if rng is None else rng
    shuffle_rng = np.random.default_rng(0)
    block, origins = _untaken_segments(sequences, taken)
    matches = []
    queue = [np.asarray(chain, dtype=np.int64) for chain in chains]
    while queue:
        check_cancel(cancel)
        report(progress, "thread", len(matches) / max(len(matches) + len(queue), 1),
               f"chain {len(matches) + 1}")
        chain = queue.pop(0)
        name = f"chain{len(matches)}"
        chain_ca = None if ca is None else ca[chain]
        hmm, best = _best_hit(aa_probs[chain], confidence[chain], name, block, len(sequences),
                              ca=chain_ca, rng=rng)
        if best is None:
            matches.append(ChainMatch.unthreaded(chain, aa_probs))
            continue
        index, start, segment_length = origins[int(best.name)]
        evalue = best.evalue
        if composition_correction and evalue <= max_evalue:
            segment = sequences[index].residues[start:start + segment_length]
            evalue *= composition_factor(hmm, segment, shuffle_rng)
        if evalue > max_evalue:
            matches.append(ChainMatch.unthreaded(chain, aa_probs, best.score, evalue))
            continue
        aligned, cuts = _hit_positions(best, len(chain), max_evalue, chain_ca)
        if chain_ca is not None and not deletions_in_reach(aligned, chain_ca):
            # its own generator: the chains after it keep their calibrations' random sequences
            _, redone = _best_hit(aa_probs[chain], confidence[chain], name, block,
                                  len(sequences), ca=chain_ca, deletes_within_reach=True,
                                  rng=np.random.default_rng(len(matches)))
            if redone is not None and redone.name == best.name:
                aligned, cuts = _hit_positions(redone, len(chain), max_evalue, chain_ca)
        pieces = np.split(np.arange(len(chain)), cuts)
        kept = next(piece for piece in pieces if np.any(aligned[piece] >= 0))
        positions = _extend_ends(aligned[kept], segment_length)
        match, overhangs = numbered_match(chain[kept], positions, aa_probs,
                                          sequences[index].aatype, index, start, best.score,
                                          evalue)
        matches.append(match)
        queue.extend(chain[piece] for piece in pieces if piece[0] != kept[0])
        queue.extend(overhangs)
    report(progress, "thread", 1.0)
    return matches


def _best_hit(aa_probs: np.ndarray, confidence: np.ndarray, name: str,
              block: easel.DigitalSequenceBlock, num_sequences: int, *, ca: np.ndarray | None,
              rng: np.random.Generator, deletes_within_reach: bool = False,
              ) -> tuple[plan7.HMM, plan7.Hit | None]:
    """A chain's calibrated profile (`profiles.profile_from_probs`) and its best hit in
    ``block`` (None without any)."""
    hmm = profile_from_probs(aa_probs, confidence, name, ca=ca,
                             deletes_within_reach=deletes_within_reach)
    calibrate(hmm, rng, filters=False)
    hits = search_all(hmm, block, num_sequences) if len(block) else []
    return hmm, max(hits, key=lambda hit: hit.score, default=None)


def deletions_in_reach(positions: np.ndarray, ca: np.ndarray) -> bool:
    """Whether every two aligned nodes with nodes left out between them and consecutive
    positions (a run of delete states) lie within `MAX_DELETE_SPAN` of each other.
    ``positions`` int ``[L]`` (-1 where unaligned), ``ca`` ``[L, 3]`` Å."""
    _, nodes_apart, numbers_apart, spans = _aligned_steps(positions, ca)
    deleted = (nodes_apart > 1) & (numbers_apart == 1)
    return bool(np.all(spans[deleted] <= MAX_DELETE_SPAN))


def numbered_match(
    chain: np.ndarray, positions: np.ndarray, aa_probs: np.ndarray, sequence_aatype: np.ndarray,
    sequence_index: int, start: int, score: float, evalue: float,
) -> tuple[ChainMatch, list[np.ndarray]]:
    """A threaded chain from the sequence position of each of its residues, and the overhangs
    cut off it (both threaders' last step).

    Parameters
    ----------
    chain : int ``[L]``
        Node indices, N -> C.
    positions : int ``[L]``
        0-based position of each residue in the sequence stretch that begins at ``start``; -1
        where unassigned (at least one assigned).
    aa_probs : ``[N, 20]``
        Residue-type probabilities of all nodes (the type of unassigned residues).
    sequence_aatype : int ``[S]``
        The matched sequence's residue types.
    sequence_index, start : int
        The matched sequence and the 0-based start of the stretch in it.
    score, evalue : float
        The alignment's.

    Returns
    -------
    match : ChainMatch
        The chain less its overhangs: runs of at least `MIN_OVERHANG` unassigned residues at
        either end (module docstring).
    overhangs : list of int arrays
        Those runs, to be threaded on their own.
    """
    aligned = np.flatnonzero(positions >= 0)
    head, tail = aligned[0], len(chain) - 1 - aligned[-1]
    overhangs = []
    if head >= MIN_OVERHANG:
        overhangs.append(chain[:head])
    if tail >= MIN_OVERHANG:
        overhangs.append(chain[len(chain) - tail:])
    keep = slice(head if head >= MIN_OVERHANG else 0,
                 len(chain) - tail if tail >= MIN_OVERHANG else len(chain))
    chain, positions = chain[keep], positions[keep]
    assigned = positions >= 0
    predicted = np.argmax(aa_probs[chain], axis=1)
    numbers = np.where(assigned, start + positions + 1, -1)
    aatype = np.where(assigned, sequence_aatype[np.maximum(start + positions, 0)], predicted)
    return ChainMatch(nodes=chain, sequence_index=sequence_index, residue_number=numbers,
                      aatype=aatype, score=score, evalue=evalue), overhangs


def composition_factor(hmm: plan7.HMM, segment: str, rng: np.random.Generator) -> float:
    """How much more easily ``segment``'s composition scores against ``hmm`` than the
    background's: the factor (at least 1) by which the calibrated E-value of a hit in
    ``segment`` is multiplied.

    The calibrated E-value (`profiles.calibrate`) measures a score against random sequences
    of background composition. A sequence of unusual composition (rich in R, P and G, say)
    meets a profile whose types lean that way (the graph network reads the sequence, so its
    types lean towards the sequence's composition) and scores high with no register right:
    the tests' unrelated sequence threaded a chain of simulated il2 maps on 9 of 30 noise
    seeds, at E 6e-5 to 1e-2 (5 of 30 with this correction; 1 of 30 with the graph network
    trained not to copy, `train.gnn --unrelated-fraction`). So `SHUFFLES` shuffles of the
    segment (its own length and composition, no order) and as many background sequences of
    its length are searched; with the profile's Forward lambda, each set's best scores give
    the location ``mu`` of a Gumbel (maximum likelihood for ``mu`` with lambda known), and the
    factor is ``exp(lambda (mu_shuffled - mu_background))``. (The shuffles alone, as the null,
    gave E-values 10-20 times the calibrated ones on il2's own sequence: the estimate's bias,
    which the difference cancels.) A protein's own sequence meets its types' composition too:
    the factor was 1.3-2.7 for the chains of T20S (4.8 Å) and il2, so a right chain at the cut
    can fall under it (T20S's one threaded chain did).
    """
    residues = np.array(list(segment))
    shuffles = easel.DigitalSequenceBlock(ALPHABET, [
        digital_sequence(str(k), "".join(rng.permutation(residues))) for k in range(SHUFFLES)])
    background = background_block(rng, SHUFFLES, len(segment))
    lam = float(hmm.evalue_parameters.as_vector()[_F_LAMBDA])

    def location(block: easel.DigitalSequenceBlock) -> float:
        # One hit per sequence with an alignment; those without any scored lower still, so
        # leaving them out raises mu, equally for both sets.
        scores = np.array([hit.score for hit in search_all(hmm, block, 1)])
        return -np.log(np.mean(np.exp(-lam * scores))) / lam if len(scores) else -math.inf

    shift = location(shuffles) - location(background)
    return float(np.exp(lam * shift)) if shift > 0 else 1.0


def search_all(hmm: plan7.HMM, block: easel.DigitalSequenceBlock, num_sequences: int) -> list:
    """Hits of ``hmm`` in ``block`` with every filter open; E-values for ``num_sequences``."""
    pipeline = plan7.Pipeline(
        ALPHABET, bias_filter=False, F1=1.0, F2=1.0, F3=1.0, Z=num_sequences, E=math.inf
    )
    return list(pipeline.search_hmm(hmm, block))
