"""The ``cryobuild`` command: verbs, help, and one-line errors for bad input (no tracebacks)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cryobuild.build_folder import RECORD_FILE, STAGING, BuildFolder
from cryobuild.cli import VERBS
from cryobuild.maps import DensityMap, read_map, write_map
from cryobuild.residues import one_letter


def run(*argv, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cryobuild", *argv], capture_output=True, text=True, cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb):
    result = run(verb, "--help")
    assert result.returncode == 0 and "usage" in result.stdout


@pytest.mark.parametrize("verb", ["build", "detect", "build_no_seq"])
def test_the_resolution_is_r_as_for_simulate(verb):
    from cryobuild.cli import build_parser

    argv = [verb, "-v", "map.mrc", "-o", "out", "-r", "3.4"] + (["-f", "s.fasta"] if verb == "build" else [])
    assert build_parser().parse_args(argv).resolution == 3.4


def test_the_demo_builds_il2_and_prints_its_scores(tmp_path):
    """README's first command: the demo simulates il2 at 3 Å, builds it at that resolution and
    prints the scores and the geometry (sequence recall 0.96 on this machine)."""
    import re

    result = run("demo", "-o", str(tmp_path / "demo"), "--quiet")
    assert result.returncode == 0, result.stderr
    final = re.search(r"final model: Cα recall ([\d.]+),.* sequence recall ([\d.]+),", result.stdout)
    assert final and float(final[1]) >= 0.9 and float(final[2]) >= 0.85, result.stdout
    assert "    geometry: bonds " in result.stdout
    fit = re.search(r"map fit: CC_mask ([\d.]+) ", result.stdout)
    assert fit and float(fit[1]) > 0.8, result.stdout
    assert (tmp_path / "demo" / "model.cif").is_file() and (tmp_path / "demo" / "map.mrc").is_file()


def test_simulate_writes_a_map_that_lines_up(tmp_path, il2_path):
    from cryobuild.models import read_model

    out = tmp_path / "il2.mrc"
    result = run("simulate", "-m", str(il2_path), "-r", "3.0", "-o", str(out), "--voxel-size",
                 "1.2", "--snr", "5", "--origin", "-30", "-50", "-30")
    assert result.returncode == 0, result.stderr
    density = read_map(out)
    np.testing.assert_allclose(density.origin, [-30, -50, -30], atol=1e-3)
    np.testing.assert_allclose(density.voxel_size, 1.2, atol=1e-4)
    z = (density.interpolate(read_model(il2_path).ca) - density.grid.mean()) / density.grid.std()
    assert z.mean() > 1.5


@pytest.fixture
def bad_inputs(tmp_path, il2_path):
    """Files that must be refused: name -> (path, text expected in the message)."""
    from cryobuild.simulate import SimulationOptions, simulate_map
    from cryobuild.data import read_structure

    density = simulate_map(read_structure(il2_path), SimulationOptions(resolution=4.0, voxel_size=2.0))
    good_map = write_map(density, tmp_path / "good.mrc")
    files = {}
    (tmp_path / "empty.mrc").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.mrc", "empty")
    raw = good_map.read_bytes()
    (tmp_path / "truncated.mrc").write_bytes(raw[: len(raw) - 1000])
    files["truncated"] = (tmp_path / "truncated.mrc", "truncated: the header says ")
    header = bytearray(raw)
    header[8:12] = np.array(2 * density.grid.shape[0], "<i4").tobytes()  # NZ: twice the data
    (tmp_path / "promising.mrc").write_bytes(bytes(header))
    files["promising"] = (tmp_path / "promising.mrc", "truncated: the header says ")
    far = density.with_grid(np.ones_like(density.grid))
    write_map(DensityMap(far.grid, far.voxel_size, far.origin + 500), tmp_path / "far_mask.mrc")
    files["mask"] = (tmp_path / "far_mask.mrc", "the mask does not overlap the map")
    (tmp_path / "text.mrc").write_text("HEADER    this is a PDB file, not a map\n" * 40)
    files["text"] = (tmp_path / "text.mrc", "not")
    write_map(density.with_grid(np.zeros_like(density.grid)), tmp_path / "zeros.mrc")
    files["zeros"] = (tmp_path / "zeros.mrc", "constant")
    (tmp_path / "digits.fasta").write_text(">A\nMKT1234LLV\n")
    files["digits"] = (tmp_path / "digits.fasta", "1")
    (tmp_path / "taken").write_text("a file where the output folder should go\n")
    files["output"] = (tmp_path / "taken", "is a file, not a folder")
    return good_map, files


@pytest.mark.parametrize("case", ["empty", "truncated", "promising", "text", "zeros", "digits", "mask",
                                  "output"])
def test_bad_input_gives_one_line_error(bad_inputs, tmp_path, case):
    good_map, files = bad_inputs
    path, expected = files[case]
    fasta = tmp_path / "ok.fasta"
    fasta.write_text(">A\nAPTSSSTKKTQLQLEHLLLDLQMILNGINNYKNPKLTRMLTFKFYMPKK\n")
    if case == "digits":
        argv = ["build", "-v", str(good_map), "-f", str(path), "-o", str(tmp_path / "out")]
    elif case == "output":  # refused before the build starts, not after it
        argv = ["build", "-v", str(good_map), "-f", str(fasta), "-o", str(path)]
    elif case == "mask":
        argv = ["build", "-v", str(good_map), "-f", str(fasta), "-o", str(tmp_path / "out"),
                "--mask", str(path)]
    else:
        argv = ["detect", "-v", str(path), "-o", str(tmp_path / "out"), "--baseline"]
    result = run(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in lines[0] and expected in lines[0]
    assert not (tmp_path / "out").exists()


def fasta_of(structure_path, folder):
    """A FASTA file of the sequence of a structure file."""
    from cryobuild.models import read_model
    from cryobuild.residues import AA_ORDER

    residues = "".join(AA_ORDER[a] for a in read_model(structure_path).aatype if a < len(AA_ORDER))
    path = folder / "seq.fasta"
    path.write_text(f">seq\n{residues}\n")
    return path


@pytest.mark.parametrize("verb, extra", [
    ("build", ["--rounds", "0"]), ("build", ["--device", "tpu"]), ("build_no_seq", ["--device", "tpu"]),
    ("detect", ["--device", "tpu"]), ("detect", ["--threshold", "2"]),
])
def test_errors_found_before_any_work_leave_no_folder(bad_inputs, tmp_path, il2_path, verb, extra):
    good_map, _ = bad_inputs
    sequences = [] if verb != "build" else ["-f", str(fasta_of(il2_path, tmp_path))]
    result = run(verb, "-v", str(good_map), *sequences, "-o", str(tmp_path / "out"), *extra)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_build_into_a_folder_another_build_holds_is_refused(bad_inputs, tmp_path, il2_path):
    good_map, _ = bad_inputs
    out = tmp_path / "out"
    with BuildFolder.claim(out) as running:
        result = run("build", "-v", str(good_map), "-f", str(fasta_of(il2_path, tmp_path)), "-o", str(out))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"cryobuild build: error: {out}: build {running.build_id} (pid {os.getpid()} ")
    assert line.endswith("is writing into this folder; wait for it to end, or choose another output folder")
    assert not out.exists()  # the running build made it, and left it empty


def test_engine_warnings_are_printed_once(tmp_path, il2_path):
    """A map of noise on 2.5 Å voxels: a warning (coarse voxels), then the refusal."""
    grid = np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32)
    noise = write_map(DensityMap(grid, 2.5, np.zeros(3)), tmp_path / "noise.mrc")
    result = run("build", "-v", str(noise), "-f", str(fasta_of(il2_path, tmp_path)), "-o",
                 str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("cryobuild: warning: the map's voxels are 2.5 Å")
    assert lines[1].startswith("cryobuild build: error: only ") and "no protein density" in lines[1]


def wait_for(path, process, timeout=600):
    """Poll until ``path`` exists (True) or ``process`` ends (False)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def start_build(*argv, env=None):
    return subprocess.Popen([sys.executable, "-m", "cryobuild", "build", *argv, "--rounds", "2",
                             "--no-relax", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


@pytest.fixture(scope="module")
def il2_files(tmp_path_factory, il2_map_3A, il2_path):
    """The noise-free 3 Å il2 map, its sequence and a box mask of ones, as files."""
    folder = tmp_path_factory.mktemp("il2")
    density, _ = il2_map_3A
    box = write_map(density.with_grid(np.ones_like(density.grid)), folder / "box.mrc")
    return write_map(density, folder / "il2.mrc"), fasta_of(il2_path, folder), box


@pytest.fixture(scope="module")
def reused_folder_build(tmp_path_factory, il2_files):
    """A 2-round build (with a box mask of ones) into a folder that holds an earlier 5-round
    build; what the folder held when round 1 appeared in the staging folder; the result."""
    map_path, fasta, box = il2_files
    out = tmp_path_factory.mktemp("reused") / "out"
    (out / "rounds").mkdir(parents=True)
    (out / "hmm_profiles").mkdir()
    for name in [f"rounds/round_{n}.cif" for n in range(1, 6)] + [
            "model.cif", "chains.csv", "build.log", "hmm_profiles/0001_A.hmm"]:
        (out / name).write_text("earlier\n")
    # as that build recorded it (a model changed since would be kept, not replaced)
    digest = hashlib.sha256(b"earlier\n").hexdigest()
    (out / RECORD_FILE).write_text(json.dumps({"build_id": "earlier", "sha256": {
        name: digest for name in ("model.cif", "chains.csv", "build.log")}}))
    process = start_build("-v", str(map_path), "-f", str(fasta), "-o", str(out), "--mask", str(box))
    staged = out / STAGING / "rounds" / "round_1.cif"
    seen = None
    if wait_for(staged, process):
        seen = {"round": staged.read_text(), "model": (out / "model.cif").read_text()}
    stdout, stderr = process.communicate(timeout=600)
    return out, seen, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def build_id_of(path) -> str:
    """The build id stamped in an output file."""
    text = path.read_text()
    if path.suffix == ".cif":
        return next(line.split()[1] for line in text.splitlines() if line.startswith("_cryobuild.build_id"))
    if path.suffix == ".csv":
        assert text.startswith("# cryobuild build ")
        return text.splitlines()[0].split()[-1]
    return json.loads(text)["build_id"]


def test_a_reused_folder_holds_only_the_new_build(reused_folder_build):
    out, _, result = reused_folder_build
    assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [RECORD_FILE, "aa_probabilities.csv", "build.log", "ca_points.cif", "chains.csv",
                     "model.cif", "model_raw.cif", "rounds/round_1.cif", "rounds/round_2.cif",
                     "unassigned_placements.csv"]
    build_id = build_id_of(out / "build.log")
    assert {name: build_id_of(out / name) for name in files} == {name: build_id for name in files}
    # the final model's fit to the map, and each chain's (map_fit)
    fit = json.loads((out / "build.log").read_text())["map_fit"]
    chains = [row.split(",")[0] for row in (out / "chains.csv").read_text().splitlines()[2:]]
    assert 0.5 < fit["cc_mask"] <= 1 and sorted(fit["chains"]) == sorted(chains), fit


def test_each_round_is_written_as_it_finishes(reused_folder_build):
    out, seen, result = reused_folder_build
    assert seen is not None, "round 1 was not written while the build ran"
    assert seen["model"] == "earlier\n"  # the earlier build's outputs stay until the new one ends
    build_id = build_id_of(out / "build.log")
    assert f"_cryobuild.build_id {build_id}" in seen["round"]


def test_a_box_mask_of_ones_is_a_valid_mask(reused_folder_build):
    _, _, result = reused_folder_build
    assert result.returncode == 0 and "constant" not in result.stderr, result.stderr


@pytest.mark.parametrize("stop, status, said", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 143, "terminated")])
def test_an_interrupted_build_says_where_its_finished_rounds_are(il2_files, tmp_path, stop, status,
                                                                 said):
    """Ctrl-C (SIGINT) or ``kill`` (SIGTERM, as ``timeout`` or a batch scheduler sends it) after
    round 1: exit status 128 + the signal, no final model, and the rounds written so far named
    on stderr (the build is started with SIGINT's default action, as a terminal's foreground
    process has it, where a background shell would have it ignored)."""
    map_path, fasta, _ = il2_files
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "cryobuild", "build", "-v", str(map_path), "-f", str(fasta), "-o",
         str(out), "--rounds", "8", "--no-relax", "--quiet"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert wait_for(out / STAGING / "rounds" / "round_1.cif", process)
        process.send_signal(stop)
    finally:
        stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == status, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == f"cryobuild build: {said}"
    assert lines[-2].startswith("cryobuild build: the ") and f"{out / STAGING / 'rounds'}" in lines[-2]
    assert not (out / "model.cif").exists() and (out / STAGING / "rounds" / "round_1.cif").is_file()


