"""Tests for the `viz3d` command line: the bad-input contract and successful info / export runs.

The contract for bad input: exit status 2, exactly one line on stderr starting
``viz3d: error:`` that says what is wrong and names the file, no traceback, and no partial
output (a failed export leaves the output folder as it was; a failed screenshot leaves no PNG
or temporary file). Most runs call `viz3d.cli.main.main` in-process; a few run ``python -m viz3d``
as a real subprocess to prove the exit status and stderr end to end.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from shapes import write_box_case

import viz3d.outputs.export
from viz3d.cli.main import main

VOXEL = np.diag([2.0, 2.0, 2.0, 1.0])


# ------------------------------------------------------------------ helpers


def run_cli(capsys, *args):
    """Run the CLI in-process; return (status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error(err: str, *fragments: str) -> str:
    """stderr is exactly one ``viz3d: error:`` line containing every fragment; return it."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    line = lines[0]
    assert line.startswith("viz3d: error: "), line
    assert "internal error" not in line, line
    for fragment in fragments:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    return line


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` (recursively) -> file bytes (None for folders)."""
    return {
        str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


def save(array, path, affine=VOXEL, dtype=None) -> Path:
    img = nib.Nifti1Image(array, affine, dtype=dtype) if dtype is not None else nib.Nifti1Image(array, affine)
    nib.save(img, str(path))
    return path


def make_ct(path: Path) -> Path:
    """A 24^3 int16 CT: air, a soft-tissue block, and a bone cube of 10^3 voxels."""
    ct = np.full((24, 24, 24), -1000, np.int16)
    ct[3:21, 3:21, 3:21] = 40
    ct[7:17, 7:17, 7:17] = 900
    return save(ct, path)


def make_label(path: Path) -> Path:
    """Labels 1, 2 and 4 on the same grid as `make_ct`."""
    label = np.zeros((24, 24, 24), np.uint8)
    label[4:10, 4:10, 4:10] = 1
    label[12:20, 4:10, 4:12] = 2
    label[4:12, 14:20, 14:20] = 4
    return save(label, path)


def huge_header(shape=(2000, 2000, 2000)) -> bytes:
    """A NIfTI-1 header promising ``shape`` float32 voxels, followed by 1 kB of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_sform(VOXEL, code=1)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4 + b"\0" * 1024


# Builders of bad inputs: each writes into tmp_path and returns the path.


def _missing(tmp):
    return tmp / "missing.nii.gz"


def _empty(tmp):
    path = tmp / "empty.nii.gz"
    path.write_bytes(b"")
    return path


def _truncated(tmp):
    full = make_ct(tmp / "whole.nii.gz")
    data = full.read_bytes()
    path = tmp / "truncated.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


def _text_nii_gz(tmp):
    path = tmp / "notes.nii.gz"
    path.write_text("this is a text file, not an image\n")
    return path


def _png(tmp):
    path = tmp / "picture.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    return path


def _text_txt(tmp):
    path = tmp / "readme.txt"
    path.write_text("hello\n")
    return path


def _two_d(tmp):
    return save(np.zeros((16, 16), np.int16), tmp / "slice2d.nii.gz")


def _four_d(tmp):
    return save(np.zeros((8, 8, 8, 3), np.int16), tmp / "three_volumes.nii.gz")


def _liar(tmp):
    path = tmp / "liar.nii"
    path.write_bytes(huge_header())
    return path


def _soft_labels(tmp):
    data = np.zeros((8, 8, 8), np.float32)
    data[2:4, 2:4, 2:4] = 1.0
    data[5, 5, 5] = 0.5
    return save(data, tmp / "probabilities.nii.gz")


def _negative_labels(tmp):
    data = np.zeros((8, 8, 8), np.int16)
    data[2, 2, 2] = -1
    return save(data, tmp / "negative.nii.gz")


# (id, builder, role, what the message must say besides the file name)
BAD_INPUTS = [
    ("missing", _missing, "ct", ["no such file"]),
    ("empty", _empty, "ct", ["empty"]),
    ("truncated_gz", _truncated, "ct", ["truncated"]),
    ("text_as_nii_gz", _text_nii_gz, "ct", ["NIfTI"]),
    ("png", _png, "ct", ["NIfTI"]),
    ("txt", _text_txt, "label", ["NIfTI"]),
    ("2d", _two_d, "ct", ["3-D"]),
    ("4d_three_volumes", _four_d, "label", ["3-D", "3)"]),
    ("header_promises_32GB", _liar, "ct", ["2000", "bytes"]),
    ("non_integral_labels", _soft_labels, "label", ["non-integral", "0.5"]),
    ("negative_labels", _negative_labels, "label", ["negative"]),
]


def _input_args(role, path, tmp):
    if role == "ct":
        return [path]
    return [make_ct(tmp / "good_ct.nii.gz"), "--label", path]


# ------------------------------------------------------------------ bad input files


@pytest.mark.parametrize("case, build, role, fragments", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_info_bad_input(tmp_path, capsys, case, build, role, fragments):
    path = build(tmp_path)
    start = time.perf_counter()
    status, out, err = run_cli(capsys, "info", *_input_args(role, path, tmp_path))
    assert time.perf_counter() - start < 2.0
    assert status == 2
    assert_one_error(err, str(path), *fragments)


@pytest.mark.parametrize("case, build, role, fragments", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_export_bad_input_leaves_existing_folder_alone(tmp_path, capsys, case, build, role, fragments):
    path = build(tmp_path)
    args = _input_args(role, path, tmp_path)
    out = tmp_path / "meshes"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    (out / "1_L1.stl").write_bytes(b"old stl bytes")
    before_out, before_parent = snapshot(out), sorted(os.listdir(tmp_path))

    status, stdout, err = run_cli(capsys, "export", *args, "--out", out)

    assert status == 2
    assert_one_error(err, str(path), *fragments)
    assert snapshot(out) == before_out
    assert sorted(os.listdir(tmp_path)) == before_parent  # no staging folder left beside it


def test_export_bad_input_creates_no_output_folder(tmp_path, capsys):
    out = tmp_path / "new" / "meshes"
    status, _, err = run_cli(capsys, "export", _truncated(tmp_path), "--out", out)
    assert status == 2
    assert_one_error(err, "truncated.nii.gz")
    assert not out.exists()


def test_header_promising_huge_data_fails_fast(tmp_path, capsys):
    path = _liar(tmp_path)
    start = time.perf_counter()
    status, _, err = run_cli(capsys, "info", path)
    assert time.perf_counter() - start < 2.0
    assert status == 2
    assert_one_error(err, str(path), "32000000000")


def test_four_d_single_volume_is_fine(tmp_path, capsys):
    path = save(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6, 1), tmp_path / "one_volume.nii.gz")
    status, out, err = run_cli(capsys, "info", path)
    assert status == 0, err
    assert "shape (voxels) : (4, 5, 6)" in out
    assert "HU range       : 0 to 119" in out
    assert err == ""


def test_integral_float_labels_are_accepted(tmp_path, capsys):
    data = np.zeros((8, 8, 8), np.float32)
    data[1:4, 1:4, 1:4] = 7.0  # 27 voxels of 2 mm: 27 * 8 / 1000 = 0.216 mL
    data[5:7, 5:7, 5:7] = 2.0  # 8 voxels
    path = save(data, tmp_path / "float_labels.nii.gz")
    status, out, err = run_cli(capsys, "info", "--label", path)
    assert status == 0, err
    dtype = re.search(r"dtype\s*:\s*(\S+)", out).group(1)
    assert np.dtype(dtype).kind in "iu"
    rows = _label_rows(out)
    assert rows[7][1] == 27 and rows[7][2] == pytest.approx(0.22, abs=0.005)
    assert rows[2][1] == 8


# ------------------------------------------------------------------ bad options and missing arguments


def test_no_ct_and_no_label(tmp_path, capsys):
    for argv in (["info"], ["export", "--out", tmp_path / "o"]):
        status, out, err = run_cli(capsys, *argv)
        assert status == 2
        assert_one_error(err, "give a CT")
        assert out == ""
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["export", "{ct}", "--out", "{out}", "--labels", "a,b"], ["--labels", "a,b"]),
        (["export", "{ct}", "--out", "{out}", "--labels", "0"], ["--labels", "positive"]),
        (["export", "{ct}", "--out", "{out}", "--labels=3,-2"], ["--labels", "3,-2"]),
        (["export", "{ct}", "--out", "{out}", "--labels", ""], ["--labels"]),
        (["export", "{ct}", "--out", "{out}", "--bone-hu", "lots"], ["--bone-hu", "lots"]),
        (["screenshot", "{ct}", "--out", "{png}", "--size", "10x10"], ["--size", "10x10"]),
        (["screenshot", "{ct}", "--out", "{png}", "--size", "big"], ["--size", "big"]),
        (["screenshot", "{ct}", "--out", "{png}", "--size", "1024"], ["--size", "1024"]),
        (["screenshot", "{ct}", "--out", "{png}", "--size", "800x99999"], ["--size", "800x99999"]),
        (["screenshot", "{ct}", "--out", "{png}", "--window", "40,-400"], ["--window", "40,-400"]),
        (["screenshot", "{ct}", "--out", "{png}", "--window", "40,0"], ["--window", "positive"]),
        (["screenshot", "{ct}", "--out", "{png}", "--window", "a,b"], ["--window", "a,b"]),
        (["screenshot", "{ct}", "--out", "{png}", "--window", "1,2,3"], ["--window", "1,2,3"]),
        (["screenshot", "{ct}", "--out", "{png}", "--view", "sideways"], ["--view", "sideways"]),
        (["info", "{ct}", "--bogus"], ["--bogus"]),
        (["transmogrify", "{ct}"], ["transmogrify"]),
        ([], ["COMMAND"]),
        (["export", "{ct}"], ["--out"]),
    ],
)
def test_bad_options(tmp_path, capsys, argv, fragments):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    ct = make_ct(inputs / "ct.nii.gz")
    names = {"ct": str(ct), "out": str(tmp_path / "out"), "png": str(tmp_path / "shot.png")}
    status, out, err = run_cli(capsys, *[a.format(**names) for a in argv])
    assert status == 2
    assert_one_error(err, *fragments)
    assert sorted(os.listdir(tmp_path)) == ["inputs"]  # no output folder, PNG or temp file


@pytest.mark.parametrize("command", ["info", "export"])
def test_unknown_label_table(tmp_path, capsys, command):
    ct, label = make_ct(tmp_path / "ct.nii.gz"), make_label(tmp_path / "label.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    extra = ["--out", out] if command == "export" else []
    status, stdout, err = run_cli(capsys, command, ct, "--label", label, "--label-table", "totalsegmentor", *extra)
    assert status == 2
    assert_one_error(err, "totalsegmentor", "label table")
    assert snapshot(out) == {"keep.txt": b"x"}


def test_missing_label_table_file_is_named(tmp_path, capsys):
    ct, label = make_ct(tmp_path / "ct.nii.gz"), make_label(tmp_path / "label.nii.gz")
    table = tmp_path / "tables" / "mine.json"
    status, _, err = run_cli(capsys, "info", ct, "--label", label, "--label-table", table)
    assert status == 2
    assert_one_error(err, str(table))


def test_output_parent_is_a_regular_file(tmp_path, capsys):
    """We run as root, so chmod cannot make a folder unwritable: use a file as the parent."""
    ct = make_ct(tmp_path / "ct.nii.gz")
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("I am a file\n")
    out = blocker / "meshes"
    before = snapshot(tmp_path)
    status, _, err = run_cli(capsys, "export", ct, "--out", out)
    assert status == 2
    assert_one_error(err, str(out), "not a folder")
    assert snapshot(tmp_path) == before


def test_output_is_an_existing_file(tmp_path, capsys):
    ct = make_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "meshes"
    out.write_text("not a folder\n")
    before = snapshot(tmp_path)
    status, _, err = run_cli(capsys, "export", ct, "--out", out)
    assert status == 2
    assert_one_error(err, str(out))
    assert snapshot(tmp_path) == before


def test_nothing_to_export(tmp_path, capsys):
    label = make_label(tmp_path / "label.nii.gz")
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "export", "--label", label, "--labels", "99", "--out", out)
    assert status == 2
    assert_one_error(err, "nothing to export")
    assert not out.exists()


def test_failure_while_writing_leaves_existing_folder_unchanged(tmp_path, capsys, monkeypatch):
    """The disk fills up while one STL is written: the folder keeps its old contents, no staging left."""
    ct, label = make_ct(tmp_path / "ct.nii.gz"), make_label(tmp_path / "label.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    (out / "1_L1.stl").write_bytes(b"old bytes")
    before_out, before_parent = snapshot(out), sorted(os.listdir(tmp_path))

    real_write = viz3d.outputs.export.write_stl
    calls = []

    def failing_write(mesh, path):
        calls.append(path.name)
        if path.name == "bone.stl":  # files are written side by side: others may be complete
            raise OSError(28, "No space left on device")
        return real_write(mesh, path)

    monkeypatch.setattr(viz3d.outputs.export, "write_stl", failing_write)
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", out, "--no-smooth")
    assert "bone.stl" in calls and len(calls) >= 2
    assert status == 2
    assert_one_error(err, str(out), "No space left")
    assert snapshot(out) == before_out
    assert sorted(os.listdir(tmp_path)) == before_parent


# ------------------------------------------------------------------ screenshots that fail


def test_screenshot_of_missing_ct_leaves_no_png(tmp_path, capsys):
    missing = tmp_path / "missing.nii.gz"
    out = tmp_path / "shots"
    out.mkdir()
    status, _, err = run_cli(capsys, "screenshot", missing, "--out", out / "scene.png")
    assert status == 2
    assert_one_error(err, str(missing))
    assert os.listdir(out) == []


def test_screenshot_unknown_window_preset(tmp_path, capsys):
    ct = make_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "shots"
    out.mkdir()
    status, _, err = run_cli(capsys, "screenshot", ct, "--no-bone", "--out", out / "scene.png", "--window", "abdomen")
    assert status == 2
    assert_one_error(err, "abdomen", "window")
    assert os.listdir(out) == []


def test_screenshot_into_a_file_as_folder(tmp_path, capsys):
    ct = make_ct(tmp_path / "ct.nii.gz")
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("file\n")
    before = snapshot(tmp_path)
    status, _, err = run_cli(capsys, "screenshot", ct, "--out", blocker / "scene.png")
    assert status == 2
    assert_one_error(err, str(blocker))
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ real subprocesses


def _subprocess(*args, **kwargs):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("VIZ3D_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "viz3d", *[str(a) for a in args]],
        capture_output=True, text=True, timeout=60, env=env, **kwargs,
    )


def test_subprocess_missing_file(tmp_path):
    missing = tmp_path / "missing.nii.gz"
    result = _subprocess("info", missing)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error(result.stderr, str(missing), "no such file")


def test_subprocess_truncated_export_leaves_folder(tmp_path):
    path = _truncated(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious\n")
    before = snapshot(tmp_path)
    result = _subprocess("export", path, "--out", out)
    assert result.returncode == 2
    assert_one_error(result.stderr, str(path), "truncated")
    assert snapshot(tmp_path) == before


def _cli_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIZ3D_DEBUG", "OPENBLAS_NUM_THREADS")}
    return dict(env, **extra)


def test_command_line_module_loads_no_numpy():
    """`viz3d` can set up the process (BLAS threads) before numpy loads: importing the CLI loads none."""
    code = "import sys, viz3d.cli.main; print(sorted(m for m in ('numpy', 'scipy', 'nibabel', 'vtkmodules') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_cli_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_public_names_resolve_lazily(monkeypatch):
    import viz3d
    import viz3d.api

    for name in viz3d.__all__:
        assert getattr(viz3d, name) is not None, name
    assert viz3d.outputs.export.write_stl is not None  # submodules too
    with pytest.raises(AttributeError, match="no_such_name"):
        viz3d.no_such_name  # noqa: B018 - looking the name up is the test
    assert not hasattr(viz3d, "pyvista")  # only viz3d's own submodules are imported on demand
    # always the module's own function: a patch seen once does not stick after it is undone
    original = viz3d.api.load_ct
    monkeypatch.setattr(viz3d.api, "load_ct", lambda *a: "patched")
    assert viz3d.load_ct("x") == "patched"
    monkeypatch.undo()
    assert viz3d.load_ct is original


def test_closed_standard_output_is_no_error(tmp_path):
    """Started with stdout closed (cron, daemons), Python has no sys.stdout: the command still works."""
    ct, label = write_box_case(tmp_path, shape=(20, 20, 12), bone=np.s_[5:15, 5:15, 3:9], label=np.s_[6:14, 6:14, 4:8],
                               value=1, affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    result = subprocess.run([sys.executable, "-m", "viz3d", "info", str(ct), "--label", str(label)],
                            stderr=subprocess.PIPE, text=True, timeout=120, env=_cli_env(),
                            preexec_fn=lambda: os.close(1))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_command_line_process_keeps_blas_on_one_thread():
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: BLAS is single-threaded anyway")
    code = (
        "import json, viz3d.cli.main as cli\n"
        "def main(argv=None):\n"
        "    import numpy, threadpoolctl\n"
        "    print(json.dumps([lib['num_threads'] for lib in threadpoolctl.threadpool_info() if lib['user_api'] == 'blas']))\n"
        "    return 3\n"
        "cli.main = main\n"
        "cli.main_entry()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_cli_env())
    assert result.returncode == 3, result.stderr  # main's status is the process's
    threads = json.loads(result.stdout)
    assert threads and set(threads) == {1}


def test_command_line_process_collects_garbage_again_once_its_scene_is_built():
    """Loading and meshing run without the cycle collector; a scene that runs on (window, web
    view, turntable) turns it back on, a screenshot's does not (the process ends)."""
    code = (
        "import argparse, gc, json, viz3d.cli.main as cli, viz3d.scene.scene as scene\n"
        "scene.build_scene = lambda *a, **k: 'scene'\n"
        "def main(argv=None):\n"
        "    loading = gc.isenabled()\n"
        "    args = argparse.Namespace(window='bone', no_slices=False, no_bone=False, view='iso')\n"
        "    cli._scene_for(args, None, [], None, off_screen=True, interactive=False, runs_on=False)\n"
        "    shot = gc.isenabled()\n"
        "    built = cli._scene_for(args, None, [], None, off_screen=True, interactive=False)\n"
        "    print(json.dumps([loading, shot, built, gc.isenabled(), gc.get_freeze_count() > 0]))\n"
        "    return 0\n"
        "cli.main = main\n"
        "cli.main_entry()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_cli_env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [False, False, "scene", True, True]


def test_garbage_collection_a_program_turned_off_stays_off():
    """`cli.main` in a program of one's own leaves the program's collector settings alone."""
    import gc

    from viz3d import runtime

    gc.disable()
    try:
        runtime.collect_garbage_again()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_subprocess_export_and_cache_are_complete_when_it_exits(tmp_path):
    """The command line ends its process at once after main: every file and the cache entry are whole by then."""
    ct, label = write_box_case(tmp_path, shape=(30, 28, 16), bone=np.s_[6:22, 5:20, 3:12], label=np.s_[8:20, 7:18, 4:11],
                               value=2, affine=np.diag([-0.9, 1.1, 2.0, 1.0]), bone_hu=700)
    cache_dir, out = tmp_path / "cache", tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "viz3d", "export", str(ct), "--label", str(label), "--out", str(out)],
                            capture_output=True, text=True, timeout=120, env=_cli_env(VIZ3D_CACHE_DIR=str(cache_dir)))
    assert result.returncode == 0, result.stderr
    assert "wrote 2 STL files and manifest.json" in result.stderr  # flushed before the process ended
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["meshes"]:
        size = (out / entry["file"]).stat().st_size
        assert size == 84 + 50 * entry["triangles"]
    entries = sorted(p.name for p in cache_dir.iterdir())
    assert [name for name in entries if name.startswith(".")] == []  # no half-written cache file
    (info,) = [name for name in entries if name.startswith("meshes-") and name.endswith(".json")]
    described = json.loads((cache_dir / info).read_text())
    faces = np.load(cache_dir / info.replace(".json", ".faces.npy"))
    assert len(faces) == described["face_count"] == sum(e["triangles"] for e in manifest["meshes"])


def _limit_address_space():
    import resource

    limit = 3 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_subprocess_gz_header_promising_huge_data(tmp_path):
    """Compressed file whose header says 2000^3 float32: must fail naming the file, not try to allocate."""
    path = tmp_path / "liar.nii.gz"
    path.write_bytes(gzip.compress(huge_header()))
    start = time.perf_counter()
    result = _subprocess("info", path, preexec_fn=_limit_address_space)  # 3 GiB: a 32 GB allocation must fail
    assert time.perf_counter() - start < 20
    assert result.returncode == 2
    assert_one_error(result.stderr, str(path))


# ------------------------------------------------------------------ info on the real sample


def _label_rows(out: str) -> dict:
    """value -> (name, voxels, volume mL) from the table `viz3d info` prints."""
    rows = {}
    # (the bounding-box columns that follow the volume are checked in test_export.py)
    for match in re.finditer(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+\.\d\d)(?:\s{3}\S.*)?\s*$", out, re.MULTILINE):
        rows[int(match.group(1))] = (match.group(2), int(match.group(3)), float(match.group(4)))
    return rows


def test_info_real_sample(sample_dir, tables_dir, capsys):
    ct_path, label_path = sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz"
    ct = np.asanyarray(nib.load(str(ct_path)).dataobj)
    label = np.asanyarray(nib.load(str(label_path)).dataobj)
    names = json.loads((tables_dir / "totalsegmentator_total.json").read_text())

    status, out, err = run_cli(capsys, "info", ct_path, "--label", label_path, "--label-table", "totalsegmentator")
    assert status == 0, err
    assert err == ""  # same grid: no warning
    assert "shape (voxels) : (122, 101, 30)" in out
    assert "dtype          : int16" in out
    assert "voxel size (mm): (3.0, 3.0, 3.0)" in out
    assert "orientation    : RAS" in out
    assert f"HU range       : {ct.min()} to {ct.max()}" in out

    values, counts = np.unique(label[label > 0], return_counts=True)
    assert f"labels ({len(values)} present, table totalsegmentator)" in out
    rows = _label_rows(out)
    assert sorted(rows) == values.tolist()
    for value, count in zip(values.tolist(), counts.tolist()):
        name, voxels, ml = rows[value]
        assert voxels == count, value
        assert ml == pytest.approx(count * 27 / 1000, abs=0.006), value
        assert name == names[str(value)]
    # A few written out by hand, independent of the loop above.
    assert rows[2][:2] == ("kidney_right", int(np.count_nonzero(label == 2)))
    assert rows[5][0] == "liver" and rows[5][1] == int(np.sum(label == 5))
    assert rows[13][1] == 1 and rows[13][2] == pytest.approx(0.03)


def test_info_warns_about_different_grids(sample_dir, capsys):
    ct_path, label_path = sample_dir / "ct_full_fov.nii.gz", sample_dir / "label.nii.gz"
    ct = np.asanyarray(nib.load(str(ct_path)).dataobj)
    status, out, err = run_cli(capsys, "info", ct_path, "--label", label_path)
    assert status == 0, err
    assert "dtype          : int32" in out
    assert "shape (voxels) : (122, 101, 112)" in out
    assert f"HU range       : {ct.min()} to {ct.max()}" in out
    warnings = [line for line in err.splitlines() if line.startswith("viz3d: warning:")]
    assert len(warnings) == 1, err
    assert "different grids" in warnings[0]
    assert "112" in warnings[0] and "30" in warnings[0]
    assert "overlap" not in err.lower()
    assert "error" not in err


def test_info_warns_when_label_is_ten_metres_away(sample_dir, tmp_path, capsys):
    img = nib.load(str(sample_dir / "label.nii.gz"))
    moved = img.affine.copy()
    moved[0, 3] += 10_000.0
    far = tmp_path / "far_label.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), moved, img.header), str(far))

    status, out, err = run_cli(capsys, "info", sample_dir / "ct.nii.gz", "--label", far)
    assert status == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("viz3d: warning:")]
    assert any("different grids" in w for w in warnings), err
    assert any("not overlap" in w.lower() for w in warnings), err
    assert all(line.startswith("viz3d: warning:") for line in err.splitlines())


