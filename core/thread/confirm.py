"""The last stage of a build's threading: what a sequence threads must also be found by residue
types that never saw that sequence.

Why: a round's residue types are not independent of the sequences. The graph network reads the
input sequences (sequence attention), and from the second round on it also reads the types the
previous round's threading gave each residue (the round's model is the next round's start and
its types the prior). Given a sequence that is not in the map, it copies residue types from it,
and a chain threaded to that sequence in one round is read as that sequence in the next: on
simulated il2 maps at 3 Å, a sequence unrelated to il2 threaded a chain on 2 of 30 noise seeds
(`bench.decoys --il2-seeds 30`) at E-values of 4e-4 to 4e-3, which the same chain's types could
not have earned by its density alone. The E-value of such a chain counts the types as evidence
twice.

So after the last round the graph network runs twice more over the round's nodes
(``cryobuild.pipeline``), each time with no type prior: once with a composition stand-in for
the sequences (`pipeline.composition_stand_in`: blind to them), once with the sequences
themselves (blind to the round's threading). A threaded chain's profile from each of these
*readings* is searched against the sequence it was threaded to (`search.thread_chains`); the
readings confirm the chain when, in every reading, the best alignment reaches ``max_evalue``
(the per-chain cut) and numbers at least `MIN_AGREED` residues within `REGISTER_SLACK`
positions of the threading's numbers. A count, not a share: a joined chain holds parts from
far apart in the sequence, and one alignment of the whole chain finds one of them (on Nav β1,
4.0 Å, the reading's alignment of a 64-residue chain numbered its first 25 residues within
one position of the threading and the rest 54-64 positions off, where the threading had joined
a second part across a gap); two alignments of one part place their gaps differently. A
sequence keeps its threaded chains when the readings confirm one of them (it is then their
anchor, as in `copies` and `placement`, which place weaker chains beside anchors); otherwise
they are all kept, unthreaded, as unassigned chains.

Measured (2026-12-05, scratch prototype; figures of the finished rule in docs/results_log.md):
the three chance chains of the two il2 seeds re-read at E 0.44 and 0.007, 0.18 and none, 0.014
and 0.07 (with the sequence / blind to it); the true chains of 7 real maps of 1.75-4.0 Å at most
6e-4 (Nav β1, 4.0 Å), the others at most 4e-5.

A sequence with a chain threaded at an E-value of `UNQUESTIONED_EVALUE` or less is not
checked: copying has never given a chain an E-value below 6e-5 (the chance threads of 9 in 30
il2 seeds before the seventh stop of 2026-12-04, docs/results_log.md), and the two readings cost two
graph-network passes, which a build whose sequences all have a chain that strong (the real maps
of 3.2 Å and better) is spared.
"""

from __future__ import annotations

import math

import numpy as np

from ..sequences import Sequence
from .matches import ChainMatch
from .search import thread_chains

__all__ = ["MIN_AGREED", "REGISTER_SLACK", "UNQUESTIONED_EVALUE", "Reading", "confirmed",
           "unsupported"]

#: Residues a reading's best alignment must number as the threading did (within
#: `REGISTER_SLACK`): a reading that finds the chain at another register does not confirm this
#: one (two helical turns; a chain threaded alone this short never reaches significance).
MIN_AGREED = 8
#: Sequence positions by which a reading's number of a residue may differ from the threading's
#: and still agree (gaps placed differently; a helix's next register is 3-4 positions on).
REGISTER_SLACK = 2

#: A sequence with a chain threaded at this E-value or less is not checked (module docstring).
UNQUESTIONED_EVALUE = 1e-10

#: A reading: residue-type probabilities ``[N, 20]`` and confidence ``[N]`` (0-100) of the nodes
#: the matches index.
Reading = tuple[np.ndarray, np.ndarray]


def unsupported(matches: list[ChainMatch]) -> list[int]:
    """Indices of the sequences whose threaded chains in ``matches`` are all weaker than
    `UNQUESTIONED_EVALUE`: the readings must confirm one of them."""
    strongest: dict[int, float] = {}
    for match in matches:
        if match.threaded:
            strongest[match.sequence_index] = min(strongest.get(match.sequence_index, np.inf),
                                                  match.evalue)
    return sorted(index for index, evalue in strongest.items() if evalue > UNQUESTIONED_EVALUE)


def _confirms(match: ChainMatch, reading: Reading, ca: np.ndarray | None, sequence: Sequence,
              max_evalue: float, rng: np.random.Generator) -> bool:
    """Does ``reading``'s profile of ``match``'s nodes (Cα ``ca`` ``[N, 3]``, Å, if given) align
    to ``sequence`` at ``max_evalue`` or better, numbering `MIN_AGREED` residues as ``match``
    does?"""
    aa_probs, confidence = reading
    found = thread_chains([match.nodes], aa_probs, confidence, [sequence], ca=ca,
                          max_evalue=math.inf, rng=rng)[0]
    if not found.threaded or found.evalue > max_evalue:
        return False
    threaded_number = dict(zip(match.nodes[match.assigned].tolist(),
                               match.residue_number[match.assigned].tolist()))
    shared = [(threaded_number[node], number)
              for node, number in zip(found.nodes[found.assigned].tolist(),
                                      found.residue_number[found.assigned].tolist())
              if node in threaded_number]
    return sum(abs(a - b) <= REGISTER_SLACK for a, b in shared) >= MIN_AGREED


def confirmed(matches: list[ChainMatch], readings: list[Reading], aa_probs: np.ndarray,
              sequences: list[Sequence], *, max_evalue: float, rng: np.random.Generator,
              ca: np.ndarray | None = None) -> tuple[list[ChainMatch], int]:
    """``matches`` (in the same order) with the chains of each `unsupported` sequence
    unthreaded unless every reading confirms one of them (module docstring; tried strongest
    first), and how many chains were unthreaded. An unthreaded chain takes its types from the
    round's ``aa_probs`` ``[N, 20]`` and keeps its alignment's score and E-value. ``ca`` ``[N,
    3]``: the nodes' Cα, Å, whose steps open the profiles' inserts as in the round's threading
    (`thread.profiles.step_insert_opens`)."""
    kept, dropped = list(matches), 0
    for index in unsupported(matches):
        threaded = sorted((i for i, m in enumerate(matches) if m.sequence_index == index),
                          key=lambda i: matches[i].evalue)
        if any(all(_confirms(matches[i], reading, ca, sequences[index], max_evalue, rng)
                   for reading in readings) for i in threaded):
            continue
        for i in threaded:
            kept[i] = ChainMatch.unthreaded(matches[i].nodes, aa_probs, matches[i].score,
                                            matches[i].evalue)
        dropped += len(threaded)
    return kept, dropped
