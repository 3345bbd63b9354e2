"""Link predicted residues into chains (METHODS §4, post-processing).

The graph network predicts, for each candidate residue (node) ``i`` of ``N``, its backbone
(N, CA, C), residue-type probabilities, a confidence, an existence probability, and sparse
next-residue link probabilities: ``edge_prob[e]`` is the probability that ``edge_dst[e]`` is the
residue after ``edge_src[e]`` in a chain, i.e. that C(src) and N(dst) form a peptide bond.
`ResiduePredictions` holds exactly these arrays.

`link_chains` turns them into chains in three steps:

1. **Remove duplicates.** Nodes with ``existence < min_existence`` (default `MIN_EXISTENCE`)
   are dropped. Among the rest,
   in order of decreasing confidence, a node is kept unless its CA lies within
   `DUPLICATE_CA_DISTANCE` of a node kept before it (a more confident copy of the same residue).
2. **Candidate links.** A link ``i -> j`` between kept nodes is a candidate when
   ``edge_prob >= MIN_LINK_PROB``, the would-be peptide bond C(i)-N(j) is at most
   `MAX_PEPTIDE_BOND` long and the Cα-Cα distance at most `MAX_CA_CA`.
3. **Greedy selection.** Candidates are taken in order of increasing cost
   ``-ln(edge_prob) + BOND_STRAIN_WEIGHT * max(0, bond - PEPTIDE_BOND)`` (a probable link with
   a near-ideal bond first); a link is accepted when ``i`` has no successor yet, ``j`` no
   predecessor, and ``i`` and ``j`` are not already in the same chain (so there are no
   cycles).
4. **Links against the predicted direction.** The chains' ends are then joined without regard
   to direction: a pair of nodes is a candidate when the link is probable either way
   (``max(p(i -> j), p(j -> i)) >= MIN_LINK_PROB``) and their Cα are at most `MAX_CA_CA` apart,
   taken in order of increasing ``-ln p + CA_STRAIN_WEIGHT * |Cα-Cα - CA_CA|``, accepted when
   both nodes are chain ends of different chains and step 3 gave the node the link would leave
   (the more probable direction's ``i``) no successor: a competing successor of a linked node
   is not a chain running the other way. Each chain then runs the way its links'
   probabilities say (`ORIENTATION_FLOOR`), and `runs_against` tells which of its nodes' frames
   point the other way.

Why step 4: below about 4 Å the graph network cannot tell a residue's direction. On the real
maps of 4.3-5 Å (``python -m cryobuild.bench.trace``: bundled weights, the last round's linking
input) a node's C - N pointed towards the next deposited residue for 46-62% of the nodes, so
step 3's links, which need C(i) next to N(j), broke wherever two neighbours' guesses disagreed.
Step 4 took the residues in chains of 10 or more from 269 to 349 of 1,046 (γ-secretase), 96 to
140 of 425 (pneumolysin) and 46 to 83 of 464 (3LOS), with more deposited neighbours linked
(γ-secretase 471 -> 506 of 691 pairs), and left the maps of 1.75-3.2 Å nearly as they were
(3JB0 D 253 -> 256 of 278). Which way such a chain runs is still a coin toss there (251 of
γ-secretase's 506 linked pairs run against the deposited chain): the sequence, not the trace,
would have to tell. (A scratch variant that joined any two chain ends, even where step 3 had
given the leaving node a successor, joined a few more but also a competing successor to a linked
node, which `test_a_probable_link_beats_a_shorter_improbable_one` forbids.)

Why not ModelAngelo's rule (links with probability >= 0.5 and a bond <= 2.1 Å, shortest bond
first): our graph network's backbone atoms are each ~0.5-1 Å off, so the predicted bond between
truly consecutive residues measured a median 1.9-3.0 Å (rounds 3 and 1, held-out simulated 3 Å
maps, step-9,800 network), and their link probability a median 0.54-0.99. The 2.1 Å gate cut
a fifth to a half of the true links and left most residues in chains too short to thread. The
gates and the cost here were chosen on 4 held-out structures at 3 and 4 Å with the step-9,800
network (final sequence recall 0.43 -> 0.44 at 3 Å, 0.10 -> 0.21 at 4 Å). With the step-21,428
network (`python -m cryobuild.bench.build` cases, old rule -> this one): final Cα recall 0.67 ->
0.71 at 3 Å, 0.47 -> 0.56 at 4 Å, 0.62 -> 0.63 on EMD-2566, 0.74 -> 0.71 on apoferritin;
sequence recall 0.65 -> 0.65, 0.43 -> 0.46, 0.53 -> 0.54, 0.67 -> 0.69; precision 0.96 -> 0.92,
0.96 -> 0.93, 0.97 -> 0.95, 1.00 -> 0.99. The better the network, the smaller the gain.

Each chain is returned as an int64 array of node indices in N -> C order; every kept node is in
exactly one chain (possibly a chain of one residue). `chain_ids` gives chains their names.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from importlib import resources

import numpy as np

__all__ = [
    "MIN_EXISTENCE",
    "DUPLICATE_CA_DISTANCE",
    "MIN_LINK_PROB",
    "MAX_PEPTIDE_BOND",
    "MAX_CA_CA",
    "PEPTIDE_BOND",
    "BOND_STRAIN_WEIGHT",
    "CA_CA",
    "CA_STRAIN_WEIGHT",
    "ORIENTATION_FLOOR",
    "SHAPE_WINDOW",
    "SHAPE_MAX_RMS",
    "SHAPE_STEP",
    "FRAGMENT_COUNT",
    "CA_FRAGMENTS_RESOURCE",
    "ResiduePredictions",
    "remove_duplicates",
    "link_chains",
    "runs_against",
    "load_ca_fragments",
    "superposed_squares",
    "shape_rms",
    "relink_by_shape",
    "chain_ids",
]

#: Nodes whose existence probability is below this are not residues. The existence head is
#: underconfident: on the simulated 3 Å il2 map (SNR 3, graph network at step 9,800) it keeps
#: 0.91 / 0.97 / 0.98 of the nodes on a true Cα in rounds 1 / 2 / 3 at 0.5, and 0.98 / 1.00 /
#: 1.00 at 0.15, while most nodes it should drop score above 0.5 anyway (duplicate removal and
#: linking drop those).
MIN_EXISTENCE = 0.15
#: Å: a node whose CA is closer than this to a more confident node's CA is a duplicate
#: (consecutive CAs are 3.8 Å apart, so real neighbours are never this close).
DUPLICATE_CA_DISTANCE = 1.5
#: Links with a lower next-residue probability are ignored (ModelAngelo: 0.5; see the module
#: docstring for why lower).
MIN_LINK_PROB = 0.3
#: Å, longest C(i)-N(j) distance of a link (ModelAngelo: 2.1 Å).
MAX_PEPTIDE_BOND = 3.0
#: Å, longest Cα(i)-Cα(j) distance of a link: consecutive Cα are 3.80 Å apart (trans peptide;
#: 2.9 Å cis), plus room for the predicted positions' error.
MAX_CA_CA = 4.5
#: Å, the length of a peptide C-N bond (Engh & Huber 1991: 1.329 Å).
PEPTIDE_BOND = 1.33
#: Cost per Å that a link's bond is longer than `PEPTIDE_BOND` (in units of -ln probability:
#: 2 Å of strain weigh as much as a probability of 1/e).
BOND_STRAIN_WEIGHT = 0.5
#: Å, the Cα-Cα distance of consecutive residues (trans peptide).
CA_CA = 3.80
#: Cost per Å that a direction-free link's Cα-Cα distance is off `CA_CA` (step 4; -ln
#: probability units: 1 Å off weighs as much as a probability of 1/e).
CA_STRAIN_WEIGHT = 1.0
#: Link probabilities below this count as this when a chain's direction is weighed (a link the
#: network did not list either way, e.g. one against every prediction, is evidence of -ln 1e-3).
ORIENTATION_FLOOR = 1e-3
#: Nodes in a window of a chain that `relink_by_shape` fits to known Cα shapes.
SHAPE_WINDOW = 6
#: Å: rms within which a window fits a known shape. The best fit of a window of 6 nodes whose
#: links all join consecutive deposited residues has a median rms of 0.12-0.27 Å on MAVS, T20S α
#: and pneumolysin, of a window holding a wrong link 0.40-0.49 Å (docs/results_log.md,
#: thirty-sixth stop; 0.35 gave the same builds).
SHAPE_MAX_RMS = 0.45
#: Å: least and most Cα-Cα distance of two pieces' ends that `relink_by_shape` may join.
SHAPE_STEP = (2.8, 4.6)
#: Known shapes: windows of the training structures (`cryobuild.train.ca_fragments`), each also
#: read backwards. 1,000 gave the builds of 5,000 (docs/results_log.md, thirty-sixth stop).
FRAGMENT_COUNT = 1000
CA_FRAGMENTS_RESOURCE = "ca_fragments.json"
#: Windows fitted at once (memory: about this times 600 pairs of the packaged fragments, each
#: two windows and a covariance, 45 float64).
_SHAPE_BATCH = 512

#: Chain names that fit PDB's one-character chain column, in the order they are used.
_SINGLE_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# Backbone atom rows of ``ResiduePredictions.backbone``.
_N, _CA, _C = 0, 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class ResiduePredictions:
    """Per-node outputs of the graph network that post-processing uses.

    Attributes
    ----------
    backbone : float64 ``[N, 3, 3]``
        Positions in Å of the atoms N, CA, C (axis 1, in that order) of each node.
    aa_probs : float64 ``[N, 20]``
        Residue-type probabilities in ``residues.AA_ORDER``; rows sum to 1.
    confidence : float64 ``[N]``
        Confidence, 0-100.
    existence : float64 ``[N]``
        Probability that the node is a real residue, 0-1.
    edge_src, edge_dst : int64 ``[E]``
        Candidate links: node ``edge_dst[e]`` may be the residue after ``edge_src[e]``.
    edge_prob : float64 ``[E]``
        Probability of each link, 0-1.

    Instances compare by identity (``eq=False``).
    """

    backbone: np.ndarray
    aa_probs: np.ndarray
    confidence: np.ndarray
    existence: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_prob: np.ndarray

    def __post_init__(self):
        backbone = np.asarray(self.backbone, dtype=np.float64)
        num = backbone.shape[0] if backbone.ndim == 3 else -1
        if backbone.shape != (num, 3, 3):
            raise ValueError(f"backbone must have shape [N, 3, 3], got {backbone.shape}")
        aa_probs = np.asarray(self.aa_probs, dtype=np.float64)
        if aa_probs.shape != (num, 20):
            raise ValueError(f"aa_probs must have shape [{num}, 20], got {aa_probs.shape}")
        per_node = {
            "confidence": np.asarray(self.confidence, dtype=np.float64),
            "existence": np.asarray(self.existence, dtype=np.float64),
        }
        for name, array in per_node.items():
            if array.shape != (num,):
                raise ValueError(f"{name} must have shape [{num}], got {array.shape}")
        src = np.asarray(self.edge_src, dtype=np.int64)
        dst = np.asarray(self.edge_dst, dtype=np.int64)
        prob = np.asarray(self.edge_prob, dtype=np.float64)
        if src.ndim != 1 or src.shape != dst.shape or src.shape != prob.shape:
            raise ValueError(
                f"edge_src, edge_dst and edge_prob must be [E] arrays of one length, got "
                f"{src.shape}, {dst.shape}, {prob.shape}"
            )
        if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= num):
            raise ValueError(f"edge node indices must be in 0..{num - 1}")
        if not (np.all(np.isfinite(backbone)) and np.all(np.isfinite(aa_probs))):
            raise ValueError("backbone and aa_probs must be finite")
        object.__setattr__(self, "backbone", backbone)
        object.__setattr__(self, "aa_probs", aa_probs)
        object.__setattr__(self, "confidence", per_node["confidence"])
        object.__setattr__(self, "existence", per_node["existence"])
        object.__setattr__(self, "edge_src", src)
        object.__setattr__(self, "edge_dst", dst)
        object.__setattr__(self, "edge_prob", prob)

    @property
    def num_nodes(self) -> int:
        return self.backbone.shape[0]


def remove_duplicates(predictions: ResiduePredictions,
                      min_existence: float = MIN_EXISTENCE) -> np.ndarray:
    """Which nodes are residues: existent, and not a less confident copy of another node.

    Parameters
    ----------
    predictions : ResiduePredictions
        The ``N`` nodes.
    min_existence : float
        Nodes with a lower existence probability are not residues.

    Returns
    -------
    bool ``[N]``
        True for kept nodes (see step 1 of the module docstring).
    """
    from scipy.spatial import cKDTree

    candidates = np.flatnonzero(predictions.existence >= min_existence)
    # Most confident first; a stable sort keeps ties in node order.
    candidates = candidates[np.argsort(-predictions.confidence[candidates], kind="stable")]
    kept = np.zeros(predictions.num_nodes, dtype=bool)
    suppressed = np.zeros(predictions.num_nodes, dtype=bool)
    ca = predictions.backbone[candidates, _CA]
    neighbours = cKDTree(ca).query_ball_point(ca, DUPLICATE_CA_DISTANCE)
    for rank, node in enumerate(candidates):
        if suppressed[node]:
            continue
        kept[node] = True
        suppressed[candidates[neighbours[rank]]] = True
    return kept


def _candidate_links(
    predictions: ResiduePredictions, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate links between kept nodes, in the order the greedy selection takes them.

    Returns
    -------
    src, dst : int64 ``[K]``
        Links sorted by cost (ascending, see the module docstring).
    """
    src, dst, prob = predictions.edge_src, predictions.edge_dst, predictions.edge_prob
    usable = kept[src] & kept[dst] & (src != dst) & (prob >= MIN_LINK_PROB)
    src, dst, prob = src[usable], dst[usable], prob[usable]
    backbone = predictions.backbone
    # [K, 3] => [K] would-be peptide bond C(src)-N(dst) and Cα-Cα distance, Å
    bond = np.linalg.norm(backbone[src, _C] - backbone[dst, _N], axis=-1)
    ca_ca = np.linalg.norm(backbone[src, _CA] - backbone[dst, _CA], axis=-1)
    close = (bond <= MAX_PEPTIDE_BOND) & (ca_ca <= MAX_CA_CA)
    src, dst, prob, bond = src[close], dst[close], prob[close], bond[close]
    cost = -np.log(prob) + BOND_STRAIN_WEIGHT * np.maximum(bond - PEPTIDE_BOND, 0.0)
    order = np.argsort(cost, kind="stable")
    return src[order], dst[order]


