"""The engine: background build jobs, sessions, accepted residues and region rebuilds.

``Engine(device)`` holds the trained networks (loaded once, lazily, by the first job) and the
open sessions, and starts jobs:

* `Engine.start_build` -- a full build (`cryobuild.pipeline.build`) into a map; with a session,
  the session's accepted residues stay as they are (fixed context for the graph network and
  relaxation, their sequence positions taken for threading) and everything else is replaced.
* `Engine.start_rebuild` -- rebuild a region of a session's model (residue keys, or a centre
  and radius): detection only in a mask around the region (on the map cropped around it), the
  graph network on the new nodes with the kept residues nearby as fixed context (their outputs
  are discarded, so they never move), threading with every kept residue's sequence position
  taken, and the result spliced back in place of the region's residues.
* `Engine.start_assign` -- give an unassigned chain of a session's model the place in a
  sequence the user chose among a build's placements (`cryobuild.assign`), on the map cropped
  around it, and splice it in at once: the user's choice is not judged.

All return a `Job` at once and stream the same events (`cryobuild.engine.jobs`). A job never
replaces finished work with worse: when a build's session holds a finished model (residues not
accepted, not a stopped job's round), and for every region rebuild, the session's model stays
as it is while the job runs (``job.keeps_model``) and the final model replaces the old residues
only if it is better (`cryobuild.engine.verdict.judge`); the job's ``verdict`` says which was
kept, and holds the new model as a candidate for `Session.swap` when the old one stayed. A
build into an empty session (or one holding only a stopped job's round, ``partial``) splices
each round in and saves it as it arrives, so a cancelled, failed or killed job leaves the last
complete round; the final model replaces it at the end. A region rebuild threads its new
residues within the sequence window of the residues flanking the region
(`cryobuild.engine.verdict.window_records`). The final model is relaxed after its chains get
the session's names (`plan_chain_names`), so a new stretch that continues a kept chain is
relaxed peptide-bonded to it (`cryobuild.pipeline.relax_stage`).

Accepted residues belong to the map they were built in: a build into a session whose model was
built into another map is refused (start a new session). Without sequences a build runs as
``cryobuild build_no_seq`` does: every chain unassigned, numbered from 1.

One job at a time per map and per session: a map is known by a hash of its content (grid,
voxel size, origin), so a second copy of the same map read again counts as the same map --
two builds into one density would compete for the same residues. Starting a second job on a
busy map or session raises `JobConflict`; cancel the first and wait for its ``finished`` event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..map_fit import map_fit
from ..maps import DensityMap
from ..pipeline import (INVERTED_ADVICE, INVERTED_SKEWNESS, BuildOptions, BuildResult, Networks,
                        build, join_models, map_warnings, relax_stage, round_label)
from ..sequences import Sequence
from ..session import JobConflict, Session, SessionState
from ..thread.placement import ANCHOR_EVALUE
from .jobs import Job, JobEvent
from .verdict import Verdict, judge, window_records
from .splice import (
    REGION_CONTEXT,
    REGION_MASK_RADIUS,
    context_near,
    plan_chain_names,
    rename_model,
    rename_placements,
    rename_reports,
    rename_round,
    select_region,
    splice,
    thread_records,
)

__all__ = ["CONFIDENT_THREAD_EVALUE", "MIN_THREADED_FRACTION", "STAGE_EVENT_INTERVAL",
           "UNCERTAIN_DIRECTION_RESOLUTION", "USUALLY_UNTHREADED_RESOLUTION", "Engine"]

log = logging.getLogger("cryobuild.engine")

#: Seconds between two ``stage`` events of the same stage (progress is throttled, not lost:
#: a stage's start and end always get an event).
STAGE_EVENT_INTERVAL = 0.1
#: A build warns when fewer than this fraction of the residues it traced (its last round) could
#: be threaded to the sequences: the sequences may not belong to the map.
MIN_THREADED_FRACTION = 0.05
#: A build also warns when no chain threaded with at most this E-value (placement's anchor
#: cut): chance threads onto a sequence that does not belong to the map reach E 0.005-0.03
#: (il2's map and an unrelated 90-residue sequence: 22 residues in two chains at E 0.005 and
#: 0.018, 17% of those traced, so the fraction alone did not warn), while every dev map with
#: its own sequence has chains far below it.
CONFIDENT_THREAD_EVALUE = ANCHOR_EVALUE
#: Å: at this resolution or worse a build warns that the direction of its unthreaded chains is a
#: guess. The graph network's residue directions (C - N along the deposited chain) were right
#: for 0.95-1.00 of the nodes on the real maps of 1.75-3.2 Å (0.64 on the thresholded spike),
#: 0.98 / 0.67 / 0.69 at 3.6 / 3.8 / 4.0 Å, and 0.46-0.62 at 4.3-5.0 Å (``python -m cryobuild.bench.trace``, bundled weights, last
#: round, the third stop of 2026-12-04), where a threaded chain takes its direction from the sequence but an
#: unthreaded one from `cryobuild.chains`' coin-toss links.
UNCERTAIN_DIRECTION_RESOLUTION = 4.2
#: Å: at this resolution or worse a build that threads nothing says that this is what such maps
#: give, rather than asking whether the sequences belong to the map. Of the real maps with
#: models here, those of 4.3 Å or worse thread at most a third of their sequence (T20S α, 4.8 Å)
#: and nine of eleven nothing, with the sequences that belong to them (``python -m
#: cryobuild.bench.real --seeds 0 1 2``, README's main table).
USUALLY_UNTHREADED_RESOLUTION = 4.3
#: Share of a job's overall progress (start, end) of each phase: loading, detection, the rounds
#: (shared equally, half graph network, half threading), the last graph-network pass over the
#: threaded chains, relaxation and saving. The final event alone is at 1.
_LOAD_SPAN = (0.0, 0.02)
_DETECT_SPAN = (0.02, 0.2)
_ROUNDS_SPAN = (0.2, 0.8)
_POLISH_SPAN = (0.8, 0.86)
_RELAX_SPAN = (0.86, 0.97)
_SAVE_SPAN = (0.97, 0.99)
_job_numbers = itertools.count(1)


def _within(span: tuple[float, float], fraction: float) -> float:
    return span[0] + (span[1] - span[0]) * min(max(fraction, 0.0), 1.0)


class _Progress:
    """The pipeline's ``progress(stage, fraction, message)`` -> throttled ``stage`` events with
    the job's overall fraction. Also the job's finest cancel check: the pipeline reports
    progress between windows, crops, chains and relaxation steps."""

    def __init__(self, job: Job, rounds: int):
        self.job = job
        self.rounds = rounds
        self.rounds_done = 0
        self.last_stage = None
        self.last_time = 0.0

    def overall(self, stage: str, fraction: float) -> float:
        if stage == "load":
            return _within(_LOAD_SPAN, fraction)
        if stage == "detect":
            return _within(_DETECT_SPAN, fraction)
        if stage in ("gnn", "thread"):
            half = 0.5 * fraction if stage == "gnn" else 0.5 + 0.5 * fraction
            if self.rounds_done >= self.rounds:  # the last pass, after every round
                return _within(_POLISH_SPAN, half)
            per_round = (_ROUNDS_SPAN[1] - _ROUNDS_SPAN[0]) / self.rounds
            return _ROUNDS_SPAN[0] + per_round * (self.rounds_done + half)
        if stage == "relax":
            return _within(_RELAX_SPAN, fraction)
        return _within(_SAVE_SPAN, fraction)

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.job.cancel_token.raise_if_cancelled()
        now = time.monotonic()
        boundary = stage != self.last_stage or fraction >= 1.0 or fraction <= 0.0
        if boundary or now - self.last_time >= STAGE_EVENT_INTERVAL:
            self.last_stage, self.last_time = stage, now
            self.job._emit("stage", stage=stage, fraction=self.overall(stage, fraction), message=message)


def _warn(job: Job, message: str) -> None:
    """A ``warning`` event for ``job``, also logged."""
    log.warning("%s: %s", job.id, message)
    job._emit("warning", message=message)


def _map_key(density: DensityMap) -> str:
    """A content hash of a map (grid, voxel size, origin)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(density.grid).view(np.uint8).data)
    digest.update(np.asarray(density.grid.shape, np.int64).tobytes())
    digest.update(np.asarray(density.voxel_size, np.float64).tobytes())
    digest.update(np.asarray(density.origin, np.float64).tobytes())
    return digest.hexdigest()


