"""What a batch may use: a case's memory estimate (from its voxel count), the memory available,
a SLURM job's allocation, and how many workers fit."""
from __future__ import annotations

import os
from pathlib import Path

from ..parallel import usable_cores
from .layouts import Case

BASE_MEMORY = 500 * 2**20  # a worker with numpy, VTK and PyVista loaded and a small case rendered
BYTES_PER_VOXEL = 12  # CT (int16 -> float32 where needed), label, per-label boxes and distance maps
MEMORY_SHARE = 0.8  # of the memory available now, leaving room for the rest of the machine


def estimate_case_memory(case: Case) -> int:
    """Bytes one worker needs for ``case``, from its voxel count (NIfTI headers, DICOM file count).

    >>> estimate_case_memory(Case("x", None, None)) == BASE_MEMORY
    True
    """
    voxels = 0
    for path in (case.ct, case.label):
        voxels = max(voxels, _voxels(path)) if path is not None else voxels
    return BASE_MEMORY + BYTES_PER_VOXEL * voxels


def _voxels(path: Path) -> int:
    try:
        if Path(path).is_dir():  # a DICOM series: slices of 512 x 512 at most, as a rule
            return sum(1 for p in Path(path).rglob("*") if p.is_file()) * 512 * 512
        import nibabel as nib

        shape = nib.load(str(path)).header.get_data_shape()
        count = 1
        for side in shape[:3]:
            count *= int(side)
        return count
    except Exception:  # noqa: BLE001 - an unreadable file fails in its case, with its own message
        return 0


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable), or None where it cannot be told."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def slurm_allocation(environ=None) -> tuple[int | None, int | None]:
    """The cores and bytes of memory of the SLURM job this process runs in, where SLURM says
    (``SLURM_CPUS_ON_NODE``, ``SLURM_MEM_PER_NODE`` or ``SLURM_MEM_PER_CPU`` in MB); None outside
    a job. A job's share of a node is what its batch may use, whatever the node has.

    >>> slurm_allocation({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "1024"})
    (4, 4294967296)
    >>> slurm_allocation({})
    (None, None)
    """
    environ = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in environ:
        return None, None

    def number(name):
        try:
            return int(environ[name])
        except (KeyError, ValueError):
            return None

    cores = number("SLURM_CPUS_ON_NODE")
    per_node, per_cpu = number("SLURM_MEM_PER_NODE"), number("SLURM_MEM_PER_CPU")
    memory = per_node * 2**20 if per_node else (per_cpu * cores * 2**20 if per_cpu and cores else None)
    return cores, memory


def default_workers(cases, cores: int | None = None, memory: int | None = None) -> int:
    """Workers for ``cases``: one per core, at most one per case, and no more than the memory
    available holds at the largest case's estimate (`estimate_case_memory`), so no worker swaps.
    Inside a SLURM job (an ``sbatch --array`` task running ``--shard slurm``), the cores and
    memory are the job's (`slurm_allocation`), not the node's.

    >>> cases = [Case(f"s{i}", None, None) for i in range(8)]
    >>> default_workers(cases, cores=4, memory=100 * 2**30), default_workers(cases, cores=4, memory=2**30)
    (4, 1)
    """
    cases = list(cases)
    job_cores, job_memory = slurm_allocation() if cores is None and memory is None else (None, None)
    if cores is None:
        cores = usable_cores()
        cores = min(cores, job_cores or cores)
    if memory is None:
        memory = available_memory()
        memory = min(memory, job_memory) if memory and job_memory else (memory or job_memory)
    largest = max((estimate_case_memory(case) for case in cases), default=BASE_MEMORY)
    by_memory = int(memory * MEMORY_SHARE // largest) if memory else cores
    return max(1, min(cores, len(cases) or 1, by_memory))