# ------------------------------------------------------------------ export


MANIFEST_KEYS = {"kind", "label", "name", "file", "triangles", "watertight", "volume_ml", "area_mm2"}


def _check_export(out: Path) -> dict:
    """The manifest is complete and every STL it names has its triangle count; return it."""
    import trimesh

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["coordinate_system"] == "RAS"
    assert manifest["units"] == "mm"
    files = [m["file"] for m in manifest["meshes"]]
    assert len(set(files)) == len(files)
    assert sorted(os.listdir(out)) == sorted(files + ["manifest.json"])
    for entry in manifest["meshes"]:
        assert MANIFEST_KEYS <= set(entry), entry
        assert "/" not in entry["file"] and "\\" not in entry["file"] and not entry["file"].startswith(".")
        stl = trimesh.load(str(out / entry["file"]), file_type="stl", force="mesh")
        assert len(stl.faces) == entry["triangles"] > 0
        assert np.all(np.isfinite(stl.vertices))
    return manifest


def test_export_real_sample(sample_dir, tables_dir, tmp_path, capsys):
    import trimesh

    label_path = sample_dir / "label.nii.gz"
    label_img = nib.load(str(label_path))
    label = np.asanyarray(label_img.dataobj)
    names = json.loads((tables_dir / "totalsegmentator_total.json").read_text())
    out = tmp_path / "meshes"

    status, _, err = run_cli(
        capsys, "export", sample_dir / "ct.nii.gz", "--label", label_path, "--label-table", "totalsegmentator",
        "--labels", "2,3,18", "--bone", "--out", out,
    )
    assert status == 0, err
    assert "error" not in err
    assert os.listdir(tmp_path) == ["meshes"]  # nothing beside it (no staging folder)
    manifest = _check_export(out)

    expected = {f"{v}_{names[str(v)]}.stl" for v in (2, 3, 18)} | {"bone.stl"}
    assert {m["file"] for m in manifest["meshes"]} == expected
    by_file = {m["file"]: m for m in manifest["meshes"]}
    bone = by_file.pop("bone.stl")
    assert bone["kind"] == "bone" and bone["label"] is None
    for value in (2, 3, 18):
        entry = by_file[f"{value}_{names[str(value)]}.stl"]
        assert entry["kind"] == "label" and entry["label"] == value and entry["name"] == names[str(value)]
        assert entry["watertight"] is True
        voxels_ml = np.count_nonzero(label == value) * 27 / 1000
        assert entry["volume_ml"] == pytest.approx(voxels_ml, rel=0.1)
        assert entry["area_mm2"] > 0
        # The surface sits where the voxels are in RAS mm (within a voxel).
        ijk = np.argwhere(label == value)
        xyz = nib.affines.apply_affine(label_img.affine, ijk)
        stl = trimesh.load(str(out / entry["file"]), file_type="stl", force="mesh")
        assert np.all(stl.vertices.min(axis=0) >= xyz.min(axis=0) - 3.0)
        assert np.all(stl.vertices.max(axis=0) <= xyz.max(axis=0) + 3.0)
        # Closed surface: its centre of mass is the voxels' centroid (to well under a voxel).
        np.testing.assert_allclose(stl.center_mass, xyz.mean(axis=0), atol=1.5)


