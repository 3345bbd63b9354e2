"""The cryobuild panel: a Qt view over the shared `Bridge` (Qt through ``pymol.Qt``).

Threading (STYLE 2.11 and 3.8): the engine computes in its worker threads; an `EventPump`
(a QTimer living on the GUI thread) drains the jobs' events with `Bridge.pump`, applies them to
PyMOL objects, prints a line on PyMOL's console when a job ends, and hands the events to the
panel, which updates its widgets. Workers never touch a widget. The form is read once, on the
GUI thread, when a job starts. The panel shows every job, however started: one started by a
command (``cryobuild_build``) is taken on as if its Auto-build had been clicked.

Errors the user can fix (`CryobuildError`, a bad selection) and failed jobs go to the panel's
log in red; unexpected errors are logged there too (with the traceback on the console log),
never in a dialog.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from pymol.Qt import QtCore, QtGui, QtWidgets

from .bridge import (
    CONFIDENCE_RANGE, DEFAULT_MODEL, QUIT_TIMEOUT, finish_line, get_bridge, input_warnings, map_names,
    show_map,
)

__all__ = ["CryobuildPanel", "EventPump", "ensure_pump", "pump_running", "show_panel"]

log = logging.getLogger("cryobuild.pymol")

#: Milliseconds between two drains of the jobs' event queues.
PUMP_INTERVAL_MS = 50
#: Slider steps per confidence unit (the slider is an integer widget).
SLIDER_STEPS = 1
#: Progress bar resolution.
PROGRESS_STEPS = 1000
#: Widest the panel's dock starts (px), and the share of PyMOL's window it may take at most:
#: the 3D view keeps the rest (with PyMOL's object list beside it).
DOCK_WIDTH = 400
DOCK_SHARE = 0.3
#: Share of the screen PyMOL's window is given when the panel opens in a smaller one.
WINDOW_SHARE = 0.9
#: The panel's sequence box, in text lines.
SEQUENCE_LINES = 4
#: Lines of the log that stay in view however short the dock: the controls above it scroll
#: instead (at 1400x900 the whole panel scrolled, and hid the log's newest lines below the fold).
LOG_MIN_LINES = 6
#: The device choices: label and `Bridge.engine`'s device; "remote" takes its value from the
#: address field (a Dask scheduler: inference runs on its workers, the session stays here).
DEVICES = (("auto", "auto"), ("CPU", "cpu"), ("GPU", "cuda"), ("remote: tcp://…", "remote"))
#: Schemes of a Dask scheduler's address.
SCHEDULER_SCHEMES = ("tcp://", "tls://")
ERROR_COLOUR = "#c0392b"
WARNING_COLOUR = "#b9770e"
#: Record name given to a sequence typed without a FASTA header.
BARE_RECORD = "sequence"


# ----------------------------------------------------------------------------- the pump


class EventPump(QtCore.QObject):
    """Drains the bridge's jobs on a GUI-thread timer; `tick` carries ``[(view, event), ...]``."""

    tick = QtCore.Signal(list)

    def __init__(self):
        super().__init__()
        self._timer = None

    @QtCore.Slot()
    def start(self) -> None:
        if self._timer is None:
            self._timer = QtCore.QTimer(self)
            self._timer.setInterval(PUMP_INTERVAL_MS)
            self._timer.timeout.connect(self._drain)
        self._timer.start()

    @QtCore.Slot()
    def stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    @property
    def active(self) -> bool:
        return self._timer is not None and self._timer.isActive()

    def _drain(self) -> None:
        try:
            applied = get_bridge().pump()
        except Exception:  # drawing failed: say so, keep the timer alive
            log.exception("cryobuild: applying job events to PyMOL failed")
            applied = []
        for view, event in applied:  # PyMOL's console: one line when a job ends
            line = finish_line(view, event)
            if line is not None:
                print(f" cryobuild: {line}")
        self.tick.emit(applied)


_pump: EventPump | None = None


def ensure_pump() -> EventPump | None:
    """The running pump (started on the GUI thread); None without a QApplication."""
    global _pump
    app = QtWidgets.QApplication.instance()
    if app is None:
        return None
    if _pump is None:
        _pump = EventPump()
        _pump.moveToThread(app.thread())
        app.aboutToQuit.connect(_on_quit)
    if QtCore.QThread.currentThread() is app.thread():
        _pump.start()
    else:  # a command run from another thread: start the timer where it lives
        QtCore.QMetaObject.invokeMethod(_pump, "start", QtCore.Qt.QueuedConnection)
    return _pump


def pump_running() -> bool:
    """True when job events are shown by a Qt timer: an open panel, or PyMOL's Qt window."""
    if _pump is not None and _pump.active:
        return True
    try:
        from pymol import gui
        window = gui.get_qtwindow()
    except ImportError:
        window = None
    return window is not None and ensure_pump() is not None


