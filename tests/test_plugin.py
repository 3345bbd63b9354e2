"""The PyMOL plugin: commands, the Qt panel (offscreen), streaming, editing, map placement.

Behaviour only, never model quality: the committed weights are still training, and with them
the final (threaded) model is often empty. Where it is, the test checks the rounds' raw models
instead (the plugin shows the last one as ``<name>_raw``) and says so on stdout.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

pymol = pytest.importorskip("pymol", reason="pymol-open-source is not installed")
try:
    from pymol.Qt import QtCore, QtWidgets
except Exception as err:  # no Qt binding, or no platform plugin
    pytest.skip(f"Qt is not usable here: {err}", allow_module_level=True)

from cryobuild.checkpoints import checkpoint_path  # noqa: E402
from cryobuild.maps import read_map, write_map  # noqa: E402
from cryobuild.models import read_model  # noqa: E402
from cryobuild.residues import one_letter  # noqa: E402
from cryobuild.sequences import Sequence  # noqa: E402
from pymol import CmdException, cmd  # noqa: E402

import cryobuild_pymol  # noqa: E402
from cryobuild_pymol import bridge as bridge_module  # noqa: E402
from cryobuild_pymol import panel as panel_module  # noqa: E402
from cryobuild_pymol.bridge import (DEFAULT_MODEL, PLACES_LIFT, Bridge,  # noqa: E402
                                    density_from_pymol, reset_bridge, residue_keys)

#: The issue's limit on a GUI-thread pause while a job runs (s).
MAX_GUI_GAP = 0.2
#: Period of the test's own GUI timer (s), whose gaps are measured.
TICK_MS = 20
#: A job that has not ended in this long has hung.
JOB_TIMEOUT = 120.0
#: Seconds from closing the panel to the end of its build (issue 18: about 4 s).
CLOSE_LATENCY = 1.5
#: Least RGB distance between the prune preview's colour and any colour of the confidence ramp.
PREVIEW_CONTRAST = 0.5

needs_weights = pytest.mark.skipif(
    not (checkpoint_path("detect").is_file() and checkpoint_path("gnn").is_file()),
    reason="trained weights (weights/detect.pt, gnn.pt) not available",
)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def qapp():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication(["pytest"])


@pytest.fixture(scope="module")
def il2(il2_map_3A, il2_path, tmp_path_factory):
    """(map file, its DensityMap, reference model numbered 1..R, sequence, FASTA file)."""
    density, _ = il2_map_3A
    folder = tmp_path_factory.mktemp("il2")
    path = write_map(density, folder / "il2.mrc")  # non-integer ORIGIN: (-14.688, -37.969, -13.169)
    reference = read_model(il2_path)
    reference = dataclasses.replace(reference, residue_number=np.arange(1, reference.num_residues + 1),
                                    entity_sequences={})
    sequence = Sequence("il2", "".join(one_letter(int(a)) for a in reference.aatype))
    fasta = folder / "il2.fasta"
    fasta.write_text(f">il2\n{sequence.residues}\n")
    return path, read_map(path), reference, sequence, fasta


@pytest.fixture(autouse=True)
def fresh_pymol(qapp, tmp_path, request):
    """A clean PyMOL and a bridge of its own (sessions in tmp_path) for each test."""
    cmd.reinitialize()
    shared = request.getfixturevalue("engine") if "engine" in request.fixturenames else None
    bridge = reset_bridge(Bridge(session_root=tmp_path / "sessions", engine=shared))
    cryobuild_pymol.__init_plugin__()
    yield bridge
    panel_module.close_panel()
    bridge.shutdown(timeout=30)
    reset_bridge(None)
    qapp.processEvents()


def wait_for(qapp, condition, timeout=JOB_TIMEOUT, gaps=None):
    """Run the Qt event loop until ``condition()``; with ``gaps``, record the pauses of a
    TICK_MS GUI timer meanwhile."""
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = None
    if gaps is not None:
        timer = QtCore.QTimer()
        timer.setInterval(TICK_MS)
        timer.timeout.connect(tick)
        timer.start()
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting (job hung?)"
            qapp.processEvents(QtCore.QEventLoop.AllEvents, 20)
            time.sleep(0.002)
    finally:
        if timer is not None:
            timer.stop()


def ca_b_factors(name):
    values = {}
    cmd.iterate(f"{name} and name CA", "values[(chain, int(resv))] = b", space={"values": values, "int": int})
    return values


def shown_residues(name):
    """``(chain, residue number)`` of the Cα atoms of object ``name``, sorted (repeats kept)."""
    keys = []
    cmd.iterate(f"{name} and name CA", "keys.append((chain, int(resv)))", space={"keys": keys, "int": int})
    return sorted(keys)


def model_residues(model):
    return sorted(zip(model.chain_id.tolist(), model.residue_number.tolist()))


def command(name, *args):
    """Call a command registered with cmd.extend, as the API would (string arguments)."""
    return cmd.keyword[name][0](*args)


def open_panel(fresh_pymol, map_path=None, sequence_text=None):
    panel = panel_module.show_panel(map_path=map_path, bridge=fresh_pymol)
    if sequence_text is not None:
        panel.sequence_edit.setPlainText(sequence_text)
    return panel


# ----------------------------------------------------------------------------- no jobs


def test_plugin_registers_commands_with_pymol_docstrings():
    for name in ("cryobuild_build", "cryobuild_prune", "cryobuild_accept", "cryobuild_unaccept",
                 "cryobuild_remove", "cryobuild_open", "cryobuild_save", "cryobuild_rebuild",
                 "cryobuild_cancel"):
        assert name in cmd.keyword, name
        doc = cmd.keyword[name][0].__doc__
        for section in ("DESCRIPTION", "USAGE", "SEE ALSO"):
            assert section in doc, (name, section)
    assert "ARGUMENTS" in cmd.keyword["cryobuild_build"][0].__doc__
    assert cmd.get_setting_int("mesh_use_shader") == 0
    with pytest.raises(CmdException, match="not a map object"):
        command("cryobuild_build", "nothing", ">a\nMKV")
    with pytest.raises(CmdException, match="resolution must be a number of Å"):
        command("cryobuild_build", "nothing", ">a\nMKV", "m", "1", "auto", "3,4")
    with pytest.raises(CmdException, match="not a cryobuild model"):
        command("cryobuild_prune", "cryobuild_model", "30")
    with pytest.raises(CmdException, match="number"):
        command("cryobuild_prune", "cryobuild_model", "lots")


def test_a_headless_command_says_each_warning_once(capsys):
    """The engine's warnings reach PyMOL's console as job events: logging does not print them
    again, and a rebuild's verdict is said by its finish line alone."""
    from types import SimpleNamespace

    from cryobuild_pymol.commands import _report

    logged = subprocess.run(  # pytest's own log capture would hide logging's last resort here
        [sys.executable, "-c", "import logging; from cryobuild_pymol.commands import register; "
         "register(); log = logging.getLogger('cryobuild.engine'); "
         "log.warning('shown as an event'); log.error('an internal error')"],
        capture_output=True, text=True, timeout=120)
    assert "shown as an event" not in logged.stderr and "an internal error" in logged.stderr
    verdict = SimpleNamespace(message="kept the region's residues", kept="old", candidate=None)
    view = SimpleNamespace(name="m", new_name="m_new", job=SimpleNamespace(kind="rebuild",
                                                                         verdict=verdict))
    for kind, message in (("warning", "the map looks thresholded"),
                          ("warning", verdict.message), ("final", "done")):
        _report(view, SimpleNamespace(kind=kind, message=message, job_id="job-9", payload=None), 0)
    out = capsys.readouterr().out
    assert "warning: the map looks thresholded" in out
    assert out.count(verdict.message) == 1 and "rebuild done: kept the region's residues" in out


