"""The whole model's view of threading (issue 17): which chains the model supports, and which
copy of its sequence each threaded chain is.

`search` threads each chain on its own: its E-value counts the chance alignments as good in a
search of that chain alone. A build searches tens of chains, so at the per-chain cut
(`search.MAX_THREAD_EVALUE`, 0.03) a model of ``n`` chains threads about ``0.03 n`` chains to
a sequence by chance -- an unrelated sequence got a 43-residue chain at E 0.008 -- and a chain
aligned in a wrong register may claim positions another chain holds. Two stages fix this with
what the other chains say:

**Support** (`keep_supported`, right after the search). A chain is an *anchor* when its E-value
is at most `anchor_evalue`: `MODEL_FALSE_THREADS` divided by the number of chains searched,
so that a whole model threads that many chains by chance (a Bonferroni bound). Two weaker
chains of one sequence that support each other (below) are anchors together when
``C(n, 2) * E_1 * E_2`` is at most `MODEL_FALSE_THREADS` for ``n`` chains searched: as many
pairs could hit by chance. A weaker chain
(up to the per-chain cut) stays threaded only when an anchor of its sequence supports it: the
two hold no position in common, and the anchor's residue nearest in sequence on either side,
at most `SUPPORT_MAX_GAP` positions away, can reach the chain's end across the gap
(``|CA - CA| <= gap * CA_CA_DISTANCE + CA_REACH_SLACK``). With no anchor (an unrelated
sequence) nothing weak threads; placement (`placement`, which needs anchors too) and closure
then have nothing to extend.

**Copies** (`assign_copies`, after placement and before joining). The threaded chains of each sequence, strongest
first (smallest E-value, then most residues), are grouped into copies of it: a homo-oligomer's
chains into as many copies as its density holds, whether the input lists each copy or the
sequence once. A chain joins the copy it fits best (`_fit`):

* it must fit into one gap of the positions the copy holds: its residues numbered outside that
  gap are cut off (at most half of its residues, and only at its ends), so no position is
  placed twice within a copy;
* across each end of the gap, the copy's residue and the chain's first (last) one must be
  reachable as above; if not, the chain's end residues are cut one by one, at most
  `MAX_JUNCTION_TRIM` -- on the simulated il2 map, a second chain numbered 39-76 next to a
  chain holding 1-42 and 76-126 had its first six residues 10-26 Å from where the sequence
  puts them.

A chain that fits no copy starts a new one, unless it lies along a copy of its sequence already
built (`_lies_along`: half or more of its residues within `ALONG_DISTANCE` of that copy's Cα):
two copies of one protein do not lie on top of each other, so such a chain is a second reading
of density a copy already explains, and it stays unthreaded. (Support needs an anchor that holds
none of a weak chain's positions, but placement can fill them afterwards: on a real 3.1 Å map
of one GABA-A subunit an 8-residue chain at E 9e-4 was threaded to positions 68-75, which
placement had given the subunit's chain, and became a second copy of 8 residues 3.9-5.9 Å from
the first.) Then each piece moves to the copy whose Cα it touches most, where it fits
(`_regroup`): taken one at a time, a piece can reach a gap of the wrong copy before its own
copy exists (a piece that touches no copy goes to the nearest). Last, pieces are exchanged
between copies while that makes each copy's pieces more likely one chain by the distances of
their residues few positions apart (`_exchanged`): in a lattice as dense as a helical virus's,
contacts do not tell a copy's own pieces from a neighbour's. The pieces of a copy are then one
chain, its residues in sequence order (`_in_sequence_order`; the numbering has gaps where
nothing was built), so chain IDs go by copy. Residues cut off become unthreaded pieces.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable
from importlib import resources

import numpy as np

from ..sequences import Sequence
from ..residues import reach
from .matches import ChainMatch, concatenate
from .profiles import background_frequencies, match_emissions

__all__ = [
    "ALONG_DISTANCE",
    "CONTACT_DISTANCE",
    "MAX_JUNCTION_TRIM",
    "MAX_EXCHANGES",
    "MAX_REGROUP_PASSES",
    "MIN_EXCHANGE_GAIN",
    "MIN_KEPT_SHARE",
    "MODEL_FALSE_THREADS",
    "SUPPORT_MAX_GAP",
    "anchor_evalue",
    "assign_copies",
    "keep_supported",
]

#: Chains a whole model may thread by chance (expected): the anchors' E-value cut is this over
#: the number of chains searched (`anchor_evalue`). At 0.05 the E-values proved too kind to
#: chance: with the fold-B detector fine-tuned with noise maps (weights/MANIFEST.md), the
#: simulated il2 map threaded a 12-residue chain to lysozyme's sequence at E 0.0012 and a chain
#: to an unrelated 90-residue one at E 0.004. At 0.01 neither threads; on six real maps of
#: 2.3-4.0 Å the sequence recall stayed within 0.01 except the 3.8 Å ASC map, whose pair of
#: right chains (24 residues at E 0.003 and 9 at E 0.018 among 22 searched) no longer threads
#: (0.13 -> 0.00; `bench.real`, 2026-12-04).
MODEL_FALSE_THREADS = 0.01
#: Residues: the most sequence positions between a weak chain and the anchor residue that
#: supports it.
SUPPORT_MAX_GAP = 30
#: Residues a chain's end may lose to make its junction with its copy reachable.
MAX_JUNCTION_TRIM = 8
#: A chain joins a copy only if it keeps at least this share of its numbered residues.
MIN_KEPT_SHARE = 0.5
#: Å: Cα closer than this touch (`_regroup`): residues in contact across a fold.
CONTACT_DISTANCE = 8.0
#: Å: a chain lies along a copy (`_lies_along`) when half or more of its Cα are this close to
#: the copy's: closer than packed helices' Cα (8-10 Å apart), as near as paired strands' (4.4-5.5
#: Å), which two copies of one chain share only at an interface, not along a whole chain.
ALONG_DISTANCE = 6.0
#: Passes of `_regroup` at most (a move can free the next; each pass moves a piece only to
#: more contacts, so passes end when none moves).
MAX_REGROUP_PASSES = 10
#: The Cα separation statistics `_separation_log_odds` reads (`cryobuild.train.ca_separation`).
CA_SEPARATION_RESOURCE = "ca_separation.json"
#: nats: least gain of the pieces' log-odds of belonging together for `_exchanged` to swap
#: pieces between copies (an exchange that only shuffles noise gains a nat or two).
MIN_EXCHANGE_GAIN = 3.0
#: Exchanges at most (each raises the log-odds, so they end; this bounds the time).
MAX_EXCHANGES = 200


def anchor_evalue(searched: int, max_evalue: float) -> float:
    """The E-value cut of anchors in a model of ``searched`` chains: `MODEL_FALSE_THREADS` /
    ``searched``, at most ``max_evalue`` (the per-chain cut)."""
    return min(max_evalue, MODEL_FALSE_THREADS / max(searched, 1))


def _reachable(ca_a: np.ndarray, ca_b: np.ndarray, gap: int) -> bool:
    """Can residues ``gap`` positions apart have their Cα (Å) at ``ca_a`` and ``ca_b``?"""
    return bool(np.linalg.norm(ca_a - ca_b) <= reach(gap))


def _numbered(match: ChainMatch, ca: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sequence positions ``[K]`` and Cα ``[K, 3]`` (Å) of a chain's numbered residues."""
    assigned = match.assigned
    return match.residue_number[assigned], ca[match.nodes[assigned]]


