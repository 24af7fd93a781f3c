"""`viz3d batch` workers share the cores: each sizes its thread pools to its share, not to every core,
and a worker's second case starts from the memory its first one freed."""
import os
import subprocess
import sys

import pytest

from viz3d import parallel
from viz3d.batch.layouts import Case
from viz3d.batch.options import BatchOptions
from viz3d.batch.run import threads_per_worker
from viz3d.runtime import THREAD_VARIABLES, thread_settings

PROBE = (
    "import os\n"
    "def threads(case, options, out, force):\n"
    "    from vtkmodules.vtkCommonCore import vtkSMPTools\n"
    "    from viz3d import parallel\n"
    "    vtkSMPTools.SetBackend('STDThread')\n"
    "    return {'case': {'status': 'done', 'cores': parallel.cores(), 'jobs': parallel.worker_count(64),\n"
    "            'vtk': vtkSMPTools.GetEstimatedNumberOfThreads(),\n"
    "            'env': {name: os.environ.get(name) for name in %r}}}\n" % (THREAD_VARIABLES,)
)


def test_each_of_n_workers_gets_its_share_of_the_cores():
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(4, cores=16) == 4
    assert threads_per_worker(3, cores=16) == 5
    assert threads_per_worker(8, cores=2) == 1  # never none


def test_viz3d_thread_pools_follow_the_share_the_process_was_given(monkeypatch):
    monkeypatch.setenv(parallel.THREADS_VARIABLE, "1")
    assert parallel.cores() == 1 and parallel.worker_count(40) == 1
    monkeypatch.setenv(parallel.THREADS_VARIABLE, "not a number")
    assert parallel.cores() == (os.cpu_count() or 1)
    monkeypatch.delenv(parallel.THREADS_VARIABLE)
    assert parallel.worker_count(10**6) == (os.cpu_count() or 1)


def test_pool_workers_size_viz3d_vtk_and_llvmpipe_threads_to_their_share(tmp_path, monkeypatch):
    from viz3d.batch import run

    for name in (*THREAD_VARIABLES, "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers import it too
    from probe import threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = 2
    share = str(max(1, cores // workers))
    cases = [Case(f"c{i}", None, None) for i in range(workers)]
    records = run._run_pool(cases, BatchOptions(), tmp_path / "out", False, workers, lambda *a: None, function=threads)
    for record in records.values():
        row = record["case"]
        assert row["env"] == thread_settings(int(share))
        assert row["cores"] == row["jobs"] == row["vtk"] == int(share)


def test_a_dask_worker_sizes_its_thread_pools_to_its_dask_threads(tmp_path):
    pytest.importorskip("distributed")
    script = tmp_path / "dask_probe.py"
    script.write_text(PROBE + (
        "if __name__ == '__main__':\n"
        "    from distributed import Client, LocalCluster\n"
        "    from viz3d.batch.run import _prepare_worker, _dask_case\n"
        "    import viz3d.batch.run as run\n"
        "    def probe():\n"
        "        run.run_case = threads\n"  # the task runs _dask_case, which sets the worker up first
        "        return _dask_case(None, None, None, False)['case']\n"
        "    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,\n"
        "                      silence_logs=40) as cluster, Client(cluster) as client:\n"
        "        row = client.submit(probe, pure=False).result()\n"
        "    print(row['cores'], row['vtk'], row['env']['VIZ3D_THREADS'])\n"))
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1", "1", "1"]


def test_a_workers_second_case_starts_from_what_its_first_freed(tmp_path):
    """The batch's per-case peak memory is the case's own: the C heap an earlier case freed is
    returned before the next one's peak is counted."""
    from viz3d.batch import case as case_module

    script = (
        "import numpy as np, re\n"
        "from pathlib import Path\n"
        "from viz3d.batch import case\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)) // 1024\n"
        "blocks = [np.ones(4096) for _ in range(12000)]\n"  # 390 MB of 32 KiB blocks: the heap, not mmap
        "del blocks[:-1]\n"
        "before = rss()\n"
        "case._release_memory()\n"
        "print(before, rss())\n")
    if not os.path.exists("/proc/self/status") or not hasattr(case_module, "_release_memory"):
        pytest.skip("needs Linux's /proc")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    before, after = map(int, run.stdout.split())
    assert before - after > 250, (before, after)


def test_a_workers_freed_arrays_go_back_to_the_system_even_after_a_big_one_was_freed():
    """glibc raises the size from which it maps blocks on their own each time a big one is
    freed, and later arrays then fragment the heap a worker keeps case after case; a worker
    maps every block of 1 MiB or more on its own (`viz3d.runtime.compact_heap`)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's malloc")
    script = (
        "import re, sys, threading\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)) // 1024\n"
        "if sys.argv[1] == 'worker':\n"
        "    from viz3d.batch.run import _prepare_worker\n"
        "    _prepare_worker(1)\n"
        "def case():\n"  # in a thread of its own, as the meshing pool's and the CT loader's are
        "    big = np.ones(2 * 2**20); del big\n"  # 16 MiB freed
        "    arrays, small = [], []\n"
        "    for _ in range(48):\n"  # 192 MiB of 4 MiB arrays, a small block kept after each
        "        arrays.append(np.ones(2**19)); small.append(np.ones(16))\n"
        "    before = rss(); del arrays\n"
        "    print(before - rss())\n"
        "thread = threading.Thread(target=case); thread.start(); thread.join()\n")
    env = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    given_back = {}
    for how in ("plain", "worker"):
        run = subprocess.run([sys.executable, "-c", script, how], capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        given_back[how] = int(run.stdout)
    assert given_back["worker"] > 180, given_back
    assert given_back["plain"] < 100, given_back  # what the setting is for: glibc alone keeps them


def test_a_workers_next_case_collects_only_its_own_objects():
    """After a case, a worker freezes what survived it (the modules the case imported): the next
    case's collection no longer scans them (83-87 ms a case in a drawing worker)."""
    script = (
        "import gc\n"
        "from viz3d.batch import run\n"
        "kept = []\n"
        "def case(*args):\n"  # a first case: imports and caches that outlive it, and its garbage
        "    kept.extend([i] for i in range(100000))\n"
        "    garbage = [[] for _ in range(1000)]; garbage.append(garbage)\n"
        "    return {'case': {'status': 'done'}}\n"
        "run.run_case = case\n"
        "run._worker_case(None, None, None, False)\n"
        "print(len(gc.get_objects()), gc.get_freeze_count())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    scanned, frozen = map(int, done.stdout.split())
    assert frozen >= 100000 and scanned < 1000, (scanned, frozen)
