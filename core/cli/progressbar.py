"""Progress on stderr, fed by the engine's ``progress(stage, fraction, message)`` callbacks: a
tqdm bar per stage on a terminal; one line per new message when stderr is a file or a pipe (a
batch job's log, where a bar's carriage-return redraws pile up into one unreadable line);
silent with ``quiet``."""

from __future__ import annotations

import contextlib
import sys


def add_quiet_arg(parser) -> None:
    """The ``--quiet`` flag of every verb that reports progress."""
    parser.add_argument("--quiet", action="store_true",
                        help="no progress output (a bar on a terminal, lines otherwise)")


@contextlib.contextmanager
def terminal_progress(quiet: bool = False):
    """Yields a progress callback (or None when quiet)."""
    if quiet:
        yield None
    elif not sys.stderr.isatty():
        yield _line_progress()
    else:
        with _bar_progress() as progress:
            yield progress


def _line_progress():
    """``stage  NN%  message`` on stderr whenever the stage or its message changes."""
    last = [None]

    def progress(stage: str, fraction: float, message: str = ""):
        if (stage, message) != last[0]:
            last[0] = (stage, message)
            print(f"{stage:>8} {round(100 * fraction):3d}%  {message}", file=sys.stderr, flush=True)

    return progress


@contextlib.contextmanager
def _bar_progress():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, fraction: float, message: str = ""):
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(total=100, desc=stage, unit="%", leave=True,
                                     bar_format="{desc:>8}: {percentage:3.0f}%|{bar}| {postfix}")
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message, refresh=True)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()
