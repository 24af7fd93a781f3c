"""Running every case of a batch: a pool of local worker processes (default), a Dask cluster,
or Dask workers started as SLURM jobs.

Each case runs in `viz3d.batch.case.run_case`, which never raises for a problem of its case;
the engines only hand the cases out and collect the results in case order. One batch at a
time writes into an output folder (a lock file in it says so).

- ``local``: ``concurrent.futures.ProcessPoolExecutor`` with spawned workers (a fresh
  interpreter each: VTK's OpenGL state is never forked), as many as the cores and the memory
  allow (`default_workers`). A worker that dies (killed for memory, a crash in a library) is
  not the end: its cases are run again one at a time in a worker of their own, and a case
  that kills that one too fails with a line saying so.
- ``dask``: the cases as tasks of a Dask distributed cluster: ``"local"`` starts a
  ``distributed.LocalCluster`` of worker processes (one thread each), anything else is a
  scheduler address (``tcp://host:8786``). The workers need viz3d and the data at the same paths.
- ``slurm``: the ``dask`` engine on workers that dask-jobqueue starts as SLURM jobs, as a
  `viz3d.batch.slurm.SlurmSpec` asks (jobs, cores, memory, walltime, partition).
- ``inline``: one case after another in this process (for tests and debugging).

Ctrl-C (KeyboardInterrupt) stops the batch at once: workers are ended, what they were writing
is removed (it was in staging folders), finished cases stay complete, and the interrupt is raised.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import Viz3dError
from ..parallel import usable_cores
from .case import run_case, tidy
from .layouts import Case
from .options import BatchOptions
from .resources import default_workers

ENGINES = ("local", "dask", "slurm", "inline")
LOCK_NAME = ".viz3d-batch.lock"
DASK_CONNECT_TIMEOUT = "20s"  # how long --dask ADDRESS waits for its scheduler to answer
WATCH_SECONDS = 5.0  # --slurm: how often, while no case finishes, the batch checks that its workers' jobs live
# --dask local's own cluster wakes less often than Dask's defaults, which serve its dashboard (none
# here) and its event-loop watchdog (its warnings silenced here); memory limits are checked each
# second instead of ten times a second. The scheduler's and nannies' loops took 1.1-2.1 s of CPU in
# the command's process over an 8-case batch, 0.75-1.05 s like this. With queued tasks there is
# nothing for work stealing to do.
QUIET_LOCAL_CLUSTER = {"distributed.admin.tick.interval": "1s", "distributed.admin.system-monitor.interval": "5s",
                       "distributed.worker.memory.monitor-interval": "1s", "distributed.scheduler.work-stealing": False}


@dataclass(frozen=True)
class BatchResult:
    """The records of `run_case`, in case order (``record["case"]`` is the case's row)."""

    records: tuple[dict, ...]

    @property
    def failed(self) -> list[dict]:
        """The rows of the cases that failed."""
        return [r["case"] for r in self.records if r["case"]["status"] == "failed"]


@contextlib.contextmanager
def output_lock(out: Path, name: str = LOCK_NAME):
    """Hold ``out``'s batch lock (the file ``name`` in it) for the block; refuse when another
    batch holds it. Each shard of a batch has a lock of its own."""
    try:
        import fcntl
    except ImportError:  # not POSIX: unguarded
        yield
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = open(out / name, "a")
    except OSError as exc:
        raise Viz3dError(f"{out}: cannot write to the output folder ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Viz3dError(f"{out}: another viz3d batch is writing into this folder; wait for it or "
                             "choose another --out") from None
        yield


def run_batch(cases, options: BatchOptions, out, *, engine: str = "local", workers: int | None = None,
              scheduler: str = "local", force: bool = False, progress=None, lock: str = LOCK_NAME,
              slurm=None) -> BatchResult:
    """Run every case into ``out``; return their records in case order.

    ``engine`` is one of `ENGINES`; ``workers`` the number of worker processes (default
    `default_workers`); ``scheduler`` the Dask scheduler's address, or ``"local"`` for a
    LocalCluster of ``workers`` processes; ``slurm`` the `viz3d.batch.slurm.SlurmSpec` of the
    ``slurm`` engine (default: its defaults). ``force`` redoes cases already done. ``progress``,
    if given, is called as ``progress(done, total, record)`` as each case ends. ``lock`` is the
    name of the lock file in ``out`` (each shard of a batch has its own).
    """
    cases = list(cases)
    if engine not in ENGINES:
        raise Viz3dError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if workers is not None and workers < 1:
        raise Viz3dError(f"--workers must be at least 1, got {workers}")
    if engine == "slurm":
        from .slurm import SlurmSpec

        slurm = (slurm or SlurmSpec()).check()
    out = Path(out)
    workers = workers or default_workers(cases)
    report = progress or (lambda done, total, record: None)
    ids = [case.id for case in cases]
    with output_lock(out, lock):
        tidy(out, ids)
        records = {} if force else _already_done(cases, options, out)
        for count, case in enumerate(records.values(), start=1):
            report(count, len(cases), case)
        todo = [case for case in cases if case.id not in records]
        tell = lambda done, total, record: report(len(records) + done, len(cases), record)  # noqa: E731
        try:
            if not todo:
                pass
            elif engine == "inline":
                records.update(_run_inline(todo, options, out, force, tell))
            elif engine == "local":
                records.update(_run_pool(todo, options, out, force, min(workers, len(todo)), tell))
            elif engine == "slurm":
                records.update(_run_dask(todo, options, out, force, _slurm_client(slurm, todo, out), tell))
            else:
                records.update(_run_dask(todo, options, out, force, _dask_client(scheduler, workers), tell))
        except BaseException:
            tidy(out, ids)  # what ended workers were writing
            raise
    return BatchResult(tuple(records[case.id] for case in cases))


def _already_done(cases, options, out: Path) -> dict:
    """The records of cases done before with the same inputs and options, found here without
    starting a worker (only cases that have a done-marker are hashed)."""
    from .case import MARKER, case_key, done_row

    records = {}
    for case in cases:
        if (out / case.id / MARKER).is_file():
            try:
                key, _ = case_key(case, options)
            except Viz3dError:
                continue  # the case's own run says what is wrong
            stored = done_row(out, case, key)
            if stored is not None:
                stored["case"]["status"] = "reused"
                records[case.id] = stored
    return records


def _run_inline(cases, options, out, force, report) -> dict:
    records = {}
    for case in cases:
        records[case.id] = run_case(case, options, out, force)
        report(len(records), len(cases), records[case.id])
    return records


# What sizes a worker's thread pools: viz3d's own (`viz3d.parallel.cores`), VTK's threaded
# filters, Mesa llvmpipe's rasteriser (off-screen drawing) and OpenMP.


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Each of ``workers`` processes' share of the ``cores`` (default: this process's), at least one.

    >>> threads_per_worker(2, cores=2), threads_per_worker(3, cores=8), threads_per_worker(4, cores=2)
    (1, 2, 1)
    """
    if cores is None:
        cores = usable_cores()
    return max(1, cores // max(1, workers))


def _prepare_worker(threads: int | None) -> None:
    """A worker process, local or Dask, set up as a command's process with its share of the
    cores (`viz3d.runtime.enter_worker`)."""
    from ..runtime import enter_worker

    enter_worker(threads)


def _worker_init(threads: int | None = None) -> None:
    """A pool worker: Ctrl-C is the main process's to handle (it ends the workers), and the
    process set up as `_prepare_worker` does with its ``threads``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prepare_worker(threads)


