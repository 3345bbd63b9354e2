"""The threading entry `cryobuild.thread.thread`: the HMM threader's stages in order, the
Structure Generator's fallback to the HMM threader, and a build without sequences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cryobuild.thread as threading_package
from cryobuild.chains import link_chains
from cryobuild.models import read_model
from cryobuild.residues import AA_ORDER
from cryobuild.sequences import Sequence
from cryobuild.thread import ChainMatch, thread
from cryobuild.thread import structgen as structgen_threader
from cryobuild.thread.closure import close_gaps
from cryobuild.thread.copies import anchor_evalue, assign_copies, keep_supported
from cryobuild.thread.joining import join_matches
from cryobuild.thread.placement import place_chains
from cryobuild.thread.search import MAX_THREAD_EVALUE, thread_chains

from gnn_synth import simulate_predictions

#: Shortest chain placement places (residues), as the pipeline's `MIN_CHAIN_LENGTH`.
MIN_LENGTH = 4


@pytest.fixture(scope="module")
def il2_chains(il2_path):
    """il2 simulated at 60 % accuracy and linked: predictions, chains and the sequence."""
    model = read_model(il2_path)
    simulated = simulate_predictions(model.atom_positions[:, :3].astype(np.float64), model.aatype,
                                     model.residue_number, np.random.default_rng(5))
    sequence = Sequence("il2", "".join(AA_ORDER[aatype] for aatype in model.aatype))
    return simulated.predictions, link_chains(simulated.predictions), [sequence]


def _thread(il2_chains, **options):
    predictions, chains, sequences = il2_chains
    return thread(chains, predictions.aa_probs, predictions.confidence, predictions.backbone,
                  sequences, min_length=MIN_LENGTH, rng=np.random.default_rng(0), **options)


def _table(matches: list[ChainMatch]) -> list[tuple]:
    return [(m.nodes.tolist(), m.sequence_index, m.residue_number.tolist(), m.aatype.tolist())
            for m in matches]


def test_hmm_threader_runs_search_support_placement_copies_joining_closure(il2_chains):
    predictions, chains, sequences = il2_chains
    ca = predictions.backbone[:, 1]
    matches = thread_chains(chains, predictions.aa_probs, predictions.confidence, sequences,
                            rng=np.random.default_rng(0))
    anchor_cut = anchor_evalue(len(matches), MAX_THREAD_EVALUE)
    matches = keep_supported(matches, ca, predictions.aa_probs, anchor_cut=anchor_cut,
                             searched=len(matches))
    matches = place_chains(matches, predictions.aa_probs, predictions.confidence, ca, sequences,
                           min_length=MIN_LENGTH)
    matches = assign_copies(matches, ca, predictions.aa_probs, predictions.confidence, sequences)
    matches = join_matches(matches, predictions.backbone, predictions.aa_probs)
    matches = close_gaps(matches, ca, predictions.aa_probs, predictions.confidence, sequences)
    threading = _thread(il2_chains)
    assert threading.threader == "hmm" and threading.warnings == []
    assert threading.threaded_residues > 0
    assert _table(threading.matches) == _table(matches)


def test_both_threaders_share_the_stages_after_the_search(il2_chains, monkeypatch):
    """A Structure Generator whose search returns the HMM search's matches threads exactly as
    the HMM threader: support, placement, copies, joining and closure are the same stages."""
    def hmm_search(chains, aa_probs, ca, sequences, network, **kwargs):
        predictions = il2_chains[0]
        return thread_chains(chains, aa_probs, predictions.confidence, sequences,
                             taken=kwargs["taken"], max_evalue=kwargs["max_evalue"],
                             rng=np.random.default_rng(0))

    monkeypatch.setattr(structgen_threader, "thread_structgen", hmm_search)
    hmm = _thread(il2_chains)
    threading = _thread(il2_chains, threader="structgen", structgen=object(),
                        structgen_fallback=False)
    assert threading.threader == "structgen" and threading.threaded_residues > 0
    assert _table(threading.matches) == _table(hmm.matches)


def test_structgen_threading_short_of_the_hmm_threaders_falls_back(il2_chains, monkeypatch):
    def threads_nothing(chains, aa_probs, *args, **kwargs):
        return [ChainMatch.unthreaded(chain, aa_probs) for chain in chains]

    monkeypatch.setattr(structgen_threader, "thread_structgen", threads_nothing)
    hmm = _thread(il2_chains)
    threading = _thread(il2_chains, threader="structgen", structgen=object())
    assert threading.threader == "hmm"
    assert _table(threading.matches) == _table(hmm.matches)
    assert threading.warnings == [
        f"the Structure Generator threaded 0 residues, the HMM threader {hmm.threaded_residues}: "
        "this round keeps the HMM threader's threading (the Structure Generator must thread "
        "at least 80% as many)"]

    monkeypatch.setattr(threading_package, "STRUCTGEN_MIN_SHARE", 0.0)
    kept = _thread(il2_chains, threader="structgen", structgen=object())
    assert kept.threader == "structgen" and kept.warnings == [] and kept.threaded_residues == 0


def test_structgen_threading_numbered_otherwise_than_the_hmm_threaders_falls_back(il2_chains,
                                                                                 monkeypatch):
    """As many residues threaded, but numbered two positions off: the HMM threader's threading
    is kept, with a warning; numbered alike, the Structure Generator's."""
    predictions = il2_chains[0]

    def search(shift):
        def shifted_hmm_search(chains, aa_probs, ca, sequences, network, **kwargs):
            matches = thread_chains(chains, aa_probs, predictions.confidence, sequences,
                                    taken=kwargs["taken"], max_evalue=kwargs["max_evalue"],
                                    rng=np.random.default_rng(0))
            return [dataclasses.replace(m, residue_number=np.where(m.assigned, m.residue_number + shift, -1))
                    for m in matches]
        return shifted_hmm_search

    hmm = _thread(il2_chains)
    monkeypatch.setattr(structgen_threader, "thread_structgen", search(0))
    alike = _thread(il2_chains, threader="structgen", structgen=object())
    assert alike.threader == "structgen" and alike.warnings == []
    monkeypatch.setattr(structgen_threader, "thread_structgen", search(2))
    shifted = _thread(il2_chains, threader="structgen", structgen=object(), closure=False,
                      placement=False)
    assert shifted.threader == "hmm"
    [warning] = shifted.warnings
    assert warning.startswith("the Structure Generator numbered ")
    assert warning.endswith("threaders thread otherwise than the HMM threader: this round keeps "
                            "the HMM threader's threading (they must agree on at least 80%)")
    monkeypatch.setattr(threading_package, "STRUCTGEN_MIN_AGREEMENT", 0.0)
    kept = _thread(il2_chains, threader="structgen", structgen=object(), closure=False,
                   placement=False)
    assert kept.threader == "structgen" and kept.threaded_residues >= 0.8 * hmm.threaded_residues


def test_without_sequences_every_chain_stays_unthreaded(il2_chains):
    predictions, chains, _ = il2_chains
    threading = _thread((predictions, chains, []), threader="structgen")
    assert not any(match.threaded for match in threading.matches)
    assert [m.nodes.tolist() for m in threading.matches] == [list(c) for c in chains]


def test_structgen_threader_needs_its_network(il2_chains):
    with pytest.raises(ValueError, match="needs its network"):
        _thread(il2_chains, threader="structgen")
    with pytest.raises(ValueError, match="threader must be one of"):
        _thread(il2_chains, threader="blast")
