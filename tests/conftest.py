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
