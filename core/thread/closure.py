"""Closing sequence gaps of threaded chains with untraced nodes, and extending their ends
(METHODS §4, after joining).

A threaded chain (`cryobuild.thread.search`) whose numbering jumps from residue ``n`` to
``n + k + 1`` lacks ``k`` residues. On the held-out simulated 3 Å maps of the build benchmark,
most residues missing from the final model were in such gaps, and most of those had a node: the
graph network had placed it, but chain linking broke there (a link probability or a predicted
C-N distance outside its gates) and the piece in between was too short to thread or to place
(`cryobuild.thread.placement` needs `MIN_CHAIN_LENGTH` residues and a 3-bit margin), often traced
backwards. Between two fixed ends and with a known count, the missing stretch is narrowly
determined in space, so `close_gaps` fills it from the *free* nodes -- the nodes of unthreaded
chains and the chain's own unassigned nodes between the two ends -- in either order:

* **Path** (`_best_path`). Each of the ``k`` positions holds a distinct free node or stays empty
  (the Cα detector misses ~5% of residues); at most half of them empty, and never two empty
  ones within two positions of each other. Consecutive nodes are a `STEP` apart (Cα-Cα, Å);
  nodes two positions apart `MIN_SKIP` to `MAX_SKIP` (no fold-back onto the residue before
  last, also against the chain's residues on either side of the gap).
* **Score.** The sum over the path's nodes of the log-odds (bits) of node ``x_t`` emitting the
  sequence's residue ``n + t`` (`cryobuild.thread.profiles.match_emissions`: residue-type
  probabilities mixed with the background by confidence, as in placement), plus `NODE_BITS`
  per node.
  Dynamic programming over pairs of consecutive nodes finds the best path; it is taken when its
  nodes' log-odds sum to at least `MIN_CLOSURE_BITS`.
* **Where.** Inside a chain, and between two chains of one sequence that
  `joining.join_matches` left apart, the last assigned residue of one numbered before the first
  of the other (`_gaps`); a closed gap then merges them. Gaps are closed smallest first, so a node serves the gap it fits
  most tightly; a node used once is no longer free.
* **Ends** (`_extension`). Then each confidently threaded chain's ends are continued outward
  through free nodes the same way, with one end open, as far as the path's score rises, when
  the path scores higher for the sequence's residues there than for the residues of nearly
  every other stretch of the sequence (`EXTENSION_DECOYS`).

* **Anchors** (`Anchor`). Residues that hold their sequence positions but are not nodes -- the
  kept residues flanking a stretch a region rebuild replaces -- take part as threaded chains of
  one residue each, so the stretch between them, or between one of them and a new threaded
  chain, is closed like any other gap (up to `MAX_ANCHORED_GAP` residues); they are left out
  of the result. A short stretch between kept residues cannot reach an E-value threading
  accepts even within its window, but its count and both ends are known: stretches of an
  EMD-2566 build moved off their density and rebuilt came back right for 0.50 of their
  residues without anchors and 0.97 with them (6 residues; 0.62 and 0.90 for 10; a scratch
  runner of the thirtieth stop, docs/results_log.md; over five maps, `python -m
  cryobuild.bench.rebuild`, README "Rebuilding a stretch that lies wrong").

What remains of a chain that gave up nodes stays in the result as unthreaded pieces (in the raw
model, not the final one). Empty positions left inside a chain get a new residue before the
build's last graph-network pass (`bridge_positions`, `cryobuild.pipeline`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..sequences import Sequence
from ..residues import CA_CA_DISTANCE, CA_REACH_SLACK, reach
from .matches import ChainMatch
from .placement import ANCHOR_EVALUE
from .profiles import background_frequencies, match_emissions

__all__ = [
    "ANCHOR_SCORE",
    "Anchor",
    "BRIDGE_DIRECTIONS",
    "EXTENSION_DECOYS",
    "EXTENSION_MAX_BEATEN",
    "EXTENSION_NODE_BITS",
    "MAX_ANCHORED_GAP",
    "MAX_CLOSURE_GAP",
    "MAX_EXTENSION",
    "MAX_SKIP",
    "MIN_CLOSURE_BITS",
    "MIN_FILLED",
    "MIN_SKIP",
    "NODE_BITS",
    "STEP",
    "bridge_positions",
    "close_gaps",
]

#: Longest gap (residues) that is closed.
MAX_CLOSURE_GAP = 12
#: ... with anchors (`Anchor`: a region rebuild, whose stretch is bounded in space by the kept
#: residues on either side). 30 closed no more of `bench.rebuild`'s 24-residue stretches.
MAX_ANCHORED_GAP = 20
#: Å: Cα-Cα distance of a step along the path. Consecutive Cα are 3.80 Å apart (trans
#: peptides; 2.9 Å for the rare cis ones); where linking broke, the predicted Cα are further
#: off: of the true neighbours left unlinked in the last round of 3 Å builds, 70% were 3.0-4.6
#: Å apart and 87% 2.6-5.2 Å (linked ones: 99% within 3.0-4.6 Å; scratch diagnostic). The
#: longest is ``reach(1)``, as every other stage numbers consecutive residues.
STEP = (2.8, reach(1))
#: Å: least and most distance from Cα(i) to Cα(i + 2). The Cα pseudo-bond angle is 80-150°
#: in proteins (tight turns to extended strands), which puts Cα(i + 2) 4.9-7.3 Å from Cα(i).
MIN_SKIP = 4.4
MAX_SKIP = 7.8
#: Bits: the least summed log-odds of an accepted path's nodes.
MIN_CLOSURE_BITS = 0.0
#: Bits a path gains per node it uses (so a node is preferred to an empty position unless its
#: residue type argues against it by more than this).
NODE_BITS = 2.0
#: Longest extension (residues) of a threaded chain's end (`_extension`). The builds measured in
#: docs/results_log.md extended by at most 12 (this said 16 then, but ``close_gaps`` capped
#: extensions at its ``max_gap`` as well, so 16 never took effect).
MAX_EXTENSION = 12
#: Bits an extension gains per node: ends are held at one side only, so a node must earn its
#: place by its residue type more than inside a gap.
EXTENSION_NODE_BITS = 1.0
#: An end's best path (`_extension`) is scored again for this many stretches of the sequence
#: drawn at other places (read in the extension's direction), through the same free nodes: the
#: path search picks the best of many node orders, so a path through nodes whose types are
#: vague scores well for almost any residues. It is taken only when at most
#: `EXTENSION_MAX_BEATEN` of these decoys score as high.
#: Why: at 3.5-4.8 Å the extensions of the last round numbered most of what they added wrongly
#: (single builds: ASC 1 of 37 residues right, Nav beta1 9 of 38, pneumolysin 1 of 18, T20S
#: alpha 0 of 10), and their nodes' types read blind to the sequence scored the wrong paths as
#: high as the right ones (+1 to +10 bits), so the types alone could not tell them apart. Of 40
#: decoys, 12-97% scored as high as each of those extensions; 0-5% for the right ones at 2.3-3.6
#: Å (MAVS, TMV), 12% for a 2-residue one on 3JB0 D (scratch, twenty-first stop,
#: docs/results_log.md).
EXTENSION_DECOYS = 40
EXTENSION_MAX_BEATEN = 0.1
#: Least fraction of a gap's positions that must hold a node. Empty positions (residues
#: without a node: the Cα detector misses ~5%) are at least two nodes apart (`_best_path`).
MIN_FILLED = 0.5


#: Bit score of an anchor's one-residue chain (`Anchor`): a chain merged with it keeps its own.
ANCHOR_SCORE = 0.0


@dataclasses.dataclass(frozen=True, eq=False)
class Anchor:
    """A residue that holds its place in a sequence without being a node (module docstring,
    "Anchors"): ``sequence_index`` into the sequences threaded, ``number`` its 1-based position
    there, ``ca`` ``[3]`` its Cα in Å. A chain it closes against takes `ANCHOR_SCORE` and
    `placement.ANCHOR_EVALUE` from it (the smaller E-value of the two), as if anchored on a
    threaded chain."""

    sequence_index: int
    number: int
    ca: np.ndarray


#: End states of the path search whose paths are checked for repeated nodes, best first.
MAX_TRIES = 50
# ``before`` of a path state whose node follows an empty position.
_AFTER_EMPTY = -2


def _best_path(start: int, end: int | None, count: int, pool: np.ndarray, ca: np.ndarray,
               scores: np.ndarray, outside: tuple[int, int], node_bits: float = NODE_BITS,
               fixed_ends: tuple[bool, bool] = (False, False),
               ) -> tuple[list[int], list[int], float, float] | None:
    """The best path through the ``count`` positions between node ``start`` and node ``end``,
    or, with ``end`` None, through the first positions after ``start`` (an open end: the path
    may stop at any of its nodes).

    Each position holds a distinct pool node or is left empty (a residue without a node); the
    node after an empty position is followed by another node, so empty positions are at least
    two nodes apart (a lone node between two gaps in the path is too loosely held). Between
    the Cα of consecutive nodes: a `STEP` (Å); of nodes on either side of one position (empty
    or not): `MIN_SKIP` to `MAX_SKIP` (no check of the upper bound when the middle one holds a
    node: the two steps bound it). A path scores the summed log-odds of its nodes plus
    ``node_bits`` per node.

    Parameters
    ----------
    pool : int ``[P]``
        Candidate nodes.
    ca : ``[N, 3]``
        Cα of all nodes, Å.
    scores : ``[count, P]``
        Log-odds (bits) of pool node ``p`` at path position ``t``.
    outside : (int, int)
        The chain's nodes of the residues just before ``start`` and just after ``end`` (-1
        where there is none), for the fold-back rule at the ends.
    node_bits : float
        Bits a path gains per node.
    fixed_ends : (bool, bool)
        Whether ``start`` and ``end`` are anchors (`Anchor`): the position next to an anchor
        holds a node, since nothing fills an empty one there later (`bridge_positions` fills
        those between two nodes of a chain, and an anchor leaves the chain).

    Returns
    -------
    (nodes, positions, log_odds, score) or None
        The path's nodes, their 0-based positions, their summed log-odds and the path's score;
        None when no path fits.
    """
    size = len(pool)
    open_end = end is None
    # pool, then start (size), end (size + 1) and the residues outside them (size + 2, + 3)
    before_start, after_end = outside
    ends = [start, start if open_end else end, max(before_start, 0), max(after_end, 0)]
    points = np.concatenate([ca[pool], ca[ends]])
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    steps = reach(np.arange(1, count + 2))
    # [count, P]: pool node p may sit at position t (0-based) as far as the two ends allow
    usable = distance[size, :size] <= steps[:count, None]
    if not open_end:
        usable &= distance[size + 1, :size] <= steps[count - 1::-1, None]
    step = (distance >= STEP[0]) & (distance <= STEP[1])
    # A state is (position, node, node one position before, or -1 where there is none, or
    # _AFTER_EMPTY); position -1 is the start, ``count`` the end. Its value: (score, log-odds,
    # previous state).
    origin = {(-1, size, size + 2 if before_start >= 0 else -1): (0.0, 0.0, None)}
    layers = [dict() for _ in range(count)]
    finished = []  # (score, log-odds, state) of states that reach the end
    for current in [origin] + layers:
        for (at, node, before), (score, odds, _) in current.items():
            # after an empty position (``before`` is _AFTER_EMPTY) the next one holds a node
            for jump in (1,) if before == _AFTER_EMPTY else (1, 2):
                target = at + jump
                if target > count or (open_end and target == count):
                    break
                if jump == 2 and ((at == -1 and fixed_ends[0]) or (target == count and fixed_ends[1])):
                    continue
                if target == count:
                    candidates = np.array([size + 1])
                else:
                    candidates = np.flatnonzero(usable[target])
                if jump == 1:
                    ok = step[node, candidates]
                    if before >= 0:
                        ok &= distance[before, candidates] >= MIN_SKIP
                else:
                    ok = (distance[node, candidates] >= MIN_SKIP) & (distance[node, candidates] <= MAX_SKIP)
                if target == count - 1 and after_end >= 0:
                    ok &= distance[size + 3, candidates] >= MIN_SKIP
                for candidate in candidates[ok]:
                    if target == count:
                        finished.append((score, odds, (at, node, before)))
                        continue
                    gain = scores[target, candidate]
                    key = (target, int(candidate), node if jump == 1 else _AFTER_EMPTY)
                    total = score + gain + node_bits
                    if total > layers[target].get(key, (-np.inf,))[0]:
                        layers[target][key] = (total, odds + gain, (at, node, before))
    if open_end:
        finished = [(value[0], value[1], key) for layer in layers for key, value in layer.items()]
    # The dynamic programme does not stop a path from coming back to a node it passed 4 or
    # more positions before (a square of 3.8 Å steps obeys the fold-back rule): the best
    # state whose path visits every node once wins.
    for score, odds, state in sorted(finished, key=lambda item: -item[0])[:MAX_TRIES]:
        nodes, positions = [], []
        while state[0] >= 0:
            nodes.append(int(pool[state[1]]))
            positions.append(state[0])
            state = layers[state[0]][state][2]
        if len(set(nodes)) == len(nodes):
            return nodes[::-1], positions[::-1], float(odds), float(score)
    return None


def _gaps(threaded: list[ChainMatch], max_gap: int) -> list[tuple[int, int, int]]:
    """The gaps to close, smallest first: (residue count, node before, node after).

    Inside a chain: consecutive assigned residues whose numbers jump. Between two chains of the
    same sequence: the last assigned residue of one and the first of another numbered after it
    (chains that `join_matches` left apart, e.g. because a wrongly extended end residue lay
    too far away).
    """
    gaps = []
    ends = []
    for match in threaded:
        assigned = np.flatnonzero(match.assigned)
        numbers = match.residue_number[assigned]
        nodes = match.nodes[assigned]
        jumps = np.diff(numbers) - 1
        for k in np.flatnonzero((jumps >= 1) & (jumps <= max_gap)):
            gaps.append((int(jumps[k]), int(nodes[k]), int(nodes[k + 1])))
        if len(assigned):
            ends.append((match.sequence_index, int(numbers[0]), int(numbers[-1]),
                         int(nodes[0]), int(nodes[-1])))
    for sequence, _, last, _, last_node in ends:
        for other, first, _, first_node, _ in ends:
            if other == sequence and 1 <= first - last - 1 <= max_gap:
                gaps.append((first - last - 1, last_node, first_node))
    return sorted(gaps)


def _extension(chains: list, index: int, side: int, threaded: list[ChainMatch], evalue: float,
               free: np.ndarray, ca: np.ndarray, log_odds: np.ndarray, sequences: list[Sequence],
               taken: list[np.ndarray], rng: np.random.Generator):
    """The free nodes that continue chain ``index`` outward from its first (``side`` -1) or
    last (+1) assigned residue, numbered on: (chain order, path nodes outward, their numbers
    and types, the chain's unassigned end nodes left out); None when nothing fits.

    Only chains threaded with ``evalue`` at most `placement.ANCHOR_EVALUE` are extended: a
    chance thread (E 0.005-0.02 for an unrelated sequence, `search.MAX_THREAD_EVALUE`)
    would otherwise grow by up to `MAX_EXTENSION` wrong residues (on EMD-2566, a 9-residue
    piece of a neighbouring molecule's density grew to 25).

    The numbering runs outward until the sequence ends, `MAX_EXTENSION` residues, a number
    ``taken`` by accepted residues, or a number that another threaded chain of the sequence
    holds within reach (its Cα no further than the
    number difference times `CA_CA_DISTANCE` plus `CA_REACH_SLACK`; farther away it is another
    copy). The best path (`_best_path` with an open end, `EXTENSION_NODE_BITS` per node) is
    taken when its score is positive, i.e. its nodes' log-odds average above
    ``-EXTENSION_NODE_BITS`` (requiring a non-negative log-odds sum instead lost 0.02 of Cα
    recall at 4 Å on the build benchmark), and when no more than `EXTENSION_MAX_BEATEN` of
    `EXTENSION_DECOYS` stretches of the sequence elsewhere (``rng`` draws them) score as high
    through the same pool.
    """
    chain = chains[index]
    order = list(chain)
    assigned = [at for at, node in enumerate(order) if chain[node][0] >= 0]
    if not assigned or evalue > ANCHOR_EVALUE:
        return None
    at = assigned[0] if side < 0 else assigned[-1]
    start = order[at]
    number = chain[start][0]
    sequence = sequences[threaded[index].sequence_index]
    limit = number - 1 if side < 0 else len(sequence) - number
    accepted = np.flatnonzero(taken[threaded[index].sequence_index]) + 1  # 1-based numbers
    beyond = (number - accepted) * -side
    if np.any(beyond > 0):
        limit = min(limit, int(beyond[beyond > 0].min()) - 1)
    for other, entries in enumerate(chains):
        same_sequence = threaded[other].sequence_index == threaded[index].sequence_index
        if entries is None or other == index or not same_sequence:
            continue
        for node, (held, _) in entries.items():
            gap = (number - held) * -side
            if held >= 0 and gap > 0 and np.linalg.norm(ca[node] - ca[start]) <= reach(gap):
                limit = min(limit, gap - 1)
    count = min(limit, MAX_EXTENSION)
    if count < 1:
        return None
    dangling = order[:at] if side < 0 else order[at + 1:]
    pool = np.array(sorted(set(np.flatnonzero(free).tolist()) | set(dangling)), dtype=np.int64)
    if len(pool) == 0:
        return None
    numbers = number + side * np.arange(1, count + 1)
    residues = sequence.aatype[numbers - 1]
    inner = _neighbour(chain, order, at, -side)
    pool_odds = log_odds[pool]  # [P, 21]

    def best_score(stretch: np.ndarray):
        """`_best_path` of ``stretch`` (residue types outward from ``start``) through ``pool``."""
        return _best_path(start, None, count, pool, ca, pool_odds[:, stretch].T, (inner, -1),
                          node_bits=EXTENSION_NODE_BITS)

    found = best_score(residues)
    if found is None or found[3] <= 0 or _beaten(found[3], best_score, sequence, numbers, side,
                                                   rng):
        return None
    path, positions = found[0], np.array(found[1])
    left = np.array([node for node in dangling if node not in path], dtype=np.int64)
    return order, path, numbers[positions], residues[positions], left


def _beaten(score: float, best_score, sequence: Sequence, numbers: np.ndarray, side: int,
            rng: np.random.Generator) -> bool:
    """Do more than `EXTENSION_MAX_BEATEN` of `EXTENSION_DECOYS` stretches of ``sequence``
    (as long as the extension's ``numbers``, from a random other place, read in its direction
    ``side``) reach ``score`` by ``best_score`` (the extension's search for a stretch of
    residue types)? With no other place in the sequence, no."""
    count = len(numbers)
    places = np.delete(np.arange(len(sequence) - count + 1), int(numbers.min()) - 1)
    if not len(places):
        return False
    allowed, reached = EXTENSION_MAX_BEATEN * EXTENSION_DECOYS, 0
    for place in rng.choice(places, EXTENSION_DECOYS):  # drawn at once: an early answer
        found = best_score(sequence.aatype[place: place + count][::side])  # leaves rng alike
        reached += found is not None and found[3] >= score
        if reached > allowed:
            return True
    return False


def _neighbour(chain: dict, order: list[int], at: int, side: int) -> int:
    """The node next to ``order[at]`` on ``side`` (-1 before, +1 after) if it holds the
    adjacent residue number, else -1."""
    other = at + side
    if 0 <= other < len(order) and chain[order[other]][0] == chain[order[at]][0] + side:
        return order[other]
    return -1


def close_gaps(
    matches: list[ChainMatch],
    ca: np.ndarray,
    aa_probs: np.ndarray,
    confidence: np.ndarray,
    sequences: list[Sequence],
    *,
    max_gap: int = MAX_CLOSURE_GAP,
    taken: list[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    anchors: tuple[Anchor, ...] = (),
) -> list[ChainMatch]:
    """Fill the numbering gaps of threaded chains with free nodes (module docstring).

    Parameters
    ----------
    matches : list of ChainMatch
        Joined chains (`cryobuild.thread.joining.join_matches`), threaded and unthreaded.
    ca : ``[N, 3]``
        Cα of all nodes, Å.
    aa_probs : ``[N, 20]``
        Residue-type probabilities of all nodes.
    confidence : ``[N]``
        Confidence of all nodes, 0-100.
    sequences : list of Sequence
        The sequences the matches refer to.
    max_gap : int
        Longest gap (residues) to close.
    taken : list of bool ``[len(sequences[s])]``, optional
        Positions held by accepted residues: never filled, and extensions stop before them.
    rng : numpy.random.Generator, optional
        Draws the decoy stretches that extensions are checked against (default: seeded 0).
    anchors : tuple of Anchor
        Residues outside the nodes that gaps are closed against too (module docstring).

    Returns
    -------
    list of ChainMatch
        The threaded chains in their order, gaps filled (a chain merged into the one before it
        is gone, and that one has the summed score and the smaller E-value), then the
        unthreaded chains and the pieces of them (and the unassigned nodes dropped from gaps)
        left after closing, each a run of consecutive nodes in its original order.
    """
    ca = np.asarray(ca, dtype=np.float64)
    node_count = len(ca)
    if anchors:
        ca, aa_probs, confidence, matches = _with_anchors(anchors, ca, aa_probs, confidence,
                                                           matches, sequences)
        max_gap = max(max_gap, MAX_ANCHORED_GAP)
    if taken is None:
        taken = [np.zeros(len(sequence), dtype=bool) for sequence in sequences]
    rng = np.random.default_rng(0) if rng is None else rng
    log_odds = np.log2(match_emissions(aa_probs, confidence) / background_frequencies())
    log_odds = np.concatenate([log_odds, np.zeros((len(log_odds), 1))], axis=1)  # X scores 0
    free = np.zeros(len(ca), dtype=bool)
    for match in matches:
        if not match.threaded:
            free[match.nodes] = True
    threaded = [m for m in matches if m.threaded]
    # Mutable threaded chains: node -> (residue number, type) in chain order; None once merged
    # into another.
    chains = [dict(zip(m.nodes.tolist(), zip(m.residue_number.tolist(), m.aatype.tolist())))
              for m in threaded]
    owner = {node: index for index, m in enumerate(threaded) for node in m.nodes.tolist()}
    scores = [m.score for m in threaded]
    evalues = [m.evalue for m in threaded]
    dropped = []  # unassigned nodes a chain gave up, per closure or extension

    def settle(path: list[int], left: np.ndarray) -> None:
        """Book a closure's or extension's ``path`` as used and the ``left`` nodes as free."""
        free[path] = False
        free[left] = True
        dropped.append(left)

    for count, start, end in _gaps(threaded, max_gap):
        a, b = owner[start], owner[end]
        head, tail = list(chains[a]), list(chains[b])
        i, j = head.index(start), tail.index(end)
        between = head[i + 1:j] if a == b else head[i + 1:] + tail[:j]
        entries = {**chains[a], **chains[b]}
        if (a == b and j <= i) or any(entries[node][0] >= 0 for node in between):
            continue
        pool = np.array(sorted(set(np.flatnonzero(free).tolist()) | set(between)), dtype=np.int64)
        span = (np.linalg.norm(ca[pool] - ca[start], axis=1)
                + np.linalg.norm(ca[pool] - ca[end], axis=1))
        pool = pool[span <= (count + 1) * CA_CA_DISTANCE + 2 * CA_REACH_SLACK]
        if len(pool) == 0:
            continue
        first = chains[a][start][0]
        if np.any(taken[threaded[a].sequence_index][first: first + count]):
            continue
        residues = sequences[threaded[a].sequence_index].aatype[first: first + count]  # first+1..
        outside = (_neighbour(chains[a], head, i, -1), _neighbour(chains[b], tail, j, +1))
        found = _best_path(start, end, count, pool, ca, log_odds[pool][:, residues].T, outside,
                           fixed_ends=(start >= node_count, end >= node_count))
        if found is None or found[2] < MIN_CLOSURE_BITS or len(found[0]) < MIN_FILLED * count:
            continue
        path, positions = found[0], found[1]
        left = np.array([node for node in between if node not in path], dtype=np.int64)
        settle(path, left)
        entries.update({node: (first + 1 + t, int(residues[t])) for t, node in zip(positions, path)})
        merged = head[: i + 1] + path + tail[j:]
        chains[a] = {node: entries[node] for node in merged}
        if b != a:
            chains[b] = None
            scores[a] += scores[b]
            evalues[a] = min(evalues[a], evalues[b])
        for node in left:
            del owner[node]
        owner.update({node: a for node in merged})

    for index in sorted(range(len(chains)), key=lambda k: -len(chains[k] or ())):
        for side in (-1, +1):
            if chains[index] is None:
                continue
            found = _extension(chains, index, side, threaded, evalues[index], free, ca, log_odds,
                               sequences, taken, rng)
            if found is None:
                continue
            order, path, numbers, types, left = found
            settle(path, left)
            entries = dict(chains[index])
            entries.update({node: (int(n), int(t)) for node, n, t in zip(path, numbers, types)})
            gone = set(left.tolist())
            kept = [node for node in order if node not in gone]
            merged = path[::-1] + kept if side < 0 else kept + path
            chains[index] = {node: entries[node] for node in merged}

    result = []
    for match, chain, score, evalue in zip(threaded, chains, scores, evalues):
        if chain is None:
            continue
        numbers, types = zip(*chain.values())
        result.append(ChainMatch(nodes=np.array(list(chain), dtype=np.int64),
                                 sequence_index=match.sequence_index,
                                 residue_number=np.array(numbers), aatype=np.array(types),
                                 score=score, evalue=evalue))
    for match in [m for m in matches if not m.threaded] + dropped:
        nodes = match.nodes if isinstance(match, ChainMatch) else match
        keep = free[nodes]
        if keep.all() and isinstance(match, ChainMatch):
            result.append(match)
            continue
        # Starts and ends (exclusive) of the runs of nodes still free.
        edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            result.append(ChainMatch.unthreaded(nodes[a:b], aa_probs))
    return _without_anchors(result, node_count) if anchors else result


def _with_anchors(anchors: tuple[Anchor, ...], ca: np.ndarray, aa_probs: np.ndarray,
                  confidence: np.ndarray, matches: list[ChainMatch], sequences: list[Sequence]):
    """The nodes' arrays with the anchors appended as nodes (their sequence's residue type
    certain, confidence 100), and ``matches`` with a one-residue threaded chain for each."""
    count = len(ca)
    types = np.array([sequences[a.sequence_index].aatype[a.number - 1] for a in anchors])
    probs = np.zeros((len(anchors), aa_probs.shape[1]), dtype=aa_probs.dtype)
    known = types < probs.shape[1]
    probs[known, types[known]] = 1.0
    probs[~known] = 1.0 / probs.shape[1]  # X: no type
    chains = [ChainMatch(np.array([count + k]), a.sequence_index, np.array([a.number]),
                         np.array([types[k]]), ANCHOR_SCORE, ANCHOR_EVALUE)
              for k, a in enumerate(anchors)]
    return (np.concatenate([ca, np.stack([np.asarray(a.ca, dtype=np.float64) for a in anchors])]),
            np.concatenate([aa_probs, probs]),
            np.concatenate([confidence, np.full(len(anchors), 100.0, dtype=confidence.dtype)]),
            list(matches) + chains)


def _without_anchors(matches: list[ChainMatch], nodes: int) -> list[ChainMatch]:
    """``matches`` without the anchors' nodes (indices from ``nodes`` on); a chain left empty
    goes."""
    result = []
    for match in matches:
        keep = match.nodes < nodes
        if keep.all():
            result.append(match)
        elif keep.any():
            result.append(ChainMatch(match.nodes[keep], match.sequence_index,
                                     match.residue_number[keep], match.aatype[keep], match.score,
                                     match.evalue))
    return result


#: Points tried around the circle of possible Cα positions of a bridging residue.
BRIDGE_DIRECTIONS = 24
#: Å: least distance from a bridging residue's Cα to other Cα (non-adjacent Cα in proteins
#: are rarely closer than 4 Å).
BRIDGE_CLEARANCE = 3.5
#: Å: N-Cα and Cα-C bond lengths (Engh & Huber 1991) of a bridging residue's start.
BRIDGE_N_CA, BRIDGE_CA_C = 1.46, 1.52


def bridge_positions(before: np.ndarray, after: np.ndarray, density,
                     others: np.ndarray | None = None) -> np.ndarray:
    """N, Cα and C (Å, ``[M, 3, 3]``) of one residue between each pair of Cα two residues apart.

    The residue between Cα ``before[m]`` and ``after[m]`` (``[M, 3]``, Å; `MIN_SKIP` to
    `MAX_SKIP` apart) lies on the circle of points `CA_CA_DISTANCE` from both; its Cα is put at
    the densest of `BRIDGE_DIRECTIONS` points on that circle (``density``: a `DensityMap`) that
    are at least `BRIDGE_CLEARANCE` Å from the Cα ``others`` (``[K, 3]``: the model's), its
    N `BRIDGE_N_CA` Å towards the Cα before it and its C `BRIDGE_CA_C` Å towards the one after
    (so its frame points along the chain). The graph network then refines it like any node
    (`cryobuild.pipeline`'s polish pass): these are the empty positions closure leaves where
    the Cα detector missed a residue.
    """
    before = np.asarray(before, dtype=np.float64).reshape(-1, 3)
    after = np.asarray(after, dtype=np.float64).reshape(-1, 3)
    axis = after - before
    half = np.linalg.norm(axis, axis=1, keepdims=True) / 2
    axis = axis / np.maximum(2 * half, 1e-9)
    radius = np.sqrt(np.maximum(CA_CA_DISTANCE**2 - half**2, 0.0))
    # two unit vectors perpendicular to each axis
    helper = np.where(np.abs(axis[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    first = np.cross(axis, helper)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    second = np.cross(axis, first)
    angles = np.linspace(0, 2 * np.pi, BRIDGE_DIRECTIONS, endpoint=False)
    # [M, D, 3] candidate points
    ring = ((before + after) / 2)[:, None] + radius[:, None] * (
        np.cos(angles)[None, :, None] * first[:, None] + np.sin(angles)[None, :, None] * second[:, None])
    values = density.interpolate(ring.reshape(-1, 3)).reshape(len(ring), BRIDGE_DIRECTIONS)
    if others is not None and len(others):
        from scipy.spatial import cKDTree

        nearest, _ = cKDTree(others).query(ring.reshape(-1, 3))
        crowded = (nearest < BRIDGE_CLEARANCE).reshape(values.shape)
        # where every point is crowded, the densest is taken all the same
        values = np.where(crowded & ~crowded.all(axis=1, keepdims=True), -np.inf, values)
    ca = ring[np.arange(len(ring)), np.argmax(values, axis=1)]

    def towards(target, length):
        direction = target - ca
        return ca + length * direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)

    return np.stack([towards(before, BRIDGE_N_CA), ca, towards(after, BRIDGE_CA_C)], axis=1)
