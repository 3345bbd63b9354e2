"""Builds on Dask workers: a jobs file is checked line by line; then a real scheduler and two
workers, each its own process on loopback, build small simulated il2 maps (one round).
``batch`` resumes after being killed without building finished jobs again and writes what local
builds write; ``build --scheduler`` does too; a cancelled remote job stops within
`CANCEL_SECONDS`; a job whose worker is killed runs again on the other worker and finishes."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cryobuild.batch import read_jobs
from cryobuild.checkpoints import checkpoint_path
from cryobuild.errors import Cancelled, InputError
from cryobuild.pipeline import BuildOptions

needs_cluster = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None
    or not (checkpoint_path("detect").is_file() and checkpoint_path("gnn").is_file()),
    reason="needs the dask extra and the trained networks")

#: Seconds from `RemoteJob.cancel` to the ``cancelled`` event (the issue's bound).
CANCEL_SECONDS = 3.0
#: Seconds to wait for the cluster to start, and for a job.
START_SECONDS, JOB_SECONDS = 60.0, 120.0
#: Å: models built remotely and locally agree to float32 round-off.
POSITION_TOLERANCE = 1e-3
#: The jobs: name -> (resolution Å, voxel Å) of il2's simulated map.
JOBS = {"il2_4A": (4.0, 1.0), "il2_4A_coarse": (4.0, 1.2), "il2_3A": (3.0, 1.0)}


class Cluster:
    """A scheduler and workers in their own processes (no nannies: killing a worker's process
    kills the worker). Workers use one thread, as `cryobuild.batch.local_cluster`'s do."""

    def __init__(self, folder: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        self.folder = folder
        self.processes = [self._start(["scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], "scheduler")]
        self.workers = [self.add_worker() for _ in range(2)]

    def _start(self, arguments: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen([sys.executable, "-m", "dask", *arguments], stdout=log,
                                   stderr=subprocess.STDOUT, env=env)
        log.close()
        return process

    def add_worker(self) -> subprocess.Popen:
        name = f"worker{len(self.processes)}"
        process = self._start(["worker", self.address, "--nthreads", "1", "--no-nanny",
                               "--no-dashboard", "--name", name], name)
        self.processes.append(process)
        return process

    def wait_for_workers(self, client, count: int) -> None:
        client.wait_for_workers(count, timeout=START_SECONDS)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import distributed

    cluster = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        with distributed.Client(cluster.address, timeout=START_SECONDS) as client:
            cluster.wait_for_workers(client, 2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def client(cluster):
    import distributed

    with distributed.Client(cluster.address) as client:
        yield client


@pytest.fixture(scope="module")
def il2_jobs(tmp_path_factory, il2_path):
    """The jobs' maps and FASTA files, and a jobs file listing them (rounds 1, each map's
    resolution)."""
    from cryobuild.data import read_structure
    from cryobuild.maps import write_map
    from cryobuild.models import read_model
    from cryobuild.residues import one_letter
    from cryobuild.simulate import SimulationOptions, simulate_map

    folder = tmp_path_factory.mktemp("jobs")
    structure = read_structure(il2_path)
    sequence = "".join(one_letter(int(a)) for a in read_model(il2_path).aatype)
    (folder / "il2.fasta").write_text(f">il2\n{sequence}\n")
    lines = ["map,fasta,name,mask,rounds,resolution"]
    for name, (resolution, voxel) in JOBS.items():
        options = SimulationOptions(resolution=resolution, voxel_size=voxel)
        density = simulate_map(structure, options, np.random.default_rng(0))
        write_map(density, folder / f"{name}.mrc")
        lines.append(f"{name}.mrc,il2.fasta,{name},,1,{resolution}")
    (folder / "jobs.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("rows, problem", [
    ("map,name\na.mrc,a", "no fasta column"),
    ("map,fasta,name\na.mrc,s.fasta,a b", "cannot be a folder name"),
    ("map,fasta,name\na.mrc,s.fasta,a\na.mrc,s.fasta,a", "line 3: the name 'a' is used twice"),
    ("map,fasta,name\nb.mrc,s.fasta,a", "line 2: no such map file"),
    ("map,fasta,name,rounds\na.mrc,s.fasta,a,two", "rounds must be a whole number"),
    ("map,fasta,name,resolution\na.mrc,s.fasta,a,high", "resolution must be a number of Å"),
    ("map,fasta,name", "lists no jobs"),
])
def test_a_jobs_file_is_checked_line_by_line(tmp_path, rows, problem):
    (tmp_path / "a.mrc").write_bytes(b"")
    (tmp_path / "s.fasta").write_text(">s\nMK\n")
    (tmp_path / "jobs.csv").write_text(rows + "\n")
    with pytest.raises(InputError, match=problem):
        read_jobs(tmp_path / "jobs.csv")


def _models_equal(path_a: Path, path_b: Path) -> None:
    from cryobuild.models import read_model

    a, b = read_model(path_a), read_model(path_b)
    assert a.num_residues == b.num_residues
    np.testing.assert_array_equal(a.aatype, b.aatype)
    np.testing.assert_array_equal(a.chain_id, b.chain_id)
    np.testing.assert_allclose(a.atom_positions, b.atom_positions, atol=POSITION_TOLERANCE)


def _local_build(folder: Path, name: str, out: Path) -> Path:
    """The job built in this process with one torch thread (as on a worker), at its map's
    resolution (the jobs file's), written as `cryobuild build` writes it."""
    import torch

    from cryobuild.build_outputs import write_build
    from cryobuild.cli.build import build_with_engine
    from cryobuild.maps import read_map
    from cryobuild.sequences import read_fasta

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result, _ = build_with_engine(read_map(folder / f"{name}.mrc"),
                                      read_fasta(folder / "il2.fasta"),
                                      BuildOptions(rounds=1, resolution=JOBS[name][0]),
                                      device="cpu", quiet=True)
    finally:
        torch.set_num_threads(threads)
    write_build(result, out, "local")
    return out / "model.cif"


@needs_cluster
def test_batch_resumes_after_a_kill_and_writes_what_local_builds_write(cluster, il2_jobs, tmp_path):
    from cryobuild.batch import read_summary
    from cryobuild.cli import main

    out = tmp_path / "out"
    arguments = ["batch", str(il2_jobs / "jobs.csv"), "-o", str(out), "--scheduler",
                 cluster.address, "--device", "cpu", "--quiet"]
    command = [sys.executable, "-m", "cryobuild", *arguments]
    first = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + JOB_SECONDS
    while time.time() < deadline and not any(
            row["status"] == "done" for row in read_summary(out).values()):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = {name for name, row in read_summary(out).items() if row["status"] == "done"}
    assert finished and finished != set(JOBS)
    stamps = {name: (out / name / "model.cif").stat().st_mtime_ns for name in finished}

    assert main(arguments) == 0
    summary = read_summary(out)
    assert {name: row["status"] for name, row in summary.items()} == {name: "done" for name in JOBS}
    assert all(int(summary[name]["residues"]) > 50 for name in JOBS)
    for name in finished:  # not built again
        assert (out / name / "model.cif").stat().st_mtime_ns == stamps[name]
    for name in JOBS:
        local = _local_build(il2_jobs, name, tmp_path / f"local_{name}")
        _models_equal(out / name / "model.cif", local)

    remote = tmp_path / "remote_build"
    assert main(["build", "-v", str(il2_jobs / "il2_4A.mrc"), "-f", str(il2_jobs / "il2.fasta"),
                 "-o", str(remote), "--rounds", "1", "--resolution", str(JOBS["il2_4A"][0]),
                 "--device", "cpu", "--scheduler", cluster.address, "--quiet"]) == 0
    _models_equal(remote / "model.cif", out / "il2_4A" / "model.cif")


def _il2_job(client, il2_jobs, on_event):
    from cryobuild.engine.remote import start_remote_build
    from cryobuild.maps import read_map
    from cryobuild.sequences import read_fasta

    return start_remote_build(client, read_map(il2_jobs / "il2_3A.mrc"),
                              read_fasta(il2_jobs / "il2.fasta"), BuildOptions(rounds=1),
                              device="cpu", on_event=on_event)


@needs_cluster
def test_a_cancelled_remote_job_stops_within_seconds(client, il2_jobs):
    asked = []

    def cancel_in_gnn(event):
        if event.kind == "stage" and event.stage == "gnn" and not asked:
            asked.append(time.time())
            job.cancel()

    job = _il2_job(client, il2_jobs, cancel_in_gnn)
    events = list(job.events(timeout=JOB_SECONDS))
    assert [e.kind for e in events][-2:] == ["cancelled", "finished"]
    assert events[-2].time - asked[0] <= CANCEL_SECONDS, events[-2].time - asked[0]
    with pytest.raises(Cancelled):
        job.result()


@needs_cluster
def test_a_job_whose_worker_is_killed_runs_again_and_finishes(cluster, client, il2_jobs):
    killed = []

    def kill_in_gnn(event):
        if event.kind == "stage" and event.stage == "gnn" and not killed:
            # the worker building the job, by the process id it reports
            address = next(a for a, keys in client.processing().items() if keys)
            pid = client.run(os.getpid, workers=[address])[address]
            os.kill(pid, signal.SIGKILL)
            killed.append(address)

    job = _il2_job(client, il2_jobs, kill_in_gnn)
    events = list(job.events(timeout=JOB_SECONDS))
    result = job.result()
    assert killed and job.worker != killed[0]
    assert [e.kind for e in events].count("started") == 1
    assert any(e.kind == "warning" and "another worker" in e.message for e in events)
    assert result.final.num_residues > 50
    cluster.add_worker()  # for whatever runs next


@needs_cluster
def test_an_engine_with_a_scheduler_infers_there_and_keeps_the_session_here(client, il2_jobs,
                                                                            tmp_path):
    """The panel's "remote" device: rounds stream into the local session as they come, the
    final model is relaxed and saved here, and a cancel stops the worker's build."""
    from cryobuild.engine import Engine
    from cryobuild.maps import read_map
    from cryobuild.sequences import read_fasta

    engine = Engine("cpu", scheduler=client)
    density, sequences = read_map(il2_jobs / "il2_3A.mrc"), read_fasta(il2_jobs / "il2.fasta")
    job = engine.start_build(density, sequences, BuildOptions(rounds=1), session=tmp_path / "s")
    events = list(job.events(timeout=JOB_SECONDS))
    result = job.result()
    kinds = [event.kind for event in events]
    assert kinds[-2:] == ["final", "finished"] and "round" in kinds and "points" in kinds
    assert any("inference on the workers of" in event.message for event in events)
    assert result.relax_report is not None and result.final.num_residues > 50
    assert engine.open_session(tmp_path / "s").state.num_residues == result.final.num_residues

    asked = []

    def cancel_in_gnn(event):
        if event.kind == "stage" and event.stage == "gnn" and not asked:
            asked.append(time.time())
            job.cancel()

    job = engine.start_build(density, sequences, BuildOptions(rounds=1), session=tmp_path / "t",
                             on_event=cancel_in_gnn)
    events = list(job.events(timeout=JOB_SECONDS))
    assert [e.kind for e in events][-2:] == ["cancelled", "finished"]
    assert events[-2].time - asked[0] <= CANCEL_SECONDS, events[-2].time - asked[0]
