"""Tests of cryobuild.chains: linking simulated network output of il2 back into chains."""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import pytest

from cryobuild.chains import (
    MAX_CA_CA,
    MAX_PEPTIDE_BOND,
    MIN_LINK_PROB,
    SHAPE_MAX_RMS,
    SHAPE_WINDOW,
    ResiduePredictions,
    chain_ids,
    link_chains,
    relink_by_shape,
    remove_duplicates,
    runs_against,
    shape_rms,
    superposed_squares,
)
from cryobuild.models import read_model

from gnn_synth import alanine_graph, simulate_predictions

#: Fraction of true links that must be recovered, and of chosen links that must be true.
MIN_CONNECTIVITY = 0.95


@pytest.fixture(scope="module")
def il2(il2_path):
    model = read_model(il2_path)
    return model.atom_positions[:, :3].astype(np.float64), model.aatype, model.residue_number


@pytest.fixture(scope="module")
def simulated(il2):
    return simulate_predictions(*il2, np.random.default_rng(7))


def test_duplicates_and_ghosts_are_removed(simulated):
    kept = remove_duplicates(simulated.predictions)
    np.testing.assert_array_equal(kept, simulated.kept_truth)


def test_chains_recover_the_true_order(simulated):
    chains = link_chains(simulated.predictions)
    links = {(int(a), int(b)) for chain in chains for a, b in itertools.pairwise(chain)}
    nodes = np.concatenate(chains)
    assert len(nodes) == len(set(nodes.tolist())) == simulated.kept_truth.sum()
    right = len(links & simulated.true_links)
    assert right >= MIN_CONNECTIVITY * len(simulated.true_links)
    assert right >= MIN_CONNECTIVITY * len(links)
    # Chains run N -> C: residue indices increase along every chain.
    for chain in chains:
        assert np.all(np.diff(simulated.residue_of_node[chain]) > 0)


def _line(num: int, rise: float = 3.8) -> np.ndarray:
    """``[num, 3, 3]`` backbones along x; C(i)-N(i+1) is ``rise - 2.4`` Å."""
    backbone = np.zeros((num, 3, 3))
    backbone[:, 1, 0] = rise * np.arange(num)
    backbone[:, 0, 0] = backbone[:, 1, 0] - 1.2
    backbone[:, 2, 0] = backbone[:, 1, 0] + 1.2
    return backbone


def _predictions(backbone, src, dst, prob) -> ResiduePredictions:
    num = len(backbone)
    return ResiduePredictions(
        backbone=backbone,
        aa_probs=np.full((num, 20), 0.05),
        confidence=np.full(num, 80.0),
        existence=np.ones(num),
        edge_src=np.array(src),
        edge_dst=np.array(dst),
        edge_prob=np.array(prob),
    )


def test_links_need_probability_and_a_short_bond():
    backbone = _line(4)
    # 0->1 probable, 1->2 improbable, 2->3 probable; 3->0 would close a cycle but is too long.
    low = MIN_LINK_PROB / 2
    chains = link_chains(_predictions(backbone, [0, 1, 2, 3], [1, 2, 3, 0], [0.9, low, 0.8, 0.9]))
    assert [c.tolist() for c in chains] == [[0, 1], [2, 3]]
    # A bond longer than the limit is refused however probable the link.
    stretched = _line(2, rise=2.4 + MAX_PEPTIDE_BOND + 0.2)
    assert len(link_chains(_predictions(stretched, [0], [1], [0.99]))) == 2
    # So is a short bond between Cα too far apart (N and C pulled out towards each other).
    apart = _line(2, rise=MAX_CA_CA + 0.3)
    apart[0, 2, 0] = apart[1, 0, 0] - 1.33
    assert len(link_chains(_predictions(apart, [0], [1], [0.99]))) == 2


def test_a_probable_link_beats_a_shorter_improbable_one():
    # Node 0 may continue to 1 (bond 1.4 Å, p 0.95) or to 2 (bond 1.33 Å, p 0.35).
    backbone = _line(3)
    backbone[2] = backbone[1] + [0.0, 2.0, 0.0]  # Cα 2 Å from node 1's: not a duplicate
    backbone[2, 0] = backbone[0, 2] + [1.33, 0.0, 0.0]
    backbone[1, 0] = backbone[0, 2] + [1.4, 0.0, 0.0]
    chains = link_chains(_predictions(backbone, [0, 0], [1, 2], [0.95, 0.35]))
    assert [0, 1] in [c.tolist() for c in chains]


