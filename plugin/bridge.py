"""Between the engine and PyMOL: maps out of PyMOL, job events and session states into PyMOL.

Nothing here imports Qt, so the commands (`cryobuild_pymol.commands`) work in a PyMOL without a
GUI. The panel (`cryobuild_pymol.panel`) drives a `Bridge` from a QTimer on the GUI thread
(STYLE 2.11): `Bridge.pump` drains every running job's events and applies them to PyMOL objects;
worker threads never call it.

One `ModelView` per model object: its session (a folder of its own), the map it was built
into, the running job, and the names of its objects in PyMOL:

* ``<name>`` -- the session's visible model (B-factor = confidence 0-100, coloured
  red -> yellow -> blue by `cmd.spectrum`); accepted residues as sticks with green carbons;
* ``cryobuild_ca`` (``<name>_ca`` for other names) -- the detected Cα candidates, small spheres,
  hidden once the job has ended;
* ``<name>_raw`` -- the last round's model, shown only when the final model came out empty;
* ``<name>_new`` -- the residues of a job that keeps the model (a build over a finished model,
  a region rebuild; `cryobuild.engine`): its rounds while it runs, its final model when that
  was not better than the model (`Bridge.swap` puts it in), a stopped job's last round.

A model object belongs to the map it was built into: a build into another map goes into a
model object of its own (`Bridge.model_for_map`), so accepted residues never follow a name to
another map. The confidence colour bar is the panel's (PyMOL's ramp gadget is 90% of the
viewport wide and prints its ends as 0.000 and 100.000).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("cryobuild.pymol")

__all__ = [
    "DEFAULT_MODEL",
    "Bridge",
    "ModelView",
    "contour_level",
    "density_from_pymol",
    "finish_line",
    "get_bridge",
    "input_warnings",
    "install_quit_hook",
    "residue_keys",
    "show_map",
]

#: Default name of the model object (PyMOL renames an object called ``model``).
DEFAULT_MODEL = "cryobuild_model"
#: Names PyMOL would change or that would be ambiguous in selections.
RESERVED_NAMES = {"model", "all", "none", "sele", "enabled", "visible", "center", "origin"}
#: Confidence colouring: palette and range (B-factor column, 0-100).
PALETTE = "red_yellow_blue"
CONFIDENCE_RANGE = (0.0, 100.0)
#: Colour of accepted residues' carbons, and of residues a prune would remove (preview). The
#: ramp passes through grey50 itself (halfway from yellow to blue, confidence 75), so the
#: preview is a light grey, at least 0.6 from every colour of the ramp in RGB.
ACCEPTED_COLOUR = "green"
PREVIEW_COLOUR = "grey90"
#: Radius scale of the Cα candidate spheres.
CA_SPHERE_SCALE = 0.35
#: Å: placements from PyMOL's extent and the map file agree within this.
PLACEMENT_TOLERANCE = 1e-3
#: Unassigned chains' likeliest places (`cryobuild.thread.hints`) named in a build's last log
#: line, best E-value first.
PLACES_SHOWN = 3
#: Colour of the labels that name those places in the view (`Bridge.show_places`).
PLACES_COLOUR = "orange"
#: Å towards the viewer those labels are drawn from their residue (PyMOL's
#: ``label_placement_offset`` z), joined to it by a line (``label_connector``): at their
#: residue the map's mesh around it hid most of their text. On a 4.8 Å T20S α build as
#: `cryobuild_pymol.screenshot` shows it (thirty-fifth stop), lifted 10 or 18 Å the mesh still
#: hid part of the text, 22 Å none of it; 30 Å took the label out of the view (perspective
#: moves a lifted label away from the view's centre).
PLACES_LIFT = 22.0
#: Suffix of a map's mesh object, and its colour.
MESH_SUFFIX = "_mesh"
MESH_COLOUR = "grey60"
#: A value filling at least this fraction of a map (zero padding, zoning) is left out of the
#: histogram the contour level comes from.
EMPTY_FRACTION = 0.05
#: Voxels sampled for the contour level (every n-th of a bigger map).
CONTOUR_SAMPLE = 2_000_000
#: Prefixes of the bridge's temporary folders (removed when PyMOL quits), and the seconds PyMOL's
#: quitting waits for running jobs to stop first.
SCRATCH_PREFIX = "cryobuild-pymol-"
SESSIONS_PREFIX = "cryobuild-sessions-"
QUIT_TIMEOUT = 10.0
#: Why a model without a map cannot be rebuilt or assigned, and what to do.
NO_MAP = ("{name} has no map in this PyMOL session: build it into one, or open it with one "
          "(Open model… with the map chosen, or cryobuild_open FILE, MAP)")
#: Folder of a session holding a sequence-free build's HMM profiles.
PROFILES_FOLDER = "hmm_profiles"


@contextlib.contextmanager
def input_warnings():
    """Collect the `cryobuild.errors.InputWarning` messages raised inside the block (a FASTA
    record left out, ...) into the list it yields, for the user's log, instead of Python's
    ``file:line: warning`` print; other warnings pass on as usual."""
    from cryobuild.errors import InputWarning

    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        yield messages
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _cmd(_self=None):
    if _self is not None:
        return _self
    from pymol import cmd

    return cmd


# ----------------------------------------------------------------------------- maps


def density_from_pymol(name: str, state: int = 1, *, _self=None):
    """The map object ``name`` as a `cryobuild.maps.DensityMap`, placed as PyMOL places it.

    The grid comes from ``get_ccp4str`` (a whole MRC file written by PyMOL, axis order and
    voxel size included). PyMOL 3.2 writes a non-integer ORIGIN as zero, so the first voxel's
    position is taken from the object's extent (PyMOL's own placement) whenever the two
    differ. The values are z-scored here: PyMOL rescales maps on load when
    ``normalize_ccp4_maps`` is on, and z-scoring makes the engine see the same numbers either
    way.

    Raises
    ------
    cryobuild.errors.InputError
        When ``name`` is not a map object or its data cannot be read.
    """
    from cryobuild.errors import InputError
    from cryobuild.maps import DensityMap, read_map_bytes

    cmd = _cmd(_self)
    if name not in cmd.get_names_of_type("object:map"):
        raise InputError(f"{name!r} is not a map object in PyMOL")
    getter = getattr(cmd, "get_ccp4str", None)
    if getter is None:
        from pymol.exporting import get_ccp4str as getter  # not exported to cmd in PyMOL 3.2
        data = getter(name, state, _self=cmd)
    else:
        data = getter(name, state)
    if not data:
        raise InputError(f"{name}: PyMOL returned no map data (state {state})")
    density = read_map_bytes(bytes(data), name=name)
    lo, hi = (np.asarray(corner, dtype=np.float64) for corner in cmd.get_extent(name, state))
    span = density.shape_xyz - 1
    voxel = np.where(span > 0, (hi - lo) / np.maximum(span, 1), density.voxel_size)
    if not np.allclose(voxel, density.voxel_size, atol=PLACEMENT_TOLERANCE):
        log.warning("%s: voxel size %s from PyMOL's extent, %s in its map data; using the extent",
                    name, voxel.round(4).tolist(), density.voxel_size.round(4).tolist())
    grid = density.grid.astype(np.float64)
    std = float(grid.std())
    if not np.isfinite(std) or std == 0:
        raise InputError(f"{name}: the map is constant: no density")
    grid = ((grid - grid.mean()) / std).astype(np.float32)
    return DensityMap(grid, voxel, lo)


def map_names(_self=None) -> list[str]:
    """Map objects loaded in PyMOL, in PyMOL's order."""
    return list(_cmd(_self).get_names_of_type("object:map") or [])


