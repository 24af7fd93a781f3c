"""Run independent per-mesh work on every core, results in input order.

VTK's filters and numpy's large-array operations release the GIL, so a thread pool runs
per-label meshing, surface checks and file writing side by side without copying arrays
to other processes.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .runtime import one_blas_thread


THREADS_VARIABLE = "VIZ3D_THREADS"  # a process's share of the cores (a batch worker's), when set


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a SLURM job or ``taskset``
    narrows), or every core where the platform cannot say.

    >>> usable_cores() >= 1
    True
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cores() -> int:
    """The cores this process's thread pools fill: ``VIZ3D_THREADS`` when set to a positive
    number (a `viz3d batch` worker sets it to its share, so N workers do not each start a
    thread per core), else every core.

    >>> cores() >= 1
    True
    """
    try:
        share = int(os.environ.get(THREADS_VARIABLE, ""))
    except ValueError:
        share = 0
    return share if share > 0 else (os.cpu_count() or 1)


def worker_count(jobs: int) -> int:
    """Threads worth starting for ``jobs`` independent jobs: one per core (`cores`), at most one per job.

    >>> worker_count(0)
    1
    """
    return max(1, min(jobs, cores()))


def ordered_map(function, items, *, size=None):
    """Yield ``function(item)`` for each of ``items``, in their order, computed on a thread pool.

    ``size(item)`` estimates an item's cost: the largest start first, so no core idles while
    one big item finishes last. An exception is raised when its item's turn comes; items not
    yet started are then cancelled.

    While the pool runs, BLAS (numpy's ``@`` on vertex arrays) uses one thread when
    `viz3d.runtime.enable` was called (see `viz3d.runtime.one_blas_thread`).

    >>> list(ordered_map(lambda x: x * x, [3, 1, 2], size=lambda x: x))
    [9, 1, 4]
    """
    items = list(items)
    order = sorted(range(len(items)), key=lambda i: -size(items[i])) if size else range(len(items))
    with one_blas_thread(), ThreadPoolExecutor(max_workers=worker_count(len(items))) as pool:
        futures = [None] * len(items)
        for i in order:
            futures[i] = pool.submit(function, items[i])
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
