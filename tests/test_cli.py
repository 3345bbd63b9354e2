"""The ``cryobuild`` command: verbs, help, and one-line errors for bad input (no tracebacks)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cryobuild.cli import VERBS
from cryobuild.maps import read_map


def run(*argv, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cryobuild", *argv], capture_output=True, text=True, cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb):
    result = run(verb, "--help")
    assert result.returncode == 0 and "usage" in result.stdout


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
    from cryobuild.maps import write_map
    from cryobuild.simulate import SimulationOptions, simulate_map
    from cryobuild.data import read_structure

    density = simulate_map(read_structure(il2_path), SimulationOptions(resolution=4.0, voxel_size=2.0))
    good_map = write_map(density, tmp_path / "good.mrc")
    files = {}
    (tmp_path / "empty.mrc").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.mrc", "empty")
    raw = good_map.read_bytes()
    (tmp_path / "truncated.mrc").write_bytes(raw[: len(raw) - 1000])
    files["truncated"] = (tmp_path / "truncated.mrc", "truncated")
    (tmp_path / "text.mrc").write_text("HEADER    this is a PDB file, not a map\n" * 40)
    files["text"] = (tmp_path / "text.mrc", "not")
    write_map(density.with_grid(np.zeros_like(density.grid)), tmp_path / "zeros.mrc")
    files["zeros"] = (tmp_path / "zeros.mrc", "constant")
    (tmp_path / "digits.fasta").write_text(">A\nMKT1234LLV\n")
    files["digits"] = (tmp_path / "digits.fasta", "1")
    (tmp_path / "taken").write_text("a file where the output folder should go\n")
    files["output"] = (tmp_path / "taken", "is a file, not a folder")
    return good_map, files


@pytest.mark.parametrize("case", ["empty", "truncated", "text", "zeros", "digits", "output"])
def test_bad_input_gives_one_line_error(bad_inputs, tmp_path, case):
    good_map, files = bad_inputs
    path, expected = files[case]
    fasta = tmp_path / "ok.fasta"
    fasta.write_text(">A\nAPTSSSTKKTQLQLEHLLLDLQMILNGINNYKNPKLTRMLTFKFYMPKK\n")
    if case == "digits":
        argv = ["build", "-v", str(good_map), "-f", str(path), "-o", str(tmp_path / "out")]
    elif case == "output":  # refused before the build starts, not after it
        argv = ["build", "-v", str(good_map), "-f", str(fasta), "-o", str(path)]
    else:
        argv = ["detect", "-v", str(path), "-o", str(tmp_path / "out"), "--baseline"]
    result = run(*argv)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in lines[0] and expected in lines[0]
