"""The ``cryobuild`` command: a thin registry of verbs.

Each verb is a module in this package with ``HELP`` (one line), ``add_args(parser)`` and
``main(args) -> int``. ``main`` only parses arguments, calls library functions that take and
return typed objects, and writes files at the edges. Errors meant for the user
(`cryobuild.errors.CryobuildError`) become one line on stderr and exit status 2; anything else is
a bug and keeps its traceback. Warnings about the input (`cryobuild.errors.InputWarning`) are
one line on stderr too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import warnings

from ..errors import Cancelled, CryobuildError, InputWarning

__all__ = ["main", "VERBS"]

#: verb name -> module (relative to this package). Verbs a later stage fills in still parse
#: their arguments and say what is missing.
VERBS = {
    "demo": "demo",
    "simulate": "simulate",
    "evaluate": "evaluate",
    "detect": "detect",
    "build": "build",
    "batch": "batch",
    "build_no_seq": "build_no_seq",
    "assign": "assign",
    "rebuild": "rebuild",
    "hmm_search": "hmm_search",
    "gui": "gui",
    "install-plugin": "install_plugin",
}

#: The engine logs its warnings and errors for hosts that collect logs; on the command line they
#: reach the user as events (printed by the verb) and raised errors, so logging's last-resort
#: handler must not print them a second time. (One instance: adding it again is a no-op.)
_ENGINE_LOG = logging.NullHandler()


def _load(verb: str):
    return importlib.import_module(f".{VERBS[verb]}", __name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryobuild",
        description="Automated atomic model building of proteins into cryo-EM maps.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"cryobuild {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for verb in VERBS:
        module = _load(verb)
        verb_parser = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_args(verb_parser)
        verb_parser.set_defaults(_module=module)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler's time limit) raised in the verb as an
    interrupt is, so that a terminated build stops as Ctrl-C stops it: its job cancelled, the
    folder's earlier outputs as they were, and a line saying where its finished rounds are."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("cryobuild").addHandler(_ENGINE_LOG)
    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            print(f"cryobuild: warning: {message}", file=sys.stderr)  # as the engine's warnings
        else:
            default_show(message, category, filename, lineno, file, line)

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return int(args._module.main(args) or 0)
    except Cancelled as err:
        print(f"cryobuild {args.verb}: cancelled: {err}", file=sys.stderr)
        return 130
    except Terminated:
        print(f"cryobuild {args.verb}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"cryobuild {args.verb}: interrupted", file=sys.stderr)
        return 130
    except CryobuildError as err:
        print(f"cryobuild {args.verb}: error: {err}", file=sys.stderr)
        return 2
    finally:
        if on_main_thread:  # None: a handler not set from Python, the default here
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
