"""A model-building session: the current model, per-residue flags and undo history in a folder.

The folder holds

* ``state.npz`` -- the authoritative state: every residue of the model (pruned ones too), the
  flags ``accepted`` / ``built`` / ``pruned`` per residue, the chain -> sequence names, the
  sequences, the map's identity, the last job's record and the undo history (snapshots);
* ``model.cif`` -- the visible model (pruned residues left out), for viewers; derived from the
  state and rewritten after it.

Both are written atomically after every change (`cryobuild.atomic`), so a crash of the host or
a killed worker loses nothing that was saved, and a reader never sees half a file. A session is
restored with `Session.open` (or `cryobuild.engine.Engine.open_session`).

Several programs may open one folder (PyMOL and a script, say). Every save carries a fresh
stamp, and a save first checks, under an exclusive ``flock`` of ``.session.lock``, that the
folder still holds the stamp this `Session` last read or wrote: a save never overwrites what
another program saved since -- it raises `JobConflict` and changes nothing (`Session.reload`
reads the newer state). A running job holds a ``flock`` of ``.job.lock`` until it ends, so
another program sees the session busy (no edits, no second job) and does not take the job for
an interrupted one; a killed program's locks are released by the system.

Residues are named by keys ``(chain_id, residue_number)``, unique within a session.

Flags:

* **accepted** -- set by the user (`Session.accept`); accepted residues are never moved,
  replaced or pruned by the engine: later builds treat them as fixed context and thread the
  sequence around them;
* **built** -- made by a cryobuild job (False for residues imported with `Session.set_model`);
* **pruned** -- removed by `Session.prune`; kept in the state (hidden from `Session.model`) so
  that `Session.undo` can bring them back; the next full build drops them.

While a job of the engine runs on a session, in this program or another, the session belongs
to that job: user edits (`accept`, `prune`, `undo`, `set_model`) raise `JobConflict`. Every
Session method is thread-safe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import CryobuildError, InputError
from .models import BuiltModel, model_format, write_model
from .sequences import Sequence

__all__ = [
    "ACCEPTED_ITEM",
    "FLAGS",
    "HISTORY_LIMIT",
    "MODEL_FILE",
    "STATE_FILE",
    "JobConflict",
    "ResidueKey",
    "Session",
    "SessionState",
    "accepted_item",
    "infer_chain_sequences",
    "read_accepted",
]

#: File names inside a session folder.
STATE_FILE = "state.npz"
MODEL_FILE = "model.cif"
#: Lock files: held while the folder is read or written, and by a running job.
FOLDER_LOCK = ".session.lock"
JOB_LOCK = ".job.lock"
#: Format version of ``state.npz``.
SESSION_VERSION = 1
#: Undo steps kept (older ones are dropped).
HISTORY_LIMIT = 20
#: Per-residue flags, in this order.
FLAGS = ("accepted", "built", "pruned")
#: A chain is taken to be a copy of a sequence when at least this fraction of its residue
#: types agree with the sequence at their residue numbers (`infer_chain_sequences`).
MIN_SEQUENCE_AGREEMENT = 0.5
_MODEL_ARRAYS = ("atom_positions", "atom_mask", "aatype", "residue_number", "chain_id", "confidence")

ResidueKey = tuple[str, int]
#: mmCIF item of a model a session saves (`Session.save_model`) that names its accepted
#: residues (`accepted_item`), so that the model, opened into a session again, keeps them
#: accepted (`read_accepted`). The PDB format has no place for it.
ACCEPTED_ITEM = "_cryobuild.accepted"


def accepted_item(keys: Iterable[ResidueKey]) -> str:
    """``keys`` as the value of `ACCEPTED_ITEM`: one line per run of consecutive residue
    numbers of a chain, ``CHAIN:FIRST..LAST`` (``CHAIN:N`` for one residue)."""
    by_chain: dict[str, list[int]] = {}
    for chain, number in keys:
        by_chain.setdefault(str(chain), []).append(int(number))
    lines = []
    for chain, numbers in by_chain.items():
        numbers = sorted(set(numbers))
        breaks = [i for i in range(1, len(numbers)) if numbers[i] != numbers[i - 1] + 1]
        for first, last in zip([0] + breaks, breaks + [len(numbers)]):
            low, high = numbers[first], numbers[last - 1]
            lines.append(f"{chain}:{low}" if low == high else f"{chain}:{low}..{high}")
    return "\n".join(lines)


def read_accepted(path: str | os.PathLike) -> list[ResidueKey]:
    """The residues the model file ``path`` names as accepted (`ACCEPTED_ITEM`); none for a
    file without the item (PDB, or a model no session saved). Raises `InputError` for an item
    that is not what `accepted_item` writes."""
    import gemmi

    if model_format(path) != "cif":
        return []
    try:
        value = gemmi.cif.read(str(path)).sole_block().find_value(ACCEPTED_ITEM)
    except (RuntimeError, ValueError):  # not mmCIF inside (a PDB file named .cif, say)
        return []
    if value is None:
        return []
    keys = []
    for line in gemmi.cif.as_string(value).split():
        chain, _, numbers = line.rpartition(":")
        low, _, high = numbers.partition("..")
        try:
            keys += [(chain, n) for n in range(int(low), int(high or low) + 1)]
        except ValueError:
            raise InputError(f"{path}: {ACCEPTED_ITEM} holds {line!r}, not CHAIN:FIRST..LAST") from None
    return keys


class JobConflict(CryobuildError):
    """A job is already running on the same map or session: cancel it (and wait for its
    "finished" event) first. User edits of a session while a job runs on it raise it too, and
    so does a save when another program has saved the session since (`Session.reload`)."""


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool = True):
    """Hold an exclusive ``flock`` of ``path`` (created if needed) inside the block; yields
    the open descriptor. Without ``wait``, raises `BlockingIOError` when it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _job_lock_held(folder: Path) -> bool:
    """True when a job (of any program, this one included) holds ``folder``'s `JOB_LOCK`."""
    if not (folder / JOB_LOCK).exists():
        return False
    try:
        with _flock(folder / JOB_LOCK, wait=False):
            return False
    except BlockingIOError:
        return True