@pytest.mark.parametrize("normalise", [1, 0])
def test_map_comes_from_pymol_placed_and_scaled_the_same_either_way(il2, normalise):
    path, density, *_ = il2
    cmd.set("normalize_ccp4_maps", normalise)
    cmd.load(str(path), "emap")
    got = density_from_pymol("emap")
    assert got.grid.shape == density.grid.shape
    np.testing.assert_allclose(got.origin, density.origin, atol=1e-3)  # PyMOL's ccp4str drops it
    np.testing.assert_allclose(got.voxel_size, density.voxel_size, atol=1e-4)
    expected = (density.grid - density.grid.mean()) / density.grid.std()
    np.testing.assert_allclose(got.grid, expected, atol=1e-4)


@pytest.mark.parametrize("axes, start, origin", [((3, 1, 2), (5, -7, 9), (0, 0, 0)),
                                                  ((2, 3, 1), (0, 0, 0), (7.3, 8.1, -9.9))])
def test_map_with_unusual_axis_order_and_origin_lines_up(tmp_path, axes, start, origin):
    import mrcfile

    data = np.random.default_rng(0).random((20, 24, 28)).astype(np.float32)
    path = tmp_path / "odd.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = axes
        mrc.voxel_size = (1.2, 1.3, 1.1)
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = start
        mrc.header.origin = origin
    expected = read_map(path)
    cmd.load(str(path), "odd")
    got = density_from_pymol("odd")
    np.testing.assert_allclose(got.origin, expected.origin, atol=1e-3)
    np.testing.assert_allclose(got.voxel_size, expected.voxel_size, atol=1e-4)
    np.testing.assert_allclose(got.grid, (expected.grid - expected.grid.mean()) / expected.grid.std(), atol=1e-4)


def test_panel_builds_and_validates_sequences_as_you_type(fresh_pymol, il2, qapp):
    panel = open_panel(fresh_pymol, map_path=str(il2[0]))
    assert panel.map_combo.currentText() == "il2"
    panel.sequence_edit.setPlainText(">A\nMKV1L\n")
    assert "'1' is not an amino-acid letter" in panel.sequence_status.text()
    panel.sequence_edit.setPlainText("MKVLAAG")  # a bare sequence is accepted
    assert "OK" in panel.sequence_status.text()
    # a bare sequence's problems are on the user's lines, not after the header the panel adds
    panel.sequence_edit.setPlainText("MKV1L")
    assert panel.sequence_status.text() == "line 1: '1' is not an amino-acid letter"
    panel.sequence_edit.setPlainText("MKVL\nAA1G")
    assert panel.sequence_status.text().startswith("line 2: '1'")
    panel.sequence_edit.setPlainText("")  # no sequence: a build without one
    assert "builds without" in panel.sequence_status.text() and panel._validate_sequence() == []
    panel.sequence_edit.setPlainText(">A\nMKV1L\n")
    panel.build_button.click()  # refused, with the problem in the log, no dialog
    assert panel.job is None and "has problems" in panel.log_view.toPlainText()
    assert panel.build_button.text() == "Auto-build"
    assert panel.grab().width() > 0


def test_the_log_stays_in_view_and_the_controls_scroll_when_the_panel_is_short(fresh_pymol, il2, qapp):
    """At 1400x900 the whole panel used to scroll and hid the log's newest lines below the
    fold; now the controls scroll and the log keeps `LOG_MIN_LINES` lines in view."""
    panel = open_panel(fresh_pymol, map_path=str(il2[0]))
    lines = panel.log_view.fontMetrics().lineSpacing() * panel_module.LOG_MIN_LINES
    for height in (300, 500, 1200):
        panel.resize(420, height)
        panel.show()
        qapp.processEvents()
        log_box = panel.log_view.geometry().translated(panel.log_view.parentWidget().mapTo(panel, QtCore.QPoint(0, 0)))
        assert panel.rect().contains(log_box), (height, log_box, panel.rect())
        assert panel.log_view.viewport().height() >= lines, height
        controls = panel.splitter.widget(0)
        scrolls = controls.verticalScrollBar().maximum() > 0
        assert scrolls == (height - panel.log_view.minimumHeight() < controls.needed_height()), height
    panel.hide()


def test_the_remote_device_asks_for_a_scheduler_and_says_when_it_cannot_reach_it(fresh_pymol, il2, qapp):
    """"remote: tcp://…" shows an address field; a build without an address is refused with
    what to type; an unreachable scheduler is reported in the log; the engine for an address
    runs inference there (`Engine.scheduler`) and is one per address."""
    panel = open_panel(fresh_pymol, map_path=str(il2[0]))
    panel.device_combo.setCurrentIndex(panel.device_combo.findData("remote"))
    assert not panel.scheduler_row.isHidden()
    assert "address" in panel.device_label.text()
    panel.build_button.click()
    assert panel.job is None and "scheduler's address" in panel.log_view.toPlainText()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    engine = fresh_pymol.engine(address)
    assert engine.scheduler == address and fresh_pymol.engine(address) is engine
    if importlib.util.find_spec("distributed") is not None:
        panel.scheduler_edit.setText(address)
        panel.scheduler_edit.editingFinished.emit()
        wait_for(qapp, lambda: f"could not use {address}" in panel.log_view.toPlainText(),
                 timeout=60)
        assert "cannot reach the Dask scheduler" in panel.log_view.toPlainText()
    panel.device_combo.setCurrentIndex(panel.device_combo.findData("cpu"))
    assert panel.scheduler_row.isHidden() and panel.device() == "cpu"


