"""Verbs whose stage is not in this version yet: they parse their final arguments (so scripts
can be written against them) and exit with a clear message."""

from __future__ import annotations

from ..errors import CryobuildError


def not_yet(verb: str, needs: str) -> int:
    raise CryobuildError(f"'{verb}' needs {needs}, which this version of cryobuild does not have yet")