def contour_level(values: np.ndarray) -> float:
    """A contour level for showing a map: Otsu's split of its density histogram between
    solvent and molecule, leaving out a value that fills the box (zero padding, a zoned or
    thresholded map). On the dev maps it keeps 98-100% of the deposited Cα inside the mesh
    while 3-8% of the box lies above it."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size > CONTOUR_SAMPLE:
        values = values[:: values.size // CONTOUR_SAMPLE + 1]
    if values.size == 0 or values.min() == values.max():
        return float(values[0]) if values.size else 0.0
    common, counts = np.unique(values, return_counts=True)
    if counts.max() >= EMPTY_FRACTION * values.size:
        values = values[values != common[int(np.argmax(counts))]]
    from cryobuild.features import otsu_threshold

    return otsu_threshold(values)


def show_map(name: str, *, _self=None) -> str:
    """Draw map object ``name`` as a mesh (``<name>_mesh``) at `contour_level`, centred and
    zoomed; returns the mesh's name."""
    cmd = _cmd(_self)
    cmd.set("mesh_use_shader", 0)  # hiding a shader mesh crashes software OpenGL (STACK_NOTES)
    level = contour_level(cmd.get_volume_field(name))
    mesh = cmd.get_legal_name(f"{name}{MESH_SUFFIX}")
    cmd.isomesh(mesh, name, level)
    cmd.color(MESH_COLOUR, mesh)
    cmd.zoom(mesh, complete=1)
    return mesh


# ----------------------------------------------------------------------------- selections


def residue_keys(selection: str, object_name: str, *, _self=None) -> list[tuple[str, int]]:
    """``(chain, residue number)`` of the residues of ``object_name`` in ``selection``, in order."""
    cmd = _cmd(_self)
    found: dict[tuple[str, int], None] = {}
    cmd.iterate(f"({object_name}) and ({selection})", "found[(chain, int(resv))] = None",
                space={"found": found, "int": int})
    return list(found)


def _keys_selection(object_name: str, keys) -> str:
    """A PyMOL selection of the residues ``keys`` of ``object_name`` ("none" when empty)."""
    by_chain: dict[str, list[int]] = {}
    for chain, number in keys:
        by_chain.setdefault(str(chain), []).append(int(number))
    if not by_chain:
        return "none"

    def resi(number: int) -> str:
        return str(number).replace("-", "\\-")  # PyMOL reads "-5" as a range: escape it

    parts = []
    for chain, numbers in by_chain.items():
        numbers = sorted(set(numbers))
        ranges, start = [], 0
        for end in range(1, len(numbers) + 1):
            if end == len(numbers) or numbers[end] != numbers[end - 1] + 1:
                first, last = numbers[start], numbers[end - 1]
                ranges.append(resi(first) if first == last else f"{resi(first)}-{resi(last)}")
                start = end
        parts.append(f"(chain {chain} and resi {'+'.join(ranges)})")
    return f"{object_name} and ({' or '.join(parts)})"


# ----------------------------------------------------------------------------- views