def test_the_map_list_follows_maps_loaded_in_pymol(fresh_pymol, il2, qapp):
    """Issue 18, item 8: the list did not show a map loaded with ``load`` until opened."""
    panel = open_panel(fresh_pymol)
    assert panel.map_combo.count() == 0
    cmd.load(str(il2[0]), "later")
    wait_for(qapp, lambda: panel.map_combo.count() == 1, timeout=5)  # the pump's next tick
    assert panel.map_combo.currentText() == "later"
    cmd.delete("later")
    wait_for(qapp, lambda: panel.map_combo.count() == 0, timeout=5)


def test_an_opened_map_is_shown_as_a_mesh_centred_and_zoomed(fresh_pymol, il2, qapp):
    """Issue 18, item 7: ``cryobuild gui MAP FASTA`` showed a black viewer."""
    path, density, reference, *_ = il2
    panel = open_panel(fresh_pymol, map_path=str(path))
    assert "il2_mesh" in cmd.get_names("objects") and "shown as the mesh il2_mesh" in panel.log_view.toPlainText()
    level = bridge_module.contour_level(cmd.get_volume_field("il2"))
    assert level > float(np.median(cmd.get_volume_field("il2")))
    # the level keeps the molecule inside the mesh and most of the box outside it
    values = cmd.get_volume_field("il2")
    at_ca = (density.interpolate(reference.ca) - density.grid.mean()) / density.grid.std()
    normalised = at_ca * values.std() + values.mean()  # PyMOL's normalised values
    print(f"\ncontour {level:.2f}: {np.mean(normalised >= level):.0%} of the Cα inside, "
          f"{np.mean(values >= level):.1%} of the box above")
    assert np.mean(normalised >= level) > 0.9 and np.mean(values >= level) < 0.25
    lo, hi = (np.asarray(corner) for corner in cmd.get_extent("il2_mesh"))
    view = cmd.get_view()
    np.testing.assert_allclose(view[12:15], (lo + hi) / 2, atol=1.0)  # centred on the mesh
    assert -view[11] < 3 * np.linalg.norm(hi - lo)  # and zoomed to it


def test_contour_level_splits_solvent_from_molecule():
    """Otsu's split of the histogram; a value filling the box (zero padding) is left out."""
    rng = np.random.default_rng(0)
    solvent = rng.normal(0.0, 0.3, 90_000)
    molecule = rng.normal(3.0, 0.8, 10_000)
    level = bridge_module.contour_level(np.concatenate([solvent, molecule]))
    assert 1.0 < level < 2.5
    padded = bridge_module.contour_level(np.concatenate([solvent, molecule, np.zeros(400_000)]))
    assert abs(padded - level) < 0.3


def test_confidence_colours_preview_and_legend(fresh_pymol, il2):
    """Issue 18, item 8: the prune preview's grey50 is the ramp's own colour at confidence 75,
    and PyMOL's colour bar spans the view and reads 0.000 / 100.000: the panel's legend is
    the colour bar."""
    cmd.pseudoatom("ramp", pos=[0, 0, 0])
    for value in range(1, 101):
        cmd.pseudoatom("ramp", pos=[value, 0, 0])
    cmd.alter("ramp", "b = float(ID)")
    ramp_colours = []
    cmd.spectrum("b", bridge_module.PALETTE, "ramp", minimum=0, maximum=100)
    cmd.iterate("ramp", "ramp_colours.append(color)", space={"ramp_colours": ramp_colours})
    ramp = np.array([cmd.get_color_tuple(c) for c in ramp_colours])
    preview = np.array(cmd.get_color_tuple(bridge_module.PREVIEW_COLOUR))
    distance = np.linalg.norm(ramp - preview, axis=1).min()
    print(f"\nprune preview {bridge_module.PREVIEW_COLOUR}: {distance:.2f} from the nearest ramp colour")
    assert distance >= PREVIEW_CONTRAST

    _, _, reference, sequence, _ = il2
    fresh_pymol.set_model(_known_model(reference), sequences=[sequence])
    assert "cryobuild_confidence" not in cmd.get_names("all")  # no colour bar over the model
    panel = open_panel(fresh_pymol)
    legend = [label.text() for label in panel.findChildren(QtWidgets.QLabel)]
    assert "confidence 0" in legend and "100" in legend


# ----------------------------------------------------------------------------- builds


@needs_weights
def test_auto_build_streams_into_pymol_and_the_gui_stays_responsive(fresh_pymol, engine, il2, qapp):
    path, density, _, sequence, _ = il2
    rna = ">rna\nGGCUAGCUAGCUAGGCUAAUCGAUCG\n"  # left out, with a warning in the log
    panel = open_panel(fresh_pymol, map_path=str(path), sequence_text=f">il2\n{sequence.residues}\n{rna}")
    panel.rounds_spin.setValue(2)
    assert panel.resolution_spin.text() == "auto"  # estimated unless given
    panel.resolution_spin.setValue(3.0)  # the map's, as from its EMDB entry
    wait_for(qapp, lambda: panel.ready)
    seen, objects_at = [], {}
    apply = fresh_pymol.apply

    def record(view, event):  # what PyMOL shows right after each event is applied
        apply(view, event)
        seen.append(event.kind)
        if event.kind in ("points", "round"):
            objects_at[f"{event.kind}{len(seen)}"] = set(cmd.get_names("objects"))

    fresh_pymol.apply = record
    gaps = []
    panel.build_button.click()
    assert panel.build_button.text() == "Stop"
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))
    wait_for(qapp, lambda: ended, gaps=gaps)
    assert ended == ["final"], panel.log_view.toPlainText()
    assert panel.build_button.text() == "Auto-build"
    assert "warning: <panel>: record 'rna' has only A, C, G, T, U and N" in panel.log_view.toPlainText()
    assert " at 3 Å, 2 round(s)" in panel.log_view.toPlainText()
    # its rebuilds read the map so too: the session records it
    assert fresh_pymol.views["cryobuild_model"].session.map_info["resolution"] == 3.0

    gaps = np.sort(gaps[1:])
    print(f"\nGUI timer ({TICK_MS} ms) during the build: max gap {gaps[-1] * 1000:.0f} ms, "
          f"99th percentile {np.percentile(gaps, 99) * 1000:.0f} ms, "
          f"{int((gaps > MAX_GUI_GAP).sum())} of {len(gaps)} gaps over {MAX_GUI_GAP * 1000:.0f} ms")
    assert np.percentile(gaps, 99) < MAX_GUI_GAP and gaps[-1] < 5 * MAX_GUI_GAP  # no freeze

    # Streaming: Cα points first (as spheres), then >= 2 model updates.
    assert seen.index("points") < seen.index("round")
    assert seen.count("round") == 2
    first_points = next(k for k in objects_at if k.startswith("points"))
    assert "cryobuild_ca" in objects_at[first_points]
    assert all("cryobuild_model" in names for key, names in objects_at.items() if key.startswith("round"))
    view = fresh_pymol.views["cryobuild_model"]
    assert view.updates >= 3  # two rounds and the final model
    assert cmd.count_atoms("cryobuild_ca and rep spheres") == cmd.count_atoms("cryobuild_ca") > 0
    # the candidates are hidden once the build has ended: they would cover the model
    assert "cryobuild_ca" not in cmd.get_names("objects", enabled_only=1)
    assert panel.progress.value() == panel_module.PROGRESS_STEPS

    # B-factors are the engine's confidences, for the final model or (when the weak weights
    # threaded nothing) the last round's raw model.
    model = view.session.model
    if model.num_residues:
        shown, expected = ca_b_factors("cryobuild_model"), model
    else:
        print("final model empty (weights still training): checking the last round's raw model")
        shown, expected = ca_b_factors("cryobuild_model_raw"), view.last_round.model
    keys = list(zip(expected.chain_id.tolist(), expected.residue_number.tolist()))
    np.testing.assert_allclose([shown[k] for k in keys], expected.confidence, atol=0.01)

    # Placement: the model lies in the density of the map file (whose ORIGIN PyMOL's ccp4str
    # export drops), read independently of PyMOL.
    xyz = cmd.get_coords(("cryobuild_model" if model.num_residues else "cryobuild_model_raw") + " and name CA")
    at_ca = density.interpolate(xyz)
    z = (at_ca.mean() - density.grid.mean()) / density.grid.std()
    print(f"mean density at the model's Cα: {z:.1f} SD above the map mean")
    assert z > 1.0


