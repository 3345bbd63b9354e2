"""Model-quality metrics of METHODS §5, comparing a predicted model with a reference model.

Both models must already sit in the same frame (the map's): nothing is superposed, so a
correct model in the wrong place scores zero. A residue takes part only if it has a Cα.

Matching. Predicted and reference residues are paired one-to-one by their Cα positions: only
pairs closer than `CA_MATCH_CUTOFF` (3 Å) are candidates, and among them `match_calpha` picks a
matching with the largest possible number of pairs and, among those, the smallest summed Cα
distance. It is solved exactly as a sparse assignment problem on the candidate pairs only (a
k-d tree finds them), which takes well under a second for 5,000 residues.

Metrics (all fractions in 0..1, distances in Å; each is 0 when its denominator is 0, e.g. for an
empty prediction, so look at the counts too):

* ``ca_recall`` = matched / reference residues; ``ca_precision`` = matched / predicted residues.
* ``sequence_match`` = matched pairs of the same residue type / matched pairs;
  ``sequence_recall`` = the same count / reference residues. An unknown type (index 20,
  ``UNK_INDEX``) never counts as right.
* ``backbone_rmsd``: a true root-mean-square deviation over the N, Cα and C atoms of matched
  pairs (atoms present in both models). ModelAngelo's "RMSD" is a mean absolute deviation, which
  is smaller for the same errors; do not compare the two directly.
* ``ca_rmsd`` and ``median_ca_error``: RMS and median distance of matched Cα pairs.
* ``ca_lddt``: Cα-lDDT over the reference (inclusion radius `LDDT_RADIUS` 15 Å measured in the
  reference, thresholds `LDDT_THRESHOLDS` 0.5/1/2/4 Å). The predicted partner of each reference
  Cα is its match. A reference pair counts as preserved at a threshold only if both residues are
  matched and their predicted distance is within the threshold of the reference distance. Each
  reference residue scores the fraction of its pairs preserved, averaged over the thresholds; an
  unmatched residue scores 0, so missing residues lower the score as they lower recall. The result
  is the mean over reference residues that have at least one neighbour within the radius.
* ``register_accuracy``: of the matched pairs whose predicted residue is threaded (its chain
  has an entity sequence), the fraction numbered as the reference residue's place in that
  sequence (the reference chain's residue types aligned to it, `_sequence_positions`): a chain
  threaded one or more positions off has the right types in few places and no right numbers.
  ``n_threaded_matched`` counts those pairs.
* ``connectivity``: predicted links are neighbours in the residue arrays with the same chain ID
  and residue numbers differing by +1. Of the ``n_links`` links whose two residues are both
  matched, the fraction that join reference sequence neighbours (same reference chain, residue
  numbers differing by 1 in either direction: direction is not judged).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import numpy as np

from .residues import AA_ORDER, BACKBONE_NAMES, UNK_INDEX

if TYPE_CHECKING:
    from .models import BuiltModel

__all__ = [
    "CA_MATCH_CUTOFF",
    "LDDT_RADIUS",
    "LDDT_THRESHOLDS",
    "Metrics",
    "evaluate",
    "match_calpha",
    "offered_numbering",
]

#: Largest Cα-Cα distance (Å, exclusive) at which a predicted residue can match a reference one.
CA_MATCH_CUTOFF = 3.0
#: lDDT inclusion radius (Å) for Cα pairs, measured in the reference (Mariani et al. 2013).
LDDT_RADIUS = 15.0
#: lDDT distance-difference thresholds (Å).
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)

# atom14 slots of the backbone atoms used here.
_N, _CA, _C = (BACKBONE_NAMES.index(name) for name in ("N", "CA", "C"))


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Scores of a predicted model against a reference (see the module docstring)."""

    n_pred: int  # predicted residues with a Cα
    n_ref: int  # reference residues with a Cα
    n_matched: int  # one-to-one Cα pairs closer than CA_MATCH_CUTOFF
    ca_recall: float  # n_matched / n_ref, 0..1
    ca_precision: float  # n_matched / n_pred, 0..1
    sequence_match: float  # matched pairs with the right residue type / n_matched, 0..1
    sequence_recall: float  # matched pairs with the right residue type / n_ref, 0..1
    backbone_rmsd: float  # Å, true RMSD over matched N, CA, C atoms
    ca_rmsd: float  # Å, RMSD over matched CA atoms
    median_ca_error: float  # Å, median matched CA distance
    ca_lddt: float  # 0..1, CA-lDDT over the reference (unmatched residues score 0)
    connectivity: float  # 0..1, fraction of the n_links that join reference neighbours
    n_links: int  # predicted i -> i+1 links with both residues matched
    register_accuracy: float  # threaded matched residues numbered right / n_threaded_matched
    n_threaded_matched: int  # matched pairs whose predicted residue is threaded

    def to_dict(self) -> dict[str, int | float]:
        """The metrics as a flat ``{name: value}`` dict of Python ints and floats (JSON-ready)."""
        return dataclasses.asdict(self)


