"""Joining threaded chains: the Cα reach allows `CA_REACH_SLACK`."""

from __future__ import annotations

import numpy as np
import pytest

from cryobuild.thread.joining import MAX_JOIN_OVERLAP, join_matches
from cryobuild.residues import CA_CA_DISTANCE, CA_REACH_SLACK
from cryobuild.thread.matches import ChainMatch

#: Uniform residue-type probabilities for nodes (the types of pieces cut off).
def _probs(count: int) -> np.ndarray:
    return np.full((count, 20), 0.05)


def _backbone(ca: np.ndarray) -> np.ndarray:
    """``[N, 3, 3]`` N, CA, C with N and C 1 Å before and after CA along x."""
    return np.stack([ca - [1.0, 0, 0], ca, ca + [1.0, 0, 0]], axis=1)


def _pair(spacing: float) -> tuple[list[ChainMatch], np.ndarray]:
    """Two 4-residue chains threaded to residues 1-4 and 5-8, with the Cα of residues 4 and 5
    ``spacing`` Å apart."""
    x = np.concatenate([np.arange(4) * CA_CA_DISTANCE, 3 * CA_CA_DISTANCE + spacing
                        + np.arange(4) * CA_CA_DISTANCE])
    ca = np.stack([x, np.zeros(8), np.zeros(8)], axis=1)
    matches = [
        ChainMatch(np.arange(4), 0, np.arange(1, 5), np.zeros(4), 20.0, 1e-5),
        ChainMatch(np.arange(4, 8), 0, np.arange(5, 9), np.zeros(4), 20.0, 1e-5),
    ]
    return matches, _backbone(ca)


def test_consecutive_calphas_a_little_over_the_spacing_are_joined():
    matches, backbone = _pair(3.81)
    joined = join_matches(matches, backbone, _probs(8))
    assert len(joined) == 1
    np.testing.assert_array_equal(joined[0].residue_number, np.arange(1, 9))


def test_calphas_out_of_reach_are_not_joined():
    matches, backbone = _pair(CA_CA_DISTANCE + CA_REACH_SLACK + 0.2)
    assert len(join_matches(matches, backbone, _probs(8))) == 2


def test_the_piece_that_continues_the_numbering_is_joined_not_the_closest():
    """Chain 0 holds residues 1-4, chain 1 residues 6-9 (out of chain 0's reach); chain 2
    (residues 10-13) starts closer to chain 0's end than to chain 1's, but continues chain 1."""
    line = np.arange(4) * CA_CA_DISTANCE
    ca = np.concatenate([
        np.stack([line, np.zeros(4), np.zeros(4)], axis=1),                  # residues 1-4
        np.stack([np.full(4, line[-1]), np.full(4, 6.0), line[::-1]], axis=1),  # 6-9, down z
        np.stack([line + 13.0, np.full(4, 2.6), np.zeros(4)], axis=1),       # residues 10-13
    ])
    # Ends: chain 0's C to chain 2's N 2.6 Å, chain 1's C to chain 2's N 3.4 Å; the Cα of
    # residues 9 and 10 are 3.76 Å apart.
    matches = [ChainMatch(np.arange(4) + 4 * i, 0, first + np.arange(4), np.zeros(4), 20.0, 1e-5)
               for i, first in enumerate((1, 6, 10))]
    joined = join_matches(matches, _backbone(ca), _probs(12))
    numbers = sorted(tuple(match.residue_number.tolist()) for match in joined)
    assert numbers == [(1, 2, 3, 4), (6, 7, 8, 9, 10, 11, 12, 13)]


def _overlapping(offset: float, overlap: int, evalues=(1e-5, 1e-3)):
    """Chain 0 threaded to residues 1-6 along x; chain 1 to residues 7 - overlap .. 12 - overlap,
    its first ``overlap`` nodes ``offset`` Å (in y) from chain 0's last ones."""
    x = np.arange(6) * CA_CA_DISTANCE
    ca = np.concatenate([
        np.stack([x, np.zeros(6), np.zeros(6)], axis=1),
        np.stack([x + (6 - overlap) * CA_CA_DISTANCE, np.full(6, offset), np.zeros(6)], axis=1),
    ])
    matches = [ChainMatch(np.arange(6), 0, np.arange(1, 7), np.zeros(6), 20.0, evalues[0]),
               ChainMatch(np.arange(6, 12), 0, np.arange(7 - overlap, 13 - overlap), np.zeros(6), 10.0,
                          evalues[1])]
    return matches, _backbone(ca)


def test_chains_claiming_the_same_residues_at_their_junction_are_one_chain():
    """The weaker claim is cut off (an unthreaded piece) and the rest joined: no residue twice."""
    matches, backbone = _overlapping(offset=1.0, overlap=MAX_JOIN_OVERLAP)
    joined = join_matches(matches, backbone, _probs(12))
    threaded = [m for m in joined if m.threaded]
    assert len(threaded) == 1
    np.testing.assert_array_equal(threaded[0].residue_number, np.arange(1, 11))
    [piece] = [m for m in joined if not m.threaded]
    np.testing.assert_array_equal(piece.nodes, [6, 7])  # the weaker chain's first two
    matches, backbone = _overlapping(offset=1.0, overlap=1, evalues=(1e-3, 1e-5))
    joined = join_matches(matches, backbone, _probs(12))
    [piece] = [m for m in joined if not m.threaded]
    np.testing.assert_array_equal(piece.nodes, [5])  # now the first chain's last


@pytest.mark.parametrize("offset, overlap", [(8.0, 1), (1.0, MAX_JOIN_OVERLAP + 1)])
def test_copies_and_longer_overlaps_stay_apart(offset, overlap):
    """Claimants far apart are two copies (a homo-oligomer); longer overlaps are not a break."""
    matches, backbone = _overlapping(offset, overlap)
    joined = join_matches(matches, backbone, _probs(12))
    assert [m.residue_number.tolist() for m in joined] == [m.residue_number.tolist() for m in matches]
