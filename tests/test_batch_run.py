"""`viz3d batch` running cases: outputs per case, failures kept to their case, resuming, engines."""
import json
import os
import subprocess
import sys

import pytest

import viz3d.api
from viz3d.batch import case as case_module
from viz3d.batch.case import MARKER, REPLACED_PREFIX, STAGING_PREFIX, run_case, tidy
from viz3d.batch.layouts import discover
from viz3d.batch.options import BatchOptions
from viz3d.batch.run import run_batch
from viz3d.batch.sample import make_dataset
from viz3d.errors import Viz3dError


@pytest.fixture
def dataset(tmp_path):
    """Three small cases, one truncated CT and one label map on another grid."""
    make_dataset(tmp_path / "data", "ctspinopelvic", n=3, broken=True, other_grid=True)
    return discover(tmp_path / "data").cases


def statuses(result):
    return {record["case"]["case"]: record["case"]["status"] for record in result.records}


def test_every_case_gets_its_outputs_from_meshes_built_once(tmp_path, dataset, monkeypatch):
    calls = []
    real = viz3d.api.load_and_mesh
    monkeypatch.setattr(viz3d.api, "load_and_mesh", lambda *a, **k: calls.append(a) or real(*a, **k))
    options = BatchOptions(export="stl", screenshot=("anterior", "left"), sheet=True, html=True, mosaic=4,
                           turntable="gif", frames=4, size=(160, 120), sheet_size=(96, 72), turntable_size=(64, 48))
    good = [case for case in dataset if case.id[1:].isdigit()][:2]
    result = run_batch(good, options, tmp_path / "out", engine="inline")
    assert set(statuses(result).values()) == {"done"}
    assert len(calls) == len(good)  # one meshing per case for seven outputs
    folder = tmp_path / "out" / "s01"
    names = {p.name for p in folder.iterdir()}
    assert {"meshes", "screenshot-anterior.png", "screenshot-left.png", "sheet.png", "turntable.gif", "scene.html",
            "mosaic.png", "thumbnail.png", MARKER} <= names
    manifest = json.loads((folder / "meshes" / "manifest.json").read_text())
    assert {m["name"] for m in manifest["meshes"]} == {"L1", "L2", "bone"}
    record = json.loads((folder / MARKER).read_text())
    assert record["case"]["peak_memory_mb"] > 0 and record["case"]["ct_digest"]
    assert {s["name"] for s in record["structures"]} == {"L1", "L2", "bone"}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".staging")]


def test_a_broken_case_fails_in_its_row_with_one_line_and_the_others_complete(tmp_path, dataset):
    result = run_batch(dataset, BatchOptions(export="stl"), tmp_path / "out", engine="inline")
    assert statuses(result) == {"broken": "failed", "s01": "done", "s02": "done", "s03": "done", "shifted": "done"}
    error = result.failed[0]["error"]
    assert "broken_ct.nii.gz" in error and "truncated" in error and "\n" not in error
    assert not (tmp_path / "out" / "broken").exists()
    assert (tmp_path / "out" / "s01" / "thumbnail.png").read_bytes()[:4] == b"\x89PNG"  # a 2-D slice: no picture asked


def test_a_label_map_on_another_grid_is_marked_in_its_row(tmp_path, dataset):
    shifted = [case for case in dataset if case.id == "shifted"]
    record = run_batch(shifted, BatchOptions(), tmp_path / "out", engine="inline").records[0]
    assert record["case"]["grid_mismatch"] is True
    assert any("different grids" in line for line in record["case"]["warnings"])


def test_a_rerun_skips_done_cases_and_redoes_those_whose_input_or_options_changed(tmp_path, dataset):
    good = [case for case in dataset if case.id[1:].isdigit()]
    out = tmp_path / "out"
    run_batch(good, BatchOptions(export="stl"), out, engine="inline")
    first = (out / "s02" / MARKER).read_text()
    assert set(statuses(run_batch(good, BatchOptions(export="stl"), out, engine="inline")).values()) == {"reused"}
    good[0].ct.write_bytes(good[1].ct.read_bytes())  # s01's CT changes
    again = statuses(run_batch(good, BatchOptions(export="stl"), out, engine="inline"))
    assert again == {"s01": "done", "s02": "reused", "s03": "reused"}
    assert (out / "s02" / MARKER).read_text() == first
    changed = statuses(run_batch(good, BatchOptions(export="ply"), out, engine="inline"))
    assert set(changed.values()) == {"done"}
    assert {p.suffix for p in (out / "s02" / "meshes").iterdir()} == {".ply", ".json"}
    forced = statuses(run_batch(good, BatchOptions(export="ply"), out, engine="inline", force=True))
    assert set(forced.values()) == {"done"}


