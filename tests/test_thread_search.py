"""Tests of cryobuild.thread.profiles (profiles, E-value calibration, files, search) and
cryobuild.thread.search (threading), with joining and naming of the threaded chains."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyhmmer import plan7

from cryobuild.chains import chain_ids, link_chains
from cryobuild.cli import main as cli_main
from cryobuild.models import read_model
from cryobuild.residues import AA_ORDER, reach
from cryobuild.sequences import Sequence, read_fasta
from cryobuild.thread import ChainMatch, joining, profiles, search

from gnn_synth import noisy_probs, simulate_predictions

#: Residues that must get their true residue number (at 60 % top-1 type accuracy).
MIN_SEQUENCE_RECALL = 0.9
#: E-values of the r-th best random sequence must lie within this factor of r.
EVALUE_RANK_FACTOR = 4.0
#: Largest difference (bits) between our Forward scores and pyhmmer's.
FORWARD_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def il2(il2_path):
    """The il2 model, its full sequence (gaps filled at random) and the background frequencies."""
    model = read_model(il2_path)
    rng = np.random.default_rng(11)
    letters = list(rng.choice(list(AA_ORDER), size=int(model.residue_number.max())))
    for number, aatype in zip(model.residue_number, model.aatype):
        letters[number - 1] = AA_ORDER[aatype]
    return model, Sequence("il2", "".join(letters))


def _random_sequence(name: str, length: int, rng: np.random.Generator) -> Sequence:
    """A sequence with natural (HMMER background) amino-acid composition."""
    _, frequencies = profiles._background()
    residues = rng.choice(list(AA_ORDER), size=length, p=frequencies / frequencies.sum())
    return Sequence(name, "".join(residues))


def _shuffled(sequence: Sequence, rng: np.random.Generator) -> Sequence:
    return Sequence(f"{sequence.name}_shuffled", "".join(rng.permutation(list(sequence.residues))))


@pytest.fixture(scope="module")
def threaded(il2):
    """il2 simulated at 60 % accuracy, linked and threaded against il2 and two decoys."""
    model, sequence = il2
    rng = np.random.default_rng(5)
    simulated = simulate_predictions(
        model.atom_positions[:, :3].astype(np.float64), model.aatype, model.residue_number, rng
    )
    chains = link_chains(simulated.predictions)
    decoys = [_shuffled(sequence, rng), _random_sequence("unrelated", 150, rng)]
    sequences = [decoys[0], sequence, decoys[1]]
    predictions = simulated.predictions
    matches = search.thread_chains(
        chains, predictions.aa_probs, predictions.confidence, sequences, rng=rng
    )
    return simulated, chains, sequences, matches


def _recall(simulated, matches, model) -> float:
    """Fraction of the model's residues whose node got the true residue number of il2."""
    right = 0
    for match in matches:
        if match.sequence_index != 1:
            continue
        residues = simulated.residue_of_node[match.nodes]
        true_numbers = model.residue_number[residues]
        right += int(np.sum(match.residue_number == true_numbers))
    return right / model.num_residues


def test_profile_is_valid(il2):
    model, _ = il2
    probs = noisy_probs(model.aatype, 0.6, np.random.default_rng(0))
    profile = profiles.profile_from_probs(probs, np.full(len(probs), 80.0), "il2")
    assert profile.M == model.num_residues
    emissions = np.asarray(profile.match_emissions)[1:]
    np.testing.assert_allclose(emissions.sum(axis=1), 1.0, atol=1e-5)
    assert emissions.min() > 0
    with pytest.raises(ValueError):
        profiles.profile_from_probs(probs[:, :5], np.ones(len(probs)), "bad")


