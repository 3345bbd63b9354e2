"""How a model fits its map (`cryobuild.map_fit`): high for the model the map was computed
from, lower where it lies off its density, per chain, and the same on anisotropic voxels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cryobuild.map_fit import map_fit, mask_radius
from cryobuild.maps import resample
from cryobuild.models import read_model


@pytest.fixture(scope="module")
def il2_model(il2_path):
    model = read_model(il2_path)
    half = model.num_residues // 2
    chain = np.where(np.arange(model.num_residues) < half, "A", "B")  # two chains to tell apart
    return dataclasses.replace(model, chain_id=chain.astype(model.chain_id.dtype))


def test_the_model_of_the_map_fits_it_and_a_shifted_chain_does_not(il2_map_3A, il2_model):
    density, _ = il2_map_3A
    fit = map_fit(il2_model, density, 3.0)
    assert fit.cc_mask > 0.9 and min(fit.chains.values()) > 0.9, fit
    assert fit.mask_radius == mask_radius(3.0) == 3.0 and mask_radius(6.6) == pytest.approx(3.96)

    moved = il2_model.atom_positions.copy()
    moved[il2_model.chain_id == "B"] += np.array([3.0, 0.0, 0.0], dtype=moved.dtype)
    shifted = map_fit(dataclasses.replace(il2_model, atom_positions=moved), density, 3.0)
    assert shifted.chains["A"] > 0.8 and shifted.chains["B"] < fit.chains["B"] - 0.3, shifted


def test_anisotropic_voxels_and_a_model_outside_the_map(il2_map_3A, il2_model):
    density, _ = il2_map_3A
    stretched = resample(density, np.array([1.0, 1.2, 1.5]))
    fit = map_fit(il2_model, stretched, 3.0)
    assert fit.cc_mask > 0.85, fit
    away = dataclasses.replace(il2_model, atom_positions=il2_model.atom_positions + 500.0)
    outside = map_fit(away, density, 3.0)
    assert np.isnan(outside.cc_mask) and all(np.isnan(v) for v in outside.chains.values())