#: The keys of a session's ``map_info`` that say how the map is read (`Session.map_info`): the
#: resolution in Å and whether it was estimated from the map's spectrum rather than given.
_READING_KEYS = ("resolution", "resolution_estimated")


def _map_info(density: DensityMap, key: str, stored: dict, resolution: float | None = None) -> dict:
    """A session's ``map_info`` for ``density``: the map's identity, and its reading: the
    stated ``resolution`` (Å) if given, else that of ``stored`` (the session's ``map_info``
    until now) when the map is the same one."""
    info = {"key": key, "shape_xyz": density.shape_xyz.tolist(),
            "voxel_size": density.voxel_size.tolist(), "origin": density.origin.tolist()}
    if resolution is not None:
        info.update(_reading(resolution, False))
    elif stored.get("key") == key:
        info.update({name: stored[name] for name in _READING_KEYS if name in stored})
    return info


def _reading(resolution: float, estimated: bool) -> dict:
    """The ``map_info`` entries of a job that read the map at ``resolution`` Å."""
    return {"resolution": round(float(resolution), 3), "resolution_estimated": bool(estimated)}


def _check_sequences(sequences) -> list[Sequence]:
    """The sequences as a list (empty: build without a sequence, as build_no_seq)."""
    if isinstance(sequences, Sequence):
        sequences = [sequences]
    sequences = list(sequences) if sequences is not None else []
    for sequence in sequences:
        if not isinstance(sequence, Sequence):
            raise InputError(f"sequences must be Sequence objects (cryobuild.sequences), got {type(sequence).__name__}")
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        raise InputError("sequence names must be unique (they name the chains' sequences)")
    return sequences


