"""Many builds through Dask: a jobs file in, one output folder per job and a summary out.

The jobs file is a CSV with a header row and the columns ``map``, ``fasta`` and ``name``, and
optionally ``mask``, ``rounds`` and ``resolution`` (Å; empty: no mask, `BuildOptions`' rounds,
the resolution estimated from the map, which at 3.2-4 Å threads less than the stated one:
README, "The map's resolution: stated or estimated"); relative paths are taken from the jobs
file's folder. Each job's outputs go into ``OUT/<name>/``
(`cryobuild.build_outputs.write_build` through `cryobuild.build_folder.BuildFolder`, as
``cryobuild build`` writes them), and ``OUT/summary.csv`` (`SUMMARY_COLUMNS`) is rewritten as
each job ends, so a batch that was stopped or killed resumes where it stopped: jobs whose row
says ``done`` and whose ``model.cif`` is there are not built again; every other job is.

`run_batch` reads each job's files here, sends the build to a worker (`cryobuild.engine.remote`),
with at most `IN_FLIGHT_PER_WORKER` jobs per worker in flight (the scheduler holds their maps),
and writes the outputs here as each ends. A worker that dies mid-job has its job run again on
another (Dask), which the job's warnings say. `local_cluster` starts a Dask cluster of worker
processes sized to this machine.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import queue
import re
import time
from collections.abc import Callable
from pathlib import Path

from .errors import CryobuildError, InputError

__all__ = ["IN_FLIGHT_PER_WORKER", "LOCAL_WORKER_MEMORY", "SUMMARY", "SUMMARY_COLUMNS",
           "BatchJob", "local_cluster", "read_jobs", "read_summary", "run_batch"]

#: The summary's file name in the output folder, and its columns: the job's name; its status
#: (``done``, ``failed``, ``cancelled``); the residues of its final and raw models; seconds from
#: the worker's start to the result; its warnings (``; ``-joined); the error of a failed job;
#: the worker that built it.
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ("name", "status", "residues", "raw_residues", "seconds", "warnings", "error",
                   "worker")
#: Jobs sent to the scheduler per worker at a time: one building, one waiting with its map.
IN_FLIGHT_PER_WORKER = 2
#: Bytes of memory a local worker is given: a build of a 400³ map at 0.83 Å peaks under 4 GB
#: (`cryobuild.bench.scale`).
LOCAL_WORKER_MEMORY = 4 * 1024**3
#: Job names are folder names.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUIRED = ("map", "fasta", "name")


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """One row of a jobs file: the map, FASTA and (optional) mask files, the job's name (its
    output folder), its rounds (None: the default) and the map's resolution (Å; None:
    estimated)."""

    name: str
    map_path: Path
    fasta_path: Path
    mask_path: Path | None = None
    rounds: int | None = None
    resolution: float | None = None


def read_jobs(path: str | os.PathLike) -> list[BatchJob]:
    """The jobs of a jobs file (module docstring).

    Raises `InputError` naming the file and line for a missing column, an empty or repeated
    name, a name that is not a folder name, a missing file, or rounds or a resolution that are
    not a number.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"{path}: cannot read the jobs file ({err.strerror or err})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: the jobs file has no {', '.join(missing)} column "
                         f"(columns: map, fasta, name, optional mask, rounds and resolution)")
    jobs, names = [], set()
    for line, row in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        name = (row.get("name") or "").strip()
        if not _NAME.match(name):
            raise InputError(f"{where}: the name {name!r} cannot be a folder name (letters, "
                             "digits, '.', '_', '-')")
        if name in names:
            raise InputError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        files = {}
        for column in ("map", "fasta", "mask"):
            value = (row.get(column) or "").strip()
            if not value:
                if column != "mask":
                    raise InputError(f"{where}: no {column} file")
                continue
            file = path.parent / value
            if not file.is_file():
                raise InputError(f"{where}: no such {column} file {file}")
            files[column] = file
        rounds = (row.get("rounds") or "").strip()
        if rounds and not rounds.isdigit():
            raise InputError(f"{where}: rounds must be a whole number, got {rounds!r}")
        resolution = (row.get("resolution") or "").strip()
        try:
            resolution = float(resolution) if resolution else None
        except ValueError:
            raise InputError(f"{where}: resolution must be a number of Å, got {resolution!r}") from None
        jobs.append(BatchJob(name, files["map"], files["fasta"], files.get("mask"),
                             int(rounds) if rounds else None, resolution))
    if not jobs:
        raise InputError(f"{path}: the jobs file lists no jobs")
    return jobs


def read_summary(out: str | os.PathLike) -> dict[str, dict]:
    """The rows of ``out``'s summary by job name (empty when there is none)."""
    path = Path(out) / SUMMARY
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def _write_summary(out: Path, rows: dict[str, dict], order: list[str]) -> None:
    from .atomic import write_bytes_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for name in order:
        if name in rows:
            writer.writerow(rows[name])
    write_bytes_atomic(out / SUMMARY, buffer.getvalue().encode())