def test_no_cycles_and_one_successor():
    # CAs on a triangle of side 3 Å; every N and C near its centre, so every link is short.
    backbone = np.zeros((3, 3, 3))
    backbone[:, 1, :2] = [[0.0, 0.0], [3.0, 0.0], [1.5, 2.6]]
    backbone[:, [0, 2]] = [0.75, 0.87, 0.0]
    backbone[:, 2, 2] = [0.1, 0.2, 0.3]
    src, dst = [0, 1, 2, 0], [1, 2, 0, 2]
    chains = link_chains(_predictions(backbone, src, dst, [0.95] * 4))
    assert sorted(len(c) for c in chains) == [3]


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        _predictions(_line(3), [0], [5], [0.9])
    with pytest.raises(ValueError):
        ResiduePredictions(
            backbone=_line(2),
            aa_probs=np.zeros((3, 20)),
            confidence=np.zeros(2),
            existence=np.zeros(2),
            edge_src=[],
            edge_dst=[],
            edge_prob=[],
        )


def test_fast_for_5000_nodes(il2):
    """40 shifted copies of il2 (5,040 residues): linking takes well under a second."""
    backbone, aatype, numbers = il2
    copies = 40
    shifts = 60.0 * np.arange(copies)[:, None, None, None] * np.array([1.0, 0, 0])
    big = (backbone[None] + shifts).reshape(-1, 3, 3)
    rng = np.random.default_rng(3)
    offsets = 1000 * np.repeat(np.arange(copies), len(aatype))
    simulated = simulate_predictions(
        big, np.tile(aatype, copies), np.tile(numbers, copies) + offsets, rng, num_breaks=20
    )
    start = time.perf_counter()
    chains = link_chains(simulated.predictions)
    elapsed = time.perf_counter() - start
    assert sum(map(len, chains)) == simulated.kept_truth.sum()
    assert elapsed < 2.0


def test_chain_ids():
    assert chain_ids(3) == ["A", "B", "C"]
    ids = chain_ids(64)
    assert ids[61] == "9" and ids[62:] == ["AA", "AB"] and len(set(ids)) == 64
    with pytest.raises(ValueError):
        chain_ids(62 + 62**2 + 1)


def test_min_existence_is_a_parameter():
    predictions = _predictions(_line(3), [0, 1], [1, 2], [0.9, 0.9])
    predictions = dataclasses.replace(predictions, existence=np.array([0.9, 0.3, 0.9]))
    assert [len(c) for c in link_chains(predictions)] == [3]
    assert sorted(len(c) for c in link_chains(predictions, min_existence=0.5)) == [1, 1]


def test_a_stretch_pointing_backwards_is_linked_and_flagged():
    """Nodes 3-5 point back along the line (N and C swapped) and the network links them that
    way (5 -> 4 -> 3), as below 4 Å: step 4 joins 2 and 3 all the same, the chain runs the way
    most of its links say, and `runs_against` names the backward nodes."""
    backbone = _line(6)
    backbone[3:, [0, 2]] = backbone[3:, [2, 0]]
    src, dst, prob = [0, 1, 5, 4, 2], [1, 2, 4, 3, 3], [0.9, 0.9, 0.9, 0.9, 0.6]
    predictions = _predictions(backbone, src, dst, prob)
    chains = link_chains(predictions)
    assert [c.tolist() for c in chains] == [[0, 1, 2, 3, 4, 5]]
    np.testing.assert_array_equal(runs_against(backbone, chains), [0, 0, 0, 1, 1, 1])
    # Without the 2 -> 3 link the two stretches stay apart, each running its own way.
    apart = link_chains(_predictions(backbone, src[:4], dst[:4], prob[:4]))
    assert sorted(c.tolist() for c in apart) == [[0, 1, 2], [5, 4, 3]]
    assert not runs_against(backbone, apart).any()


def test_turned_frames_swap_n_and_c(il2):
    backbone = il2[0][:4]
    graph = alanine_graph(backbone)
    turned = graph.turned(np.array([False, True, False, False]))
    before, after = graph.atom14_positions, turned.atom14_positions
    np.testing.assert_array_equal(after[[0, 2, 3]], before[[0, 2, 3]])
    # N and C trade places (their ideal distances to CA differ by 0.07 Å); CA stays; the
    # side chain (CB, atom14 slot 4) is rebuilt 1.53 Å from CA, on the other side.
    np.testing.assert_allclose(after[1, 0], before[1, 2], atol=0.3)
    np.testing.assert_allclose(after[1, 2], before[1, 0], atol=0.3)
    np.testing.assert_allclose(after[1, 1], before[1, 1], atol=1e-5)
    assert abs(np.linalg.norm(after[1, 4] - after[1, 1]) - 1.53) < 0.02
    assert np.linalg.norm(after[1, 4] - before[1, 4]) > 1.0
    assert turned.next_prob[1, 0] == pytest.approx(0.1) and turned.previous_prob[1, 0] == pytest.approx(0.9)
    assert graph.turned(np.zeros(4, bool)) is graph