@dataclasses.dataclass(frozen=True, eq=False)
class SessionState:
    """An immutable snapshot of a session's model.

    Attributes
    ----------
    model : BuiltModel
        Every residue, pruned ones included (``R`` residues).
    accepted, built, pruned : bool ``[R]``
        The per-residue flags (module docstring).
    chain_sequences : dict[str, str]
        Chain id -> name of the input sequence the chain is a copy of (chains not threaded to a
        sequence are absent).
    partial : bool
        True when the model holds a round of a job that did not finish (a build stopped, failed
        or killed before its final model): not a finished model, so a later build replaces it
        without comparing (`cryobuild.engine`).
    """

    model: BuiltModel
    accepted: np.ndarray
    built: np.ndarray
    pruned: np.ndarray
    chain_sequences: dict = dataclasses.field(default_factory=dict)
    partial: bool = False

    def __post_init__(self):
        num = self.model.num_residues
        for name in FLAGS:
            flag = np.asarray(getattr(self, name), dtype=bool).reshape(-1)
            if flag.shape != (num,):
                raise ValueError(f"{name} must be bool [{num}], got shape {flag.shape}")
            object.__setattr__(self, name, flag)
        if np.any(self.accepted & self.pruned):
            raise ValueError("a residue cannot be both accepted and pruned")
        keys = list(zip(self.model.chain_id.tolist(), self.model.residue_number.tolist()))
        if len(set(keys)) != len(keys):
            seen, repeated = set(), []
            for key in keys:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
            raise ValueError(f"residue keys must be unique, repeated: {repeated[:5]}")
        present = set(self.model.chain_id.tolist())
        chain_sequences = {str(c): str(s) for c, s in dict(self.chain_sequences).items() if c in present}
        object.__setattr__(self, "chain_sequences", chain_sequences)
        object.__setattr__(self, "partial", bool(self.partial))

    @classmethod
    def empty(cls) -> SessionState:
        model = BuiltModel(
            atom_positions=np.zeros((0, 14, 3), np.float32), atom_mask=np.zeros((0, 14), bool),
            aatype=np.zeros(0, np.int64), residue_number=np.zeros(0, np.int64),
            chain_id=np.zeros(0, dtype=str), confidence=np.zeros(0, np.float32),
        )
        return cls(model, *(np.zeros(0, bool) for _ in FLAGS))

    @property
    def num_residues(self) -> int:
        return self.model.num_residues

    @property
    def visible(self) -> np.ndarray:
        """bool ``[R]``: residues not pruned."""
        return ~self.pruned

    def keys(self, rows: np.ndarray | None = None) -> list[ResidueKey]:
        """Keys of all residues (or of the ``rows``, bool ``[R]``)."""
        chains, numbers = self.model.chain_id, self.model.residue_number
        if rows is not None:
            chains, numbers = chains[rows], numbers[rows]
        return [(str(c), int(n)) for c, n in zip(chains, numbers)]

    def rows(self, keys: Iterable, *, visible_only: bool = True) -> np.ndarray:
        """bool ``[R]`` marking the residues named by ``keys``.

        Raises `InputError` naming keys that are not in the model (or are pruned, with
        ``visible_only``).
        """
        index = {key: row for row, key in enumerate(self.keys())}
        selected = np.zeros(self.num_residues, dtype=bool)
        missing = []
        for key in keys:
            key = _key(key)
            row = index.get(key)
            if row is None or (visible_only and self.pruned[row]):
                missing.append(key)
            else:
                selected[row] = True
        if missing:
            shown = ", ".join(f"{c}/{n}" for c, n in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise InputError(f"no such residue in the session's model: {shown}{more}")
        return selected

    def select(self, rows: np.ndarray) -> SessionState:
        """The residues where ``rows`` (bool ``[R]``) is True, with their flags."""
        return SessionState(self.model.select(rows), self.accepted[rows], self.built[rows],
                            self.pruned[rows], self.chain_sequences, self.partial)

    def replace(self, **changes) -> SessionState:
        return dataclasses.replace(self, **changes)


def _key(key) -> ResidueKey:
    """A residue key from ``(chain, number)`` (tuple or list)."""
    try:
        chain, number = key
    except (TypeError, ValueError):
        raise InputError(f"a residue key is (chain, number), got {key!r}") from None
    if int(number) != number:
        raise InputError(f"residue numbers are whole numbers, got {number!r}")
    return str(chain), int(number)


def infer_chain_sequences(model: BuiltModel, sequences: list[Sequence]) -> dict[str, str]:
    """Chain id -> sequence name for the chains of ``model`` that are copies of one of
    ``sequences``: the sequence whose residues agree with the chain's residue types at its
    residue numbers most often, if at least `MIN_SEQUENCE_AGREEMENT` of them do."""
    found = {}
    for chain in model.chains():
        rows = model.chain_id == chain
        numbers, types = model.residue_number[rows], model.aatype[rows]
        best, best_score = None, MIN_SEQUENCE_AGREEMENT
        for sequence in sequences:
            inside = (numbers >= 1) & (numbers <= len(sequence))
            if not inside.any():
                continue
            agree = np.mean(sequence.aatype[numbers[inside] - 1] == types[inside]) * inside.mean()
            if agree >= best_score:
                best, best_score = sequence.name, agree
        if best is not None:
            found[chain] = best
    return found


class Session:
    """A session folder (see the module docstring). Use `Session.open` / `Session.create`, or
    `cryobuild.engine.Engine.open_session`.

    Attributes read by a viewer: `model` (visible residues), `flags` (aligned with `model`),
    `state` (everything, as an immutable snapshot), `sequences`, `history`, `job`.
    """

    def __init__(self, path: Path, state: SessionState, sequences: list[Sequence], meta: dict,
                 history: list[tuple[dict, SessionState]]):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._busy: str | None = None
        self._job_lock: int | None = None  # descriptor holding JOB_LOCK while our job runs
        self._load(state, sequences, meta, history)

    def _load(self, state: SessionState, sequences: list[Sequence], meta: dict,
              history: list[tuple[dict, SessionState]]) -> None:
        self._state = state
        self._sequences = list(sequences)
        self._map_info = dict(meta.get("map", {}))
        self._job = dict(meta.get("job", {}))
        self._history = list(history)
        self._stamp = meta.get("stamp")

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str | Path) -> Session:
        """A new, empty session in ``path`` (created if needed; must not hold a session)."""
        path = Path(path)
        with _flock(path / FOLDER_LOCK):
            if (path / STATE_FILE).exists():
                raise InputError(f"{path}: already holds a session; open it instead")
            session = cls(path, SessionState.empty(), [], {}, [])
            session._write()
        return session

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Session:
        """Restore the session saved in ``path`` (a new one if there is none and ``create``).

        Leftover temporary files of an interrupted write (``.*.part``) are removed; a job that
        was running when the state was last saved, and whose program no longer holds
        `JOB_LOCK`, is recorded as ``"interrupted"``.
        """
        path = Path(path)
        if not (path / STATE_FILE).exists():
            if not create:
                raise InputError(f"{path}: no session here ({STATE_FILE} missing)")
            return cls.create(path)
        with _flock(path / FOLDER_LOCK):
            for leftover in path.glob(".*.part"):  # every write holds the lock: none is live
                leftover.unlink(missing_ok=True)
            session = cls(path, *_read(path))
            if session._job.get("state") == "running" and not _job_lock_held(path):
                session._job["state"] = "interrupted"
                session._write()
        return session

    def reload(self) -> None:
        """Read the folder again (e.g. after `JobConflict` from a save: another program saved
        since). Not while this session's own job runs."""
        with self._lock:
            if self._busy is not None:
                raise JobConflict(f"{self.path}: {self._busy} is running on this session; cancel it first")
            with _flock(self.path / FOLDER_LOCK):
                self._load(*_read(self.path))

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> SessionState:
        """Everything, pruned residues included (an immutable snapshot)."""
        with self._lock:
            return self._state

    @property
    def model(self) -> BuiltModel:
        """The visible model (pruned residues left out)."""
        state = self.state
        return state.model.select(state.visible)

    @property
    def flags(self) -> dict[str, np.ndarray]:
        """``accepted`` and ``built`` (bool ``[R]``) aligned with `model`."""
        state = self.state
        return {"accepted": state.accepted[state.visible], "built": state.built[state.visible]}

    def keys(self) -> list[ResidueKey]:
        """Keys of the visible residues, in model order."""
        state = self.state
        return state.keys(state.visible)

    def accepted_keys(self) -> list[ResidueKey]:
        state = self.state
        return state.keys(state.accepted)

    def save_model(self, path: str | os.PathLike) -> Path:
        """Write the visible model to ``path`` (mmCIF or PDB by its suffix, atomically); an
        mmCIF names its accepted residues (`ACCEPTED_ITEM`). Returns the path."""
        with self._lock:
            state = self._state
            accepted = state.keys(state.accepted)
            items = {ACCEPTED_ITEM: accepted_item(accepted)} if accepted and model_format(path) == "cif" else None
            return write_model(state.model.select(state.visible), path, cif_items=items)

    @property
    def sequences(self) -> list[Sequence]:
        """The sequences of the last build (or given to `set_model`)."""
        with self._lock:
            return list(self._sequences)

    @property
    def history(self) -> list[str]:
        """Descriptions of the changes `undo` can revert, oldest first."""
        with self._lock:
            return [info["action"] for info, _ in self._history]

    @property
    def job(self) -> dict:
        """Record of the last job: id, kind, state (running, finished, failed, cancelled,
        interrupted), rounds saved, message, times."""
        with self._lock:
            return dict(self._job)

    @property
    def map_info(self) -> dict:
        """Identity of the map of the last job (or of the map a model opened from a file was
        attached to): content key, grid shape, voxel size, origin; and the resolution the map
        is read at (``resolution``, Å: as the last job that finished read it, or as a build was
        given it when it started, or as the attached model's build was given it) and whether
        that was estimated (``resolution_estimated``), which region jobs take when not told
        one."""
        with self._lock:
            return dict(self._map_info)

    @property
    def busy(self) -> bool:
        """True while a job runs on the session (in this program or another)."""
        with self._lock:
            return self._busy is not None or _job_lock_held(self.path)

    # ------------------------------------------------------------------ user edits

    def accept(self, keys: Iterable) -> int:
        """Mark the residues named by ``keys`` accepted; returns how many were newly accepted."""
        with self._lock:
            self._check_idle()
            rows = self._state.rows(keys)
            added = int((rows & ~self._state.accepted).sum())
            if added:
                self._change(f"accept {added}", self._state.replace(accepted=self._state.accepted | rows))
            return added

    def unaccept(self, keys: Iterable) -> int:
        """Clear the accepted flag of ``keys``; returns how many were accepted before."""
        with self._lock:
            self._check_idle()
            rows = self._state.rows(keys)
            removed = int((rows & self._state.accepted).sum())
            if removed:
                self._change(f"unaccept {removed}",
                             self._state.replace(accepted=self._state.accepted & ~rows))
            return removed

    def prune(self, keys: Iterable | None = None, *, below: float | None = None) -> int:
        """Prune (hide) residues: those named by ``keys``, or every residue whose confidence
        (0-100) is below ``below``. Accepted residues are never pruned (naming one in ``keys`` is
        an error; ``below`` passes over them). Returns the number pruned; `undo` reverts it."""
        with self._lock:
            self._check_idle()
            state = self._state
            if (keys is None) == (below is None):
                raise InputError("prune needs either residue keys or a confidence threshold (below=)")
            if keys is not None:
                rows = state.rows(keys)
                if np.any(rows & state.accepted):
                    named = state.keys(rows & state.accepted)
                    raise InputError(f"cannot prune accepted residues ({named[0][0]}/{named[0][1]}"
                                     f"{' and others' if len(named) > 1 else ''}); unaccept them first")
            else:
                if not 0 <= below <= 100:
                    raise InputError(f"the confidence threshold is 0-100, got {below}")
                rows = state.visible & ~state.accepted & (state.model.confidence < below)
            count = int(rows.sum())
            if count:
                description = f"prune {count}" + (f" below {below:g}" if below is not None else "")
                self._change(description, state.replace(pruned=state.pruned | rows))
            return count

    def undo(self) -> str:
        """Revert the last change (an accept, prune, model replacement or job); returns its
        description. Raises `InputError` when there is nothing to undo."""
        with self._lock:
            self._check_idle()
            if not self._history:
                raise InputError("nothing to undo")
            with self._rollback():
                info, previous = self._history.pop()
                self._state = previous
                self._save()
            return info["action"]

    def set_model(self, model: BuiltModel, *, sequences: list[Sequence] | None = None,
                  built: bool = False, accepted: Iterable[ResidueKey] = ()) -> None:
        """Replace the model (e.g. with one opened from a file: `read_accepted` names the
        residues a saved one had accepted); flags start cleared except ``built``, and
        ``accepted`` for those residues. Not allowed while residues are accepted (an accepted
        model is never overwritten). ``sequences`` become the session's sequences and name the
        chains (`infer_chain_sequences`)."""
        with self._lock:
            self._check_idle()
            if self._state.accepted.any():
                raise InputError("the session has accepted residues: unaccept them before replacing the model")
            with self._rollback():
                if sequences is not None:
                    self._sequences = list(sequences)
                num = model.num_residues
                state = SessionState(model, np.zeros(num, bool), np.full(num, built), np.zeros(num, bool),
                                     infer_chain_sequences(model, self._sequences))
                accepted = list(accepted)
                if accepted:
                    state = state.replace(accepted=state.rows(accepted))
                self._change("replace model", state)

    def _set_map_info(self, map_info: dict) -> None:
        """Record the map the model belongs to (`map_info`) outside a job: `cryobuild.engine`'s
        ``attach_map``, for a model opened from a file."""
        with self._lock:
            self._check_idle()
            with self._rollback():
                self._map_info = dict(map_info)
                self._save()

    def swap(self, candidate: SessionState, *, base: SessionState, description: str,
             sequences: list[Sequence] | None = None) -> None:
        """Replace the state with ``candidate``, a model a job made from ``base`` but did not
        apply because it was not better than the model then (`cryobuild.engine`: the job's
        ``verdict``); ``sequences`` become the session's. `undo` reverts it.

        Raises `InputError` when the session has changed since the job ended (its state is no
        longer ``base``): the candidate would undo those changes.
        """
        with self._lock:
            self._check_idle()
            if self._state is not base:
                raise InputError(f"{self.path.name}: the model has changed since that job ended "
                                 "(accept, prune, undo or another job): its model can no longer be "
                                 "swapped in; build again")
            with self._rollback():
                if sequences is not None:
                    self._sequences = list(sequences)
                self._change(description, candidate)

    # ------------------------------------------------------------------ engine side

    def _check_idle(self) -> None:
        if self._busy is not None:
            raise JobConflict(f"{self.path}: {self._busy} is running on this session; cancel it first")
        if _job_lock_held(self.path):
            raise JobConflict(f"{self.path}: another program is running a job on this session")

    @contextlib.contextmanager
    def _rollback(self):
        """Undo the block's changes to this object when it raises (e.g. a refused save)."""
        saved = (self._state, list(self._history), list(self._sequences), dict(self._map_info),
                 dict(self._job))
        try:
            yield
        except BaseException:
            self._state, self._history, self._sequences, self._map_info, self._job = saved
            raise

    def _begin_job(self, job_id: str, kind: str, sequences: list[Sequence] | None, map_info: dict) -> None:
        """Claim the session for a job (raises `JobConflict`): take `JOB_LOCK`, save an undo
        point and the job's record."""
        with self._lock:
            self._check_idle()
            fd = os.open(self.path / JOB_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                with self._rollback():
                    self._push_history(f"{kind} {job_id}")
                    if sequences is not None:
                        self._sequences = list(sequences)
                    self._map_info = dict(map_info)
                    self._job = {"id": job_id, "kind": kind, "state": "running", "rounds_saved": 0,
                                 "started": time.time(), "updated": time.time(), "message": ""}
                    self._save()
            except BlockingIOError:
                os.close(fd)
                raise JobConflict(f"{self.path}: another program is running a job on this session") from None
            except BaseException:
                os.close(fd)
                raise
            self._busy, self._job_lock = job_id, fd

    def _job_update(self, state: SessionState | None = None, *, sequences: list[Sequence] | None = None,
                    map_info: dict | None = None, **job_fields) -> None:
        """Save a job's intermediate or final model (and the sequences it was built from), what
        it learnt of the map (``map_info`` entries, e.g. the resolution it read it at) and/or its
        record (the job owns the session)."""
        with self._lock, self._rollback():
            if state is not None:
                self._state = state
            if sequences is not None:
                self._sequences = list(sequences)
            if map_info:
                self._map_info.update(map_info)
            self._job.update(job_fields, updated=time.time())
            self._save()

    def _end_job(self, job_id: str, outcome: str, message: str = "") -> None:
        """Record the job's outcome and let go of the session (even when the save fails). A job
        that left the model as it was leaves no undo point."""
        with self._lock:
            if self._busy != job_id:
                return
            try:
                with self._rollback():
                    point = f"{self._job.get('kind', '')} {job_id}"
                    if self._history and self._history[-1][0]["action"] == point and \
                            self._history[-1][1] is self._state:
                        self._history.pop()
                    self._job.update(state=outcome, message=message, updated=time.time())
                    self._save()
            finally:
                self._busy = None
                os.close(self._job_lock)
                self._job_lock = None

    def _change(self, action: str, state: SessionState) -> None:
        with self._rollback():
            self._push_history(action)
            self._state = state
            self._save()

    def _push_history(self, action: str) -> None:
        self._history.append(({"action": action, "time": time.time()}, self._state))
        del self._history[:-HISTORY_LIMIT]

    def _save(self) -> None:
        """`_write`, unless another program saved the folder since this object last read or
        wrote it (raises `JobConflict`, nothing written)."""
        with _flock(self.path / FOLDER_LOCK):
            on_disk = None
            if (self.path / STATE_FILE).exists():
                on_disk = _read_arrays(self.path, meta_only=True)[1].get("stamp")
            if on_disk != self._stamp:
                raise JobConflict(f"{self.path}: another program has saved this session since it "
                                  "was read here; reload it (Session.reload) and repeat the change")
            self._write()

    def _write(self) -> None:
        """Write ``state.npz`` (with a new stamp) then ``model.cif``, each atomically; the
        caller holds `FOLDER_LOCK`."""
        stamp = uuid.uuid4().hex
        arrays = _state_arrays(self._state, "current")
        meta = {
            "version": SESSION_VERSION,
            "stamp": stamp,
            "current": _state_meta(self._state),
            "sequences": [[s.name, s.residues, s.description] for s in self._sequences],
            "map": self._map_info,
            "job": self._job,
            "history": [],
        }
        for index, (info, state) in enumerate(self._history):
            arrays.update(_state_arrays(state, f"h{index}"))
            meta["history"].append({"info": info, "state": _state_meta(state)})
        arrays["meta"] = np.array(json.dumps(meta))
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path / STATE_FILE) as tmp:
            tmp.write_bytes(buffer.getvalue())
        self._stamp = stamp
        self.save_model(self.path / MODEL_FILE)