def _supports(anchor: ChainMatch, weak: ChainMatch, ca: np.ndarray) -> bool:
    """Whether ``anchor`` supports ``weak`` (module docstring): no shared position, and a
    flanking anchor residue within `SUPPORT_MAX_GAP` that reaches ``weak``'s end."""
    anchor_numbers, anchor_ca = _numbered(anchor, ca)
    numbers, weak_ca = _numbered(weak, ca)
    if not len(numbers) or np.isin(numbers, anchor_numbers).any():
        return False
    below = np.flatnonzero(anchor_numbers < numbers[0])
    if len(below):
        gap = int(numbers[0] - anchor_numbers[below[-1]])
        if gap <= SUPPORT_MAX_GAP and _reachable(anchor_ca[below[-1]], weak_ca[0], gap):
            return True
    above = np.flatnonzero(anchor_numbers > numbers[-1])
    if len(above):
        gap = int(anchor_numbers[above[0]] - numbers[-1])
        if gap <= SUPPORT_MAX_GAP and _reachable(anchor_ca[above[0]], weak_ca[-1], gap):
            return True
    return False


def _pair_anchors(weak: list[ChainMatch], ca: np.ndarray, searched: int) -> list[ChainMatch]:
    """The weak chains that are anchors as a pair (module docstring): two chains of one
    sequence that support each other, with ``C(searched, 2) * E_1 * E_2`` at most
    `MODEL_FALSE_THREADS`."""
    pairs = searched * (searched - 1) / 2
    promoted = []
    for i, first in enumerate(weak):
        for second in weak[i + 1:]:
            if (first.sequence_index == second.sequence_index
                    and pairs * first.evalue * second.evalue <= MODEL_FALSE_THREADS
                    and (_supports(first, second, ca) or _supports(second, first, ca))):
                promoted += [m for m in (first, second) if not any(m is p for p in promoted)]
    return promoted


