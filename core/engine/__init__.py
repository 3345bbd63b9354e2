"""The engine behind the PyMOL panel and the CLI: background jobs, sessions, region rebuilds.

See `cryobuild.engine.engine` (Engine), `cryobuild.engine.jobs` (Job, JobEvent) and
`cryobuild.session` (Session). Importing this package does not import torch.
"""

from ..session import JobConflict, Session
from .engine import Engine
from .jobs import EVENT_KINDS, TERMINAL_KINDS, Job, JobEvent

__all__ = ["EVENT_KINDS", "TERMINAL_KINDS", "Engine", "Job", "JobConflict", "JobEvent", "Session"]