@needs_weights
def test_stop_and_closing_the_panel_cancel_the_build(fresh_pymol, engine, il2, qapp):
    path, _, _, sequence, _ = il2
    panel = open_panel(fresh_pymol, map_path=str(path), sequence_text=f">il2\n{sequence.residues}\n")
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))
    panel.build_button.click()
    job = panel.job
    wait_for(qapp, lambda: job._fraction > 0.02)  # past the start
    panel.build_button.click()  # Stop
    assert panel.stage_label.text() == "stopping…"
    wait_for(qapp, lambda: ended, timeout=30)
    assert ended == ["cancelled"] and panel.build_button.text() == "Auto-build"
    assert "stopped" in panel.log_view.toPlainText()

    # a build started by the command shows in the panel (progress, Stop), and closing the
    # panel stops it at once
    cmd.do(f"cryobuild_build il2, {il2[4]}")
    second = fresh_pymol.views["cryobuild_model"].job
    assert second is not job and not second.done
    wait_for(qapp, lambda: panel.job is second, timeout=5)
    assert panel.build_button.text() == "Stop" and not panel.accept_button.isEnabled()
    wait_for(qapp, lambda: second._fraction > 0.02)
    closed = time.perf_counter()
    panel_module.close_panel()  # closing the panel cancels too
    assert second.wait(30) and second.outcome == "cancelled"
    print(f"\nclosing the panel stopped the build in {time.perf_counter() - closed:.2f} s")
    assert time.perf_counter() - closed < CLOSE_LATENCY


@needs_weights
def test_a_command_build_shows_in_the_panel_and_ends_with_a_console_line(fresh_pymol, engine, il2, qapp, capsys):
    """Issue 18, item 5: builds started by ``cryobuild_build`` were invisible in the panel, the
    console never said they had ended, and one map takes one build at a time."""
    path, _, _, _, fasta = il2
    panel = open_panel(fresh_pymol, map_path=str(path))
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append((job_id, outcome)))
    cmd.do(f"cryobuild_build il2, {fasta}, rounds=1")
    job = fresh_pymol.views["cryobuild_model"].job
    wait_for(qapp, lambda: panel.job is job, timeout=5)
    assert panel.build_button.text() == "Stop"  # Auto-build is Stop while it runs
    with pytest.raises(CmdException, match="already running on this map"):
        command("cryobuild_build", "il2", str(fasta), "other_model")
    progress = []
    wait_for(qapp, lambda: progress.append(panel.progress.value()) or ended)
    assert ended == [(job.id, "final")] and max(progress) > 0
    assert panel.build_button.text() == "Auto-build"
    out = capsys.readouterr().out
    assert f" cryobuild: {job.id} (cryobuild_model): done: " in out, out
    assert f"{job.id} (cryobuild_model): done: " in panel.log_view.toPlainText()
    assert " residues), CC_mask 0." in out and " in the map" in out, out  # the model's fit


@needs_weights
def test_a_new_build_or_a_stopped_one_never_replaces_a_better_finished_model(fresh_pymol, engine, il2, qapp):
    """Issue 18, item 3: a second Auto-build replaced a model with a worse one, and Stop in
    round 3 replaced a threaded model with fragments."""
    path, _, reference, sequence, _ = il2
    cmd.load(str(path), "emap")
    certain = dataclasses.replace(reference, confidence=np.full(reference.num_residues, 100.0, np.float32))
    view = fresh_pymol.set_model(certain, sequences=[sequence], map_name="emap")
    finished = model_residues(view.session.model)
    panel = open_panel(fresh_pymol, sequence_text=f">il2\n{sequence.residues}\n")
    panel.rounds_spin.setValue(2)
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))

    # stopped in its second round: the finished model stays, the last round is shown apart
    panel.build_button.click()
    job = panel.job
    assert job.keeps_model and "stays until a better model is done" in panel.log_view.toPlainText()
    wait_for(qapp, lambda: view.last_round is not None)
    assert shown_residues("cryobuild_model") == finished and "cryobuild_model_new" in cmd.get_names("objects")
    panel.build_button.click()  # Stop
    wait_for(qapp, lambda: ended)
    assert ended == ["cancelled"], panel.log_view.toPlainText()
    assert shown_residues("cryobuild_model") == finished == model_residues(view.session.model)
    assert "cryobuild_model_new" in cmd.get_names("objects")
    assert "stopped; cryobuild_model keeps its model; its last round is cryobuild_model_new" in \
        panel.log_view.toPlainText()

    # a finished build that is not better: kept apart, and "Use new model" swaps it in
    panel.rounds_spin.setValue(1)
    panel.build_button.click()
    wait_for(qapp, lambda: len(ended) == 2)
    verdict = panel.job.verdict
    print(f"\n{verdict.message}")
    assert ended[1] == "final" and verdict.kept == "old"
    assert shown_residues("cryobuild_model") == finished
    new = model_residues(panel.job.result().final)
    assert shown_residues("cryobuild_model_new") == new
    assert panel.swap_button.isEnabled()
    panel.swap_button.click()
    assert shown_residues("cryobuild_model") == model_residues(view.session.model) == new
    assert "cryobuild_model_new" not in cmd.get_names("objects") and not panel.swap_button.isEnabled()
    panel.undo_button.click()
    assert shown_residues("cryobuild_model") == finished