def _on_quit() -> None:
    """PyMOL is closing: stop the jobs and remove the temporary folders."""
    get_bridge().cleanup(timeout=QUIT_TIMEOUT)


def _reported(method):
    """Run a slot; show errors in the panel's log instead of a traceback dialog."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        from pymol import CmdException

        from cryobuild.errors import CryobuildError

        try:
            return method(self, *args, **kwargs)
        except (CryobuildError, CmdException) as err:
            self.log(str(err).removeprefix("cryobuild: "), ERROR_COLOUR)
        except Exception as err:
            log.exception("cryobuild panel: %s failed", method.__name__)
            self.log(f"internal error: {type(err).__name__}: {err}", ERROR_COLOUR)
        return None

    return wrapper


# ----------------------------------------------------------------------------- widgets


class _MapCombo(QtWidgets.QComboBox):
    """Lists PyMOL's map objects: refreshed each time it opens and, by `sync` (on the pump's
    ticks), whenever PyMOL's maps change."""

    def __init__(self, cmd):
        super().__init__()
        self._cmd = cmd
        self.refresh()

    def refresh(self, select: str | None = None) -> None:
        current = select or self.currentText()
        names = map_names(self._cmd)
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentIndex(names.index(current))
        self.blockSignals(False)

    def sync(self) -> None:
        """Refresh if PyMOL's maps are not the ones listed (e.g. after ``load``)."""
        if map_names(self._cmd) != [self.itemText(i) for i in range(self.count())]:
            self.refresh()

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()


class _Legend(QtWidgets.QWidget):
    """Confidence colour bar, 0 (red) - 50 (yellow) - 100 (blue), as on the model. (PyMOL's
    own colour bar, a ramp object, spans 90% of the 3D view and prints 0.000 / 100.000.)"""

    def __init__(self):
        super().__init__()
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        bar = QtWidgets.QLabel()
        bar.setFixedHeight(12)
        bar.setToolTip("confidence (B-factor column), 0-100")
        bar.setStyleSheet("background: qlineargradient(x1:0, y1:0, x2:1, y2:0, stop:0 #ff0000, "
                          "stop:0.5 #ffff00, stop:1 #0000ff); border: 1px solid #555;")
        lo, hi = CONFIDENCE_RANGE
        layout.addWidget(QtWidgets.QLabel(f"confidence {lo:.0f}"))
        layout.addWidget(bar, 1)
        layout.addWidget(QtWidgets.QLabel(f"{hi:.0f}"))