def test_forward_scores_match_pyhmmer(il2):
    """Our vectorised Forward equals the pipeline's Forward score (Hit.pre_score)."""
    model, _ = il2
    rng = np.random.default_rng(1)
    probs = noisy_probs(model.aatype, 0.6, rng)
    profile = profiles.profile_from_probs(probs, np.full(len(probs), 70.0), "il2")
    profiles.calibrate(profile, rng)
    _, frequencies = profiles._background()
    residues = profiles._random_residues(rng, frequencies, 100, 120)
    ours = profiles._forward_scores(profiles._local_scores(profile, frequencies), residues)
    pipeline = plan7.Pipeline(
        profiles.ALPHABET,
        bias_filter=False,
        null2=False,
        F1=1.0,
        F2=1.0,
        F3=1.0,
        T=-math.inf,
        domT=-math.inf,
    )
    hits = list(pipeline.search_hmm(profile, profiles._block(residues)))
    assert len(hits) > 20
    for hit in hits:
        assert abs(hit.pre_score - ours[int(hit.name.removeprefix("random"))]) < FORWARD_TOLERANCE


def test_step_insert_opens_follow_the_chains_steps():
    """A step too long for one residue opens an insert after its first node; steps of about
    3.8 Å, and short ones, keep HMMER's gap-open probability."""
    steps = [3.8, 5.5, 3.8, 2.6, 3.8, 4.1, 3.7]
    ca = np.zeros((len(steps) + 1, 3))
    ca[1:, 0] = np.cumsum(steps)
    insert_open = profiles.step_insert_opens(ca)
    assert insert_open[1] == profiles.LONG_STEP_INSERT
    np.testing.assert_allclose(np.delete(insert_open, 1), profiles.GAP_OPEN)


def test_step_delete_opens_only_where_left_out_nodes_leave_neighbours_in_reach():
    """A trace of one node per residue opens no delete; of two nodes 1 Å apart (two nodes of
    one residue) either can be left out, so the deletes after the node before each open."""
    ca = np.zeros((7, 3))
    ca[1:, 0] = np.cumsum([3.8] * 6)
    np.testing.assert_array_equal(profiles.step_delete_opens(ca), 0.0)
    doubled = np.insert(ca, 3, ca[2] + [1.0, 0.0, 0.0], axis=0)
    delete_open = profiles.step_delete_opens(doubled)
    np.testing.assert_array_equal(np.flatnonzero(delete_open), [1, 2])
    assert delete_open[1] == delete_open[2] == profiles.GAP_OPEN


def test_no_alignment_numbers_nodes_out_of_reach_as_consecutive(il2_path, monkeypatch):
    """A straight trace (a strand: nodes two apart 7.6 Å) carrying il2's residues 1-74, its first
    20 nodes with the types of the residues two further on (a register the types favour there):
    with deletes open everywhere the alignment takes that register and leaves nodes out to come
    back, numbering nodes farther apart than `search.MAX_DELETE_SPAN` as consecutive residues
    (as on a Nav β1 build, 9.8 Å); searched again with deletes opened by the trace's geometry
    (`profiles.step_delete_opens`) it does not."""
    model = read_model(il2_path)
    sequence = Sequence("il2", "".join(AA_ORDER[aatype] for aatype in model.aatype))
    chain = np.arange(74)
    ca = np.zeros((74, 3))
    ca[:, 0] = np.arange(74) * 3.8
    types = model.aatype[:74].copy()
    types[:20] = model.aatype[2:22]

    def spans_out_of_reach() -> int:
        probs = noisy_probs(types, 0.6, np.random.default_rng(0))
        matches = search.thread_chains([chain], probs, np.full(len(probs), 70.0), [sequence],
                                       ca=ca, max_evalue=10.0, rng=np.random.default_rng(0))
        count = 0
        for match in matches:
            nodes, numbers = match.nodes[match.assigned], match.residue_number[match.assigned]
            spans = np.linalg.norm(np.diff(ca[nodes], axis=0), axis=1)
            count += int(np.sum((np.diff(numbers) == 1) & (spans > search.MAX_DELETE_SPAN)))
        return count

    assert spans_out_of_reach() == 0
    monkeypatch.setattr(profiles, "step_delete_opens",
                        lambda ca: np.full(len(ca), profiles.GAP_OPEN))
    assert spans_out_of_reach() > 0


