"""An export is atomic for the folder as a whole: killed at any moment (SIGKILL), the folder is
exactly the old export or exactly the new one once viz3d opens it again (`viz3d.outputs.export.recover`),
and no staging folder of a dead export is left beside it. Two exports into one folder at once
leave exactly one of them.

The inputs are small synthetic volumes (written with nibabel), so an export takes well under a
second of work after Python's imports.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import viz3d
import viz3d.outputs.export
from viz3d.outputs.export import recover

OLD = ["--labels", "1,2"]  # 1_L1.stl, 2_L2.stl, manifest.json
NEW = ["--labels", "2,3", "--decimate", "0.5", "--force"]  # 2_L2.stl changes, 3_L3.stl new, 1_L1.stl removed
OTHER = ["--labels", "1,3", "--format", "ply", "--force"]
KILLS = 20


def snapshot(folder: Path) -> dict:
    """Every file in ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    """A label map of three balls (values 1, 2, 3) on a 48 x 40 x 32 grid of 1.5 mm voxels."""
    folder = tmp_path_factory.mktemp("kill-case")
    grid = np.indices((48, 40, 32)).transpose(1, 2, 3, 0).astype(float)
    label = np.zeros((48, 40, 32), np.uint8)
    for value, centre in ((1, (12, 20, 16)), (2, (24, 20, 16)), (3, (36, 20, 16))):
        label[np.linalg.norm(grid - centre, axis=-1) < 7] = value
    nib.save(nib.Nifti1Image(label, np.diag([1.5, 1.5, 1.5, 1.0])), folder / "label.nii.gz")
    return folder / "label.nii.gz"


def start_export(label: Path, out: Path, options: list[str]) -> subprocess.Popen:
    env = dict(os.environ, VIZ3D_NO_CACHE="1")
    return subprocess.Popen([sys.executable, "-m", "viz3d", "export", "--label", str(label), "--out", str(out), "-q",
                             *options], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def export(label: Path, out: Path, options: list[str]) -> float:
    """Run an export to its end; its duration in seconds."""
    start = time.monotonic()
    process = start_export(label, out, options)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    return time.monotonic() - start


@pytest.fixture(scope="module")
def references(case, tmp_path_factory):
    """(the old export, the new one written over it, the new export's duration)."""
    root = tmp_path_factory.mktemp("kill-references")
    export(case, root / "old", OLD)
    shutil.copytree(root / "old", root / "new")
    duration = export(case, root / "new", NEW)
    old, new = snapshot(root / "old"), snapshot(root / "new")
    assert set(old) == {"1_L1.stl", "2_L2.stl", "manifest.json"} and set(new) == {"2_L2.stl", "3_L3.stl", "manifest.json"}
    assert old["2_L2.stl"] != new["2_L2.stl"]
    return root / "old", new, duration


def fresh_old_export(work: Path, old: Path) -> Path:
    """``work`` holding only ``out``, a copy of the old export."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copytree(old, work / "out")
    return work / "out"


def test_an_export_killed_at_random_moments_leaves_the_old_or_the_new_export(case, references, tmp_path):
    """SIGKILL at 20 seeded random moments across an export's duration (imports, meshing, writing,
    swapping); after each, the next viz3d to open the folder finds exactly one export in it."""
    old_dir, new, duration = references
    old = snapshot(old_dir)
    rng = random.Random(19)
    outcomes = []  # how each run ended: most before the swap (the deterministic test below covers each step of it)
    for _ in range(KILLS):
        out = fresh_old_export(tmp_path / "work", old_dir)
        process = start_export(case, out, NEW)
        try:
            process.wait(timeout=rng.uniform(0.0, 1.1 * duration))  # the kill's random moment (or its end)
        except subprocess.TimeoutExpired:
            pass
        process.kill()
        process.wait()
        recover(out)
        found = snapshot(out)
        assert found in (old, new), sorted(found)
        assert os.listdir(tmp_path / "work") == ["out"]  # the dead export's staging folder is gone
        outcomes.append("new" if found == new else "old")


def _dying_at(step: int, counter: list[int]):
    """Wrap file operations so that the process exits (as if killed) just before the ``step``-th."""
    def wrap(operation):
        def dying(*args, **kwargs):
            counter[0] += 1
            if counter[0] == step:
                os._exit(9)
            return operation(*args, **kwargs)
        return dying
    return wrap


@pytest.fixture(scope="module")
def meshes(case):
    """The new export's surfaces, and each one prepared for writing (checked, decimated by half)."""
    from viz3d.outputs.export import export_settings, prepare_mesh

    meshes = viz3d.build_meshes(None, viz3d.load_label(case), labels=[2, 3])
    settings = export_settings(decimate=0.5)
    return meshes, {m.name: prepare_mesh(m, settings) for m in meshes}


