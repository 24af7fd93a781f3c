"""`viz3d batch` on a real SLURM cluster: --slurm (Dask workers as SLURM jobs) and an sbatch --array
script with --shard slurm and --merge, each giving the local pool's summary; the one-line errors.

The cluster is the one `.ci/start-slurm` starts (one node on 127.0.0.1); the tests that need it
are skipped, saying why, when ``sinfo`` does not answer. Nothing waits a fixed time: the tests
poll the jobs' states (squeue) or wait on files, each with a deadline.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from viz3d.batch.sample import make_dataset
from viz3d.cli.main import main

TIMINGS = ("seconds", "peak_memory_mb")
ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
         "TIMEOUT"}
DEADLINE = 300  # seconds for a batch on the cluster (a few seconds each here)


def sinfo_answer():
    """The default partition's name when sinfo answers with a node that can run jobs, else why not."""
    if shutil.which("sinfo") is None:
        return None, "no sinfo on PATH (SLURM not installed: bash .ci/start-slurm starts a one-node cluster)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P|%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 20 s"
    up = [line.split("|") for line in done.stdout.split() if line.split("|")[-1] in ("idle", "mixed", "allocated")]
    if done.returncode != 0 or not up:
        return None, f"sinfo shows no node up ({(done.stderr or done.stdout).strip()[:200]}); run bash .ci/start-slurm"
    default = [name for name, _ in up if name.endswith("*")]
    return (default or [up[0][0]])[0].rstrip("*"), None


PARTITION, WHY_NOT = sinfo_answer()
needs_slurm = pytest.mark.skipif(PARTITION is None, reason=f"no SLURM cluster: {WHY_NOT}")


def viz3d(*args, env=None, cwd=None):
    """Run the viz3d command in a fresh process; its CompletedProcess."""
    environ = {**os.environ, "DASK_JOBQUEUE__SLURM__INTERFACE": "lo", **(env or {})}  # workers reach us on 127.0.0.1
    return subprocess.run([sys.executable, "-m", "viz3d", *map(str, args)], capture_output=True, text=True,
                          timeout=DEADLINE, env=environ, cwd=cwd)


def squeue(*args):
    """squeue's lines for ``args`` (every state, no header)."""
    done = subprocess.run(["squeue", "-h", "-t", "all", *args], capture_output=True, text=True, timeout=30)
    return done.stdout.split()


def wait_until_ended(job):
    """Poll squeue until every task of ``job`` has ended; their ``{task id: state}``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        states = dict(line.split("|") for line in squeue("-j", job, "-o", "%i|%T"))
        if states and set(states.values()) <= ENDED:
            return states
        assert time.monotonic() < deadline, f"job {job} still not ended: {states}"
        time.sleep(0.2)  # the polling interval


def wait_until_running(job):
    deadline = time.monotonic() + DEADLINE
    while squeue("-j", job, "-o", "%T") != ["RUNNING"]:
        assert time.monotonic() < deadline, f"job {job} never started: {squeue('-j', job, '-o', '%T|%r')}"
        time.sleep(0.2)  # the polling interval


def summary_rows(out):
    """Every row of OUT/summary.csv (cases and structures) less its timings, in a stable order."""
    with open(out / "summary.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)]
    return sorted(rows, key=lambda row: (row["level"], row["case"], row.get("name") or ""))


def same_summary(out, local):
    assert summary_rows(out) == summary_rows(local)
    ours, theirs = (json.loads((folder / "summary.json").read_text()) for folder in (out, local))
    assert ours["structures"] == theirs["structures"] and ours["options"] == theirs["options"]
    assert ours["counts"] == theirs["counts"]
    assert (out / "index.html").is_file()
    for case in ("s01", "s02", "s03"):
        assert sorted(p.name for p in (out / case / "meshes").iterdir()) == sorted(
            p.name for p in (local / case / "meshes").iterdir())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three small cases and a truncated one, and the local pool's OUT for them."""
    root = tmp_path_factory.mktemp("slurm")
    make_dataset(root / "data", "ctspinopelvic", n=3, broken=True)
    done = viz3d("batch", root / "data", "--out", root / "local", "--export", "stl", "--workers", "2", "-q")
    assert done.returncode == 2 and done.stderr.endswith("1 of 4 cases failed (broken); "
                                                         f"see {root / 'local' / 'summary.csv'}\n")
    return root