class CryobuildPanel(QtWidgets.QWidget):
    """Map, sequence, device and rounds; Auto-build / Stop with progress and a log; then
    accept, prune (with a live preview), rebuild, undo and save."""

    jobStarted = QtCore.Signal(str)
    jobEnded = QtCore.Signal(str, str)  # job id, outcome

    def __init__(self, bridge=None, _self=None, parent=None):
        super().__init__(parent)
        if _self is None:
            from pymol import cmd as _self
        self.cmd = _self
        self.bridge = bridge if bridge is not None else get_bridge()
        self.job = None
        self._checking: set[str] = set()  # devices whose check runs now (`start_preload`)
        self._preload_results: list[tuple] = []  # (device, description, where, error) found
        self._checked = 0  # checks shown
        self._build_form()
        self._set_running(False)
        self._validate_sequence()

    # ------------------------------------------------------------------ layout

    def _build_form(self) -> None:
        """The controls, scrolling when the dock is short, above the log, which keeps
        `LOG_MIN_LINES` in view; a splitter between them lets the user give either more."""
        self.setWindowTitle("cryobuild")
        controls = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(controls)

        inputs = QtWidgets.QGroupBox("Build")
        form = QtWidgets.QFormLayout(inputs)
        self.map_combo = _MapCombo(self.cmd)
        self.open_map_button = QtWidgets.QPushButton("Open…")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.map_combo, 1)
        row.addWidget(self.open_map_button)
        form.addRow("Map", row)

        self.sequence_edit = QtWidgets.QPlainTextEdit()
        self.sequence_edit.setPlaceholderText(">A\nMKVLAAGIVG…\n(paste FASTA or Load…)")
        line_height = self.sequence_edit.fontMetrics().lineSpacing()
        self.sequence_edit.setMaximumHeight(SEQUENCE_LINES * line_height + 12)
        self.fasta_button = QtWidgets.QPushButton("Load FASTA…")
        self.sequence_status = QtWidgets.QLabel()
        self.sequence_status.setWordWrap(True)
        column = QtWidgets.QVBoxLayout()
        column.addWidget(self.sequence_edit)
        line = QtWidgets.QHBoxLayout()
        line.addWidget(self.sequence_status, 1)
        line.addWidget(self.fasta_button)
        column.addLayout(line)
        form.addRow("Sequence", column)

        self.device_combo = QtWidgets.QComboBox()
        for label, value in DEVICES:
            self.device_combo.addItem(label, value)
        self.scheduler_edit = QtWidgets.QLineEdit()
        self.scheduler_edit.setPlaceholderText("tcp://gpu-server:8786")
        self.scheduler_edit.setToolTip("the Dask scheduler whose workers run the networks; the "
                                       "model, accept, prune and rebuild stay in this PyMOL")
        self.scheduler_row = QtWidgets.QWidget()  # shown for "remote" only
        line = QtWidgets.QHBoxLayout(self.scheduler_row)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(QtWidgets.QLabel("Scheduler"))
        line.addWidget(self.scheduler_edit, 1)
        self.scheduler_row.setVisible(False)
        self.device_label = QtWidgets.QLabel("devices: checking…")
        self.device_label.setWordWrap(True)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.device_combo)
        row.addWidget(self.device_label, 1)
        column = QtWidgets.QVBoxLayout()
        column.addLayout(row)
        column.addWidget(self.scheduler_row)
        form.addRow("Device", column)
        self.device_combo.currentIndexChanged.connect(self._device_changed)
        self.scheduler_edit.editingFinished.connect(self._device_changed)

        self.rounds_spin = QtWidgets.QSpinBox()
        self.rounds_spin.setRange(1, 20)
        self.rounds_spin.setValue(3)
        self.name_edit = QtWidgets.QLineEdit(DEFAULT_MODEL)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.rounds_spin)
        row.addWidget(QtWidgets.QLabel("Model"))
        row.addWidget(self.name_edit, 1)
        form.addRow("Rounds", row)

        self.resolution_spin = QtWidgets.QDoubleSpinBox()
        self.resolution_spin.setRange(0.0, 30.0)
        self.resolution_spin.setDecimals(1)
        self.resolution_spin.setSingleStep(0.1)
        self.resolution_spin.setSuffix(" Å")
        self.resolution_spin.setSpecialValueText("auto")  # 0: estimated from the map
        self.resolution_spin.setToolTip(
            "the map's resolution, e.g. from its EMDB entry; auto estimates it from the map's "
            "spectrum (within 15% of the stated one on 17 of 19 real maps). Rebuilds and "
            "assignments in the model read the map at the same resolution.")
        form.addRow("Resolution", self.resolution_spin)
        outer.addWidget(inputs)

        self.build_button = QtWidgets.QPushButton("Auto-build")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, PROGRESS_STEPS)
        self.stage_label = QtWidgets.QLabel("idle")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.build_button)
        row.addWidget(self.progress, 1)
        outer.addLayout(row)
        outer.addWidget(self.stage_label)

        edits = QtWidgets.QGroupBox("Model")
        grid = QtWidgets.QGridLayout(edits)  # two columns of buttons: the dock stays narrow
        self.selection_edit = QtWidgets.QLineEdit("sele")
        self.accept_button = QtWidgets.QPushButton("Accept selection")
        self.unaccept_button = QtWidgets.QPushButton("Unaccept")
        self.unaccept_button.setToolTip("clear the accepted flag of the selection's residues: "
                                        "builds and prunes may change them again")
        self.rebuild_button = QtWidgets.QPushButton("Rebuild selection")
        self.remove_button = QtWidgets.QPushButton("Remove selection")
        self.remove_button.setToolTip("prune the selection's residues (Undo brings them back)")
        grid.addWidget(QtWidgets.QLabel("Selection"), 0, 0)
        grid.addWidget(self.selection_edit, 0, 1, 1, 3)
        grid.addWidget(self.accept_button, 1, 0, 1, 2)
        grid.addWidget(self.unaccept_button, 1, 2, 1, 2)
        self.assign_button = QtWidgets.QPushButton("Assign chain to its place")
        self.assign_button.setToolTip("give the selected unassigned chain the place in the sequence "
                                      "its orange label names (the build's best guess, not sure "
                                      "enough to thread: check it against the density)")
        grid.addWidget(self.rebuild_button, 2, 0, 1, 2)
        grid.addWidget(self.remove_button, 2, 2, 1, 2)
        grid.addWidget(self.assign_button, 3, 0, 1, 4)
        self.prune_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.prune_slider.setRange(int(CONFIDENCE_RANGE[0]), int(CONFIDENCE_RANGE[1]) * SLIDER_STEPS)
        self.prune_slider.setValue(0)
        self.prune_label = QtWidgets.QLabel("below 0")
        self.prune_button = QtWidgets.QPushButton("Prune")
        self.prune_slider.setToolTip("prune the residues below this confidence (they turn light "
                                     "grey while you slide; accepted residues stay)")
        grid.addWidget(self.prune_slider, 4, 0, 1, 2)
        grid.addWidget(self.prune_label, 4, 2)
        self.undo_button = QtWidgets.QPushButton("Undo")
        self.save_button = QtWidgets.QPushButton("Save model…")
        self.open_model_button = QtWidgets.QPushButton("Open model…")
        self.open_model_button.setToolTip("open a model file (e.g. one saved before) into the Model "
                                          "object, with the map and sequence above, to go on with it")
        self.swap_button = QtWidgets.QPushButton("Use new model")
        self.swap_button.setToolTip("put the last job's model (shown as <model>_new) in place of "
                                    "the model it was not better than; Undo swaps back")
        grid.addWidget(self.prune_button, 4, 3)
        grid.addWidget(self.undo_button, 5, 0, 1, 2)
        grid.addWidget(self.swap_button, 5, 2, 1, 2)
        grid.addWidget(_Legend(), 6, 0, 1, 4)
        grid.addWidget(self.open_model_button, 7, 0, 1, 2)
        grid.addWidget(self.save_button, 7, 2, 1, 2)
        outer.addWidget(edits)

        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setMinimumHeight(
            LOG_MIN_LINES * self.log_view.fontMetrics().lineSpacing()
            + 2 * self.log_view.frameWidth() + 8)  # + the document's margins
        self.splitter = _ControlsAndLog(_ControlsArea(controls), self.log_view)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)

        self.open_map_button.clicked.connect(lambda: self.open_map())
        self.fasta_button.clicked.connect(lambda: self.load_fasta())
        self.sequence_edit.textChanged.connect(self._validate_sequence)
        self.build_button.clicked.connect(lambda: self.build_or_stop())
        self.accept_button.clicked.connect(lambda: self.accept_selection())
        self.unaccept_button.clicked.connect(lambda: self.accept_selection(accepted=False))
        self.rebuild_button.clicked.connect(lambda: self.rebuild_selection())
        self.assign_button.clicked.connect(lambda: self.assign_selection())
        self.remove_button.clicked.connect(lambda: self.remove_selection())
        self.prune_slider.valueChanged.connect(lambda value: self.preview_prune())
        self.prune_button.clicked.connect(lambda: self.prune())
        self.undo_button.clicked.connect(lambda: self.undo())
        self.save_button.clicked.connect(lambda: self.save_model())
        self.open_model_button.clicked.connect(lambda: self.open_model())
        self.swap_button.clicked.connect(lambda: self.swap())

    # ------------------------------------------------------------------ helpers

    def log(self, message: str, colour: str | None = None) -> None:
        stamp = time.strftime("%H:%M:%S")
        text = QtGui.QTextDocumentFragment.fromPlainText(f"{stamp}  {message}").toHtml()
        if colour:
            text = f'<span style="color:{colour}">{text}</span>'
        self.log_view.appendHtml(text)
        bar = self.log_view.verticalScrollBar()
        bar.setValue(bar.maximum())  # the newest line in view, wrapped lines and all

    @property
    def model_name(self) -> str:
        return self.name_edit.text().strip() or DEFAULT_MODEL

    @property
    def threshold(self) -> float:
        return self.prune_slider.value() / SLIDER_STEPS

    def _set_running(self, running: bool) -> None:
        self.build_button.setText("Stop" if running else "Auto-build")
        for widget in (self.accept_button, self.unaccept_button, self.rebuild_button, self.remove_button,
                       self.assign_button, self.prune_button, self.open_model_button,
                       self.undo_button,
                       self.prune_slider, self.name_edit, self.map_combo, self.open_map_button):
            widget.setEnabled(not running)
        self._update_swap()

    def _update_swap(self) -> None:
        view = self.bridge.views.get(self.model_name)
        self.swap_button.setEnabled(view is not None and view.swappable)

    @property
    def bare_sequence(self) -> bool:
        """True when the box holds a sequence without a FASTA header line."""
        text = self.sequence_edit.toPlainText()
        return bool(text.strip()) and not text.lstrip().startswith(">")

    def sequence_text(self) -> str:
        """The sequence box as FASTA (a bare sequence gets a header)."""
        text = self.sequence_edit.toPlainText()
        if self.bare_sequence:
            text = f">{BARE_RECORD}\n" + text
        return text

    def _validate_sequence(self) -> list[str]:
        """Check the box; returns its problems (none for an empty box: a build without
        sequence). A bare sequence's problems are given by its own line numbers."""
        import re

        from cryobuild.sequences import validate_sequence_text

        text = self.sequence_text()
        if not text.strip():
            self.sequence_status.setText("none: builds without (as build_no_seq)")
            self.sequence_status.setStyleSheet("")
            return []
        problems = validate_sequence_text(text)
        if self.bare_sequence:  # the header line is ours: count the user's lines
            problems = [re.sub(r"line (\d+)", lambda m: f"line {int(m.group(1)) - 1}",
                               problem.replace(f" (record '{BARE_RECORD}')", ""))
                        for problem in problems]
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            self.sequence_status.setText(shown)
            self.sequence_status.setStyleSheet(f"color: {ERROR_COLOUR}")
        else:
            records = text.count("\n>") + 1
            self.sequence_status.setText(f"{records} sequence(s), OK")
            self.sequence_status.setStyleSheet("color: #1e8449")
        return problems

    # ------------------------------------------------------------------ start-up

    def device(self) -> str:
        """The chosen device: "auto", "cpu", "cuda" or a scheduler's address.

        Raises `InputError` for "remote" without a ``tcp://`` or ``tls://`` address."""
        from cryobuild.errors import InputError

        device = self.device_combo.currentData()
        if device != "remote":
            return device
        address = self.scheduler_edit.text().strip()
        if not address.startswith(SCHEDULER_SCHEMES):
            raise InputError("remote needs the Dask scheduler's address, e.g. "
                             "tcp://gpu-server:8786 (start one with dask-scheduler, and a worker "
                             "on the GPU machine with dask-worker tcp://…)")
        return address

    def _device_changed(self, *_) -> None:
        """Show the address field for "remote", and check the new device in the background."""
        remote = self.device_combo.currentData() == "remote"
        self.scheduler_row.setVisible(remote)
        if remote and not self.scheduler_edit.text().strip():
            self.device_label.setText("enter the scheduler's address")
            self.scheduler_edit.setFocus()
            return
        self.start_preload()

    def start_preload(self) -> None:
        """Check the chosen device in a thread: load the networks (imports would otherwise
        stall the first build's start), or connect to the scheduler of a remote device. What
        it found is shown by `_poll_preload`, in the device label if the choice is still the
        same, and in the log."""
        from cryobuild.errors import InputError

        try:
            device = self.device()
        except InputError as err:
            self.device_label.setText(str(err))
            return
        if device in self._checking:
            return
        self._checking.add(device)
        bridge, results = self.bridge, self._preload_results

        def preload():
            from cryobuild.device import describe_devices

            try:
                networks = bridge.preload(device)
                if networks is None:  # a scheduler: its workers hold the networks
                    found = (bridge.engine(device).describe_cluster(), f"the workers of {device}", "")
                else:
                    found = (describe_devices(), str(networks.device), "")
            except Exception as err:  # shown on the GUI thread by _poll_preload
                found = ("", "", f"{type(err).__name__}: {err}")
            results.append((device, *found))

        threading.Thread(target=preload, name="cryobuild-preload", daemon=True).start()
        self.device_label.setText("devices: checking…")
        self.log(f"connecting to {device}…" if device.startswith(SCHEDULER_SCHEMES)
                 else "loading the networks…")

    @property
    def ready(self) -> bool:
        """True once a device check has ended (networks loaded, or failed to load)."""
        return self._checked > 0 or bool(self._preload_results)

    def _poll_preload(self) -> None:
        while self._preload_results:
            checked, description, device, error = self._preload_results.pop(0)
            self._checking.discard(checked)
            self._checked += 1
            try:
                current = self.device() == checked
            except Exception:  # noqa: BLE001 - "remote" without an address: not this check's
                current = False
            if error:
                if current:
                    self.device_label.setText("devices: unknown")
                self.log(f"could not use {checked}: {error}", ERROR_COLOUR)
            else:
                if current:
                    self.device_label.setText(description)
                self.log(f"networks on {device} ({description})")

    # ------------------------------------------------------------------ actions

    @_reported
    def open_map(self, path: str | None = None) -> str:
        if path is None:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(
                self, "Open map", "", "Maps (*.mrc *.map *.ccp4 *.mrc.gz *.map.gz);;All files (*)")
            if not path:
                return ""
        import os

        name = self.cmd.get_unused_name(os.path.basename(path).split(".")[0] or "map", 0)
        name = self.cmd.get_legal_name(name)
        self.cmd.load(path, name)
        self.map_combo.refresh(select=name)
        mesh = show_map(name, _self=self.cmd)
        self.log(f"loaded map {path} as {name}, shown as the mesh {mesh}")
        return name

    @_reported
    def load_fasta(self, path: str | None = None) -> None:
        from cryobuild.errors import InputError

        if path is None:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(
                self, "Sequence file", "", "FASTA (*.fasta *.fa *.faa *.seq *.txt);;All files (*)")
            if not path:
                return
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as err:
            raise InputError(f"{path}: {err.strerror}") from None
        self.sequence_edit.setPlainText(text)
        self.log(f"sequence from {path}")

    @_reported
    def build_or_stop(self) -> None:
        if self.job is not None and not self.job.done:
            self.stop()
        else:
            self.build()

    def _form_sequences(self) -> list:
        """The Sequence box's sequences (none when it is empty), its warnings logged."""
        from cryobuild.sequences import parse_fasta

        if not self.sequence_text().strip():
            return []
        with input_warnings() as said:
            sequences = parse_fasta(self.sequence_text(), "<panel>")
        for message in said:
            self.log(f"warning: {message}", WARNING_COLOUR)
        return sequences

    def build(self):
        """Read the form once and start a build (errors go to the log)."""
        from cryobuild.errors import InputError

        self.map_combo.refresh()
        map_name = self.map_combo.currentText()
        if not map_name:
            raise InputError("no map: load one (Open…) or choose one in the list")
        problems = self._validate_sequence()
        if problems:
            raise InputError(f"the sequence has problems: {problems[0]}")
        sequences = self._form_sequences()
        requested = self.model_name
        request = dict(rounds=self.rounds_spin.value(), name=requested,
                       device=self.device(), resolution=self.resolution_spin.value() or None)
        job = self.bridge.start_build(map_name, sequences, **request)
        view = self.bridge.view_of(job)
        if view.name != requested:
            self.log(f"{requested} holds a model of map {self.bridge.views[requested].map_name}, and "
                     f"accepted residues belong to their map: building into {view.name}", WARNING_COLOUR)
            self.name_edit.setText(view.name)
        what = f"{len(sequences)} sequence(s)" if sequences else "without sequence (as build_no_seq)"
        apart = (f"; {view.name} stays until a better model is done (rounds shown as {view.new_name})"
                 if job.keeps_model else "")
        where = (f" (inference on the workers of {request['device']})"
                 if request["device"].startswith(SCHEDULER_SCHEMES) else "")
        read_at = (f"at {request['resolution']:g} Å" if request["resolution"]
                   else "at a resolution estimated from the map")
        self._started(job, f"building {what} into {map_name} {read_at}, "
                           f"{request['rounds']} round(s) -> {view.name}{where}{apart}")
        return job

    def _started(self, job, message: str) -> None:
        self.job = job
        self.progress.setValue(0)
        self.stage_label.setText("starting…")
        self._set_running(True)
        self.log(f"{job.id}: {message}")
        ensure_pump()
        self.jobStarted.emit(job.id)

    def adopt_running(self) -> None:
        """Take on a job started elsewhere (a command) when the panel has none running."""
        if self.job is not None and not self.job.done:
            return
        view = next((v for v in self.bridge.views.values() if v.running), None)
        if view is None:
            return
        self.name_edit.setText(view.name)
        self._started(view.job, f"{view.job.kind} of {view.name} started by a command "
                                f"(into {view.map_name or 'its map'})")

    def stop(self) -> None:
        if self.job is not None and not self.job.done:
            self.job.cancel()
            self.build_button.setEnabled(False)
            self.stage_label.setText("stopping…")
            self.log(f"{self.job.id}: stopping…")

    @_reported
    def accept_selection(self, accepted: bool = True) -> int:
        """Accept (or unaccept) the selection's residues; returns how many changed."""
        changed = self.bridge.accept(self.selection_edit.text().strip() or "sele", self.model_name,
                                     accepted=accepted)
        self.log(f"{'accepted' if accepted else 'unaccepted'} {changed} residues of {self.model_name}")
        self._update_swap()
        return changed

    @_reported
    def remove_selection(self) -> int:
        count = self.bridge.remove(self.selection_edit.text().strip() or "sele", self.model_name)
        self.log(f"removed {count} residues of {self.model_name}")
        self._update_swap()
        return count

    @_reported
    def rebuild_selection(self):
        selection = self.selection_edit.text().strip() or "sele"
        rounds = self.rounds_spin.value()
        job = self.bridge.start_rebuild(selection, name=self.model_name, rounds=rounds)
        self._started(job, f"rebuilding {selection} of {self.model_name}, {rounds} round(s)")
        return job

    @_reported
    def assign_selection(self):
        selection = self.selection_edit.text().strip() or "sele"
        chain = self.bridge.chain_of(selection, self.model_name)
        job = self.bridge.start_assign(chain, name=self.model_name)
        self._started(job, f"assigning chain {chain} of {self.model_name}")
        return job

    @_reported
    def preview_prune(self) -> int:
        threshold = self.threshold
        self.prune_label.setText(f"below {threshold:.0f}")
        if self.model_name not in self.bridge.views:
            return 0
        going = self.bridge.preview_prune(threshold, self.model_name)
        self.prune_label.setText(f"below {threshold:.0f}: {going} res.")
        return going

    @_reported
    def prune(self) -> int:
        count = self.bridge.prune(self.threshold, self.model_name)
        self.log(f"pruned {count} residues below {self.threshold:.0f} from {self.model_name}")
        self.prune_label.setText(f"below {self.threshold:.0f}")
        self._update_swap()
        return count

    @_reported
    def undo(self) -> str:
        action = self.bridge.undo(self.model_name)
        self.log(f"undid: {action}")
        self._update_swap()
        return action

    @_reported
    def swap(self) -> str:
        message = self.bridge.swap(self.model_name)
        self.log(message)
        self._update_swap()
        return message

    @_reported
    def open_model(self, path: str | None = None):
        """Open a model file into the Model object (`Bridge.open_model`), with the chosen map
        (for rebuilds) and the sequences of the Sequence box (none: the model's own)."""
        if path is None:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(
                self, "Open model", "", "Models (*.cif *.mmcif *.pdb *.ent *.cif.gz *.pdb.gz);;All files (*)")
            if not path:
                return None
        self.map_combo.refresh()
        view = self.bridge.open_model(path, name=self.model_name, sequences=self._form_sequences() or None,
                                      map_name=self.map_combo.currentText(),
                                      resolution=self.resolution_spin.value() or None)
        self.log(f"opened {path} as {view.name}: {view.session.model.num_residues} residues"
                 + (f", rebuilt in {view.map_name}" if view.map_name else ", no map for rebuilds"))
        self._update_swap()
        return view

    @_reported
    def save_model(self, path: str | None = None):
        if path is None:
            path, _ = QtWidgets.QFileDialog.getSaveFileName(
                self, "Save model", f"{self.model_name}.cif", "mmCIF (*.cif);;PDB (*.pdb)")
            if not path:
                return None
        from cryobuild.models import model_format

        written = self.bridge.save(path, self.model_name)
        accepted = self.bridge.view(self.model_name).session.accepted_keys()
        self.log(f"saved {self.model_name} to {written}"
                 + (" (a PDB file keeps no accepted flags: save as mmCIF to keep them)"
                    if accepted and model_format(written) == "pdb" else ""))
        return written

    # ------------------------------------------------------------------ events

    def on_tick(self, applied: list) -> None:
        """Show the events the pump has just applied to PyMOL (GUI thread)."""
        self._poll_preload()
        self.map_combo.sync()
        for view, event in applied:
            if event.kind == "started":
                self.adopt_running()
            if self.job is None or event.job_id != self.job.id:
                line = finish_line(view, event)
                if line is not None:
                    self.log(line)
                continue
            self._show_event(view, event)

    @_reported
    def _show_event(self, view, event) -> None:
        kind = event.kind
        self.progress.setValue(int(round(event.fraction * PROGRESS_STEPS)))
        if kind == "stage":
            self.stage_label.setText(f"{event.stage}: {event.message}" if event.message else event.stage)
        elif kind in ("points", "round"):
            self.stage_label.setText(event.message)
            self.log(f"{event.job_id}: {event.message}")
        elif kind == "warning":
            self.log(f"{event.job_id}: {event.message}", WARNING_COLOUR)
        elif kind == "final":
            result = event.payload
            verdict = getattr(self.job, "verdict", None)
            if verdict is None or verdict.kept == "new":  # "old": its warning said so already
                self.log(finish_line(view, event))
            elif verdict.candidate is not None:
                self.log(f"the new model is shown as {view.new_name}: 'Use new model' puts it in",
                         WARNING_COLOUR)
            if not self.job.keeps_model and result.final.num_residues == 0 and view.last_round is not None:
                self.log(f"the last round's model is shown as {view.raw_name}", WARNING_COLOUR)
        elif kind == "failed":
            self.log(f"{event.job_id} failed: {event.message}", ERROR_COLOUR)
        elif kind == "cancelled":
            self.log(finish_line(view, event))
        elif kind == "finished":
            outcome = self.job.outcome or ""
            self.stage_label.setText({"final": "done", "cancelled": "stopped", "failed": "failed"}
                                     .get(outcome, outcome))
            if outcome != "final":
                self.progress.setValue(0)
            self._set_running(False)
            self.build_button.setEnabled(True)
            self.jobEnded.emit(event.job_id, outcome)

    def shutdown(self) -> None:
        """The panel is closing: stop every running job at once (each keeps what the Stop
        button keeps)."""
        asked = self.bridge.cancel()
        if asked:
            log.info("cryobuild: panel closed, %d job(s) cancelled", asked)