def _export_in_child(out: Path, meshes, step: int) -> int:
    """Export ``meshes`` over ``out`` (forced) in a forked child that dies before file operation
    ``step``; the child's exit status (9: it died there, 0: it finished first).

    The surfaces come prepared: the child writes and swaps only (VTK's thread pool, started in
    this process, does not survive a fork).
    """
    surfaces, prepared = meshes
    pid = os.fork()
    if pid == 0:
        try:
            viz3d.outputs.export.prepare_mesh = lambda mesh, settings: prepared[mesh.name]
            wrap = _dying_at(step, [0])
            for name in ("replace", "rename", "unlink", "rmdir"):
                setattr(os, name, wrap(getattr(os, name)))
            viz3d.export_meshes(surfaces, out, decimate=0.5, force=True)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_an_export_dying_before_any_file_operation_leaves_the_old_or_the_new_export(meshes, references, tmp_path):
    """Deterministically: the export dies (in a forked child) just before each of its renames and
    removals in turn, those of the swap included; each time the folder comes back as exactly one
    export, and every step of the swap is among them (the last runs finish the export)."""
    old_dir, _, _ = references
    old = snapshot(old_dir)
    complete = tmp_path / "complete"
    shutil.copytree(old_dir, complete)
    viz3d.export_meshes(meshes[0], complete, decimate=0.5, force=True)
    new = snapshot(complete)
    seen = []
    for step in range(1, 200):
        out = fresh_old_export(tmp_path / "work", old_dir)
        status = _export_in_child(out, meshes, step)
        assert status in (0, 9), status
        recover(out)
        found = snapshot(out)
        assert found in (old, new), (step, sorted(found))
        assert os.listdir(tmp_path / "work") == ["out"], step
        seen.append("new" if found == new else "old")
        if status == 0:
            break
    assert status == 0 and seen[0] == "old" and seen[-1] == "new"
    assert seen.count("new") >= 2  # it died inside the swap at least once and recovery completed it


def test_an_export_into_a_new_folder_dying_at_any_step_leaves_no_folder_or_the_whole_export(meshes, tmp_path):
    complete = tmp_path / "complete"
    viz3d.export_meshes(meshes[0], complete, decimate=0.5, force=True)
    new = snapshot(complete)
    seen = []
    for step in range(1, 100):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        status = _export_in_child(work / "out", meshes, step)
        assert status in (0, 9), status
        recover(work / "out")
        assert os.listdir(work) in ([], ["out"]), (step, os.listdir(work))
        assert not (work / "out").exists() or snapshot(work / "out") == new, step
        seen.append("new" if (work / "out").exists() else "none")
        if status == 0:
            break
    assert status == 0 and seen[0] == "none" and seen[-1] == "new"


def test_two_exports_into_one_folder_at_once_leave_exactly_one_of_them(case, references, tmp_path):
    old_dir, new, _ = references
    other_dir = fresh_old_export(tmp_path / "other", old_dir)
    export(case, other_dir, OTHER)
    other = snapshot(other_dir)
    out = fresh_old_export(tmp_path / "work", old_dir)
    processes = [start_export(case, out, options) for options in (NEW, OTHER)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    assert snapshot(out) in (new, other)
    assert os.listdir(tmp_path / "work") == ["out"]


def test_staging_folders_of_dead_exports_are_removed_and_living_ones_kept(tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    dead, living = tmp_path / ".out.tmp-dead0000", tmp_path / ".out.tmp-alive000"
    for folder in (dead, living):
        folder.mkdir()
        (folder / "1_L1.stl").write_bytes(b"staged")
    other = tmp_path / ".other.tmp-dead0000"  # beside another folder: not this export's
    other.mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    fd = os.open(living, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a living export holds its staging folder
        recover(out)
        assert sorted(os.listdir(tmp_path)) == [".other.tmp-dead0000", ".out.tmp-alive000", "notes.txt", "out"]
    finally:
        os.close(fd)
    recover(out)
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-dead0000", "notes.txt", "out"]


def test_a_swap_that_fails_half_way_is_completed_by_the_next_export(meshes, references, tmp_path, monkeypatch):
    """A rename failing in the middle of the swap (here: the second) leaves the journal and its
    staging folder, so the next viz3d to open the folder completes that export."""
    old_dir, _, _ = references
    complete = tmp_path / "complete"
    shutil.copytree(old_dir, complete)
    viz3d.export_meshes(meshes[0], complete, decimate=0.5, force=True)
    new = snapshot(complete)
    out = fresh_old_export(tmp_path / "work", old_dir)
    real, calls = os.replace, []

    def failing(source, target):
        calls.append(target)
        if Path(target).parent == out and len([c for c in calls if Path(c).parent == out]) == 3:
            raise OSError(5, "Input/output error")  # the journal, one file, then this one
        return real(source, target)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(viz3d.Viz3dError, match="writing failed"):
        viz3d.export_meshes(meshes[0], out, decimate=0.5, force=True)
    monkeypatch.setattr(os, "replace", real)
    assert (out / viz3d.outputs.export.JOURNAL_NAME).exists()
    with pytest.warns(viz3d.Viz3dWarning, match="completed an export that was interrupted"):
        assert recover(out)
    assert snapshot(out) == new and os.listdir(tmp_path / "work") == ["out"]