def test_a_write_error_after_the_build_keeps_the_result(il2_files, tmp_path):
    """The staging folder is replaced by a file while the build runs: round 2 cannot be written
    there, nor the final outputs, which go to a temporary folder instead."""
    map_path, fasta, _ = il2_files
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()
    process = start_build("-v", str(map_path), "-f", str(fasta), "-o", str(out),
                          env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    try:
        assert wait_for(out / STAGING / "rounds" / "round_1.cif", process)
        shutil.rmtree(out / STAGING)
        (out / STAGING).write_text("in the way\n")
    finally:
        stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 2 and "Traceback" not in stderr, stderr
    [fallback] = (tmp_path / "tmp").glob("cryobuild-*")
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith(f"cryobuild build: error: {out}: cannot write the outputs (")
    assert lines[-1].endswith(f"; they are in {fallback} instead")
    assert all(line.startswith("cryobuild: warning: cannot write round 2") for line in lines[:-1])
    build_id = build_id_of(fallback / "build.log")
    for name in ("model.cif", "model_raw.cif", "chains.csv", "rounds/round_1.cif", "rounds/round_2.cif"):
        assert build_id_of(fallback / name) == build_id
    assert not (out / "model.cif").exists()


def test_the_chain_lines_list_threaded_and_placed_chains_and_sum_up_the_rest(tmp_path):
    """A 4-5 Å build leaves tens of short unassigned chains: the threaded ones and those with
    a named placement are listed, then the longest others up to `CHAIN_LINES`, the rest in
    one line."""
    from cryobuild.chains import chain_ids
    from cryobuild.cli.build import CHAIN_LINES, chain_lines
    from cryobuild.pipeline import ChainReport
    from cryobuild.thread.hints import Placement

    names = chain_ids(30)
    reports = [ChainReport(names[0], "il2", 1, 40, 40, 80.0, 1e-20, 85.0)] + [
        ChainReport(name, "", 1, 2 + k % 7, 2 + k % 7, float("nan"), float("inf"), 70.0)
        for k, name in enumerate(names[1:])]
    placed = Placement(names[29], 1, "il2", 50, 54, 1, 5, 3.0, 0.05, 1.0, 0)
    lines = chain_lines(reports, (placed,), tmp_path)
    assert lines[0] == "  chain A: il2 1-40, 40 residues, E = 1e-20, confidence 85"
    chains = [line.split()[1].rstrip(":") for line in lines if line.startswith("  chain ")]
    assert len(chains) == CHAIN_LINES and names[29] in chains
    assert f"  chain {names[29]}: unassigned 1-{2 + 28 % 7}, {2 + 28 % 7} residues, might be il2 " \
           "50-54 (E = 0.05), confidence 70" in lines
    listed = [r for r in reports if r.chain_id in chains and not r.threaded and r.chain_id != names[29]]
    rest = [r for r in reports[1:] if r.chain_id not in chains]
    assert min(r.residues for r in listed) >= max(r.residues for r in rest)
    assert lines[-2] == (f"  and {len(rest)} more unassigned chains of {min(r.residues for r in rest)}-"
                         f"{max(r.residues for r in rest)} residues ({tmp_path / 'chains.csv'})")
    assert lines[-1] == (f"  (places for the unassigned chains: {tmp_path / 'unassigned_placements.csv'}; "
                         f"cryobuild assign {tmp_path} CHAIN gives a chain its best one, or Assign "
                         f"in PyMOL after cryobuild gui MAP FASTA --model {tmp_path / 'model.cif'})")
    assert len(chain_lines(reports[:5], (), tmp_path)) == 5


def test_assign_gives_an_unassigned_chain_its_offered_place_in_the_build_folder(
        folder_with_an_unassigned_chain):
    """``cryobuild assign OUT B``: chain B takes the numbers and types of its placement, the
    tables follow, the folder's record too; an assigned chain, or an edited model, is refused."""
    from cryobuild.build_folder import as_written
    from cryobuild.build_outputs import read_chains_csv, read_placements_csv
    from cryobuild.models import read_model

    out, before, sequence = folder_with_an_unassigned_chain
    placement = read_placements_csv(out / "unassigned_placements.csv")[0]
    assert placement.chain_id == "B"
    done = run("assign", str(out), "B")
    assert done.returncode == 0, done.stderr
    assert f"chain B: {len(placement.aligned)} residues as il2 {placement.first}-{placement.last}" \
        in done.stdout and "check it against the density" in done.stderr
    model = read_model(out / "model.cif")
    chain_b = model.chain_id == "B"
    assert model.entity_sequences["B"] == sequence
    assert model.residue_number[chain_b].tolist() == [p for _, p in placement.aligned]
    assert "".join(one_letter(int(a)) for a in model.aatype[chain_b]) == "".join(
        sequence[p - 1] for _, p in placement.aligned)
    np.testing.assert_array_equal(model.atom_positions[model.chain_id == "A"],
                                  before.atom_positions[before.chain_id == "A"])
    reports = {r.chain_id: r for r in read_chains_csv(out / "chains.csv")}
    assert reports["B"].sequence == "il2" and reports["B"].first == placement.first
    assert read_placements_csv(out / "unassigned_placements.csv") == ()
    assert f"\nB,{placement.first}," in (out / "aa_probabilities.csv").read_text()
    assert json.loads((out / "build.log").read_text())["assigned"][0]["chain"] == "B"
    assert as_written(out, "model.cif") and as_written(out, "chains.csv")
    assert not (out / STAGING).exists()

    again = run("assign", str(out), "B")
    assert again.returncode == 2 and "no placement for chain 'B'" in again.stderr
    with BuildFolder.claim(out):  # a build running into the folder
        busy = run("assign", str(out), "A")
    assert busy.returncode == 2 and "build" in busy.stderr, busy.stderr
    assert as_written(out, "model.cif")
    with open(out / "model.cif", "a") as edited:  # a user's edit in place
        edited.write("# refined\n")
    refused = run("assign", str(out), "A")
    assert refused.returncode == 2 and "not as its build wrote it" in refused.stderr


def test_assign_in_a_folder_without_build_log_takes_the_map_and_fasta_given(
        folder_with_an_unassigned_chain):
    """A ``cryobuild batch`` folder has no build.log: the map and FASTA come from -v and -f."""
    out, _, _ = folder_with_an_unassigned_chain
    (out / "build.log").unlink()
    asked = run("assign", str(out), "B")
    assert asked.returncode == 2 and "give them with -v and -f" in asked.stderr
    done = run("assign", str(out), "B", "-v", str(out.parent / "il2.mrc"), "-f",
               str(out.parent / "il2.fasta"))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "build.log").read_text())["assigned"][0]["chain"] == "B"


