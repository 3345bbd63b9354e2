"""``cryobuild build`` end to end with the bundled weights on a simulated il2 map, and the
messages for inputs it cannot build from."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cryobuild.checkpoints import checkpoint_path
from cryobuild.evaluate import evaluate
from cryobuild.maps import DensityMap, write_map
from cryobuild.models import read_model
from cryobuild.residues import AA_ORDER

pytestmark = pytest.mark.skipif(
    not (checkpoint_path("detect").exists() and checkpoint_path("gnn").exists()),
    reason="no trained weights bundled",
)

#: Least Cα recall of the raw model on the noisy 3 Å il2 map (measured well above this).
MIN_RAW_CA_RECALL = 0.8
UNRELATED = "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRGRRQPIPKARRPEGRTWAQPGYPWPLYGNEG"


def cryobuild(*argv):
    return subprocess.run([sys.executable, "-m", "cryobuild", *argv], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def il2_inputs(tmp_path_factory, il2_path):
    from cryobuild.data import read_structure
    from cryobuild.simulate import SimulationOptions, simulate_map

    folder = tmp_path_factory.mktemp("il2")
    density = simulate_map(read_structure(il2_path), SimulationOptions(resolution=3.0, snr=3.0),
                           np.random.default_rng(0))
    map_path = write_map(density, folder / "il2.mrc")
    reference = read_model(il2_path)
    fasta = folder / "il2.fasta"
    fasta.write_text(">il2\n" + "".join(AA_ORDER[a] for a in reference.aatype if a < 20) + "\n")
    return map_path, fasta, reference, density


def test_build_writes_every_output_and_finds_the_calphas(il2_inputs, tmp_path):
    map_path, fasta, reference, _ = il2_inputs
    out = tmp_path / "out"
    result = cryobuild("build", "-v", str(map_path), "-f", str(fasta), "-o", str(out))
    assert result.returncode == 0, result.stderr
    # stderr is a pipe here, as in a batch job's log: one line per progress message, no bar
    progress = result.stderr.splitlines()
    assert "\r" not in result.stderr and any(line.endswith("gnn: round 3: crop 1/1") for line in progress)
    for name in ("model.cif", "model_raw.cif", "chains.csv", "aa_probabilities.csv", "build.log",
                 "ca_points.cif", "rounds/round_1.cif", "rounds/round_3.cif"):
        assert (out / name).is_file(), name
    assert not list(out.rglob(".*.part"))
    raw = evaluate(read_model(out / "model_raw.cif"), reference)
    assert raw.ca_recall >= MIN_RAW_CA_RECALL, raw.to_dict()
    if "0 residues" not in result.stdout:
        final = read_model(out / "model.cif")
        assert np.all((final.confidence >= 0) & (final.confidence <= 100))


@pytest.mark.parametrize("smoothing", [0.0, 1.0])
def test_map_without_protein_density_is_refused(tmp_path, il2_inputs, smoothing):
    from scipy.ndimage import gaussian_filter

    _, fasta, _, _ = il2_inputs
    grid = gaussian_filter(np.random.default_rng(0).normal(size=(48, 48, 48)), smoothing)
    noise = DensityMap(grid.astype(np.float32), 1.0 if smoothing else 1.5, np.zeros(3))
    map_path = write_map(noise, tmp_path / "noise.mrc")
    result = cryobuild("build", "-v", str(map_path), "-f", str(fasta), "-o", str(tmp_path / "o"), "--quiet")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no protein density" in result.stderr


def test_unrelated_sequence_gives_a_clear_warning(tmp_path, il2_inputs):
    map_path, _, _, _ = il2_inputs
    fasta = tmp_path / "other.fasta"
    fasta.write_text(">unrelated\n" + UNRELATED + "\n")
    result = cryobuild("build", "-v", str(map_path), "-f", str(fasta), "-o", str(tmp_path / "o"),
                       "--quiet", "--rounds", "1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # Nothing threads, or fragments thread by chance (the step-35,949 network put 22 residues in
    # two chains on this sequence, at E 0.005 and 0.018): either way the user is told the
    # sequence may not fit.
    assert ("no chain could be threaded" in result.stderr
            or "do the sequences belong to this map?" in result.stderr), result.stderr


@pytest.mark.parametrize("flag, value, message", [
    ("--max-evalue", "0", "max E-value must be positive"),
    ("--detection-threshold", "1.5", "detection threshold must be in (0, 1)"),
])
def test_bad_tuning_flags_give_a_clear_message(tmp_path, il2_inputs, flag, value, message):
    map_path, fasta, _, _ = il2_inputs
    result = cryobuild("build", "-v", str(map_path), "-f", str(fasta), "-o", str(tmp_path / "o"),
                       "--quiet", flag, value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr


def test_networks_load_the_detector_checkpoint_given(tmp_path):
    from cryobuild.errors import InputError
    from cryobuild.pipeline import Networks

    with pytest.raises(InputError, match="missing.pt: no such weights file"):
        Networks.load("cpu", detector=tmp_path / "missing.pt")


def test_protein_like_candidates_need_chain_neighbours():
    from cryobuild.pipeline import PROTEIN_LIKE_SCORE, _protein_like
    from cryobuild.points import CalphaPoints

    # a zig-zag strand with 3.8 Å steps: every candidate has a neighbour, all but the ends two
    steps = np.arange(12)
    strand = np.stack([steps * 3.3, np.where(steps % 2, 1.9, 0.0), np.zeros(12)], axis=1)
    assert np.allclose(np.linalg.norm(np.diff(strand, axis=0), axis=1), 3.81, atol=0.01)
    confident, weak = np.full(12, PROTEIN_LIKE_SCORE), np.full(12, PROTEIN_LIKE_SCORE - 0.1)
    assert _protein_like(CalphaPoints(strand, confident), region=False) == 12
    # weak candidates count as the inside of a chain (the large-map rule) ...
    assert _protein_like(CalphaPoints(strand, weak), region=False) == 10
    # ... but not when most candidates are scattered (below MIN_INSIDE_FRACTION)
    rng = np.random.default_rng(0)
    scattered = np.concatenate([strand, rng.uniform(100, 400, size=(60, 3))])
    assert _protein_like(CalphaPoints(scattered, np.full(72, 0.4)), region=False) == 0
    # spread 6 Å apart: nothing, whatever the probability
    assert _protein_like(CalphaPoints(strand * 1.6, np.ones(12)), region=False) == 0
    # a region rebuild needs only pairs
    pairs = np.concatenate([strand[:2] + [20.0 * k, 0, 0] for k in range(2)])
    assert _protein_like(CalphaPoints(pairs, np.full(4, 0.3)), region=True) == 4


def test_composition_stand_in_has_the_background_composition():
    from cryobuild.hmm import background_frequencies
    from cryobuild.pipeline import composition_stand_in

    for length in (8, 137, 500):
        sequence = composition_stand_in(length)
        counts = np.array([sequence.count(letter) for letter in AA_ORDER[:20]])
        assert len(sequence) == length
        assert np.all(np.abs(counts - length * background_frequencies()) < 1.0)


def test_map_warnings_name_coarse_voxels_and_thresholding():
    from cryobuild.pipeline import MAX_VOXEL_SIZE, map_warnings

    rng = np.random.default_rng(0)
    grid = rng.standard_normal((20, 20, 20)).astype(np.float32)
    assert map_warnings(DensityMap(grid, 1.0, 0.0)) == []
    [coarse] = map_warnings(DensityMap(grid, 3.0, 0.0))
    assert coarse.startswith("the map's voxels are 3 Å, so it holds no detail finer than 6 Å")
    assert map_warnings(DensityMap(grid, MAX_VOXEL_SIZE, 0.0)) == []
    [cut] = map_warnings(DensityMap(np.where(grid > 1.0, grid, 0), 1.0, 0.0))
    assert cut.startswith("the map looks thresholded: every voxel below 1")
