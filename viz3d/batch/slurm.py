"""Dask workers started as SLURM jobs (dask-jobqueue's ``SLURMCluster``), for ``viz3d batch --slurm``.

The scheduler runs in the process that runs the batch (a login node, or a job of its own);
each SLURM job runs ``cores`` Dask worker processes of one thread each, with ``memory``
shared between them, until ``walltime``. The cases are then handed out as by ``--dask``
(`viz3d.batch.run`): the workers need viz3d, the data and OUT at the same paths (a shared
file system). The jobs' own logs go to ``OUT/.viz3d-slurm/``.

Before anything is queued, ``sbatch --test-only`` checks the job script, so a partition that
does not exist or a request no node can satisfy is one error line, not a silent wait; a job
that has not started a worker within ``wait`` seconds ends the batch with its state and
SLURM's reason, and every job of the batch is cancelled when it ends, however it ends.
Site settings that viz3d has no option for (an account, a QOS, the network interface the
workers reach the scheduler on) come from Dask's configuration: ``jobqueue.slurm`` in
``~/.config/dask/jobqueue.yaml``, or ``DASK_JOBQUEUE__SLURM__INTERFACE=ib0`` and the like.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import Viz3dError

LOG_FOLDER = ".viz3d-slurm"  # in OUT; a name `viz3d.batch` never takes for a case's results
JOB_NAME = "viz3d-batch"
DEFAULT_JOBS = 4  # jobs queued when the spec names none: one per case to do, at most this many
MEMORY_MARGIN = 1.25  # the jobs' memory over the per-case estimate: a Dask worker's own share, and room
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "TIMEOUT"}
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$")  # sbatch's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S


@dataclass(frozen=True)
class SlurmSpec:
    """What to ask SLURM for: ``jobs`` jobs (default: one per case, at most `DEFAULT_JOBS`) of
    ``cores`` cores (one worker process each) and
    ``memory`` (per job: ``"8GB"``, ``"8GiB"``; default from the largest case), for ``walltime``
    (sbatch's ``-t``), in ``partition`` (default: the cluster's). ``wait`` is how many seconds
    the batch waits for the first worker before it gives up.

    Examples
    --------
    >>> SlurmSpec(jobs=2, cores=4, memory="16GB").check().memory_bytes
    16000000000
    >>> SlurmSpec(walltime="2-00:00:00").check().walltime
    '2-00:00:00'
    """

    jobs: int | None = None
    cores: int = 1
    memory: str | None = None
    walltime: str = "01:00:00"
    partition: str | None = None
    wait: float = 600.0

    def check(self) -> SlurmSpec:
        """The spec itself when every field makes sense; otherwise one `Viz3dError` naming the option.

        >>> SlurmSpec(cores=0).check()
        Traceback (most recent call last):
        ...
        viz3d.errors.Viz3dError: --slurm-cores must be at least 1, got 0
        """
        for name, value in (("jobs", self.jobs), ("cores", self.cores)):
            if value is not None and value < 1:
                raise Viz3dError(f"--slurm-{name} must be at least 1, got {value}")
        if self.memory is not None and self.memory_bytes is None:
            raise Viz3dError(f"--slurm-memory: expected an amount such as 8GB or 8GiB, got {self.memory!r}")
        if not _WALLTIME.match(self.walltime):
            raise Viz3dError(f"--slurm-walltime: expected sbatch's form such as 01:30:00 or 1-00:00:00, got {self.walltime!r}")
        if self.wait <= 0:
            raise Viz3dError(f"--slurm-wait must be more than 0 seconds, got {self.wait:g}")
        return self

    @property
    def memory_bytes(self) -> int | None:
        """``memory`` in bytes (None when not given or not an amount)."""
        if self.memory is None:
            return None
        from dask.utils import parse_bytes

        try:
            amount = parse_bytes(self.memory)
        except (ValueError, TypeError):
            return None
        return amount if amount > 0 else None


def job_memory(spec: SlurmSpec, cases) -> int:
    """Bytes to ask per job: ``spec.memory``, else ``cores`` times the largest case's estimate
    (`viz3d.batch.resources.estimate_case_memory`) with `MEMORY_MARGIN`, in whole GiB.

    >>> from viz3d.batch.layouts import Case
    >>> job_memory(SlurmSpec(cores=2), [Case("x", None, None)]) / 2**30
    2.0
    """
    if spec.memory is not None:
        return spec.memory_bytes
    from .resources import BASE_MEMORY, estimate_case_memory

    largest = max((estimate_case_memory(case) for case in cases), default=BASE_MEMORY)
    return math.ceil(spec.cores * largest * MEMORY_MARGIN / 2**30) * 2**30


def start_client(stack, spec: SlurmSpec, cases, out: Path):
    """``(client, watch)``: a Dask client of a new SLURMCluster with ``spec.jobs`` jobs queued and
    at least one worker connected, and `watch_jobs` for it; the cluster (and so its jobs) ends
    when ``stack`` closes.

    Raises
    ------
    Viz3dError
        No ``sbatch`` on PATH, no dask-jobqueue, a job script that sbatch refuses, or no
        worker within ``spec.wait`` seconds (then with each job's state and reason).
    """
    spec.check()
    if shutil.which("sbatch") is None:
        raise Viz3dError("--slurm: no sbatch on PATH (SLURM's commands are not installed here; run the batch on "
                         "the cluster's login node, or use --shard in an sbatch --array job)")
    SLURMCluster = import_slurm_cluster()
    from distributed import Client

    logs = Path(out) / LOG_FOLDER
    logs.mkdir(parents=True, exist_ok=True)
    cluster = stack.enter_context(SLURMCluster(
        cores=spec.cores, processes=spec.cores, memory=f"{job_memory(spec, cases)}B", walltime=spec.walltime,
        queue=spec.partition, job_name=JOB_NAME, log_directory=str(logs), python=sys.executable,
        job_script_prologue=["export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1"],
        scheduler_options={"dashboard_address": None}, silence_logs="error"))
    check_job_script(cluster.job_script())
    cluster.scale(jobs=spec.jobs or min(DEFAULT_JOBS, max(1, len(cases))))
    client = stack.enter_context(Client(cluster))
    wait_for_worker(client, cluster, spec.wait, logs)
    return client, lambda: watch_jobs(client, cluster, logs)


def import_slurm_cluster():
    """dask-jobqueue's ``SLURMCluster``, imported with Ctrl-C left as it was: importing
    dask-jobqueue makes SIGINT exit the process with status 0 (its runner's handler), which
    would end a batch silently instead of as the command line's ``viz3d: interrupted``."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise Viz3dError("--slurm needs dask-jobqueue: pip install dask-jobqueue (or viz3d's 'dask' extra)") from None
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)
    return SLURMCluster


