"""Merging the threadings of several starts (`thread.merging.merge_starts`)."""

from __future__ import annotations

import numpy as np

from cryobuild.residues import CA_CA_DISTANCE
from cryobuild.thread.matches import ChainMatch
from cryobuild.thread.merging import SAME_RESIDUE, merge_starts


def _residue_ca(count: int) -> np.ndarray:
    """Cα ``[count, 3]`` of residues 1..count on a line along x."""
    return np.stack([np.arange(count) * CA_CA_DISTANCE, np.zeros(count), np.zeros(count)], axis=1)


def _chain(nodes, numbers, evalue=1e-4) -> ChainMatch:
    nodes = np.asarray(nodes)
    numbers = np.asarray(numbers)
    return ChainMatch(nodes, 0 if (numbers > 0).any() else -1, numbers, np.zeros(len(nodes)), 10.0, evalue)


class _Nodes:
    """A node space built start by start: each call places nodes on residues (1-based), a
    little off them, as another start's nodes of the same residues lie."""

    def __init__(self, residues: int):
        self.residue_ca = _residue_ca(residues)
        self.ca = np.zeros((0, 3))

    def on(self, residues, offset=0.4) -> np.ndarray:
        first = len(self.ca)
        self.ca = np.concatenate([self.ca, self.residue_ca[np.asarray(residues) - 1] + [0, offset, 0]])
        return np.arange(first, len(self.ca))


def test_another_start_adds_threaded_pieces_only_on_new_density_and_free_positions():
    space = _Nodes(30)
    base = [_chain(space.on(range(1, 11), 0.0), np.arange(1, 11), evalue=1e-6),
            _chain(space.on(range(11, 21), 0.0), np.full(10, -1), evalue=np.inf)]
    # another start threads residues 8-16 in the same register: 11-16 are new
    extends = _chain(space.on(range(8, 17)), np.arange(8, 17), evalue=1e-8)
    result = merge_starts([base, [extends]], space.ca, min_length=4)
    merged = result.chains
    threaded = [m for m in merged if m.threaded]
    assert len(threaded) == 2
    piece = threaded[1]
    # the added piece is named as such, for `assign_copies`' placed_last
    assert result.added == [piece] and result.kept == threaded[:1]
    np.testing.assert_array_equal(piece.residue_number, np.arange(11, 17))
    # the piece keeps its chain's E-value (`assign_copies` takes it after the base's chains)
    assert piece.evalue == 1e-8
    # the base's unthreaded chain keeps only its nodes away from the piece (residues 17-20)
    unthreaded = [m for m in merged if not m.threaded]
    kept = np.concatenate([m.nodes for m in unthreaded])
    assert len(kept) == 4
    distance = np.linalg.norm(space.ca[kept][:, None] - space.ca[piece.nodes][None], axis=-1)
    assert distance.min() > SAME_RESIDUE
    # no position twice
    numbers = np.concatenate([m.residue_number[m.assigned] for m in threaded])
    assert len(numbers) == len(set(numbers.tolist()))


def test_a_start_that_numbers_kept_residues_otherwise_gives_nothing():
    space = _Nodes(30)
    base = [_chain(space.on(range(1, 11), 0.0), np.arange(1, 11), evalue=1e-6)]
    # the same residues 6-10 numbered 8-12, then new ones: another register, not new residues
    shifted = _chain(space.on(range(6, 16)), np.arange(8, 18), evalue=1e-8)
    merged = merge_starts([base, [shifted]], space.ca, min_length=4).chains
    assert [m.threaded for m in merged] == [True]


def test_pieces_too_short_or_on_held_positions_are_not_added():
    space = _Nodes(40)
    base = [_chain(space.on(range(1, 11), 0.0), np.arange(1, 11), evalue=1e-6)]
    # residues 11-13 only: below min_length
    short = _chain(space.on(range(9, 14)), np.arange(9, 14))
    # new density, but numbered 1-6 (positions the base holds): a copy elsewhere is not merged
    held = _chain(space.on(range(25, 31)), np.arange(1, 7))
    merged = merge_starts([base, [short], [held]], space.ca, min_length=4).chains
    assert [m.threaded for m in merged] == [True]