def _region_reading(job: Job, density: DensityMap, session: Session, resolution: float | None
                    ) -> tuple[float, bool]:
    """The resolution (Å) a region's job reads ``density`` at, and whether it is an estimate:
    ``resolution`` if given; else the one the session records for this map (its ``map_info``,
    `_READING_KEYS`: as its last job read it, or as `Engine.attach_map` set it), so that new
    residues are read as the build read the old ones; else the resolution a build of all of
    ``density`` estimates (`pipeline.network_view`).
    Said to ``job``'s events unless given.

    Not the crop's own estimate: a crop's spectrum reads finer than the whole map's, 0.04-0.6 Å
    over 16-residue crops of six real maps (apoferritin 1.61-1.66 against 1.68 Å, Nav β1
    3.33-3.65 against 3.82, tubulin 4.42-4.78 against 5.12; a scratch check of the thirty-first
    stop), which changes what the networks see (and on Nav β1 the reading grid,
    `features.reading_grid`).
    """
    from ..extent import working_map
    from ..features import estimate_resolution

    if resolution is not None:
        return resolution, False
    stored = session.map_info  # the job's: a reading is carried over only for the same map
    if "resolution" in stored:
        resolution, estimated = float(stored["resolution"]), bool(stored.get("resolution_estimated"))
        how = "estimated" if estimated else "as set"
        job._emit("stage", stage="load", message=f"map resolution {resolution:.2g} Å ({how}), as "
                                                  "the session records it for this map")
        return resolution, estimated
    resolution = estimate_resolution(working_map(density))
    job._emit("stage", stage="load", message=f"map resolution {resolution:.2g} Å, estimated from "
                                              "the whole map, as a build of it estimates it")
    return resolution, True


def _check_options(options, density, mask) -> None:
    if not isinstance(options, BuildOptions):
        raise InputError(f"options must be a BuildOptions, got {type(options).__name__}")
    if not isinstance(density, DensityMap):
        raise InputError(f"the map must be a DensityMap, got {type(density).__name__}")
    if mask is not None and not isinstance(mask, DensityMap):
        raise InputError(f"the mask must be a DensityMap, got {type(mask).__name__}")