class _ControlsAndLog(QtWidgets.QSplitter):
    """The controls above the log. Each resize gives the controls their whole height where
    there is room for it beside the log's minimum, and the log the rest (a splitter alone keeps
    its old shares, so a dock made taller would still scroll its controls), until the user
    drags the handle: then the user's split stays."""

    def __init__(self, controls, log_view):
        super().__init__(QtCore.Qt.Vertical)
        self.addWidget(controls)
        self.addWidget(log_view)
        self.setChildrenCollapsible(False)
        self.split_by_user = False
        self.splitterMoved.connect(lambda *_: setattr(self, "split_by_user", True))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self.split_by_user:
            return
        total = sum(self.sizes())
        controls = min(self.widget(0).needed_height(), total - self.widget(1).minimumHeight())
        self.setSizes([max(controls, 0), total - max(controls, 0)])


class _ControlsArea(QtWidgets.QScrollArea):
    """The panel's controls, scrolled when the dock is shorter than they are. Its size hint is
    the controls' whole height (a plain scroll area asks for at most 24 lines), so the splitter
    gives them all they need first and the log the rest."""

    def __init__(self, controls):
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QtWidgets.QFrame.NoFrame)
        self.setWidget(controls)

    def needed_height(self) -> int:
        """px the controls take at this width without scrolling (wrapped labels included)."""
        controls = self.widget()
        if controls.hasHeightForWidth():
            return max(controls.heightForWidth(self.width()), controls.minimumSizeHint().height())
        return controls.sizeHint().height()

    def sizeHint(self):
        hint = self.widget().sizeHint()
        return QtCore.QSize(hint.width() + self.verticalScrollBar().sizeHint().width(), hint.height())


