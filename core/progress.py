"""Progress reporting and cancellation shared by every stage.

A stage takes ``progress`` (a callable ``progress(stage, fraction, message="")`` with
``fraction`` in 0..1, or None) and ``cancel`` (a `CancelToken`, or None) and checks the token
between units of work (windows, batches, rounds), as pyhmmer's pipelines check their kill switch.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from .errors import Cancelled

__all__ = ["CancelToken", "ProgressCallback", "report", "prefixed", "check_cancel"]

ProgressCallback = Callable[..., None]


class CancelToken:
    """A thread-safe flag: `cancel()` from any thread; workers call `raise_if_cancelled()`."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("the job was cancelled")


def report(progress: Optional[ProgressCallback], stage: str, fraction: float, message: str = ""):
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(stage, min(max(float(fraction), 0.0), 1.0), message)


def prefixed(progress: Optional[ProgressCallback], prefix: str) -> Optional[ProgressCallback]:
    """``progress`` with ``prefix: `` before every message (e.g. the build round a stage runs
    in); None stays None."""
    if progress is None:
        return None
    return lambda stage, fraction, message="": progress(stage, fraction, f"{prefix}: {message}")


def check_cancel(cancel: Optional[CancelToken]) -> None:
    """Raise `Cancelled` if ``cancel`` is set."""
    if cancel is not None:
        cancel.raise_if_cancelled()