def local_cluster(workers: int | None = None):
    """A Dask cluster of worker processes on this machine, one thread each (torch then uses
    one core per worker): as many workers as cores, fewer when memory is short
    (`LOCAL_WORKER_MEMORY` each), or ``workers``."""
    import psutil

    from .engine.remote import require_distributed

    require_distributed()
    from distributed import LocalCluster

    if workers is None:
        memory = psutil.virtual_memory().total
        workers = max(1, min(os.cpu_count() or 1, memory // LOCAL_WORKER_MEMORY))
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        dashboard_address=":0")


def run_batch(jobs: list[BatchJob], out: str | os.PathLike, client, *, options: Callable,
              device: str = "auto", report: Callable[[str, str], None] | None = None
              ) -> dict[str, dict]:
    """Build ``jobs`` on ``client``'s workers into ``out`` (module docstring); returns the
    summary rows by name.

    ``options(job)`` gives a job's `BuildOptions`; ``device`` is the workers'; ``report(name,
    line)`` is told what happens (job started, rounds, warnings, end). A KeyboardInterrupt
    cancels the running jobs, records them as cancelled and is raised again.
    """
    from .atomic import output_folder
    from .engine.remote import start_remote_build

    out = output_folder(out)
    order = [job.name for job in jobs]
    previous = read_summary(out)
    rows = {name: row for name, row in previous.items() if name in order}
    pending = [job for job in jobs
               if not (rows.get(job.name, {}).get("status") == "done"
                       and (out / job.name / "model.cif").is_file())]
    tell = report or (lambda name, line: None)
    for job in jobs:
        if job not in pending:
            tell(job.name, "done before, not built again")
    arrived: queue.Queue = queue.Queue()
    running, started, warnings = {}, {}, {}

    def start(job: BatchJob) -> None:
        try:
            density, sequences, mask = _read_inputs(job)
            remote = start_remote_build(
                client, density, sequences, options(job), mask=mask, device=device,
                on_event=lambda event, name=job.name: arrived.put((name, event)))
        except CryobuildError as err:
            rows[job.name] = {"name": job.name, "status": "failed", "error": str(err)}
            tell(job.name, f"failed: {err}")
            _write_summary(out, rows, order)
            return
        running[job.name], warnings[job.name] = remote, []

    def limit() -> int:
        return IN_FLIGHT_PER_WORKER * max(len(client.scheduler_info()["workers"]), 1)

    try:
        while pending or running:
            while pending and len(running) < limit():
                start(pending.pop(0))
            if not running:
                continue
            name, event = arrived.get()
            if event.kind == "started":
                started[name] = event.time
                tell(name, "started")
            elif event.kind == "round":
                tell(name, event.message)
            elif event.kind == "warning":
                warnings[name].append(event.message)
                tell(name, f"warning: {event.message}")
            elif event.kind == "finished":
                job = running.pop(name)
                rows[name] = _finish(job, name, out, started.get(name, event.time), warnings[name])
                tell(name, _describe(rows[name]))
                _write_summary(out, rows, order)
    except KeyboardInterrupt:
        for name, job in running.items():
            job.cancel()
        for name, job in running.items():
            job.wait(10)
            rows[name] = {"name": name, "status": "cancelled",
                          "warnings": "; ".join(warnings[name])}
        _write_summary(out, rows, order)
        raise
    return rows


def _read_inputs(job: BatchJob):
    from .maps import read_map, read_mask
    from .sequences import read_fasta

    density = read_map(job.map_path)
    mask = read_mask(job.mask_path, density) if job.mask_path is not None else None
    return density, read_fasta(job.fasta_path), mask


def _finish(job, name: str, out: Path, started: float, warnings: list[str]) -> dict:
    """The summary row of a finished `RemoteJob`, its outputs written when it built a model."""
    from .build_folder import BuildFolder
    from .build_outputs import write_build

    row = {"name": name, "status": {"final": "done"}.get(job.outcome, job.outcome),
           "warnings": "; ".join(warnings), "worker": job.worker}
    try:
        result = job.result()
    except Exception as err:  # noqa: BLE001 - the job's own error, recorded in the summary
        return {**row, "error": str(err) if job.outcome == "failed" else ""}
    try:
        with BuildFolder.claim(out / name) as folder:
            folder.save(lambda destination: write_build(result, destination, folder.build_id))
    except CryobuildError as err:
        return {**row, "status": "failed", "error": str(err)}
    row["warnings"] = "; ".join(warnings + folder.kept_notices())
    return {**row, "residues": result.final.num_residues, "raw_residues": result.raw.num_residues,
            "seconds": f"{time.time() - started:.1f}"}


def _describe(row: dict) -> str:
    if row["status"] == "done":
        return f"done: {row['residues']} residues ({row['raw_residues']} raw) in {row['seconds']} s"
    return f"{row['status']}" + (f": {row['error']}" if row.get("error") else "")