def test_a_stretch_joined_on_from_elsewhere_is_threaded_on_its_own(il2_path, monkeypatch):
    """A straight trace whose nodes 0-24 carry il2's residues 1-25, 25-39 junk and 40-64
    residues 31-55: HMMER aligns the two stretches as two domains of one hit, and numbered as
    one chain residues 25 and 31 would lie 61 Å apart (six residues span 23.8 Å). The second
    stretch is cut off and threaded on its own, so each keeps its own numbers."""
    model = read_model(il2_path)
    sequence = Sequence("il2", "".join(AA_ORDER[aatype] for aatype in model.aatype))
    junk = np.random.default_rng(1).integers(0, 20, 15)
    types = np.concatenate([model.aatype[0:25], junk, model.aatype[30:55]])
    ca = np.zeros((len(types), 3))
    ca[:, 0] = np.arange(len(types)) * 3.8
    true_numbers = np.concatenate([np.arange(1, 26), np.full(15, -1), np.arange(31, 56)])

    def threaded() -> tuple[int, np.ndarray]:
        probs = noisy_probs(types, 0.8, np.random.default_rng(0))
        matches = search.thread_chains([np.arange(len(types))], probs,
                                       np.full(len(probs), 70.0), [sequence], ca=ca,
                                       rng=np.random.default_rng(0))
        numbers, out_of_reach = np.full(len(types), -1), 0
        for match in matches:
            nodes, numbered = match.nodes[match.assigned], match.residue_number[match.assigned]
            spans = np.linalg.norm(np.diff(ca[nodes], axis=0), axis=1)
            out_of_reach += int(np.sum(spans > reach(np.diff(numbered))))
            numbers[nodes] = numbered
        return out_of_reach, numbers

    out_of_reach, numbers = threaded()
    assert out_of_reach == 0
    stretches = true_numbers > 0
    assert np.array_equal(numbers[stretches], true_numbers[stretches])
    monkeypatch.setattr(search, "_junctions_in_reach", lambda *args: True)
    assert threaded()[0] > 0


def test_forward_scores_match_pyhmmer_with_inserts_from_steps(il2):
    """Our Forward also equals the pipeline's with insert-open probabilities that vary by node."""
    model, _ = il2
    rng = np.random.default_rng(3)
    kept = np.flatnonzero(np.arange(model.num_residues) % 9 != 4)
    ca = model.ca[kept]
    profile = profiles.profile_from_probs(noisy_probs(model.aatype[kept], 0.6, rng),
                                         np.full(len(kept), 70.0), "il2", ca=ca)
    transitions = np.asarray(profile.transition_probabilities)
    assert np.ptp(transitions[1:-1, plan7.Transitions.MI]) > 0.1
    profiles.calibrate(profile, rng)
    _, frequencies = profiles._background()
    residues = profiles._random_residues(rng, frequencies, 60, 120)
    ours = profiles._forward_scores(profiles._local_scores(profile, frequencies), residues)
    pipeline = plan7.Pipeline(profiles.ALPHABET, bias_filter=False, null2=False, F1=1.0, F2=1.0,
                              F3=1.0, T=-math.inf, domT=-math.inf)
    hits = list(pipeline.search_hmm(profile, profiles._block(residues)))
    assert len(hits) > 10
    for hit in hits:
        assert abs(hit.pre_score - ours[int(hit.name.removeprefix("random"))]) < FORWARD_TOLERANCE


def test_a_trace_that_skips_residues_is_numbered_right_with_its_steps(il2_path):
    """A trace of il2 missing every seventh residue, with weak types (top type right for 30 %
    of the residues): its long steps open inserts where the residues are missing, so the
    residues after each skip keep their numbers (without the steps, a few seeds' alignments
    shift instead: 41-84 of 126 numbered right, against 93-105)."""
    model = read_model(il2_path)
    sequence = Sequence("il2", "".join(AA_ORDER[aatype] for aatype in model.aatype))
    chain = np.flatnonzero(np.arange(model.num_residues) % 7 != 3)
    right = {}
    for with_steps in (True, False):
        counts = []
        for seed in range(3):
            probs = np.full((model.num_residues, len(AA_ORDER)), 1.0 / len(AA_ORDER))
            probs[chain] = noisy_probs(model.aatype[chain], 0.3, np.random.default_rng(seed))
            matches = search.thread_chains([chain], probs, np.full(model.num_residues, 70.0),
                                           [sequence], ca=model.ca if with_steps else None,
                                           max_evalue=10.0, rng=np.random.default_rng(0))
            counts.append(sum(int(np.sum(match.residue_number == match.nodes + 1))
                              for match in matches if match.threaded))
        right[with_steps] = np.mean(counts)
    assert right[True] >= 0.7 * model.num_residues
    assert right[True] > right[False] + 0.15 * model.num_residues


