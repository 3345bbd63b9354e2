"""The output folder of a build (``-o``): one build at a time, and one build's outputs at a time.

* **Locked.** A build holds an exclusive ``flock`` of ``OUT/.cryobuild.lock`` while it runs; the
  file names the build (id, pid, host, start time), so a second build into the folder is
  refused with a message naming the first. The system releases a lock when its process ends,
  however it ends, so the lock file of a killed build is taken over by the next one.
* **Staged.** Outputs are written into ``OUT/in_progress/`` -- each round's model as the round
  finishes (``in_progress/rounds/round_N.cif``, to watch in Coot or ChimeraX) -- and moved into
  ``OUT`` once all are written: the earlier build's outputs (`BUILD_OUTPUTS`, stale rounds
  included) are moved out first and the new ``model.cif`` is moved in last, so
  ``OUT/model.cif`` is there only when the build that wrote every other output finished. A
  failed or killed build leaves the earlier outputs as they were, and its ``in_progress/`` until
  the next build into the folder.
* **Stamped.** Every output carries the build's id (`new_build_id`;
  `cryobuild.build_outputs` says how).
* **Never lost.** `BuildFolder.claim` checks the folder before the build starts; if writing
  still fails at the end, `BuildFolder.save` writes the outputs into a new temporary folder
  and raises `cryobuild.errors.OutputError` saying where.
* **Edits kept.** A build records what it wrote (``.cryobuild_outputs.json``: each file's
  SHA-256). An earlier model (`EDITABLE_OUTPUTS`) that no longer matches that record -- changed
  in Coot or ISOLDE and saved in place, or put there by hand -- is not replaced but kept beside
  the new outputs as ``model.changed-<its modification time>.cif`` (`BuildFolder.kept`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import output_folder
from .errors import InputError, OutputError

__all__ = ["BUILD_LOG", "BUILD_OUTPUTS", "EDITABLE_OUTPUTS", "LOCK_FILE", "RECORD_FILE", "ROUNDS",
           "STAGING", "BuildFolder", "as_written", "new_build_id", "read_log"]

#: The lock file of a folder a build writes into.
LOCK_FILE = ".cryobuild.lock"
#: The staging folder inside the output folder, and the file in it that marks it as cryobuild's.
STAGING = "in_progress"
_STAGING_MARK = ".cryobuild_build"
#: Where the earlier build's outputs go (inside the staging folder) while the new ones move in.
_REPLACED = ".replaced"
#: The record of what a build wrote: ``{"build_id": ..., "sha256": {name: hex digest}}`` of
#: each file it moved into the folder.
RECORD_FILE = ".cryobuild_outputs.json"
#: The JSON file in which a build verb records its inputs, options and figures (``build``),
#: and ``assign`` and ``rebuild`` what they changed.
BUILD_LOG = "build.log"
#: The folder of each round's model (``round_N.cif``, `cryobuild.build_outputs.write_round`).
ROUNDS = "rounds"
#: What the build verbs write into their folder (`cryobuild.build_outputs.write_build`,
#: ``build.log``, build_no_seq's ``hmm_profiles/``, the record), name -> True for a folder. A
#: new build replaces an earlier build's as a whole, whether it writes them itself or not, but
#: for the edited models below.
BUILD_OUTPUTS = {
    "model.cif": False, "model_raw.cif": False, ROUNDS: True, "chains.csv": False,
    "aa_probabilities.csv": False, "unassigned_placements.csv": False, "ca_points.cif": False,
    BUILD_LOG: False, "hmm_profiles": True, RECORD_FILE: False,
}
#: The outputs a user finishes in place (module docstring, "Edits kept").
EDITABLE_OUTPUTS = ("model.cif", "model_raw.cif")
_FINAL_MODEL = "model.cif"


def new_build_id() -> str:
    """A build's id: its start time and 6 random hex digits, e.g. ``20261201-101500-a1b2c3``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(path: Path) -> str | None:
    """`_sha256` of an earlier output, or None when it cannot be read (then it counts as
    changed, and is kept rather than replaced unread)."""
    try:
        return _sha256(path)
    except OSError:
        return None


