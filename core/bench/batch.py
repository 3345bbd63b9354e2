"""Batch benchmark: ``python -m cryobuild.bench.batch [--maps 20] [--workers 2] [--rounds 1]``.

Simulates ``--maps`` maps of PyMOL's il2 (126 residues) at 3.0-4.5 Å, on 1.0-1.2 Å voxels,
noise-free or at SNR 5 and 3, and builds them with ``cryobuild batch`` on a local Dask cluster
of ``--workers`` worker processes, in a child process. When `KILL_WORKER_AFTER` jobs are done
one of the cluster's worker processes is killed (SIGKILL), and when half are done the batch
itself is killed; then ``cryobuild batch`` runs again and must finish the rest without building
the finished jobs again. Then every map is built in this process, one after the other, with
one torch thread (as the workers run), and each job's outcome is compared with the batch's:
the same model (residues and atoms to 1e-3 Å, as mmCIF stores them) or the same refusal.

Prints one JSON line: jobs, seconds of the batch's two runs and of the sequential builds,
whether a worker was killed and which jobs then ran again, how many jobs were done when the
batch was killed and whether any of them was built again, and how many outcomes equal the
sequential builds'.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["KILL_WORKER_AFTER", "main"]

#: Jobs done before a worker is killed.
KILL_WORKER_AFTER = 3
#: The maps' (resolution Å, voxel Å, SNR or None), cycled through.
VARIANTS = tuple((resolution, voxel, snr) for resolution in (3.0, 3.5, 4.0, 4.5)
                 for voxel, snr in ((1.0, None), (1.1, None), (1.2, None), (1.0, 5.0), (1.1, 3.0)))


def _make_jobs(folder: Path, count: int, rounds: int) -> list[str]:
    from ..data import read_structure
    from ..demo_data import demo_structure_path
    from ..maps import write_map
    from ..models import read_model
    from ..residues import one_letter
    from ..simulate import SimulationOptions, simulate_map

    path = demo_structure_path()
    structure = read_structure(path)
    sequence = "".join(one_letter(int(a)) for a in read_model(path).aatype)
    (folder / "il2.fasta").write_text(f">il2\n{sequence}\n")
    names, rows = [], ["map,fasta,name,rounds"]
    for index in range(count):
        resolution, voxel, snr = VARIANTS[index % len(VARIANTS)]
        name = f"il2_{index:02d}_{resolution}A_{voxel}_snr{snr}"
        options = SimulationOptions(resolution=resolution, voxel_size=voxel, snr=snr)
        density = simulate_map(structure, options, np.random.default_rng(index))
        write_map(density, folder / f"{name}.mrc")
        names.append(name)
        rows.append(f"{name}.mrc,il2.fasta,{name},{rounds}")
    (folder / "jobs.csv").write_text("\n".join(rows) + "\n")
    return names


def _done(out: Path) -> list[str]:
    from ..batch import read_summary

    return [name for name, row in read_summary(out).items() if row["status"] == "done"]


def _run_killed(command: list[str], out: Path, jobs: int) -> dict:
    """Run the batch ``command``; kill one of its worker processes after `KILL_WORKER_AFTER`
    jobs are done and the batch when half are. Its figures."""
    import psutil

    started = time.time()
    batch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process = psutil.Process(batch.pid)
    killed_worker = None
    while batch.poll() is None:
        time.sleep(0.2)
        done = len(_done(out))
        if done >= KILL_WORKER_AFTER and killed_worker is None:
            workers = [p for p in process.children(recursive=True)
                       if "spawn_main" in " ".join(p.cmdline())]
            if workers:
                killed_worker = workers[0].pid
                os.kill(killed_worker, signal.SIGKILL)
        if done >= jobs // 2:
            descendants = process.children(recursive=True)
            batch.send_signal(signal.SIGKILL)
            batch.wait()
            _, alive = psutil.wait_procs(descendants, timeout=10)
            for leftover in alive:  # the cluster's workers, should they outlive the batch
                leftover.kill()
            break
    return {"first_run_s": round(time.time() - started, 1),
            "worker_killed": killed_worker is not None, "done_when_batch_killed": len(_done(out))}


def _sequential(folder: Path, names: list[str], rounds: int) -> dict[str, object]:
    """Each job built here, one after the other, with one torch thread: its model file, or the
    error that refused it."""
    import torch

    from ..build_outputs import write_build
    from ..cli.build import build_with_engine
    from ..errors import CryobuildError
    from ..maps import read_map
    from ..pipeline import BuildOptions, Networks
    from ..sequences import read_fasta

    torch.set_num_threads(1)
    networks = Networks.load("cpu")
    sequences = read_fasta(folder / "il2.fasta")
    outcomes = {}
    for name in names:
        try:
            result, _ = build_with_engine(read_map(folder / f"{name}.mrc"), sequences,
                                          BuildOptions(rounds=rounds), device="cpu", quiet=True,
                                          networks=networks)
        except CryobuildError as err:
            outcomes[name] = err
            continue
        write_build(result, folder / "sequential" / name, "sequential")
        outcomes[name] = folder / "sequential" / name / "model.cif"
    return outcomes


def _same(batch_row: dict, batch_model: Path, sequential) -> bool:
    from ..models import read_model

    if isinstance(sequential, Exception):
        return batch_row["status"] == "failed"
    if batch_row["status"] != "done":
        return False
    a, b = read_model(batch_model), read_model(sequential)
    return a.num_residues == b.num_residues and bool(
        np.allclose(a.atom_positions, b.atom_positions, atol=1e-3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=20, help="jobs in the batch")
    parser.add_argument("--workers", type=int, default=2, help="workers of the local cluster")
    parser.add_argument("--rounds", type=int, default=1, help="graph network rounds per build")
    args = parser.parse_args(argv)

    from ..batch import read_summary

    with tempfile.TemporaryDirectory(prefix="cryobuild-bench-batch-") as tmp:
        folder = Path(tmp)
        names = _make_jobs(folder, args.maps, args.rounds)
        out = folder / "out"
        command = [sys.executable, "-m", "cryobuild", "batch", str(folder / "jobs.csv"), "-o",
                   str(out), "--workers", str(args.workers), "--device", "cpu", "--quiet"]
        row = {"jobs": args.maps, "workers": args.workers, "rounds": args.rounds,
               **_run_killed(command, out, args.maps)}
        finished = _done(out)
        stamps = {name: (out / name / "model.cif").stat().st_mtime_ns for name in finished}
        started = time.time()
        second = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        row["second_run_s"] = round(time.time() - started, 1)
        summary = read_summary(out)
        row["statuses"] = {status: sum(r["status"] == status for r in summary.values())
                           for status in sorted({r["status"] for r in summary.values()})}
        row["second_run_exit"] = second.returncode
        row["finished_built_again"] = sum(
            (out / name / "model.cif").stat().st_mtime_ns != stamps[name] for name in finished)
        row["ran_again_after_worker_death"] = [name for name, r in summary.items()
                                               if "another worker" in r["warnings"]]
        started = time.time()
        sequential = _sequential(folder, names, args.rounds)
        row["sequential_s"] = round(time.time() - started, 1)
        row["same_as_sequential"] = sum(
            _same(summary[name], out / name / "model.cif", sequential[name]) for name in names)
    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