@dataclass
class ModelView:
    """A model object in PyMOL and the session behind it."""

    name: str
    session: object
    map_name: str = ""
    density: object = None
    map_key: str | None = None           # content key of ``density`` (the engine's)
    job: object = None
    updates: int = 0                     # model redraws from job events (rounds and final)
    last_round: object = None            # RoundResult of the running / last job
    context: object = None               # BuiltModel the job keeps as it is (shown with rounds)
    context_accepted: set = field(default_factory=set)  # its accepted residue keys
    verdict: object = None               # a job's Verdict whose new model may be swapped in
    profiles: object = None              # folder of a build without sequence's HMM profiles
    placements: tuple = ()               # the last build's unassigned chains' placements (hints)
    placed: dict = field(default_factory=dict)  # chain -> (numbers, Cα) when they were offered
    reselect: tuple = ()                 # (selection name, residue keys) a rebuild restores

    @property
    def ca_name(self) -> str:
        return "cryobuild_ca" if self.name == DEFAULT_MODEL else f"{self.name}_ca"

    @property
    def raw_name(self) -> str:
        return f"{self.name}_raw"

    @property
    def places_name(self) -> str:
        """Labels naming where the last build's unassigned chains might go (`Bridge.show_places`)."""
        return "cryobuild_places" if self.name == DEFAULT_MODEL else f"{self.name}_places"

    @property
    def new_name(self) -> str:
        return f"{self.name}_new"

    @property
    def swappable(self) -> bool:
        """True when the model a finished job kept apart (it was not better) can still be
        swapped in (`Bridge.swap`): the session has not changed since."""
        verdict = self.verdict
        return (verdict is not None and verdict.candidate is not None and not self.running
                and self.session.state is verdict.base)

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.done