class Engine:
    """Runs build jobs in worker threads and keeps their sessions.

    Parameters
    ----------
    device : str
        Torch device for the networks (`cryobuild.device.resolve_device`: "auto" is CUDA when
        available, else CPU); checked when the first job loads the networks.
    networks : Networks, optional
        Already loaded networks (otherwise `Networks.load(device)` on first use).
    scheduler : str or distributed.Client, optional
        A Dask scheduler (``tcp://HOST:PORT``): inference (`cryobuild.pipeline.build`) runs on
        one of its workers, on the worker's ``device`` (`cryobuild.engine.remote.build_on_cluster`),
        while jobs, sessions and the final relaxation stay here; no networks are loaded here.

    Examples
    --------
    In a GUI, start a job and drain its events on the GUI's timer::

        engine = Engine()
        job = engine.start_build(density, sequences, BuildOptions(), session="my_session")
        ...
        for event in job.poll():      # every 100 ms on the GUI thread
            show(event)               # event.kind, event.fraction, event.payload ...
    """

    def __init__(self, device: str | None = "auto", *, networks: Networks | None = None,
                 scheduler=None):
        self.device = device
        self.scheduler = scheduler
        self._client = None
        self._networks = networks
        self._networks_lock = threading.Lock()
        self._lock = threading.Lock()
        self._busy_maps: dict[str, Job] = {}
        self._sessions: dict[Path, Session] = {}
        self._jobs: list[Job] = []
        self._map_keys: dict[int, tuple[weakref.ref, str]] = {}

    # ------------------------------------------------------------------ resources

    def networks(self) -> Networks:
        """The networks, loaded on first use (blocks while loading)."""
        with self._networks_lock:
            if self._networks is None:
                self._networks = Networks.load(self.device)
            return self._networks

    def cluster(self):
        """The `distributed.Client` of ``scheduler``, connected on first use (`InputError` when
        it cannot be reached or Dask is not installed); None without a scheduler."""
        if self.scheduler is None:
            return None
        with self._networks_lock:
            if self._client is None:
                from .remote import connect

                self._client = (connect(self.scheduler) if isinstance(self.scheduler, str)
                                else self.scheduler)
            return self._client

    def describe_cluster(self) -> str:
        """The scheduler's workers in words (their count, threads and memory), connecting first."""
        workers = self.cluster().scheduler_info().get("workers", {})
        if not workers:
            return f"{self.scheduler}: no workers yet"
        threads = sum(worker.get("nthreads", 0) for worker in workers.values())
        memory = sum(worker.get("memory_limit", 0) for worker in workers.values()) / 1e9
        return (f"{self.scheduler}: {len(workers)} worker{'s' * (len(workers) != 1)}, "
                f"{threads} threads, {memory:.0f} GB")

    def preload(self) -> Networks | None:
        """Import the pipeline's modules and load the networks now, in the calling thread
        (with a ``scheduler``: connect to it instead, and return None).

        Imports hold the GIL while they run, so the first job would otherwise stall the
        caller's thread for a few hundred ms while its worker imports; a GUI calls this once
        when its panel opens (as apbs_gui defers heavy imports to that moment)."""
        import scipy.ndimage  # noqa: F401 - imported to warm up
        import scipy.signal  # noqa: F401 - imported to warm up
        import scipy.sparse.csgraph  # noqa: F401 - imported to warm up
        import scipy.spatial  # noqa: F401 - imported to warm up
        import scipy.special  # noqa: F401 - imported to warm up
        import scipy.stats  # noqa: F401 - imported to warm up
        import torch.nn.functional  # noqa: F401 - imported to warm up

        from .. import chains, models, relax, thread, validation  # noqa: F401 - imported to warm up
        from ..detect import inference  # noqa: F401 - imported to warm up
        from ..gnn import refine  # noqa: F401 - imported to warm up

        if self.scheduler is not None:
            self.cluster()
            return None
        return self.networks()

    def open_session(self, path: str | Path, *, create: bool = True) -> Session:
        """The session in folder ``path``, restored from disk (or new, with ``create``); the
        same object while this engine has it open."""
        resolved = Path(path).resolve()
        with self._lock:
            session = self._sessions.get(resolved)
            if session is None:
                session = self._sessions[resolved] = Session.open(resolved, create=create)
            return session

    def _session(self, session) -> Session | None:
        if session is None or isinstance(session, Session):
            return session
        if isinstance(session, (str, Path)):
            return self.open_session(session)
        raise InputError(f"session must be a folder path or a Session, got {type(session).__name__}")

    def attach_map(self, session: str | Path | Session, density: DensityMap,
                   resolution: float | None = None) -> None:
        """Record that ``session``'s model (e.g. one opened from a file) belongs to ``density``,
        read at ``resolution`` Å (the one its build was given, say from the build's log; None:
        as an earlier job on this map read it, if one did, else region jobs estimate it), as a
        finished job on the map records it (`Session.map_info`). Raises `JobConflict` while a
        job runs on the session."""
        session = self._session(session)
        session._set_map_info(_map_info(density, self._key(density), session.map_info, resolution))

    def map_key(self, density: DensityMap) -> str:
        """The content key a session records for the map of its jobs (``map_info["key"]``)."""
        return self._key(density)

    def _key(self, density: DensityMap) -> str:
        """Content key of ``density``, cached per map object."""
        cached = self._map_keys.get(id(density))
        if cached is not None and cached[0]() is density:
            return cached[1]
        key = _map_key(density)
        self._map_keys[id(density)] = (weakref.ref(density), key)
        return key

    @property
    def jobs(self) -> list[Job]:
        """Jobs not yet finished."""
        with self._lock:
            return [job for job in self._jobs if not job.done]

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel every running job and wait for its thread to end."""
        for job in self.jobs:
            job.cancel()
        for job in self.jobs:
            job.wait(timeout)

    # ------------------------------------------------------------------ starting jobs

    def start_build(
        self,
        density: DensityMap,
        sequences: list[Sequence],
        options: BuildOptions = BuildOptions(),
        *,
        session: str | Path | Session | None = None,
        mask: DensityMap | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        threaded: bool = True,
    ) -> Job:
        """Start a full build of ``sequences`` into ``density``; returns the running `Job`.
        No sequences (an empty list) builds as ``build_no_seq`` does.

        With a ``session`` (folder or `Session`), its accepted residues stay and the rest of its
        model is replaced: round by round (every round saved) when it holds no finished model,
        otherwise only at the end and only by a better model (``job.keeps_model``,
        ``job.verdict``; module docstring). ``on_event(event)`` is called in the worker thread
        for each event. ``threaded=False`` runs the job in the calling thread and returns it
        finished (its events still queued).

        Raises
        ------
        InputError
            For a bad map, mask, sequences or options (at once, before any work), for a session
            whose model was built into another map, and for the structgen threader without
            sequences.
        JobConflict
            When a job is running on the same map (by content) or session.
        """
        _check_options(options, density, mask)
        sequences = _check_sequences(sequences)
        if not sequences and options.threader == "structgen":
            raise InputError("the structgen threader needs sequences")
        session = self._session(session)
        keeps_model = False
        if session is not None:
            state = session.state
            stored = session.map_info.get("key")
            if stored is not None and state.num_residues and stored != self._key(density):
                raise InputError(
                    f"{session.path.name}: its model ({int(state.visible.sum())} residues, "
                    f"{int(state.accepted.sum())} accepted) was built into another map, and accepted "
                    "residues belong to their map: build into a new session")
            keeps_model = bool(np.any(state.visible & ~state.accepted)) and not state.partial
        job = Job(f"job-{next(_job_numbers)}", "build", on_event)
        job.keeps_model = keeps_model

        def body(job: Job) -> BuildResult:
            return self._build(job, density, sequences, options, mask, session)

        return self._launch(job, density, session, sequences, body, threaded, options.resolution)

    def start_rebuild(
        self,
        session: str | Path | Session,
        density: DensityMap,
        *,
        keys: Iterable | None = None,
        centre=None,
        radius: float | None = None,
        sequences: list[Sequence] | None = None,
        options: BuildOptions = BuildOptions(),
        on_event: Callable[[JobEvent], None] | None = None,
        threaded: bool = True,
    ) -> Job:
        """Rebuild a region of ``session``'s model: the residues named by ``keys`` (``(chain,
        number)`` pairs), or those with an atom within ``radius`` Å of ``centre`` and the one or
        two of a chain between two of them (`splice.SPHERE_BRIDGE`; the whole sphere is
        searched, so empty density in it gets built too). Accepted residues in the
        region stay. ``sequences`` default to the session's. Streams the same events as
        `start_build`. The new residues are threaded within the sequence window of the residues
        flanking the region, and replace the region's in the session only if they are better
        (``job.verdict`` says which were kept; the session's model is untouched until then).
        Without ``options.resolution`` the map is read at the resolution the session records for
        it, else at the whole map's estimate (`_region_reading`).

        Raises `InputError` for an empty or unknown region, bad options or no sequences, and
        `JobConflict` as `start_build`.
        """
        _check_options(options, density, None)
        session = self._session(session)
        if session is None:
            raise InputError("a region rebuild needs a session")
        sequences = _check_sequences(session.sequences if sequences is None else sequences)
        if session.busy:
            raise JobConflict(f"{session.path}: a job is running on this session; cancel it first")
        state = session.state
        region = select_region(state, density, keys=keys, centre=centre, radius=radius)
        stored = session.map_info.get("key")
        other_map = stored is not None and stored != self._key(density)
        job = Job(f"job-{next(_job_numbers)}", "rebuild", on_event)
        job.keeps_model = True

        def body(job: Job) -> BuildResult:
            resolution, estimated = _region_reading(job, density, session, options.resolution)
            return self._rebuild(job, region, state, sequences,
                                 dataclasses.replace(options, resolution=resolution), session,
                                 other_map, estimated)

        return self._launch(job, density, session, sequences, body, threaded)

    def start_assign(
        self,
        session: str | Path | Session,
        density: DensityMap,
        placement,
        *,
        resolution: float | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        threaded: bool = True,
    ) -> Job:
        """Assign an unassigned chain of ``session``'s model to ``placement`` (a
        `cryobuild.thread.hints.Placement` of the build that made the chain, renamed to the
        session's chains as the build's ``final`` event gives them), rebuilt into ``density``
        read at ``resolution`` (Å; None: as the session records it for this map, else estimated
        from the whole map: `_region_reading`)
        with the session's sequences.
        The chain's residues are replaced by the assigned ones, which join a chain of the same
        sequence whose numbers they leave free (`plan_chain_names`). The job's ``final`` event
        carries the `cryobuild.assign.Assignment` (chain named as in the session). The graph
        network runs here, also with a ``scheduler``.

        Raises `InputError` for a session without that unassigned chain or with accepted
        residues in it, and `JobConflict` as `start_build`.
        """
        from ..assign import MIN_ASSIGNED

        session = self._session(session)
        if session is None:
            raise InputError("assigning a chain needs a session")
        sequences = _check_sequences(session.sequences)
        if session.busy:
            raise JobConflict(f"{session.path}: a job is running on this session; cancel it first")
        state = session.state
        chain = placement.chain_id
        rows = state.model.chain_id == chain
        if not (rows & state.visible).any():
            raise InputError(f"the model has no chain {chain!r}")
        if chain in state.chain_sequences:
            raise InputError(f"chain {chain} is already threaded to {state.chain_sequences[chain]}")
        if (rows & state.accepted).any():
            raise InputError(f"chain {chain} has accepted residues: unaccept them to assign it")
        if (rows & state.visible).sum() < MIN_ASSIGNED:
            raise InputError(f"chain {chain} has fewer than {MIN_ASSIGNED} residues to assign")
        region = select_region(state, density, keys=state.keys(rows & state.visible))
        job = Job(f"job-{next(_job_numbers)}", "assign", on_event)
        job.keeps_model = True  # the session's sequences stay

        def body(job: Job):
            read_at, estimated = _region_reading(job, density, session, resolution)
            return self._assign(job, region, state, placement, sequences, read_at, estimated,
                                session)

        return self._launch(job, density, session, sequences, body, threaded)

    def _launch(self, job: Job, density, session, sequences, body, threaded: bool,
                resolution: float | None = None) -> Job:
        """Claim the map and the session for ``job`` and run ``body``; a build given its map's
        ``resolution`` (Å) has the session record it at once, so that a build stopped before
        its end leaves it for the rebuilds of its last round."""
        key = self._key(density)
        with self._lock:
            other = self._busy_maps.get(key)
            if other is not None:
                raise JobConflict(
                    f"{other.id} is already running on this map; cancel it (and wait for its "
                    "'finished' event) before starting another job on it"
                )
            if session is not None:
                # a job that keeps the model sets the session's sequences only with its model
                session._begin_job(job.id, job.kind, None if job.keeps_model else sequences,
                                   _map_info(density, key, session.map_info, resolution))
            self._busy_maps[key] = job
            self._jobs = [j for j in self._jobs if not j.done] + [job]
        job.session = session
        job._map_key = key

        def release(job: Job, outcome: str, message: str) -> None:
            try:
                if session is not None:
                    session._end_job(job.id, outcome, message)
            except Exception:
                log.error("%s: could not save the session's job record", job.id, exc_info=True)
            finally:
                with self._lock:
                    if self._busy_maps.get(key) is job:
                        del self._busy_maps[key]

        if threaded:
            thread = threading.Thread(target=job._run, args=(body, release),
                                      name=f"cryobuild-{job.id}", daemon=True)
            job._thread = thread
            thread.start()
        else:
            job._run(body, release)
        return job

    # ------------------------------------------------------------------ job bodies

    def _load(self, progress: _Progress) -> Networks | None:
        """The networks (None with a ``scheduler``: its workers hold them)."""
        if self.scheduler is not None:
            progress("load", 0.0, f"connecting to {self.scheduler}")
            self.cluster()
            progress("load", 1.0, f"inference on the workers of {self.scheduler}")
            return None
        if self._networks is None:
            progress("load", 0.0, "loading the networks")
        networks = self.networks()
        progress("load", 1.0, f"networks on {networks.device}")
        return networks

    def _run_pipeline(self, job: Job, density, sequences, options, *, mask, kept: SessionState | None,
                      context, session: Session | None, spare: bool, windows=None,
                      old=None, judged_in: DensityMap | None = None, what: str = "model",
                      estimated: bool | None = None) -> BuildResult:
        """`build` with the kept residues' positions taken (``windows``: a region rebuild's
        `verdict.Windows`, else one record per kept chain); with a session, each round spliced
        and saved, or -- when ``job.keeps_model`` -- the final model judged against ``old``
        (the residues it would replace) in ``judged_in`` and spliced in only if better. The
        session records the resolution the map was read at (``estimated``: whether it is an
        estimate, when ``options.resolution`` is one a region's job took; None: as the build
        says)."""
        progress = _Progress(job, options.rounds * options.restarts)
        networks = self._load(progress)
        for message in map_warnings(density):
            _warn(job, message)
        visible = kept.select(kept.visible) if kept is not None else None
        anchors = ()
        if windows is not None:
            threaded, taken, anchors = windows.records.records, windows.records.taken, windows.anchors
            options = dataclasses.replace(options, max_evalue=windows.max_evalue)
        elif sequences and visible is not None and visible.num_residues:
            chosen = thread_records(sequences, visible, spare=spare)
            threaded, taken = chosen.records, chosen.taken
        else:
            threaded, taken = sequences, None
        keeps_model = getattr(job, "keeps_model", False)
        rounds = []

        def named(model, reports):
            """``model``'s chains renamed to the session's, the renames and chain -> sequence."""
            renames, chain_sequences = plan_chain_names(kept.model, model, reports, kept.chain_sequences)
            return rename_model(model, renames), renames, chain_sequences

        def on_result(kind: str, payload) -> None:
            if kind == "warning":
                _warn(job, payload)
                return
            if kind == "points":
                job._emit("points", stage="detect", message=f"{len(payload)} Cα candidates", payload=payload)
                return
            renames = {}
            if session is not None:
                model, renames, chain_sequences = named(payload.model, payload.chains)
                if keeps_model:  # the session's model stays until the final one is judged
                    session._job_update(rounds_saved=payload.index)
                else:  # a stopped job leaves its last round, marked as not finished
                    partial = dataclasses.replace(splice(kept, model, chain_sequences), partial=True)
                    session._job_update(partial, rounds_saved=payload.index)
            result = rename_round(payload, renames)
            rounds.append(result)
            progress.rounds_done = payload.index
            job._emit("round", stage="thread", fraction=progress.overall("thread", 0.0),
                      message=f"{round_label(payload.index, options.rounds, options.restarts)}: "
                              f"{result.model.num_residues} residues in {len(result.chains)} chains",
                      payload=result)

        # With a session the final model is relaxed here, after its chains get the session's
        # names: a stretch that continues a kept chain is then relaxed peptide-bonded to it.
        pipeline_options = dataclasses.replace(options, relax=False) if session is not None else options
        if networks is None:
            from .remote import build_on_cluster

            result = build_on_cluster(self.cluster(), density, threaded, pipeline_options,
                                      device=self.device or "auto", mask=mask, context=context,
                                      taken=taken, anchors=anchors, region=what == "region",
                                      progress=progress, cancel=job.cancel_token,
                                      on_result=on_result)
        else:
            result = build(density, threaded, networks, pipeline_options, mask=mask,
                           context=context, taken=taken, anchors=anchors,
                           region=what == "region", progress=progress,
                           cancel=job.cancel_token, on_result=on_result)
        final, renames = result.final, {}
        if session is not None:
            final, renames, chain_sequences = named(result.final, result.final_chains)
            relax_report, seconds = result.relax_report, dict(result.seconds)
            if options.relax:
                final, relax_report = relax_stage(final, context, result.view,
                                                  networks.device if networks else "cpu", seconds,
                                                  progress=progress, cancel=job.cancel_token)
            progress("save", 0.0, "saving the model")
            state = splice(kept, final, chain_sequences)
            read = {} if result.view is None else _reading(
                result.view.map_resolution, result.view.estimated if estimated is None else estimated)
            if keeps_model:
                kept_which, message, before, after = judge(old, final, judged_in, what=what)
                if kept_which == "new":
                    session._job_update(state, sequences=sequences, map_info=read,
                                        rounds_saved=len(rounds))
                    job.verdict = Verdict("new", message, before, after, sequences=tuple(sequences))
                    log.info("%s: %s", job.id, message)
                else:
                    session._job_update(map_info=read, rounds_saved=len(rounds))
                    job.verdict = Verdict("old", message, before, after,
                                          candidate=state if after.residues else None,
                                          base=session.state, sequences=tuple(sequences))
                    _warn(job, message)
            else:
                session._job_update(state, map_info=read, rounds_saved=len(rounds))
            result = dataclasses.replace(result, relax_report=relax_report, seconds=seconds)
        # measured once the final model is settled (named and relaxed as a session has it); a
        # region's new residues are judged by the verdict instead
        fit = (map_fit(final, density, result.view.map_resolution)
               if what != "region" and result.view is not None else None)
        result = dataclasses.replace(
            result, rounds=tuple(rounds), raw=rounds[-1].model, final=final,
            final_chains=rename_reports(result.final_chains, renames),
            placements=rename_placements(result.placements, renames), fit=fit,
        )
        unthreaded = sum(not report.threaded for report in result.final_chains)
        resolution = result.view.map_resolution if result.view is not None else 0.0
        if unthreaded and resolution >= UNCERTAIN_DIRECTION_RESOLUTION:
            _warn(job, f"at {resolution:.1f} Å the network cannot tell which way a residue "
                       f"points: the N->C direction of the {unthreaded} unassigned chain"
                       f"{'s' if unthreaded > 1 else ''} is a guess (on real maps of 4.3-5 Å about "
                       "half the residues point backwards); check it before assigning a sequence")
        if not sequences:
            return result
        if windows is not None:
            # the sequences were threaded around the region before: no doubt about them, but
            # say when the stretch stays without them
            if not any(report.threaded for report in result.final_chains):
                _warn(job, "the new residues could not be threaded within the region's "
                           "sequence window: they are unassigned")
            return result
        threaded_chains = [report for report in result.final_chains if report.threaded]
        threaded = sum(report.residues for report in threaded_chains)
        traced = result.raw.num_residues
        if threaded == 0:
            kept = result.final.num_residues
            where = (f"{kept} of them are in the final model's unassigned chains" if kept else
                     "they stay in the raw model")
            if result.view is not None and result.view.skewness <= INVERTED_SKEWNESS:
                why = f"the map's values are skewed negative: {INVERTED_ADVICE}"
            elif resolution >= USUALLY_UNTHREADED_RESOLUTION:
                why = (f"at {resolution:.1f} Å that is usual, even with the right sequences (real maps of "
                       f"{USUALLY_UNTHREADED_RESOLUTION:g} Å or worse thread little or nothing "
                       "here); the places offered for the unassigned chains may still be right: "
                       "check each against the density before assigning it")
            else:
                why = ("do the sequences belong to this map, and does its local resolution show "
                       "side chains?")
            _warn(job, f"no chain could be threaded to the sequences ({traced} residues traced; "
                       f"{where}): {why}")
        else:
            best = min(report.evalue for report in threaded_chains)
            doubts = []
            if threaded < MIN_THREADED_FRACTION * traced:
                doubts.append(f"only {threaded} of the {traced} traced residues "
                              f"({threaded / traced:.1%}) could be threaded to the sequences")
            if best > CONFIDENT_THREAD_EVALUE:
                doubts.append(f"no chain threaded confidently (best E-value {best:.2g}, "
                              f"confident ≤ {CONFIDENT_THREAD_EVALUE:g})")
            if doubts:
                _warn(job, "; ".join(doubts) + ": do the sequences belong to this map?")
        return result

    def _build(self, job: Job, density, sequences, options, mask, session: Session | None) -> BuildResult:
        kept = context = old = None
        if session is not None:
            state = session.state
            kept = state.select(state.accepted)
            old = state.select(state.visible & ~state.accepted).model
            context = kept.model if kept.num_residues else None
            if kept.num_residues:
                job._emit("stage", stage="load", message=f"keeping {kept.num_residues} accepted residues")
        return self._run_pipeline(job, density, sequences, options, mask=mask, kept=kept,
                                  context=context, session=session, spare=True, old=old,
                                  judged_in=density, what="model")

    def _assign(self, job: Job, region, state: SessionState, placement, sequences, resolution,
                estimated: bool, session: Session):
        from ..assign import assign_placement
        from ..pipeline import network_view

        progress = _Progress(job, 0)
        progress("load", 0.0, "loading the networks")
        networks = self.networks()
        progress("load", 1.0, f"networks on {networks.device}")
        kept = state.select(state.model.chain_id != placement.chain_id)  # its pruned residues go too
        assignment = assign_placement(network_view(region.density, resolution),
                                      state.model.select(state.visible), placement, sequences,
                                      networks, progress=progress, cancel=job.cancel_token)
        progress("save", 0.0, "saving the model")
        # the stretches outside the alignment stay unassigned, in a chain plan_chain_names names
        rest_id, rest = "_rest", assignment.rest
        rest = dataclasses.replace(rest, chain_id=np.full(rest.num_residues, rest_id))
        new = join_models([assignment.model, rest])
        reports = (assignment.chain,) + ((assignment.rest_report(rest_id),) if rest.num_residues
                                         else ())
        renames, chain_sequences = plan_chain_names(kept.model, new, reports, kept.chain_sequences)
        session._job_update(splice(kept, rename_model(new, renames), chain_sequences),
                            map_info=_reading(resolution, estimated))
        where = renames[placement.chain_id]
        moved = "" if where == placement.chain_id else f", joined to chain {where}"
        log.info("%s: chain %s assigned to %s %d-%d%s", job.id, placement.chain_id,
                 placement.sequence, assignment.chain.first, assignment.chain.last, moved)
        return dataclasses.replace(assignment, model=rename_model(assignment.model, renames),
                                   chain=dataclasses.replace(assignment.chain, chain_id=where),
                                   rest=rename_model(rest, renames))

    def _rebuild(self, job: Job, region, state: SessionState, sequences, options,
                 session: Session, other_map: bool, estimated: bool) -> BuildResult:
        if other_map:
            job._emit("warning", message="the map differs from the one the session's last job used")
        if region.kept_accepted:
            job._emit("warning", message=f"{region.kept_accepted} accepted residues in the region are kept")
        kept = state.select(~region.rows)
        visible = kept.select(kept.visible)
        context = context_near(visible, region.points, REGION_CONTEXT + REGION_MASK_RADIUS)
        windows = window_records(sequences, state, region.rows, options.max_evalue) if sequences else None
        if windows is not None:
            free = sum(int((~taken).sum()) for taken in windows.records.taken)
            job._emit("stage", stage="load", message=(
                f"threading within {free} sequence positions around the region "
                f"(E-value ≤ {windows.max_evalue:.2g})"))
            # Every chain of the region copies a sequence its kept residues were threaded to,
            # so the check against chance threads of sequences that do not belong to the map
            # (`pipeline._blind_checked`) has nothing to ask; and it cannot confirm a stretch
            # shorter than `thread.confirm.MIN_AGREED`, so it took back every rebuild of 6
            # residues (`bench.rebuild`).
            options = dataclasses.replace(options, blind_check=False)
        log.info("%s: rebuilding %d residues with %d context residues", job.id,
                 int(region.rows.sum()), context.num_residues)
        return self._run_pipeline(job, region.density, sequences, options, mask=region.mask,
                                  kept=kept, context=context if context.num_residues else None,
                                  session=session, spare=False, windows=windows,
                                  old=state.select(region.rows).model, judged_in=region.density,
                                  what="region", estimated=estimated)