def check_job_script(script: str) -> None:
    """Ask ``sbatch --test-only`` whether the job could run at all; its refusal is one error line."""
    try:
        done = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Viz3dError(f"--slurm: sbatch --test-only did not answer ({exc})") from None
    if done.returncode != 0:
        lines = [line.removeprefix("sbatch: error: ").strip() for line in done.stderr.splitlines() if line.strip()]
        raise Viz3dError(f"--slurm: SLURM refuses the workers' job: {'; '.join(lines) or f'exit {done.returncode}'}")


def wait_for_worker(client, cluster, wait: float, logs: Path) -> None:
    """Return once a worker has joined; raise one line when ``wait`` seconds pass first, or when
    every job has ended without one (the line names the jobs' states, reasons and logs)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            client.wait_for_workers(1, timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            return
        except TimeoutError:
            pass
        states = job_states(job_ids(cluster))
        if states and all(state in ENDED for state, _ in states.values()):
            raise Viz3dError(f"--slurm: the workers' jobs ended before a worker joined ({describe(states)}); "
                             f"see their logs in {logs}")
        if time.monotonic() >= deadline:
            raise Viz3dError(f"--slurm: no worker started within {wait:g} s ({describe(states) or 'no job queued'}); "
                             "the jobs were cancelled: raise --slurm-wait, or ask for fewer cores, less memory "
                             "or another --slurm-partition")


def watch_jobs(client, cluster, logs: Path) -> None:
    """Raise one line when no worker is connected and none will come: every job of the cluster
    has ended (its walltime, scancel, a node failure); dask-jobqueue queues no new ones."""
    if client.scheduler_info().get("workers"):
        return
    ids = job_ids(cluster)
    states = job_states(ids)
    if ids and not (states and all(state in ENDED for state, _ in states.values())):
        return
    raise Viz3dError(f"--slurm: every worker's job has ended ({describe(states) or 'all gone'}) with cases still to do; "
                     f"the finished cases are in place: run the same command again to resume (a longer "
                     f"--slurm-walltime or more --slurm-jobs); the jobs' logs are in {logs}")


def job_ids(cluster) -> list[str]:
    """The SLURM ids of the cluster's jobs that sbatch has accepted."""
    return [job.job_id for job in list(cluster.workers.values()) if getattr(job, "job_id", None)]


def job_states(ids) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` from ``squeue``; jobs squeue no longer knows are left out."""
    if not ids:
        return {}
    try:
        done = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


def describe(states) -> str:
    """``job 12 PENDING (Resources), job 13 RUNNING``.

    >>> describe({"12": ("PENDING", "Resources"), "13": ("RUNNING", "None")})
    'job 12 PENDING (Resources), job 13 RUNNING'
    """
    return ", ".join(f"job {job} {state}" + (f" ({reason})" if reason and reason != "None" else "")
                     for job, (state, reason) in states.items())