class Bridge:
    """Engine jobs and sessions shown as PyMOL objects (one `ModelView` per model object).

    Parameters
    ----------
    _self : PyMOL ``cmd``, optional
        The PyMOL API to draw with (default ``pymol.cmd``).
    session_root : path, optional
        Folder for the sessions' folders (default: a new temporary folder, removed by
        `cleanup`, which runs when PyMOL quits).
    engine : cryobuild.engine.Engine, optional
        One engine for every device (tests share one with loaded networks).
    """

    def __init__(self, _self=None, session_root: str | os.PathLike | None = None, *, engine=None):
        self._self = _self
        self._shared_engine = engine
        self._engines: dict[str, object] = {}
        self._engine_lock = threading.Lock()
        self.device = "auto"
        self.views: dict[str, ModelView] = {}
        self._root = Path(session_root) if session_root else None
        self._own_root = False
        self._scratch = tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX)
        atexit.register(self.cleanup, timeout=2.0)  # pymol -c scripts end through the interpreter

    @property
    def cmd(self):
        return _cmd(self._self)

    # ------------------------------------------------------------------ engine

    def engine(self, device: str | None = None):
        """The engine for ``device`` (default: the bridge's), made on first use: "auto",
        "cpu" or "cuda" load the networks here; a Dask scheduler's address (``tcp://HOST:PORT``)
        runs inference on its workers (on their GPU when they have one) while the sessions --
        accept, prune, rebuild -- stay here."""
        from cryobuild.engine import Engine

        if self._shared_engine is not None:
            return self._shared_engine
        device = (device or self.device or "auto").strip()
        remote = "://" in device
        device = device if remote else device.lower()
        with self._engine_lock:
            engine = self._engines.get(device)
            if engine is None:
                engine = self._engines[device] = (Engine("auto", scheduler=device) if remote
                                                  else Engine(device))
            return engine

    def preload(self, device: str | None = None):
        """Import the pipeline and load the networks, or connect to the scheduler (blocks; a
        panel calls it in a thread). Returns the networks (None for a scheduler)."""
        return self.engine(device).preload()

    @property
    def session_root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix=SESSIONS_PREFIX))
            self._own_root = True
        return self._root

    def view(self, name: str = DEFAULT_MODEL, *, create: bool = False) -> ModelView:
        """The view of model object ``name``; with ``create``, a new one (and session) if needed.

        Raises `InputError` for a name PyMOL would change, or an unknown name without ``create``.
        """
        from cryobuild.errors import InputError

        name = str(name).strip() or DEFAULT_MODEL
        view = self.views.get(name)
        if view is not None:
            return view
        if not create:
            known = ", ".join(self.views) or "none yet"
            raise InputError(f"{name!r} is not a cryobuild model (models: {known})")
        legal = self.cmd.get_legal_name(name)
        if name.lower() in RESERVED_NAMES or legal != name:
            raise InputError(f"{name!r} cannot name a PyMOL object (PyMOL would call it "
                             f"{legal!r}{'_' if name.lower() == 'model' else ''}); choose another name")
        folder = self.session_root / name
        session = self.engine().open_session(folder)
        view = self.views[name] = ModelView(name, session)
        return view

    def view_of(self, job) -> ModelView | None:
        """The view whose job is ``job``."""
        return next((view for view in self.views.values() if view.job is job), None)

    @property
    def running(self) -> list[ModelView]:
        return [view for view in self.views.values() if view.running]

    def model_for_map(self, name: str, map_name: str, key: str) -> str:
        """The model object a build of map ``map_name`` (content ``key``) asked to go into
        ``name`` goes into: ``name`` itself unless it holds a model of another map, else
        ``<name>_<map>`` (``_2``, ``_3`` ... while those are taken by other maps too).
        Accepted residues belong to the map they were built in."""
        name = str(name).strip() or DEFAULT_MODEL

        def free(candidate: str, *, requested: bool = False) -> bool:
            view = self.views.get(candidate)
            if view is None:  # a name of the user's choice may replace another object
                return requested or candidate not in self.cmd.get_names("all")
            return view.map_key in (None, key) or view.session.state.num_residues == 0

        if free(name, requested=True):
            return name
        base = self.cmd.get_legal_name(f"{name}_{map_name}")
        for index in range(1, 1000):
            candidate = base if index == 1 else f"{base}_{index}"
            if free(candidate):
                return candidate
        raise RuntimeError("no free model object name")  # 999 maps: not reached

    # ------------------------------------------------------------------ jobs

    def start_build(self, map_name: str, sequences, *, rounds: int = 3, name: str = DEFAULT_MODEL,
                    device: str | None = None, relax: bool = True, resolution: float | None = None,
                    threaded: bool = True):
        """Start a build of ``sequences`` (none: as ``build_no_seq``) into PyMOL's map
        ``map_name``, read at ``resolution`` (Å; None: estimated from the map's spectrum; the
        model's rebuilds and assignments read it the same way, as its session records it:
        `cryobuild.session.Session.map_info`); returns the `Job`. The model
        object is ``name``, or another one when ``name`` holds a model of another map
        (`model_for_map`; ``bridge.view_of(job).name``).

        Raises `InputError` / `JobConflict` (subclasses of `CryobuildError`) for bad input or
        a job already running on the map or model.
        """
        from cryobuild.errors import InputError
        from cryobuild.pipeline import BuildOptions

        if device:
            self.device = device
        density = density_from_pymol(map_name, _self=self._self)
        key = self.engine().map_key(density)
        name = self.model_for_map(name, map_name, key)
        view = self.view(name, create=True)
        if view.running:
            raise InputError(f"a job is already running on {name}; stop it first")
        options = BuildOptions(rounds=int(rounds), relax=bool(relax), resolution=resolution)
        sequences = list(sequences or [])
        self._keep_context(view, lambda state: state.accepted)
        on_event = None if sequences else self._profile_writer(view)
        job = self.engine().start_build(density, sequences, options, session=view.session,
                                        on_event=on_event, threaded=threaded)
        view.job, view.map_name, view.density, view.map_key = job, map_name, density, key
        view.last_round = view.verdict = None
        view.profiles = None if sequences else view.session.path / PROFILES_FOLDER
        return job

    def _profile_writer(self, view: ModelView):
        """An event callback (worker thread) saving a sequence-free build's HMM profiles in the
        session folder (as ``build_no_seq`` does), for ``cryobuild hmm_search``; done before
        the job's ``finished`` event."""
        folder = view.session.path / PROFILES_FOLDER

        def write(event) -> None:
            if event.kind != "final":
                return
            from cryobuild.cli.build_no_seq import final_profiles
            from cryobuild.thread.profiles import write_profiles

            shutil.rmtree(folder, ignore_errors=True)
            if event.payload.final.num_residues:
                write_profiles(final_profiles(event.payload), folder)

        return write

    def start_rebuild(self, selection: str, *, name: str = DEFAULT_MODEL, rounds: int = 3,
                      threaded: bool = True):
        """Rebuild the residues of model ``name`` in ``selection`` (into the map of its build)
        with ``rounds`` graph-network rounds. Three, as a build's, put right 0.92 of the right
        residues of stretches moved off their density, one round 0.80 (`bench.rebuild`, 97
        windows of 6-24 residues on five real maps; README)."""
        from cryobuild.errors import InputError
        from cryobuild.pipeline import BuildOptions

        view = self.view(name)
        if view.running:
            raise InputError(f"a job is already running on {name}; stop it first")
        if view.density is None:
            raise InputError(NO_MAP.format(name=name))
        keys = residue_keys(selection, name, _self=self._self)
        if not keys:
            raise InputError(f"the selection {selection!r} holds no residue of {name}")
        region = set(keys)
        self._keep_context(view, lambda state: state.visible & np.array(
            [key not in region for key in state.keys()], dtype=bool))
        job = self.engine().start_rebuild(view.session, view.density, keys=keys,
                                          options=BuildOptions(rounds=int(rounds)),
                                          threaded=threaded)
        view.job, view.last_round, view.verdict = job, None, None
        view.reselect = (selection.strip(), keys)
        return job

    def chain_of(self, selection: str, name: str = DEFAULT_MODEL) -> str:
        """The one chain of model ``name`` that ``selection`` holds residues of (`InputError`
        for none or several)."""
        from cryobuild.errors import InputError

        chains = sorted({chain for chain, _ in residue_keys(selection, name, _self=self._self)})
        if len(chains) != 1:
            held = f"chains {', '.join(chains)}" if chains else "no residue"
            raise InputError(f"select residues of one chain of {name} to assign it "
                             f"({selection!r} holds {held})")
        return chains[0]

    def start_assign(self, chain: str, *, rank: int = 1, name: str = DEFAULT_MODEL,
                     threaded: bool = True):
        """Assign unassigned chain ``chain`` of model ``name`` to its placement of rank
        ``rank`` that the last build offered (`cryobuild.thread.hints`; labelled in
        `ModelView.places_name`), as `cryobuild.engine.Engine.start_assign` does."""
        from cryobuild.errors import InputError
        from cryobuild.thread.hints import chosen_placement

        view = self.view(name)
        if view.running:
            raise InputError(f"a job is already running on {name}; stop it first")
        if view.density is None:
            raise InputError(NO_MAP.format(name=name))
        chain = str(chain).strip()
        placement = chosen_placement(view.placements, chain, rank, f"the last build of {name}")
        if not self.offered_still(view, chain):
            raise InputError(f"chain {chain} of {name} has changed since its build offered its "
                             "places (a prune, undo or rebuild): build again for fresh ones")
        job = self.engine().start_assign(view.session, view.density, placement,
                                         threaded=threaded)
        view.job, view.last_round, view.verdict = job, None, None
        return job

    def _keep_context(self, view: ModelView, rows_of) -> None:
        """Remember what the job keeps (``rows_of(state)``, bool ``[R]``), to show with its rounds;
        drop the previous job's raw and new models and its places."""
        self.cmd.delete(view.raw_name)
        self.cmd.delete(view.new_name)
        self.cmd.delete(view.places_name)
        state = view.session.state
        rows = np.asarray(rows_of(state), dtype=bool)
        kept = state.select(rows)
        view.context = kept.model if kept.num_residues else None
        view.context_accepted = set(kept.keys(kept.accepted))

    def cancel(self, name: str | None = None) -> int:
        """Ask the running job(s) (of ``name``, or all) to stop; returns how many were asked."""
        views = [self.views[name]] if name in self.views else list(self.views.values()) if name is None else []
        asked = 0
        for view in views:
            if view.running:
                view.job.cancel()
                asked += 1
        return asked

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every job and wait (up to ``timeout`` s each) for its worker to end."""
        self.cancel()
        for view in list(self.views.values()):
            if view.job is not None:
                view.job.wait(timeout)

    def cleanup(self, timeout: float = 10.0) -> None:
        """`shutdown`, then remove the temporary folders (the sessions' folder when the bridge
        made it, and its scratch folder). PyMOL is quitting: the sessions go with it."""
        try:
            self.shutdown(timeout)
        finally:
            if self._own_root and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
            self._scratch.cleanup()

    def pump(self) -> list[tuple[ModelView, object]]:
        """Drain every job's queued events (never blocks), apply them to PyMOL, and return
        ``(view, event)`` pairs in order for the caller to report. GUI thread only."""
        applied = []
        for view in list(self.views.values()):
            if view.job is None:
                continue
            for event in view.job.poll():
                try:
                    self.apply(view, event)
                except Exception:  # a drawing error must not lose the job's later events
                    log.exception("cryobuild: could not show %s %s in PyMOL", event.job_id, event.kind)
                applied.append((view, event))
        return applied

    def apply(self, view: ModelView, event) -> None:
        """Show one `JobEvent` of ``view``'s job in PyMOL."""
        kind = event.kind
        apart = bool(getattr(view.job, "keeps_model", False))  # the job's residues go to <name>_new
        if kind == "points":
            self.show_points(view, event.payload)
        elif kind == "round":
            # The round's own residues with what the job keeps, as the session saved them (the
            # session itself may already be further on when this event is applied); a job that
            # keeps the model shows its own residues apart.
            view.last_round = event.payload
            if apart:
                self._draw(view.new_name, event.payload.model, ())
            else:
                self.show_round(view, event.payload)
            view.updates += 1
        elif kind == "final" and getattr(view.job, "kind", "") == "assign":
            assigned = event.payload.placement.chain_id
            view.placements = tuple(p for p in view.placements if p.chain_id != assigned)
            self.show_model(view)
            self.show_places(view)
            view.updates += 1
        elif kind == "final":
            result = event.payload
            verdict = getattr(view.job, "verdict", None)
            self.show_model(view)
            view.updates += 1
            kept_old = apart and verdict is not None and verdict.kept == "old"
            if view.job.kind == "build" and not kept_old:  # a region's are the region's only
                self._offer(view, result.placements, result.final)
            if view.reselect and not kept_old:
                view.reselect = (view.reselect[0], list(zip(result.final.chain_id.tolist(),
                                                            result.final.residue_number.tolist())))
            if apart:
                if kept_old and verdict.candidate is not None:
                    self._draw(view.new_name, result.final, ())
                    view.verdict = verdict
                else:
                    self.cmd.delete(view.new_name)
                self.show_places(view)
            elif result.final.num_residues == 0 and view.last_round is not None:
                # The engine threaded no chain: keep the last round visible, apart.
                self._load_model(view.last_round.model, view.raw_name)
                self._colour(view.raw_name)
            else:
                self.show_places(view)
        elif kind in ("cancelled", "failed", "finished"):
            # the session keeps its last saved round (or, for a job that keeps the model, the
            # model: the stopped job's last round stays apart); "finished" comes after the
            # engine has saved the final splice into the session, which "final" may precede
            if kind == "failed" and apart:
                self.cmd.delete(view.new_name)
            self.show_model(view)
            self.show_places(view)  # a stopped job's start took them down
            if kind == "finished" and view.ca_name in self.cmd.get_names("objects"):
                self.cmd.disable(view.ca_name)  # the candidates would hide the model
            if kind == "finished" and view.reselect:
                self._reselect(view)

    def _reselect(self, view: ModelView) -> None:
        """A named selection a rebuild was started from (PyMOL's ``sele`` as a rule) loses its
        atoms when the model is redrawn: it holds the region again when the rebuild ends, as
        the new residues if they went in, so that they can be looked at, accepted or rebuilt
        again as they were selected before."""
        name, keys = view.reselect
        view.reselect = ()
        if name in self.cmd.get_names("selections"):
            self.cmd.select(name, _keys_selection(view.name, keys), enable=1)

    # ------------------------------------------------------------------ drawing

    def _load(self, model, object_name: str) -> bool:
        """Replace ``object_name`` with the atoms of ``model``; with no residues, delete it and
        return False.

        The model goes through an mmCIF file, loaded under a scratch name and then renamed, so
        the old object stays on screen until the new one is ready. PyMOL's mmCIF reader adds a
        coordinate-less atom for every residue of ``_entity_poly_seq`` that has no atoms
        (pymol-open-source #359), so a chain covering part of its declared sequence (a region
        rebuild, a prune) would show residues the model does not have: those atoms (``not
        present``) are removed after the load. The file keeps the declared sequences, and mmCIF
        any chain name (PDB, which PyMOL reads without such atoms, allows two characters).
        """
        from cryobuild.models import write_model

        cmd = self.cmd
        if model.num_residues == 0:
            cmd.delete(object_name)
            return False
        scratch = f"_{object_name}_incoming"
        path = write_model(model, Path(self._scratch.name) / f"{object_name}.cif")
        cmd.delete(scratch)
        cmd.load(str(path), scratch, format="cif", quiet=1, zoom=0)
        cmd.remove(f"{scratch} and not present", quiet=1)
        cmd.delete(object_name)
        cmd.set_name(scratch, object_name)
        return True

    def _load_model(self, model, object_name: str) -> None:
        """Replace ``object_name`` with ``model`` as cartoon and lines (see `_load`)."""
        if not self._load(model, object_name):
            return
        cmd = self.cmd
        cmd.hide("everything", object_name)
        cmd.show("cartoon", object_name)
        cmd.show("lines", object_name)
        cmd.set("cartoon_gap_cutoff", 0, object_name)

    def _colour(self, object_name: str) -> None:
        lo, hi = CONFIDENCE_RANGE
        self.cmd.spectrum("b", PALETTE, object_name, minimum=lo, maximum=hi)

    def show_points(self, view: ModelView, points) -> None:
        """The Cα candidates as small spheres (B-factor = 100 × detection probability)."""
        from cryobuild.models import model_from_ca

        if not self._load(model_from_ca(points.xyz, points.score), view.ca_name):
            return
        cmd = self.cmd
        cmd.hide("everything", view.ca_name)
        cmd.show("spheres", view.ca_name)
        cmd.set("sphere_scale", CA_SPHERE_SCALE, view.ca_name)
        cmd.spectrum("b", PALETTE, view.ca_name, minimum=CONFIDENCE_RANGE[0], maximum=CONFIDENCE_RANGE[1])

    def _offer(self, view: ModelView, placements, final) -> None:
        """Take a build's ``placements`` (`Placement`, for chains of its final model ``final``,
        named as the session's) as those `start_assign` may assign, with each placed chain's
        residue numbers and Cα as they were offered."""
        view.placements = tuple(placements)
        view.placed = {}
        for chain in {p.chain_id for p in view.placements}:
            rows = final.chain_id == chain
            view.placed[chain] = (final.residue_number[rows].copy(), final.ca[rows].copy())

    @staticmethod
    def offered_still(view: ModelView, chain: str) -> bool:
        """True when ``chain`` of the session's model is the chain its placements were offered
        for: the same residue numbers at the same Cα (a prune, undo or region rebuild since may
        have changed it, or given its ID to another chain)."""
        if chain not in view.placed:
            return False
        numbers, ca = view.placed[chain]
        model = view.session.model
        rows = model.chain_id == chain
        return (np.array_equal(model.residue_number[rows], numbers)
                and np.allclose(model.ca[rows], ca, atol=0.01))

    def show_places(self, view: ModelView) -> None:
        """Label the first aligned residue of each unassigned chain of the session's model whose
        best placement is named to the user (`cryobuild.thread.hints.named_placements` of
        ``view.placements``) with that placement, as pseudoatoms of their own object
        (`ModelView.places_name`), so that redrawing the model keeps them and the user can hide
        them; ``cryobuild_assign`` takes the chain there."""
        from cryobuild.thread.hints import named_placements

        cmd = self.cmd
        cmd.delete(view.places_name)
        model = view.session.model
        for place in named_placements(view.placements):
            if not self.offered_still(view, place.chain_id):
                continue
            rows = np.flatnonzero((model.chain_id == place.chain_id)
                                  & (model.residue_number == place.chain_first))
            if not len(rows):
                continue
            cmd.pseudoatom(view.places_name, pos=[float(v) for v in model.ca[rows[0]]],
                           label=f"{place.chain_id}: {place.sequence} {place.first}-{place.last}? "
                                 f"(E {place.evalue:.2g})")
        if view.places_name in cmd.get_names("objects"):
            cmd.hide("everything", view.places_name)
            cmd.show("labels", view.places_name)
            cmd.set("label_color", PLACES_COLOUR, view.places_name)
            # drawn toward the viewer, so that the map's mesh around the chain does not hide
            # them, with a line to the residue they name
            cmd.set("label_placement_offset", (0.0, 0.0, PLACES_LIFT), view.places_name)
            cmd.set("label_connector", 1, view.places_name)
            cmd.set("label_connector_color", PLACES_COLOUR, view.places_name)

    def show_model(self, view: ModelView) -> None:
        """Draw the session's visible model: coloured by confidence, accepted residues as sticks."""
        session = view.session
        model = session.model
        accepted = session.flags["accepted"]
        self._draw(view.name, model, zip(model.chain_id[accepted].tolist(),
                                         model.residue_number[accepted].tolist()))

    def show_round(self, view: ModelView, result) -> None:
        """Draw a round's model (`RoundResult`) together with the residues its job keeps."""
        from cryobuild.pipeline import join_models

        model = result.model
        if view.context is not None:
            model = join_models([view.context, model])
        self._draw(view.name, model, view.context_accepted)

    def _draw(self, object_name: str, model, accepted_keys) -> None:
        self._load_model(model, object_name)
        if model.num_residues == 0:
            return
        self._colour(object_name)
        accepted_keys = list(accepted_keys)
        if accepted_keys:
            selection = _keys_selection(object_name, accepted_keys)
            cmd = self.cmd
            cmd.show("sticks", selection)
            cmd.color(ACCEPTED_COLOUR, f"({selection}) and elem C")

    def preview_prune(self, threshold: float, name: str = DEFAULT_MODEL) -> int:
        """Colour `PREVIEW_COLOUR` what `prune` at ``threshold`` would remove (accepted
        residues never go); returns that residue count. Nothing in the session changes."""
        view = self.view(name)
        session = view.session
        model, accepted = session.model, session.flags["accepted"]
        going = (model.confidence < float(threshold)) & ~accepted
        if view.name not in self.cmd.get_names("objects"):
            return int(going.sum())
        self._colour(view.name)
        if accepted.any():
            keep = _keys_selection(view.name, zip(model.chain_id[accepted].tolist(),
                                                  model.residue_number[accepted].tolist()))
            self.cmd.color(ACCEPTED_COLOUR, f"({keep}) and elem C")
        if going.any():
            selection = _keys_selection(view.name, zip(model.chain_id[going].tolist(),
                                                       model.residue_number[going].tolist()))
            self.cmd.color(PREVIEW_COLOUR, selection)
        return int(going.sum())

    # ------------------------------------------------------------------ session edits

    def _selected(self, selection: str, name: str) -> tuple[ModelView, list[tuple[str, int]]]:
        """The view of model ``name`` and the keys of its residues in ``selection``; raises
        `InputError` when there are none."""
        from cryobuild.errors import InputError

        view = self.view(name)
        keys = residue_keys(selection, name, _self=self._self)
        if not keys:
            raise InputError(f"the selection {selection!r} holds no residue of {name}")
        return view, keys

    def accept(self, selection: str, name: str = DEFAULT_MODEL, *, accepted: bool = True) -> int:
        """Accept the residues of ``name`` in ``selection`` (with ``accepted=False``, clear
        their accepted flag: `Session.unaccept`); returns how many changed."""
        view, keys = self._selected(selection, name)
        changed = view.session.accept(keys) if accepted else view.session.unaccept(keys)
        self.show_model(view)
        return changed

    def remove(self, selection: str, name: str = DEFAULT_MODEL) -> int:
        """Prune the residues of ``name`` in ``selection`` (`Session.prune`: accepted ones
        refuse, `undo` brings them back); returns how many."""
        view, keys = self._selected(selection, name)
        count = view.session.prune(keys)
        self.show_model(view)
        return count

    def prune(self, threshold: float, name: str = DEFAULT_MODEL) -> int:
        """Prune the residues of ``name`` below ``threshold`` confidence; returns how many."""
        view = self.view(name)
        count = view.session.prune(below=float(threshold))
        self.show_model(view)
        return count

    def undo(self, name: str = DEFAULT_MODEL) -> str:
        view = self.view(name)
        action = view.session.undo()
        self.show_model(view)
        return action

    def swap(self, name: str = DEFAULT_MODEL) -> str:
        """Put the model of ``name``'s last job into it, when that job kept the old model
        (its residues are shown as ``<name>_new``); returns a description. `undo` reverts it.

        Raises `InputError` when there is none, or the model has changed since the job ended.
        """
        from cryobuild.errors import InputError

        view = self.view(name)
        if not view.swappable:
            raise InputError(f"{name} has no new model to swap in (a job's model that was not "
                             "better than the one in place)")
        verdict, job = view.verdict, view.job
        description = f"swap in {job.id}'s model"
        view.session.swap(verdict.candidate, base=verdict.base, description=description,
                          sequences=list(verdict.sequences))
        view.verdict = None
        self.cmd.delete(view.new_name)
        self.show_model(view)
        return f"{description}: {verdict.new.describe()} (was {verdict.old.describe()})"

    def set_model(self, model, *, name: str = DEFAULT_MODEL, sequences=None, map_name: str = "",
                  accepted=(), resolution: float | None = None) -> ModelView:
        """Put ``model`` into ``name``'s session (e.g. a model opened from a file), its
        residues ``accepted`` accepted, and show it; with ``map_name``, later rebuilds use that
        map (read first: an unknown map changes nothing), read at ``resolution`` (Å; None: as a
        job on that map in this session read it, else estimated), which the session records
        (`cryobuild.engine.Engine.attach_map`)."""
        density = density_from_pymol(map_name, _self=self._self) if map_name else None
        view = self.view(name, create=True)
        view.session.set_model(model, sequences=sequences, accepted=accepted)
        if density is not None:
            view.map_name, view.density, view.map_key = map_name, density, self.engine().map_key(density)
            self.engine().attach_map(view.session, density, resolution)
        self._offer(view, (), model)  # an earlier build's places are not this model's
        self.show_model(view)
        self.show_places(view)
        return view

    def open_model(self, path: str | os.PathLike, *, name: str = DEFAULT_MODEL, sequences=None,
                   map_name: str = "", resolution: float | None = None) -> ModelView:
        """`set_model` with the model in file ``path`` (mmCIF or PDB; each residue's confidence
        its Cα B-factor, as cryobuild writes them): a model saved in an earlier PyMOL session,
        or built elsewhere, to accept, prune and rebuild; the residues a saved model had
        accepted are accepted again (`cryobuild.session.read_accepted`). The ``model.cif`` of
        a ``cryobuild build`` folder, as its build wrote it, brings the places offered for its
        unassigned chains (its ``unassigned_placements.csv``), to assign them here with the
        build's sequences, and the resolution its build was given (unless ``resolution``, Å,
        says otherwise). Raises `InputError` for a file that holds no protein model, or when
        ``name`` holds accepted residues."""
        from cryobuild.build_folder import as_written, read_log
        from cryobuild.build_outputs import PLACEMENTS_FILE, read_placements_csv
        from cryobuild.errors import InputError
        from cryobuild.models import read_model
        from cryobuild.session import read_accepted

        path = Path(path)
        model = read_model(path)
        built_here = as_written(path.parent, path.name)
        if resolution is None and built_here:
            try:
                resolution = read_log(path.parent).get("resolution")
            except (FileNotFoundError, InputError):
                resolution = None  # no build.log, or one that cannot be read, gives none
        view = self.set_model(model, name=name, sequences=sequences, map_name=map_name,
                              accepted=read_accepted(path), resolution=resolution)
        offered = path.parent / PLACEMENTS_FILE
        if offered.is_file() and built_here:
            self._offer(view, read_placements_csv(offered), model)
            self.show_places(view)
        return view

    def save(self, path: str | os.PathLike, name: str = DEFAULT_MODEL) -> Path:
        """Write the visible model of ``name`` (mmCIF or PDB by the file's suffix; an mmCIF
        names the accepted residues, `cryobuild.session.Session.save_model`)."""
        from cryobuild.errors import InputError

        session = self.view(name).session
        if session.model.num_residues == 0:
            raise InputError(f"{name} has no residues to save")
        return session.save_model(path)