def test_calibrated_evalues_follow_rank(il2):
    """Random sequences: the r-th best has an E-value of about r (searched with filters open)."""
    model, _ = il2
    rng = np.random.default_rng(2)
    probs = noisy_probs(model.aatype, 0.6, rng)
    profile = profiles.profile_from_probs(probs, np.full(len(probs), 70.0), "il2")
    profiles.calibrate(profile, rng)
    ev = profile.evalue_parameters.as_vector()
    assert all(math.isfinite(value) for value in ev)
    _, frequencies = profiles._background()
    count = 1000
    block = profiles._block(profiles._random_residues(rng, frequencies, count, 150))
    pipeline = plan7.Pipeline(
        profiles.ALPHABET, bias_filter=False, F1=1.0, F2=1.0, F3=1.0, Z=count, E=math.inf
    )
    evalues = sorted(hit.evalue for hit in pipeline.search_hmm(profile, block))
    for rank in (2, 5, 10, 20):
        assert rank / EVALUE_RANK_FACTOR < evalues[rank - 1] < rank * EVALUE_RANK_FACTOR


def test_threading_finds_il2_and_numbers(threaded, il2):
    model, _ = il2
    simulated, _, _, matches = threaded
    long_matches = [m for m in matches if len(m.nodes) >= 10]
    assert long_matches and all(m.sequence_index == 1 for m in long_matches)
    assert all(m.evalue < search.MAX_THREAD_EVALUE for m in long_matches)
    assert _recall(simulated, matches, model) >= MIN_SEQUENCE_RECALL
    for match in long_matches:
        assigned = match.assigned
        expected = np.array([AA_ORDER.index(c) for c in il2[1].residues])
        np.testing.assert_array_equal(
            match.aatype[assigned], expected[match.residue_number[assigned] - 1]
        )


def test_taken_positions_are_avoided(threaded):
    simulated, chains, sequences, _ = threaded
    taken = [np.zeros(len(s), dtype=bool) for s in sequences]
    taken[1][:70] = True
    predictions = simulated.predictions
    matches = search.thread_chains(
        chains,
        predictions.aa_probs,
        predictions.confidence,
        sequences,
        taken=taken,
        rng=np.random.default_rng(0),
    )
    numbers = np.concatenate(
        [m.residue_number[m.assigned] for m in matches if m.sequence_index == 1]
    )
    assert len(numbers) > 30 and numbers.min() > 70


def test_random_chain_is_unthreadable():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(20), size=30)
    [match] = search.thread_chains(
        [np.arange(30)], probs, np.full(30, 50.0), [_random_sequence("other", 200, rng)], rng=rng
    )
    assert match.sequence_index == -1 and not match.assigned.any()
    assert match.evalue > search.MAX_THREAD_EVALUE


def test_a_profile_that_leans_to_a_sequences_composition_does_not_thread_to_it():
    """Types that lean to R, P and G everywhere (no register) against the R-, P- and G-rich
    unrelated sequence of the tests: a calibrated E-value under the cut, but one the
    sequence's own shuffles reach as easily, so the chain stays unthreaded; without the
    composition correction it threads."""
    from cryobuild.bench.decoys import UNRELATED

    background = profiles.background_frequencies()
    probs = np.tile(background, (60, 1))
    probs[:, [AA_ORDER.index(letter) for letter in "RPG"]] += 0.1
    probs /= probs.sum(axis=1, keepdims=True)

    def thread(correction: bool) -> ChainMatch:
        [match] = search.thread_chains([np.arange(60)], probs, np.full(60, 90.0),
                                       [Sequence("unrelated", UNRELATED)], max_evalue=0.1,
                                       composition_correction=correction,
                                       rng=np.random.default_rng(0))
        return match

    corrected = thread(True)
    assert not corrected.threaded and corrected.evalue > 0.1
    assert thread(False).threaded


