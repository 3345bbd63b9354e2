"""Tests of cryobuild.thread.confirm: a sequence keeps its weak threads only where readings of
the residue types that never saw it find one of them at the same register."""

from __future__ import annotations

import numpy as np

from cryobuild.residues import AA_ORDER
from cryobuild.sequences import Sequence
from cryobuild.thread import ChainMatch
from cryobuild.thread.confirm import confirmed

from gnn_synth import noisy_probs

#: Sequence length and the stretch the chain covers (0-based, end exclusive).
LENGTH, FIRST, LAST = 150, 40, 80


def _case(seed: int = 0):
    """A random sequence, a 40-residue chain threaded to positions 41-80 of it (nodes 0-39),
    and readings of those nodes at 60 % accuracy (the true types) and at none (a random
    sequence's types)."""
    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, size=LENGTH)
    sequence = Sequence("s", "".join(AA_ORDER[a] for a in aatype))
    nodes = np.arange(LAST - FIRST)
    match = ChainMatch(nodes=nodes, sequence_index=0, residue_number=np.arange(FIRST, LAST) + 1,
                       aatype=aatype[FIRST:LAST], score=30.0, evalue=1e-4)
    confidence = np.full(len(nodes), 80.0)
    true = (noisy_probs(aatype[FIRST:LAST], 0.6, rng), confidence)
    unrelated = (noisy_probs(rng.integers(0, 20, size=len(nodes)), 0.6, rng), confidence)
    return sequence, match, true, unrelated


def test_a_chain_its_readings_find_stays_threaded():
    sequence, match, true, _ = _case()
    kept, dropped = confirmed([match], [true, true], true[0], [sequence], max_evalue=0.03,
                              rng=np.random.default_rng(0))
    assert dropped == 0 and kept[0] is match


def test_a_chain_one_reading_does_not_find_is_unthreaded():
    """One reading of types that are not this stretch's (the chance thread of an unrelated
    sequence, read blind to it) unthreads the chain; with no readings nothing is checked."""
    sequence, match, true, unrelated = _case()
    kept, dropped = confirmed([match], [true, unrelated], true[0], [sequence], max_evalue=0.03,
                              rng=np.random.default_rng(0))
    assert dropped == 1
    assert not kept[0].threaded and np.array_equal(kept[0].nodes, match.nodes)
    assert kept[0].evalue == match.evalue
    assert confirmed([match], [], true[0], [sequence], max_evalue=0.03,
                     rng=np.random.default_rng(0))[1] == 0


def test_a_reading_at_another_register_does_not_confirm():
    """The readings find the chain, but 5 positions on: the threading's register is not
    confirmed."""
    sequence, match, true, _ = _case()
    shifted = ChainMatch(nodes=match.nodes, sequence_index=0,
                         residue_number=match.residue_number + 5, aatype=match.aatype,
                         score=match.score, evalue=match.evalue)
    kept, dropped = confirmed([shifted], [true], true[0], [sequence], max_evalue=0.03,
                              rng=np.random.default_rng(0))
    assert dropped == 1 and not kept[0].threaded


def test_a_strong_or_confirmed_chain_supports_the_other_chains_of_its_sequence():
    """A chain the readings do not find (nodes 100-139, their types a random sequence's) stays
    threaded beside a chain of its sequence threaded at `UNQUESTIONED_EVALUE` or better, or
    beside one the readings confirm (nodes 0-39)."""
    from cryobuild.thread.confirm import UNQUESTIONED_EVALUE, unsupported

    sequence, match, true, unrelated = _case()
    # [140, 20]: the true reading at nodes 0-39, flat types at 40-99, the random ones at 100-139
    # (whose best alignment, E 0.018 by chance, numbers them 101-140, not 61-100)
    probs = np.concatenate([true[0], np.full((60, 20), 0.05), unrelated[0]])
    readings = [(probs, np.full(len(probs), 80.0))]
    weak = ChainMatch(nodes=match.nodes + 100, sequence_index=0,
                      residue_number=match.residue_number + 20, aatype=match.aatype, score=10.0,
                      evalue=0.01)
    strong = ChainMatch(nodes=match.nodes, sequence_index=0, residue_number=match.residue_number,
                        aatype=match.aatype, score=90.0, evalue=UNQUESTIONED_EVALUE / 10)
    assert unsupported([strong, weak]) == [] and unsupported([match, weak]) == [0]
    kept, dropped = confirmed([match, weak], readings, probs, [sequence], max_evalue=0.03,
                              rng=np.random.default_rng(0))
    assert dropped == 0 and kept == [match, weak]
    alone, dropped = confirmed([weak], readings, probs, [sequence], max_evalue=0.03,
                               rng=np.random.default_rng(0))
    assert dropped == 1 and not alone[0].threaded


def test_unthreaded_chains_pass_through():
    sequence, match, true, unrelated = _case()
    loose = ChainMatch.unthreaded(match.nodes, true[0])
    kept, dropped = confirmed([loose], [unrelated], true[0], [sequence], max_evalue=0.03,
                              rng=np.random.default_rng(0))
    assert dropped == 0 and kept[0] is loose