class _PanelDock(QtWidgets.QDockWidget):
    def __init__(self, panel, parent=None):
        super().__init__("cryobuild", parent)
        self.panel = panel
        self.setObjectName("cryobuild_dock")
        self.setWidget(panel)

    def closeEvent(self, event):
        self.panel.shutdown()
        super().closeEvent(event)


class _PanelDialog(QtWidgets.QDialog):
    def __init__(self, panel, parent=None):
        super().__init__(parent)
        self.panel = panel
        self.setWindowTitle("cryobuild")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(panel)
        self.resize(460, 720)

    def closeEvent(self, event):
        self.panel.shutdown()
        super().closeEvent(event)

    def reject(self):  # Escape
        self.panel.shutdown()
        super().reject()


_container = None


def fit_window(window, dock) -> None:
    """Size PyMOL's window and the panel's dock so the 3D view keeps most of the screen: a
    window smaller than `WINDOW_SHARE` of the screen grows to it, and the dock takes at most
    `DOCK_SHARE` of the window's width (`DOCK_WIDTH` at most)."""
    screen = window.screen() if hasattr(window, "screen") else None
    screen = screen or QtWidgets.QApplication.primaryScreen()
    if screen is not None:
        available = screen.availableGeometry()
        width = max(window.width(), int(available.width() * WINDOW_SHARE))
        height = max(window.height(), int(available.height() * WINDOW_SHARE))
        if (width, height) != (window.width(), window.height()):
            window.resize(min(width, available.width()), min(height, available.height()))
    width = min(DOCK_WIDTH, int(window.width() * DOCK_SHARE))
    window.resizeDocks([dock], [width], QtCore.Qt.Horizontal)


