"""Tests of cryobuild.evaluate (METHODS §5 metrics) and the ``cryobuild evaluate`` verb.

The test structure is interleukin-2 (``il2.pdb``: one chain, 126 residues numbered 4-133 with a
gap), a demo file that pymol-open-source ships; its path is found without importing PyMOL, and
a copy with the blank chain ID named ``A`` is what the tests read.
"""

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cryobuild.cli import evaluate as evaluate_cli
from cryobuild.evaluate import CA_MATCH_CUTOFF, Metrics, evaluate, match_calpha
from cryobuild.models import BuiltModel, read_model
from cryobuild.residues import ATOM14_MASK, UNK_INDEX

_PYMOL = importlib.util.find_spec("pymol")
IL2 = Path(_PYMOL.submodule_search_locations[0], "pymol_path", "data", "demo", "il2.pdb")
pytestmark = pytest.mark.skipif(not IL2.exists(), reason="pymol-open-source demo data not found")

#: Tolerance for metrics that are exact up to float32 coordinate rounding.
EXACT = 1e-5


@pytest.fixture(scope="module")
def il2_path(tmp_path_factory) -> Path:
    """il2.pdb with its blank chain ID named ``A`` (models need non-empty chain IDs)."""
    import gemmi

    structure = gemmi.read_structure(str(IL2))
    for chain in structure[0]:
        chain.name = chain.name.strip() or "A"
    path = tmp_path_factory.mktemp("models") / "il2.pdb"
    structure.write_pdb(str(path))
    return path


@pytest.fixture(scope="module")
def il2(il2_path) -> BuiltModel:
    return read_model(il2_path)


def _with_positions(model: BuiltModel, positions: np.ndarray) -> BuiltModel:
    return dataclasses.replace(model, atom_positions=positions.astype(np.float32))


def test_model_against_itself_is_perfect(il2):
    metrics = evaluate(il2, il2)
    n_res = int(il2.atom_mask[:, 1].sum())
    assert metrics.n_pred == metrics.n_ref == metrics.n_matched == n_res
    for name in ("ca_recall", "ca_precision", "sequence_match", "sequence_recall", "ca_lddt"):
        assert getattr(metrics, name) == pytest.approx(1.0, abs=EXACT), name
    assert metrics.connectivity == 1.0
    assert metrics.n_links > 0.9 * n_res
    assert metrics.backbone_rmsd == metrics.ca_rmsd == metrics.median_ca_error == 0.0


def test_translation_changes_rmsd_not_lddt(il2):
    # Every atom moves by 0.75 Å: a true RMSD is exactly 0.75; distances are all preserved.
    shift = np.array([0.6, 0.0, 0.45])
    metrics = evaluate(_with_positions(il2, il2.atom_positions + shift), il2)
    assert metrics.ca_recall == 1.0
    assert metrics.backbone_rmsd == pytest.approx(0.75, abs=EXACT)
    assert metrics.median_ca_error == pytest.approx(0.75, abs=EXACT)
    assert metrics.ca_lddt == pytest.approx(1.0, abs=EXACT)


def test_gaussian_noise_gives_plausible_figures(il2):
    # sigma = 1 Å per coordinate, so each atom moves by a Maxwell-distributed distance:
    # RMS sqrt(3) = 1.73 Å, median 1.54 Å, and 2.9 % of atoms move beyond the 3 Å cutoff
    # (dropping those pulls the Cα RMSD of the matched pairs down to about 1.67 Å).
    # A pair distance then changes by about N(0, sqrt(2)) Å, so the four lDDT thresholds are
    # met with probability erf(t / 2): 0.28, 0.52, 0.84, 1.00, i.e. a Cα-lDDT of about 0.66.
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 1.0, il2.atom_positions.shape)
    noisy = _with_positions(il2, il2.atom_positions + noise)
    metrics = evaluate(noisy, il2)
    assert 0.95 <= metrics.ca_recall <= 1.0
    assert 0.95 <= metrics.ca_precision <= 1.0
    assert metrics.sequence_match > 0.95
    assert 1.5 < metrics.backbone_rmsd < 1.9
    assert 1.45 < metrics.ca_rmsd < 1.85
    assert 1.3 < metrics.median_ca_error < 1.8
    assert 0.58 < metrics.ca_lddt < 0.74
    assert metrics.connectivity > 0.9


def test_half_the_residues(il2):
    first_half = np.arange(il2.num_residues) < il2.num_residues // 2
    metrics = evaluate(il2.select(first_half), il2)
    assert metrics.ca_recall == pytest.approx(metrics.n_pred / metrics.n_ref)
    assert metrics.ca_recall == pytest.approx(0.5, abs=0.02)
    assert metrics.ca_precision == 1.0
    assert metrics.sequence_recall == metrics.ca_recall
    assert metrics.backbone_rmsd == 0.0
    assert metrics.connectivity == 1.0
    # Missing residues score 0 and cost the others the pairs they are part of.
    assert 0.0 < metrics.ca_lddt < 0.5