def _worker_case(case, options, out, force):
    """`run_case` in a worker process of the local pool, which is then settled for its next case
    (`viz3d.runtime.settle_worker`)."""
    from ..runtime import settle_worker

    record = run_case(case, options, out, force)
    settle_worker()
    return record


def _dask_case(case, options, out, force):
    """`run_case` in a Dask worker, its thread pools sized to the worker's Dask threads (one
    for a LocalCluster's workers, dask-jobqueue's and ``dask worker --nthreads 1``'s)."""
    threads = None
    try:
        from distributed import get_worker

        worker = get_worker()
        threads = getattr(getattr(worker, "state", worker), "nthreads", None)
    except (ImportError, ValueError):  # not in a Dask worker
        pass
    _prepare_worker(threads)
    return _worker_case(case, options, out, force)


def _run_pool(cases, options, out, force, workers, report, function=_worker_case) -> dict:
    """The cases on a local process pool; cases of a worker that died are run again alone."""
    records: dict = {}
    total = len(cases)

    def finish(case, record):
        records[case.id] = record
        report(len(records), total, record)

    broken = _pool_pass(function, cases, options, out, force, workers, finish, max_tasks=None)
    for case in broken:  # alone, in a fresh worker, so a case that kills its worker is found out
        again = _pool_pass(function, [case], options, out, force, 1, finish, max_tasks=1)
        if again:
            finish(case, _died(case))
    return records


def _pool_pass(function, cases, options, out, force, workers, finish, max_tasks) -> list[Case]:
    """Run ``function`` (`run_case`) for ``cases`` on a pool of ``workers``; return those whose worker died."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    workers = min(workers, len(cases)) or 1
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads_per_worker(workers),),
                               max_tasks_per_child=max_tasks)
    broken = []
    try:
        futures = {pool.submit(function, case, options, str(out), force): case for case in cases}
        for future in as_completed(futures):
            try:
                finish(futures[future], future.result())
            except BrokenProcessPool:
                broken.append(futures[future])
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)
    return sorted(broken, key=cases.index)


def _end_workers(pool) -> None:
    """Stop a process pool now: queued cases cancelled, running workers terminated."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)