def test_an_interrupted_case_leaves_no_half_written_folder_and_finished_cases_stay(tmp_path, dataset, monkeypatch):
    good = [case for case in dataset if case.id[1:].isdigit()]
    out = tmp_path / "out"
    made = []
    original = case_module.structure_rows

    def interrupt_on_second_case(meshes, manifest=None):
        made.append(1)
        if len(made) == 2:
            raise KeyboardInterrupt
        return original(meshes, manifest)

    monkeypatch.setattr(case_module, "structure_rows", interrupt_on_second_case)
    with pytest.raises(KeyboardInterrupt):
        run_batch(good, BatchOptions(export="stl"), out, engine="inline")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".viz3d")) == ["s01"]
    assert (out / "s01" / MARKER).is_file()
    monkeypatch.setattr(case_module, "structure_rows", original)
    assert statuses(run_batch(good, BatchOptions(export="stl"), out, engine="inline")) == {
        "s01": "reused", "s02": "done", "s03": "done"}


def test_what_a_killed_batch_left_is_tidied_and_a_case_set_aside_comes_back(tmp_path, dataset):
    out = tmp_path / "out"
    run_batch(dataset[1:2], BatchOptions(), out, engine="inline")
    (out / f"{STAGING_PREFIX}s02-0123abcd").mkdir()  # killed while writing
    os.rename(out / "s01", out / f"{REPLACED_PREFIX}s01-89abcdef")  # killed between the two renames
    tidy(out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".viz3d")) == ["s01"]
    assert statuses(run_batch(dataset[1:2], BatchOptions(), out, engine="inline")) == {"s01": "reused"}


def test_a_second_batch_into_the_same_folder_is_refused_while_one_runs(tmp_path, dataset):
    from viz3d.batch.run import output_lock

    with output_lock(tmp_path / "out"):
        with pytest.raises(Viz3dError, match="another viz3d batch is writing into this folder"):
            run_batch(dataset[:1], BatchOptions(), tmp_path / "out", engine="inline")


def test_a_case_that_cannot_be_read_fails_without_a_worker_dying(tmp_path, dataset):
    missing = dataset[1].__class__("gone", tmp_path / "nowhere.nii.gz", dataset[1].label)
    record = run_case(missing, BatchOptions(), tmp_path / "out")
    assert record["case"]["status"] == "failed"
    assert record["case"]["error"].startswith(f"{tmp_path / 'nowhere.nii.gz'}: ")
    assert "No such file" in record["case"]["error"] and not (tmp_path / "out" / "gone").exists()


def same_results(a, b):
    assert statuses(a) == statuses(b)
    for x, y in zip(a.records, b.records, strict=True):
        assert x["structures"] == y["structures"]
        assert x["case"]["error"] == y["case"]["error"]
        assert x["key"] == y["key"]


def test_the_local_process_pool_gives_the_result_of_one_process(tmp_path, dataset):
    options, dataset = BatchOptions(export="stl"), dataset[:2]  # the broken case and s01
    inline = run_batch(dataset, options, tmp_path / "inline", engine="inline")
    same_results(run_batch(dataset, options, tmp_path / "pool", engine="local", workers=2), inline)


def test_a_dask_local_cluster_gives_the_result_of_one_process(tmp_path, dataset):
    pytest.importorskip("distributed")
    options, dataset = BatchOptions(export="stl"), dataset[:2]
    inline = run_batch(dataset, options, tmp_path / "inline", engine="inline")
    environ = dict(os.environ)
    same_results(run_batch(dataset, options, tmp_path / "dask", engine="dask", workers=2), inline)
    assert dict(os.environ) == environ  # Dask's nanny sets its workers' variables here; they are put back