def keep_supported(matches: list[ChainMatch], ca: np.ndarray, aa_probs: np.ndarray, *,
                   anchor_cut: float, searched: int) -> list[ChainMatch]:
    """``matches`` with each threaded chain weaker than ``anchor_cut`` (E-value) that is not
    an anchor as a pair and that no anchor supports made unthreaded (keeping its score and
    E-value); ``ca`` ``[N, 3]`` Å and ``aa_probs`` ``[N, 20]`` of all nodes, ``searched``
    chains searched."""
    anchors = [m for m in matches if m.threaded and m.evalue <= anchor_cut]
    weak = sorted((m for m in matches if m.threaded and m.evalue > anchor_cut),
                  key=lambda m: m.evalue)
    anchors += _pair_anchors(weak, ca, searched)
    kept = []
    for match in matches:
        if match.threaded and match.evalue > anchor_cut and not any(
                anchor is match or (anchor.sequence_index == match.sequence_index
                                    and _supports(anchor, match, ca))
                for anchor in anchors):
            match = ChainMatch.unthreaded(match.nodes, aa_probs, match.score, match.evalue)
        kept.append(match)
    return kept


@dataclasses.dataclass(frozen=True)
class _Fit:
    """How a chain fits a copy: the kept span ``start:stop`` of its nodes, its numbered
    residues kept, and how far its junctions with the copy stretch (the larger of the two
    flanks' Cα distance over the most that gap can span, ``gap * CA_CA_DISTANCE +
    CA_REACH_SLACK``; 0 without a flank): 1 is as far as a chain reaches."""

    start: int
    stop: int
    kept: int
    stretch: float = 0.0


def _fit(match: ChainMatch, held: np.ndarray, held_ca: np.ndarray, ca: np.ndarray) -> _Fit | None:
    """Where ``match`` fits into the copy holding positions ``held`` ``[H]`` (sorted, Cα
    ``held_ca`` ``[H, 3]`` Å): the gap of ``held`` taking most of its numbered residues, its
    ends trimmed until reachable from the gap's flanks (module docstring); None if it does not
    fit."""
    index = np.flatnonzero(match.assigned)
    numbers = match.residue_number[index]
    gap_of = np.searchsorted(held, numbers)  # residues with equal gap_of share a gap of held
    free = ~np.isin(numbers, held)
    if not free.any():
        return None
    gaps, counts = np.unique(gap_of[free], return_counts=True)
    gap = gaps[np.argmax(counts)]
    inside = np.flatnonzero(free & (gap_of == gap))
    first, last = inside[0], inside[-1]
    low = (held[gap - 1], held_ca[gap - 1]) if gap > 0 else None
    high = (held[gap], held_ca[gap]) if gap < len(held) else None
    trimmed = 0
    while low is not None and first <= last and not _reachable(
            low[1], ca[match.nodes[index[first]]], int(numbers[first] - low[0])):
        first, trimmed = first + 1, trimmed + 1
    while high is not None and first <= last and not _reachable(
            high[1], ca[match.nodes[index[last]]], int(high[0] - numbers[last])):
        last, trimmed = last - 1, trimmed + 1
    kept = last - first + 1
    if trimmed > MAX_JUNCTION_TRIM or kept < max(1, MIN_KEPT_SHARE * len(index)):
        return None
    stretch = max([_stretch(flank, ca[match.nodes[index[end]]], numbers[end])
                   for flank, end in ((low, first), (high, last)) if flank is not None],
                  default=0.0)
    # the unassigned residues between kept ones stay; those beyond go with the cut ends
    return _Fit(int(index[first]), int(index[last]) + 1, int(kept), stretch)