@needs_slurm
def test_slurm_workers_give_the_local_pools_summary_and_get_the_resources_asked(dataset, tmp_path):
    out = tmp_path / "out"
    done = viz3d("batch", dataset / "data", "--out", out, "--export", "stl", "--slurm", "--slurm-jobs", "2",
                 "--slurm-cores", "1", "--slurm-memory", "2GiB", "--slurm-walltime", "00:20:00",
                 "--slurm-partition", PARTITION, "-q")
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"viz3d: error: 1 of 4 cases failed (broken); see {out / 'summary.csv'}\n"
    same_summary(out, dataset / "local")
    jobs = sorted(p.stem.rsplit("-", 1)[1] for p in (out / ".viz3d-slurm").glob("viz3d-batch-*.err"))
    assert len(jobs) == 2
    asked = {line for job in jobs for line in squeue("-j", job, "-o", "%C|%m|%l|%P|%j")}
    assert asked == {f"1|2G|20:00|{PARTITION}|viz3d-batch"}
    assert set(wait_until_ended(",".join(jobs)).values()) == {"CANCELLED"}  # ended with the batch


@needs_slurm
def test_an_sbatch_array_of_shards_merged_gives_the_local_pools_summary(dataset, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "batch.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --array=1-3 --cpus-per-task=1 --mem=1G --time=00:20:00 --partition={PARTITION}\n"
        f"#SBATCH --output={logs}/%A_%a.out\n"
        f"{sys.executable} -m viz3d batch {dataset / 'data'} --out {out} --export stl --shard slurm -q\n")
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=30)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    states = wait_until_ended(job)
    assert len(states) == 3 and set(states.values()) <= {"COMPLETED", "FAILED"}  # the broken case's shard exits 2
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"shard-{i}-of-3.json" for i in (1, 2, 3)]
    merged = viz3d("batch", "--merge", out)
    assert merged.returncode == 2
    assert merged.stderr.splitlines()[-1] == f"viz3d: error: 1 of 4 cases failed (broken); see {out / 'summary.csv'}"
    same_summary(out, dataset / "local")


@needs_slurm
def test_a_worker_job_that_never_starts_ends_the_batch_with_one_line_and_is_cancelled(dataset, tmp_path):
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", f"--partition={PARTITION}", "--time=00:10:00",
                              f"--output={tmp_path}/blocker.out", "--wrap", "sleep 600"],  # holds every core
                             capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        wait_until_running(blocker)
        started = time.monotonic()
        done = viz3d("batch", dataset / "data", "--out", tmp_path / "out", "--slurm", "--slurm-jobs", "1",
                     "--slurm-wait", "3", "-q")
        assert time.monotonic() - started < 60
        assert done.returncode == 2
        line = done.stderr
        assert line.startswith("viz3d: error: --slurm: no worker started within 3 s (job ")
        assert "PENDING" in line and line.endswith("the jobs were cancelled: raise --slurm-wait, or ask for fewer "
                                                   "cores, less memory or another --slurm-partition\n")
        job = line.split("(job ")[1].split()[0]
        assert wait_until_ended(job) == {job: "CANCELLED"}
    finally:
        subprocess.run(["scancel", blocker], timeout=30)
    assert not list((tmp_path / "out").glob("s0*"))


