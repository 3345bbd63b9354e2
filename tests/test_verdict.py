"""What a job keeps (`cryobuild.engine.verdict`) and how it reports progress: no networks.

Issue 18: a region rebuild and a second build must never replace residues with fewer or worse
ones (`judge`); a region rebuild threads within the sequence window of its flanking residues
(`window_records`); the progress bar must not sit at 100% while threading and relaxation run
(`_Progress`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cryobuild.engine.engine import _Progress
from cryobuild.engine.jobs import Job
from cryobuild.engine.verdict import FIT_TOLERANCE, OFF_DENSITY_FIT, judge, model_stats, window_records
from cryobuild.maps import DensityMap
from cryobuild.models import model_from_ca
from cryobuild.pipeline import join_models
from cryobuild.residues import UNK_INDEX
from cryobuild.sequences import Sequence
from cryobuild.session import SessionState

#: Å between consecutive Cα of the test helix-free strand.
STEP = 3.8


def strand(count: int, confidence: float, *, start: int = 1, chain: str = "A", shift=(0.0, 0.0, 0.0)):
    """``count`` residues along x, numbered from ``start``, with one confidence."""
    ca = np.stack([np.arange(count) * STEP, np.zeros(count), np.zeros(count)], axis=1) + np.asarray(shift)
    model = model_from_ca(ca, np.full(count, confidence / 100.0), chain_id=chain)
    return dataclasses.replace(model, residue_number=np.arange(start, start + count),
                               aatype=np.zeros(count, np.int64),
                               confidence=np.full(count, confidence, np.float32))


@pytest.fixture(scope="module")
def density():
    """Density along the x axis (where `strand` puts its residues), none off it."""
    grid = np.zeros((20, 20, 120), np.float32)
    z, y, x = np.indices(grid.shape)
    grid += np.exp(-((y - 10) ** 2 + (z - 10) ** 2) / 4.0)
    return DensityMap(grid, np.ones(3), np.array([-10.0, -10.0, -10.0]))


def test_more_residues_with_more_confidence_replace_fewer(density):
    kept, message, before, after = judge(strand(10, 60), strand(12, 70), density, what="region")
    assert kept == "new" and message.startswith("kept the new residues: 12 residues")
    assert (before.residues, after.residues) == (10, 12)


def test_fewer_residues_never_replace_more(density):
    """The issue's case: a rebuild that threaded nothing had deleted the region."""
    kept, message, _, _ = judge(strand(11, 60), strand(0, 0), density, what="region")
    assert kept == "old" and "fewer residues (0 against 11)" in message
    kept, message, _, _ = judge(strand(11, 60), strand(8, 99), density, what="region")
    assert kept == "old" and message.startswith("kept the region's residues (11 residues")


def test_residues_of_unknown_type_or_less_confidence_or_worse_fit_do_not_replace(density):
    unknown = dataclasses.replace(strand(12, 90), aatype=np.full(12, UNK_INDEX))
    assert judge(strand(10, 60), unknown, density)[1].endswith("fewer residues of known type (0 against 10)")
    kept, message, _, _ = judge(strand(10, 80), strand(10, 79), density)
    assert kept == "old" and "no more total confidence" in message
    off = strand(12, 90, shift=(0.0, 4.0, 0.0))  # 4 Å off the density
    before, after = model_stats(strand(10, 60), density), model_stats(off, density)
    assert after.fit < before.fit - FIT_TOLERANCE
    kept, message, _, _ = judge(strand(10, 60), off, density)
    assert kept == "old" and "a worse fit to the map" in message


def test_a_much_better_fit_replaces_residues_that_kept_their_confidence(density):
    """Residues moved off their density keep the confidence they were built with: new ones on
    the density replace them without more confidence, and with one residue fewer (a Cα the
    detector missed), but not with two fewer of ten."""
    moved = strand(10, 90, shift=(0.0, 3.0, 0.0))
    kept, message, before, after = judge(moved, strand(10, 60), density, what="region")
    assert after.total < before.total and after.fit > before.fit + OFF_DENSITY_FIT
    assert kept == "new", message
    assert judge(moved, strand(9, 60), density)[0] == "new"
    assert "fewer residues (8 against 10)" in judge(moved, strand(8, 60), density)[1]
    # one fewer is not spared where the old residues fit as well
    assert judge(strand(10, 60), strand(9, 90), density)[0] == "old"
    # on the density both, the new ones no more confident: the old ones stay
    kept, message, _, _ = judge(strand(10, 90), strand(10, 60), density)
    assert kept == "old" and "no more total confidence" in message and "no better fit" in message