def _recorded(folder: Path) -> dict[str, str]:
    """Name -> SHA-256 of the outputs the last build wrote into ``folder`` (`RECORD_FILE`); empty
    when there is no readable record (no build wrote there, or a cryobuild before the record)."""
    try:
        digests = json.loads((folder / RECORD_FILE).read_text())["sha256"]
        return {str(name): str(digest) for name, digest in digests.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def as_written(folder: str | os.PathLike, name: str) -> bool:
    """True when output ``name`` of ``folder`` is as the last build wrote it (its SHA-256 is
    the record's); False when it changed since, cannot be read, or no record names it."""
    folder = Path(folder)
    recorded = _recorded(folder).get(name)
    return recorded is not None and _digest(folder / name) == recorded


def read_log(folder: str | os.PathLike) -> dict:
    """The ``build.log`` of ``folder``: the inputs, options and figures its build recorded.
    Raises FileNotFoundError when the folder has none, and `InputError` when it cannot be read
    or holds no JSON object."""
    path = Path(folder) / BUILD_LOG
    try:
        log = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read ({err})") from None
    if not isinstance(log, dict):
        raise InputError(f"{path}: cannot be read (not a JSON object)")
    return log


def _changed_name(path: Path) -> Path:
    """A free name beside ``path`` for a changed output: ``model.cif`` modified at 12:30:05 on
    6 December 2026 -> ``model.changed-20261206-123005.cif`` (``-2``, ``-3``... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    stem, suffix = path.name.split(".", 1) if "." in path.name else (path.name, "")
    suffix = "." + suffix if suffix else ""
    candidate, count = path.with_name(f"{stem}.changed-{stamp}{suffix}"), 1
    while os.path.lexists(candidate):
        count += 1
        candidate = path.with_name(f"{stem}.changed-{stamp}-{count}{suffix}")
    return candidate


def _describe(err: OSError) -> str:
    """``"No space left on device: /out/model.cif"`` for an `OSError`."""
    return f"{err.strerror}: {err.filename}" if err.strerror and err.filename else str(err)


def _take_lock(path: Path, holder: dict) -> int:
    """An open descriptor of ``path`` with its ``flock`` held and ``holder`` written in it.

    Raises `InputError` naming the build that holds it.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"{path.parent}: {_holder_text(path)} is writing into this folder; "
                             "wait for it to end, or choose another output folder") from None
        # The build that held it unlinks the file when it ends: a lock of an unlinked file
        # locks nothing, so take the file that is there now.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder) + "\n").encode())
    return fd


