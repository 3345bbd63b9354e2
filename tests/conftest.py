"""Shared fixtures: the demo structure PyMOL ships, the optional shared data, small maps, an
engine."""

from __future__ import annotations

import numpy as np
import pytest

from cryobuild.data import data_root
from cryobuild.demo_data import demo_structure_path
from cryobuild.errors import InputError


@pytest.fixture(scope="session")
def il2_path():
    return demo_structure_path("il2.pdb")


@pytest.fixture(scope="session")
def shared_data():
    """The ../shared/data folder, or skip (a fresh clone has none)."""
    try:
        return data_root()
    except InputError:
        pytest.skip("shared data not available")


@pytest.fixture(scope="session")
def il2_map_3A(il2_path):
    """A noise-free 3 Å map simulated from il2 on a 1 Å grid, and the structure."""
    from cryobuild.data import read_structure
    from cryobuild.simulate import SimulationOptions, simulate_map

    structure = read_structure(il2_path)
    density = simulate_map(structure, SimulationOptions(resolution=3.0), np.random.default_rng(0))
    return density, structure


@pytest.fixture(scope="session")
def il2_view_3A(il2_map_3A):
    """The il2 3 Å map as the networks see it (`features.standardise`), and the structure."""
    from cryobuild.features import standardise

    density, structure = il2_map_3A
    return standardise(density, 3.0), structure


@pytest.fixture(scope="module")
def engine():
    """An `Engine` on the CPU with its networks loaded; its jobs are cancelled at the end."""
    from cryobuild.engine import Engine

    engine = Engine("cpu")
    engine.preload()
    yield engine
    engine.close()


@pytest.fixture
def folder_with_an_unassigned_chain(tmp_path, il2_map_3A, il2_path):
    """A build folder as ``cryobuild build`` leaves it, made in code: il2's map and sequence,
    a final model whose residues 31-55 are an unassigned chain B (numbered 1-25), with a
    placement for it (from residue types right at 60%), and its build.log."""
    import dataclasses
    import json

    from cryobuild.build_folder import BuildFolder
    from cryobuild.build_outputs import write_final
    from cryobuild.maps import write_map
    from cryobuild.residues import one_letter
    from cryobuild.sequences import Sequence
    from cryobuild.models import read_model
    from cryobuild.pipeline import ChainReport
    from cryobuild.thread.hints import unassigned_placements

    from gnn_synth import noisy_probs, with_unassigned_stretch

    density, _ = il2_map_3A
    map_path = write_map(density, tmp_path / "il2.mrc")
    reference = read_model(il2_path)
    reference = dataclasses.replace(reference, residue_number=np.arange(1, reference.num_residues + 1))
    sequence = Sequence("il2", "".join(one_letter(int(a)) for a in reference.aatype))
    (tmp_path / "il2.fasta").write_text(f">il2\n{sequence.residues}\n")
    rows = np.arange(reference.num_residues)
    model = with_unassigned_stretch(reference, (rows >= 30) & (rows < 55), sequence.residues)
    model = model.take(np.argsort(model.chain_id, kind="stable"))  # chain A, then B
    probs = noisy_probs(model.aatype, 0.6, np.random.default_rng(3)).astype(np.float32)
    placements = unassigned_placements(model, probs, [sequence])
    reports = (ChainReport("A", "il2", 1, 126, 101, 150.0, 1e-30, 80.0),
               ChainReport("B", "", 1, 25, 25, float("nan"), float("inf"), 80.0))
    out = tmp_path / "out"
    with BuildFolder.claim(out) as folder:
        def write(destination):
            write_final(model, probs, reports, placements, destination, folder.build_id)
            log = {"build_id": folder.build_id, "map": str(map_path),
                   "fasta": str(tmp_path / "il2.fasta"), "resolution": 3.0}
            (destination / "build.log").write_text(json.dumps(log))

        folder.save(write)
    return out, model, sequence.residues