def _undirected_candidates(
    predictions: ResiduePredictions, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Step 4's candidate pairs ``i -> j`` (the more probable direction of each), sorted by
    cost (module docstring)."""
    src, dst, prob = predictions.edge_src, predictions.edge_dst, predictions.edge_prob
    usable = kept[src] & kept[dst] & (src != dst)
    low, high = np.minimum(src, dst)[usable], np.maximum(src, dst)[usable]
    # Each pair's most probable direction: sort by pair, then probability, and keep the last.
    key = low * predictions.num_nodes + high
    order = np.lexsort((prob[usable], key))
    last = np.append(key[order][1:] != key[order][:-1], True)[:len(order)]
    best = order[last]
    src, dst, prob = src[usable][best], dst[usable][best], prob[usable][best]
    ca = predictions.backbone[:, _CA]
    ca_ca = np.linalg.norm(ca[src] - ca[dst], axis=-1)
    close = (prob >= MIN_LINK_PROB) & (ca_ca <= MAX_CA_CA)
    src, dst, prob, ca_ca = src[close], dst[close], prob[close], ca_ca[close]
    cost = -np.log(prob) + CA_STRAIN_WEIGHT * np.abs(ca_ca - CA_CA)
    order = np.argsort(cost, kind="stable")
    return src[order], dst[order]


def _oriented(path: list[int], prob: dict[tuple[int, int], float]) -> np.ndarray:
    """``path`` (node indices along a chain) in the direction its links' probabilities favour:
    the sum over its links of ``ln p(a -> b) - ln p(b -> a)`` (`ORIENTATION_FLOOR` for a
    probability below it), reversed when negative."""
    evidence = sum(
        math.log(max(prob.get((a, b), 0.0), ORIENTATION_FLOOR))
        - math.log(max(prob.get((b, a), 0.0), ORIENTATION_FLOOR))
        for a, b in zip(path[:-1], path[1:])
    )
    return np.array(path if evidence >= 0 else path[::-1], dtype=np.int64)


def link_chains(predictions: ResiduePredictions, min_existence: float = MIN_EXISTENCE, *,
                direction_free: bool = True) -> list[np.ndarray]:
    """Link the predicted residues into chains (see the module docstring).

    Parameters
    ----------
    predictions : ResiduePredictions
        The ``N`` nodes and their candidate links.
    min_existence : float
        Passed to `remove_duplicates`.
    direction_free : bool
        Run step 4 (False only to measure what it adds: ``bench.trace``).

    Returns
    -------
    list of int64 ``[L_c]``
        One array of node indices per chain in N -> C order (the direction its links favour;
        `runs_against` tells which nodes' frames point the other way), longest chain first
        (ties: the chain with the smaller first node index first). Every node kept by
        `remove_duplicates` is in exactly one chain.
    """
    kept = remove_duplicates(predictions, min_existence)
    num = predictions.num_nodes
    neighbours: list[list[int]] = [[] for _ in range(num)]
    # Union-find over chains: a link inside one chain would close a cycle.
    root = np.arange(num)

    def find(node: int) -> int:
        while root[node] != node:
            root[node] = root[root[node]]
            node = root[node]
        return node

    def join(i: int, j: int) -> bool:
        root_i, root_j = find(i), find(j)
        if root_i == root_j:
            return False
        neighbours[i].append(j)
        neighbours[j].append(i)
        root[root_j] = root_i
        return True

    # Step 3: directed links, one successor and one predecessor per node.
    has_successor = np.zeros(num, dtype=bool)
    has_predecessor = np.zeros(num, dtype=bool)
    src, dst = _candidate_links(predictions, kept)
    for i, j in zip(src.tolist(), dst.tolist()):
        if not (has_successor[i] or has_predecessor[j]) and join(i, j):
            has_successor[i] = has_predecessor[j] = True
    # Step 4: direction-free links between chain ends.
    if direction_free:
        candidates = _undirected_candidates(predictions, kept)
        for i, j in zip(*(side.tolist() for side in candidates)):
            if not has_successor[i] and len(neighbours[i]) < 2 and len(neighbours[j]) < 2:
                join(i, j)

    prob: dict[tuple[int, int], float] = {}
    for a, b, p in zip(predictions.edge_src.tolist(), predictions.edge_dst.tolist(),
                       predictions.edge_prob.tolist()):
        prob[a, b] = max(prob.get((a, b), 0.0), p)
    chains, placed = [], np.zeros(num, dtype=bool)
    for start in np.flatnonzero(kept).tolist():
        if placed[start] or len(neighbours[start]) == 2:
            continue
        path = [start]
        placed[start] = True
        while True:
            following = [n for n in neighbours[path[-1]] if not placed[n]]
            if not following:
                break
            path.append(following[0])
            placed[following[0]] = True
        chains.append(_oriented(path, prob))
    chains.sort(key=lambda chain: (-len(chain), chain[0]))
    return chains


def runs_against(backbone: np.ndarray, chains: list[np.ndarray]) -> np.ndarray:
    """bool ``[N]``: the nodes whose predicted direction (C - N of ``backbone`` ``[N, 3, 3]``,
    Å) points against their chain's (Cα of the next residue minus the previous one's; at an
    end, the one neighbour's). Nodes in no chain of two or more are False."""
    backbone = np.asarray(backbone, dtype=np.float64)
    against = np.zeros(len(backbone), dtype=bool)
    for chain in chains:
        if len(chain) < 2:
            continue
        ca = backbone[chain, _CA]
        along = np.empty_like(ca)
        along[1:-1] = ca[2:] - ca[:-2]
        along[0], along[-1] = ca[1] - ca[0], ca[-1] - ca[-2]
        own = backbone[chain, _C] - backbone[chain, _N]
        against[chain] = (own * along).sum(-1) < 0
    return against


def chain_ids(count: int) -> list[str]:
    """``count`` distinct chain names valid in PDB files where possible.

    The first 62 are single characters ``A-Z``, ``a-z``, ``0-9``; then two characters from the
    same alphabet (``AA``, ``AB``, ..., 62 + 62**2 = 3,906 names in all). PDB format holds up to
    two characters (mmCIF any number).
    """
    alphabet = _SINGLE_IDS
    limit = len(alphabet) + len(alphabet) ** 2
    if not 0 <= count <= limit:
        raise ValueError(f"can name 0..{limit} chains, asked for {count}")
    names = list(alphabet[:count])
    for index in range(max(0, count - len(alphabet))):
        names.append(alphabet[index // len(alphabet)] + alphabet[index % len(alphabet)])
    return names


@functools.lru_cache(maxsize=1)
def load_ca_fragments() -> np.ndarray:
    """float64 ``[2F, SHAPE_WINDOW, 3]``: the packaged known Cα shapes (Å, each centred), each
    forwards and backwards."""
    text = resources.files("cryobuild").joinpath(CA_FRAGMENTS_RESOURCE).read_text(encoding="utf-8")
    fragments = np.asarray(json.loads(text)["fragments"], dtype=np.float64)
    return np.concatenate([fragments, fragments[:, ::-1]])


def superposed_squares(moving: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Å² ``[...]``: the least sum of squared distances between ``moving`` and ``target`` (``[...,
    W, 3]``, Å, broadcast against each other) after the rigid motion that best superposes one on
    the other (Kabsch 1976, reflections excluded; both centred here)."""
    moving = moving - moving.mean(axis=-2, keepdims=True)
    target = target - target.mean(axis=-2, keepdims=True)
    covariance = np.einsum("...wi,...wj->...ij", moving, target)
    singular = np.linalg.svd(covariance, compute_uv=False)
    singular[..., 2] *= np.sign(np.linalg.det(covariance))
    return (moving**2).sum((-2, -1)) + (target**2).sum((-2, -1)) - 2 * singular.sum(-1)


def shape_rms(windows: np.ndarray, fragments: np.ndarray | None = None, *,
              within: float = SHAPE_MAX_RMS) -> np.ndarray:
    """Å ``[M]``: for each window ``[M, W, 3]`` of Cα (Å), the rms of its best fit to any of the
    ``fragments`` ``[F, W, 3]`` (centred; `load_ca_fragments` by default) after the optimal
    rigid superposition (`superposed_squares`), where that is ``within`` Å or less; ``inf``
    where no fragment fits that well.

    Only the pairs that can fit are superposed: the rms of a fit is at least the difference of
    the two radii of gyration (the cross term of the squares is at most the product of the
    norms), which leaves about 30 % of the pairs of the packaged fragments at 0.45 Å."""
    fragments = load_ca_fragments() if fragments is None else fragments
    windows = np.asarray(windows, dtype=np.float64)
    windows = windows - windows.mean(axis=1, keepdims=True)
    width = windows.shape[1]
    gyration = np.sqrt((windows**2).sum((1, 2)) / width)
    fragment_gyration = np.sqrt((fragments**2).sum((1, 2)) / width)
    best = np.full(len(windows), np.inf)
    for first in range(0, len(windows), _SHAPE_BATCH):
        block = slice(first, first + _SHAPE_BATCH)
        window, fragment = np.nonzero(
            np.abs(gyration[block, None] - fragment_gyration[None]) <= within)
        window += first
        np.minimum.at(best, window, superposed_squares(fragments[fragment], windows[window]))
    rms = np.sqrt(np.maximum(best, 0.0) / width)
    return np.where(rms <= within, rms, np.inf)


def relink_by_shape(chains: list[np.ndarray], ca: np.ndarray, *,
                    max_rms: float = SHAPE_MAX_RMS) -> list[np.ndarray]:
    """``chains`` (`link_chains`) with the links that no window of `SHAPE_WINDOW` nodes fits a
    known Cα shape exchanged for better-fitting ones where there are any.

    Each chain of at least `SHAPE_WINDOW` nodes is cut at every link no window holding it fits
    within ``max_rms`` Å (`shape_rms`); where no link is cut, the chains are returned as they
    are. Otherwise the ends of all pieces (and of the chains too short to fit) are joined
    greedily, the best-fitting junction first: the last node of one piece
    to the first of another whose Cα (``ca`` ``[N, 3]``, Å) lie `SHAPE_STEP` apart, scored by
    the best fit among the windows holding the junction, accepted within ``max_rms``, each end
    once and without cycles. A cut link whose two ends found no other partner is restored, so
    no chain is left shorter for want of a better link. The graph network's links join
    consecutive residues for 0.64-0.84 of the links at 3.5-4.8 Å; those whose windows fit, for
    0.83-0.89 (docs/results_log.md, thirty-sixth stop)."""
    width = SHAPE_WINDOW
    windows = [chain[i:i + width] for chain in chains for i in range(len(chain) - width + 1)]
    if not windows:
        return list(chains)
    fits = shape_rms(ca[np.stack(windows)], within=max_rms)
    pieces, restored, first = [], {}, 0
    for chain in chains:
        if len(chain) < width:
            pieces.append(chain)
            continue
        own = fits[first:first + len(chain) - width + 1]
        first += len(own)
        # link j (node j to j + 1) lies in windows max(0, j - width + 2) .. j
        held = np.array([own[max(0, j - width + 2):j + 1].min() for j in range(len(chain) - 1)])
        split = np.split(chain, np.flatnonzero(held > max_rms) + 1)
        restored.update((len(pieces) + k, len(pieces) + k + 1) for k in range(len(split) - 1))
        pieces.extend(split)
    if not restored:
        return list(chains)
    ends = ca[[piece[-1] for piece in pieces]]
    starts = ca[[piece[0] for piece in pieces]]
    distance = np.linalg.norm(ends[:, None] - starts[None], axis=-1)
    junctions, windows = [], []
    for a, b in zip(*np.nonzero((distance >= SHAPE_STEP[0]) & (distance <= SHAPE_STEP[1]))):
        if a == b:
            continue
        left, right = pieces[a][-(width - 1):], pieces[b][:width - 1]
        joined = np.concatenate([left, right])
        # the windows holding both the last node of ``left`` and the first of ``right``
        for first in range(max(0, len(left) - width + 1), min(len(left), len(joined) - width + 1)):
            junctions.append((a, b))
            windows.append(ca[joined[first:first + width]])
    following, preceding = {}, {}
    if windows:
        fits = shape_rms(np.stack(windows), within=max_rms)
        best = {}
        for pair, fit in zip(junctions, fits.tolist()):
            best[pair] = min(fit, best.get(pair, np.inf))
        for (a, b), fit in sorted(best.items(), key=lambda item: item[1]):
            if fit > max_rms:
                break
            if a not in following and b not in preceding and _head(a, preceding) != b:
                following[a], preceding[b] = b, a
    for a, b in restored.items():
        if a not in following and b not in preceding and _head(a, preceding) != b:
            following[a], preceding[b] = b, a
    relinked = []
    for head in range(len(pieces)):
        if head in preceding:
            continue
        parts = [pieces[head]]
        while head in following:
            head = following[head]
            parts.append(pieces[head])
        relinked.append(np.concatenate(parts))
    return relinked


def _head(piece: int, preceding: dict[int, int]) -> int:
    """The first piece of the chain ``piece`` is in, following ``preceding`` links back."""
    while piece in preceding:
        piece = preceding[piece]
    return piece