@needs_weights
def test_a_build_into_another_map_starts_clean(fresh_pymol, engine, il2, qapp, tmp_path):
    """Issue 18, item 4: building T20S into cryobuild_model kept 20 accepted EMD-2566
    residues 200 Å away. A model object belongs to its map."""
    from cryobuild.maps import DensityMap

    path, density, reference, sequence, _ = il2
    cmd.load(str(path), "emap")
    view = fresh_pymol.set_model(reference, sequences=[sequence], map_name="emap")
    fresh_pymol.accept("resi 1-20")
    moved = DensityMap(density.grid, density.voxel_size, density.origin + 200.0)
    cmd.load(str(write_map(moved, tmp_path / "far.mrc")), "far")
    panel = open_panel(fresh_pymol, sequence_text=f">il2\n{sequence.residues}\n")
    panel.map_combo.refresh(select="far")
    panel.build_button.click()
    job = panel.job
    other = fresh_pymol.view_of(job)
    assert other.name == "cryobuild_model_far" == panel.name_edit.text()
    assert "cryobuild_model holds a model of map emap" in panel.log_view.toPlainText()
    assert not other.session.state.accepted.any() and other.context is None
    assert len(view.session.accepted_keys()) == 20  # the first model keeps its own
    job.cancel()
    assert job.wait(30)


@needs_weights
def test_building_without_a_sequence(fresh_pymol, engine, il2, qapp, capsys):
    """Issue 18, item 6: ``cryobuild_build`` without a FASTA refused; it builds as
    ``build_no_seq`` does (unassigned chains, HMM profiles saved), in the panel too."""
    path, *_ = il2
    cmd.load(str(path), "emap")
    cmd.do("cryobuild_build emap, name=noseq, rounds=1")  # headless: returns when done
    out = capsys.readouterr().out
    assert "building without sequence" in out and "HMM profiles in" in out, out
    view = fresh_pymol.views["noseq"]
    assert view.session.model.num_residues > 0 and view.session.state.chain_sequences == {}
    assert sorted(view.profiles.glob("*.hmm"))
    panel = open_panel(fresh_pymol)
    panel.name_edit.setText("noseq_panel")
    panel.build_button.click()  # an empty sequence box builds without sequence
    assert panel.job is not None and "without sequence" in panel.log_view.toPlainText()
    panel.job.cancel()
    assert panel.job.wait(30)


@needs_weights
def test_failed_build_is_reported_in_the_log(fresh_pymol, engine, qapp, tmp_path):
    from cryobuild.maps import DensityMap

    # Smoothed noise: no protein density, refused
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(0).standard_normal((40, 40, 40)), 1.0)
    write_map(DensityMap(noise.astype(np.float32), np.ones(3), np.zeros(3)), tmp_path / "noise.mrc")
    panel = open_panel(fresh_pymol, map_path=str(tmp_path / "noise.mrc"), sequence_text=">a\nMKVLAAGIVG\n")
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))
    panel.build_button.click()
    wait_for(qapp, lambda: ended, timeout=60)
    text = panel.log_view.toPlainText()
    print(f"\nfailed build, log says: {text.splitlines()[-1]}")
    assert ended == ["failed"] and "failed:" in text and "Traceback" not in text


@needs_weights
def test_headless_command_build_streams_points_and_rounds(fresh_pymol, engine, il2, capsys):
    path, _, _, _, il2_fasta = il2
    fasta = il2_fasta.parent / "with_rna.fasta"  # the RNA record is left out, with a warning
    fasta.write_text(il2_fasta.read_text() + ">rna\nGGCUAGCUAGCUAGGCUAAUCGAUCG\n")
    cmd.load(str(path), "emap")
    cmd.do(f"cryobuild_build emap, {fasta}, name=built, rounds=1")
    out = capsys.readouterr().out
    assert "Cα candidates" in out and "round 1/1" in out and "done:" in out
    assert f"cryobuild: warning: {fasta}: record 'rna' has only A, C, G, T, U and N" in out
    names = cmd.get_names("objects")
    assert "built_ca" in names and ("built" in names or "built_raw" in names)
    with pytest.raises(CmdException, match="would call it 'model_'"):
        command("cryobuild_build", "emap", str(fasta), "model")


# ----------------------------------------------------------------------------- editing


def _known_model(reference):
    """il2 with confidences 0..100 along the chain, so prune thresholds are predictable."""
    confidence = np.linspace(0, 100, reference.num_residues).astype(np.float32)
    return dataclasses.replace(reference, confidence=confidence)


def test_a_chain_covering_part_of_its_sequence_shows_only_its_residues(fresh_pymol, il2):
    """PyMOL's mmCIF reader adds an atom without coordinates for every residue of
    ``_entity_poly_seq`` that has no atoms (pymol-open-source #359); the bridge removes them,
    so the object holds the model's residues, no more."""
    _, _, reference, sequence, _ = il2
    numbers = reference.residue_number
    weak = (numbers >= 35) & (numbers <= 45)
    declared = dataclasses.replace(reference, confidence=np.where(weak, 10.0, 90.0),
                                   entity_sequences={"A": sequence.residues})
    part = declared.select((numbers >= 20) & (numbers <= 60))
    view = fresh_pymol.set_model(part, sequences=[sequence])
    assert cmd.count_atoms("cryobuild_model and not present") == 0
    assert shown_residues("cryobuild_model") == model_residues(part)  # 41, not the whole sequence
    assert fresh_pymol.prune(50) == weak.sum()  # a hole in the middle of the chain
    assert shown_residues("cryobuild_model") == model_residues(view.session.model)


def test_a_saved_model_opens_again_to_go_on_with(fresh_pymol, il2, qapp, tmp_path):
    """Save model…, then open it again (as after a restart of PyMOL) through the command and
    the panel: the residues and their confidences come back, with the map for rebuilds, and
    can be accepted and removed; a model object with accepted residues is not replaced."""
    path, _, reference, sequence, fasta = il2
    cmd.load(str(path), "emap")
    model = _known_model(reference)
    fresh_pymol.set_model(model, sequences=[sequence], map_name="emap")
    fresh_pymol.accept("cryobuild_model and resi 3-4+8")
    saved = tmp_path / "saved.cif"
    assert command("cryobuild_save", str(saved)) == str(saved)

    assert command("cryobuild_open", str(saved), "emap", str(fasta), "reopened") == model.num_residues
    view = fresh_pymol.views["reopened"]
    assert view.map_name == "emap" and view.density is not None
    assert view.session.accepted_keys() == [("A", 3), ("A", 4), ("A", 8)]  # kept by the mmCIF
    assert shown_residues("reopened") == model_residues(model)
    np.testing.assert_allclose(sorted(ca_b_factors("reopened").values()), sorted(model.confidence), atol=0.01)
    assert command("cryobuild_accept", "reopened and resi 1-5", "reopened") == 3
    assert command("cryobuild_remove", "reopened and resi 50-59", "reopened") == 10
    with pytest.raises(CmdException, match="accepted residues"):
        command("cryobuild_open", str(saved), "emap", "", "reopened")
    with pytest.raises(CmdException, match="no such model file"):
        command("cryobuild_open", str(tmp_path / "missing.cif"))
    with pytest.raises(CmdException, match="not a map object"):  # and nothing opened
        command("cryobuild_open", str(saved), "nosuchmap", "", "elsewhere")
    assert "elsewhere" not in fresh_pymol.views
    command("cryobuild_open", str(saved), "", "", "mapless")  # fine to look at, not to rebuild
    with pytest.raises(CmdException, match="has no map in this PyMOL session.*cryobuild_open FILE, MAP"):
        command("cryobuild_rebuild", "mapless and resi 10-20", "mapless")

    panel = open_panel(fresh_pymol)
    panel.name_edit.setText("from_panel")
    panel.map_combo.refresh(select="emap")
    panel.open_model(str(saved))
    assert shown_residues("from_panel") == model_residues(model)
    assert fresh_pymol.views["from_panel"].map_name == "emap"
    assert "opened" in panel.log_view.toPlainText().splitlines()[-1]
    # a PDB file keeps no accepted flags, and the log says so
    panel.save_model(str(tmp_path / "saved.pdb"))
    assert "keeps no accepted flags" in panel.log_view.toPlainText().splitlines()[-1]


