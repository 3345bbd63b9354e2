"""Exceptions that carry a message meant for the user.

Library code raises these instead of exiting (a plugin runs inside PyMOL, where ``sys.exit``
would kill the host). The CLI turns them into one line on stderr and a non-zero exit status.
"""

__all__ = ["CryobuildError", "InputError", "InputWarning", "Cancelled", "BuildError", "OutputError"]


class CryobuildError(Exception):
    """Base class: ``str(error)`` is a complete one-line message for the user."""


class InputError(CryobuildError, ValueError):
    """A file or argument the user gave cannot be used (names the file and the problem)."""


class InputWarning(UserWarning):
    """Input that can be used, but not as it stands (a record left out, a header field assumed);
    the CLI prints it as one line, the plugin in its log."""


class BuildError(CryobuildError, RuntimeError):
    """A stage could not produce a result from valid input (e.g. a map without protein density)."""


class Cancelled(CryobuildError):
    """The job was cancelled through its CancelToken; the last complete result is kept."""


class OutputError(CryobuildError, OSError):
    """The outputs could not be written where asked (the message says where they are instead)."""