def _died(case: Case) -> dict:
    row = {"case": case.id, "ct": str(case.ct or ""), "label": str(case.label or ""), **dict(case.extra),
           "status": "failed", "seconds": None, "peak_memory_mb": None,
           "error": "the worker process died while making this case (killed for lack of memory, or a crash "
                    "in a library); it died again when run alone"}
    return {"key": None, "case": row, "structures": []}


def _dask_client(scheduler: str, workers: int):
    """``connect(stack)``: ``(client, None)``, the client of the scheduler at ``scheduler``, or of
    a new LocalCluster of ``workers`` processes for ``"local"``, closed with ``stack``."""
    def connect(stack):
        from distributed import Client, LocalCluster

        if scheduler == "local":
            import dask

            from ..runtime import HEAP_ENVIRONMENT

            # This LocalCluster's workers run cases as the local pool's do. Dask's own defaults cost:
            # its workers trim the C heap at every free (MALLOC_TRIM_THRESHOLD_=64 KiB), a case took
            # 20-35 % longer for 15 % less memory; and sample their task's stack every 10 ms. Their
            # heap is kept compact from the start (`viz3d.runtime.compact_heap`, before any thread).
            # Its workers are forked when nothing here can be harmed by it (`_may_fork`): a spawned worker
            # imports Dask afresh, 0.4 s of a core each, and takes 0.35 s more to close.
            environ = {f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in HEAP_ENVIRONMENT.items()}
            with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                  **environ, "distributed.worker.profile.enabled": False,
                                  "distributed.worker.multiprocessing-method": "fork" if _may_fork() else "spawn",
                                  **QUIET_LOCAL_CLUSTER}):
                # Dask's nanny sets those variables in the process that starts a worker, this one:
                # they are put back once the cluster is closed.
                stack.callback(_restore_environ, dict(os.environ))
                cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                           dashboard_address=None, silence_logs=40))
            return stack.enter_context(Client(cluster)), None
        try:
            return stack.enter_context(Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)), None
        except (OSError, TimeoutError) as exc:
            raise Viz3dError(f"--dask {scheduler}: cannot reach the Dask scheduler ({exc})") from None

    return connect


def _restore_environ(saved: dict) -> None:
    """Put this process's environment back to ``saved``."""
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _may_fork() -> bool:
    """Whether ``--dask local`` may fork its workers from this process rather than spawn them: on
    Linux, and only while no VTK is loaded here (a notebook that has drawn a scene holds OpenGL
    and VTK's thread pools, which a forked worker must not inherit; the command line's process
    never loads it)."""
    return sys.platform.startswith("linux") and not any(name.startswith("vtkmodules") for name in sys.modules)


def _slurm_client(spec, cases, out: Path):
    """``connect(stack)``: ``(client, watch)`` of Dask workers started as SLURM jobs
    (`viz3d.batch.slurm.start_client`)."""
    def connect(stack):
        from .slurm import start_client

        return start_client(stack, spec, cases, out)

    return connect


def _run_dask(cases, options, out, force, connect, report) -> dict:
    """The cases as tasks of the Dask cluster whose ``(client, watch)`` ``connect(stack)`` gives
    (``watch``, when not None, raises once no worker can come back: see `_finished`)."""
    try:
        import distributed  # noqa: F401 - the engine's dependency, said in one line when missing
    except ImportError:
        raise Viz3dError("the Dask engine needs the 'distributed' package: pip install distributed") from None
    records: dict = {}
    with contextlib.ExitStack() as stack:
        client, watch = connect(stack)
        futures = {client.submit(_dask_case, case, options, str(out), force, pure=False, key=f"viz3d-batch-{case.id}"
                                 f"-{os.getpid()}"): case for case in cases}
        try:
            for future in _finished(futures, watch):
                case = futures[future]
                try:
                    records[case.id] = future.result()
                except Exception as exc:  # noqa: BLE001 - the worker died (KilledWorker) or the task was lost
                    records[case.id] = _lost(case, exc)
                report(len(records), len(cases), records[case.id])
        except BaseException:
            client.cancel(list(futures))
            raise
    return records


def _finished(futures, watch=None):
    """Each of ``futures`` as it finishes. With ``watch``, every `WATCH_SECONDS` in which none
    finishes, ``watch()`` is called: it raises when the workers are gone for good (every SLURM
    job ended), which would otherwise leave the batch waiting for ever."""
    from distributed import as_completed, wait

    if watch is None:
        yield from as_completed(futures)
        return
    pending = set(futures)
    while pending:
        try:
            done, pending = wait(list(pending), timeout=WATCH_SECONDS, return_when="FIRST_COMPLETED")
        except TimeoutError:
            watch()
            continue
        yield from done


def _lost(case: Case, exc: Exception) -> dict:
    record = _died(case)
    record["case"]["error"] = f"the Dask task was lost: {type(exc).__name__}: {' '.join(str(exc).split())}"
    return record