def test_empty_prediction_scores_zero(il2):
    metrics = evaluate(il2.select(np.zeros(il2.num_residues, dtype=bool)), il2)
    assert metrics.n_ref > 0
    assert all(value == 0 for name, value in metrics.to_dict().items() if name != "n_ref")


def test_swapped_residues_break_their_links(il2):
    # Residues 30 and 60 trade places: the 4 links into and out of them join the wrong residues.
    order = np.arange(il2.num_residues)
    order[[30, 60]] = order[[60, 30]]
    swapped = _with_positions(il2, il2.atom_positions[order])
    metrics = evaluate(swapped, il2)
    reference = evaluate(il2, il2)
    assert metrics.n_links == reference.n_links
    assert metrics.connectivity == pytest.approx((metrics.n_links - 4) / metrics.n_links)


def test_unknown_residue_type_never_counts_as_right(il2):
    backbone_only = il2.atom_mask & ATOM14_MASK[UNK_INDEX]
    unknown = dataclasses.replace(
        il2, aatype=np.full_like(il2.aatype, UNK_INDEX), atom_mask=backbone_only
    )
    metrics = evaluate(unknown, unknown)
    assert metrics.ca_recall == 1.0
    assert metrics.sequence_match == metrics.sequence_recall == 0.0


def test_match_prefers_more_pairs_over_shorter_ones():
    # Predicted 0 is 0.1 Å from reference 1 but also within reach of reference 0; predicted 1
    # can only reach reference 1. The best one-to-one matching pairs both.
    ref = np.array([[0.0, 0.0, 0.0], [2.9, 0.0, 0.0]])
    pred = np.array([[2.8, 0.0, 0.0], [5.7, 0.0, 0.0]])
    pred_index, ref_index = match_calpha(pred, ref)
    np.testing.assert_array_equal(pred_index, [0, 1])
    np.testing.assert_array_equal(ref_index, [0, 1])


def test_match_cutoff_is_exclusive():
    ref = np.zeros((1, 3))
    pred = np.array([[CA_MATCH_CUTOFF, 0.0, 0.0], [0.0, CA_MATCH_CUTOFF - 1e-6, 0.0]])
    pred_index, ref_index = match_calpha(pred, ref)
    np.testing.assert_array_equal(pred_index, [1])
    np.testing.assert_array_equal(ref_index, [0])


@pytest.mark.parametrize("n_pred, n_ref", [(0, 5), (5, 0), (0, 0)])
def test_match_with_no_atoms(n_pred, n_ref):
    pred_index, ref_index = match_calpha(np.zeros((n_pred, 3)), np.ones((n_ref, 3)))
    assert len(pred_index) == len(ref_index) == 0


def test_match_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"pred_xyz must have shape \[N, 3\]"):
        match_calpha(np.zeros((4, 2)), np.zeros((4, 3)))


def test_match_scales_to_thousands_of_residues():
    # 6,000 points in a protein-like density (one Cα per ~100 Å^3), 1 Å noise.
    rng = np.random.default_rng(3)
    ref = rng.uniform(0.0, 85.0, (6000, 3))
    pred = ref + rng.normal(0.0, 1.0, ref.shape)
    pred_index, ref_index = match_calpha(pred, ref)
    assert len(np.unique(pred_index)) == len(np.unique(ref_index)) == len(pred_index)
    assert len(pred_index) > 0.95 * len(ref)
    assert np.all(np.linalg.norm(pred[pred_index] - ref[ref_index], axis=1) < CA_MATCH_CUTOFF)


def test_to_dict_is_json_ready(il2):
    values = evaluate(il2, il2).to_dict()
    assert list(values) == [field.name for field in dataclasses.fields(Metrics)]
    assert json.loads(json.dumps(values)) == values


