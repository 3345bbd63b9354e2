"""Placing unthreaded chains between threaded anchors (`cryobuild.thread.placement`), on synthetic
chains: anchor A threaded to residues 1-20 along x, anchor B to 61-80 coming back 10 Å away
(a hairpin), and a 6-residue fragment near the turn."""

from __future__ import annotations

import numpy as np

from cryobuild.residues import CA_CA_DISTANCE
from cryobuild.thread.matches import ChainMatch
from cryobuild.thread.placement import ANCHOR_EVALUE, place_chains
from cryobuild.residues import AA_ORDER
from cryobuild.sequences import Sequence

LENGTH = 80
FRAGMENT = 6
MIN_LENGTH = 4


def _sequence(repeat_at: int | None = None, window: int = 35, length: int = LENGTH) -> Sequence:
    """A random sequence of ``length`` residues; with ``repeat_at``, residues
    ``window..window+5`` (1-based) are copied to ``repeat_at..``."""
    residues = list(np.random.default_rng(3).choice(list(AA_ORDER[:20]), length))
    if repeat_at is not None:
        residues[repeat_at - 1 : repeat_at - 1 + FRAGMENT] = residues[window - 1 : window - 1 + FRAGMENT]
    return Sequence("s", "".join(residues))


def _scene(sequence: Sequence, window: int, fragment_ca: np.ndarray, *, anchor_evalue=1e-6,
           fragment_length: int = FRAGMENT):
    """Matches, aa_probs ``[N, 20]``, confidence ``[N]`` and Cα ``[N, 3]``: the anchors, and a
    fragment whose probabilities point (0.9) at residues ``window..`` of ``sequence``."""
    x = np.arange(20) * CA_CA_DISTANCE
    anchor_a = np.stack([x, np.zeros(20), np.zeros(20)], axis=1)
    anchor_b = np.stack([x[::-1], np.full(20, 10.0), np.zeros(20)], axis=1)
    ca = np.concatenate([anchor_a, anchor_b, fragment_ca[:fragment_length]])
    num = len(ca)
    aa_probs = np.full((num, 20), 0.05)
    fragment = np.arange(40, num)
    aa_probs[fragment] = 0.1 / 19
    aa_probs[fragment, sequence.aatype[window - 1 : window - 1 + fragment_length]] = 0.9
    confidence = np.full(num, 90.0)
    matches = [
        ChainMatch(np.arange(20), 0, np.arange(1, 21), sequence.aatype[:20], 50.0, anchor_evalue),
        ChainMatch(np.arange(20, 40), 0, np.arange(61, 81), sequence.aatype[60:80], 50.0,
                   anchor_evalue),
        ChainMatch.unthreaded(fragment, aa_probs),
    ]
    return matches, aa_probs, confidence, ca


def _near_turn() -> np.ndarray:
    """A fragment's Cα a few Å from both anchors' ends, spaced 3.8 Å."""
    start = np.array([19 * CA_CA_DISTANCE + 6.0, 5.0, 0.0])
    return start + np.stack([np.zeros(FRAGMENT), np.zeros(FRAGMENT),
                             np.arange(FRAGMENT) * CA_CA_DISTANCE], axis=1)


def _place(matches, aa_probs, confidence, ca, sequence):
    return place_chains(matches, aa_probs, confidence, ca, [sequence], min_length=MIN_LENGTH)


def test_the_right_window_is_found():
    sequence = _sequence()
    scene = _scene(sequence, 35, _near_turn())
    placed = _place(*scene, sequence)
    fragment = placed[2]
    assert fragment.threaded and fragment.sequence_index == 0
    np.testing.assert_array_equal(fragment.residue_number, np.arange(35, 35 + FRAGMENT))
    np.testing.assert_array_equal(fragment.aatype, sequence.aatype[34 : 34 + FRAGMENT])
    assert placed[:2] == scene[0][:2]  # the anchors are the same objects


def test_a_window_out_of_reach_is_refused():
    """Residues 21-26 follow anchor A's residue 20 directly: the fragment's first Cα must be
    within 3.8 + 1 Å of it. Next to it the placement is taken, 10 Å away it is not."""
    sequence = _sequence()
    end_of_a = np.array([19 * CA_CA_DISTANCE, 0.0, 0.0])
    along = np.stack([np.zeros(FRAGMENT), np.zeros(FRAGMENT),
                      np.arange(FRAGMENT) * CA_CA_DISTANCE], axis=1)
    adjacent = end_of_a + [0.0, 0.0, CA_CA_DISTANCE] + along
    assert _place(*_scene(sequence, 21, adjacent), sequence)[2].residue_number[0] == 21
    far = end_of_a + [0.0, 0.0, 10.0] + along
    assert not _place(*_scene(sequence, 21, far), sequence)[2].threaded


# Each refusal below is paired with the same scene changed in the one respect the test is about,
# where the fragment is placed: a placement that never placed anything would fail them.


def _is_placed(sequence: Sequence, window: int, **scene) -> bool:
    return _place(*_scene(sequence, window, _near_turn(), **scene), sequence)[2].threaded


def test_an_ambiguous_placement_is_refused():
    assert _is_placed(_sequence(), 35)
    assert not _is_placed(_sequence(repeat_at=45), 35)


def test_occupied_positions_are_never_used():
    """The fragment points at residues 15-20, which anchor A holds (control: 35-40, free)."""
    assert _is_placed(_sequence(), 35)
    assert not _is_placed(_sequence(), 15)


def test_only_confident_threads_anchor():
    assert _is_placed(_sequence(), 35, anchor_evalue=ANCHOR_EVALUE)
    assert not _is_placed(_sequence(), 35, anchor_evalue=10 * ANCHOR_EVALUE)


def test_short_fragments_are_left_alone():
    assert _is_placed(_sequence(), 35, fragment_length=MIN_LENGTH)
    assert not _is_placed(_sequence(), 35, fragment_length=MIN_LENGTH - 1)


def _weak_fragment_placed(length: int, probability: float) -> bool:
    """Whether a 4-residue fragment reading residues 35-38 of a ``length``-residue sequence with
    ``probability`` each (the rest spread evenly) is placed there."""
    sequence = _sequence(length=length)
    matches, aa_probs, confidence, ca = _scene(sequence, 35, _near_turn(), fragment_length=4)
    fragment = np.arange(40, len(ca))
    aa_probs[fragment] = (1 - probability) / 19
    aa_probs[fragment, sequence.aatype[34:38]] = probability
    placed = _place(matches, aa_probs, confidence, ca, sequence)[2]
    assert not placed.threaded or placed.residue_number[0] == 35
    return placed.threaded


def test_a_placement_among_too_many_windows_for_its_score_is_refused(monkeypatch):
    """Beyond the anchors of a 1,200-residue sequence a weakly read fragment has a thousand
    windows: its best one scores enough bits and beats the second by the margin, but its
    E-value (windows * 2**-score, 0.42) is above `MAX_PLACEMENT_EVALUE`. Read more clearly
    (E 0.06) it is placed; without the E-value rule the weak one is placed too."""
    assert _weak_fragment_placed(1200, 0.5)
    assert not _weak_fragment_placed(1200, 0.3)
    monkeypatch.setattr("cryobuild.thread.placement.MAX_PLACEMENT_EVALUE", float("inf"))
    assert _weak_fragment_placed(1200, 0.3)