def test_rebuild_replaces_a_region_of_the_build_folder_and_its_tables_follow(
        folder_with_an_unassigned_chain):
    """``cryobuild rebuild OUT A:70-85 --take-new``: the rest of the model keeps its atoms,
    every table describes the new model, the untouched chain keeps its placement, build.log
    records the rebuild; bad region names are one-line errors and leave the folder alone."""
    from cryobuild.build_folder import as_written
    from cryobuild.build_outputs import (read_aa_probabilities_csv, read_chains_csv,
                                         read_placements_csv)
    from cryobuild.models import read_model

    out, before, _ = folder_with_an_unassigned_chain
    untouched = read_placements_csv(out / "unassigned_placements.csv")
    for spec, message in (("Z:1-5", "names no residue of the model (its chains: A 1-126, B 1-25)"),
                          ("A:9-3", "the last residue comes before the first"),
                          ("A:x", "name residues as CHAIN")):
        refused = run("rebuild", str(out), spec)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    both = run("rebuild", str(out), "A:70-85", "--around", "0", "0", "0")
    assert both.returncode == 2 and "not both" in both.stderr
    corner = read_map(out.parent / "il2.mrc").origin + 4.0  # solvent: no candidate there
    empty = run("rebuild", str(out), "--around", *map(str, corner), "--radius", "3")
    assert empty.returncode == 2 and "nothing to build in this region" in empty.stderr, empty.stderr
    assert as_written(out, "model.cif")

    done = run("rebuild", str(out), "A:70-85", "--take-new", "--quiet")
    assert done.returncode == 0, done.stderr
    model = read_model(out / "model.cif")
    outside = (before.chain_id == "B") | (before.residue_number < 70) | (before.residue_number > 85)
    kept = {(c, n): xyz for c, n, xyz in zip(model.chain_id, model.residue_number, model.atom_positions)}
    for chain, number, xyz in zip(before.chain_id[outside], before.residue_number[outside],
                                  before.atom_positions[outside]):
        np.testing.assert_array_equal(kept[(chain, number)], xyz)
    probabilities = read_aa_probabilities_csv(out / "aa_probabilities.csv")
    assert sorted(probabilities) == sorted(kept)
    reports = read_chains_csv(out / "chains.csv")
    assert [r.chain_id for r in reports] == list(model.chains())
    for report in reports:
        rows = model.chain_id == report.chain_id
        assert report.residues == rows.sum() and report.first == model.residue_number[rows].min()
    assert reports[0].sequence == "il2" and reports[1].chain_id == "B" and not reports[1].sequence
    placements = read_placements_csv(out / "unassigned_placements.csv")
    assert [p for p in placements if p.chain_id == "B"] == [p for p in untouched if p.chain_id == "B"]
    rebuilt = json.loads((out / "build.log").read_text())["rebuilt"]
    assert [entry["region"] for entry in rebuilt] == ["A:70-85"] and rebuilt[0]["replaced"] == 16
    assert as_written(out, "model.cif") and as_written(out, "chains.csv")
    assert not (out / STAGING).exists()
