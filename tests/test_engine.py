"""The engine: background jobs, events, cancel, sessions, accept / prune / undo, region rebuilds.

Behaviour only, never model quality: the committed weights are still training. Everything runs
on a 3 Å map simulated from PyMOL's il2 (126 residues). The reference model (renumbered 1..R to
match its sequence) stands in for a model the user opened, so accepting and rebuilding have
residues to work on whatever the networks build.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from cryobuild.checkpoints import checkpoint_path
from cryobuild.engine import EVENT_KINDS, JobConflict
from cryobuild.errors import CryobuildError, InputError
from cryobuild.maps import DensityMap
from cryobuild.models import read_model
from cryobuild.pipeline import BuildOptions, BuildResult, RoundResult
from cryobuild.points import CalphaPoints
from cryobuild.relax import MAX_LINK_DISTANCE
from cryobuild.residues import UNK_INDEX, one_letter
from cryobuild.sequences import Sequence
from cryobuild.session import MODEL_FILE, STATE_FILE, Session
from cryobuild.thread.hints import unassigned_placements
from cryobuild.thread.structgen import THREADING_CHECKPOINT

from gnn_synth import noisy_probs, with_unassigned_stretch

#: Pause (s) of the caller's (GUI) thread while a job runs: the issue's limit, held by 99% of
#: timer ticks. The worst tick is printed, not asserted below `MAX_GUI_FREEZE`: on a machine
#: whose cores are saturated, GIL hand-over during the threading stage's calibration has shown
#: 160-310 ms (a build in a separate process: 16 ms).
MAX_GUI_GAP = 0.2
MAX_GUI_FREEZE = 1.0
#: Seconds from cancel() to the "cancelled" event.
MAX_CANCEL_LATENCY = 5.0
#: Poll period of the simulated GUI timer (s).
TIMER = 0.02
#: A job that has not finished in this long has hung.
JOB_TIMEOUT = 120.0
#: Å, the C-N peptide bond (Engh & Huber 1991: 1.329).
PEPTIDE_BOND = 1.33
EVENT_ORDER = re.compile(r"^started (stage |points |round |warning )*(final|failed|cancelled) finished$")

pytestmark = pytest.mark.skipif(
    not (checkpoint_path("detect").is_file() and checkpoint_path("gnn").is_file()),
    reason="trained weights (weights/detect.pt, gnn.pt) not available",
)


@pytest.fixture(scope="module")
def il2(il2_map_3A, il2_path):
    """(map, reference model numbered 1..R, its sequence)."""
    density, _ = il2_map_3A
    reference = read_model(il2_path)
    reference = dataclasses.replace(reference, residue_number=np.arange(1, reference.num_residues + 1),
                                    entity_sequences={})
    sequence = Sequence("il2", "".join(one_letter(int(a)) for a in reference.aatype))
    return density, reference, sequence


@pytest.fixture(autouse=True)
def no_threads_left_behind():
    """Every job's worker thread has ended when a test ends (pyhmmer's tearDown check)."""
    before = threading.active_count()
    yield
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


def drive(job, on_event=None):
    """Poll ``job`` on a GUI-like timer until it finishes; returns (events, sorted timer gaps
    in s beyond the period)."""
    events, gaps, last = [], [], time.perf_counter()
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        for event in job.poll():
            events.append(event)
            if on_event is not None:
                on_event(event)
        if events and events[-1].kind == "finished":
            break
        assert time.monotonic() < deadline, "the job hung"
        time.sleep(TIMER)
        now = time.perf_counter()
        gaps.append(now - last - TIMER)
        last = now
    assert job.wait(10)
    return events, sorted(gaps)


def kinds(events) -> str:
    return " ".join(event.kind for event in events)


def key_rows(state) -> dict:
    return {key: row for row, key in enumerate(state.keys())}


def assert_no_partial_files(folder):
    assert not [p.name for p in folder.rglob("*.part")]


def reference_session(engine, il2, folder, model=None) -> Session:
    _, reference, sequence = il2
    session = engine.open_session(folder)
    session.set_model(reference if model is None else model, sequences=[sequence])
    return session


@pytest.fixture
def new_wins(monkeypatch):
    """New residues replace old ones whatever their quality (tests of splicing itself)."""
    from cryobuild.engine import engine as engine_module

    judge = engine_module.judge

    def always_new(old, new, density, *, what="model"):
        _, _, before, after = judge(old, new, density, what=what)
        return "new", "kept the new residues (test)", before, after

    monkeypatch.setattr(engine_module, "judge", always_new)


def test_build_streams_events_in_order_while_the_caller_stays_responsive(engine, il2, tmp_path):
    density, _, sequence = il2
    saved_at_round = []

    def on_event(event):  # worker thread: the round is on disk before its event
        if event.kind == "round":
            saved_at_round.append(Session.open(tmp_path / "s", create=False).job["rounds_saved"])

    job = engine.start_build(density, [sequence], BuildOptions(rounds=2, relax=False),
                             session=tmp_path / "s", on_event=on_event)
    events, gaps = drive(job)
    p99 = gaps[int(0.99 * (len(gaps) - 1))]
    print(f"GUI-thread timer gaps during the build: max {gaps[-1] * 1000:.0f} ms, "
          f"99th percentile {p99 * 1000:.0f} ms over {len(gaps)} ticks")
    assert EVENT_ORDER.match(kinds(events)), kinds(events)
    assert {e.job_id for e in events} == {job.id}
    assert all(e.kind in EVENT_KINDS for e in events)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    points = [e for e in events if e.kind == "points"]
    rounds = [e for e in events if e.kind == "round"]
    assert len(points) == 1 and isinstance(points[0].payload, CalphaPoints)
    assert events.index(points[0]) < events.index(rounds[0])
    assert [r.payload.index for r in rounds] == [1, 2] and saved_at_round == [1, 2]
    assert all(isinstance(r.payload, RoundResult) for r in rounds)
    final = next(e for e in events if e.kind == "final")
    assert isinstance(final.payload, BuildResult) and job.result() is final.payload
    session = job.session
    assert session.job["state"] == "finished" and not session.busy
    assert session.state.built.all() and not session.state.accepted.any()
    assert (tmp_path / "s" / STATE_FILE).is_file() and (tmp_path / "s" / MODEL_FILE).is_file()
    assert_no_partial_files(tmp_path / "s")
    assert p99 < MAX_GUI_GAP and gaps[-1] < MAX_GUI_FREEZE


def test_cancel_keeps_the_finished_model_and_accepted_residues(engine, il2, tmp_path):
    """Stopping a build over a finished model leaves that model as it was (issue 18, item 3:
    a stopped round 3 had replaced a threaded model with 45 fragments)."""
    density, _, sequence = il2
    session = reference_session(engine, il2, tmp_path / "s")
    accepted = session.keys()[:30]
    session.accept(accepted)
    before, history = session.state, session.history
    job = engine.start_build(density, [sequence], BuildOptions(rounds=3), session=session)
    assert job.keeps_model

    # one job per map (by content: a copy counts) and per session, and no edits meanwhile
    copy = DensityMap(density.grid.copy(), density.voxel_size, density.origin)
    with pytest.raises(JobConflict, match="already running on this map"):
        engine.start_build(copy, [sequence], session=tmp_path / "other")
    with pytest.raises(JobConflict):
        session.accept(session.keys()[40:41])

    cancelled_at, during = [], []

    def cancel_after_first_round(event):
        if event.kind == "round" and not cancelled_at:
            during.append(session.state is before)  # the rounds do not touch the model
            cancelled_at.append(time.time())
            job.cancel()

    events, _ = drive(job, cancel_after_first_round)
    assert EVENT_ORDER.match(kinds(events)) and events[-2].kind == "cancelled", kinds(events)
    latency = events[-2].time - cancelled_at[0]
    print(f"cancel latency: {latency:.2f} s")
    assert latency < MAX_CANCEL_LATENCY
    with pytest.raises(Exception, match="cancelled"):
        job.result()
    assert during == [True] and job.verdict is None
    assert session.job["state"] == "cancelled" and session.job["rounds_saved"] == 1
    assert session.state is before and session.history == history  # no undo point for nothing
    assert set(session.accepted_keys()) == set(accepted)
    assert_no_partial_files(tmp_path / "s")
    reopened = Session.open(tmp_path / "s")
    assert reopened.keys() == session.keys()

    # the map is free again; a job cancelled before it starts work ends at once
    job = engine.start_build(copy, [sequence], BuildOptions(rounds=1))
    job.cancel()
    assert kinds(job.events(timeout=JOB_TIMEOUT)).endswith("cancelled finished")
    assert job.wait(10)


def test_a_stopped_first_build_keeps_its_last_round_until_a_build_replaces_it(engine, il2, tmp_path):
    """Into an empty session each round is saved as it comes (a killed program keeps it),
    marked as not finished, so the next build replaces it without having to beat it."""
    density, _, sequence = il2
    job = engine.start_build(density, [sequence], BuildOptions(rounds=3), session=tmp_path / "s")
    assert not job.keeps_model
    events, _ = drive(job, lambda event: event.kind == "round" and job.cancel())
    assert events[-2].kind == "cancelled", kinds(events)
    last_round = [e for e in events if e.kind == "round"][-1].payload
    session = job.session
    state = session.state
    assert state.partial and session.job["rounds_saved"] == last_round.index
    assert set(state.keys()) == set(zip(last_round.model.chain_id.tolist(),
                                        last_round.model.residue_number.tolist()))
    assert Session.open(tmp_path / "s").state.partial  # saved as such

    job = engine.start_build(density, [sequence], BuildOptions(rounds=1, relax=False), session=session)
    assert not job.keeps_model
    events, _ = drive(job)
    assert events[-2].kind == "final", kinds(events)
    assert not session.state.partial and job.verdict is None
    assert session.model.num_residues == job.result().final.num_residues


def test_a_second_build_replaces_a_finished_model_only_when_better(engine, il2, tmp_path):
    """Issue 18, item 3: a second build with fewer residues had replaced the model."""
    density, reference, sequence = il2
    options = BuildOptions(rounds=1, relax=False)

    # A model every residue of which is certain: no build beats it. It stays, and the new
    # model waits as a candidate to swap in.
    certain = dataclasses.replace(reference, confidence=np.full(reference.num_residues, 100.0, np.float32))
    session = reference_session(engine, il2, tmp_path / "certain", certain)
    before, history = session.state, session.history
    during = []
    job = engine.start_build(density, [sequence], options, session=session,
                             on_event=lambda e: e.kind == "round" and during.append(session.state is before))
    assert job.keeps_model
    events, _ = drive(job)
    assert events[-2].kind == "final", kinds(events)
    verdict = job.verdict
    print(f"\nover a certain model: {verdict.message}")
    assert during == [True] and verdict.kept == "old"
    assert session.state is before and session.history == history
    assert any(e.kind == "warning" and e.message == verdict.message for e in events)
    assert verdict.message.startswith("kept the model's residues (126 residues")
    assert verdict.candidate is not None and verdict.base is before
    new = set(zip(job.result().final.chain_id.tolist(), job.result().final.residue_number.tolist()))
    session.swap(verdict.candidate, base=verdict.base, description=f"swap in {job.id}'s model",
                 sequences=list(verdict.sequences))
    assert set(session.keys()) == new and session.history[-1] == f"swap in {job.id}'s model"
    with pytest.raises(InputError, match="changed since"):  # a second swap: the model moved on
        session.swap(verdict.candidate, base=verdict.base, description="again")
    assert session.undo() == f"swap in {job.id}'s model" and session.state is before

    # A fragment of 20 unsure residues: the new build replaces it.
    fragment = dataclasses.replace(reference, confidence=np.zeros(reference.num_residues, np.float32))
    fragment = fragment.select(fragment.residue_number <= 20)
    session = reference_session(engine, il2, tmp_path / "fragment", fragment)
    job = engine.start_build(density, [sequence], options, session=session)
    events, _ = drive(job)
    assert events[-2].kind == "final", kinds(events)
    print(f"over a fragment: {job.verdict.message}")
    assert job.verdict.kept == "new" and job.verdict.candidate is None
    assert session.model.num_residues == job.result().final.num_residues > 20
    assert session.history[-1] == f"build {job.id}"


#: Both threaders thread around the accepted residues' sequence positions (the Structure
#: Generator's own threading, not its fallback: `BuildOptions.structgen_fallback`).
REBUILD_THREADERS = [BuildOptions(rounds=1),
                     BuildOptions(rounds=1, threader="structgen", structgen_fallback=False)]


@pytest.mark.parametrize("options", REBUILD_THREADERS, ids=["hmm", "structgen"])
def test_region_rebuild_changes_only_the_region_and_keeps_accepted(engine, il2, tmp_path, new_wins,
                                                                   options):
    density, reference, _ = il2
    session = reference_session(engine, il2, tmp_path / "s")
    keys = session.keys()
    session.accept(keys[:40])
    region = keys[30:70]  # 10 accepted: they stay
    before = session.state
    began = time.perf_counter()
    job = engine.start_rebuild(session, density, keys=region, options=options)
    events, _ = drive(job)
    print(f"region rebuild of 30 residues: {time.perf_counter() - began:.1f} s")
    # the region's crop is read at the whole map's resolution, as the build read the map
    said = [e.message for e in events if e.message.startswith("map resolution")]
    assert said[1] == f"map resolution {float(said[0].split()[2]):.2g} Å (as set)", said
    assert said[0].endswith("Å, estimated from the whole map, as a build of it estimates it"), said
    assert EVENT_ORDER.match(kinds(events)) and events[-2].kind == "final", kinds(events)
    assert any(e.kind == "warning" and "10 accepted" in e.message for e in events)
    after = session.state
    rows_before, rows_after = key_rows(before), key_rows(after)
    replaced = set(region[10:])
    for key in keys:
        if key in replaced:
            continue
        assert np.array_equal(before.model.atom_positions[rows_before[key]],
                              after.model.atom_positions[rows_after[key]]), key
        assert after.accepted[rows_after[key]] == before.accepted[rows_before[key]]
    # new residues sit in the region's mask (6 Å around its atoms), give or take the network's shift
    region_atoms = reference.atom_positions[40:70][reference.atom_mask[40:70]]
    new = [rows_after[k] for k in after.keys() if k not in rows_before or k in replaced]
    for row in new:
        distance = np.linalg.norm(region_atoms - after.model.ca[row], axis=-1).min()
        assert distance < 6.0 + 3.0
        assert after.built[row] and not after.accepted[row]
    assert session.history[-1] == f"rebuild {job.id}"
    assert session.undo() == f"rebuild {job.id}"
    assert session.keys() == before.keys()


def test_region_jobs_read_the_map_at_the_resolution_its_build_read_it(engine, il2, tmp_path):
    """A build given 3 Å: a rebuild told no resolution reads the map at 3 Å too (a crop, or the
    whole map, would be estimated nearer 3.7 Å), and the session says so for later jobs; a build
    that estimated its resolution passes on the estimate, marked as one."""
    density, _, sequence = il2
    session = engine.open_session(tmp_path / "s")
    drive(engine.start_build(density, [sequence], BuildOptions(rounds=1, resolution=3.0),
                             session=session))
    assert session.map_info["resolution"] == 3.0 and not session.map_info["resolution_estimated"]
    events, _ = drive(engine.start_rebuild(session, density, keys=session.keys()[20:30],
                                           options=BuildOptions(rounds=1)))
    said = [e.message for e in events if e.message.startswith("map resolution")]
    assert said[0] == "map resolution 3 Å (as set), as the session records it for this map"
    assert said[1] == "map resolution 3 Å (as set)", said
    assert session.map_info["resolution"] == 3.0

    estimating = engine.open_session(tmp_path / "e")
    drive(engine.start_build(density, [sequence], BuildOptions(rounds=1), session=estimating))
    assert estimating.map_info["resolution_estimated"] and estimating.map_info["resolution"] > 3.2

    # a build stopped before its end leaves the resolution it was given for its last round
    stopped = engine.open_session(tmp_path / "c")
    job = engine.start_build(density, [sequence], BuildOptions(rounds=1, resolution=3.3),
                             session=stopped)
    job.cancel()
    drive(job)
    assert stopped.map_info["resolution"] == 3.3

    # a model opened from a file, attached to its map at its build's resolution
    opened = reference_session(engine, il2, tmp_path / "o")
    engine.attach_map(opened, density, 3.0)
    events, _ = drive(engine.start_rebuild(opened, density, keys=opened.keys()[20:30],
                                           options=BuildOptions(rounds=1)))
    assert [e.message for e in events if e.message.startswith("map resolution")][0] == \
        "map resolution 3 Å (as set), as the session records it for this map"


@pytest.mark.skipif(not checkpoint_path(THREADING_CHECKPOINT).is_file(), reason="the Structure Generator's weights are not available")
def test_a_full_build_with_the_structure_generator(engine, il2, tmp_path):
    density, _, sequence = il2
    job = engine.start_build(density, [sequence], BuildOptions(rounds=3, threader="structgen", relax=False),
                             session=tmp_path / "s")
    events, _ = drive(job)
    assert EVENT_ORDER.match(kinds(events)) and events[-2].kind == "final", events[-2].message
    # the first round's short chains keep the HMM threader's threading; the last round's are
    # the Structure Generator's own (`pipeline` module docstring)
    fallbacks = [e.message for e in events if e.kind == "warning" and "keeps the HMM" in e.message]
    assert not [m for m in fallbacks if m.startswith("round 3")], fallbacks
    result = job.result()
    assert job.session.model.num_residues == result.final.num_residues
    threaded = [c for c in result.final_chains if c.threaded]
    assert {c.sequence for c in threaded} == {sequence.name}
    assert sum(c.residues for c in threaded) >= 0.5 * len(sequence)


@pytest.mark.skipif(not checkpoint_path(THREADING_CHECKPOINT).is_file(), reason="the Structure Generator's weights are not available")
def test_a_structure_generator_that_threads_nothing_falls_back_to_the_hmm_threader(engine, il2, monkeypatch):
    """As on maps unlike its training maps: the build warns and threads with the HMM threader."""
    from cryobuild.thread import ChainMatch
    from cryobuild.thread import structgen as structgen_thread

    def threads_nothing(chains, aa_probs, *args, **kwargs):
        return [ChainMatch.unthreaded(chain, aa_probs) for chain in chains]

    monkeypatch.setattr(structgen_thread, "thread_structgen", threads_nothing)
    density, _, sequence = il2
    job = engine.start_build(density, [sequence], BuildOptions(rounds=1, threader="structgen", relax=False))
    events, _ = drive(job)
    warnings = [e.message for e in events if e.kind == "warning"]
    assert [m for m in warnings if m.startswith("round 1/1: the Structure Generator threaded 0 residues, "
                                                "the HMM threader ")
            and "this round keeps the HMM threader's threading" in m], warnings
    assert sum(c.residues for c in job.result().final_chains if c.threaded) > 0


def test_chains_that_cannot_be_threaded_stay_unassigned_in_the_session(engine, il2, tmp_path):
    """Nothing threads (an E-value cut no alignment meets): the traced chains are the final
    model, as unassigned chains of UNK residues that the session keeps apart from the sequence,
    and the warning says where they went."""
    density, _, sequence = il2
    options = BuildOptions(rounds=1, relax=False, max_evalue=1e-30)
    job = engine.start_build(density, [sequence], options, session=tmp_path / "s")
    events, _ = drive(job)
    result = job.result()
    assert result.final.num_residues and not [c for c in result.final_chains if c.threaded]
    assert np.all(result.final.aatype == UNK_INDEX)
    state = job.session.state
    assert state.keys() == list(zip(result.final.chain_id.tolist(), result.final.residue_number.tolist()))
    assert state.chain_sequences == {}
    # the fit is of the residues as the session named them
    assert sorted(result.fit.chains) == sorted(result.final.chains()) and result.fit.cc_mask > 0.5
    warnings = [e.message for e in events if e.kind == "warning"]
    expected = f"{result.final.num_residues} of them are in the final model's unassigned chains"
    assert [m for m in warnings if m.startswith("no chain could be threaded") and expected in m], warnings


def test_an_unassigned_chain_is_assigned_to_the_placement_the_user_chose(engine, il2, tmp_path):
    """The reference with residues 31-55 as an unassigned chain B of UNK residues numbered 1-25
    along the trace: assigned to its best placement, B's residues take their sequence numbers
    and types, with side chains, and join chain A (which leaves those numbers free); nothing
    else moves, and undo brings B back. Chains that are threaded or hold accepted residues are
    refused."""
    density, reference, sequence = il2
    rows = np.arange(reference.num_residues)
    unassigned = (rows >= 30) & (rows < 55)
    model = with_unassigned_stretch(reference, unassigned, sequence.residues)
    session = reference_session(engine, il2, tmp_path / "s", model)
    assert session.state.chain_sequences == {"A": "il2"}
    probs = noisy_probs(reference.aatype, 0.6, np.random.default_rng(3)).astype(np.float32)
    placement = unassigned_placements(model, probs, [sequence])[0]
    assert placement.chain_id == "B" and placement.first - placement.chain_first == 30
    before = session.state

    job = engine.start_assign(session, density, placement)
    events, _ = drive(job)
    assert EVENT_ORDER.match(kinds(events)) and events[-2].kind == "final", kinds(events)
    assignment = job.result()
    assert assignment.chain.chain_id == "A" and assignment.chain.sequence == "il2"
    after = session.state
    assert "B" not in after.model.chains() and after.chain_sequences == {"A": "il2"}
    new = after.rows([("A", position) for _, position in placement.aligned])
    assert new.sum() == len(placement.aligned) == assignment.model.num_residues
    assert np.array_equal(after.model.aatype[new], reference.aatype[after.model.residue_number[new] - 1])
    assert after.model.atom_mask[new].sum() > 0.9 * reference.atom_mask[unassigned].sum()
    deposited = reference.ca[after.model.residue_number[new] - 1]
    assert np.median(np.linalg.norm(after.model.ca[new] - deposited, axis=-1)) < 1.0
    rows_before, rows_after = key_rows(before), key_rows(after)
    for key in before.keys():
        if key[0] == "A":
            assert np.array_equal(before.model.atom_positions[rows_before[key]],
                                  after.model.atom_positions[rows_after[key]]), key
    assert session.history[-1] == f"assign {job.id}"
    session.undo()
    assert session.keys() == before.keys()

    # a placement of B's residues 8-25 only: 1-7 stay as they were, an unassigned chain
    shorter = dataclasses.replace(placement, aligned=tuple(p for p in placement.aligned if p[0] >= 8))
    job = engine.start_assign(session, density, shorter)
    drive(job)
    rest = job.result().rest
    assert rest.num_residues == 7 and rest.chain_id[0] not in after.chain_sequences
    state = session.state
    rows = state.rows([(rest.chain_id[0], n) for n in range(1, 8)])
    np.testing.assert_array_equal(state.model.ca[rows], before.model.ca[before.rows([("B", n) for n in range(1, 8)])])
    assert np.all(state.model.aatype[rows] == UNK_INDEX)
    session.undo()

    with pytest.raises(InputError, match="already threaded"):
        engine.start_assign(session, density, dataclasses.replace(placement, chain_id="A"))
    with pytest.raises(InputError, match="no chain 'Z'"):
        engine.start_assign(session, density, dataclasses.replace(placement, chain_id="Z"))
    session.accept([("B", 3)])
    with pytest.raises(InputError, match="accepted residues"):
        engine.start_assign(session, density, placement)


def test_unassigned_chains_at_low_resolution_warn_of_their_direction(engine, il2, monkeypatch):
    """At il2's resolution (3.7 Å as the build reads it) the unassigned chains' direction is not
    doubted; from `UNCERTAIN_DIRECTION_RESOLUTION` on (here moved below it) the build says it is
    a guess."""
    from cryobuild.engine import engine as engine_module

    density, _, sequence = il2
    options = BuildOptions(rounds=1, relax=False, max_evalue=1e-30)

    def direction_warnings():
        events, _ = drive(engine.start_build(density, [sequence], options))
        return [e.message for e in events if e.kind == "warning" and "N->C direction" in e.message]

    assert direction_warnings() == []
    monkeypatch.setattr(engine_module, "UNCERTAIN_DIRECTION_RESOLUTION", 2.0)
    [warning] = direction_warnings()
    assert warning.startswith("at ") and "Å the network cannot tell which way a residue points: " \
        "the N->C direction of the " in warning, warning


def test_a_build_that_threads_nothing_at_low_resolution_says_that_is_usual(engine, il2, monkeypatch):
    """At il2's resolution (3.7 Å as the build reads it) a build that threads nothing asks
    whether the sequences belong to the map; from `USUALLY_UNTHREADED_RESOLUTION` on (here moved
    below it) it says that such maps thread little."""
    from cryobuild.engine import engine as engine_module

    density, _, sequence = il2
    options = BuildOptions(rounds=1, relax=False, max_evalue=1e-30)

    def unthreaded_warning():
        events, _ = drive(engine.start_build(density, [sequence], options))
        [warning] = [e.message for e in events if e.message.startswith("no chain could be threaded")]
        return warning

    assert unthreaded_warning().endswith("do the sequences belong to this map, and does its "
                                         "local resolution show side chains?")
    monkeypatch.setattr(engine_module, "USUALLY_UNTHREADED_RESOLUTION", 2.0)
    warning = unthreaded_warning()
    assert "Å that is usual, even with the right sequences" in warning, warning
    assert "belong to this map" not in warning


def test_a_build_that_threads_little_warns(engine, il2, monkeypatch, caplog):
    from cryobuild.engine import engine as engine_module

    monkeypatch.setattr(engine_module, "MIN_THREADED_FRACTION", 1.01)  # any build threads less
    density, _, sequence = il2
    job = engine.start_build(density, [sequence], BuildOptions(rounds=1, relax=False))
    events, _ = drive(job)
    result = job.result()
    threaded = sum(c.residues for c in result.final_chains if c.threaded)
    traced = result.raw.num_residues
    assert 0 < threaded <= traced
    expected = f"only {threaded} of the {traced} traced residues"
    assert [e.message for e in events if e.kind == "warning" and e.message.startswith(expected)]
    assert any(expected in record.getMessage() for record in caplog.records)


def test_a_build_without_a_confident_thread_warns(engine, il2, monkeypatch):
    """The control: il2 with its own sequence threads confidently and does not warn; with the
    confidence cut set below every E-value it does."""
    from cryobuild.engine import engine as engine_module

    density, _, sequence = il2
    options = BuildOptions(rounds=1, relax=False)
    events, _ = drive(engine.start_build(density, [sequence], options))
    assert not [e for e in events if e.kind == "warning"]
    monkeypatch.setattr(engine_module, "CONFIDENT_THREAD_EVALUE", 0.0)
    events, _ = drive(engine.start_build(density, [sequence], options))
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("no chain threaded confidently (best E-value")
    assert warnings[0].endswith("do the sequences belong to this map?")


def test_a_thresholded_map_warns(engine, il2):
    """A map whose density below a contour level was set to 0 (as the spike NTD dev segment)."""
    density, _, sequence = il2
    level = float(np.percentile(density.grid, 90))
    cut = density.with_grid(np.where(density.grid >= level, density.grid, 0))
    events, _ = drive(engine.start_build(cut, [sequence], BuildOptions(rounds=1, relax=False)))
    warnings = [e.message for e in events if e.kind == "warning"]
    assert any(m.startswith(f"the map looks thresholded: every voxel below {level:.3g}") for m in warnings), warnings


def test_a_region_of_weak_candidates_is_rebuilt(engine, il2, tmp_path, monkeypatch):
    """Candidates scoring 0.3-0.45 only (as in a region of a large dev map) are enough."""
    from cryobuild.detect import inference
    from cryobuild.detect.inference import DetectionOptions

    detect = inference.detect_calphas
    threshold = DetectionOptions().threshold

    def weak(*args, **kwargs):
        found = detect(*args, **kwargs)
        score = threshold + (found.points.score - threshold) / (1 - threshold) * (0.45 - threshold)
        return dataclasses.replace(found, points=CalphaPoints(found.points.xyz, score))

    monkeypatch.setattr(inference, "detect_calphas", weak)
    density, _, _ = il2
    session = reference_session(engine, il2, tmp_path / "s")
    job = engine.start_rebuild(session, density, keys=session.keys()[40:70],
                               options=BuildOptions(rounds=1, relax=False))
    events, _ = drive(job)
    assert events[-2].kind == "final", events[-2].message
    points = next(e.payload for e in events if e.kind == "points")
    assert points.score.max() <= 0.45


def test_a_region_rebuild_never_loses_residues(engine, il2, tmp_path):
    """Issue 18, item 2: a rebuild that threads nothing had deleted the region's residues. It
    keeps them and says so; the job leaves no undo point."""
    density, _, _ = il2
    session = reference_session(engine, il2, tmp_path / "s")
    before, history = session.state, session.history
    # no closure either: it would fill the region between its kept neighbours (anchors)
    nothing_threads = BuildOptions(rounds=1, relax=False, max_evalue=1e-30, closure=False)
    job = engine.start_rebuild(session, density, keys=session.keys()[60:71], options=nothing_threads)
    events, _ = drive(job)
    assert events[-2].kind == "final", kinds(events)
    verdict = job.verdict
    print(f"\n{verdict.message}")
    assert verdict.kept == "old" and verdict.message.startswith("kept the region's residues (11 residues")
    assert [e for e in events if e.kind == "warning" and e.message == verdict.message]
    assert session.state is before and session.history == history
    assert Session.open(tmp_path / "s").keys() == before.keys()

    # the session now belongs to this map: a build into another map is refused
    shifted = DensityMap(density.grid, density.voxel_size, density.origin + 50.0)
    with pytest.raises(InputError, match="built into another map"):
        engine.start_build(shifted, [il2[2]], session=session)


def test_a_short_stretch_moved_off_its_density_is_rebuilt_in_place_and_numbered(engine, il2,
                                                                               tmp_path):
    """A user rebuilds six residues that lie 2.5 Å off their density. Too short for threading
    to number on its own (and for the blind check to confirm), the stretch is closed between
    its kept neighbours (`thread.closure.Anchor`); the new residues fit far better than the
    moved ones, so they replace them although the moved ones kept their confidence."""
    density, reference, _ = il2
    window = (reference.residue_number >= 60) & (reference.residue_number <= 65)
    positions = reference.atom_positions.copy()
    positions[window] += np.float32([1.5, -1.5, 1.4])  # 2.5 Å
    moved = dataclasses.replace(reference, atom_positions=positions,
                                confidence=np.full(reference.num_residues, 90.0, np.float32))
    session = reference_session(engine, il2, tmp_path / "s", model=moved)
    keys = [("A", n) for n in range(60, 66)]
    job = engine.start_rebuild(session, density, keys=keys, options=BuildOptions(rounds=2))
    events, _ = drive(job)
    assert events[-2].kind == "final", kinds(events)
    assert job.verdict.kept == "new", job.verdict.message
    model = session.model
    rows = (model.chain_id == "A") & (model.residue_number >= 60) & (model.residue_number <= 65)
    assert rows.sum() == 6
    np.testing.assert_array_equal(model.aatype[rows], reference.aatype[window])
    assert np.linalg.norm(model.ca[rows] - reference.ca[window], axis=1).max() < 1.5


def junctions(state, new) -> list[float]:
    """C(i)-N(i+1) distances (Å) where a residue of ``new`` (bool ``[R]``) and a kept one follow
    each other in a chain."""
    model = state.model
    linked = (model.chain_id[1:] == model.chain_id[:-1]) & (np.diff(model.residue_number) == 1)
    rows = np.flatnonzero(linked & (new[1:] != new[:-1]))
    gaps = model.atom_positions[rows, 2] - model.atom_positions[rows + 1, 0]
    return np.linalg.norm(gaps, axis=-1).tolist()


def test_a_rebuilt_stretch_is_relaxed_bonded_to_the_chain_it_continues(engine, il2, tmp_path, new_wins):
    density, _, _ = il2
    session = reference_session(engine, il2, tmp_path / "s")
    keys = session.keys()
    region = set(keys[80:110])
    job = engine.start_rebuild(session, density, keys=sorted(region), options=BuildOptions(rounds=3))
    events, _ = drive(job)
    assert events[-2].kind == "final", kinds(events)
    state = session.state
    before = set(keys)
    new = np.array([key in region or key not in before for key in state.keys()])
    # the guard of relaxation: a longer gap is a chain break, left as it is
    bonded = [d for d in junctions(state, new) if d < MAX_LINK_DISTANCE]
    print(f"junction C-N distances: {junctions(state, new)}")
    assert bonded, "the rebuilt stretch continues no kept chain"
    assert np.allclose(bonded, PEPTIDE_BOND, atol=0.1), bonded


def test_prune_and_undo(engine, il2, tmp_path):
    session = reference_session(engine, il2, tmp_path / "s")
    keys = session.keys()
    confidence = session.model.confidence
    session.accept(keys[:5])
    threshold = float(np.median(confidence))
    expected = int(np.sum(confidence[5:] < threshold))
    assert session.prune(below=threshold) == expected
    assert session.model.num_residues == len(keys) - expected
    assert set(keys[:5]) <= set(session.keys())  # accepted residues are never pruned
    with pytest.raises(InputError, match="accepted"):
        session.prune(keys[:1])
    assert session.prune(session.keys()[-2:]) == 2
    assert session.undo().startswith("prune 2")
    assert session.undo().startswith(f"prune {expected}")
    assert session.keys() == keys
    assert Session.open(tmp_path / "s").keys() == keys  # saved after every change
    session.undo(), session.undo()  # the accept, then the model replacement
    assert session.model.num_residues == 0
    with pytest.raises(InputError, match="nothing to undo"):
        session.undo()
    with pytest.raises(InputError, match="no such residue"):
        session.prune([("Q", 999)])


def test_a_saved_model_names_its_accepted_residues_and_opens_with_them(engine, il2, tmp_path):
    """`Session.save_model`: an mmCIF names the accepted residues (`ACCEPTED_ITEM`, runs of
    numbers), the session's own model.cif too; a model set from it (`read_accepted`) has them
    accepted again; PDB keeps none; an item that is not runs is a clear error."""
    import gemmi

    from cryobuild.session import ACCEPTED_ITEM, read_accepted

    session = reference_session(engine, il2, tmp_path / "s")
    keys = session.keys()
    accepted = keys[2:6] + keys[9:10]
    session.accept(accepted)
    session.prune(keys[20:22])
    saved = session.save_model(tmp_path / "saved.cif")
    value = gemmi.cif.read(str(saved)).sole_block().find_value(ACCEPTED_ITEM)
    assert gemmi.cif.as_string(value).split() == [f"A:{keys[2][1]}..{keys[5][1]}", f"A:{keys[9][1]}"]
    assert read_accepted(saved) == accepted == read_accepted(tmp_path / "s" / "model.cif")
    assert read_model(saved).num_residues == len(keys) - 2  # the visible model

    other = engine.open_session(tmp_path / "t")
    other.set_model(read_model(saved), accepted=read_accepted(saved))
    assert other.accepted_keys() == accepted
    assert read_accepted(session.save_model(tmp_path / "saved.pdb")) == []
    with pytest.raises(InputError, match="accepted residues"):  # an accepted model stays
        other.set_model(read_model(saved))

    text = saved.read_text().replace(f"A:{keys[9][1]}\n", "A:ten\n")
    (tmp_path / "bad.cif").write_text(text)
    with pytest.raises(InputError, match="not CHAIN:FIRST..LAST"):
        read_accepted(tmp_path / "bad.cif")


def test_bad_input_raises_clear_errors(engine, il2, tmp_path):
    density, _, sequence = il2
    with pytest.raises(InputError, match="rounds"):
        BuildOptions(rounds=0)
    with pytest.raises(InputError, match="threader"):
        BuildOptions(threader="guess")
    with pytest.raises(InputError, match="needs sequences"):  # no sequences: only the hmm threader
        engine.start_build(density, [], BuildOptions(threader="structgen"))
    with pytest.raises(InputError, match="DensityMap"):
        engine.start_build(density.grid, [sequence])
    session = reference_session(engine, il2, tmp_path / "s")
    with pytest.raises(InputError, match="no such residue"):
        engine.start_rebuild(session, density, keys=[("Z", 1)])
    with pytest.raises(InputError, match="not both or neither"):
        engine.start_rebuild(session, density)
    with pytest.raises(InputError, match="radius"):
        engine.start_rebuild(session, density, centre=(0, 0, 0), radius=-1)
    session.accept(session.keys()[:3])
    with pytest.raises(InputError, match="accepted"):
        engine.start_rebuild(session, density, keys=session.keys()[:3])
    assert not session.busy and not engine.jobs

    # a failing callback is an internal error of the job (inline: runs in this thread)
    def explode(event):
        raise RuntimeError("boom")

    job = engine.start_build(density, [sequence], on_event=explode, threaded=False)
    failed = [e for e in job.poll() if e.kind == "failed"]
    assert failed and failed[0].message.startswith("internal error: the event callback raised")
    with pytest.raises(RuntimeError, match="boom"):
        job.result()

    # a flat map fails with the stage's one-line message
    flat = DensityMap(np.zeros((40, 40, 40), np.float32), 1.0, (0, 0, 0))
    job = engine.start_build(flat, [sequence], threaded=False)
    events = job.poll()
    assert kinds(events).endswith("failed finished")
    with pytest.raises(CryobuildError) as error:
        job.result()
    assert events[-2].message == str(error.value) and "\n" not in events[-2].message


_WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from cryobuild.data import read_structure
    from cryobuild.demo_data import demo_structure_path
    from cryobuild.engine import Engine
    from cryobuild.pipeline import BuildOptions
    from cryobuild.sequences import Sequence
    from cryobuild.simulate import SimulationOptions, simulate_map

    path = demo_structure_path("il2.pdb")
    density = simulate_map(read_structure(path), SimulationOptions(resolution=3.0),
                           np.random.default_rng(0))

    def on_event(event):  # round 1 is saved: hold the job there until told to go on
        if event.kind == "round":
            print("ROUND", event.payload.index, event.payload.model.num_residues, flush=True)
            sys.stdin.readline()

    job = Engine("cpu").start_build(density, [Sequence("il2", sys.argv[2])],
                                    BuildOptions(rounds=5), session=sys.argv[1], on_event=on_event)
    job.wait()
    print("DONE", flush=True)
    """
)