def _stretch(flank: tuple[int, np.ndarray], ca: np.ndarray, number: int) -> float:
    """A junction's Cα distance (Å) from the copy's residue ``flank`` (position, Cα) to a
    chain residue at ``ca`` numbered ``number``, over the most their gap can span."""
    gap = abs(int(number) - int(flank[0]))
    return float(np.linalg.norm(flank[1] - ca) / reach(gap))


def _restrict(match: ChainMatch, fit: _Fit) -> ChainMatch:
    """``match`` restricted to ``fit``'s span of its nodes."""
    return match.part(slice(fit.start, fit.stop))


def _cut_off(match: ChainMatch, fit: _Fit, aa_probs: np.ndarray) -> list[ChainMatch]:
    """The unthreaded pieces of ``match`` before and after ``fit``'s span."""
    return [ChainMatch.unthreaded(nodes, aa_probs)
            for nodes in (match.nodes[:fit.start], match.nodes[fit.stop:]) if len(nodes)]


def _yield(piece: ChainMatch, positions: np.ndarray) -> _Fit | None:
    """The span of ``piece`` left when it gives up ``positions`` (those it holds must be at one
    end of its numbered residues, and it must keep `MIN_KEPT_SHARE` of them), or None."""
    index = np.flatnonzero(piece.assigned)
    lost = np.isin(piece.residue_number[index], positions)
    if not lost.any():
        return _Fit(0, len(piece.nodes), len(index))
    kept = np.flatnonzero(~lost)
    if not len(kept) or kept[-1] - kept[0] + 1 != len(kept) or not (lost[0] or lost[-1]) \
            or (lost[0] and lost[-1]) or len(kept) < MIN_KEPT_SHARE * len(index):
        return None
    return _Fit(int(index[kept[0]]), int(index[kept[-1]]) + 1, len(kept))


