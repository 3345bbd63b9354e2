"""Tests of cryobuild.thread.closure: numbering gaps of threaded chains filled with free nodes."""

from __future__ import annotations

import numpy as np
import pytest

from cryobuild.thread import ChainMatch, closure
from cryobuild.sequences import Sequence

SEQUENCE = Sequence("s", "ACDEFGHIKLMNPQ")
#: Å: a zigzag with 3.3 Å along x and 1.9 Å across: Cα-Cα 3.81 Å, Cα(i)-Cα(i+2) 6.6 Å.
RISE, ZIG = 3.3, 1.9


def _zigzag(count: int) -> np.ndarray:
    t = np.arange(count)
    return np.stack([t * RISE, np.where(t % 2, ZIG, 0.0), np.zeros(count)], axis=1)


def _probs(types: np.ndarray, right: float = 0.8) -> np.ndarray:
    """Residue-type probabilities ``[N, 20]`` with ``right`` on the given types."""
    probs = np.full((len(types), 20), (1 - right) / 19)
    probs[np.arange(len(types)), types] = right
    return probs


def _scene(ca: np.ndarray, probs: np.ndarray, free: list[int]):
    """A threaded chain of nodes 0-3 and 10-13 (residues 1-4 and 11-14) and an unthreaded chain
    of the ``free`` nodes; returns the result of `close_gaps`."""
    held = np.array([0, 1, 2, 3, 10, 11, 12, 13])
    threaded = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)
    loose = ChainMatch.unthreaded(np.array(free), probs)
    return closure.close_gaps([threaded, loose], ca, probs, np.full(len(ca), 50.0), [SEQUENCE])


def test_gap_filled_from_a_reversed_fragment_with_a_missing_residue():
    """Nodes 4-9 lie where residues 5-10 belong, traced backwards and without node 6 (a
    detector miss): they fill the gap in order and residue 7 stays empty."""
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    result = _scene(ca, probs, [9, 8, 7, 5, 4])
    threaded = [m for m in result if m.threaded]
    assert len(threaded) == 1
    assert threaded[0].nodes.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13]
    assert threaded[0].residue_number.tolist() == [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14]
    assert threaded[0].aatype.tolist() == SEQUENCE.aatype[threaded[0].residue_number - 1].tolist()
    assert not any(not m.threaded for m in result)  # every free node was used


def test_a_stretch_between_anchors_is_closed_and_the_anchors_left_out():
    """A region rebuild's case: residues 4 and 11 are kept residues (anchors, not nodes) and the
    new nodes 4-9 lie where residues 5-10 belong, traced backwards, in a chain no threading
    numbered. Closure numbers them between the anchors; the anchors are not in the result.
    Without anchors the nodes stay unthreaded."""
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    nodes = np.array([9, 8, 7, 6, 5, 4])
    loose = ChainMatch.unthreaded(nodes - 4, probs[4:10])
    anchors = (closure.Anchor(0, 4, ca[3]), closure.Anchor(0, 11, ca[10]))
    result = closure.close_gaps([loose], ca[4:10], probs[4:10], np.full(6, 50.0), [SEQUENCE],
                                anchors=anchors)
    [threaded] = result
    assert threaded.nodes.tolist() == [0, 1, 2, 3, 4, 5]
    assert threaded.residue_number.tolist() == [5, 6, 7, 8, 9, 10]
    assert threaded.evalue == closure.ANCHOR_EVALUE and threaded.score == closure.ANCHOR_SCORE
    [alone] = closure.close_gaps([loose], ca[4:10], probs[4:10], np.full(6, 50.0), [SEQUENCE])
    assert not alone.threaded


def test_the_position_next_to_an_anchor_is_never_left_empty():
    """Residue 5, next to the anchor at 4, has a node whose type argues against it: inside a
    chain the path would leave it empty for `bridge_positions` to fill later, but next to an
    anchor nothing would, so the path takes the node and the stretch keeps every residue."""
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    probs[4] = _probs((SEQUENCE.aatype[4:5] + 7) % 20, right=0.99)[0]
    loose = ChainMatch.unthreaded(np.array([5, 4, 3, 2, 1, 0]), probs[4:10])
    anchors = (closure.Anchor(0, 4, ca[3]), closure.Anchor(0, 11, ca[10]))
    confidence = np.array([100.0, 50, 50, 50, 50, 50])  # its type is read with certainty
    [threaded] = closure.close_gaps([loose], ca[4:10], probs[4:10], confidence, [SEQUENCE],
                                    anchors=anchors)
    assert threaded.residue_number.tolist() == [5, 6, 7, 8, 9, 10]


def test_fragment_out_of_reach_is_left_alone():
    """The same fragment shifted 4 Å off the chain's line cannot continue it."""
    ca = _zigzag(14)
    ca[4:10, 2] += 4.0
    probs = _probs(SEQUENCE.aatype)
    result = _scene(ca, probs, [9, 8, 7, 5, 4])
    [threaded] = [m for m in result if m.threaded]
    assert threaded.residue_number.tolist() == [1, 2, 3, 4, 11, 12, 13, 14]
    [loose] = [m for m in result if not m.threaded]
    assert loose.nodes.tolist() == [9, 8, 7, 5, 4]



