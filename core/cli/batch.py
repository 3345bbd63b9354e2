"""``cryobuild batch``: build the maps of a jobs file through Dask, one output folder each."""

from __future__ import annotations

import sys

HELP = "build many maps (a jobs CSV) on a Dask cluster, one output folder each"


def add_args(parser):
    parser.add_argument("jobs", help="jobs CSV: columns map, fasta, name, optional mask, rounds "
                                     "and resolution (Å; empty: estimated) (paths relative to "
                                     "its folder)")
    parser.add_argument("-o", "--output-dir", required=True,
                        help="folder for the jobs' folders and summary.csv; a second run resumes")
    parser.add_argument("--scheduler", default=None,
                        help="tcp://HOST:PORT of a Dask scheduler whose workers build (default: a "
                             "local cluster sized to this machine)")
    parser.add_argument("--workers", type=int, default=None,
                        help="workers of the local cluster (default: one per core, 4 GB each)")
    parser.add_argument("--device", default="auto",
                        help="the workers' device: auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--quiet", action="store_true", help="print only the final count")


def main(args) -> int:
    import contextlib

    from ..batch import local_cluster, read_jobs, run_batch
    from ..engine.remote import connect
    from ..errors import InputError
    from ..pipeline import BuildOptions

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    jobs = read_jobs(args.jobs)

    def options(job):
        rounds = {} if job.rounds is None else {"rounds": job.rounds}
        return BuildOptions(resolution=job.resolution, **rounds)

    def report(name, line):
        if not args.quiet:
            print(f"{name}: {line}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        if args.scheduler is None:
            address = stack.enter_context(local_cluster(args.workers)).scheduler_address
        else:
            address = args.scheduler
        client = stack.enter_context(connect(address))
        rows = run_batch(jobs, args.output_dir, client, options=options, device=args.device,
                         report=report)
    done = sum(row.get("status") == "done" for row in rows.values())
    print(f"{done} of {len(jobs)} jobs done -> {args.output_dir}/summary.csv")
    return 0 if done == len(jobs) else 1