def test_export_twice_into_the_same_folder(tmp_path, capsys):
    ct, label = make_ct(tmp_path / "ct.nii.gz"), make_label(tmp_path / "label.nii.gz")
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", out, "--no-smooth")
    assert status == 0, err
    first = _check_export(out)
    assert {m["file"] for m in first["meshes"]} == {"1_L1.stl", "2_L2.stl", "4_L4.stl", "bone.stl"}

    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", out, "--no-smooth")
    assert status == 0, err
    second = _check_export(out)
    assert second == first
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz", "label.nii.gz", "out"]


def test_export_hostile_label_names_stay_inside_the_folder(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    label = make_label(tmp_path / "label.nii.gz")
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"1": "../../evil", "2": "/abs/path", "4": ".."}))
    out = work / "out"
    before_root = sorted(os.listdir("/"))

    status, _, err = run_cli(capsys, "export", "--label", label, "--label-table", table, "--out", out, "--no-smooth")
    assert status == 0, err

    manifest = _check_export(out)
    assert {m["name"] for m in manifest["meshes"]} == {"../../evil", "/abs/path", ".."}
    for entry in manifest["meshes"]:
        assert (out / entry["file"]).resolve().parent == out.resolve()
        assert entry["file"].startswith(f"{entry['label']}_")
    assert sorted(os.listdir(tmp_path)) == ["label.nii.gz", "table.json", "work"]
    assert os.listdir(work) == ["out"]
    assert not any(p.name.startswith("evil") for p in tmp_path.parent.iterdir())
    assert sorted(os.listdir("/")) == before_root
    assert not Path("/abs").exists()