def match_calpha(
    pred_xyz: np.ndarray, ref_xyz: np.ndarray, *, cutoff: float = CA_MATCH_CUTOFF
) -> tuple[np.ndarray, np.ndarray]:
    """Pair predicted and reference Cα atoms one-to-one within a distance cutoff.

    The matching has the largest possible number of pairs and, among such matchings, the
    smallest summed distance. It is found exactly with
    `scipy.sparse.csgraph.min_weight_full_bipartite_matching` on a graph made of the candidate
    pairs plus one "unmatched" node per atom, so that not every atom has to be matched.

    Parameters
    ----------
    pred_xyz : float ``[N, 3]``
        Predicted Cα positions in Å.
    ref_xyz : float ``[M, 3]``
        Reference Cα positions in Å, in the same frame.
    cutoff : float
        Pairs must be closer than this (Å).

    Returns
    -------
    pred_index, ref_index : int64 ``[K]``
        Matched rows of ``pred_xyz`` (ascending) and their partners in ``ref_xyz``.
    """
    pred_xyz = _as_points(pred_xyz, "pred_xyz")
    ref_xyz = _as_points(ref_xyz, "ref_xyz")
    empty = np.zeros(0, dtype=np.int64)
    if len(pred_xyz) == 0 or len(ref_xyz) == 0:
        return empty, empty
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching
    from scipy.spatial import cKDTree

    candidates = cKDTree(pred_xyz).sparse_distance_matrix(
        cKDTree(ref_xyz), cutoff, output_type="ndarray"
    )
    candidates = candidates[candidates["v"] < cutoff]
    if len(candidates) == 0:
        return empty, empty
    # Only atoms with a candidate take part: m predicted (rows), n reference (columns).
    pred_nodes, row = np.unique(candidates["i"], return_inverse=True)
    ref_nodes, col = np.unique(candidates["j"], return_inverse=True)
    m, n = len(pred_nodes), len(ref_nodes)
    # Square graph [m + n, n + m]: real pairs cost 1 + d (weights must be non-zero); predicted
    # row r may stay unmatched via column n + r and reference column c via row m + c, each at
    # cost `unmatched`; a real pair (r, c) frees row m + c and column n + r, which pair at cost
    # 1. One pair more than another matching saves 2 * unmatched, which exceeds any change of
    # the summed distances, so the number of pairs is maximised first.
    unmatched = (min(m, n) + 1) * (cutoff + 2.0)
    rows = np.concatenate([row, np.arange(m), m + np.arange(n), m + col])
    cols = np.concatenate([col, n + np.arange(m), np.arange(n), n + row])
    weights = np.concatenate(
        [1.0 + candidates["v"], np.full(m + n, unmatched), np.ones(len(candidates))]
    )
    graph = coo_array((weights, (rows, cols)), shape=(m + n, n + m)).tocsr()
    matched_row, matched_col = min_weight_full_bipartite_matching(graph)
    real = (matched_row < m) & (matched_col < n)
    pred_index = pred_nodes[matched_row[real]].astype(np.int64)
    ref_index = ref_nodes[matched_col[real]].astype(np.int64)
    return pred_index, ref_index