def _held(pieces: list[ChainMatch], ca: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions ``[H]`` a copy's ``pieces`` hold and their Cα ``[H, 3]`` (Å)."""
    numbered = [_numbered(piece, ca) for piece in pieces]
    held = np.concatenate([numbers for numbers, _ in numbered])
    order = np.argsort(held)
    return held[order], np.concatenate([positions for _, positions in numbered])[order]


class _Evidence:
    """Bits of each node for the residue a sequence position asks for: ``log2(e / f)``, with
    ``e`` the node's match-state emission (`profiles.match_emissions`) and ``f`` the
    background; what a residue loses when it is cut."""

    def __init__(self, aa_probs: np.ndarray, confidence: np.ndarray, sequences: list[Sequence]):
        emissions = match_emissions(aa_probs, confidence)
        self._log_odds = np.log2(emissions / background_frequencies())  # [N, 20]
        self._types = [sequence.aatype for sequence in sequences]

    def lost(self, match: ChainMatch, fit: _Fit) -> float:
        """Bits of ``match``'s numbered residues outside ``fit``'s span (positive ones only:
        a residue that fits its position worse than chance is no loss)."""
        outside = match.assigned.copy()
        outside[fit.start:fit.stop] = False
        types = self._types[match.sequence_index][match.residue_number[outside] - 1]
        valid = types < self._log_odds.shape[1]  # X in the sequence: no evidence
        bits = self._log_odds[match.nodes[outside][valid], types[valid]]
        return float(np.clip(bits, 0.0, None).sum())


def _place(match: ChainMatch, pieces: list[ChainMatch], ca: np.ndarray,
           evidence: _Evidence) -> tuple[float, _Fit, list[_Fit]] | None:
    """The cheapest way ``match`` joins the copy of ``pieces``: (bits lost, its span, the
    pieces' spans), or None if it cannot. Either ``match`` gives up the positions the copy
    holds (`_fit`), or the pieces give up those ``match`` claims at their ends (`_yield`) and
    ``match`` fits what is left -- whichever loses fewer bits (`_Evidence`)."""
    options = []
    held, held_ca = _held(pieces, ca)
    fit = _fit(match, held, held_ca, ca)
    if fit is not None:
        options.append((evidence.lost(match, fit), fit, [_Fit(0, len(p.nodes), 0) for p in pieces]))
    claimed = match.residue_number[match.assigned]
    spans = [_yield(piece, claimed) for piece in pieces]
    if any(span is None for span in spans):
        return min(options, key=lambda option: option[0], default=None)
    rest = [_restrict(piece, span) for piece, span in zip(pieces, spans)]
    rest = [piece for piece in rest if piece.assigned.any()]
    if rest:
        held, held_ca = _held(rest, ca)
        fit = _fit(match, held, held_ca, ca)
    else:
        fit = _Fit(0, len(match.nodes), int(match.assigned.sum()))
    if fit is not None:
        lost = evidence.lost(match, fit) + sum(evidence.lost(p, s) for p, s in zip(pieces, spans))
        options.append((lost, fit, spans))
    return min(options, key=lambda option: option[0], default=None)


def _closeness(piece: ChainMatch, pieces: list[ChainMatch], ca: np.ndarray) -> tuple[int, float]:
    """How close ``piece`` lies to a copy's ``pieces`` (other than itself), as a sort key: the
    pairs of their Cα closer than `CONTACT_DISTANCE` and, when there are none, minus the
    shortest Cα distance (Å) between them (a loop piece of a copy need not touch its other
    pieces, but lies nearer them than another copy's: on a simulated il2 homodimer a
    6-residue piece 67-72 touched neither copy and stayed in the wrong one, which split the
    other copy in two). One distance matrix gives both."""
    others = [other for other in pieces if other is not piece]
    if not others:
        return 0, 0.0
    rest = ca[np.concatenate([other.nodes for other in others])]
    distance = np.linalg.norm(ca[piece.nodes][:, None] - rest[None], axis=-1)
    contacts = int((distance < CONTACT_DISTANCE).sum())
    return (contacts, 0.0) if contacts else (0, -float(distance.min()))


def _regroup(copies: list[list[ChainMatch]], ca: np.ndarray, aa_probs: np.ndarray
             ) -> tuple[list[list[ChainMatch]], list[ChainMatch]]:
    """Each piece moves to another copy of its sequence where it fits (`_fit`; its residues
    cut off there become unthreaded pieces, returned second) and lies closer (`_closeness`:
    touches more of that copy's Cα than of its own, or, touching neither, lies nearer it).

    `assign_copies` places chains one at a time, strongest first, so a piece of one copy that
    comes before the rest of its copy joins another copy's gap if it can reach it -- and with
    a gap of k residues that is up to 3.8 k Å: on a simulated il2 homodimer (copies 55 Å
    apart) one copy's chain held residues 1-65 of one copy and 78-96 of the other. A copy is
    one folded chain, so its pieces touch each other; pieces of two copies touch only at
    their interface.
    """
    leftover: list[ChainMatch] = []
    for _ in range(MAX_REGROUP_PASSES):
        if not _regroup_pass(copies, ca, aa_probs, leftover):
            break
    return [pieces for pieces in copies if pieces], leftover


def _regroup_pass(copies: list[list[ChainMatch]], ca: np.ndarray, aa_probs: np.ndarray,
                  leftover: list[ChainMatch]) -> bool:
    """One pass of `_regroup` over every piece, in place (cut-off residues appended to
    ``leftover``); whether any moved."""
    moved = False
    for a, pieces in enumerate(copies):
        for piece in list(pieces):
            best, most = None, _closeness(piece, pieces, ca)
            for b, other in enumerate(copies):
                if b == a or not other or other[0].sequence_index != piece.sequence_index:
                    continue
                held, held_ca = _held(other, ca)
                fit = _fit(piece, held, held_ca, ca)
                closeness = _closeness(piece, other, ca)
                if fit is not None and closeness > most:
                    best, most = (b, fit), closeness
            if best is not None:
                b, fit = best
                pieces.remove(piece)
                copies[b].append(_restrict(piece, fit))
                leftover += _cut_off(piece, fit, aa_probs)
                moved = True
    return moved


@functools.lru_cache(maxsize=1)
def _separation_log_odds() -> tuple[np.ndarray, float]:
    """Log-odds (nats) ``[S, bins]`` that two residues ``k`` positions apart in one chain
    (row ``k - 1``, ``k <= S``) have their Cα at a distance in that bin, against residues of
    one chain farther apart in the sequence (`cryobuild.train.ca_separation`, one
    pseudo-count per bin); and the bins' width (Å)."""
    document = json.loads(resources.files("cryobuild").joinpath(CA_SEPARATION_RESOURCE)
                          .read_text(encoding="utf-8"))
    counts = np.asarray(document["counts"], dtype=np.float64) + 1.0
    frequency = counts / counts.sum(axis=1, keepdims=True)
    return np.log(frequency[:-1]) - np.log(frequency[-1]), float(document["bin_angstrom"])


def _together(first: ChainMatch, second: ChainMatch, ca: np.ndarray) -> float:
    """Log-odds (nats) that two pieces of one sequence are parts of one chain: summed over
    their residue pairs few enough positions apart for the fold to hold them near
    (`_separation_log_odds`); ``ca`` ``[N, 3]`` Å."""
    log_odds, width = _separation_log_odds()
    numbers_a, ca_a = _numbered(first, ca)
    numbers_b, ca_b = _numbered(second, ca)
    separation = np.abs(numbers_a[:, None] - numbers_b[None])
    near = (separation >= 1) & (separation <= len(log_odds))
    if not near.any():
        return 0.0
    distance = np.linalg.norm(ca_a[:, None] - ca_b[None], axis=-1)[near]
    column = np.minimum((distance / width).astype(np.int64), log_odds.shape[1] - 1)
    return float(log_odds[separation[near] - 1, column].sum())


def _exchanged(copies: list[list[ChainMatch]], ca: np.ndarray) -> list[list[ChainMatch]]:
    """``copies`` with pieces exchanged between copies of one sequence while an exchange
    raises the pieces' summed log-odds of belonging together (`_together`, over the pairs
    of pieces within each copy) by `MIN_EXCHANGE_GAIN` or more.

    In a lattice of copies packed as tightly as a helical virus's, contacts (`_regroup`) do
    not tell a copy's own pieces from a neighbour's: on the real 2.3 Å TMV map the deposited
    subunit's threaded residues were split over two or three copies in each of three builds.
    What a chain's own pieces share is the distance their residues keep by how far apart they
    are in the sequence. An exchange moves a piece into another copy, and the pieces there
    that hold any of its positions back into its own; the best exchange is made first.
    In the same three TMV builds (`bench.real --seeds 0 1 2`) the final models then thread
    130, 118 and 133 of the subunit's residues (115, 103 and 121 before) and its sequence
    recall rose 0.75 / 0.67 / 0.79 -> 0.85 / 0.77 / 0.87; the other 18 real maps' builds did
    not change. The subunit still lies in two copies in each (62 + 68, 66 + 38 + 14, 92 + 41
    residues; a scratch count on the builds' ``--keep`` outputs): one exchange at a time stops where only moving several pieces at once would
    gain. A hinge on the 95th percentile distance instead of these log-odds (a scratch
    prototype) could not prefer the right pairing among feasible ones at all. An exchange
    that leaves two pieces of one copy meeting out of reach of each other is not made
    (`_junctions_reachable`): the log-odds of one far pair are outweighed by many near ones,
    and a TMV build (seed 2) numbered two residues of a copy 84 and 86, 24.7 Å apart."""
    counts = np.bincount([group[0].sequence_index for group in copies if group] or [0])
    if counts.max() < 2:  # no sequence with two copies: nothing to exchange (most maps)
        return copies
    pieces = [piece for group in copies for piece in group]
    index = {id(piece): i for i, piece in enumerate(pieces)}
    together = np.zeros((len(pieces), len(pieces)))
    for i, first in enumerate(pieces):
        if counts[first.sequence_index] < 2:
            continue
        for j in range(i + 1, len(pieces)):
            if first.sequence_index == pieces[j].sequence_index:
                together[i, j] = together[j, i] = _together(first, pieces[j], ca)
    numbered = [_numbered(piece, ca) for piece in pieces]
    positions = [set(numbers.tolist()) for numbers, _ in numbered]
    groups = [[index[id(piece)] for piece in group] for group in copies]
    for _ in range(MAX_EXCHANGES):
        best = None
        for a, group_a in enumerate(groups):
            for b, group_b in enumerate(groups):
                if a == b or not group_a or not group_b or \
                        pieces[group_a[0]].sequence_index != pieces[group_b[0]].sequence_index:
                    continue
                for moved in group_b:
                    back = [q for q in group_a if positions[q] & positions[moved]]
                    rest_a = [q for q in group_a if q not in back]
                    rest_b = [q for q in group_b if q != moved]
                    if any(positions[q] & positions[r] for q in back for r in rest_b):
                        continue
                    # what ``moved`` gains beside the rest of a, and ``back`` beside the rest
                    # of b, against what each had (pairs within ``back`` stay together)
                    gain = (together[moved, rest_a].sum() - together[moved, rest_b].sum()
                            + together[np.ix_(back, rest_b)].sum()
                            - together[np.ix_(back, rest_a)].sum())
                    if gain >= MIN_EXCHANGE_GAIN and (best is None or gain > best[0]) and \
                            _junctions_reachable(rest_a + [moved], numbered) and \
                            _junctions_reachable(rest_b + back, numbered):
                        best = (gain, a, b, rest_a + [moved], rest_b + back)
        if best is None:
            break
        _, a, b, groups[a], groups[b] = best
    return [[pieces[i] for i in group] for group in groups if group]


def _junctions_reachable(group: list[int], numbered: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether the pieces ``group`` can be one chain where they meet: every two residues next
    to each other among the group's positions, of different pieces, within reach (`_reachable`)
    of each other. ``numbered``: each piece's residue numbers ``[K]`` and Cα ``[K, 3]`` Å
    (`_numbered`)."""
    if not group:
        return True
    numbers = np.concatenate([numbered[i][0] for i in group])
    xyz = np.concatenate([numbered[i][1] for i in group])
    owner = np.concatenate([np.full(len(numbered[i][0]), i) for i in group])
    order = np.argsort(numbers, kind="stable")
    numbers, xyz, owner = numbers[order], xyz[order], owner[order]
    return all(_reachable(xyz[k], xyz[k + 1], int(numbers[k + 1] - numbers[k]))
               for k in np.flatnonzero(owner[1:] != owner[:-1]))


def _in_sequence_order(pieces: list[ChainMatch]) -> ChainMatch:
    """One chain of a copy's ``pieces`` with its residues in sequence order.

    Each piece is cut into runs where its numbering jumps (a run keeps the unassigned nodes
    that follow its last residue; a piece's leading unassigned nodes go with its first run),
    and the runs are joined (`matches.concatenate`) in the order of their first numbers: a
    piece's alignment may span a gap that other pieces of the copy fill, so joining whole
    pieces interleaves them. On a simulated il2 homodimer a piece numbered 33-55 and 98-126 was
    followed by pieces 57-74 and 79-91, and closure, extending the chain on from 91, numbered
    residue 98 a second time. A piece's first run carries its score, so the scores sum as the
    pieces' do."""
    runs = []  # (first number, run)
    for piece in pieces:
        assigned = np.flatnonzero(piece.assigned)
        jumps = assigned[1:][np.diff(piece.residue_number[assigned]) != 1]
        bounds = [0, *jumps.tolist(), len(piece.nodes)]
        for start, end in zip(bounds[:-1], bounds[1:]):
            run = dataclasses.replace(piece.part(slice(start, end)),
                                      score=piece.score if start == 0 else 0.0)
            runs.append((int(run.residue_number[run.assigned][0]), run))
    return concatenate([run for _, run in sorted(runs, key=lambda item: item[0])])


def _lies_along(match: ChainMatch, copies: list[list[ChainMatch]], ca: np.ndarray) -> bool:
    """Whether half or more of ``match``'s residues lie within `ALONG_DISTANCE` of the Cα
    (``ca`` ``[N, 3]`` Å) of one of ``copies`` of its sequence."""
    points = ca[match.nodes]
    for pieces in copies:
        if pieces[0].sequence_index != match.sequence_index:
            continue
        held = ca[np.concatenate([piece.nodes for piece in pieces])]
        nearest = np.linalg.norm(points[:, None] - held[None], axis=-1).min(axis=1)
        if np.mean(nearest <= ALONG_DISTANCE) >= 0.5:
            return True
    return False


def assign_copies(matches: list[ChainMatch], ca: np.ndarray, aa_probs: np.ndarray,
                  confidence: np.ndarray, sequences: list[Sequence], *,
                  placed_last: Iterable[ChainMatch] = ()) -> list[ChainMatch]:
    """Group the threaded chains of ``matches`` into copies of their sequences (module
    docstring); ``ca`` ``[N, 3]`` Å, ``aa_probs`` ``[N, 20]`` and ``confidence`` ``[N]``
    (0-100) of all nodes. The chains of ``placed_last`` (some of ``matches``) are taken after
    all the others, each group strongest first: pieces another start of the build adds
    (`merging`), which must fit into the copies of the start they are added to rather than cut
    its chains to fit themselves, whatever their own E-values.

    Returns one chain per copy (copies in the order they were started: strongest chain
    first), then the unthreaded chains as they were, then the pieces cut off and the chains
    that lay along a copy (`_lies_along`), unthreaded."""
    ca = np.asarray(ca, dtype=np.float64)
    evidence = _Evidence(aa_probs, confidence, sequences)
    last = {id(m) for m in placed_last}
    threaded = sorted((m for m in matches if m.threaded and m.assigned.any()),
                      key=lambda m: (id(m) in last, m.evalue, -int(m.assigned.sum())))
    copies: list[list[ChainMatch]] = []
    leftover: list[ChainMatch] = []
    for match in threaded:
        best = None
        for pieces in copies:
            if pieces[0].sequence_index != match.sequence_index:
                continue
            placed = _place(match, pieces, ca, evidence)
            # fewest bits lost; among copies that cost the same (often none: the chain fits
            # a gap of each), the one whose junctions stretch least rather than the first
            if placed is not None and (best is None or (placed[0], placed[1].stretch)
                                       < (best[1][0], best[1][1].stretch)):
                best = (pieces, placed)
        if best is not None:
            pieces, (_, fit, spans) = best
            for index, (piece, span) in enumerate(zip(list(pieces), spans)):
                pieces[index] = _restrict(piece, span)
                leftover += _cut_off(piece, span, aa_probs)
            pieces[:] = [piece for piece in pieces if piece.assigned.any()]
            pieces.append(_restrict(match, fit))
            leftover += _cut_off(match, fit, aa_probs)
        elif _lies_along(match, copies, ca):
            leftover.append(ChainMatch.unthreaded(match.nodes, aa_probs, match.score, match.evalue))
        else:
            copies.append([match])
    copies, cut = _regroup([pieces for pieces in copies if pieces], ca, aa_probs)
    leftover += cut
    copies = _exchanged(copies, ca)
    joined = [_in_sequence_order(pieces) for pieces in copies]
    unthreaded = [m for m in matches if not (m.threaded and m.assigned.any())]
    return joined + unthreaded + leftover