def finish_line(view: ModelView, event) -> str | None:
    """One line saying how ``view``'s job ended (its ``final``, ``failed`` or ``cancelled``
    event), for the PyMOL console and the panel's log; None for other events."""
    job = view.job
    if event.kind == "final" and getattr(job, "kind", "") == "assign":
        assignment = event.payload
        chain, rest = assignment.chain, assignment.rest
        line = (f"{event.job_id} ({view.name}): chain {assignment.placement.chain_id} assigned: "
                f"{chain.residues} residues as {chain.sequence} {chain.first}-{chain.last} in "
                f"chain {chain.chain_id}")
        if rest.num_residues:
            line += (f"; its {rest.num_residues} residues outside the alignment stay unassigned "
                     f"as chain {rest.chain_id[0]}")
        return line + f" (cryobuild_undo {view.name} takes it back)"
    if event.kind == "final":
        result, verdict = event.payload, getattr(job, "verdict", None)
        if verdict is not None:
            line = f"{job.kind} done: {verdict.message}"
            if verdict.kept == "old" and verdict.candidate is not None:
                line += f"; the new model is {view.new_name} (cryobuild_swap {view.name} puts it in)"
            return f"{event.job_id} ({view.name}): {line}"
        line = (f"done: {result.final.num_residues} residues in {len(result.final_chains)} chains "
                f"(last round: {result.raw.num_residues} residues)")
        if result.fit is not None and np.isfinite(result.fit.cc_mask):
            line += f", CC_mask {result.fit.cc_mask:.2f} in the map"
        if view.profiles is not None and result.final.num_residues:
            line += f"; HMM profiles in {view.profiles}"
        from cryobuild.thread.hints import named_placements

        places = named_placements(result.placements)
        if places:
            line += "; unassigned chains might be " + ", ".join(
                f"chain {p.chain_id}: {p.sequence} {p.first}-{p.last} (E = {p.evalue:.2g})"
                for p in places[:PLACES_SHOWN])
            if len(places) > PLACES_SHOWN:
                line += f" and {len(places) - PLACES_SHOWN} more"
        return f"{event.job_id} ({view.name}): {line}"
    if event.kind == "cancelled":
        if getattr(job, "keeps_model", False):
            apart = f"; its last round is {view.new_name}" if view.last_round is not None else ""
            return f"{event.job_id} ({view.name}): stopped; {view.name} keeps its model{apart}"
        return f"{event.job_id} ({view.name}): stopped; {view.name} keeps the last finished round"
    if event.kind == "failed":
        return f"{event.job_id} ({view.name}): failed: {event.message}"
    return None