def evaluate(pred: BuiltModel, ref: BuiltModel) -> Metrics:
    """Score a predicted model against a reference model in the same (map) frame.

    Parameters
    ----------
    pred : BuiltModel
        The model to score (``R_pred`` residues, atom14 layout).
    ref : BuiltModel
        The reference (deposited) model (``R_ref`` residues).

    Returns
    -------
    Metrics
        Counts, fractions and distances defined in the module docstring; an empty prediction
        gives zeros.
    """
    pred_res = np.flatnonzero(pred.atom_mask[:, _CA])
    ref_res = np.flatnonzero(ref.atom_mask[:, _CA])
    pred_ca = np.asarray(pred.atom_positions[pred_res, _CA], dtype=np.float64)
    ref_ca = np.asarray(ref.atom_positions[ref_res, _CA], dtype=np.float64)
    pred_match, ref_match = match_calpha(pred_ca, ref_ca)
    # Residue indices (into the models' arrays) of the K matched pairs.
    p, r = pred_res[pred_match], ref_res[ref_match]
    n_pred, n_ref, n_matched = len(pred_res), len(ref_res), len(p)

    right_type = int(np.sum((pred.aatype[p] == ref.aatype[r]) & (ref.aatype[r] != UNK_INDEX)))

    # [K, 3] => [K]
    ca_error = np.linalg.norm(pred_ca[pred_match] - ref_ca[ref_match], axis=-1)
    backbone = [_N, _CA, _C]
    # [K, 3 atoms] mask of backbone atoms present in both
    both = pred.atom_mask[p][:, backbone] & ref.atom_mask[r][:, backbone]
    # [K, 3 atoms, 3] each
    pred_backbone = pred.atom_positions[p][:, backbone].astype(np.float64)
    ref_backbone = ref.atom_positions[r][:, backbone].astype(np.float64)
    # [K, 3 atoms, 3] => [K, 3 atoms]
    backbone_sq = np.sum((pred_backbone - ref_backbone) ** 2, axis=-1)

    # Predicted Cα for each reference residue that has a Cα: [n_ref, 3], NaN where unmatched.
    partner_ca = np.full((n_ref, 3), np.nan)
    partner_ca[ref_match] = pred_ca[pred_match]
    links, good_links = _links(pred, ref, p, r)
    numbered, right_number = _register(pred, ref, p, r)
    return Metrics(
        n_pred=n_pred,
        n_ref=n_ref,
        n_matched=n_matched,
        ca_recall=_fraction(n_matched, n_ref),
        ca_precision=_fraction(n_matched, n_pred),
        sequence_match=_fraction(right_type, n_matched),
        sequence_recall=_fraction(right_type, n_ref),
        backbone_rmsd=_root_mean(backbone_sq[both]),
        ca_rmsd=_root_mean(ca_error**2),
        median_ca_error=float(np.median(ca_error)) if n_matched else 0.0,
        ca_lddt=_ca_lddt(ref_ca, partner_ca),
        connectivity=_fraction(good_links, links),
        n_links=links,
        register_accuracy=_fraction(right_number, numbered),
        n_threaded_matched=numbered,
    )


def _sequence_positions(ref: BuiltModel, chain: str, sequence: str) -> dict[int, int]:
    """Reference residue index (into ``ref``'s arrays) -> 1-based position in ``sequence`` of
    the residues of reference chain ``chain``, by a global alignment of their types to it."""
    import gemmi

    rows = np.flatnonzero(ref.chain_id == chain)
    types = "".join(AA_ORDER[t] if t < UNK_INDEX else "X" for t in ref.aatype[rows])
    alignment = gemmi.align_string_sequences(list(types), list(sequence), [])
    positions, row, position = {}, 0, 0
    for count, operation in re.findall(r"(\d+)([MID])", alignment.cigar_str()):
        count = int(count)
        if operation == "M":
            positions.update({int(rows[row + k]): position + k + 1 for k in range(count)})
        row += count if operation in "MI" else 0
        position += count if operation in "MD" else 0
    return positions


def offered_numbering(ca: np.ndarray, numbers: np.ndarray, sequence: str, ref: BuiltModel, *,
                      tolerance: int = 0, cutoff: float = CA_MATCH_CUTOFF) -> tuple[int, int]:
    """How right a numbering offered for a stretch of residues is (e.g. a placement of an
    unassigned chain, `cryobuild.thread.hints`): of the residues (Cα ``[K, 3]``, Å) matched to
    a reference Cα (`match_calpha` within ``cutoff`` Å), how many, and how many of those are
    offered (``numbers`` ``[K]``, 1-based positions in ``sequence``) a number within
    ``tolerance`` of the reference residue's place in ``sequence`` (as
    `Metrics.register_accuracy` places it)."""
    p, r = match_calpha(ca, ref.ca, cutoff=cutoff)
    places = _ReferencePlaces(ref)
    right = 0
    for pred_row, ref_row in zip(p.tolist(), r.tolist()):
        place = places.of(ref_row, sequence)
        right += place is not None and abs(place - int(numbers[pred_row])) <= tolerance
    return len(p), right