def test_dask_local_forks_its_workers_from_a_process_without_vtk_and_gives_the_same_result(tmp_path):
    """The command line's process never loads VTK: its LocalCluster's workers are forked from it
    (no fresh import of Dask each), and make what one process makes; a process with VTK spawns them."""
    pytest.importorskip("distributed")
    if not sys.platform.startswith("linux"):
        pytest.skip("forked workers on Linux only")
    (tmp_path / "fork_marker.py").write_text("")
    script = (
        "import contextlib, json, sys\n"
        "from viz3d.batch import run\n"
        "from viz3d.batch.layouts import discover\n"
        "from viz3d.batch.options import BatchOptions\n"
        "from viz3d.batch.sample import make_dataset\n"
        "def forked():\n"
        "    with contextlib.ExitStack() as stack:\n"
        "        client, _ = run._dask_client('local', 1)(stack)\n"
        "        return all(client.run(lambda: 'fork_marker' in sys.modules).values())\n"
        "if __name__ == '__main__':\n"
        "    import fork_marker\n"  # imported here only: a forked worker has it, a spawned one does not
        "    make_dataset(sys.argv[1] + '/data', 'ctspinopelvic', n=2)\n"
        "    cases = discover(sys.argv[1] + '/data').cases\n"
        "    before = forked()\n"
        "    dask = run.run_batch(cases, BatchOptions(export='stl'), sys.argv[1] + '/dask', engine='dask', workers=2)\n"
        "    inline = run.run_batch(cases, BatchOptions(export='stl'), sys.argv[1] + '/inline', engine='inline')\n"
        "    after = forked()\n"  # VTK is loaded now (the inline run meshed here)
        "    rows = lambda result: [(r['key'], r['structures']) for r in result.records]\n"
        "    print(json.dumps([before, after, rows(dask) == rows(inline)]))\n")
    (tmp_path / "probe.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(tmp_path / "probe.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [True, False, True]


@pytest.mark.slow
def test_ctrl_c_on_the_process_pool_ends_the_workers_leaves_only_complete_cases_and_a_rerun_gives_the_same_out(
        tmp_path, sample_dir):
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")

    make_dataset(tmp_path / "data", "ctspinopelvic", n=6, source=(sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz"))
    command = [sys.executable, "-m", "viz3d", "batch", str(tmp_path / "data"), "--export", "stl", "--workers", "2",
               "--label-table", "totalsegmentator", "-q"]
    batch = subprocess.Popen(command + ["--out", str(tmp_path / "stopped")], stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "stopped").glob("*/case.json")):  # waits for the first finished case
        assert batch.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = psutil.Process(batch.pid).children(recursive=True)
    os.killpg(batch.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole process group
    assert batch.wait(timeout=60) == 130
    assert batch.stderr.read() == "viz3d: interrupted\n"
    gone, alive = psutil.wait_procs(workers, timeout=10)  # multiprocessing's resource tracker ends on its own
    assert alive == []
    left = [p for p in (tmp_path / "stopped").iterdir() if not p.name.startswith(".viz3d-batch")]
    assert left and all((p / MARKER).is_file() for p in left)  # finished cases only, each complete
    assert subprocess.run(command + ["--out", str(tmp_path / "stopped")], timeout=300).returncode == 0
    assert subprocess.run(command + ["--out", str(tmp_path / "whole")], timeout=300).returncode == 0
    stopped, whole = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("stopped", "whole"))
    assert stopped["structures"] == whole["structures"]
    for name in ("s01", "s06"):
        assert sorted(p.name for p in (tmp_path / "stopped" / name / "meshes").iterdir()) == sorted(
            p.name for p in (tmp_path / "whole" / name / "meshes").iterdir())


@pytest.mark.slow
def test_a_running_dask_scheduler_named_by_its_address_gives_the_result_of_one_process(tmp_path, dataset):
    distributed = pytest.importorskip("distributed")
    options, dataset = BatchOptions(export="stl"), dataset[:2]
    inline = run_batch(dataset, options, tmp_path / "inline", engine="inline")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        same_results(run_batch(dataset, options, tmp_path / "dask", engine="dask",
                               scheduler=cluster.scheduler_address), inline)


def test_an_unreachable_dask_scheduler_is_one_error_naming_it(tmp_path, dataset, monkeypatch):
    pytest.importorskip("distributed")
    import socket

    from viz3d.batch import run

    monkeypatch.setattr(run, "DASK_CONNECT_TIMEOUT", "1s")
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{free.getsockname()[1]}"
    with pytest.raises(Viz3dError, match=f"--dask {address}: cannot reach the Dask scheduler"):
        run_batch(dataset[:1], BatchOptions(), tmp_path / "out", engine="dask", scheduler=address)


@pytest.mark.slow
def test_a_case_that_kills_its_worker_fails_alone_and_the_cases_beside_it_complete(tmp_path, dataset, monkeypatch):
    from viz3d.batch import run

    (tmp_path / "crashing.py").write_text(
        "import os, signal\n"
        "from viz3d.batch.case import run_case\n"
        "def run_or_die(case, options, out, force):\n"
        "    if case.id == 's02':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would\n"
        "    return run_case(case, options, out, force)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers import it too
    from crashing import run_or_die

    records = run._run_pool(list(dataset), BatchOptions(), tmp_path / "out", False, 2, lambda *a: None,
                            function=run_or_die)
    status = {case: record["case"]["status"] for case, record in records.items()}
    assert status == {"broken": "failed", "s01": "done", "s02": "failed", "s03": "done", "shifted": "done"}
    assert records["s02"]["case"]["error"].startswith("the worker process died while making this case")


def test_the_summary_measures_in_ras_whatever_coordinates_the_meshes_are_written_in(tmp_path, dataset):
    good = [case for case in dataset if case.id == "s01"]
    ras, lps = (run_batch(good, BatchOptions(export="stl", coords=coords), tmp_path / coords, engine="inline")
                for coords in ("ras", "lps"))
    assert ras.records[0]["structures"] == lps.records[0]["structures"]