def test_no_step_longer_than_one_residue_reaches():
    """Nodes 4-9 run 4.9 Å apart from node 3 on to node 10, just past `residues.reach` (4.8 Å)
    for consecutive residues: the gap stays open. (With steps allowed up to 5.0 Å, closure
    numbered nodes 5-8 as residues 6-9, consecutive numbers 4.9 Å apart, which
    `validation.numbered_out_of_reach` then counts.)"""
    ca = np.zeros((14, 3))
    for i in range(1, 14):
        stretched = 4 <= i <= 10
        ca[i, 0] = ca[i - 1, 0] + (3.43 if stretched else RISE)
        ca[i, 1] = ca[i - 1, 1] + (3.5 if stretched else ZIG) * (1 if i % 2 else -1)
    assert np.allclose(np.linalg.norm(np.diff(ca[3:11], axis=0), axis=1), 4.9, atol=0.01)
    result = _scene(ca, _probs(SEQUENCE.aatype), [4, 5, 6, 7, 8, 9])
    [threaded] = [m for m in result if m.threaded]
    assert threaded.residue_number.tolist() == [1, 2, 3, 4, 11, 12, 13, 14]

def test_fragment_whose_types_disagree_is_left_alone():
    """Nodes in the right places whose residue types contradict the sequence there."""
    ca = _zigzag(14)
    wrong = (SEQUENCE.aatype + 7) % 20
    probs = _probs(SEQUENCE.aatype)
    probs[4:10] = _probs(wrong[4:10], right=0.95)
    result = _scene(ca, probs, [9, 8, 7, 5, 4])
    [threaded] = [m for m in result if m.threaded]
    assert threaded.residue_number.tolist() == [1, 2, 3, 4, 11, 12, 13, 14]


def test_too_few_nodes_leave_the_gap_open():
    """Two nodes cannot stand for six residues (never two empty positions in a row)."""
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    result = _scene(ca, probs, [4, 9])
    [threaded] = [m for m in result if m.threaded]
    assert threaded.residue_number.tolist() == [1, 2, 3, 4, 11, 12, 13, 14]


@pytest.mark.parametrize("skip", [3.5, 6.6])
def test_no_fold_back(skip):
    """A one-residue gap whose only candidate sits where Cα(i + 2) folds back onto Cα(i)
    (``skip`` Å from the residue before the gap): refused below `MIN_SKIP`, taken above."""
    ca = _zigzag(14)
    # node 4 at 3.8 Å from node 3 and ``skip`` Å from node 2 (placed in the xy-plane)
    a, b = ca[2], ca[3]
    angle = np.arccos((3.81**2 + np.linalg.norm(b - a) ** 2 - skip**2) / (2 * 3.81 * np.linalg.norm(b - a)))
    back = (a - b) / np.linalg.norm(a - b)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    ca[4] = b + 3.81 * rotation @ back
    # residue 6 (node 5) 3.8 Å from node 4, so a one-node path exists geometrically
    direction = (ca[4] - b) / np.linalg.norm(ca[4] - b)
    ca[5] = ca[4] + 3.8 * direction
    held = np.array([0, 1, 2, 3, 5])
    threaded = ChainMatch(held, 0, np.array([1, 2, 3, 4, 6]), SEQUENCE.aatype[[0, 1, 2, 3, 5]], 50.0, 1e-9)
    probs = _probs(SEQUENCE.aatype[:6])
    loose = ChainMatch.unthreaded(np.array([4]), probs)
    result = closure.close_gaps([threaded, loose], ca[:6], probs, np.full(6, 50.0), [SEQUENCE])
    [chain] = [m for m in result if m.threaded]
    filled = 5 in chain.residue_number.tolist()
    assert filled == (skip >= closure.MIN_SKIP)


def test_ends_extended_through_free_nodes():
    """A chain threaded as residues 5-10 on nodes 4-9 takes the free nodes on both sides
    (traced either way) as residues 1-4 and 11-14; a far node is not taken."""
    ca = np.concatenate([_zigzag(14), [[0.0, 30.0, 0.0]]])
    probs = _probs(np.concatenate([SEQUENCE.aatype, [0]]))
    held = np.arange(4, 10)
    threaded = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)
    loose = [ChainMatch.unthreaded(np.array(nodes), probs) for nodes in ([3, 2, 1, 0], [10, 11, 12, 13], [14])]
    result = closure.close_gaps([threaded] + loose, ca, probs, np.full(15, 50.0), [SEQUENCE])
    [chain] = [m for m in result if m.threaded]
    assert chain.nodes.tolist() == list(range(14))
    assert chain.residue_number.tolist() == list(range(1, 15))
    assert [m.nodes.tolist() for m in result if not m.threaded] == [[14]]