def test_the_fit_is_compared_where_the_old_residues_are(density):
    """A whole new model over a short old stretch: the map is weaker where the new model adds
    residues (here off the density's axis), which lowers its mean fit but is no fault of the
    residues that take the old ones' place."""
    old = strand(10, 60)
    # the old ten residues again, and ten more further along x, 2 Å off the density's axis
    new = join_models([strand(10, 70), strand(10, 70, start=11, chain="B", shift=(10 * STEP, 2.0, 0.0))])
    assert model_stats(new, density).fit < model_stats(old, density).fit - FIT_TOLERANCE
    kept, message, _, _ = judge(old, new, density)
    assert kept == "new", message


def test_new_residues_where_there_were_none_are_kept(density):
    assert judge(strand(0, 0), strand(5, 50), density)[0] == "new"


def _state(model, chain_sequences):
    count = model.num_residues
    return SessionState(model, np.zeros(count, bool), np.ones(count, bool), np.zeros(count, bool),
                        chain_sequences)


def test_a_region_is_threaded_within_the_window_of_its_flanking_residues():
    """A model of residues 1-100 of a 130-residue sequence, region 41-70: threading may use
    41-70 only (before, the free positions 101-130 were open too), with the E-value cut scaled
    by how much of the sequence the window leaves open."""
    sequence = Sequence("s", "ACDEFGHIKLMNPQRSTVWY" * 6 + "ACDEFGHIKL")
    model = strand(100, 50)
    state = _state(model, {"A": "s"})
    region = (model.residue_number >= 41) & (model.residue_number <= 70)
    windows = window_records([sequence], state, region, 0.03)
    assert windows.records.owners == ["A"]
    assert np.flatnonzero(~windows.records.taken[0]).tolist() == list(range(40, 70))
    assert windows.max_evalue == pytest.approx(0.03 * 130 / 30)
    # the kept residues on either side anchor threading's closure
    assert [(a.sequence_index, a.number) for a in windows.anchors] == [(0, 40), (0, 71)]
    np.testing.assert_allclose(windows.anchors[1].ca, model.ca[70])

    # a region at the chain's end opens the window to the sequence's end, with one anchor;
    # kept residues inside the window (an accepted one, say) stay taken
    end = model.residue_number >= 91
    windows = window_records([sequence], state, end, 0.03)
    assert np.flatnonzero(~windows.records.taken[0]).tolist() == list(range(90, 130))
    assert [a.number for a in windows.anchors] == [90]
    holed = region & (model.residue_number != 55)
    windows = window_records([sequence], state, holed, 0.03)
    free = np.flatnonzero(~windows.records.taken[0]) + 1
    assert 55 not in free and free.min() == 41 and free.max() == 70

    # a chain without a sequence: no window (threaded as a full build would)
    assert window_records([sequence], _state(model, {}), region, 0.03) is None


def test_progress_stays_below_one_until_the_final_event():
    """The bar sat at 100% for ~12 s: the last graph-network pass after the rounds mapped
    past 1 and the relaxation after it could not move it."""
    job = Job("job-x", "build")
    progress = _Progress(job, rounds=3)
    seen = []
    record = lambda stage, fraction: seen.append(progress.overall(stage, fraction))  # noqa: E731
    record("load", 1.0)
    for fraction in (0.0, 0.5, 1.0):
        record("detect", fraction)
    for done in range(3):
        for fraction in (0.0, 1.0):
            record("gnn", fraction)
        for fraction in (0.0, 1.0):
            record("thread", fraction)
        progress.rounds_done = done + 1
    for stage in ("gnn", "thread", "relax", "save"):  # the last pass, relaxation, saving
        for fraction in (0.0, 0.5, 1.0):
            record(stage, fraction)
    assert np.all(np.diff(seen) >= -1e-9) and max(seen) < 1.0
    relax = [progress.overall("relax", f) for f in (0.0, 1.0)]
    assert relax[1] - relax[0] > 0.05  # the relaxation moves the bar


def test_a_progress_report_is_where_a_cancel_takes_effect():
    from cryobuild.errors import Cancelled

    job = Job("job-y", "build")
    progress = _Progress(job, rounds=1)
    progress("detect", 0.5)
    job.cancel()
    with pytest.raises(Cancelled):
        progress("detect", 0.6)