def test_export_nan_ct(tmp_path, capsys):
    import trimesh

    data = np.full((20, 20, 20), -700.0, np.float32)
    data[5:15, 5:15, 5:15] = 1200.0
    data[0, 0, 0] = np.nan
    data[10, 10, 10] = np.nan
    ct = save(data, tmp_path / "nan_ct.nii.gz")

    status, out, err = run_cli(capsys, "info", ct)
    assert status == 0, err
    assert "HU range       : -1024 to 1200" in out

    status, _, err = run_cli(capsys, "export", ct, "--out", tmp_path / "out")
    assert status == 0, err
    manifest = _check_export(tmp_path / "out")
    assert [m["file"] for m in manifest["meshes"]] == ["bone.stl"]
    stl = trimesh.load(str(tmp_path / "out" / "bone.stl"), file_type="stl", force="mesh")
    # The bone cube spans voxels 5..14 (2 mm): x from about 9 to 29 mm.
    assert stl.vertices.min() > 5.0 and stl.vertices.max() < 33.0


def test_exported_files_respect_umask(tmp_path, capsys):
    ct = make_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        status, _, err = run_cli(capsys, "export", ct, "--out", out, "--no-smooth")
    finally:
        os.umask(old)
    assert status == 0, err
    assert (out / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert (out / "bone.stl").stat().st_mode & 0o777 == 0o644
    assert out.stat().st_mode & 0o777 == 0o755


def test_failed_export_into_new_nested_folder_leaves_nothing(tmp_path, capsys, monkeypatch):
    ct = make_ct(tmp_path / "ct.nii.gz")

    def failing_write(mesh, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(viz3d.outputs.export, "write_stl", failing_write)
    status, _, err = run_cli(capsys, "export", ct, "--out", tmp_path / "new" / "deeper" / "out", "--no-smooth")
    assert status == 2
    assert_one_error(err, "No space left")
    assert sorted(os.listdir(tmp_path)) == ["ct.nii.gz"]


# ------------------------------------------------------------------ progress on a terminal


def _on_a_terminal(*args, stderr_is_terminal=True):
    """Run ``python -m viz3d ARGS`` with stderr on a 120-column pseudo-terminal (or a pipe); return its stderr."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    result = subprocess.run([sys.executable, "-m", "viz3d", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower if stderr_is_terminal else subprocess.PIPE,
                            timeout=300)
    os.close(follower)
    seen = b""
    if stderr_is_terminal:
        os.set_blocking(leader, False)
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            seen += chunk
    else:
        seen = result.stderr
    os.close(leader)
    assert result.returncode == 0, seen.decode(errors="replace")
    return seen.decode(errors="replace").replace("\r", "\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminal test")
def test_progress_bars_on_a_terminal_only(sample_dir, tmp_path):
    dicom, label = sample_dir / "ct_dicom", sample_dir / "label_for_ct_dicom.nii.gz"
    common = ["--label", label, "--label-table", "totalsegmentator", "--labels", "1,5,6"]
    shown = _on_a_terminal("export", dicom, *common, "--out", tmp_path / "a")
    slices = len(list(dicom.iterdir()))
    # one bar per stage; the CT's counts its slices as they are decoded
    counts = [int(done) for done in re.findall(rf"loading CT: .*\| (\d+)/{slices} ", shown)]
    assert counts and counts == sorted(counts) and counts[-1] > 0, shown
    assert re.search(r"meshing: +\d+%", shown) and re.search(r"checking and writing surfaces: +\d+%", shown), shown
    quiet = _on_a_terminal("export", dicom, *common, "--out", tmp_path / "b", "--quiet")
    piped = _on_a_terminal("export", dicom, *common, "--out", tmp_path / "c", stderr_is_terminal=False)
    assert "%|" not in quiet + piped and quiet.strip() == ""
    assert piped.strip().startswith("viz3d: wrote")


# ------------------------------------------------------------------ surface options


def test_export_records_the_smoothing_and_method_and_each_changes_the_surfaces(capsys, tmp_path):
    ct, label = write_box_case(tmp_path, shape=(24, 24, 12), bone=(slice(4, 9), slice(4, 9), slice(3, 7)),
                               label=(slice(12, 20), slice(10, 19), slice(2, 9)), value=3,
                               affine=np.diag([0.8, 0.8, 3.0, 1.0]))
    files = {}
    runs = {"default": [], "raw": ["--smoothing", "0"], "lewiner": ["--method", "lewiner", "--smoothing", "0.3"]}
    for name, options in runs.items():
        out = tmp_path / name
        status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", out, "--no-bone", *options)
        assert status == 0, err
        manifest = json.loads((out / "manifest.json").read_text())
        files[name] = (manifest, (out / manifest["meshes"][0]["file"]).read_bytes())
    assert files["default"][0]["settings"]["smoothing"] == 0.5
    assert files["default"][0]["settings"]["method"] == "flying-edges"
    assert files["raw"][0]["settings"]["smoothing"] == 0.0
    assert files["lewiner"][0]["settings"]["method"] == "lewiner"
    assert files["lewiner"][0]["settings"]["smoothing"] == 0.3
    assert len({data for _, data in files.values()}) == 3
    assert all(manifest["meshes"][0]["printable"] for manifest, _ in files.values())


@pytest.mark.parametrize("options, fragment", [
    (["--smoothing", "2"], "smoothing"),
    (["--smoothing", "nan"], "smoothing"),
    (["--smoothing", "soft"], "smoothing"),
    (["--method", "marching"], "method"),
])
def test_a_bad_surface_option_is_one_error_line(capsys, tmp_path, options, fragment):
    ct, label = write_box_case(tmp_path, shape=(12, 12, 6), bone=(slice(2, 5),) * 3,
                               label=(slice(5, 9), slice(5, 9), slice(1, 4)), value=1, affine=VOXEL)
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", tmp_path / "out", *options)
    assert status == 2
    assert_one_error(err, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out", ["", "/"])
def test_an_html_export_to_an_empty_or_root_path_is_refused(capsys, tmp_path, monkeypatch, out):
    ct, label = write_box_case(tmp_path, shape=(12, 12, 6), bone=(slice(2, 5),) * 3,
                               label=(slice(5, 9), slice(5, 9), slice(1, 4)), value=1, affine=VOXEL)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--format", "html", "--out", out)
    assert status == 2
    assert_one_error(err, "root" if out else "empty")
    assert sorted(os.listdir(tmp_path)) == before


def test_the_html_export_takes_the_scene_options_and_mesh_exports_refuse_them(capsys, tmp_path):
    ct, label = write_box_case(tmp_path, shape=(16, 16, 8), bone=(slice(2, 6),) * 3,
                               label=(slice(8, 13), slice(8, 13), slice(2, 6)), value=1, affine=VOXEL)
    page = tmp_path / "page.html"
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--format", "html", "--out", page, "--view", "left",
                             "--window", "bone", "--slices", "axial=off", "--colors", "distinct")
    assert status == 0, err
    assert "OfflineLocalView" in page.read_text(encoding="utf-8")
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", tmp_path / "stl", "--view", "left",
                             "--colors", "distinct")
    assert status == 2
    assert_one_error(err, "--view", "--colors", "only for --format html")
    assert not (tmp_path / "stl").exists()


def test_the_lewiner_method_without_scikit_image_is_one_error_line(capsys, tmp_path, monkeypatch):
    ct, label = write_box_case(tmp_path, shape=(12, 12, 6), bone=(slice(2, 5),) * 3,
                               label=(slice(5, 9), slice(5, 9), slice(1, 4)), value=1, affine=VOXEL)
    monkeypatch.setitem(sys.modules, "skimage.measure", None)  # as if scikit-image were not installed
    status, _, err = run_cli(capsys, "export", ct, "--label", label, "--out", tmp_path / "out", "--no-bone",
                             "--method", "lewiner", "--no-cache")
    assert status == 2
    assert_one_error(err, "lewiner", "scikit-image")
    assert not (tmp_path / "out").exists()