def test_trace_figures_of_a_faithful_trace(simulated, il2_path):
    """`bench.trace` on simulated network output that points every residue the right way:
    all directions right, no pair linked against the chain, step 4 loses no link."""
    from cryobuild.bench.trace import trace_figures

    reference = read_model(il2_path)
    figures = trace_figures(simulated.predictions, reference)
    assert figures["neighbour_pairs"] >= 0.9 * (reference.num_residues - 1)
    assert figures["neighbour_pairs"] <= figures["deposited_pairs"] == reference.follows().sum()
    assert figures["direction_right"] == 1.0
    assert figures["linked_against"] == 0
    assert figures["linked_with_step4"] >= figures["linked_directed"] > 0
    # every traced node is counted once by chain length, and the nodes of a faithful trace are
    # the deposited residues
    counted = sum(figures[f"nodes_{label}"] for label in ("1", "2-3", "4-9", ">=10"))
    assert counted == figures["traced"]
    assert figures["right_>=10"] >= 0.9 * figures["nodes_>=10"] > 0
    # its links join consecutive residues, and its nodes sit on the deposited Cα
    links = sum(figures[f"links_{kind}"] for kind in ("next", "skip", "same", "false", "other"))
    assert figures["links_next"] >= 0.9 * links > 0
    assert figures["nodes_helix"] > 0.9 and np.isnan(figures["candidates_helix"])
    # the step classes hold every link on the protein, and few of a faithful trace's skip
    assert sum(figures["step_links"]) == links - figures["links_false"]
    assert sum(figures["step_skips"]) == figures["links_skip"] <= 0.1 * links


def test_secondary_structure_of_a_helix_bundle_and_a_strand(il2_path):
    """`bench.trace.secondary_structure` on il2 (a four-helix bundle) calls most residues
    helix (its loops partly extended); an ideal extended chain (Cα 3.4 Å apart along it, zig-zag) is strand; a break in the
    numbering starts a new run."""
    import dataclasses

    from cryobuild.bench.trace import secondary_structure

    il2 = read_model(il2_path)
    structure = secondary_structure(il2)
    assert np.mean(structure == 1) > 0.6 and np.mean(structure == 2) < 0.25
    zigzag = np.array([[3.3 * i, 0.9 * (i % 2), 0.0] for i in range(10)])
    positions = np.zeros((10,) + il2.atom_positions.shape[1:], np.float32)
    positions[:, 1] = zigzag
    strand = dataclasses.replace(il2.take(np.arange(10)), atom_positions=positions,
                                 residue_number=np.arange(1, 11))
    assert np.all(secondary_structure(strand)[:8] == 2)
    # the same trace numbered in runs of two: no run holds an i to i+2 span
    broken = dataclasses.replace(strand, residue_number=np.array([1, 2, 10, 11, 20, 21, 30, 31, 40, 41]))
    assert np.all(secondary_structure(broken) == 0)


def test_a_link_no_protein_takes_gives_way_to_one_of_known_shape(il2_path):
    """il2's first 20 Cα, traced as nodes 0-9 linked on to a false node folded back 40° onto
    node 8 (a pseudo-bond angle no protein takes), and nodes 10-19 a chain of their own. No
    window holding the false link fits a known Cα shape, the junction of nodes 9 and 10 does, and
    the chain is traced through it; the false node is left alone. The true chain stays as it is."""
    model = read_model(il2_path)
    ca = model.ca[model.runs()[0][:20]].astype(np.float64)
    back = (ca[8] - ca[9]) / np.linalg.norm(ca[8] - ca[9])
    side = np.cross(back, ca[10] - ca[9])
    side /= np.linalg.norm(side)
    false = ca[9] + 3.8 * (np.cos(np.radians(40)) * back + np.sin(np.radians(40)) * side)
    nodes = np.vstack([ca, false])
    true = np.arange(20)
    assert shape_rms(np.stack([ca[i:i + SHAPE_WINDOW] for i in range(15)])).max() < SHAPE_MAX_RMS
    traced = [np.r_[true[:10], 20], true[10:]]
    assert [chain.tolist() for chain in relink_by_shape(traced, nodes)] == [true.tolist(), [20]]
    assert [chain.tolist() for chain in relink_by_shape([true], nodes)] == [true.tolist()]


def test_shape_fits_skip_only_fragments_that_cannot_fit():
    """A rotated, moved copy superposes exactly; `shape_rms` (which superposes only the pairs
    whose radii of gyration allow a fit within the cut) gives the best fit over every fragment
    where that is within the cut, and inf elsewhere."""
    from cryobuild.chains import load_ca_fragments

    rng = np.random.default_rng(0)
    fragments = load_ca_fragments()
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    assert superposed_squares(fragments[:5] @ rotation + 7.0, fragments[:5]) == pytest.approx(
        0.0, abs=1e-9)
    windows = fragments[rng.integers(0, len(fragments), 40)] + rng.normal(0, 0.3, (40, 6, 3))
    every = np.sqrt(np.maximum(superposed_squares(fragments[None], windows[:, None]), 0.0)
                    / SHAPE_WINDOW).min(axis=1)
    fits = shape_rms(windows)
    within = every <= SHAPE_MAX_RMS
    assert 0 < within.sum() < len(windows)
    assert np.allclose(fits[within], every[within]) and np.isinf(fits[~within]).all()