def install_quit_hook(_self=None) -> None:
    """Make PyMOL's ``quit`` (the command, the window's close button) remove the bridge's
    temporary folders first. PyMOL ends the process with C ``exit()`` there (``PExit``), so
    neither Qt's ``aboutToQuit`` nor Python's ``atexit`` runs; every path of ``cmd.quit`` goes
    through ``cmd._quit``, which this wraps (once)."""
    cmd = _cmd(_self)
    original = getattr(cmd, "_quit", None)
    if original is None or getattr(original, "_cryobuild_cleanup", False):
        return

    def _quit(*args, **kwargs):
        bridge = _bridge
        if bridge is not None:
            try:
                bridge.cleanup(timeout=QUIT_TIMEOUT)
            except Exception:  # quitting must not fail because of the plugin
                log.exception("cryobuild: cleaning up before quitting failed")
        return original(*args, **kwargs)

    _quit._cryobuild_cleanup = True
    cmd._quit = _quit


_bridge: Bridge | None = None
_bridge_lock = threading.Lock()


def get_bridge() -> Bridge:
    """The process's bridge, shared by the panel and the commands."""
    global _bridge
    with _bridge_lock:
        if _bridge is None:
            _bridge = Bridge()
        return _bridge


def reset_bridge(bridge: Bridge | None = None) -> Bridge | None:
    """Replace the shared bridge (tests; after `cmd.reinitialize`). Cancels the old one's jobs."""
    global _bridge
    with _bridge_lock:
        old, _bridge = _bridge, bridge
    if old is not None and old is not bridge:
        old.shutdown()
    return bridge
