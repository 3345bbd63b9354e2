"""Profile HMMs of built chains (METHODS §4): building, E-value calibration, files, search.

Everything stays in memory as pyhmmer objects; files are written only by `write_profiles`.

Profiles. `profile_from_probs` turns a chain's residue-type probabilities into an HMMER3 profile
(one match state per residue of the chain). Each match state emits the predicted probabilities
mixed with the background in proportion to ``1 - confidence / 100``, plus a floor of
`BACKGROUND_FLOOR`; inserts emit the background; transitions are mostly match -> match, with the
gap-open and gap-extend probabilities HMMER uses for profiles built from one sequence, since real
chains skip or add residues. Given the chain's Cα, a step too long for one residue opens an insert
where it is (`step_insert_opens`, `LONG_STEP`); on request, a delete opens only where the nodes
it would skip can be left out (`step_delete_opens`): the nodes on either side of deleted ones are
numbered as consecutive residues, so they must lie within one residue's reach (`DELETE_REACH`).

E-values. A hand-made profile has no E-value parameters, and pyhmmer has no ``calibrate()``.
`calibrate` estimates them by simulation as HMMER's ``p7_Calibrate`` does:

* lambda (all three score distributions, bits) from HMMER's formula (``p7_Lambda``):
  ``log 2 + 1.44 / (M * H)``, with ``H`` the mean relative entropy of the match states in bits;
* the MSV filter's Gumbel location ``m_mu``: maximum-likelihood fit at fixed lambda to the
  pyhmmer MSV filter scores of `MSV_SAMPLES` random sequences of length `MSV_LENGTH`
  (``p7_MSVMu``);
* the Viterbi filter's ``v_mu``: the same fit to Viterbi scores of `VITERBI_SAMPLES` sequences
  of length `VITERBI_LENGTH` (``p7_ViterbiMu``);
* the Forward exponential tail location ``f_tau``: a Gumbel fitted to the Forward scores of
  `FORWARD_SAMPLES` sequences of length `FORWARD_LENGTH` anchors the tail at mass
  `FORWARD_TAIL` (``p7_Tau``).

pyhmmer 0.12 exposes neither Viterbi nor Forward scores of arbitrary sequences (its pipeline
drops sequences without a domain, a biased sample), so `_viterbi_scores` and `_forward_scores`
compute them with HMMER's generic dynamic programming in the local multihit configuration,
vectorised over the random sequences in NumPy; the tests check the Forward scores against the
pipeline's (they agree to 1e-5 bits).

Random sequences are i.i.d. residues with the background frequencies of
``pyhmmer.plan7.Background`` (HMMER's amino-acid composition).

Threading chains with these profiles is `cryobuild.thread.search`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path

import numpy as np
from pyhmmer import easel, plan7
from scipy.spatial import cKDTree

from ..atomic import write_bytes_atomic
from ..chains import chain_ids
from ..errors import InputError
from ..progress import CancelToken, check_cancel
from ..residues import NUM_AA
from ..sequences import Sequence
from ..residues import reach

__all__ = [
    "ALPHABET",
    "BACKGROUND_FLOOR",
    "GAP_OPEN",
    "GAP_EXTEND",
    "DELETE_REACH",
    "LONG_STEP",
    "LONG_STEP_INSERT",
    "MSV_SAMPLES",
    "MSV_LENGTH",
    "VITERBI_SAMPLES",
    "VITERBI_LENGTH",
    "FORWARD_SAMPLES",
    "FORWARD_LENGTH",
    "FORWARD_TAIL",
    "ProfileHit",
    "background_block",
    "background_frequencies",
    "match_emissions",
    "profile_from_probs",
    "step_delete_opens",
    "step_insert_opens",
    "calibrate",
    "chain_profiles",
    "digital_sequence",
    "write_profiles",
    "read_profiles",
    "search_profiles",
]

#: Smallest weight of the background in a match state's emissions (so no residue is impossible).
BACKGROUND_FLOOR = 0.05
#: Probabilities M->I and M->D, and I->I and D->D: HMMER's defaults for profiles built from one
#: sequence (``hmmbuild``/pyhmmer ``Builder`` ``popen=0.02``, ``pextend=0.4`` for proteins).
GAP_OPEN = 0.02
GAP_EXTEND = 0.4
#: Å: a step at least this long between two linked nodes' Cα (consecutive residues' are 3.80 Å
#: apart; linking joins none farther apart than `chains.MAX_CA_CA`) skips a residue of the sequence
#: about half the time: the trace slips, a residue is missing and its neighbours' nodes are linked.
#: `python -m cryobuild.bench.trace` over the 12 real maps of 1.75-4.8 Å (its skips-by-step table;
#: bundled weights, twenty-second stop): of the last round's links on the protein, 43 of 93 of
#: 4.2-4.5 Å join residues two or three apart, 70 of 272 of 4.0-4.2 Å, 62 of 383 of 3.9-4.0 Å, 141
#: of 1,583 of 3.6-3.9 Å. Shorter steps keep HMMER's `GAP_OPEN`: on maps of 3 Å or better almost
#: none of them skip, and opening inserts everywhere costs the chains that do not slip
#: (docs/results_log.md, fifteenth stop). (Inserts graded by step from 3.95 Å on threaded the same,
#: within the seeds' range. Deletes opened into both nodes of a step under 3.4 Å threaded an
#: unrelated sequence on 1 of the 30 il2 maps of `bench.decoys --il2-seeds 30`: not kept.)
LONG_STEP = 4.2
#: M -> I probability after a node whose step to the next is at least `LONG_STEP`.
LONG_STEP_INSERT = 0.5
#: Å: the farthest apart two nodes may lie that a delete numbers as consecutive residues
#: (`step_delete_opens`): consecutive Cα are 3.80 Å apart, plus `residues.CA_REACH_SLACK`. Nodes
#: left out inside a helix leave their flanks 5.0-6.2 Å apart (Cα i to i + 2, 3 or 4), so no
#: looser bound keeps a delete from skipping real residues there.
DELETE_REACH = reach(1)
#: Random sequences (count, length) for the MSV fit: HMMER's ``EmN``, ``EmL``.
MSV_SAMPLES = 200
MSV_LENGTH = 200
#: Random sequences (count, length) for the Viterbi fit: HMMER's ``EvN``, ``EvL``.
VITERBI_SAMPLES = 200
VITERBI_LENGTH = 200
#: Random sequences (count, length) for the Forward tail fit: HMMER's ``EfN``, ``EfL``.
FORWARD_SAMPLES = 200
FORWARD_LENGTH = 100
#: Tail mass at which the Forward tail is anchored: HMMER's ``Eft``.
FORWARD_TAIL = 0.04
#: HMMER's amino-acid alphabet (its order is ``residues.AA_ORDER``).
ALPHABET = easel.Alphabet.amino()
_LOG2 = math.log(2.0)
#: Edge correction of HMMER's ``p7_Lambda``: lambda = log 2 + _LAMBDA_EDGE / (M * H).
_LAMBDA_EDGE = 1.44
#: HMMER's marker of unset E-value parameters (``p7_EVPARAM_UNSET``).
_UNSET_EVALUE_PARAMETER = -99999.0
#: Start of the E-value lines of HMMER3 text profiles.
_STATS = "STATS LOCAL "


# ----------------------------------------------------------------------------- result types


@dataclasses.dataclass(frozen=True)
class ProfileHit:
    """One hit of a profile search (`search_profiles`).

    Attributes
    ----------
    profile : str
        Profile (HMM) name.
    target : str
        Name of the database sequence.
    bits : float
        Sequence bit score.
    evalue : float
        E-value for the database size.
    rank : int
        1-based rank of the hit among the profile's hits (by E-value).
    """

    profile: str
    target: str
    bits: float
    evalue: float
    rank: int


# ----------------------------------------------------------------------------- profiles


def _background() -> tuple[plan7.Background, np.ndarray]:
    """The null model and its residue frequencies, float64 ``[20]`` in ``AA_ORDER``."""
    background = plan7.Background(ALPHABET)
    return background, np.asarray(background.residue_frequencies, dtype=np.float64)


def match_emissions(aa_probs: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Emission probabilities of a chain's match states (see the module docstring).

    Parameters
    ----------
    aa_probs : ``[L, 20]``
        Residue-type probabilities in ``AA_ORDER`` (rows are renormalised; all-zero rows
        become the background).
    confidence : ``[L]``
        Per-residue confidence, 0-100 (clipped to that range).

    Returns
    -------
    float64 ``[L, 20]``
        The predicted probabilities mixed with the background by ``1 - confidence / 100``
        and a floor of `BACKGROUND_FLOOR`; rows sum to 1.
    """
    aa_probs = np.asarray(aa_probs, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    _, frequencies = _background()
    totals = aa_probs.sum(axis=1, keepdims=True)
    predicted = np.divide(aa_probs, totals, out=np.tile(frequencies, (len(aa_probs), 1)),
                          where=totals > 0)
    # [L, 1] weight of the background in each match state
    weight = BACKGROUND_FLOOR + (1.0 - BACKGROUND_FLOOR) * (
        1.0 - np.clip(np.nan_to_num(confidence), 0.0, 100.0)[:, None] / 100.0
    )
    return weight * frequencies + (1.0 - weight) * predicted


def background_frequencies() -> np.ndarray:
    """HMMER's amino-acid background frequencies, float64 ``[20]`` in ``AA_ORDER``."""
    return _background()[1]


def step_insert_opens(ca: np.ndarray) -> np.ndarray:
    """M -> I probabilities of a chain's match states from its Cα steps (module docstring).

    Parameters
    ----------
    ca : ``[L, 3]``
        The chain's Cα, Å, N -> C.

    Returns
    -------
    float64 ``[L]``
        After node ``k``: `LONG_STEP_INSERT` where the step to node ``k + 1`` is at least
        `LONG_STEP`, `GAP_OPEN` elsewhere (and after the last node).
    """
    ca = np.asarray(ca, dtype=np.float64).reshape(-1, 3)
    steps = np.linalg.norm(np.diff(ca, axis=0), axis=1)  # [L - 1]
    insert_open = np.full(len(ca), GAP_OPEN)
    insert_open[:-1][steps >= LONG_STEP] = LONG_STEP_INSERT
    return insert_open


def step_delete_opens(ca: np.ndarray) -> np.ndarray:
    """M -> D probabilities of a chain's match states from its Cα (module docstring).

    A run of deletes after node ``k`` leaves out nodes ``k + 1 .. e - 1`` and numbers nodes
    ``k`` and ``e`` as consecutive residues, so it can only end at a node ``e`` within
    `DELETE_REACH` of node ``k``. Where no later node but the next lies that close, no delete
    opens: an alignment that left such nodes out numbered a Nav β1 trace (4.0 Å,
    `bench.real`) across 6.8 and 9.8 Å. The run's end is not checked: the calibration's
    Forward needs one D -> D probability for every node.

    Parameters
    ----------
    ca : ``[L, 3]``
        The chain's Cα, Å, N -> C.

    Returns
    -------
    float64 ``[L]``
        After node ``k``: `GAP_OPEN` where a node after ``k + 1`` lies within `DELETE_REACH`
        of node ``k``, 0 elsewhere (and after the last two nodes).
    """
    ca = np.asarray(ca, dtype=np.float64).reshape(-1, 3)
    delete_open = np.zeros(len(ca))
    for k, j in cKDTree(ca).query_pairs(DELETE_REACH, output_type="ndarray"):
        first, last = min(k, j), max(k, j)
        if last >= first + 2:
            delete_open[first] = GAP_OPEN
    return delete_open


def profile_from_probs(aa_probs: np.ndarray, confidence: np.ndarray, name: str,
                       ca: np.ndarray | None = None, *,
                       deletes_within_reach: bool = False) -> plan7.HMM:
    """An uncalibrated HMMER3 profile with one match state per residue of a chain.

    Parameters
    ----------
    aa_probs : ``[L, 20]``
        Residue-type probabilities in ``AA_ORDER`` (rows are renormalised).
    confidence : ``[L]``
        Per-residue confidence, 0-100 (clipped to that range).
    name : str
        Profile name.
    ca : ``[L, 3]``, optional
        The chain's Cα, Å: insert-open probabilities from its steps (`step_insert_opens`);
        without them `GAP_OPEN` everywhere.
    deletes_within_reach : bool
        With ``ca``: delete-open probabilities from its geometry too (`step_delete_opens`);
        otherwise `GAP_OPEN` everywhere (how `search` threads a chain unless its alignment
        leaves out nodes between flanks farther apart than `search.MAX_DELETE_SPAN`).

    Returns
    -------
    pyhmmer.plan7.HMM
        Validated profile with composition and consensus set; call `calibrate` before
        searching with it.
    """
    aa_probs = np.asarray(aa_probs, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    length = len(aa_probs)
    if aa_probs.shape != (length, NUM_AA) or length == 0:
        raise ValueError(f"aa_probs must have shape [L >= 1, {NUM_AA}], got {aa_probs.shape}")
    if confidence.shape != (length,):
        raise ValueError(f"confidence must have shape [{length}], got {confidence.shape}")
    if not np.all(np.isfinite(aa_probs)) or np.any(aa_probs < 0):
        raise ValueError("aa_probs must be finite and non-negative")
    _, frequencies = _background()
    hmm = plan7.HMM(ALPHABET, length, name)
    match = np.asarray(hmm.match_emissions)
    # Row 0 is the begin state; HMMER's convention gives it residue 0 with probability 1.
    match[0] = 0.0
    match[0, 0] = 1.0
    match[1:] = match_emissions(aa_probs, confidence)
    np.asarray(hmm.insert_emissions)[:] = frequencies
    transitions = np.asarray(hmm.transition_probabilities)
    T = plan7.Transitions
    transitions[:, T.MI] = GAP_OPEN
    transitions[:, T.MD] = GAP_OPEN
    if ca is not None:
        if np.shape(ca) != (length, 3):
            raise ValueError(f"ca must have shape [{length}, 3], got {np.shape(ca)}")
        # row j is match state j (node j - 1), whose inserts and deletes follow node j - 1
        transitions[1:, T.MI] = step_insert_opens(ca)
        if deletes_within_reach:
            transitions[1:, T.MD] = step_delete_opens(ca)
    transitions[:, T.MM] = 1.0 - transitions[:, T.MI] - transitions[:, T.MD]
    transitions[:, T.II] = GAP_EXTEND
    transitions[:, T.IM] = 1.0 - GAP_EXTEND
    transitions[:, T.DD] = GAP_EXTEND
    transitions[:, T.DM] = 1.0 - GAP_EXTEND
    # Node 0 has no delete state (D->M is 1 by convention); the last node has no D_{M+1}.
    transitions[0, T.DD], transitions[0, T.DM] = 0.0, 1.0
    transitions[length, T.MD] = 0.0
    transitions[length, T.MM] = 1.0 - transitions[length, T.MI]
    transitions[length, T.DD], transitions[length, T.DM] = 0.0, 1.0
    hmm.validate()
    hmm.set_composition()
    hmm.set_consensus()
    return hmm


def _null_score(length: int) -> float:
    """Null-model (null1) log-likelihood of a length-``length`` sequence's length, nats.

    HMMER's ``p7_bg_NullOne``: ``L log p1 + log(1 - p1)`` with ``p1 = L / (L + 1)``.
    """
    p1 = length / (length + 1.0)
    return length * math.log(p1) + math.log(1.0 - p1)


def _local_scores(hmm: plan7.HMM, frequencies: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities of HMMER's local profile configuration (``p7_ProfileConfig``).

    Returns
    -------
    dict
        ``emit`` ``[20, M]`` match odds ratios (inserts emit with odds 1); ``entry`` ``[M]``
        B -> M_k (occupancy-weighted, as HMMER's local mode); ``mm, im, dm`` ``[M - 1]`` into
        M_{k+1} from M_k, I_k, D_k; ``mi, ii`` ``[M]`` into I_k (0 at node M, which has no
        insert state); ``md`` ``[M - 1]`` M_k -> D_{k+1}; ``dd`` (float) D_k -> D_{k+1}.

    Raises
    ------
    ValueError
        If D -> D differs between nodes (`profile_from_probs` makes it uniform).
    """
    T = plan7.Transitions
    length = hmm.M
    # [M + 1, 7] node 0 holds the begin transitions
    transitions = np.asarray(hmm.transition_probabilities, dtype=np.float64)
    emit = (np.asarray(hmm.match_emissions, dtype=np.float64)[1:] / frequencies).T
    # Match occupancy (HMMER p7_hmm_CalculateOccupancy): [M]
    occupancy = np.empty(length)
    occupancy[0] = transitions[0, T.MM] + transitions[0, T.MI]
    for k in range(1, length):
        occupancy[k] = (
            occupancy[k - 1] * (transitions[k, T.MM] + transitions[k, T.MI])
            + (1.0 - occupancy[k - 1]) * transitions[k, T.DM]
        )
    entry = occupancy / np.sum(occupancy * np.arange(length, 0, -1))
    nodes = transitions[1:]
    delete_extend = nodes[:-1, T.DD]
    if len(delete_extend) and not np.allclose(delete_extend, delete_extend[0]):
        raise ValueError("calibration needs the same D -> D probability at every node")
    insert_in = nodes[:, [T.MI, T.II]].copy()
    insert_in[-1] = 0.0
    return {
        "emit": emit,
        "entry": entry,
        "mm": nodes[:-1, T.MM],
        "im": nodes[:-1, T.IM],
        "dm": nodes[:-1, T.DM],
        "mi": insert_in[:, 0],
        "ii": insert_in[:, 1],
        "md": nodes[:-1, T.MD],
        "dd": float(delete_extend[0]) if len(delete_extend) else GAP_EXTEND,
    }


def _length_model(length: int) -> tuple[float, float]:
    """Probabilities (loop, move) of the N, C and J states for targets of ``length`` residues.

    HMMER's ``p7_ReconfigLength`` in multihit mode: move on with ``3 / (L + 3)``.
    """
    return length / (length + 3.0), 3.0 / (length + 3.0)


def _viterbi_scores(scores: dict[str, np.ndarray], residues: np.ndarray) -> np.ndarray:
    """Viterbi log-odds scores (bits) of many sequences under a local profile.

    HMMER's generic Viterbi (``p7_GViterbi``) in multihit local mode, in log space, vectorised
    over sequences; E -> C and E -> J are 1/2 each. Scores are null1-corrected.

    Parameters
    ----------
    scores : dict
        From `_local_scores`.
    residues : int ``[S, L]``
        ``S`` sequences of ``L`` residues (``AA_ORDER`` indices).

    Returns
    -------
    float64 ``[S]``
        Scores in bits.
    """
    count, length = residues.shape
    num_nodes = scores["emit"].shape[1]
    loop, move = (math.log(p) for p in _length_model(length))
    half = math.log(0.5)
    with np.errstate(divide="ignore"):
        log_emit = np.log(scores["emit"])
        log = {key: np.log(scores[key]) for key in ("entry", "mm", "im", "dm", "mi", "ii", "md")}
    # D_{k+1} = max over j <= k of (M_j + md_j + (k - j) dd): a prefix maximum. [M - 1]
    dd_prefix = np.arange(num_nodes - 1) * math.log(scores["dd"])
    match = np.full((count, num_nodes), -np.inf)
    insert = np.full((count, num_nodes), -np.inf)
    delete = np.full((count, num_nodes), -np.inf)
    n_state = np.zeros(count)
    b_state = n_state + move
    jc_state = np.full(count, -np.inf)  # J and C hold the same value in Viterbi
    for i in range(length):
        # [S, M]
        new_match = np.empty_like(match)
        new_match[:, 0] = b_state + log["entry"][0]
        new_match[:, 1:] = np.maximum(
            np.maximum(match[:, :-1] + log["mm"], insert[:, :-1] + log["im"]),
            np.maximum(delete[:, :-1] + log["dm"], b_state[:, None] + log["entry"][1:]),
        )
        new_match += log_emit[residues[:, i]]
        insert = np.maximum(match + log["mi"], insert + log["ii"])
        delete[:, 1:] = (
            np.maximum.accumulate(new_match[:, :-1] + log["md"] - dd_prefix, axis=1) + dd_prefix
        )
        match = new_match
        end = np.maximum(match.max(axis=1), delete.max(axis=1))
        jc_state = np.maximum(jc_state + loop, end + half)
        n_state = n_state + loop
        b_state = np.maximum(n_state, jc_state) + move
    return (jc_state + move - _null_score(length)) / _LOG2


def _forward_scores(scores: dict[str, np.ndarray], residues: np.ndarray) -> np.ndarray:
    """Forward log-odds scores (bits) of many sequences under a local profile.

    HMMER's generic Forward (``p7_GForward``) in multihit local mode, in probability space with
    every row rescaled by its largest value (as HMMER's sparse rescaling), vectorised over
    sequences. The delete chain ``D_{k+1} = M_k md_k + D_k dd`` is a first-order linear filter
    (`scipy.signal.lfilter`). Scores are null1-corrected.

    Parameters
    ----------
    scores : dict
        From `_local_scores`.
    residues : int ``[S, L]``
        ``S`` sequences of ``L`` residues (``AA_ORDER`` indices).

    Returns
    -------
    float64 ``[S]``
        Scores in bits.
    """
    from scipy.signal import lfilter

    count, length = residues.shape
    num_nodes = scores["emit"].shape[1]
    loop, move = _length_model(length)
    match = np.zeros((count, num_nodes))
    insert = np.zeros((count, num_nodes))
    delete = np.zeros((count, num_nodes))
    n_state = np.ones(count)
    b_state = n_state * move
    j_state = np.zeros(count)
    c_state = np.zeros(count)
    log_scale = np.zeros(count)
    for i in range(length):
        # [S, M]
        new_match = np.empty_like(match)
        new_match[:, 0] = b_state * scores["entry"][0]
        new_match[:, 1:] = (
            match[:, :-1] * scores["mm"]
            + insert[:, :-1] * scores["im"]
            + delete[:, :-1] * scores["dm"]
            + b_state[:, None] * scores["entry"][1:]
        )
        new_match *= scores["emit"][residues[:, i]]
        insert = match * scores["mi"] + insert * scores["ii"]
        delete[:, 1:] = lfilter(
            [1.0], [1.0, -scores["dd"]], new_match[:, :-1] * scores["md"], axis=1
        )
        match = new_match
        end = match.sum(axis=1) + delete.sum(axis=1)
        j_state = j_state * loop + end * 0.5
        c_state = c_state * loop + end * 0.5
        n_state = n_state * loop
        b_state = (n_state + j_state) * move
        # [S] rescale every state of a sequence by its largest value
        scale = np.maximum.reduce(
            [match.max(axis=1), insert.max(axis=1), delete.max(axis=1), n_state, j_state, c_state]
        )
        for state in (match, insert, delete):
            state /= scale[:, None]
        n_state, b_state, j_state, c_state = (
            n_state / scale,
            b_state / scale,
            j_state / scale,
            c_state / scale,
        )
        log_scale += np.log(scale)
    return (np.log(c_state * move) + log_scale - _null_score(length)) / _LOG2


def _gumbel_location(scores: np.ndarray, lam: float) -> float:
    """Maximum-likelihood Gumbel location at fixed ``lam`` (Easel ``esl_gumbel_FitCompleteLoc``)."""
    from scipy.special import logsumexp

    return float(-(logsumexp(-lam * scores) - math.log(len(scores))) / lam)


def _forward_tau(scores: np.ndarray, lam: float) -> float:
    """Location of the exponential tail of Forward scores (HMMER ``p7_Tau``).

    A Gumbel fitted to all ``scores`` (bits) gives the score exceeded with probability
    `FORWARD_TAIL`; the exponential tail of slope ``lam`` through that point has location
    ``tau = x + log(FORWARD_TAIL) / lam``.
    """
    from scipy.stats import gumbel_r

    mu, scale = gumbel_r.fit(scores)
    return float(gumbel_r.isf(FORWARD_TAIL, mu, scale) + math.log(FORWARD_TAIL) / lam)


def _random_residues(
    rng: np.random.Generator, frequencies: np.ndarray, count: int, length: int
) -> np.ndarray:
    """int ``[count, length]``: i.i.d. residues (``AA_ORDER`` indices) with ``frequencies``."""
    return rng.choice(NUM_AA, size=(count, length), p=frequencies / frequencies.sum())


def background_block(rng: np.random.Generator, count: int, length: int
                     ) -> easel.DigitalSequenceBlock:
    """``count`` random sequences of ``length`` i.i.d. residues of HMMER's background
    composition (the null of `calibrate`), named ``random0``, ``random1``, ..."""
    return _block(_random_residues(rng, background_frequencies(), count, length))


def _block(residues: np.ndarray) -> easel.DigitalSequenceBlock:
    """Digital sequences ``random0, random1, ...`` from int ``[S, L]`` residue indices."""
    return easel.DigitalSequenceBlock(
        ALPHABET,
        [
            easel.DigitalSequence(ALPHABET, name=f"random{index}", sequence=row)
            for index, row in enumerate(residues.astype(np.uint8))
        ],
    )


def calibrate(hmm: plan7.HMM, rng: np.random.Generator, *, samples: int | None = None,
              filters: bool = True) -> None:
    """Set the E-value parameters of ``hmm`` by simulation (see the module docstring).

    Parameters
    ----------
    hmm : pyhmmer.plan7.HMM
        A valid profile (e.g. from `profile_from_probs`); its ``evalue_parameters`` are set
        in place (``m_mu``, ``m_lambda``, ``v_mu``, ``v_lambda``, ``f_tau``, ``f_lambda``).
    rng : numpy.random.Generator
        Source of the random sequences.
    samples : int, optional
        Random sequences for each of the three fits instead of HMMER's 200 (`MSV_SAMPLES`,
        `VITERBI_SAMPLES`, `FORWARD_SAMPLES`): fewer is faster and the fitted locations
        looser (their standard error grows as 1 / sqrt(samples)).
    filters : bool
        Fit the MSV and Viterbi filters' locations too. They decide only which sequences the
        filters pass, so a profile searched with every filter open (threading,
        `search.search_all`) needs the Forward fit alone: without them ``m_mu`` and ``v_mu``
        are set to ``f_tau`` as placeholders, and their random sequences are still drawn, so
        the Forward fit and every E-value are the same as with them. The profiles written
        to files (`chain_profiles`), which ``hmmsearch`` filters, keep them. Leaving them
        out took the threading of a γ-secretase build (1,227 residues, 918 calibrations)
        from 20-23 s to 13-16 s, its outputs the same to the byte (twenty-third stop).
    """
    background, frequencies = _background()
    lam = _LOG2 + _LAMBDA_EDGE / (hmm.M * hmm.mean_match_relative_entropy(background))

    msv_residues = _random_residues(rng, background_frequencies(), samples or MSV_SAMPLES,
                                    MSV_LENGTH)
    viterbi_residues = _random_residues(rng, frequencies, samples or VITERBI_SAMPLES,
                                        VITERBI_LENGTH)
    forward_residues = _random_residues(rng, frequencies, samples or FORWARD_SAMPLES,
                                        FORWARD_LENGTH)
    scores = _local_scores(hmm, frequencies)
    ev = hmm.evalue_parameters
    ev.f_tau, ev.f_lambda = _forward_tau(_forward_scores(scores, forward_residues), lam), lam
    if not filters:
        ev.m_mu, ev.m_lambda = ev.f_tau, lam
        ev.v_mu, ev.v_lambda = ev.f_tau, lam
        return
    profile = plan7.Profile(hmm.M, ALPHABET)
    profile.configure(hmm, background, MSV_LENGTH)
    optimized = profile.to_optimized()
    # [MSV_SAMPLES] MSV scores in bits: (raw nats - null nats) / log 2
    msv = (
        np.array([optimized.msv_filter(sequence) for sequence in _block(msv_residues)])
        - _null_score(MSV_LENGTH)
    ) / _LOG2
    ev.m_mu, ev.m_lambda = _gumbel_location(msv, lam), lam
    ev.v_mu, ev.v_lambda = _gumbel_location(_viterbi_scores(scores, viterbi_residues), lam), lam


def chain_profiles(
    chains: list[np.ndarray],
    aa_probs: np.ndarray,
    confidence: np.ndarray,
    rng: np.random.Generator,
    *,
    names: list[str] | None = None,
) -> list[plan7.HMM]:
    """Calibrated profiles of chains.

    Parameters
    ----------
    chains : list of int ``[L_c]``
        Node indices of each chain in N -> C order.
    aa_probs : ``[N, 20]``
        Residue-type probabilities of all nodes.
    confidence : ``[N]``
        Confidence of all nodes, 0-100.
    rng : numpy.random.Generator
        For `calibrate`.
    names : list of str, optional
        Profile names; by default the chain IDs of `chain_ids`.

    Returns
    -------
    list of pyhmmer.plan7.HMM
        One calibrated profile per chain.
    """
    aa_probs = np.asarray(aa_probs, dtype=np.float64)
    confidence = np.asarray(confidence, dtype=np.float64)
    names = chain_ids(len(chains)) if names is None else list(names)
    if len(names) != len(chains):
        raise ValueError(f"{len(chains)} chains but {len(names)} names")
    profiles = []
    for chain, name in zip(chains, names):
        hmm = profile_from_probs(aa_probs[chain], confidence[chain], name)
        calibrate(hmm, rng)
        profiles.append(hmm)
    return profiles


# ----------------------------------------------------------------------------- files and search


def digital_sequence(name: str, residues: str) -> easel.DigitalSequence:
    """A pyhmmer digital amino-acid sequence (``X`` allowed) named ``name``."""
    return easel.TextSequence(name=name, sequence=residues).digitize(ALPHABET)


def write_profiles(profiles: list[plan7.HMM], folder: str | os.PathLike) -> list[Path]:
    """Write one HMMER3 text file per profile, atomically.

    Parameters
    ----------
    profiles : list of pyhmmer.plan7.HMM
        Calibrated profiles (`chain_profiles`); names must be distinct.
    folder : path-like
        Created if needed. Files are ``<NNNN>_<name>.hmm`` (``NNNN`` the 1-based index), so
        names that differ only in case (chain ``A`` and ``a``) do not collide on
        case-insensitive file systems.

    Returns
    -------
    list of Path
        The files written, in profile order.
    """
    names = [hmm.name for hmm in profiles]
    if len(set(names)) != len(names):
        raise ValueError("profile names must be distinct")
    folder = Path(folder)
    return [
        write_bytes_atomic(folder / f"{index:04d}_{hmm.name}.hmm", _hmm_text(hmm))
        for index, hmm in enumerate(profiles, start=1)
    ]


def _hmm_text(hmm: plan7.HMM) -> bytes:
    """HMMER3 text of ``hmm`` with its E-value parameters.

    pyhmmer writes ``STATS`` lines only for HMMs whose statistics flag HMMER set while building
    them, which a hand-made HMM lacks (and pyhmmer cannot set): insert them before the ``HMM``
    line in HMMER's layout, or readers would find an uncalibrated profile.
    """
    buffer = io.BytesIO()
    hmm.write(buffer)
    lines = buffer.getvalue().decode("ascii").splitlines(keepends=True)
    m_mu, m_lambda, v_mu, v_lambda, f_tau, f_lambda = hmm.evalue_parameters.as_vector()
    if any(value == _UNSET_EVALUE_PARAMETER for value in (m_mu, v_mu, f_tau)):
        raise ValueError(f"profile {hmm.name!r} is not calibrated (see calibrate)")
    if not any(line.startswith(_STATS) for line in lines):
        stats = [
            f"{_STATS}MSV      {m_mu:9.4f} {m_lambda:8.5f}\n",
            f"{_STATS}VITERBI  {v_mu:9.4f} {v_lambda:8.5f}\n",
            f"{_STATS}FORWARD  {f_tau:9.4f} {f_lambda:8.5f}\n",
        ]
        at = next(index for index, line in enumerate(lines) if line.startswith("HMM "))
        lines[at:at] = stats
    return "".join(lines).encode("ascii")


def read_profiles(folder: str | os.PathLike) -> list[plan7.HMM]:
    """Read every ``*.hmm`` file of ``folder`` (in name order), e.g. from `write_profiles`.

    Raises
    ------
    InputError
        If the folder is missing, holds no ``.hmm`` file, or a file is not a readable HMM.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder of HMM profiles")
    paths = sorted(folder.glob("*.hmm"))
    if not paths:
        raise InputError(f"{folder}: no .hmm profiles in the folder")
    profiles = []
    for path in paths:
        try:
            with plan7.HMMFile(path) as hmm_file:
                profiles.extend(hmm_file)
        except (ValueError, EOFError, OSError) as err:
            raise InputError(f"{path}: not a readable HMMER3 profile ({err})") from None
    return profiles


def search_profiles(
    profiles: list[plan7.HMM],
    database: list[Sequence],
    *,
    max_evalue: float = 10.0,
    cancel: CancelToken | None = None,
) -> list[ProfileHit]:
    """Search a sequence database with calibrated profiles (HMMER ``hmmsearch``).

    Parameters
    ----------
    profiles : list of pyhmmer.plan7.HMM
        Calibrated profiles (`chain_profiles` or `read_profiles`).
    database : list of Sequence
        Target sequences; E-values are for this many targets.
    max_evalue : float
        Hits with a larger E-value are not reported.
    cancel : CancelToken, optional
        Checked once per profile.

    Returns
    -------
    list of ProfileHit
        Per profile (in the given order), its hits ranked by E-value. The MSV and Forward
        filters run at HMMER's default thresholds; the Viterbi filter is open (see the module
        docstring).
    """
    if not database:
        raise ValueError("search_profiles needs at least one database sequence")
    block = easel.DigitalSequenceBlock(
        ALPHABET, [digital_sequence(sequence.name, sequence.residues) for sequence in database]
    )
    results = []
    for hmm in profiles:
        check_cancel(cancel)
        pipeline = plan7.Pipeline(ALPHABET, F2=1.0, Z=len(database), E=max_evalue)
        hits = sorted(pipeline.search_hmm(hmm, block), key=lambda hit: (hit.evalue, -hit.score))
        results.extend(
            ProfileHit(
                profile=hmm.name, target=hit.name, bits=hit.score, evalue=hit.evalue, rank=rank
            )
            for rank, hit in enumerate((hit for hit in hits if hit.reported), start=1)
        )
    return results
