"""Jobs: work running in a worker thread that reports typed events through a queue.

A `Job` runs one body (a full build or a region rebuild, see `cryobuild.engine.engine`) in a
worker thread -- torch, NumPy and pyhmmer release the GIL in their heavy loops, so the caller's
(GUI) thread stays responsive -- or inline in the calling thread (``threaded=False``, for the
CLI and for debugging, as pyhmmer's ``cpus=1``).

Events (`JobEvent`) arrive in order in a thread-safe queue. A GUI drains it on its own timer
with `Job.poll` (STYLE 2.11); a script iterates `Job.events`; an optional callback sees each
event in the worker thread as it is queued. Every job's events follow

    started, (stage | points | round | warning)*, (final | failed | cancelled), finished

``finished`` is always last: the worker has let go of the map and session, so a new job on
them may start.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from ..errors import Cancelled, CryobuildError
from ..progress import CancelToken
from ..session import JobConflict

__all__ = ["EVENT_KINDS", "TERMINAL_KINDS", "Job", "JobConflict", "JobEvent"]

log = logging.getLogger("cryobuild.engine")

EVENT_KINDS = ("started", "stage", "points", "round", "final", "warning", "failed", "cancelled",
               "finished")
#: Exactly one of these comes before ``finished``.
TERMINAL_KINDS = ("final", "failed", "cancelled")


@dataclasses.dataclass(frozen=True, eq=False)
class JobEvent:
    """One thing that happened in a job.

    Attributes
    ----------
    job_id : str
        The job's id (``"job-<n>"``, unique within the process).
    kind : str
        One of `EVENT_KINDS`.
    stage : str
        Pipeline stage at the time ("load", "detect", "gnn", "thread", "relax", "save"; "" when
        none applies).
    fraction : float
        Overall progress of the job, 0..1, never decreasing.
    message : str
        One line for a status bar (the error for ``failed``).
    payload : object
        ``points``: `CalphaPoints`; ``round``: `RoundResult` (the job's own residues; the spliced
        model is the session's `model`); ``final``: `BuildResult` (the job's own residues);
        otherwise None.
    time : float
        ``time.time()`` when the event was made.
    """

    job_id: str
    kind: str
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    payload: object = None
    time: float = dataclasses.field(default_factory=time.time)

    def __post_init__(self):
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {EVENT_KINDS}, got {self.kind!r}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction must be in 0..1, got {self.fraction}")


class _CallbackFailed(Exception):
    """The user's event callback raised (the job fails with its error)."""


class Job:
    """A running or finished job. Made by `cryobuild.engine.Engine`; not constructed directly.

    Thread-safe: `cancel`, `poll`, `events`, `wait` and `result` may be called from any thread.
    """

    def __init__(self, job_id: str, kind: str, on_event: Callable[[JobEvent], None] | None = None):
        self.id = job_id
        self.kind = kind
        self._queue: queue.Queue[JobEvent] = queue.Queue()
        self._on_event = on_event
        self._cancel = CancelToken()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._fraction = 0.0
        self._result = None
        self._error: BaseException | None = None
        self._outcome: str | None = None
        self.traceback: str = ""
        self.session = None
        #: True when the session's model stays as it is while the job runs and its final model
        #: replaces the old residues only if better (`cryobuild.engine.engine`); set at start.
        self.keeps_model = False
        #: `cryobuild.engine.verdict.Verdict` of such a job once it has its final model.
        self.verdict = None

    # ------------------------------------------------------------------ caller side

    def cancel(self) -> None:
        """Ask the job to stop; it ends with ``cancelled`` then ``finished`` within seconds
        (checked between windows, crops, chains and rounds). The session keeps its last saved
        round. Does nothing once the job is done."""
        self._cancel.cancel()

    @property
    def cancel_token(self) -> CancelToken:
        return self._cancel

    @property
    def done(self) -> bool:
        """True once ``finished`` has been queued."""
        return self._done.is_set()

    @property
    def outcome(self) -> str | None:
        """None while running, then "final", "failed" or "cancelled"."""
        return self._outcome

    def poll(self) -> list[JobEvent]:
        """Every event queued so far, oldest first (never blocks): for a GUI timer."""
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def events(self, timeout: float | None = None) -> Iterator[JobEvent]:
        """Yield events as they arrive, up to and including ``finished``.

        Raises `TimeoutError` when no event comes for ``timeout`` seconds.
        """
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"{self.id}: no event for {timeout} s") from None
            yield event
            if event.kind == "finished":
                return

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is done and its thread has ended; True if it has."""
        if not self._done.wait(timeout):
            return False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def result(self, timeout: float | None = None):
        """Wait for the job; return its `BuildResult` or raise its error (`Cancelled` when it
        was cancelled, the original exception when it failed, `TimeoutError` if it is still
        running after ``timeout`` seconds)."""
        if not self.wait(timeout):
            raise TimeoutError(f"{self.id} is still running")
        if self._error is not None:
            raise self._error
        return self._result

    # ------------------------------------------------------------------ worker side

    def _emit(self, kind: str, *, stage: str = "", fraction: float | None = None, message: str = "",
              payload: object = None) -> JobEvent:
        """Queue an event (fraction kept monotonic) and pass it to the callback."""
        if fraction is not None:
            self._fraction = max(self._fraction, min(max(float(fraction), 0.0), 1.0))
        event = JobEvent(self.id, kind, stage, self._fraction, message, payload)
        self._queue.put(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as err:  # the callback is user code: its error fails the job
                if kind in TERMINAL_KINDS or kind == "finished":
                    log.error("%s: the event callback raised on %r", self.id, kind, exc_info=True)
                else:
                    raise _CallbackFailed(f"the event callback raised {type(err).__name__}: {err}") from err
        return event

    def _run(self, body: Callable[[Job], object], release: Callable[[Job, str, str], None]) -> None:
        """Run ``body(job)`` and emit the closing events; ``release(job, outcome, message)``
        frees the map and session before ``finished``."""
        outcome, message, interrupt = "failed", "", None
        try:
            self._emit("started", fraction=0.0, message=f"{self.kind} started")
            result = body(self)
            self._result = result
            outcome, message = "final", "done"
            self._emit("final", fraction=1.0, message=message, payload=result)
        except Cancelled as err:
            outcome, message, self._error = "cancelled", str(err), err
        except CryobuildError as err:
            outcome, message, self._error = "failed", str(err), err
        except Exception as err:
            self._error = err.__cause__ if isinstance(err, _CallbackFailed) and err.__cause__ else err
            self.traceback = traceback.format_exc()
            message = str(err) if isinstance(err, _CallbackFailed) else f"{type(err).__name__}: {err}"
            message = f"internal error: {message}".splitlines()[0]
            log.error("%s failed:\n%s", self.id, self.traceback)
        except BaseException as err:  # KeyboardInterrupt in an inline job: stop as a cancel
            outcome, message, self._error, interrupt = "cancelled", "interrupted", Cancelled("interrupted"), err
        finally:
            try:
                if outcome != "final":
                    self._emit(outcome, message=message)
            finally:
                self._outcome = outcome
                release(self, {"final": "finished"}.get(outcome, outcome), message)
                self._emit("finished", message=message)
                self._done.set()
        if interrupt is not None:
            raise interrupt