def test_extension_through_nodes_of_vague_types_is_refused(monkeypatch):
    """Free nodes whose types say nothing (uniform probabilities) fit any stretch of the
    sequence as well as the one after the chain's end: the end is not extended through them,
    unless the decoy stretches are switched off."""
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    probs[6:] = 1.0 / 20
    held = np.arange(0, 6)
    threaded = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)

    def last_number() -> int:
        loose = ChainMatch.unthreaded(np.arange(6, 14), probs)
        result = closure.close_gaps([threaded, loose], ca, probs, np.full(14, 50.0), [SEQUENCE])
        return result[0].residue_number[-1]

    assert last_number() == 6
    monkeypatch.setattr(closure, "EXTENSION_MAX_BEATEN", 1.0)
    assert last_number() > 6


def test_extension_stops_at_max_extension(monkeypatch):
    """With free nodes for 8 more residues, an end grows by at most `MAX_EXTENSION` (here 3)."""
    monkeypatch.setattr(closure, "MAX_EXTENSION", 3)
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    held = np.arange(0, 6)
    threaded = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)
    loose = ChainMatch.unthreaded(np.arange(6, 14), probs)
    result = closure.close_gaps([threaded, loose], ca, probs, np.full(14, 50.0), [SEQUENCE])
    assert result[0].residue_number.tolist() == list(range(1, 10))


def test_extension_stops_at_a_number_held_nearby():
    """Another chain holding residue 12 within reach of residue 10 (6 Å above it, where no
    path closes the gap) stops the C-terminal extension at 11; a copy far away does not."""
    probs = _probs(np.concatenate([SEQUENCE.aatype, [SEQUENCE.aatype[11]]]))
    held = np.arange(0, 10)
    threaded = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)

    def last_number(blocker_xyz) -> int:
        ca = np.concatenate([_zigzag(14), [blocker_xyz]])
        other = ChainMatch(np.array([14]), 0, np.array([12]), SEQUENCE.aatype[[11]], 10.0, 1e-3)
        loose = ChainMatch.unthreaded(np.array([10, 11, 12, 13]), probs)
        result = closure.close_gaps([threaded, other, loose], ca, probs, np.full(15, 50.0), [SEQUENCE])
        return result[0].residue_number[-1]

    assert last_number(_zigzag(14)[9] + [0.0, 0.0, 6.0]) == 11
    assert last_number([500.0, 0.0, 0.0]) == 14


def test_bridge_residue_sits_in_density_between_its_neighbours():
    """The bridging Cα is 3.8 Å from both neighbours, at the density blob beside them (not at
    the other side of the circle), unless another Cα holds that spot; N points back along the
    chain and C forward."""
    from cryobuild.maps import DensityMap

    before, after = np.array([[10.0, 10.0, 10.0]]), np.array([[16.0, 10.0, 10.0]])
    blob = np.array([13.0, 10.0 + np.sqrt(3.8**2 - 9.0), 10.0])
    zyx = np.stack(np.meshgrid(*[np.arange(24.0)] * 3, indexing="ij"), -1)
    grid = np.exp(-np.sum((zyx[..., ::-1] - blob) ** 2, axis=-1) / 2.0).astype(np.float32)
    density = DensityMap(grid, 1.0, np.zeros(3))
    [(n, ca, c)] = closure.bridge_positions(before, after, density)
    assert np.linalg.norm(ca - before[0]) == pytest.approx(3.8, abs=1e-6)
    assert np.linalg.norm(ca - after[0]) == pytest.approx(3.8, abs=1e-6)
    assert np.linalg.norm(ca - blob) < 0.6
    assert np.linalg.norm(n - before[0]) < np.linalg.norm(c - before[0])
    [(_, elsewhere, _)] = closure.bridge_positions(before, after, density, others=blob[None])
    assert np.linalg.norm(elsewhere - blob) >= closure.BRIDGE_CLEARANCE


def test_accepted_positions_are_never_filled():
    """With residue 12 taken by an accepted residue, the C-terminal extension stops at 11 and a
    gap that holds a taken position stays open."""
    ca = _zigzag(14)
    probs = _probs(SEQUENCE.aatype)
    taken = [np.zeros(len(SEQUENCE), dtype=bool)]
    taken[0][11] = True  # residue 12
    held = np.arange(0, 10)
    threaded = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)
    loose = ChainMatch.unthreaded(np.array([10, 11, 12, 13]), probs)
    result = closure.close_gaps([threaded, loose], ca, probs, np.full(14, 50.0), [SEQUENCE], taken=taken)
    assert result[0].residue_number[-1] == 11

    result = _scene(ca, probs, [9, 8, 7, 5, 4])  # control: the gap 5-10 closes without it
    assert [m for m in result if m.threaded][0].residue_number.tolist()[4] == 5
    held = np.array([0, 1, 2, 3, 10, 11, 12, 13])
    gapped = ChainMatch(held, 0, held + 1, SEQUENCE.aatype[held], 50.0, 1e-9)
    taken[0][:] = False
    taken[0][6] = True  # residue 7, inside the gap
    result = closure.close_gaps([gapped, ChainMatch.unthreaded(np.array([9, 8, 7, 5, 4]), probs)],
                                ca, probs, np.full(14, 50.0), [SEQUENCE], taken=taken)
    assert [m for m in result if m.threaded][0].residue_number.tolist() == [1, 2, 3, 4, 11, 12, 13, 14]