@needs_slurm
def test_ctrl_c_while_the_workers_start_ends_the_batch_as_interrupted_and_cancels_its_jobs(dataset, tmp_path):
    import signal

    out = tmp_path / "out"
    batch = subprocess.Popen([sys.executable, "-m", "viz3d", "batch", str(dataset / "data"), "--out", str(out),
                              "--export", "stl", "--slurm", "--slurm-jobs", "1", "-q"],
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "DASK_JOBQUEUE__SLURM__INTERFACE": "lo"})
    deadline = time.monotonic() + DEADLINE
    while not list((out / ".viz3d-slurm").glob("viz3d-batch-*.err")):  # the job runs (its log is open)
        assert batch.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)  # the polling interval
    os.killpg(batch.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    assert batch.wait(timeout=60) == 130
    assert batch.stderr.read() == "viz3d: interrupted\n"
    (log,) = (out / ".viz3d-slurm").glob("viz3d-batch-*.err")
    job = log.stem.rsplit("-", 1)[1]
    assert wait_until_ended(job) == {job: "CANCELLED"}
    assert all((case / "case.json").is_file() for case in out.iterdir() if not case.name.startswith("."))


@needs_slurm
def test_when_every_worker_job_ends_mid_batch_the_batch_says_so_in_one_line_instead_of_waiting(tmp_path, sample_dir):
    make_dataset(tmp_path / "data", "ctspinopelvic", n=2, source=(sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz"))
    out = tmp_path / "out"
    batch = subprocess.Popen([sys.executable, "-m", "viz3d", "batch", str(tmp_path / "data"), "--out", str(out),
                              "--export", "stl", "--label-table", "totalsegmentator", "--slurm", "--slurm-jobs", "1", "-q"],
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "DASK_JOBQUEUE__SLURM__INTERFACE": "lo"})
    deadline = time.monotonic() + DEADLINE
    while not list(out.glob(".staging-*")):  # a worker is writing a case
        assert batch.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)  # the polling interval
    (log,) = (out / ".viz3d-slurm").glob("viz3d-batch-*.err")
    job = log.stem.rsplit("-", 1)[1]
    subprocess.run(["scancel", job], timeout=30)  # as a walltime or a node failure would end it
    assert batch.wait(timeout=120) == 2
    line = batch.stderr.read()
    assert line.startswith(f"viz3d: error: --slurm: every worker's job has ended (job {job} CANCELLED")
    assert line.endswith(f"run the same command again to resume (a longer --slurm-walltime or more --slurm-jobs); "
                         f"the jobs' logs are in {out / '.viz3d-slurm'}\n")
    assert not list(out.glob(".staging-*"))


def test_importing_dask_jobqueue_leaves_ctrl_c_to_the_command_line():
    pytest.importorskip("dask_jobqueue")
    check = ("import signal, sys\n"
             "before = signal.getsignal(signal.SIGINT)\n"
             "if sys.argv[1] == 'plain':\n"
             "    import dask_jobqueue\n"
             "else:\n"
             "    from viz3d.batch.slurm import import_slurm_cluster\n"
             "    import_slurm_cluster()\n"
             "print(signal.getsignal(signal.SIGINT) is before)\n")
    said = {way: subprocess.run([sys.executable, "-c", check, way], capture_output=True, text=True, timeout=120).stdout
            for way in ("plain", "viz3d")}  # fresh interpreters: the import's side effect happens once a process
    assert said == {"plain": "False\n", "viz3d": "True\n"}


def test_slurm_without_sbatch_on_path_is_one_error_line(tmp_path, capsys, monkeypatch):
    make_dataset(tmp_path / "data", "folders", n=1)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    status = main(["batch", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--slurm"])
    assert status == 2
    assert capsys.readouterr().err == (
        "viz3d: error: --slurm: no sbatch on PATH (SLURM's commands are not installed here; run the batch on the "
        "cluster's login node, or use --shard in an sbatch --array job)\n")


@pytest.mark.parametrize("args, message", [
    (["--slurm", "--slurm-memory", "lots"], "--slurm-memory: expected an amount such as 8GB or 8GiB, got 'lots'"),
    (["--slurm", "--slurm-walltime", "1h"], "--slurm-walltime: expected sbatch's form such as 01:30:00 or 1-00:00:00, got '1h'"),
    (["--slurm", "--slurm-cores", "0"], "--slurm-cores must be at least 1, got 0"),
    (["--slurm", "--dask", "local"], "--slurm and --dask exclude each other: --slurm starts its own Dask workers"),
    (["--slurm", "--workers", "2"], "--workers is for the local pool and --dask local; with --slurm give --slurm-jobs "
                                    "and --slurm-cores"),
    (["--slurm-jobs", "2"], "--slurm-jobs goes with --slurm"),
])
def test_slurm_options_that_make_no_sense_are_one_error_line_before_anything_is_queued(tmp_path, capsys, args, message):
    make_dataset(tmp_path / "data", "folders", n=1)
    status = main(["batch", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *args])
    assert (status, capsys.readouterr().err) == (2, f"viz3d: error: {message}\n")
    assert not (tmp_path / "out").exists()


def test_inside_a_slurm_job_the_local_pool_is_sized_by_the_jobs_cores_and_memory(monkeypatch):
    from viz3d.batch.layouts import Case
    from viz3d.batch import resources
    from viz3d.batch.resources import BASE_MEMORY, default_workers

    cases = [Case(f"s{i}", None, None) for i in range(8)]
    monkeypatch.setattr(resources, "available_memory", lambda: 256 * 2**30)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)  # a big node
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "3")
    monkeypatch.delenv("SLURM_MEM_PER_CPU", raising=False)
    monkeypatch.setenv("SLURM_MEM_PER_NODE", str(100 * 1024))  # MB
    assert default_workers(cases) == 3
    monkeypatch.setenv("SLURM_MEM_PER_NODE", str(2 * BASE_MEMORY // 2**20))  # two workers' estimate, less the margin
    assert default_workers(cases) == 1
