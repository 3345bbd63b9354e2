"""Where the final model's unassigned chains might go: each one's best placements on the
sequences, for a user who assigns them by hand (findMySequence asks this of a whole model; here
it is asked of each chain threading could not place).

Threading leaves a chain unassigned when its best alignment is not strong enough to be right
by itself among all the chains searched (`copies.anchor_evalue`). Such a hit is still the best
lead a Coot or ISOLDE user has: on the twelve real maps of 1.75-4.8 Å (README, "Where the
unassigned chains might go") the best placements of E <= 0.3 were mostly right 11 times in 17,
while the same models searched against shuffled sequences gave a third as many that strong --
too many chance hits to thread them, few enough to offer them. So each unassigned chain of at least
`MIN_HINT_LENGTH` residues is searched again, as threading searches (its profile from the final
residue types and confidence, inserts opened at long Cα steps, calibrated; searched again with
deletes only where they can be when an alignment leaves out nodes between flanks farther apart
than `search.MAX_DELETE_SPAN`),
against the whole of every sequence, and its `TOP_PLACEMENTS` best alignments with an E-value up to
`MAX_HINT_EVALUE` are listed. An alignment searched again keeps the first search's E-value, as
threading's does (`_renumbered`). Each placement also says how many such hits chance would give
among the chains searched (``chance_hits``: E-value x chains), and how many of the positions
it names the model's threaded chains already hold in every copy (a placement there means
another copy, or nothing).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
from pyhmmer import easel

from ..errors import InputError
from ..models import BuiltModel
from ..progress import CancelToken, check_cancel
from ..sequences import Sequence
from .profiles import ALPHABET, calibrate, digital_sequence, profile_from_probs
from .search import alignment_positions, deletions_in_reach, search_all

__all__ = ["MAX_HINT_EVALUE", "MIN_HINT_LENGTH", "NAMED_EVALUE", "TOP_PLACEMENTS", "Placement",
           "chosen_placement", "named_placements", "unassigned_placements"]

#: Fewest residues of an unassigned chain that is searched, and fewest it must align to a
#: sequence for a placement (`pipeline.MIN_CHAIN_LENGTH`: an alignment of fewer means nothing).
#: Inserts are cheap after long Cα steps (`profiles.LONG_STEP`), and before this rule a
#: 22-residue chain of a 3.8 Å build was offered a "place" of one residue, the other 21 in
#: inserts, at E 0.3 or less (twenty-fourth stop).
MIN_HINT_LENGTH = 4
#: Most placements listed per chain.
TOP_PLACEMENTS = 3
#: Placements with a larger E-value are not listed (at E 1 one such hit per chain is chance).
MAX_HINT_EVALUE = 1.0
#: The CLI and the plugin name a chain's best placement only up to this E-value (the file lists
#: them to `MAX_HINT_EVALUE`): on the twelve real maps of 1.75-4.8 Å (`bench.real --seeds 0 1
#: 2`, twenty-third stop) best placements of E <= 0.3 on the deposited model were mostly right
#: 11 times in 17, those of 0.3-1 9 times in 56.
NAMED_EVALUE = 0.3
#: Random sequences of each calibration fit (`profiles.calibrate`; threading uses HMMER's 200).
#: On 8 builds of 4 real maps of 3.8-4.8 Å (scratch, twenty-third stop) the listed placements'
#: E-values were 0.5-2 times those of the full fit (median 1.0), and γ-secretase's 108
#: unassigned chains of 4 or more residues took 1.9 s instead of 3.6-4.5.
CALIBRATION_SAMPLES = 50


@dataclasses.dataclass(frozen=True)
class Placement:
    """One possible place of an unassigned chain in a sequence.

    Attributes
    ----------
    chain_id : str
        The unassigned chain of the final model.
    rank : int
        1 for the chain's best placement, then 2, 3 ...
    sequence : str
        Name of the sequence.
    first, last : int
        The sequence positions (1-based) the alignment spans.
    chain_first, chain_last : int
        The chain's residue numbers aligned to ``first`` and ``last``.
    score : float
        Bit score.
    evalue : float
        E-value of this alignment (of its domain) among the sequences.
    chance_hits : float
        Hits this strong expected by chance among all the chains searched.
    already_threaded : int
        Positions of ``first``-``last`` that the model's threaded chains hold in every copy
        of the sequence.
    aligned : tuple of (int, int)
        ``(chain residue number, sequence position)`` of each residue the alignment places, in
        chain order (residues in the alignment's inserts are left out); `cryobuild.assign`
        numbers the chain by it.
    """

    chain_id: str
    rank: int
    sequence: str
    first: int
    last: int
    chain_first: int
    chain_last: int
    score: float
    evalue: float
    chance_hits: float
    already_threaded: int
    aligned: tuple[tuple[int, int], ...] = ()


def _threaded_everywhere(model: BuiltModel, sequences: list[Sequence]) -> list[np.ndarray]:
    """bool ``[len(sequence)]`` per sequence: positions every threaded copy holds (none when
    no chain threads it)."""
    held = []
    for sequence in sequences:
        copies = [chain for chain, residues in model.entity_sequences.items()
                  if residues == sequence.residues]
        every = np.zeros(len(sequence), dtype=bool)
        for index, chain in enumerate(copies):
            numbers = model.residue_number[model.chain_id == chain]
            numbers = numbers[(numbers >= 1) & (numbers <= len(sequence))]
            present = np.zeros(len(sequence), dtype=bool)
            present[numbers - 1] = True
            every = present if index == 0 else every & present
        held.append(every)
    return held


def unassigned_placements(model: BuiltModel, aa_probs: np.ndarray, sequences: list[Sequence],
                          rng: np.random.Generator | None = None,
                          cancel: CancelToken | None = None) -> tuple[Placement, ...]:
    """The best placements (module docstring) of each unassigned chain of a final ``model``.

    Parameters
    ----------
    model : BuiltModel
        A final model: its unassigned chains are those without an entity sequence.
    aa_probs : ``[R, 20]``
        Residue-type probabilities of the model's residues.
    sequences : list of Sequence
        The build's sequences.
    rng : numpy.random.Generator, optional
        For the profiles' calibration; by default ``numpy.random.default_rng(0)``.
    cancel : CancelToken, optional
        Checked once per chain.

    Returns
    -------
    tuple of Placement
        By chain, in the model's chain order, then by rank.
    """
    if not sequences or not model.num_residues:
        return ()
    rng = np.random.default_rng(0) if rng is None else rng
    chains = [chain for chain in model.chains() if chain not in model.entity_sequences
              and int(np.sum(model.chain_id == chain)) >= MIN_HINT_LENGTH]
    if not chains:
        return ()
    block = easel.DigitalSequenceBlock(ALPHABET, [
        digital_sequence(str(index), sequence.residues) for index, sequence in enumerate(sequences)])
    held = _threaded_everywhere(model, sequences)
    placements = []
    for order, chain in enumerate(chains):
        check_cancel(cancel)
        rows = np.flatnonzero(model.chain_id == chain)
        chain_inputs = (aa_probs[rows], model.confidence[rows], model.ca[rows], f"chain {chain}",
                        block, len(sequences))
        found = _alignments(*chain_inputs, rng)
        if not all(item.within for item in found):
            # its own generator: the chains after it keep their calibrations' random sequences
            gated = _alignments(*chain_inputs, np.random.default_rng(order),
                                deletes_within_reach=True)
            found = _renumbered(found, gated)
        numbers = model.residue_number[rows]
        found = [(evalue, score, index,
                  tuple(zip(numbers[placed].tolist(), (positions[placed] + 1).tolist())))
                 for evalue, score, index, positions, placed, _ in found]
        found.sort(key=lambda item: (item[0], -item[1]))
        for rank, (evalue, score, index, aligned) in enumerate(found[:TOP_PLACEMENTS], start=1):
            (chain_first, first), (chain_last, last) = aligned[0], aligned[-1]
            placements.append(Placement(
                chain_id=chain, rank=rank, sequence=sequences[index].name, first=first,
                last=last, chain_first=chain_first, chain_last=chain_last, score=score,
                evalue=evalue, chance_hits=evalue * len(chains),
                already_threaded=int(held[index][first - 1:last].sum()), aligned=aligned))
    return tuple(placements)


class _Alignment(NamedTuple):
    """One domain alignment of a chain that could be a placement (`_alignments`)."""

    evalue: float
    score: float
    index: int  # of the sequence
    positions: np.ndarray  # int [L]: 0-based sequence position of each residue, -1 unaligned
    placed: np.ndarray  # int: the aligned residues' indices
    within: bool  # the nodes it leaves out leave their flanks in reach (search.deletions_in_reach)


def _alignments(aa_probs: np.ndarray, confidence: np.ndarray, ca: np.ndarray, name: str,
                block: easel.DigitalSequenceBlock, num_sequences: int, rng: np.random.Generator,
                *, deletes_within_reach: bool = False) -> list[_Alignment]:
    """A chain's alignments to the sequences that could be placements: each domain of E-value
    up to `MAX_HINT_EVALUE` aligning at least `MIN_HINT_LENGTH` residues. ``aa_probs`` ``[L,
    20]``, ``confidence`` ``[L]``, ``ca`` ``[L, 3]`` Å; the profile as threading's search makes it
    (`search.thread_chains`)."""
    hmm = profile_from_probs(aa_probs, confidence, name, ca=ca,
                             deletes_within_reach=deletes_within_reach)
    calibrate(hmm, rng, samples=CALIBRATION_SAMPLES, filters=False)
    found = []
    for hit in search_all(hmm, block, num_sequences):
        for domain in hit.domains:
            evalue = float(domain.i_evalue)
            if evalue > MAX_HINT_EVALUE:
                continue
            positions = alignment_positions(domain.alignment, len(aa_probs))
            placed = np.flatnonzero(positions >= 0)
            if len(placed) < MIN_HINT_LENGTH:  # the rest in inserts: no place at all
                continue
            found.append(_Alignment(evalue, float(domain.score), int(hit.name), positions,
                                    placed, deletions_in_reach(positions, ca)))
    return found


def _renumbered(found: list[_Alignment], gated: list[_Alignment]) -> list[_Alignment]:
    """``found`` (`_alignments`), each alignment that numbers nodes out of reach as
    consecutive residues numbered instead by the alignment of ``gated`` (the same chain's,
    deletes only where they can be) on the same sequence that shares the most of its residues'
    positions, keeping its own E-value and score, as threading keeps the first search's
    (`search.thread_chains`); with none sharing any, it is left out. A gated alignment taken
    twice is listed once, with the better E-value."""
    kept: dict[tuple, _Alignment] = {}
    for item in sorted(found, key=lambda item: item.evalue):
        if not item.within:
            shared = [(int(np.sum((other.positions == item.positions) & (item.positions >= 0))),
                       other) for other in gated if other.index == item.index and other.within]
            count, best = max(shared, key=lambda pair: pair[0], default=(0, None))
            if count == 0:
                continue
            item = item._replace(positions=best.positions, placed=best.placed, within=True)
        kept.setdefault((item.index, item.positions.tobytes()), item)
    return list(kept.values())


def named_placements(placements: tuple[Placement, ...]) -> list[Placement]:
    """The placements to name to the user: each chain's best one (rank 1) of E-value up to
    `NAMED_EVALUE`, best first."""
    return sorted((p for p in placements if p.rank == 1 and p.evalue <= NAMED_EVALUE),
                  key=lambda p: p.evalue)


def chosen_placement(placements: tuple[Placement, ...], chain: str, rank: int, offered_by: str
                     ) -> Placement:
    """The placement of ``chain`` of ``rank`` among ``placements``; `InputError` when there is
    none, naming what offered them (``offered_by``, e.g. "the last build of cryobuild_model")."""
    offered = [p for p in placements if p.chain_id == chain]
    if not offered:
        raise InputError(f"{offered_by} offered no placement for chain {chain!r} "
                         "(unassigned_placements.csv lists those it offered)")
    for placement in offered:
        if placement.rank == rank:
            return placement
    raise InputError(f"chain {chain} has placements of rank 1-{len(offered)} only")