@needs_weights
def test_accept_prune_undo_rebuild_through_panel_and_commands(fresh_pymol, engine, il2, qapp):
    path, _, reference, sequence, _ = il2
    cmd.load(str(path), "emap")
    model = _known_model(reference)
    view = fresh_pymol.set_model(model, sequences=[sequence], map_name="emap")
    session = view.session
    assert cmd.count_atoms("cryobuild_model and name CA") == model.num_residues
    panel = open_panel(fresh_pymol)

    # Accept through the panel: sticks, green carbons, flags in the session.
    panel.selection_edit.setText("cryobuild_model and resi 1-10")
    panel.accept_button.click()
    assert session.accepted_keys() == [("A", n) for n in range(1, 11)]
    sticks = set()
    cmd.iterate("cryobuild_model and rep sticks", "sticks.add(int(resv))", space={"sticks": sticks, "int": int})
    assert sticks == set(range(1, 11))

    # Prune preview (colour only), then prune through the panel, undo.
    panel.prune_slider.setValue(50)
    grey, expected = set(), {int(n) for n, c in zip(model.residue_number, model.confidence) if c < 50 and n > 10}
    cmd.iterate(f"cryobuild_model and color {bridge_module.PREVIEW_COLOUR}", "grey.add(int(resv))",
                space={"grey": grey, "int": int})
    assert grey == expected and session.model.num_residues == model.num_residues
    panel.prune_button.click()
    assert session.model.num_residues == model.num_residues - len(expected)
    assert cmd.count_atoms("cryobuild_model and name CA") == session.model.num_residues
    panel.undo_button.click()
    assert cmd.count_atoms("cryobuild_model and name CA") == model.num_residues
    # Unaccept through the panel, and accept again.
    panel.selection_edit.setText("cryobuild_model and resi 9-12")
    panel.unaccept_button.click()
    assert session.accepted_keys() == [("A", n) for n in range(1, 9)]
    panel.accept_button.click()
    assert session.accepted_keys() == [("A", n) for n in range(1, 13)]
    panel.selection_edit.setText("cryobuild_model and resi 11-12")
    panel.unaccept_button.click()
    assert session.accepted_keys() == [("A", n) for n in range(1, 11)]
    # Remove a selection through the panel (an accepted residue in it refuses), undo.
    panel.selection_edit.setText("cryobuild_model and resi 10-14")
    panel.remove_button.click()
    assert session.model.num_residues == model.num_residues and "unaccept them first" in panel.log_view.toPlainText()
    panel.selection_edit.setText("cryobuild_model and resi 11-14")
    panel.remove_button.click()
    assert session.model.num_residues == model.num_residues - 4
    assert cmd.count_atoms("cryobuild_model and name CA and resi 11-14") == 0
    panel.undo_button.click()
    assert cmd.count_atoms("cryobuild_model and name CA") == model.num_residues

    # The same through the commands (no panel open: they run in the foreground).
    panel_module.close_panel()
    assert command("cryobuild_prune", "cryobuild_model", "30") == len(
        [c for n, c in zip(model.residue_number, model.confidence) if c < 30 and n > 10])
    assert cmd.count_atoms("cryobuild_model and name CA") == session.model.num_residues
    assert command("cryobuild_accept", "cryobuild_model and resi 100-105") == 6
    assert ("A", 103) in session.accepted_keys()
    with pytest.raises(CmdException, match="holds no residue"):
        command("cryobuild_accept", "resi 9999")
    # Unaccept: the flag goes, the sticks with it, and the residues can be pruned again.
    assert command("cryobuild_unaccept", "cryobuild_model and resi 104-110") == 2
    assert ("A", 103) in session.accepted_keys() and ("A", 104) not in session.accepted_keys()
    sticks = set()
    cmd.iterate("cryobuild_model and rep sticks and resi 100-110", "sticks.add(int(resv))",
                space={"sticks": sticks, "int": int})
    assert sticks == {100, 101, 102, 103}
    assert command("cryobuild_accept", "cryobuild_model and resi 104-105") == 2
    shown = session.model.num_residues
    assert command("cryobuild_remove", "cryobuild_model and resi 120-122") == 3
    assert session.model.num_residues == shown - 3 == cmd.count_atoms("cryobuild_model and name CA")
    with pytest.raises(CmdException, match="unaccept them first"):
        command("cryobuild_remove", "cryobuild_model and resi 105")
    command("cryobuild_undo")
    assert session.model.num_residues == shown

    # Rebuild a region through the command (headless: returns when done) ...
    before = {k: v for k, v in zip(session.keys(), session.model.ca)}
    try:  # with the weights still training, a region's density may not give enough Cα
        command("cryobuild_rebuild", "cryobuild_model and resi 50-80", "cryobuild_model", "1")
        print("\ncommand rebuild: done")
    except CmdException as err:
        assert "rebuild failed" in str(err)
        print(f"\ncommand rebuild failed cleanly: {err}")
    after = dict(zip(session.keys(), session.model.ca))
    for key in [("A", n) for n in list(range(1, 11)) + list(range(100, 106))]:
        np.testing.assert_allclose(after[key], before[key], atol=1e-3)  # accepted: unmoved
    assert shown_residues("cryobuild_model") == model_residues(session.model)
    np.testing.assert_allclose(sorted(ca_b_factors("cryobuild_model").values()),
                               sorted(session.model.confidence), atol=0.01)

    # ... and through the panel (in the background).
    panel = open_panel(fresh_pymol)
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))
    cmd.select("sele", "cryobuild_model and resi 20-45")
    region = set(residue_keys("sele", "cryobuild_model"))
    panel.selection_edit.setText("sele")
    panel.rebuild_button.click()
    assert panel.build_button.text() == "Stop"
    wait_for(qapp, lambda: ended)
    assert ended in (["final"], ["failed"]), panel.log_view.toPlainText()
    print(f"panel rebuild: {ended[0]}: {panel.log_view.toPlainText().splitlines()[-1]}")
    assert shown_residues("cryobuild_model") == model_residues(session.model)
    # "sele" lost its atoms with the redraw: it holds the region again, as the new residues
    # if they went in
    if ended == ["final"] and panel.job.verdict.kept == "new":
        new = panel.job.result().final
        region = set(zip(new.chain_id.tolist(), new.residue_number.tolist()))
    assert set(residue_keys("sele", "cryobuild_model")) == region
    assert set(session.accepted_keys()) >= {("A", 1), ("A", 105)}


