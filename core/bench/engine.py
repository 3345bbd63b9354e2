"""Benchmark the engine: ``python -m cryobuild.bench.engine [--sizes 200 500] [--quick]``.

For each size, the structure of the data (`cryobuild.data.default_split`, any split: timing does
not depend on what the networks were trained on, and the validation split's largest has 1,644
residues) with the residue count closest to it gets a simulated map (``--resolution``); then,
with the networks already loaded:

* ``first_round_s``: seconds from `Engine.start_build` to the first ``round`` event (the first
  model a viewer can show), and ``final_s`` to the ``final`` event;
* ``rebuild_s``: a region rebuild of ``--region`` consecutive residues of the deposited model
  (opened into a session as if the user had loaded it), start to ``final``;
* ``cancel_s``: seconds from `Job.cancel` (called at the first graph-network progress event) to
  the ``cancelled`` event;
* ``max_gui_gap_ms``: the largest pause of a 20 ms timer in the calling thread during the build.

One JSON line per size. ``--quick`` runs PyMOL's il2 (126 residues) with one round instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..data import default_split, read_structure
from ..demo_data import demo_structure_path
from ..engine import Engine
from ..models import read_model
from ..pipeline import BuildOptions
from ..residues import one_letter
from ..sequences import Sequence
from ..simulate import SimulationOptions, simulate_map

__all__ = ["main", "pick_structure", "run_case"]

#: Poll period (s) of the simulated GUI timer.
TIMER = 0.02


def pick_structure(size: int):
    """The record of any split whose residue count is closest to ``size``."""
    records = [record for split in default_split().values() for record in split]
    return min(records, key=lambda record: abs(record.num_residues - size))


def _drive(job, on_event=None) -> tuple[list, float]:
    """Poll ``job`` every `TIMER` s until ``finished``; events and the largest timer gap (s)."""
    events, gap, last = [], 0.0, time.perf_counter()
    while not events or events[-1].kind != "finished":
        for event in job.poll():
            events.append(event)
            if on_event is not None:
                on_event(event)
        time.sleep(TIMER)
        now = time.perf_counter()
        gap, last = max(gap, now - last - TIMER), now
    job.wait()
    return events, gap


def _first(events, kind: str):
    return next((event for event in events if event.kind == kind), None)


def run_case(engine: Engine, name: str, structure_path: Path, sequences: list[Sequence], *,
             resolution: float, rounds: int, region: int, renumber: bool, folder: Path) -> dict:
    density = simulate_map(read_structure(structure_path), SimulationOptions(resolution=resolution),
                           np.random.default_rng(0))
    options = BuildOptions(rounds=rounds)
    row = {"case": name, "residues": sum(len(s) for s in sequences), "rounds": rounds}

    began = time.time()
    job = engine.start_build(density, sequences, options, session=folder / "build")
    events, gap = _drive(job)
    first_round, final = _first(events, "round"), _first(events, "final")
    row["first_round_s"] = round(first_round.time - began, 2) if first_round else None
    row["final_s"] = round(final.time - began, 2) if final else None
    row["outcome"] = events[-2].kind
    row["max_gui_gap_ms"] = round(gap * 1000)
    row["final_residues"] = final.payload.final.num_residues if final else 0

    reference = read_model(structure_path)
    if renumber:
        reference = dataclasses.replace(reference, residue_number=np.arange(1, reference.num_residues + 1))
    session = engine.open_session(folder / "region")
    session.set_model(reference, sequences=sequences)
    keys = session.keys()
    middle = len(keys) // 2
    began = time.time()
    job = engine.start_rebuild(session, density, keys=keys[middle - region // 2: middle + (region + 1) // 2],
                               options=options)
    events, _ = _drive(job)
    row["rebuild_s"] = round(events[-1].time - began, 2)
    row["rebuild_outcome"] = events[-2].kind

    job = engine.start_build(density, sequences, options)
    asked = []

    def cancel_in_gnn(event):
        if event.kind == "stage" and event.stage == "gnn" and not asked:
            asked.append(time.time())
            job.cancel()

    events, _ = _drive(job, cancel_in_gnn)
    cancelled = _first(events, "cancelled")
    row["cancel_s"] = round(cancelled.time - asked[0], 2) if cancelled and asked else None
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 500], help="residues per case")
    parser.add_argument("--rounds", type=int, default=3, help="graph network rounds")
    parser.add_argument("--region", type=int, default=30, help="residues rebuilt in the region")
    parser.add_argument("--resolution", type=float, default=3.0, help="Å of the simulated maps")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--quick", action="store_true", help="il2 only, one round")
    args = parser.parse_args(argv)

    engine = Engine(args.device)
    engine.preload()
    with tempfile.TemporaryDirectory(prefix="cryobuild-bench-") as tmp:
        if args.quick:
            path = demo_structure_path()
            model = read_model(path)
            sequences = [Sequence("il2", "".join(one_letter(int(a)) for a in model.aatype))]
            cases = [("il2", path, sequences, 1, True)]
        else:
            cases = []
            for size in args.sizes:
                record = pick_structure(size)
                sequences = [Sequence(chain, sequence) for chain, sequence in zip(record.chains, record.sequences)]
                cases.append((record.path.stem, record.path, sequences, args.rounds, False))
        for index, (name, path, sequences, rounds, renumber) in enumerate(cases):
            row = run_case(engine, name, path, sequences, resolution=args.resolution, rounds=rounds,
                           region=args.region, renumber=renumber, folder=Path(tmp) / str(index))
            print(json.dumps(row), flush=True)
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