def test_joining_and_copies(threaded):
    """Two copies of the threaded il2 chains, 200 Å apart: joined per copy, copies kept apart."""
    simulated, _, sequences, matches = threaded
    backbone = simulated.predictions.backbone
    num = len(backbone)
    shifted = np.concatenate([backbone, backbone + np.array([200.0, 0, 0])])
    copies = matches + [
        ChainMatch(
            m.nodes + num, m.sequence_index, m.residue_number, m.aatype, m.score, m.evalue
        )
        for m in matches
    ]
    aa_probs = np.concatenate([simulated.predictions.aa_probs] * 2)
    joined = joining.join_matches(copies, shifted, aa_probs)
    on_il2 = [m for m in joined if m.sequence_index == 1]
    assert len(on_il2) < len([m for m in copies if m.sequence_index == 1])
    for match in on_il2:
        numbers = match.residue_number[match.assigned]
        assert np.all(np.diff(numbers) > 0)  # never overlapping copies
        assert np.all(match.nodes < num) or np.all(match.nodes >= num)
    named = joining.name_chains(joined, sequences)
    assert [n.chain_id for n in named] == chain_ids(len(joined))
    assert named[0].label == "il2 copy 1" and named[1].label == "il2 copy 2"


@pytest.fixture(scope="module")
def il2_profile_folder(il2, tmp_path_factory):
    """build_no_seq-like output: the calibrated profile of one simulated il2 chain."""
    model, _ = il2
    rng = np.random.default_rng(8)
    probs = noisy_probs(model.aatype, 0.6, rng)
    [profile] = profiles.chain_profiles([np.arange(len(probs))], probs, np.full(len(probs), 70.0), rng)
    folder = tmp_path_factory.mktemp("build_no_seq")
    [path] = profiles.write_profiles([profile], folder / "hmm_profiles")
    assert path.name == "0001_A.hmm"
    [read] = profiles.read_profiles(folder / "hmm_profiles")
    np.testing.assert_allclose(
        read.evalue_parameters.as_vector(), profile.evalue_parameters.as_vector(), atol=1e-3
    )
    return folder


