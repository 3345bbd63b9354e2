"""The Structure Generator: contact graphs, simulated samples, permutation equivariance (with and
without GCN layers), a tiny network overfitting one chain, LSTM windows, the threader's best
runs along a chain's diagonals, its ChainMatch output and E-values, and the benchmark's matching
of detected nodes to residues."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from cryobuild.residues import AA_ORDER, NUM_AA
from cryobuild.sequences import Sequence
from cryobuild.structgen import (
    ChainRecord,
    NodeGraph,
    SampleOptions,
    StructGenConfig,
    StructureGenerator,
    ThreadingSample,
    contact_edges,
    make_sample,
    sequence_log_probs,
    simulate_scores,
    threading_loss,
    tiny_config,
)
from cryobuild.structgen.model import _windows
from cryobuild.structgen.samples import ScoreNoise
from cryobuild.thread import ChainMatch
from cryobuild.thread.search import MAX_THREAD_EVALUE
from cryobuild.thread.structgen import ThreadOptions, chain_offsets, thread_structgen

#: Log-probabilities must agree to this under a relabelling of the nodes (float32 round-off).
LOG_PROB_TOLERANCE = 1e-4
#: Training steps and learning rate of the overfit test.
OVERFIT_STEPS = 300
OVERFIT_LR = 1e-2
#: Residues of the overfitted chain and dummy nodes beside it.
CHAIN_LENGTH, NUM_DUMMIES = 30, 30
#: Å, Cα-Cα distance of consecutive residues.
CA_CA = 3.8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: beside other CPU load, several threads make these tiny networks' steps
    ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _helix(length: int, start: np.ndarray) -> np.ndarray:
    """Cα ``[length, 3]`` of an ideal α-helix (2.3 Å radius, 1.5 Å rise, 100° per residue;
    consecutive Cα 3.83 Å apart, i/i+3 about 5 Å) starting near ``start``."""
    turn = np.deg2rad(100.0) * np.arange(length)
    return start + np.stack([2.3 * np.cos(turn), 2.3 * np.sin(turn), 1.5 * np.arange(length)], axis=1)


def _peptides(count: int, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """Cα ``[count, 3]`` of random-walk 5-residue peptides scattered around ``centre``."""
    pieces = []
    while sum(len(p) for p in pieces) < count:
        steps = rng.normal(size=(5, 3))
        steps *= CA_CA / np.linalg.norm(steps, axis=1, keepdims=True)
        steps[0] = centre + rng.uniform(-30, 30, 3)
        pieces.append(np.cumsum(steps, axis=0))
    return np.concatenate(pieces)[:count]


def test_contact_edges_join_only_close_nodes():
    ca = np.array([[0.0, 0, 0], [3.8, 0, 0], [7.6, 0, 0], [3.8, 3.9, 0]])
    np.testing.assert_array_equal(contact_edges(ca), [[0, 1, 1], [1, 2, 3]])


def test_simulated_scores_follow_the_paper():
    rng = np.random.default_rng(0)
    aatype = rng.integers(0, NUM_AA, 200)
    scores = simulate_scores(aatype, ScoreNoise(), rng)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(scores.argmax(1), aatype)
    # 19 wrong types at |N(0, 0.01)|: about 0.15 in all
    assert 0.1 < 1 - scores.max(1).mean() < 0.2


def test_soft_scores_are_right_as_often_as_their_margin_says():
    """Soft scores (a stand-in for the graph network's probabilities): the larger the logit
    margin, the more often the top type is the true one (module docstring's figures)."""
    rng = np.random.default_rng(0)
    aatype = rng.integers(0, NUM_AA, 4000)
    right = {}
    for margin in (1.0, 4.0):
        scores = simulate_scores(aatype, ScoreNoise(margin=(margin, margin)), rng)
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
        right[margin] = (scores.argmax(1) == aatype).mean()
    assert 0.2 < right[1.0] < 0.4 and right[4.0] > 0.85
    with pytest.raises(ValueError):
        ScoreNoise(margin=(3.0, 1.0))


def test_decoy_nodes_lie_beside_the_chain_and_share_its_edges():
    rng = np.random.default_rng(2)
    chain = ChainRecord("helix", _helix(60, np.zeros(3)), rng.integers(0, NUM_AA, 60))
    plain = make_sample(chain, SampleOptions(), np.random.default_rng(3), 4.5)
    with_decoys = make_sample(chain, SampleOptions(decoy_fraction=0.5), np.random.default_rng(3), 4.5)
    assert with_decoys.graph.num_nodes == plain.graph.num_nodes == SampleOptions().num_nodes
    # the chain's nodes (the targets) gain edges to the decoys beside them
    chain_nodes = set(with_decoys.target.tolist())
    def touching(sample):
        return sum(a in chain_nodes or b in chain_nodes for a, b in sample.graph.edges.T.tolist())
    assert touching(with_decoys) > touching(plain) + 10


def test_long_chain_sample_is_cropped_and_padded():
    rng = np.random.default_rng(1)
    chain = ChainRecord("helix", _helix(700, np.zeros(3)), rng.integers(0, NUM_AA, 700))
    options = SampleOptions()
    sample = make_sample(chain, options, rng, 4.0)
    assert sample.graph.num_nodes == options.num_nodes
    assert len(sample.sequence) == options.max_length
    assert len(np.unique(sample.target)) == options.max_length
    np.testing.assert_array_equal(sample.graph.scores[sample.target].argmax(1), sample.sequence)
    degree = np.bincount(sample.graph.edges.ravel(), minlength=sample.graph.num_nodes)
    assert np.all(degree[sample.target[1:-1]] == 2)  # a helix: only i +- 1 within 4 Å


def _random_graph(rng: np.random.Generator, num: int) -> NodeGraph:
    ca = np.concatenate([_helix(num // 2, np.zeros(3)), _peptides(num - num // 2, rng, np.zeros(3))])
    return NodeGraph.from_nodes(simulate_scores(rng.integers(0, NUM_AA, num), ScoreNoise(0.05), rng), ca)


@pytest.mark.parametrize("gcn_layers", [0, 2])
def test_relabelling_nodes_permutes_the_scores(gcn_layers):
    rng = np.random.default_rng(2)
    torch.manual_seed(0)
    network = StructureGenerator(tiny_config(gcn_layers=gcn_layers)).eval()
    graph = _random_graph(rng, 40)
    sequence = rng.integers(0, NUM_AA + 1, 12)
    new_index = rng.permutation(graph.num_nodes)
    with torch.inference_mode():
        before = sequence_log_probs(network, graph, sequence).numpy()
        after = sequence_log_probs(network, graph.relabelled(new_index), sequence).numpy()
    np.testing.assert_allclose(after[:, new_index], before, atol=LOG_PROB_TOLERANCE)


def test_type_log_odds_add_the_plain_likelihood_match():
    """With `StructGenConfig.type_log_odds` and the network's own score silenced, each
    position's node probabilities are the nodes' scores of its residue type, renormalised
    over the nodes (uniform at ``X``); a checkpoint without the term, converted by
    `train.structgen.with_type_log_odds` and with its weight at 0, scores as it did."""
    from cryobuild.train.structgen import with_type_log_odds

    rng = np.random.default_rng(5)
    torch.manual_seed(0)
    graph = _random_graph(rng, 40)
    sequence = np.append(rng.integers(0, NUM_AA, 11), NUM_AA)  # the last position is X
    plain = StructureGenerator(tiny_config()).eval()
    state = with_type_log_odds({"config": dataclasses.asdict(plain.config), "model": plain.state_dict(),
                                "optimizer": {}})
    assert "optimizer" not in state
    typed = StructureGenerator(StructGenConfig(**state["config"])).eval()
    typed.load_state_dict(state["model"])
    with torch.inference_mode():
        before = sequence_log_probs(plain, graph, sequence).numpy()
        typed.type_weight.zero_()
        np.testing.assert_allclose(sequence_log_probs(typed, graph, sequence).numpy(), before,
                                   atol=LOG_PROB_TOLERANCE)
        typed.type_weight.fill_(1.0)
        typed.score.weight.zero_()
        typed.score.bias.zero_()
        log_probs = sequence_log_probs(typed, graph, sequence).numpy()
    scores = graph.scores[:, sequence[:-1]].T  # [L - 1, M]
    np.testing.assert_allclose(np.exp(log_probs[:-1]), scores / scores.sum(1, keepdims=True), atol=1e-4)
    np.testing.assert_allclose(np.exp(log_probs[-1]), 1 / graph.num_nodes, atol=1e-6)


@pytest.mark.parametrize("length, window, overlap", [(10, 20, 5), (30, 8, 3), (101, 25, 10)])
def test_windows_keep_every_position_once(length, window, overlap):
    kept = []
    for start, stop, keep_start, keep_stop in _windows(length, window, overlap):
        assert 0 <= start <= keep_start < keep_stop <= stop <= length and stop - start <= window
        kept.extend(range(keep_start, keep_stop))
    assert kept == list(range(length))


def test_chain_offsets_take_the_best_run_of_each_diagonal():
    # 3 residues at 4 positions: diagonal d puts residue i at position d + i
    scores = np.full((4, 3), -1.0)
    scores[1, 0], scores[2, 1], scores[3, 2] = 2.0, -0.5, 3.0  # offset 1: 2 - 0.5 + 3
    scores[0, 2] = 5.0  # offset -2: residue 2 alone at position 0
    offsets, best, runs = chain_offsets(scores)
    np.testing.assert_array_equal(offsets, [-2, -1, 0, 1, 2, 3])
    np.testing.assert_allclose(best, [5.0, -1.0, -1.0, 4.5, -1.0, -1.0])
    np.testing.assert_array_equal(runs[3], [0, 2])
    np.testing.assert_array_equal(runs[0], [2, 2])


@pytest.fixture(scope="module")
def chain_case():
    """A 30-residue helix (nodes 0-29) and 30 dummy nodes (random peptides far away): the sample,
    Cα and scores."""
    rng = np.random.default_rng(3)
    aatype = rng.integers(0, NUM_AA, CHAIN_LENGTH)
    ca = np.concatenate([_helix(CHAIN_LENGTH, np.zeros(3)), _peptides(NUM_DUMMIES, rng, np.array([60.0, 0, 0]))])
    types = np.concatenate([aatype, rng.choice(aatype, NUM_DUMMIES)])
    scores = simulate_scores(types, ScoreNoise(), rng)
    # nodes in chain order: the network cannot see node order (test_relabelling_...)
    graph = NodeGraph.from_nodes(scores, ca)
    return ThreadingSample(graph, aatype, np.arange(CHAIN_LENGTH)), ca, scores


@pytest.fixture(scope="module")
def overfitted(chain_case):
    """The tiny network after `OVERFIT_STEPS` steps on the chain, both directions in turn."""
    sample = chain_case[0]
    torch.manual_seed(0)
    network = StructureGenerator(tiny_config())
    optimizer = torch.optim.Adam(network.parameters(), lr=OVERFIT_LR)
    for step in range(OVERFIT_STEPS):
        loss, _ = threading_loss(network, sample, ("forward", "backward")[step % 2])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_tiny_network_overfits_one_chain(chain_case, overfitted, direction):
    with torch.no_grad():
        _, parts = threading_loss(overfitted, chain_case[0], direction)
    assert parts["accuracy"] == 1.0


def _check_matches(matches, chains: list[np.ndarray], sequences: list[Sequence]):
    """Every node of ``chains`` in exactly one ChainMatch, in its chain's order; threaded ones
    numbered consecutively with the sequence's types."""
    assert all(isinstance(match, ChainMatch) for match in matches)
    nodes = np.concatenate([match.nodes for match in matches])
    np.testing.assert_array_equal(np.sort(nodes), np.sort(np.concatenate(chains)))
    for match in [m for m in matches if m.threaded]:
        residues = sequences[match.sequence_index].residues
        numbers = match.residue_number[match.assigned]
        assert np.all(np.diff(numbers) == 1)
        assert 1 <= numbers[0] and numbers[-1] <= len(residues)
        assert "".join(AA_ORDER[a] for a in match.aatype[match.assigned]) == "".join(
            residues[n - 1] for n in numbers)
        assert match.evalue <= MAX_THREAD_EVALUE
    for match in [m for m in matches if not m.threaded]:
        assert np.all(match.residue_number == -1)


def _helix_sequence(sample) -> Sequence:
    return Sequence("helix", "".join(AA_ORDER[a] for a in sample.sequence))


def test_threader_numbers_the_overfitted_chain_in_its_order(chain_case, overfitted):
    sample, ca, scores = chain_case
    chains = [np.arange(CHAIN_LENGTH), np.arange(CHAIN_LENGTH, len(ca))]
    sequence = _helix_sequence(sample)
    matches = thread_structgen(chains, scores, ca, [sequence], overfitted)
    _check_matches(matches, chains, [sequence])
    threaded = [m for m in matches if m.threaded]
    assert len(threaded) == 1
    np.testing.assert_array_equal(threaded[0].nodes, np.arange(CHAIN_LENGTH))
    np.testing.assert_array_equal(threaded[0].residue_number, np.arange(1, CHAIN_LENGTH + 1))
    assert threaded[0].score > 0 and threaded[0].evalue < 1e-3
    # read backwards, the same nodes are not the sequence
    backwards = thread_structgen([chains[0][::-1], chains[1]], scores, ca, [sequence], overfitted)
    assert not any(m.threaded for m in backwards)


def test_threader_does_not_number_taken_positions(chain_case, overfitted):
    sample, ca, scores = chain_case
    chains = [np.arange(CHAIN_LENGTH)]
    taken = np.zeros(CHAIN_LENGTH, dtype=bool)
    taken[:10] = True
    matches = thread_structgen(chains, scores, ca, [_helix_sequence(sample)], overfitted,
                               taken=[taken])
    numbered = np.concatenate([m.residue_number[m.assigned] for m in matches if m.threaded])
    np.testing.assert_array_equal(np.sort(numbered), np.arange(11, CHAIN_LENGTH + 1))
    # residues 0-9 lost their positions: cut off as an overhang, threaded nowhere
    assert [m.nodes.tolist() for m in matches if not m.threaded] == [list(range(10))]


def test_threader_handles_several_sequences_and_windows(chain_case, overfitted):
    sample, ca, scores = chain_case
    rng = np.random.default_rng(4)
    sequences = [_helix_sequence(sample), Sequence("other", "".join(rng.choice(list(AA_ORDER), 45)))]
    options = ThreadOptions(window=16, overlap=4)
    # the input chains: the helix split in two and the dummies one by one
    chains = [np.arange(12), np.arange(12, CHAIN_LENGTH)] + [np.array([i]) for i in range(CHAIN_LENGTH, len(ca))]
    matches = thread_structgen(chains, scores, ca, sequences, overfitted, options)
    _check_matches(matches, chains, sequences)
    halves = [m for m in matches if m.threaded and len(m.nodes) > 1]
    assert [(m.sequence_index, m.residue_number[0], m.residue_number[-1]) for m in halves] == [
        (0, 1, 12), (0, 13, CHAIN_LENGTH)]


def test_detected_nodes_are_matched_one_to_one_within_3_angstrom():
    """Case (c) of the benchmark: each reference residue's true node is its one-to-one partner
    within 3 Å; a residue without a Cα or without a node nearby has none (-1)."""
    from cryobuild.bench.structgen import node_targets

    reference = _helix(6, np.zeros(3))
    has_ca = np.array([True, True, True, True, False, True])
    # nodes, shuffled: residue 0 (0.5 Å off), a false detection between residues 1 and 2,
    # residue 2 (0.3 Å off), residue 1 (1 Å off), residue 4's Cα (which the reference lacks)
    nodes = np.stack([
        reference[0] + [0.5, 0, 0],
        (reference[1] + reference[2]) / 2,
        reference[2] + [0, 0.3, 0],
        reference[1] + [0, 0, 1.0],
        reference[4],
    ])
    # residue 3: nearest node is 2's (over 3 Å away); residue 5: no node
    np.testing.assert_array_equal(node_targets(nodes, reference, has_ca), [0, 3, 2, -1, -1, -1])


@pytest.mark.parametrize("realism", [False, True], ids=["plain", "built-realism"])
def test_built_samples_are_made_once_and_cached(shared_data, tmp_path, realism, monkeypatch):
    """``train.structgen --detected-fraction``: a training structure's map built as a build
    would (with ``--built-realism``, noisier and blemished), its nodes paired with the
    reference; the second call reads the cache."""
    from cryobuild.checkpoints import checkpoint_path
    from cryobuild.train.structgen import built_samples

    if not (checkpoint_path("detect").exists() and checkpoint_path("gnn").exists()):
        pytest.skip("no trained weights bundled")
    cache = tmp_path / "built.pkl"
    samples = built_samples(1, 4.5, cache, seed=0, realism=realism)
    assert samples and all(isinstance(s, ThreadingSample) for s in samples)
    assert all((s.target >= 0).mean() > 0.5 for s in samples)  # most residues have their node
    # the second call builds nothing: it reads the cache
    from cryobuild.train import structgen as module

    def no_build(*args, **kwargs):
        raise AssertionError("built again instead of read from the cache")

    monkeypatch.setattr(module, "build_nodes", no_build)
    assert [len(s.sequence) for s in built_samples(1, 4.5, cache, seed=0, realism=realism)] == [
        len(s.sequence) for s in samples]