@needs_weights
def test_an_unassigned_chain_is_assigned_through_the_panel_and_its_label_goes(fresh_pymol, engine, il2, qapp):
    from cryobuild.residues import ONE_TO_THREE
    from cryobuild.thread.hints import unassigned_placements

    from gnn_synth import noisy_probs, with_unassigned_stretch

    path, _, reference, sequence, _ = il2
    cmd.load(str(path), "emap")
    rows = np.arange(reference.num_residues)
    model = with_unassigned_stretch(reference, (rows >= 30) & (rows < 55), sequence.residues)
    view = fresh_pymol.set_model(model, sequences=[sequence], map_name="emap")
    probs = noisy_probs(reference.aatype, 0.6, np.random.default_rng(3)).astype(np.float32)
    placements = unassigned_placements(model, probs, [sequence])  # as a build offers them
    fresh_pymol._offer(view, placements, model)
    fresh_pymol.show_places(view)
    assert cmd.count_atoms(view.places_name) == 1
    # a chain changed since its placements were offered (here pruned) is not assigned
    view.session.prune([("B", 25)])
    with pytest.raises(CmdException, match="has changed since its build offered"):
        command("cryobuild_assign", "B")
    fresh_pymol.show_places(view)
    assert view.places_name not in cmd.get_names("objects")
    view.session.undo()
    fresh_pymol.show_places(view)
    with pytest.raises(CmdException, match="offered no placement for chain 'A'"):
        command("cryobuild_assign", "A")
    with pytest.raises(CmdException, match="rank 1-"):
        command("cryobuild_assign", "B", "9")

    panel = open_panel(fresh_pymol)
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))
    panel.selection_edit.setText("cryobuild_model and resi 20-40")  # A 20-30, 40 and B 20-25
    panel.assign_button.click()
    assert "select residues of one chain" in panel.log_view.toPlainText()
    panel.selection_edit.setText("cryobuild_model and chain B and resi 5")
    panel.assign_button.click()
    wait_for(qapp, lambda: ended)
    log = panel.log_view.toPlainText()
    assert ended == ["final"], log
    assert "chain B assigned" in log and "cryobuild_undo" in log
    assert view.session.model.chains() == ("A",)
    assert view.placements == () and view.places_name not in cmd.get_names("objects")
    assert shown_residues("cryobuild_model") == model_residues(view.session.model)
    names = {}
    cmd.iterate("cryobuild_model and resi 40 and name CA", "names['resn'] = resn", space={"names": names})
    assert names["resn"] == ONE_TO_THREE[sequence.residues[39]]  # was UNK


# ----------------------------------------------------------------------------- set-up verbs


