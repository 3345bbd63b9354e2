"""The bookkeeping the training scripts share: resume, JSON-lines log, atomic checkpoint,
wall time and the stop rule (`TrainingRun`); the endless draw of random training files
(`worker_rng`, `random_files`).

A checkpoint is the dict ``{"config", "model", "optimizer", "step", "wall_seconds",
"history", **extra}`` (``extra``: a script's own keys, such as ``crop`` and ``batch`` of the
detector), saved with `cryobuild.checkpoints.save_checkpoint`. ``wall_seconds`` counts only
the time spent in training loops, summed over all sessions.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import save_checkpoint
from ..data import REAL_FOLDS

__all__ = ["TrainingRun", "add_noise_colour_arg", "add_real_fold_args", "random_files", "worker_rng"]


class TrainingRun:
    """One training session of ``network``, saved to ``checkpoint`` and logged to ``log_path``.

    Parameters
    ----------
    checkpoint, log_path : Path
        The checkpoint file (read by the caller, written by `save`) and the JSON-lines log.
    network : torch.nn.Module
    optimizer : torch.optim.Optimizer
    config : dict
        The network's config as saved under ``"config"``.
    extra : dict, optional
        Further keys saved with every checkpoint. ``real_maps`` (names of the real maps the
        network trained on) is merged with the resumed checkpoint's, so it lists every map
        the weights have seen.
    """

    def __init__(self, checkpoint: Path, log_path: Path, network: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, config: dict, extra: dict | None = None):
        self.checkpoint = Path(checkpoint)
        self.log_path = Path(log_path)
        self.network = network
        self.optimizer = optimizer
        self.config = config
        self.extra = dict(extra or {})
        self.step = 0
        self.wall_seconds = 0.0
        self.history: list[dict] = []
        self._started = self._last = time.time()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def resume(self, state: dict | None) -> None:
        """Take network, optimizer, step, wall time and history from a loaded checkpoint
        (nothing when ``state`` is None)."""
        if not state:
            return
        self.network.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        if "real_maps" in state:
            self.extra["real_maps"] = sorted(set(state["real_maps"]) | set(self.extra.get("real_maps", ())))
        self.history = list(state.get("history", []))
        self.wall_seconds = state.get("wall_seconds", 0.0)
        print(f"resumed from {self.checkpoint} at step {self.step}", flush=True)

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every parameter group."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def session_fraction(self, minutes: float) -> float:
        """How much of this session's wall-time budget of ``minutes`` has passed, in [0, 1]."""
        return min(1.0, (time.time() - self._started) / 60.0 / minutes)

    def anneal_lr(self, lr: float, final_lr: float | None, minutes: float) -> None:
        """Set the learning rate on a half cosine from ``lr`` at the session's start to
        ``final_lr`` at the end of its ``minutes`` (constant ``lr`` when ``final_lr`` is None).
        The schedule follows the session's clock, not the step count, because a resumed run
        is budgeted in minutes."""
        if final_lr is None:
            return
        fraction = self.session_fraction(minutes)
        self.set_lr(final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * fraction)))

    def log(self, entry: dict) -> None:
        """Append ``entry`` to the log as one JSON line and print it."""
        line = json.dumps(entry)
        with self.log_path.open("a") as handle:
            handle.write(line + "\n")
        print(line, flush=True)

    def start(self) -> None:
        """Start the session's clock (call right before the loop) and set training mode."""
        self._started = self._last = time.time()
        self.network.train()

    def tick(self) -> float:
        """Count one optimizer step and add the time since the last tick to the wall time;
        returns the current time."""
        now = time.time()
        self.step += 1
        self.wall_seconds += now - self._last
        self._last = now
        return now

    def add_validation(self, name: str, figures: dict) -> None:
        """Record validation ``figures`` under ``name`` in the history and the log, and put
        the network back in training mode."""
        self.network.train()
        entry = {"step": self.step, name: figures, "wall": round(self.wall_seconds)}
        self.history.append(entry)
        self.log(entry)

    def save(self) -> Path:
        """Write the checkpoint (atomically)."""
        return save_checkpoint(self.checkpoint, {
            "config": self.config,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "wall_seconds": self.wall_seconds,
            "history": self.history,
            **self.extra,
        })

    def done(self, minutes: float, steps: int | None) -> bool:
        """Whether the session has run ``minutes`` or training has reached ``steps`` in total."""
        return (time.time() - self._started) / 60 > minutes or bool(steps and self.step >= steps)

    def end_step(self, save_every: int, minutes: float, steps: int | None) -> bool:
        """Save every ``save_every`` steps; returns `done`."""
        if self.step % save_every == 0:
            self.save()
        return self.done(minutes, steps)

    def finish(self) -> None:
        """Save the final checkpoint and say so."""
        self.save()
        print(f"saved {self.checkpoint} at step {self.step}", flush=True)


def worker_rng(seed: int) -> np.random.Generator:
    """A random generator for the calling data-loader worker: ``seed``, the worker's number
    and the process id, so workers and restarted sessions draw differently."""
    worker = torch.utils.data.get_worker_info()
    return np.random.default_rng([seed, worker.id if worker else 0, os.getpid()])


def random_files(records: Sequence, read: Callable[[Any], Any], rng: np.random.Generator,
                 skip: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                 ) -> Iterator[tuple[Any, Any]]:
    """Endless ``(record, read(record.path))`` of records drawn at random; a file on which
    ``read`` raises ``skip`` is passed over (a bad training file is not fatal)."""
    while True:
        record = records[int(rng.integers(len(records)))]
        try:
            data = read(record.path)
        except skip:
            continue
        yield record, data


def add_real_fold_args(parser, *, real_fraction: float, unit: str = "crops") -> None:
    """``--real-fold`` (train on that fold's real maps too, `cryobuild.data.REAL_FOLDS`) and
    ``--real-fraction`` (the share of ``unit`` drawn from it)."""
    parser.add_argument("--real-fold", choices=sorted(REAL_FOLDS), default=None,
                        help="also train on this fold's real maps (data.REAL_FOLDS)")
    parser.add_argument("--real-fraction", type=float, default=real_fraction,
                        help=f"fraction of {unit} drawn from the real fold")


def add_noise_colour_arg(parser) -> None:
    """``--noise-colour LOW HIGH``: the range each simulated map's noise colour is drawn from
    (`cryobuild.simulate.SimulationOptions.noise_colour`: 1 shaped like the signal, the same
    SNR in every shell; 0 white up to Nyquist). Default 1 1, the noise every bundled network
    first trained on."""
    parser.add_argument("--noise-colour", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(1.0, 1.0),
                        help="range of the simulated noise's colour (simulate.SimulationOptions."
                             "noise_colour; default 1 1: shaped like the signal)")