def _read_arrays(path: Path, *, meta_only: bool = False) -> tuple[dict, dict]:
    """The arrays (none with ``meta_only``) and the ``meta`` record of the state saved in
    folder ``path``. Raises `InputError` for an unreadable state."""
    state_path = path / STATE_FILE
    try:
        with np.load(state_path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in (["meta"] if meta_only else data.files)}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{state_path}: not a readable session state ({err})") from None
    return arrays, meta


def _read(path: Path) -> tuple[SessionState, list[Sequence], dict, list[tuple[dict, SessionState]]]:
    """State, sequences, meta and history saved in folder ``path`` (the caller holds
    `FOLDER_LOCK`). Raises `InputError` for an unreadable or foreign-format state."""
    state_path = path / STATE_FILE
    arrays, meta = _read_arrays(path)
    if meta.get("version") != SESSION_VERSION:
        raise InputError(
            f"{state_path}: session format {meta.get('version')!r}, this cryobuild reads "
            f"{SESSION_VERSION}"
        )
    state = _state_from_arrays(arrays, "current", meta["current"])
    history = [
        (entry["info"], _state_from_arrays(arrays, f"h{index}", entry["state"]))
        for index, entry in enumerate(meta.get("history", []))
    ]
    sequences = [Sequence(*record) for record in meta.get("sequences", [])]
    return state, sequences, meta, history


def _state_arrays(state: SessionState, prefix: str) -> dict[str, np.ndarray]:
    arrays = {f"{prefix}.{name}": getattr(state.model, name) for name in _MODEL_ARRAYS}
    arrays.update({f"{prefix}.{name}": getattr(state, name) for name in FLAGS})
    return arrays


def _state_meta(state: SessionState) -> dict:
    return {"entity_sequences": state.model.entity_sequences, "chain_sequences": state.chain_sequences,
            "partial": state.partial}


def _state_from_arrays(arrays: dict, prefix: str, meta: dict) -> SessionState:
    fields = {name: arrays[f"{prefix}.{name}"] for name in _MODEL_ARRAYS}
    if fields["chain_id"].size == 0:
        fields["chain_id"] = np.zeros(0, dtype=str)
    model = BuiltModel(**fields, entity_sequences=meta.get("entity_sequences", {}))
    flags = [arrays[f"{prefix}.{name}"] for name in FLAGS]
    return SessionState(model, *flags, chain_sequences=meta.get("chain_sequences", {}),
                        partial=bool(meta.get("partial", False)))
