"""Merging the threadings of several starts of a build's rounds into one (`pipeline`'s restarts).

At 3.5 Å and worse which chains thread changes from start to start (other random initial
frames, `pipeline.BuildOptions.restarts`): on T20S α (4.8 Å) three starts each numbered 0.45,
0.50 and 0.45 of the deposited residues right, and together 0.71 (docs/results_log.md,
"Thirty-eighth stop"). Keeping only the start that threads most throws the rest away, so
`merge_starts` keeps that start's chains and adds the threaded chains of the others that lie on
density and sequence positions it left free. Each start threads at the E-value cut divided by
the number of starts, so the merged model is no likelier to hold a chance thread than one start
threading at the cut.

The chains come in one node space: the caller concatenates the starts' nodes (their Cα
``ca``) and shifts each start's node indices by the nodes before it. The merged list then goes
through `copies.assign_copies` (the added pieces last) and `joining.join_matches` as one
start's chains do, so that an added chain fills a gap of a copy and is joined to the pieces it
continues.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .matches import ChainMatch

__all__ = ["MIN_AGREEMENT", "SAME_RESIDUE", "MergedStarts", "merge_starts"]

#: Å: a node of another start this close to a node already in the merged model stands on the
#: same residue (two starts' nodes of one residue lie about 1 Å apart at 4-5 Å, consecutive
#: residues 3.8 Å).
SAME_RESIDUE = 2.5
#: A chain of another start that stands on residues already kept must give most of them the
#: numbers they have (within one position), or it is another reading of them and is left out.
MIN_AGREEMENT = 0.5


@dataclasses.dataclass(frozen=True)
class MergedStarts:
    """What `merge_starts` keeps, by where it came from.

    Attributes
    ----------
    kept : list[ChainMatch]
        The base start's threaded chains (less the unnumbered nodes an added piece stands on).
    added : list[ChainMatch]
        The pieces the other starts add, strongest E-value first: `copies.assign_copies` takes
        them as ``placed_last``.
    unthreaded : list[ChainMatch]
        The base start's unthreaded chains, less the nodes an added piece stands on.
    """

    kept: list[ChainMatch]
    added: list[ChainMatch]
    unthreaded: list[ChainMatch]

    @property
    def chains(self) -> list[ChainMatch]:
        """Every chain: ``kept``, then ``added``, then ``unthreaded``."""
        return self.kept + self.added + self.unthreaded


def merge_starts(starts: list[list[ChainMatch]], ca: np.ndarray, *, min_length: int
                 ) -> MergedStarts:
    """One set of chains from the chains of several starts (`ChainMatch` lists, nodes already
    in one node space with Cα ``ca`` ``[N, 3]``, Å), the first start's the base.

    Kept: every chain of the first start; then, strongest E-value first over the other starts,
    the pieces of each threaded chain that stand on new residues: its runs of residues whose
    nodes lie farther than `SAME_RESIDUE` from every numbered node kept so far and whose
    sequence positions no kept chain of the sequence holds, trimmed to numbered ends, with at
    least ``min_length`` numbered residues. A chain whose numbered residues on kept ones mostly
    carry other numbers than those (`MIN_AGREEMENT`) gives none. A piece keeps its chain's
    E-value; the caller hands the pieces (`MergedStarts.added`) to `copies.assign_copies` as
    ``placed_last``, so that they fit into the base's copies rather than cut the base's chains
    to fit themselves (a piece's chain may be stronger than the base's chains it meets). Where
    each chain came from is returned, not left for the caller to infer from node indices.
    The base's chains lose their
    unnumbered nodes an added piece stands on (the final model holds only numbered residues
    of threaded chains, and two nodes on one residue would crowd the last graph-network pass):
    a threaded chain keeps its other nodes, an unthreaded one each run left, in order.
    Unthreaded chains of the other starts are not used.
    """
    from scipy.spatial import cKDTree

    ca = np.asarray(ca, dtype=np.float64)
    base, others = starts[0], [m for start in starts[1:] for m in start if m.threaded]
    kept = [m for m in base if m.threaded]
    held = {}  # sequence index -> set of positions the kept chains hold
    for match in kept:
        held.setdefault(match.sequence_index, set()).update(match.residue_number[match.assigned].tolist())
    added = []
    for match in sorted(others, key=lambda m: (m.evalue, -int(m.assigned.sum()))):
        same = [k for k in kept + added if k.sequence_index == match.sequence_index]
        near = np.zeros(len(match.nodes), dtype=bool)
        if same:
            nodes = np.concatenate([k.nodes[k.assigned] for k in same])
            numbers = np.concatenate([k.residue_number[k.assigned] for k in same])
            distance, index = cKDTree(ca[nodes]).query(ca[match.nodes], distance_upper_bound=SAME_RESIDUE)
            near = np.isfinite(distance)
            both = near & match.assigned
            if both.any():
                shift = match.residue_number[both] - numbers[index[both]]
                if np.mean(np.abs(shift) <= 1) < MIN_AGREEMENT:
                    continue
        others_near = _near_nodes(match, _numbered_nodes(
            [k for k in kept + added if k.sequence_index != match.sequence_index]), ca)
        held_here = np.isin(match.residue_number, list(held.get(match.sequence_index, ()))) & match.assigned
        for piece in _runs(match, ~(near | others_near | held_here)):
            if piece.assigned.sum() >= min_length:
                added.append(piece)
                held.setdefault(piece.sequence_index, set()).update(
                    piece.residue_number[piece.assigned].tolist())
    covered = _numbered_nodes(added)
    kept = [m.part(~(_near_nodes(m, covered, ca) & ~m.assigned)) for m in kept]
    unthreaded = [piece for m in base if not m.threaded
                  for piece in _runs(m, ~_near_nodes(m, covered, ca), numbered_ends=False)]
    return MergedStarts(kept, added, unthreaded)


def _numbered_nodes(chains: list[ChainMatch]) -> np.ndarray:
    """The nodes of ``chains``' numbered residues."""
    if not chains:
        return np.zeros(0, np.int64)
    return np.concatenate([c.nodes[c.assigned] for c in chains])


def _near_nodes(match: ChainMatch, nodes: np.ndarray, ca: np.ndarray) -> np.ndarray:
    """bool ``[L]``: the residues of ``match`` within `SAME_RESIDUE` of a node of ``nodes``."""
    from scipy.spatial import cKDTree

    if not len(nodes):
        return np.zeros(len(match.nodes), dtype=bool)
    distance, _ = cKDTree(ca[nodes]).query(ca[match.nodes], distance_upper_bound=SAME_RESIDUE)
    return np.isfinite(distance)


def _runs(match: ChainMatch, free: np.ndarray, *, numbered_ends: bool = True) -> list[ChainMatch]:
    """The runs of ``match``'s residues where ``free`` (bool ``[L]``), in chain order; with
    ``numbered_ends`` each trimmed to its first and last numbered residue (runs with none
    dropped)."""
    edges = np.diff(np.concatenate([[0], free.astype(int), [0]]))
    runs = []
    for first, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if numbered_ends:
            numbered = first + np.flatnonzero(match.assigned[first:stop])
            if not len(numbered):
                continue
            first, stop = numbered[0], numbered[-1] + 1
        runs.append(match.part(slice(first, stop)))
    return runs
