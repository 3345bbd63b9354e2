"""A terminal progress bar (tqdm on stderr) fed by the engine's ``progress(stage, fraction,
message)`` callbacks; silent with ``quiet``."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def terminal_progress(quiet: bool = False):
    """Yields a progress callback (or None when quiet) that drives one bar per stage."""
    if quiet:
        yield None
        return
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