def _holder_text(path: Path) -> str:
    """``"build <id> (pid N on host, started T)"`` from a lock file; "another build" when it
    cannot be read (its holder is writing it)."""
    try:
        holder = json.loads(path.read_text())
        return (f"build {holder['build_id']} (pid {holder['pid']} on {holder['host']}, started "
                f"{holder['started']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another build"


def _check_outputs(path: Path) -> None:
    """Refuse a folder whose earlier outputs cannot be replaced (an output's name taken by the
    other kind of entry, a folder output without write permission, a staging folder that is
    not cryobuild's)."""
    for name, is_folder in {**BUILD_OUTPUTS, STAGING: True}.items():
        entry = path / name
        if not entry.exists():
            continue
        if entry.is_dir() != is_folder:
            kinds = ("file", "folder") if is_folder else ("folder", "file")
            raise InputError(f"{entry}: is a {kinds[0]} where the build writes a {kinds[1]}; "
                             "move it away")
        if is_folder and not os.access(entry, os.W_OK | os.X_OK):
            raise InputError(f"{entry}: cannot replace the earlier build's {name} (no write "
                             "permission)")
    staging = path / STAGING
    if staging.exists() and not (staging / _STAGING_MARK).exists():
        raise InputError(f"{staging}: not a folder of cryobuild's (it has no {_STAGING_MARK}); "
                         "move it away")


@dataclasses.dataclass
class BuildFolder:
    """An output folder claimed by one build (module docstring); a context manager that lets
    go of it (`release`).

    Attributes
    ----------
    path : Path
        The output folder.
    build_id : str
        The build's id.
    staging : Path
        Where the build writes its outputs until `save` moves them into ``path``.
    kept : list of (Path, Path)
        After `save`: ``(output, kept as)`` for each earlier model that had changed since the
        build that wrote it and was kept under a new name (module docstring, "Edits kept").
    """

    path: Path
    build_id: str
    staging: Path
    _lock: int
    _created: bool
    _saved: bool = False
    kept: list = dataclasses.field(default_factory=list)

    @classmethod
    def claim(cls, path: str | os.PathLike) -> "BuildFolder":
        """Claim ``path`` for a new build: create it if needed, lock it, check that the earlier
        outputs can be replaced, and make an empty staging folder.

        Raises
        ------
        InputError
            ``path`` cannot be written into, another build holds it, or an earlier output is
            in the way (`_check_outputs`).
        """
        path = Path(path)
        created = not path.exists()
        output_folder(path)
        build_id = new_build_id()
        holder = {"build_id": build_id, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        lock = _take_lock(path / LOCK_FILE, holder)
        folder = cls(path, build_id, path / STAGING, lock, created)
        try:
            _check_outputs(path)
            if folder.staging.exists():  # a failed or killed build's
                shutil.rmtree(folder.staging)
            folder.staging.mkdir()
            (folder.staging / _STAGING_MARK).write_text(build_id + "\n")
        except BaseException:
            folder.release()
            raise
        return folder

    def save(self, write: Callable[[Path], object]) -> Path:
        """Write the outputs with ``write(folder)`` into the staging folder and move them into
        place (module docstring); returns `path`.

        Raises
        ------
        OutputError
            Writing or moving failed (`OSError`): the outputs were written into a new temporary
            folder instead, which the message names (or, if that failed too, are lost).
        """
        try:
            write(self.staging)
            self._write_record()
            self._move_in()
            self._saved = True
            return self.path
        except OSError as err:
            failure = _describe(err)
        fallback = Path(tempfile.mkdtemp(prefix=f"cryobuild-{self.build_id}-"))
        try:
            write(fallback)
        except OSError as err:
            raise OutputError(f"{self.path}: cannot write the outputs ({failure}), nor into "
                              f"{fallback} ({_describe(err)}): they are lost") from None
        raise OutputError(f"{self.path}: cannot write the outputs ({failure}); they are in "
                          f"{fallback} instead")

    def _write_record(self) -> None:
        """Record the SHA-256 of each staged file (`RECORD_FILE`, staged with them)."""
        digests = {entry.name: _sha256(entry) for entry in sorted(self.staging.iterdir())
                   if entry.is_file() and entry.name != _STAGING_MARK}
        record = {"build_id": self.build_id, "sha256": digests}
        (self.staging / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")

    def _move_in(self) -> None:
        """Replace the earlier outputs with the staged ones, ``model.cif`` out first and in
        last; an earlier model that had changed since its build is kept under a new name."""
        replaced = self.staging / _REPLACED
        replaced.mkdir()
        recorded = _recorded(self.path)
        staged = sorted({entry.name for entry in self.staging.iterdir()} - {_STAGING_MARK, _REPLACED},
                        key=lambda name: (name == _FINAL_MODEL, name))
        earlier = sorted(set(BUILD_OUTPUTS) | set(staged), key=lambda name: (name != _FINAL_MODEL, name))
        for name in earlier:
            entry = self.path / name
            if not os.path.lexists(entry):
                continue
            if name in EDITABLE_OUTPUTS and entry.is_file() and _digest(entry) != recorded.get(name):
                kept = _changed_name(entry)
                os.rename(entry, kept)
                self.kept.append((entry, kept))
            else:
                os.rename(entry, replaced / name)
        for name in staged:
            os.rename(self.staging / name, self.path / name)

    def kept_notices(self) -> list[str]:
        """One line per earlier model kept (`kept`), for the user."""
        return [f"{output} had changed since the build that wrote it: kept as {kept.name}"
                for output, kept in self.kept]

    def release(self) -> None:
        """Let go of the folder: remove the staging folder when it is saved or holds nothing,
        unlock, and remove the folder itself if this build made it and left it empty."""
        # OSError: the folder was changed under the build; what is left, the next build clears.
        try:
            with contextlib.suppress(OSError):
                if self._saved or {entry.name for entry in self.staging.iterdir()} == {_STAGING_MARK}:
                    shutil.rmtree(self.staging)
            with contextlib.suppress(OSError):
                lock = self.path / LOCK_FILE
                if os.path.samestat(os.fstat(self._lock), os.stat(lock)):
                    lock.unlink()
            with contextlib.suppress(OSError):
                if self._created and not any(self.path.iterdir()):
                    self.path.rmdir()
        finally:
            os.close(self._lock)  # releases the lock

    def __enter__(self) -> "BuildFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