def test_hmm_search_ranks_il2_first(il2, il2_profile_folder, tmp_path, capsys):
    _, sequence = il2
    rng = np.random.default_rng(9)
    decoys = [_random_sequence(f"decoy{i}", int(rng.integers(80, 400)), rng) for i in range(1000)]
    decoys += [_shuffled(sequence, rng)]
    fasta = tmp_path / "db.fasta"
    rna = ">rna\nGGCUAGCUAGCUAGGCUAAUCGAUCG\n"  # a database may hold nucleic acids: left out, said
    fasta.write_text("".join(f">{s.name}\n{s.residues}\n" for s in decoys + [sequence]) + rna)
    assert (
        cli_main(
            [
                "hmm_search",
                "-i",
                str(il2_profile_folder),
                "-f",
                str(fasta),
                "-o",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    lines = (tmp_path / "out" / "hits.csv").read_text().splitlines()
    assert lines[0] == "profile,target,bits,evalue,rank"
    assert lines[1].startswith("A,il2,") and lines[1].endswith(",1")
    out, err = capsys.readouterr()
    assert "il2" in out and "against 1002 sequences" in out  # not 1003: the RNA is left out
    assert err.strip() == (f"cryobuild: warning: {fasta}: record 'rna' has only A, C, G, T, U "
                           "and N: left out as nucleic acid (cryobuild builds proteins)")


def test_hmm_search_against_shared_chains(il2, il2_profile_folder, shared_data):
    paths = sorted((shared_data / "structures").glob("*/chains.fasta"))
    if not paths:
        pytest.skip("no structures/*/chains.fasta in the shared data")
    database = [s for path in paths for s in read_fasta(path)] + [il2[1]]
    assert len(database) > 1000
    hits = profiles.search_profiles(profiles.read_profiles(il2_profile_folder / "hmm_profiles"), database)
    assert hits and hits[0].target == "il2"


def test_chain_running_into_another_sequence_is_cut(monkeypatch):
    """A chain linked from the C-terminal 30 residues of one sequence into the N-terminal 40
    of another: threading cuts it where its alignment ends and threads both pieces; with the
    cut disabled, the 30-residue overhang stays unassigned."""
    rng = np.random.default_rng(8)
    first, second = _random_sequence("first", 80, rng), _random_sequence("second", 80, rng)
    types = np.concatenate([first.aatype[50:], second.aatype[:40]])
    probs = np.full((70, 20), 0.2 / 19)
    probs[np.arange(70), types] = 0.8
    confidence = np.full(70, 80.0)

    def thread():
        return search.thread_chains([np.arange(70)], probs, confidence, [first, second],
                                        rng=np.random.default_rng(0))

    numbered = {m.sequence_index: m.residue_number.tolist() for m in thread() if m.threaded}
    assert numbered == {0: list(range(51, 81)), 1: list(range(1, 41))}

    monkeypatch.setattr(search, "MIN_OVERHANG", 10**6)
    [match] = thread()
    assert match.sequence_index == 1 and np.sum(~match.assigned) == 30


def test_evalue_benchmark_reads_the_built_chains_against_shuffles(il2_view_3A, il2_path):
    """`bench.evalues` on the il2 map with the bundled networks: every chain of at least
    `MIN_LENGTH` residues is read once per shuffle and once against the sequence by both
    threaders; the true sequence threads a chain at E <= 0.001, no shuffle does."""
    from cryobuild.bench.evalues import THREADERS, chain_evalues
    from cryobuild.bench.gnn import BenchCase
    from cryobuild.pipeline import Networks

    reference = read_model(il2_path)
    own = "".join(AA_ORDER[t] for t in reference.aatype)
    case = BenchCase("il2", il2_view_3A[0], reference, (own,))
    evalues = chain_evalues(case, [Sequence("il2", own)], Networks.load("cpu"), 2,
                            np.random.default_rng(0))
    assert set(evalues) == set(THREADERS)
    for readings in evalues.values():
        chains = len(readings["true"])
        assert chains >= 1 and len(readings["shuffled"]) == 2 * chains
        assert min(readings["true"]) <= 1e-3
        assert min(readings["shuffled"]) > 1e-3


def test_a_calibration_for_open_filters_gives_the_same_evalues(il2):
    """Without the MSV and Viterbi fits (which only the filters read) the Forward fit, and so
    every E-value of a search with open filters, is the same; the filters' locations are then
    placeholders."""
    from pyhmmer import easel

    model, sequence = il2
    rng = np.random.default_rng(4)
    probs = noisy_probs(model.aatype[:40], 0.5, rng)
    block = easel.DigitalSequenceBlock(profiles.ALPHABET, [
        profiles.digital_sequence(str(k), "".join(rng.permutation(list(sequence.residues))))
        for k in range(5)] + [profiles.digital_sequence("il2", sequence.residues)])
    found, parameters = {}, {}
    for filters in (True, False):
        hmm = profiles.profile_from_probs(probs, np.full(40, 80.0), "x")
        profiles.calibrate(hmm, np.random.default_rng(1), filters=filters)
        found[filters] = [(hit.name, hit.score, hit.evalue) for hit in search.search_all(hmm, block, 6)]
        parameters[filters] = list(hmm.evalue_parameters.as_vector())
    assert found[True] == found[False] and found[True]
    assert parameters[True][4:] == parameters[False][4:]  # f_tau, f_lambda
    m_mu, _, v_mu, _, f_tau, _ = parameters[False]
    assert m_mu == v_mu == f_tau
