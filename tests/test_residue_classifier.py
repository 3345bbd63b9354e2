"""The residue classifier: its cubes sit in the residue frame beside the Cβ, it reads a
simulated map, its training examples carry the crop's types, a training step lowers the loss,
and the combination with the graph network's types (weight 0: the graph network's alone; 1:
the classifier's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryobuild.geometry import Rigid
from cryobuild.gnn.density import DensityVolume
from cryobuild.models import read_model
from cryobuild.residue_classifier import (
    CB_DIRECTION,
    ClassifierConfig,
    ResidueClassifier,
    classify_residues,
    combine,
)

TINY = ClassifierConfig(cube_size=7, channels=(2, 2, 2, 2, 2), hidden=8)


@pytest.fixture(scope="module")
def il2_model(il2_path):
    return read_model(il2_path)


def test_cube_centred_beside_the_cb(il2_model):
    """The cube of a residue is centred ``centre_offset`` Å from its Cα towards its Cβ."""
    classifier = ResidueClassifier(TINY)
    has_cb = il2_model.atom_mask[:, :5].all(-1)
    atoms = torch.as_tensor(il2_model.atom_positions[has_cb], dtype=torch.float32)
    frames = Rigid.from_3_points(atoms[:, 0], atoms[:, 1], atoms[:, 2])
    centres = frames.apply(classifier.points.reshape(-1, 3).mean(0))
    towards_cb = (atoms[:, 4] - atoms[:, 1]) / (atoms[:, 4] - atoms[:, 1]).norm(dim=-1, keepdim=True)
    expected = atoms[:, 1] + TINY.centre_offset * towards_cb
    assert float((centres - expected).norm(dim=-1).max()) < 0.25
    assert abs(np.linalg.norm(CB_DIRECTION) - 1) < 1e-9


def test_classifies_every_residue_of_a_map(il2_view_3A, il2_model):
    """Probabilities ``[N, 20]`` summing to 1 per residue, in chunks as in one pass, and the
    cubes hold the map's density (not the zeros outside the box)."""
    torch.manual_seed(0)
    classifier = ResidueClassifier(TINY).eval()
    view, _ = il2_view_3A
    backbone = il2_model.atom_positions[:, :3]
    probs = classify_residues(view, backbone, classifier)
    assert probs.shape == (il2_model.num_residues, 20)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    frames = Rigid.from_3_points(*torch.as_tensor(backbone, dtype=torch.float32).unbind(1))
    cubes = classifier.sample_cubes(DensityVolume.from_map(view.density), frames)
    assert float(cubes.abs().mean()) > 0.1


def test_training_step_learns_the_types(il2_map_3A, il2_model):
    """Examples of a crop carry its residues' types; a few steps on them lower the loss."""
    from cryobuild.train.gnn import GraphAugmentation, make_sample
    from cryobuild.train.residue_classifier import examples

    structure = il2_map_3A[1].clone()
    structure[0][0].name = "A"
    aug = GraphAugmentation(noise_free_fraction=1.0, fake_fraction=0.0, sidechain_decoys=(0.0, 0.0))
    sample = make_sample(structure, il2_model, ["A"], aug, np.random.default_rng(0))
    torch.manual_seed(0)
    classifier = ResidueClassifier(ClassifierConfig(cube_size=7, channels=(4, 4, 8, 8, 8), hidden=16))
    generator = torch.Generator().manual_seed(0)
    cubes, targets = examples(sample, classifier, generator)
    assert len(cubes) == len(targets) == int(sample.real.sum())
    np.testing.assert_array_equal(targets.numpy(), sample.aatype[sample.real])
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(classifier(cubes), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


def test_combine_weights():
    """Weight 0 gives the graph network's types, 1 the classifier's, 0.5 their normalised
    geometric mean."""
    rng = np.random.default_rng(0)
    graph, read = rng.dirichlet(np.ones(20), 5), rng.dirichlet(np.ones(20), 5)
    np.testing.assert_allclose(combine(graph, read, 0.0), graph, rtol=1e-5)
    np.testing.assert_allclose(combine(graph, read, 1.0), read, rtol=1e-5)
    middle = np.sqrt(graph * read)
    np.testing.assert_allclose(combine(graph, read, 0.5), middle / middle.sum(-1, keepdims=True), rtol=1e-5)