def test_session_survives_a_killed_worker_process(engine, il2, tmp_path):
    density, _, sequence = il2
    folder = tmp_path / "s"
    worker = subprocess.Popen([sys.executable, "-c", _WORKER, str(folder), sequence.residues],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = worker.stdout.readline()
        assert line.startswith("ROUND 1"), line

        # another program sees the running job: not interrupted, no edits, no second job
        other = Session.open(folder)
        assert other.job["state"] == "running" and other.busy
        with pytest.raises(JobConflict, match="another program"):
            other.accept(other.keys()[:1])
        with pytest.raises(JobConflict, match="another program"):
            engine.start_build(density, [sequence], BuildOptions(rounds=1), session=other)
        assert not engine.jobs

        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        worker.stdin.close()
        worker.stdout.close()
    residues = int(line.split()[2])
    session = Session.open(folder)
    assert session.job["state"] == "interrupted" and session.job["rounds_saved"] == 1
    assert session.model.num_residues == residues and session.state.built.all()
    assert read_model(folder / MODEL_FILE).num_residues == session.model.num_residues
    assert_no_partial_files(folder)
    assert not other.busy


def test_a_save_never_overwrites_what_another_program_saved(engine, il2, tmp_path):
    density, reference, sequence = il2
    first = Session.open(tmp_path / "s")
    first.set_model(reference, sequences=[sequence])
    second = Session.open(tmp_path / "s")  # as another program would
    keys = second.keys()
    first.accept(keys[:3])
    with pytest.raises(JobConflict, match="another program has saved"):
        second.prune(keys[-2:])
    assert second.keys() == keys and second.history == ["replace model"]  # unchanged
    assert Session.open(tmp_path / "s").accepted_keys() == keys[:3]
    second.reload()
    assert second.accepted_keys() == keys[:3] and second.prune(keys[-2:]) == 2

    # the first is stale now: neither its edits nor its jobs may overwrite the prune
    with pytest.raises(JobConflict, match="another program has saved"):
        first.undo()
    with pytest.raises(JobConflict, match="another program has saved"):
        engine.start_build(density, [sequence], BuildOptions(rounds=1), session=first)
    assert not first.busy and not engine.jobs and first.history == ["replace model", "accept 3"]
    assert Session.open(tmp_path / "s").keys() == keys[:-2]
    assert_no_partial_files(tmp_path / "s")


def test_rounds_of_several_starts_are_named_by_start():
    """With ``restarts`` > 1 a round event names its start, so that a later start's first round
    does not read as a refinement of the earlier start's last (`pipeline.round_label`)."""
    from cryobuild.pipeline import round_label

    assert round_label(2, 3) == "round 2/3"
    assert [round_label(i, 3, 2) for i in (1, 3, 4, 6)] == [
        "start 1/2, round 1/3", "start 1/2, round 3/3", "start 2/2, round 1/3",
        "start 2/2, round 3/3"]


def test_a_build_of_three_starts_names_their_rounds(engine, il2):
    """``restarts=3``: the round events name their start and the progress only goes forward
    over all three starts' rounds."""
    density, _, sequence = il2
    job = engine.start_build(density, [sequence], BuildOptions(rounds=1, relax=False, restarts=3))
    events, _ = drive(job)
    rounds = [e.message.split(":")[0] for e in events if e.kind == "round"]
    assert rounds == ["start 1/3, round 1/1", "start 2/3, round 1/1", "start 3/3, round 1/1"], rounds
    fractions = [e.fraction for e in events if e.kind == "round"]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0


def test_spliced_reports_describe_each_chain_as_it_is_now(il2):
    """A chain that kept residues and gained new ones reports what it holds now and the best
    of its parts' alignments; a chain only kept keeps its report's figures; a gone chain goes."""
    from cryobuild.engine.splice import spliced_reports
    from cryobuild.pipeline import ChainReport

    _, reference, _ = il2
    model = reference.take(np.arange(30))
    model = dataclasses.replace(model, chain_id=np.array(["A"] * 20 + ["C"] * 10),
                                residue_number=np.r_[1:21, 1:11],
                                confidence=np.r_[np.full(20, 60.0), np.full(10, 90.0)])
    kept = (ChainReport("A", "il2", 1, 40, 40, 50.0, 1e-9, 70.0),
            ChainReport("B", "", 1, 5, 5, float("nan"), float("inf"), 70.0),
            ChainReport("C", "", 1, 10, 10, float("nan"), float("inf"), 80.0))
    new = (ChainReport("A", "il2", 15, 20, 6, 80.0, 1e-15, 75.0),)
    a, c = spliced_reports(model, kept, new, {"A": "il2"})
    assert (a.chain_id, a.sequence, a.first, a.last, a.residues) == ("A", "il2", 1, 20, 20)
    assert (a.score, a.evalue, a.mean_confidence) == (80.0, 1e-15, 60.0)
    assert (c.chain_id, c.sequence, c.residues, c.evalue, c.mean_confidence) == ("C", "", 10, float("inf"), 90.0)


def test_a_sphere_region_takes_the_residues_between_its_own(engine, il2, tmp_path, monkeypatch):
    """A sphere picks residues by their atoms, so one or two residues of a chain between two
    picked ones are often left out: they are taken too (`splice.SPHERE_BRIDGE`), not kept as
    islands inside the rebuilt stretch; farther gaps stay."""
    from cryobuild.engine import splice

    density, reference, _ = il2
    state = reference_session(engine, il2, tmp_path / "s").state

    def numbers(centre):
        rows = splice.select_region(state, density, centre=centre, radius=8.0).rows
        return set(state.model.residue_number[rows].tolist())

    def short_gaps(taken):
        ordered = sorted(taken)
        return [(a, b) for a, b in zip(ordered, ordered[1:]) if 1 < b - a <= splice.SPHERE_BRIDGE + 1]

    bridged = {}
    for centre in reference.ca[::5]:
        with monkeypatch.context() as patch:
            patch.setattr(splice, "SPHERE_BRIDGE", 0)
            plain = numbers(centre)
        if short_gaps(plain):
            bridged[tuple(centre)] = (plain, numbers(centre))
    assert bridged  # an 8 Å sphere in il2 leaves such gaps
    for plain, taken in bridged.values():
        assert taken >= plain and not short_gaps(taken)
        for a, b in short_gaps(plain):
            assert set(range(a + 1, b)) <= taken
        assert taken - plain == {n for a, b in short_gaps(plain) for n in range(a + 1, b)}


def test_a_map_of_inverted_contrast_says_so(engine, il2):
    """il2's map negated (protein darker than solvent): the build says its contrast looks
    inverted, whether it refuses the map (as here: no candidate) or builds with a warning, and
    so does the warning of a build that threads nothing."""
    density, _, sequence = il2
    job = engine.start_build(density.with_grid(-density.grid), [sequence],
                             BuildOptions(rounds=1, relax=False, resolution=3.0))
    events, _ = drive(job)
    said = [e.message for e in events if e.kind in ("warning", "failed")]
    assert any("its contrast looks inverted" in m for m in said), said
    assert not [m for m in said if m.startswith("no chain could be threaded")
                and "contrast looks inverted" not in m], said


def test_a_build_that_threads_nothing_on_a_map_of_inverted_contrast_names_the_contrast(
        engine, il2, monkeypatch):
    """Nothing threads (an E-value cut no alignment meets) on a map the engine takes to be of
    inverted contrast (its bound moved above il2's skewness): the warning names the contrast,
    not the sequences."""
    from cryobuild.engine import engine as engine_module
    from cryobuild.pipeline import INVERTED_ADVICE

    monkeypatch.setattr(engine_module, "INVERTED_SKEWNESS", 100.0)
    density, _, sequence = il2
    job = engine.start_build(density, [sequence], BuildOptions(rounds=1, relax=False,
                                                               max_evalue=1e-30))
    events, _ = drive(job)
    [warning] = [e.message for e in events if e.message.startswith("no chain could be threaded")]
    assert warning.endswith(f"the map's values are skewed negative: {INVERTED_ADVICE}"), warning
