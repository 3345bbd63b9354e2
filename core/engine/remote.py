"""Builds on a Dask worker (`distributed`, the ``[dask]`` extra), seen as local jobs.

Two ways, for two kinds of caller:

* **Inference only** (`build_on_cluster`): the caller's `cryobuild.engine.Engine` keeps the job,
  its session (accept, prune, rebuild, splice, saving) and the relaxation; only
  `cryobuild.pipeline.build` -- detection, graph network, threading -- runs on a worker, its
  progress reports and round results streamed back as they come. The PyMOL panel's
  "remote: tcp://..." device is this: a laptop drives a build on a GPU server.
* **Whole builds** (`start_remote_build`), for the command line and `cryobuild batch`, which
  hold no session.

`start_remote_build` sends a build to a Dask scheduler (``tcp://HOST:PORT``) and returns a
`RemoteJob` at once: the same caller-side API and the same typed events as a local
`cryobuild.engine.Job` (``started``, ``stage``, ``points``, ``round``, ``warning``, then
``final``, ``failed`` or ``cancelled``, then ``finished``), so the command line and the panel
drive it as they drive a local job. On the worker, `_run_on_worker` runs the build through its
own `cryobuild.engine.Engine` (networks loaded once per worker process, on the worker's device:
"auto" is its GPU when it has one) and puts each event, pickled, into a `distributed.Queue`
named after the job; a thread of the `RemoteJob` takes them out and queues them locally. The
final `BuildResult` comes back as the task's result, without its ``view`` (the standardised map
stays on the worker). Everything passes through the scheduler, so the caller needs to reach the
scheduler only (an SSH tunnel to its port will do), not the workers.

**Cancel**: `RemoteJob.cancel` sets a `distributed.Event` named after the job, which the task on
the worker checks every `CANCEL_POLL` s and turns into a cancel of its local job (within the
engine's own latency: windows, crops, chains).

**A worker that dies** mid-job: the scheduler runs the task again on another worker (Dask's
``distributed.scheduler.allowed-failures``, 3 by default, then ``KilledWorker``); the job goes
on, with a ``warning`` event saying so in place of the second ``started``.

The map travels inside the task, as its MRC file's bytes (`maps.map_to_bytes`), so the
scheduler holds it until the job is done and can give it to another worker.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import threading
import time
import uuid

from ..errors import Cancelled, CryobuildError, InputError
from ..maps import DensityMap
from ..pipeline import BuildOptions, BuildResult, Networks
from ..sequences import Sequence
from .jobs import TERMINAL_KINDS, Job, JobEvent

__all__ = ["CANCEL_POLL", "CONNECT_TIMEOUT", "RemoteJob", "RemoteOutcome", "build_on_cluster",
           "connect", "require_distributed", "start_remote_build"]

log = logging.getLogger("cryobuild.engine")

#: Seconds between two looks of the worker at the job's cancel event, and of the caller's
#: thread at the job's event queue.
CANCEL_POLL = 0.1
#: Seconds to wait for the scheduler when connecting.
CONNECT_TIMEOUT = 10.0
#: Seconds a Ctrl-C while waiting for a remote build waits for it to stop.
INTERRUPT_WAIT = 5.0

#: Networks loaded in this (worker) process, by device: loaded by the first job, reused after.
_worker_networks: dict[str, Networks] = {}
_worker_networks_lock = threading.Lock()


def require_distributed() -> None:
    """Raise `InputError` saying how to install Dask when it is not installed."""
    try:
        import distributed  # noqa: F401 - imported to see that it is there
    except ImportError:
        raise InputError("building through Dask needs the dask extra: pip install "
                         "'cryobuild[dask]'") from None


def connect(address: str):
    """A `distributed.Client` of the scheduler at ``address`` (``tcp://HOST:PORT``).

    Raises `InputError` when Dask is not installed or the scheduler cannot be reached.
    """
    require_distributed()
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        raise InputError(f"cannot reach the Dask scheduler at {address}: {err}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class RemoteOutcome:
    """What a worker sends back: the build's result (``view`` None) or the error that ended it
    (`Cancelled` for a cancel), the device it ran on and the worker's address."""

    result: BuildResult | None
    error: BaseException | None
    device: str
    worker: str


def _networks(device: str) -> Networks:
    with _worker_networks_lock:
        if device not in _worker_networks:
            _worker_networks[device] = Networks.load(device)
        return _worker_networks[device]


def _run_on_worker(map_bytes: bytes, map_name: str, mask_bytes: bytes | None,
                   sequences: list[Sequence], options: BuildOptions, device: str,
                   queue_name: str, cancel_name: str) -> RemoteOutcome:
    """The task: build on this worker, putting each event into the queue ``queue_name`` and
    cancelling when the event ``cancel_name`` is set. The build's own end (result, error,
    cancel) is returned, not raised, so a cancel or a bad map is not a failed task to Dask."""
    from distributed import Event, Queue, get_client, get_worker

    from ..maps import read_map_bytes
    from .engine import Engine

    client = get_client()
    events, cancel = Queue(queue_name, client=client), Event(cancel_name, client=client)

    def publish(event: JobEvent) -> None:
        if event.kind == "final":  # the result comes back as the task's result
            event = dataclasses.replace(event, payload=None)
        events.put(pickle.dumps(event))

    networks = _networks(device)
    where = (str(networks.device), get_worker().address)
    if cancel.is_set():  # cancelled while it waited for a worker
        return RemoteOutcome(None, Cancelled("the job was cancelled"), *where)
    try:
        density = read_map_bytes(map_bytes, map_name)
        mask = read_map_bytes(mask_bytes, f"{map_name} mask") if mask_bytes is not None else None
        job = Engine(device, networks=networks).start_build(density, sequences, options, mask=mask,
                                                            on_event=publish)
    except CryobuildError as err:
        return RemoteOutcome(None, err, *where)
    while not job.wait(CANCEL_POLL):
        if cancel.is_set():
            job.cancel()
    try:
        result, error = dataclasses.replace(job.result(), view=None), None
    except Exception as err:  # noqa: BLE001 - the build's error, raised again by the caller
        result, error = None, err
    return RemoteOutcome(result, error, *where)


def _arrivals(future, queue, idle=None):
    """What the task of ``future`` puts into ``queue``, unpickled, as it arrives: looking every
    `CANCEL_POLL` s (calling ``idle()`` between looks), until the task has ended and the queue
    is empty."""
    while True:
        ended = future.done()
        waiting = queue.qsize()
        if waiting:
            yield from (pickle.loads(item) for item in queue.get(batch=waiting))
        elif ended:
            return
        else:
            if idle is not None:
                idle()
            time.sleep(CANCEL_POLL)


class RemoteJob(Job):
    """A build running on a Dask worker (`start_remote_build`): `cancel`, `poll`, `events`,
    `wait`, `result`, `done` and `outcome` as a local `Job`; events arrive in the same order.

    Attributes
    ----------
    device : str
        The worker's device, once the job has its result ("" before).
    worker : str
        Address of the worker that built it ("" before).
    """

    def __init__(self, job_id: str, client, future, cancel_event, queue, on_event=None,
                 own_client: bool = False):
        super().__init__(job_id, "build", on_event)
        self.device = self.worker = ""
        self._client, self._future, self._own_client = client, future, own_client
        self._cancel_event, self._events = cancel_event, queue
        self._thread = threading.Thread(target=self._receive, name=f"cryobuild-{job_id}",
                                        daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the worker to stop the job (`CANCEL_POLL`); ``cancelled`` then ``finished``
        follow. Does nothing once the job is done."""
        if not self.done:
            self._cancel.cancel()
            self._cancel_event.set()

    def _receive(self) -> None:
        """Re-queue the worker's events here until ``finished``; the task's end (an error
        before any event, a worker that died once too often) ends the job too."""
        started = terminal = False
        try:
            for event in self._remote_events():
                if event.kind == "started" and started:
                    self._emit("warning", message="the worker running the build stopped; it "
                                                  "started again on another worker")
                    continue
                started = True
                if event.kind in TERMINAL_KINDS:
                    terminal = True
                    self._settle(event)
                if event.kind == "finished":
                    break
                if event.kind not in TERMINAL_KINDS:
                    self._emit(event.kind, stage=event.stage, fraction=event.fraction,
                               message=event.message, payload=event.payload)
            if not terminal:  # the task ended without its job's closing events
                if not started:
                    self._emit("started", fraction=0.0, message="build started")
                self._settle(None)
            self._emit("finished", message="done" if self._outcome == "final" else str(self._error))
        except Exception as err:  # noqa: BLE001 - any failure ends the job, not the thread alone
            log.error("%s: the remote build's events could not be taken", self.id, exc_info=True)
            self._cancel_event.set()
            self._error = self._error or err
            self._outcome = self._outcome or "failed"
            self._queue.put(JobEvent(self.id, "finished", message=f"{type(err).__name__}: {err}"))
        finally:
            self._done.set()
            self._clean_up()

    def result(self, timeout: float | None = None):
        """As `Job.result`; a KeyboardInterrupt while waiting cancels the remote build (waiting
        up to `INTERRUPT_WAIT` s for it to stop) and is raised again."""
        try:
            return super().result(timeout)
        except KeyboardInterrupt:
            self.cancel()
            self.wait(INTERRUPT_WAIT)
            raise

    def _remote_events(self):
        """The worker's events as they arrive (`_arrivals`)."""
        return _arrivals(self._future, self._events)

    def _settle(self, event: JobEvent | None) -> None:
        """Take the task's outcome and emit the job's closing event (``final`` with the
        result, ``failed`` or ``cancelled`` with the error)."""
        try:
            outcome = self._future.result()
        except Exception as err:  # noqa: BLE001 - the task itself failed (e.g. KilledWorker)
            outcome = RemoteOutcome(None, err, "", "")
        self.device, self.worker = outcome.device, outcome.worker
        error = outcome.error
        if error is None:
            self._result, self._outcome = outcome.result, "final"
            self._emit("final", fraction=1.0, message="done", payload=outcome.result)
            return
        self._error = error
        self._outcome = "cancelled" if isinstance(error, Cancelled) else "failed"
        message = event.message if event is not None else f"{type(error).__name__}: {error}"
        self._emit(self._outcome, message=message)

    def _clean_up(self) -> None:
        for release in (self._events.close, self._cancel_event.clear):
            try:
                release()
            except Exception:  # noqa: BLE001 - the scheduler may be gone; nothing to keep
                log.debug("%s: could not release the job's queue or event", self.id, exc_info=True)
        if self._own_client:
            self._client.close()


def start_remote_build(
    scheduler,
    density: DensityMap,
    sequences: list[Sequence],
    options: BuildOptions = BuildOptions(),
    *,
    mask: DensityMap | None = None,
    device: str = "auto",
    on_event=None,
    job_id: str | None = None,
) -> RemoteJob:
    """Start a build of ``sequences`` into ``density`` on a worker of ``scheduler`` (an address,
    ``tcp://HOST:PORT``, or a `distributed.Client`); returns the running `RemoteJob`.

    ``device`` is the worker's (`cryobuild.device.resolve_device` runs there); ``on_event``
    is called in the job's receiving thread for each event.

    Raises `InputError` when the scheduler cannot be reached or Dask is not installed.
    """
    from ..maps import map_to_bytes

    own_client = isinstance(scheduler, str)
    client = connect(scheduler) if own_client else scheduler
    from distributed import Event, Queue

    job_id = job_id or f"remote-{uuid.uuid4().hex[:12]}"
    queue_name, cancel_name = f"cryobuild-events-{job_id}", f"cryobuild-cancel-{job_id}"
    queue, cancel_event = Queue(queue_name, client=client), Event(cancel_name, client=client)
    mask_bytes = map_to_bytes(mask) if mask is not None else None
    future = client.submit(_run_on_worker, map_to_bytes(density), job_id, mask_bytes,
                           list(sequences), options, device, queue_name, cancel_name,
                           key=f"cryobuild-build-{job_id}", pure=False)
    return RemoteJob(job_id, client, future, cancel_event, queue, on_event, own_client)


def _build_on_worker(map_bytes: bytes, map_name: str, mask_bytes: bytes | None,
                     sequences: list[Sequence], options: BuildOptions, device: str, context,
                     taken, anchors, region: bool, queue_name: str,
                     cancel_name: str) -> RemoteOutcome:
    """The task of `build_on_cluster`: `pipeline.build` on this worker, each progress report
    (``("progress", stage, fraction, message)``) and round result (``("result", kind,
    payload)``) put pickled into the queue ``queue_name``; the event ``cancel_name`` cancels
    it. The build's end comes back as the task's result, not raised (see `_run_on_worker`)."""
    from distributed import Event, Queue, get_client, get_worker

    from ..maps import read_map_bytes
    from ..pipeline import build
    from ..progress import CancelToken

    client = get_client()
    events, cancel_event = Queue(queue_name, client=client), Event(cancel_name, client=client)
    networks = _networks(device)
    where = (str(networks.device), get_worker().address)
    token, finished = CancelToken(), threading.Event()

    def watch_cancel() -> None:
        while not finished.wait(CANCEL_POLL):
            if cancel_event.is_set():
                token.cancel()
                return

    last = {"stage": None, "time": 0.0}

    def forward_progress(stage: str, fraction: float, message: str = "") -> None:
        """A report goes to the caller when its stage changes, ends, or `CANCEL_POLL` s after
        the last one: each is a round trip to the scheduler."""
        now = time.monotonic()
        if stage != last["stage"] or fraction >= 1.0 or now - last["time"] >= CANCEL_POLL:
            last.update(stage=stage, time=now)
            events.put(pickle.dumps(("progress", stage, fraction, message)))

    watcher = threading.Thread(target=watch_cancel, name=f"cancel-{queue_name}", daemon=True)
    watcher.start()
    try:
        density = read_map_bytes(map_bytes, map_name)
        mask = read_map_bytes(mask_bytes, f"{map_name} mask") if mask_bytes is not None else None
        result = build(density, sequences, networks, options, mask=mask, context=context,
                       taken=taken, anchors=anchors, region=region, cancel=token,
                       progress=forward_progress,
                       on_result=lambda kind, payload: events.put(
                           pickle.dumps(("result", kind, payload))))
        return RemoteOutcome(result, None, *where)
    except Exception as err:  # noqa: BLE001 - raised again by the caller, with its type
        return RemoteOutcome(None, err, *where)
    finally:
        finished.set()


def build_on_cluster(
    client,
    density: DensityMap,
    sequences: list[Sequence],
    options: BuildOptions,
    *,
    device: str = "auto",
    mask: DensityMap | None = None,
    context=None,
    taken=None,
    anchors=(),
    region: bool = False,
    progress=None,
    cancel=None,
    on_result=None,
) -> BuildResult:
    """`cryobuild.pipeline.build` run on a worker of ``client`` (a `distributed.Client`), with
    the same arguments but the networks (the worker's, on its ``device``), blocking until it
    ends: ``progress`` and ``on_result`` are called here, in the calling thread, as the
    worker's reports arrive; ``cancel`` (a `CancelToken`) set here stops the worker's build
    within `CANCEL_POLL` s plus the pipeline's own latency, and `Cancelled` is raised.

    The result is the worker's `BuildResult`, its ``view`` (the standardised map the session's
    relaxation needs) included. A worker that dies mid-build: Dask runs the task again on
    another one, whose rounds arrive again from the first (``on_result`` gets a ``warning``
    first). Errors of the build are raised here with their own type.
    """
    from distributed import Event, Queue

    from ..maps import map_to_bytes

    job = uuid.uuid4().hex[:12]
    queue_name, cancel_name = f"cryobuild-inference-{job}", f"cryobuild-cancel-{job}"
    queue, cancel_event = Queue(queue_name, client=client), Event(cancel_name, client=client)
    mask_bytes = map_to_bytes(mask) if mask is not None else None
    future = client.submit(_build_on_worker, map_to_bytes(density), job, mask_bytes,
                           list(sequences), options, device, context, taken, anchors,
                           region, queue_name, cancel_name, key=f"cryobuild-inference-{job}", pure=False)

    def pass_on_cancel() -> None:
        if cancel is not None and cancel.cancelled:
            cancel_event.set()

    detected = False
    try:
        for what, *report in _arrivals(future, queue, idle=pass_on_cancel):
            pass_on_cancel()
            if what == "progress":
                if progress is not None:
                    progress(*report)
                continue
            kind, payload = report
            if kind == "points":
                if detected and on_result is not None:
                    on_result("warning", "the worker running the build stopped; it started "
                                         "again on another worker")
                detected = True
            if on_result is not None:
                on_result(kind, payload)
        try:
            outcome = future.result()
        except Exception as err:  # noqa: BLE001 - the task itself failed (e.g. KilledWorker)
            raise CryobuildError(f"the remote build failed: {type(err).__name__}: {err}") from err
        if outcome.error is not None:
            raise outcome.error
        log.info("built on %s (%s)", outcome.worker, outcome.device)
        return outcome.result
    finally:
        if not future.done():
            cancel_event.set()
        for release in (queue.close, cancel_event.clear):
            try:
                release()
            except Exception:  # noqa: BLE001 - the scheduler may be gone; nothing to keep
                log.debug("could not release the inference queue or event", exc_info=True)
