"""Between the engine and PyMOL: maps out of PyMOL, job events and session states into PyMOL.

Nothing here imports Qt, so the commands (`cryobuild_pymol.commands`) work in a PyMOL without a
GUI. The panel (`cryobuild_pymol.panel`) drives a `Bridge` from a QTimer on the GUI thread
(STYLE 2.11): `Bridge.pump` drains every running job's events and applies them to PyMOL objects;
worker threads never call it.

One `ModelView` per model object: its session (a folder of its own), the map it was built
into, the running job, and the names of its objects in PyMOL:

* ``<name>`` -- the session's visible model (B-factor = confidence 0-100, coloured
  red -> yellow -> blue by `cmd.spectrum`); accepted residues as sticks with green carbons;
* ``cryobuild_ca`` (``<name>_ca`` for other names) -- the detected Cα candidates, small spheres;
* ``<name>_raw`` -- the last round's model, shown only when the final model came out empty;
* ``cryobuild_confidence`` -- the colour bar (`cmd.ramp_new`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("cryobuild.pymol")

__all__ = [
    "DEFAULT_MODEL",
    "LEGEND",
    "Bridge",
    "ModelView",
    "density_from_pymol",
    "get_bridge",
    "input_warnings",
    "residue_keys",
]

#: Default name of the model object (PyMOL renames an object called ``model``).
DEFAULT_MODEL = "cryobuild_model"
#: Name of the confidence colour bar.
LEGEND = "cryobuild_confidence"
#: Names PyMOL would change or that would be ambiguous in selections.
RESERVED_NAMES = {"model", "all", "none", "sele", "enabled", "visible", "center", "origin"}
#: Confidence colouring: palette and range (B-factor column, 0-100).
PALETTE = "red_yellow_blue"
CONFIDENCE_RANGE = (0.0, 100.0)
RAMP_COLOURS = ["red", "yellow", "blue"]
#: Colour of accepted residues' carbons, and of residues a prune would remove (preview).
ACCEPTED_COLOUR = "green"
PREVIEW_COLOUR = "grey50"
#: Radius scale of the Cα candidate spheres.
CA_SPHERE_SCALE = 0.35
#: Å: placements from PyMOL's extent and the map file agree within this.
PLACEMENT_TOLERANCE = 1e-3


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
    job: object = None
    updates: int = 0                     # model redraws from job events (rounds and final)
    last_round: object = None            # RoundResult of the running / last job
    context: object = None               # BuiltModel the job keeps as it is (shown with rounds)
    context_accepted: set = field(default_factory=set)  # its accepted residue keys
    messages: list = field(default_factory=list)

    @property
    def ca_name(self) -> str:
        return "cryobuild_ca" if self.name == DEFAULT_MODEL else f"{self.name}_ca"

    @property
    def raw_name(self) -> str:
        return f"{self.name}_raw"

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
        Folder for the sessions' folders (default: a new temporary folder).
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
        self._scratch = tempfile.TemporaryDirectory(prefix="cryobuild-pymol-")

    @property
    def cmd(self):
        return _cmd(self._self)

    # ------------------------------------------------------------------ engine

    def engine(self, device: str | None = None):
        """The engine for ``device`` (default: the bridge's), made on first use."""
        from cryobuild.engine import Engine

        if self._shared_engine is not None:
            return self._shared_engine
        device = (device or self.device or "auto").lower()
        with self._engine_lock:
            engine = self._engines.get(device)
            if engine is None:
                engine = self._engines[device] = Engine(device)
            return engine

    def preload(self, device: str | None = None):
        """Import the pipeline and load the networks (blocks; a panel calls it in a thread)."""
        return self.engine(device).preload()

    @property
    def session_root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="cryobuild-sessions-"))
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

    @property
    def running(self) -> list[ModelView]:
        return [view for view in self.views.values() if view.running]

    # ------------------------------------------------------------------ jobs

    def start_build(self, map_name: str, sequences, *, rounds: int = 3, name: str = DEFAULT_MODEL,
                    device: str | None = None, relax: bool = True, threaded: bool = True):
        """Start a build of ``sequences`` into PyMOL's map ``map_name``; returns the `Job`.

        Raises `InputError` / `JobConflict` (subclasses of `CryobuildError`) for bad input or
        a job already running on the map or model.
        """
        from cryobuild.errors import InputError
        from cryobuild.pipeline import BuildOptions

        if device:
            self.device = device
        density = density_from_pymol(map_name, _self=self._self)
        view = self.view(name, create=True)
        if view.running:
            raise InputError(f"a job is already running on {name}; stop it first")
        options = BuildOptions(rounds=int(rounds), relax=bool(relax))
        self._keep_context(view, lambda state: state.accepted)
        job = self.engine().start_build(density, sequences, options, session=view.session,
                                        threaded=threaded)
        view.job, view.map_name, view.density, view.last_round = job, map_name, density, None
        return job

    def start_rebuild(self, selection: str, *, name: str = DEFAULT_MODEL, rounds: int = 1,
                      threaded: bool = True):
        """Rebuild the residues of model ``name`` in ``selection`` (into the map of its build)."""
        from cryobuild.errors import InputError
        from cryobuild.pipeline import BuildOptions

        view = self.view(name)
        if view.running:
            raise InputError(f"a job is already running on {name}; stop it first")
        if view.density is None:
            raise InputError(f"{name} was not built into a map in this PyMOL session")
        keys = residue_keys(selection, name, _self=self._self)
        if not keys:
            raise InputError(f"the selection {selection!r} holds no residue of {name}")
        region = set(keys)
        self._keep_context(view, lambda state: state.visible & np.array(
            [key not in region for key in state.keys()], dtype=bool))
        job = self.engine().start_rebuild(view.session, view.density, keys=keys,
                                          options=BuildOptions(rounds=int(rounds)), threaded=threaded)
        view.job, view.last_round = job, None
        return job

    def _keep_context(self, view: ModelView, rows_of) -> None:
        """Remember what the job keeps (``rows_of(state)``, bool ``[R]``), to show with its rounds;
        drop the previous job's raw model."""
        self.cmd.delete(view.raw_name)
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
        if kind == "points":
            self.show_points(view, event.payload)
        elif kind == "round":
            # The round's own residues with what the job keeps, as the session saved them (the
            # session itself may already be further on when this event is applied).
            view.last_round = event.payload
            self.show_round(view, event.payload)
            view.updates += 1
        elif kind == "final":
            result = event.payload
            self.show_model(view)
            view.updates += 1
            if result.final.num_residues == 0 and view.last_round is not None:
                # The engine threaded no chain: keep the last round visible, apart.
                self._load_model(view.last_round.model, view.raw_name)
                self._colour(view.raw_name)
        elif kind in ("cancelled", "failed", "finished"):
            # the session keeps its last saved round; "finished" comes after the engine has
            # saved the final splice into the session, which "final" may precede
            self.show_model(view)

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
        cmd = self.cmd
        lo, hi = CONFIDENCE_RANGE
        cmd.spectrum("b", PALETTE, object_name, minimum=lo, maximum=hi)
        self.show_legend()

    def show_legend(self) -> None:
        """The confidence colour bar (a ramp object, 0-100)."""
        cmd = self.cmd
        if LEGEND not in cmd.get_names("objects"):
            lo, hi = CONFIDENCE_RANGE
            cmd.ramp_new(LEGEND, "none", [lo, (lo + hi) / 2, hi], RAMP_COLOURS, quiet=1)

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
        """Colour grey what `prune` at ``threshold`` would remove (accepted residues never go);
        returns that residue count. Nothing in the session changes."""
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

    def accept(self, selection: str, name: str = DEFAULT_MODEL) -> int:
        """Accept the residues of ``name`` in ``selection``; returns how many were new."""
        from cryobuild.errors import InputError

        view = self.view(name)
        keys = residue_keys(selection, name, _self=self._self)
        if not keys:
            raise InputError(f"the selection {selection!r} holds no residue of {name}")
        added = view.session.accept(keys)
        self.show_model(view)
        return added

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

    def set_model(self, model, *, name: str = DEFAULT_MODEL, sequences=None, map_name: str = "") -> ModelView:
        """Put ``model`` into ``name``'s session (e.g. a model opened from a file) and show it;
        with ``map_name``, later rebuilds use that map."""
        view = self.view(name, create=True)
        view.session.set_model(model, sequences=sequences)
        if map_name:
            view.map_name, view.density = map_name, density_from_pymol(map_name, _self=self._self)
        self.show_model(view)
        return view

    def save(self, path: str | os.PathLike, name: str = DEFAULT_MODEL) -> Path:
        """Write the visible model of ``name`` (mmCIF or PDB by the file's suffix)."""
        from cryobuild.errors import InputError
        from cryobuild.models import write_model

        model = self.view(name).session.model
        if model.num_residues == 0:
            raise InputError(f"{name} has no residues to save")
        return write_model(model, path)


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
