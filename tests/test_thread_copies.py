"""The whole-model rules of threading (`cryobuild.thread.copies`), each on chains built by hand
so that the rule alone decides; each test also shows what happens without the rule."""

from __future__ import annotations

import numpy as np
import pytest

from cryobuild.sequences import Sequence
from cryobuild.thread import ChainMatch
from cryobuild.thread.copies import (
    MODEL_FALSE_THREADS, _in_sequence_order, anchor_evalue, assign_copies, keep_supported,
)

SEQUENCE = Sequence("s", "ACDEFGHIKLMNPQRSTVWY" * 4)  # 80 residues
#: Å between consecutive Cα of the hand-built chains.
STEP = 3.8


def _nodes(ca: list, points: np.ndarray) -> np.ndarray:
    """Append ``points`` ``[K, 3]`` to the node list ``ca``; their node indices."""
    start = sum(len(block) for block in ca)
    ca.append(np.asarray(points, dtype=float))
    return np.arange(start, start + len(points))


def _line(first: int, count: int, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Cα of residues ``first..first+count-1`` along x, where the sequence puts them."""
    x = (np.arange(first, first + count) - 1) * STEP
    return np.stack([x, np.zeros(count), np.zeros(count)], axis=1) + np.asarray(origin)


def _match(nodes, first: int, evalue: float, sequence_index: int = 0) -> ChainMatch:
    count = len(nodes)
    numbers = np.arange(first, first + count)
    types = SEQUENCE.aatype[numbers - 1]
    return ChainMatch(nodes, sequence_index, numbers, types, score=10.0, evalue=evalue)


def _probs(count: int, matches_for: dict | None = None) -> np.ndarray:
    """Uniform residue-type probabilities, one-hot on the sequence's type for the nodes of
    ``matches_for`` (node -> sequence position)."""
    probs = np.full((count, 20), 0.05)
    for node, position in (matches_for or {}).items():
        probs[node] = 0.0
        probs[node, SEQUENCE.aatype[position - 1]] = 1.0
    return probs


def _positions(match: ChainMatch) -> np.ndarray:
    return match.residue_number[match.assigned]


def test_the_anchor_cut_counts_the_chains_searched():
    assert anchor_evalue(10, 0.03) == pytest.approx(MODEL_FALSE_THREADS / 10)
    assert anchor_evalue(1, 0.03) == min(0.03, MODEL_FALSE_THREADS)


def test_a_weak_chain_threads_only_next_to_an_anchor_that_reaches_it():
    ca = []
    anchor = _match(_nodes(ca, _line(1, 30)), 1, 1e-10)
    near = _match(_nodes(ca, _line(36, 10)), 36, 1e-2)  # 6 positions on, where they belong
    far = _match(_nodes(ca, _line(36, 10, origin=(0, 80, 0))), 36, 1e-2)  # 80 Å off
    ca = np.concatenate(ca)
    probs = _probs(len(ca))
    kept = keep_supported([anchor, near, far], ca, probs, anchor_cut=1e-3, searched=20)
    assert [m.threaded for m in kept] == [True, True, False]
    assert kept[2].evalue == far.evalue  # the rejected alignment is still reported
    # alone, with no anchor (an unrelated sequence), nothing weak threads
    alone = keep_supported([near], ca, probs, anchor_cut=1e-3, searched=20)
    assert not alone[0].threaded
    # the rule off (every chain an anchor): both weak chains stay threaded
    kept = keep_supported([anchor, near, far], ca, probs, anchor_cut=1.0, searched=20)
    assert all(m.threaded for m in kept)


def test_two_weak_chains_that_support_each_other_are_anchors_together():
    """Two right chains side by side, at E 0.001 and 0.008 among 22 chains searched: neither
    alone passes the anchor cut (`MODEL_FALSE_THREADS` / 22), the pair does."""
    ca = []
    first = _match(_nodes(ca, _line(10, 24)), 10, 1e-3)
    second = _match(_nodes(ca, _line(40, 9)), 40, 8e-3)  # 6 positions on, within reach
    apart = _match(_nodes(ca, _line(40, 9, origin=(0, 90, 0))), 40, 8e-3)  # out of reach
    ca = np.concatenate(ca)
    probs = _probs(len(ca))
    cut = anchor_evalue(22, 0.03)
    assert first.evalue > cut and second.evalue > cut
    kept = keep_supported([first, second], ca, probs, anchor_cut=cut, searched=22)
    assert all(m.threaded for m in kept)
    kept = keep_supported([first, apart], ca, probs, anchor_cut=cut, searched=22)
    assert not any(m.threaded for m in kept)
    # among many more chains searched, the same pair could be chance
    kept = keep_supported([first, second], ca, probs, anchor_cut=anchor_evalue(200, 0.03),
                          searched=200)
    assert not any(m.threaded for m in kept)


def test_no_position_is_placed_twice_within_a_copy():
    """The il2 reproduction of issue 17 by hand: a second chain numbered 39-60 next to a chain
    holding 1-42, its first residues far from where the sequence puts them."""
    ca = []
    first = _match(_nodes(ca, _line(1, 42)), 1, 1e-20)
    points = _line(39, 22)
    points[:7] += (0.0, 15.0, 0.0)  # residues 39-45 of the second chain are misplaced
    second = _match(_nodes(ca, points), 39, 1e-6)
    ca = np.concatenate(ca)
    probs = _probs(len(ca))
    copies = assign_copies([first, second], ca, probs, np.full(len(ca), 80.0), [SEQUENCE])
    threaded = [m for m in copies if m.threaded]
    assert len(threaded) == 1  # one copy, one chain
    positions = _positions(threaded[0])
    assert len(positions) == len(set(positions.tolist()))
    assert set(range(1, 43)) <= set(positions.tolist()) and 46 in positions and 60 in positions
    # the misplaced residues are left unthreaded, not dropped
    assert sum(len(m.nodes) for m in copies) == len(ca)
    # without the rule, positions 39-42 are claimed twice
    both = np.concatenate([_positions(first), _positions(second)])
    assert len(both) > len(set(both.tolist()))


def test_chains_placed_last_fit_around_the_others_whatever_their_e_value():
    """A chain of ``placed_last`` (a piece another start adds, `thread.merging`) is fitted into
    the copy after the other chains, even when its E-value is stronger: it is the one cut where
    the two claim the same positions. Without it, the stronger chain goes first and cuts the
    other."""
    ca = []
    base = _match(_nodes(ca, _line(1, 40)), 1, 1e-6)
    piece = _match(_nodes(ca, _line(31, 30, origin=(0, 1, 0))), 31, 1e-12)  # 31-60, beside it
    ca = np.concatenate(ca)
    probs = _probs(len(ca))

    def owners(**kwargs) -> dict:
        copies = assign_copies([base, piece], ca, probs, np.full(len(ca), 80.0), [SEQUENCE], **kwargs)
        chain, = [m for m in copies if m.threaded]
        return {int(n): int(node) for n, node in zip(chain.residue_number, chain.nodes)}

    last = owners(placed_last=[piece])
    assert all(last[position] in base.nodes for position in range(1, 41))
    assert all(last[position] in piece.nodes for position in range(41, 61))
    first = owners()
    assert all(first[position] in piece.nodes for position in range(31, 61))


def test_a_contested_end_goes_to_the_chain_whose_residues_fit_it():
    """The stronger chain (by E-value) claims 50-57 at its start with residues that do not fit
    those positions; a weaker chain whose residues do fit them keeps them."""
    ca = []
    strong = _match(_nodes(ca, _line(50, 31)), 50, 1e-15)
    weak = _match(_nodes(ca, _line(30, 28, origin=(0, 1, 0))), 30, 1e-8)  # 30-57, beside it
    ca = np.concatenate(ca)
    fits = {int(node): int(number) for node, number in zip(weak.nodes, weak.residue_number)}
    fits.update({int(node): int(number) for node, number in zip(strong.nodes, strong.residue_number)
                 if number >= 58})
    probs = _probs(len(ca), fits)
    copies = assign_copies([strong, weak], ca, probs, np.full(len(ca), 90.0), [SEQUENCE])
    threaded = [m for m in copies if m.threaded]
    assert len(threaded) == 1
    chain = threaded[0]
    owner = {int(n): int(node) for n, node in zip(chain.residue_number, chain.nodes)}
    assert all(owner[position] in weak.nodes for position in range(50, 58))
    assert all(owner[position] in strong.nodes for position in range(58, 81))


def test_copies_of_a_homo_oligomer_and_a_weak_duplicate():
    """Two full copies far apart are two chains; a weak chain holding positions both hold, far
    from both, is no third copy (no anchor supports it)."""
    ca = []
    copy_1 = _match(_nodes(ca, _line(1, 60)), 1, 1e-30)
    copy_2 = _match(_nodes(ca, _line(1, 60, origin=(0, 50, 0))), 1, 1e-25)
    duplicate = _match(_nodes(ca, _line(10, 20, origin=(0, -50, 0))), 10, 1e-2)
    ca = np.concatenate(ca)
    probs = _probs(len(ca))
    supported = keep_supported([copy_1, copy_2, duplicate], ca, probs, anchor_cut=1e-3,
                               searched=20)
    copies = assign_copies(supported, ca, probs, np.full(len(ca), 80.0), [SEQUENCE])
    threaded = [m for m in copies if m.threaded]
    assert len(threaded) == 2 and all(len(_positions(m)) == 60 for m in threaded)
    assert not any(m.threaded and m.nodes[0] == duplicate.nodes[0] for m in copies)


def test_a_chain_lying_along_a_copy_starts_no_copy_of_its_own(monkeypatch):
    """A chain threaded to positions 10-20, which a copy holds, lying 4.5 Å beside that copy's
    residues 10-20 (as a second reading of its density would), fits no copy and starts none: it
    stays unthreaded. The same chain 40 Å away is a second copy. Without the rule it starts a
    second copy beside the first, and the regrouping then moves most of the first copy's chain
    to it (positions 21-60 beside 10-20), cutting positions 1-20 of the strong chain off."""
    from cryobuild.thread import copies as module

    def grouped(origin):
        ca = []
        copy = _match(_nodes(ca, _line(1, 60)), 1, 1e-30)
        beside = _match(_nodes(ca, _line(10, 11, origin=origin)), 10, 1e-3)
        ca = np.concatenate(ca)
        return beside, assign_copies([copy, beside], ca, _probs(len(ca)),
                                     np.full(len(ca), 80.0), [SEQUENCE])

    beside, result = grouped((0, 4.5, 0))
    assert [len(_positions(m)) for m in result if m.threaded] == [60]
    assert any(not m.threaded and np.array_equal(m.nodes, beside.nodes) for m in result)
    _, result = grouped((0, 40, 0))
    assert sorted(len(_positions(m)) for m in result if m.threaded) == [11, 60]
    monkeypatch.setattr(module, "_lies_along", lambda *args: False)
    _, result = grouped((0, 4.5, 0))
    assert [len(_positions(m)) for m in result if m.threaded] == [49]


def _copy_holding(chains: list[tuple[np.ndarray, int, float]], tracked: int) -> tuple:
    """`assign_copies` on hand-built chains (Cα ``[L, 3]``, first residue number, E-value, in
    the order given): the matches made, and the threaded chain it returns that holds all the
    nodes of match ``tracked``."""
    ca = []
    matches = [_match(_nodes(ca, points), first, evalue) for points, first, evalue in chains]
    ca = np.concatenate(ca)
    grouped = assign_copies(matches, ca, _probs(len(ca)), np.full(len(ca), 80.0), [SEQUENCE])
    [holding] = [m for m in grouped
                 if m.threaded and np.isin(matches[tracked].nodes, m.nodes).all()]
    return matches, holding


def test_a_piece_taken_before_its_copy_exists_moves_to_the_copy_it_touches(monkeypatch):
    """Copy 2 (residues 1-30, 20 Å from the rest) is placed first; a piece of copy 1 (40-55)
    comes next and can reach copy 2's gap after residue 30 (22 Å across 10 positions), so it
    joins copy 2; copy 1's chain (1-35, running back along the piece 6 Å from it) comes last
    and starts a copy of its own. The piece touches copy 1, not copy 2, and moves to it.
    Without the regrouping and the exchange (`copies._exchanged`, which moves it too) it stays
    in copy 2."""
    from cryobuild.thread import copies as module

    def along(count: int, start, direction) -> np.ndarray:
        return np.asarray(start) + np.outer(np.arange(count), direction) * STEP

    chains = [(along(30, (-10 - 29 * STEP, -20, 0), (1, 0, 0)), 1, 1e-12),   # copy 2
              (along(16, (0, 0, 0), (1, 0, 0)), 40, 1e-10),                  # the piece
              (along(35, (-15 + 34 * STEP, 6, 0), (-1, 0, 0)), 1, 1e-8)]     # copy 1
    (copy_2, _, copy_1), holding = _copy_holding(chains, tracked=1)
    assert np.isin(copy_1.nodes, holding.nodes).all()
    assert not np.isin(copy_2.nodes, holding.nodes).any()

    monkeypatch.setattr(module, "_regroup", lambda copies, ca, aa_probs: (copies, []))
    monkeypatch.setattr(module, "_exchanged", lambda copies, ca: copies)
    (copy_2, _, _), holding = _copy_holding(chains, tracked=1)
    assert np.isin(copy_2.nodes, holding.nodes).all()


def test_a_chain_that_fits_two_copies_joins_the_one_it_reaches_more_easily(monkeypatch):
    """Residues 30-39 fit the gap after residue 20 of both copies, at no cost in bits; copy B's
    residue 20 is 13 Å from the chain's first residue, copy A's 31 Å (both within the 39 Å
    ten positions can span), and neither copy touches the chain. It joins copy B. Without the
    stretch rule (every junction equal) it first joins copy A, and the regrouping moves it to
    B, the copy it lies nearer (`copies._closeness`); without both rules and the exchange
    (`copies._exchanged`) it stays in A."""
    from cryobuild.thread import copies as module

    chains = [(_line(1, 20), 1, 1e-12),                        # copy A
              (_line(1, 20, origin=(0, 40, 0)), 1, 1e-11),     # copy B
              (_line(1, 10, origin=(80, 30, 0)), 30, 1e-6)]    # the chain
    (_, copy_b, _), holding = _copy_holding(chains, tracked=2)
    assert np.isin(copy_b.nodes, holding.nodes).all()
    monkeypatch.setattr(module, "_stretch", lambda *args: 0.0)
    (_, copy_b, _), holding = _copy_holding(chains, tracked=2)
    assert np.isin(copy_b.nodes, holding.nodes).all()
    closeness = module._closeness
    monkeypatch.setattr(module, "_exchanged", lambda copies, ca: copies)
    monkeypatch.setattr(module, "_closeness",
                        lambda piece, pieces, ca: (closeness(piece, pieces, ca)[0], 0.0))
    (copy_a, _, _), holding = _copy_holding(chains, tracked=2)
    assert np.isin(copy_a.nodes, holding.nodes).all()


def _il2_pieces(ca: list, shift) -> tuple[ChainMatch, ChainMatch]:
    """Two pieces, residues 1-50 and 61-126 (their Cα as in il2, moved by ``shift`` Å), of one
    copy of a 126-residue sequence: a real fold, so that residues few positions apart lie as
    near as in folded chains."""
    from cryobuild.demo_data import demo_structure_path
    from cryobuild.models import read_model

    il2 = read_model(demo_structure_path()).atom_positions[:, 1].astype(float) + np.asarray(shift)
    first, second = _nodes(ca, il2[:50]), _nodes(ca, il2[60:])
    return (ChainMatch(first, 0, np.arange(1, 51), np.zeros(50, dtype=np.int64), 10.0, 1e-10),
            ChainMatch(second, 0, np.arange(61, 127), np.zeros(66, dtype=np.int64), 10.0, 1e-10))


def test_pieces_mixed_between_two_copies_are_exchanged_back():
    """Two copies of il2 side by side (30 Å apart), each threaded as two pieces with residues
    51-60 untraced between them, so that either pairing of halves is within reach. Grouped
    with the halves crossed, the exchange (`copies._exchanged`) gives each copy its own halves
    back: the distances of residues a few positions apart say which halves are one chain. Put
    together right, nothing moves."""
    from cryobuild.thread.copies import _exchanged

    ca = []
    first_a, first_b = _il2_pieces(ca, (0, 0, 0))
    second_a, second_b = _il2_pieces(ca, (30, 0, 0))
    ca = np.concatenate(ca)
    regrouped = _exchanged([[first_a, second_b], [second_a, first_b]], ca)
    assert sorted(sorted(id(p) for p in group) for group in regrouped) == sorted(
        [sorted([id(first_a), id(first_b)]), sorted([id(second_a), id(second_b)])])
    kept = _exchanged([[first_a, first_b], [second_a, second_b]], ca)
    assert [[id(p) for p in group] for group in kept] == [[id(first_a), id(first_b)],
                                                          [id(second_a), id(second_b)]]


def test_no_exchange_leaves_a_copys_pieces_meeting_out_of_reach(monkeypatch):
    """Two copies of il2 80 Å apart, each threaded as two pieces (residues 1-50, 61-126), put
    together right, and log-odds (`copies._together`) made to favour the crossed pairing: the
    exchange would join residue 50 of one copy to residue 61 of the other, farther apart than
    ten residues reach, so it is not made (`copies._junctions_reachable`); without that rule
    it is."""
    from cryobuild.thread import copies as module

    ca = []
    first_a, first_b = _il2_pieces(ca, (0, 0, 0))
    second_a, second_b = _il2_pieces(ca, (80, 0, 0))
    ca = np.concatenate(ca)
    copy_of = {id(first_a): 0, id(first_b): 0, id(second_a): 1, id(second_b): 1}
    monkeypatch.setattr(module, "_together",
                        lambda p, q, ca: -10.0 if copy_of[id(p)] == copy_of[id(q)] else 10.0)
    right = [[first_a, first_b], [second_a, second_b]]

    def grouping(copies):
        return sorted(sorted(copy_of[id(p)] * 2 + (p is first_b or p is second_b) for p in group)
                      for group in copies)

    assert grouping(module._exchanged(right, ca)) == [[0, 1], [2, 3]]
    monkeypatch.setattr(module, "_junctions_reachable", lambda group, numbered: True)
    assert grouping(module._exchanged(right, ca)) == [[0, 3], [1, 2]]


def test_residues_few_positions_apart_are_likely_near():
    """The bundled statistics (`train.ca_separation` over the top240 chains): neighbours in
    the sequence sit 3.8 Å apart, not 20 Å; residues 10 apart within 20 Å more likely than
    residues far apart in the sequence, 45 Å less. The histogram counts each pair once, by its
    separation."""
    from cryobuild.thread.copies import _separation_log_odds
    from cryobuild.train.ca_separation import MAX_SEPARATION, separation_histograms

    log_odds, width = _separation_log_odds()
    assert log_odds.shape[0] == MAX_SEPARATION and width == 1.0
    assert log_odds[0, 3] > 2 and log_odds[0, 20] < -2
    assert log_odds[9, 15] > 0 > log_odds[9, 45]
    line = np.stack([np.arange(4) * STEP, np.zeros(4), np.zeros(4)], axis=1)
    counts = separation_histograms([(np.array([1, 2, 3, 50]), line)])
    assert counts.sum() == 6 and counts[0, 3] == 2 and counts[1, 7] == 1
    assert counts[-1].sum() == 3  # 1-50, 2-50 and 3-50: farther apart than MAX_SEPARATION


def test_a_copy_runs_in_sequence_order_when_a_piece_spans_another():
    """A piece aligned in two parts (13-25 and 60-75) spans the gap that two other pieces of
    its copy fill (27-40, 45-55): the copy's chain holds its residues in sequence order, the
    piece's unassigned node after the residue it followed. Put together whole, in the order of
    their first numbers, the pieces run 13-25, 60-75, 27-55; on a simulated il2 homodimer
    closure then extended such a chain on from its last residue into numbers it held already
    and placed one twice."""
    ca = []
    numbers = np.concatenate([np.arange(13, 26), [-1], np.arange(60, 76)])
    spanning = ChainMatch(_nodes(ca, _line(1, len(numbers))), 0, numbers, np.where(
        numbers > 0, SEQUENCE.aatype[np.clip(numbers, 1, None) - 1], 20), 10.0, 1e-8)
    inner = [_match(_nodes(ca, _line(first, count)), first, 1e-6)
             for first, count in ((27, 14), (45, 11))]
    pieces = [spanning, *inner]
    chain = _in_sequence_order(pieces)
    assert np.all(np.diff(chain.residue_number[chain.assigned]) > 0)
    assert sorted(chain.nodes.tolist()) == sorted(np.concatenate([p.nodes for p in pieces]).tolist())
    assert chain.residue_number[int(np.flatnonzero(~chain.assigned)[0]) - 1] == 25
    assert chain.score == pytest.approx(sum(p.score for p in pieces)) and chain.evalue == 1e-8
    whole = np.concatenate([p.residue_number[p.assigned] for p in sorted(
        pieces, key=lambda p: p.residue_number[p.assigned][0])])
    assert np.any(np.diff(whole) < 0)