def test_install_plugin_is_idempotent_and_pymol_finds_it(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), QT_QPA_PLATFORM="offscreen")
    cli = [sys.executable, "-m", "cryobuild"]
    for _ in range(2):
        done = subprocess.run(cli + ["install-plugin"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    rc = (tmp_path / ".pymolpluginsrc.py").read_text()
    folder = str(tmp_path / ".cryobuild" / "pymol_startup")
    assert rc.count(folder) == 1 and (tmp_path / ".cryobuild" / "pymol_startup" / "cryobuild.py").is_file()
    probe = ("import pymol.plugins as p; p.initialize(-1); info = p.plugins['cryobuild']; "
             "info.module.__init_plugin__(None); from pymol import cmd; "
             "print(info.loaded, 'cryobuild_build' in cmd.keyword)")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["True", "True"], done.stderr
    done = subprocess.run(cli + ["install-plugin", "--uninstall"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # its files and folders are gone (issue 18), and PyMOL's settings file, which the install
    # made and which holds nothing else now
    assert not (tmp_path / ".cryobuild").exists() and not (tmp_path / ".pymolpluginsrc.py").exists()

    # a settings file that was there before stays, without the plugin's folder
    rc = tmp_path / ".pymolpluginsrc.py"
    rc.write_text("# the user's\n")
    for verb in (["install-plugin"], ["install-plugin", "--uninstall"]):
        assert subprocess.run(cli + verb, env=env, capture_output=True, text=True).returncode == 0
    assert rc.exists() and folder not in rc.read_text() and not (tmp_path / ".cryobuild").exists()


def test_temporary_folders_go_when_pymol_quits(tmp_path):
    """Issue 18, item 8: ``cryobuild-pymol-*`` and ``cryobuild-sessions-*`` stayed behind."""
    script = tmp_path / "session.py"
    script.write_text("from cryobuild_pymol.bridge import get_bridge\n"
                      "view = get_bridge().view('m', create=True)\n"
                      "print('SESSION', view.session.path)\n")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch), QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-m", "pymol", "-cq", str(script)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert "SESSION " + str(scratch) in done.stdout, done.stdout + done.stderr
    assert not list(scratch.glob("cryobuild-*"))


def test_gui_verb_names_missing_system_libraries_and_the_line_that_adds_them(il2, monkeypatch, capsys, tmp_path):
    """Issue 18, item 1: on a fresh machine PyMOL's window fails ("Could not load the Qt
    platform plugin "xcb"") until the X/Qt libraries are installed."""
    from cryobuild import cli
    from cryobuild.cli import gui

    path, _, _, _, fasta = il2
    monkeypatch.setattr(gui, "missing_libraries", lambda: ["libxcb-icccm.so.4", "libxkbcommon-x11.so.0"])
    assert cli.main(["gui", str(path), str(fasta)]) == 2
    err = capsys.readouterr().err
    assert "lacks libxcb-icccm.so.4, libxkbcommon-x11.so.0" in err
    assert "apt-get install -y libxcb-icccm4 libxkbcommon-x11-0" in err and len(err.splitlines()) == 1
    monkeypatch.undo()

    # what ldd reports missing, for Qt's X11 plugin and PyMOL's extension
    fake = tmp_path / "ldd"
    fake.write_text("#!/bin/sh\necho '\tlibxcb-keysyms.so.1 => not found'\necho '\tlibc.so.6 => /lib/libc.so.6'\n")
    fake.chmod(0o755)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert gui.missing_libraries(ldd=str(fake)) == ["libxcb-keysyms.so.1"]
    assert gui.package_for("libdbus-1.so.3") == "libdbus-1-3" and gui.package_for("libfoo-bar.so.2") == "libfoo-bar2"

    # the README's set-up gives the same packages
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"apt-get install -y {' '.join(gui.GUI_PACKAGES)}" in readme


@needs_weights
def test_a_build_folder_opens_with_its_places_and_a_chain_is_assigned(fresh_pymol, engine,
                                                                      folder_with_an_unassigned_chain, qapp):
    """``cryobuild gui MAP FASTA --model OUT/model.cif``: the model of a command-line build
    opens with the places its build offered for the unassigned chains, and Assign
    gives chain B its place with the build's sequence; an edited model.cif brings no places."""
    out, model, sequence = folder_with_an_unassigned_chain
    folder = out.parent
    panel = panel_module.show_panel(folder / "il2.mrc", folder / "il2.fasta", out / "model.cif",
                                    bridge=fresh_pymol)
    view = fresh_pymol.views[DEFAULT_MODEL]
    assert [p.chain_id for p in view.placements][:1] == ["B"] and view.map_name == "il2"
    # the build's, from its build.log, recorded in the session: assign reads the map so
    assert view.session.map_info["resolution"] == 3.0
    ended = []
    panel.jobEnded.connect(lambda job_id, outcome: ended.append(outcome))
    panel.selection_edit.setText(f"{DEFAULT_MODEL} and chain B")
    panel.assign_button.click()
    wait_for(qapp, lambda: ended)
    assert ended == ["final"], panel.log_view.toPlainText()
    assert "B" in view.session.state.chain_sequences and not view.placements

    panel_module.close_panel()
    with open(out / "model.cif", "a") as edited:  # a user's edit in place: its places may not fit
        edited.write("# refined\n")
    command("cryobuild_open", str(out / "model.cif"), "il2", str(folder / "il2.fasta"), "edited")
    edited = fresh_pymol.views["edited"]
    assert edited.placements == () and "resolution" not in edited.session.map_info


def test_gui_verb_without_a_screen_says_so(il2, monkeypatch, capsys):
    """No DISPLAY (a shell on a remote machine): one line naming the ways to a screen, instead
    of Qt's message about its "xcb" plugin."""
    from cryobuild import cli
    from cryobuild.cli import gui

    path, _, _, _, fasta = il2
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["gui", str(path), str(fasta)]) == 2
    err = capsys.readouterr().err
    assert "no screen to open on (DISPLAY is not set)" in err and "xvfb-run" in err, err
    monkeypatch.setenv("DISPLAY", ":99")
    assert gui.check_display() is None
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # as the tests' PyMOL: no screen needed
    assert gui.check_display() is None


def test_gui_verb_starts_pymol_with_the_panel_and_files(il2):
    path, _, _, _, fasta = il2
    done = subprocess.run([sys.executable, "-m", "cryobuild", "gui", str(path), str(fasta), "--dry-run",
                           "--resolution", "3.4"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "-m pymol" in done.stdout and "open_panel(" in done.stdout and str(fasta) in done.stdout
    assert "model_path=None" in done.stdout and "resolution=3.4" in done.stdout
    done = subprocess.run([sys.executable, "-m", "cryobuild", "gui", str(path), str(fasta), "--model",
                           str(path.parent / "none.cif")], capture_output=True, text=True)
    assert done.returncode == 2 and "no such model file" in done.stderr
    done = subprocess.run([sys.executable, "-m", "cryobuild", "gui", "/no/such.mrc"], capture_output=True, text=True)
    assert done.returncode == 2 and "no such map file" in done.stderr


def test_the_last_log_line_names_the_unassigned_chains_likeliest_places():
    from types import SimpleNamespace

    from cryobuild.thread.hints import Placement

    def place(chain, rank, evalue):
        return Placement(chain, rank, "il2", 10, 20, 1, 11, 5.0, evalue, evalue * 5, 0)

    placements = (place("C", 1, 0.2), place("C", 2, 0.25), place("B", 1, 0.01), place("D", 1, 0.3),
                  place("E", 1, 0.05), place("F", 1, 0.9))  # F's is too weak to name
    model = SimpleNamespace(num_residues=50)
    result = SimpleNamespace(final=model, raw=model, final_chains=(1, 2, 3, 4, 5),
                             placements=placements, fit=None)
    view = SimpleNamespace(job=SimpleNamespace(), name="m", profiles=None)
    line = bridge_module.finish_line(view, SimpleNamespace(kind="final", payload=result, job_id="job-1"))
    assert line.endswith("unassigned chains might be chain B: il2 10-20 (E = 0.01), chain E: il2 "
                         "10-20 (E = 0.05), chain C: il2 10-20 (E = 0.2) and 1 more")
    assert bridge_module.PLACES_SHOWN == 3


def test_the_view_labels_the_unassigned_chains_likeliest_places(fresh_pymol, il2):
    from types import SimpleNamespace

    from cryobuild.thread.hints import Placement
    from cryobuild_pymol.bridge import DEFAULT_MODEL, ModelView

    _, _, reference, _, _ = il2
    final = dataclasses.replace(reference, chain_id=np.where(np.arange(reference.num_residues) < 60,
                                                             "A", "B"))
    first_of_b = int(final.residue_number[60])
    placements = (Placement("B", 1, "il2", 61, 70, first_of_b, first_of_b + 9, 9.0, 0.02, 0.04, 0),
                  Placement("A", 1, "il2", 5, 9, 1, 5, 1.0, 0.8, 1.6, 0))  # too weak to name
    view = ModelView(DEFAULT_MODEL, session=SimpleNamespace(model=final))
    fresh_pymol._offer(view, placements, final)
    fresh_pymol.show_places(view)
    assert cmd.count_atoms(view.places_name) == 1
    labels = []
    cmd.iterate(view.places_name, "labels.append(label)", space={"labels": labels})
    assert labels == ["B: il2 61-70? (E 0.02)"]
    np.testing.assert_allclose(cmd.get_coords(view.places_name)[0], final.ca[60], atol=1e-3)
    # drawn in front of the residue, where the map's mesh does not hide it, joined to it
    lift = cmd.get("label_placement_offset", view.places_name).strip("[] ").split(",")
    assert [float(v) for v in lift] == [0.0, 0.0, PLACES_LIFT]
    assert cmd.get("label_connector", view.places_name) == "on"
    view.placements = ()
    fresh_pymol.show_places(view)
    assert view.places_name not in cmd.get_names("objects")