def show_panel(map_path=None, fasta_path=None, model_path=None, *, resolution=None, bridge=None,
               _self=None):
    """Open the panel (a dock in PyMOL's window, else a dialog) or raise it, with the map,
    FASTA and model files given loaded (the model last, as *Open model…* does) and the map's
    ``resolution`` (Å) set; returns it."""
    global _container
    from pymol import gui

    from . import commands

    if _self is None:
        from pymol import cmd as _self
    commands.register(_self)  # also sets mesh_use_shader 0
    if _container is None:
        panel = CryobuildPanel(bridge, _self)
        window = gui.get_qtwindow()
        if window is not None:
            _container = _PanelDock(panel, window)
            # the dock takes the window's right edge from top to bottom
            window.setCorner(QtCore.Qt.TopRightCorner, QtCore.Qt.RightDockWidgetArea)
            window.setCorner(QtCore.Qt.BottomRightCorner, QtCore.Qt.RightDockWidgetArea)
            window.addDockWidget(QtCore.Qt.RightDockWidgetArea, _container)
            fit_window(window, _container)
        else:
            _container = _PanelDialog(panel)
        pump = ensure_pump()
        pump.tick.connect(panel.on_tick)
        panel.start_preload()
        panel.adopt_running()
    panel = _container.panel
    _container.show()
    _container.raise_()
    if map_path:
        panel.open_map(str(map_path))
    if fasta_path:
        panel.load_fasta(str(fasta_path))
    if resolution:
        panel.resolution_spin.setValue(float(resolution))
    if model_path:
        panel.open_model(str(model_path))
    return panel


def close_panel() -> None:
    """Close and forget the panel (its job is cancelled)."""
    global _container
    if _container is None:
        return
    container, _container = _container, None
    container.panel.shutdown()
    if _pump is not None:
        try:
            _pump.tick.disconnect(container.panel.on_tick)
        except (TypeError, RuntimeError):
            pass
    container.close()
    container.deleteLater()
    from pymol import gui

    if _pump is not None and gui.get_qtwindow() is None:
        _pump.stop()  # no panel and no PyMOL window: commands run in the foreground again