class _ReferencePlaces:
    """The place in a sequence of each reference residue (`_sequence_positions`), aligned once
    per reference chain and sequence."""

    def __init__(self, ref: BuiltModel):
        self.ref = ref
        self._aligned: dict[tuple[str, str], dict[int, int]] = {}

    def of(self, ref_row: int, sequence: str) -> int | None:
        """1-based place of reference residue ``ref_row`` in ``sequence``, None if unaligned."""
        key = (str(self.ref.chain_id[ref_row]), sequence)
        if key not in self._aligned:
            self._aligned[key] = _sequence_positions(self.ref, *key)
        return self._aligned[key].get(ref_row)


def _register(pred: BuiltModel, ref: BuiltModel, p: np.ndarray, r: np.ndarray) -> tuple[int, int]:
    """Of the matched pairs (residue indices ``p`` into ``pred``, ``r`` into ``ref``) whose
    predicted residue is threaded: how many, and how many are numbered as the reference
    residue's place in the predicted chain's sequence."""
    places = _ReferencePlaces(ref)
    numbered = right = 0
    for pred_row, ref_row in zip(p.tolist(), r.tolist()):
        sequence = pred.entity_sequences.get(str(pred.chain_id[pred_row]))
        if not sequence:
            continue
        numbered += 1
        right += places.of(ref_row, sequence) == int(pred.residue_number[pred_row])
    return numbered, right


def _as_points(xyz: np.ndarray, name: str) -> np.ndarray:
    """Check and convert coordinates to float64 ``[N, 3]``."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3], got {xyz.shape}")
    return xyz


def _fraction(count: int, total: int) -> float:
    return count / total if total else 0.0


def _root_mean(squares: np.ndarray) -> float:
    return float(np.sqrt(np.mean(squares))) if squares.size else 0.0


def _ca_lddt(ref_ca: np.ndarray, partner_ca: np.ndarray) -> float:
    """Cα-lDDT over the reference.

    Parameters
    ----------
    ref_ca : float64 ``[M, 3]``
        Reference Cα positions (Å).
    partner_ca : float64 ``[M, 3]``
        Position of each reference residue's matched predicted Cα; NaN rows when unmatched.

    Returns
    -------
    float
        Mean per-residue score over reference residues with a neighbour within `LDDT_RADIUS`.
    """
    from scipy.spatial import cKDTree

    if len(ref_ca) < 2:
        return 0.0
    # [P, 2] unordered reference pairs i < j within the radius
    pairs = cKDTree(ref_ca).query_pairs(LDDT_RADIUS, output_type="ndarray")
    if len(pairs) == 0:
        return 0.0
    i, j = pairs[:, 0], pairs[:, 1]
    ref_dist = np.linalg.norm(ref_ca[i] - ref_ca[j], axis=-1)
    # NaN for pairs with an unmatched residue: every comparison below is then False.
    pred_dist = np.linalg.norm(partner_ca[i] - partner_ca[j], axis=-1)
    # [P, T] => [P]
    preserved = np.mean(
        np.abs(pred_dist - ref_dist)[:, None] < np.asarray(LDDT_THRESHOLDS)[None, :], axis=-1
    )
    n_res = len(ref_ca)
    score = np.bincount(i, preserved, n_res) + np.bincount(j, preserved, n_res)
    n_pairs = np.bincount(i, minlength=n_res) + np.bincount(j, minlength=n_res)
    has_pairs = n_pairs > 0
    return float(np.mean(score[has_pairs] / n_pairs[has_pairs]))


def _links(pred: BuiltModel, ref: BuiltModel, p: np.ndarray, r: np.ndarray) -> tuple[int, int]:
    """Count predicted i -> i+1 links between matched residues, and those that are right.

    Parameters
    ----------
    pred, ref : BuiltModel
        The two models.
    p, r : int ``[K]``
        Residue indices of the matched pairs in ``pred`` and ``ref``.

    Returns
    -------
    n_links, n_right : int
        Links with both residues matched, and how many of them join reference residues of the
        same chain whose numbers differ by 1.
    """
    # Reference partner of each predicted residue, -1 when unmatched: [R_pred]
    partner = np.full(len(pred.aatype), -1, dtype=np.int64)
    partner[p] = r
    # [R_pred - 1] links between array neighbours
    first, second = partner[:-1], partner[1:]
    linked = (
        (pred.chain_id[:-1] == pred.chain_id[1:])
        & (pred.residue_number[1:] - pred.residue_number[:-1] == 1)
        & (first >= 0)
        & (second >= 0)
    )
    first, second = first[linked], second[linked]
    right = (ref.chain_id[first] == ref.chain_id[second]) & (
        np.abs(ref.residue_number[second] - ref.residue_number[first]) == 1
    )
    return int(linked.sum()), int(right.sum())