def _cli_args(path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate_cli.add_args(parser)
    return parser.parse_args(["-p", str(path), "-t", str(path), *extra])


def test_cli_main_prints_a_table(il2_path, capsys):
    assert evaluate_cli.main(_cli_args(il2_path)) == 0
    output = capsys.readouterr().out
    assert "Cα recall" in output and "backbone RMSD" in output


def test_cli_main_prints_json(il2_path, capsys):
    assert evaluate_cli.main(_cli_args(il2_path, "--json")) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["ca_recall"] == 1.0


def test_cli_with_a_map_gives_both_models_fit(il2_path, tmp_path, capsys):
    """``-v MAP``: the fit of each model to the map (CC_mask, `cryobuild.map_fit`)."""
    import gemmi

    from cryobuild.maps import write_map
    from cryobuild.simulate import SimulationOptions, simulate_map

    density = simulate_map(gemmi.read_structure(str(il2_path)), SimulationOptions(resolution=3.0))
    path = write_map(density, tmp_path / "il2.mrc")
    assert evaluate_cli.main(_cli_args(il2_path, "-v", str(path), "-r", "3", "--json")) == 0
    values = json.loads(capsys.readouterr().out)
    assert values["cc_mask_pred"] == values["cc_mask_ref"] > 0.9, values
    assert evaluate_cli.main(_cli_args(il2_path, "-v", str(path))) == 0  # resolution estimated
    assert "reference model's CC_mask at " in capsys.readouterr().out


def _run_cli(*arguments: str) -> subprocess.CompletedProcess:
    """Run ``python -m cryobuild evaluate`` with this process's environment (and PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "cryobuild", "evaluate", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_json_subprocess(il2_path):
    result = _run_cli("-p", str(il2_path), "-t", str(il2_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ca_lddt"] == pytest.approx(1.0, abs=EXACT)


def test_cli_missing_file_is_one_line_on_stderr(il2_path, tmp_path):
    missing = tmp_path / "missing.cif"
    result = _run_cli("-p", str(missing), "-t", str(il2_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.cif" in lines[0]


def test_precision_figures_place_the_unpaired_residues(il2):
    """`bench.precision`: Cα moved 3.5 Å out along their own Cα-Cβ bond are unpaired yet on the
    protein (by their Cβ); an unassigned chain's residues below a confidence cut leave with it."""
    from cryobuild.bench.precision import precision_figures

    with_cb = np.flatnonzero(il2.atom_mask[:, 4])
    moved_rows = with_cb[[10, 40, 70]]
    positions = il2.atom_positions.copy()
    bond = positions[moved_rows, 4] - positions[moved_rows, 1]  # atom14 slots: N, CA, C, O, CB
    positions[moved_rows, 1] += 3.5 * bond / np.linalg.norm(bond, axis=1, keepdims=True)
    confidence = np.full(il2.num_residues, 90.0, dtype=np.float32)
    confidence[:10] = 60.0
    # no chain sequences: every residue counts as unassigned
    model = dataclasses.replace(_with_positions(il2, positions), confidence=confidence,
                                entity_sequences={})
    figures = precision_figures(model, il2, [70.0])
    assert figures["unpaired"] == {"residues": 3, "near_protein": 3,
                                   "median_to_ca": pytest.approx(3.5, abs=1e-3),
                                   "in_short_chains": 0}
    recall, precision = figures["unassigned >= 70"]
    assert recall == pytest.approx((il2.num_residues - 10 - 3) / il2.num_residues)
    assert precision == pytest.approx((il2.num_residues - 10 - 3) / (il2.num_residues - 10))


def test_precision_figures_find_unassigned_chains_along_threaded_ones(il2):
    """`bench.precision`: an unassigned chain whose Cα sit on a threaded chain's side chains
    counts as lying along it, one elsewhere does not; without the former, precision rises."""
    from cryobuild.bench.precision import precision_figures
    from cryobuild.pipeline import join_models

    threaded = dataclasses.replace(il2, entity_sequences={"A": "X" * il2.num_residues})
    with_cb = np.flatnonzero(il2.atom_mask[:, 4])[20:26]
    along = il2.take(with_cb)
    positions = along.atom_positions.copy()
    positions[:, 1] = along.atom_positions[:, 4] + 1.0  # Cα 1 Å beyond each Cβ
    along = dataclasses.replace(along, atom_positions=positions, chain_id=np.full(6, "B"),
                                entity_sequences={})
    apart = il2.take(np.arange(30, 36))
    apart = dataclasses.replace(apart, atom_positions=apart.atom_positions + 30.0,
                                chain_id=np.full(6, "C"), entity_sequences={})
    model = join_models([threaded, along, apart])
    figures = precision_figures(model, il2, [])
    assert figures["beside threaded"] == {"paired": 0, "unpaired": 6}
    n = il2.num_residues
    assert figures["as built"][1] == pytest.approx(n / (n + 12))
    recall, precision = figures["without beside threaded"]
    assert recall == pytest.approx(1.0) and precision == pytest.approx(n / (n + 6))


def test_type_information_scores_residues_near_a_deposited_calpha(il2):
    """`bench.real.type_information`: the mean -ln p of the deposited types over the residues
    within 2 Å of a deposited Cα; residues farther away are not scored."""
    from cryobuild.bench.real import type_information

    probs = np.full((il2.num_residues, 20), 0.5 / 19, dtype=np.float32)
    probs[np.arange(il2.num_residues), np.minimum(il2.aatype, 19)] = 0.5
    assert type_information(il2, probs, il2) == pytest.approx(-np.log(0.5), abs=1e-6)
    far = il2.atom_positions.copy()
    far[: il2.num_residues // 2] += 30.0  # half the residues far from every Cα
    probs[: il2.num_residues // 2] = 1.0 / 20
    assert type_information(_with_positions(il2, far), probs, il2) == pytest.approx(-np.log(0.5), abs=1e-6)
    assert np.isnan(type_information(_with_positions(il2, il2.atom_positions + 100.0), probs, il2))


def test_seed_spread_gives_each_bands_mean_and_range_over_the_seeds(capsys):
    """`bench.real.print_seed_spread`: per band, the maps' mean final Cα / sequence recall for
    each seed, then their mean and range; maps the networks saw stay out."""
    from cryobuild.bench.real import print_seed_spread

    def row(seed, resolution, sequence, seen=False):
        return {"seed": seed, "resolution": resolution, "seen": seen, "final_ca_recall": 0.8,
                "final_sequence_recall": sequence}

    rows = [row(0, 4.0, 0.0), row(0, 4.3, 0.2), row(1, 4.0, 0.4), row(1, 4.3, 0.2),
            row(1, 4.2, 1.0, seen=True), row(0, 3.0, 0.9), row(1, 3.0, 0.9)]
    print_seed_spread(rows)
    lines = {line.split(" | ")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["| 3.5-4.5 Å"].endswith("| 0.80 / 0.10 | 0.80 / 0.30 | 0.80 / 0.20 | 0.00 / 0.20 |")
    assert lines["| <= 3.5 Å"].endswith("| 0.80 / 0.90 | 0.80 / 0.90 | 0.80 / 0.90 | 0.00 / 0.00 |")
    assert "| > 4.5 Å" not in lines


def test_register_accuracy_counts_threaded_residues_numbered_as_the_reference(il2):
    """il2 (numbered 4-133, a gap) threaded onto its own sequence from residue 1: numbered as
    the reference residue's place in that sequence, every matched residue is right; the same
    chain numbered one position on, none is, though the residue types still match where
    neighbours share them. A chain without an entity sequence is not judged."""
    from cryobuild.residues import AA_ORDER

    sequence = "".join(AA_ORDER[t] for t in il2.aatype)  # the residues present, in order
    threaded = dataclasses.replace(il2, residue_number=np.arange(1, il2.num_residues + 1),
                                   entity_sequences={"A": sequence})
    metrics = evaluate(threaded, il2)
    assert metrics.n_threaded_matched == metrics.n_matched
    assert metrics.register_accuracy == 1.0
    shifted = dataclasses.replace(threaded, residue_number=threaded.residue_number + 1)
    assert evaluate(shifted, il2).register_accuracy == 0.0
    unassigned = dataclasses.replace(threaded, entity_sequences={})
    assert evaluate(unassigned, il2).n_threaded_matched == 0


def test_bench_means_pool_the_register_and_count_failed_builds_as_zero():
    """`bench.real.figure`: the register of several builds is their threaded residues pooled (9
    of 10 and 0 of 0 give 0.9, not the mean of the shares); a failed build counts 0 in a recall;
    the types read once per map skip the builds without them."""
    from cryobuild.bench.real import figure

    builds = [{"final_threaded_matched": 10, "final_numbered_right": 9, "final_register": 0.9,
               "final_ca_recall": 0.8, "type_accuracy": 0.4},
              {"final_threaded_matched": 0, "final_numbered_right": 0, "final_ca_recall": 0.6},
              {"error": "failed"}]
    assert figure(builds, "final_register") == pytest.approx(0.9)
    assert figure(builds, "final_ca_recall") == pytest.approx(1.4 / 3)
    assert figure(builds, "type_accuracy") == pytest.approx(0.4)
    assert np.isnan(figure(builds[1:], "final_register"))


def test_bench_real_scores_a_build_of_a_case(il2_path, tmp_path):
    """`bench.real.run_map` builds a case folder's map and scores it against its model (the
    detector's candidates and the raw and final models), without an error row."""
    from cryobuild.bench.real import network_pairs, run_map
    from cryobuild.data import DevCase, read_structure
    from cryobuild.maps import write_map
    from cryobuild.pipeline import BuildOptions
    from cryobuild.simulate import SimulationOptions, simulate_map

    density = simulate_map(read_structure(il2_path), SimulationOptions(resolution=3.0),
                           np.random.default_rng(0))
    map_path = write_map(density, tmp_path / "il2.mrc")
    case = DevCase("il2", tmp_path, map_path, 3.0, il2_path, None)
    row = run_map(case, network_pairs(None), BuildOptions(resolution=3.0, rounds=1), "cpu",
                  reference_figures=False)
    assert "error" not in row
    assert row["detector_recall"] > 0.8 and row["final_ca_recall"] > 0.5
