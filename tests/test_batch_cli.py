"""`viz3d batch` on the command line: --list, a run's status and lines, the one-line error contract."""
import json
import subprocess
import sys

import pytest

from viz3d.batch.sample import make_dataset
from viz3d.cli.main import main


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_prints_every_case_with_its_files_and_every_skipped_file_with_why(tmp_path, capsys):
    make_dataset(tmp_path, "nnunet", n=2)
    (tmp_path / "imagesTr" / "s03_0000.nii.gz").write_bytes(b"")
    status, out, err = run_cli(capsys, "batch", tmp_path, "--list")
    assert status == 0 and err == ""
    assert out.splitlines() == [
        f"{tmp_path}: layout nnunet, 2 cases, 1 skipped",
        "  s01  CT imagesTr/s01_0000.nii.gz  label labelsTr/s01.nii.gz",
        "  s02  CT imagesTr/s02_0000.nii.gz  label labelsTr/s02.nii.gz",
        "skipped:",
        "  imagesTr/s03_0000.nii.gz: no label map labelsTr/s03.nii.gz",
    ]


def test_list_with_cases_shows_the_selection_and_the_manifests_columns(tmp_path, capsys):
    make_dataset(tmp_path, "manifest", n=3)
    status, out, _ = run_cli(capsys, "batch", tmp_path / "cases.csv", "--list", "--cases", "s0[13]")
    assert status == 0
    assert out.splitlines()[0] == f"{tmp_path / 'cases.csv'}: layout manifest, 2 cases (of 3), 0 skipped"
    assert out.splitlines()[2] == "  s03  CT data/s03_ct.nii.gz  label data/s03_seg.nii.gz  site=site-1"


@pytest.mark.parametrize("args, message", [
    (["--out"], None),
    ([], "--out OUT is required (or --list to see the cases)"),
    (["--list", "--cases", "zz*"], "--cases: no case matches zz*"),
    (["--list", "--layout", "ctspinopelvic"], "no ct/ folder, as the ctspinopelvic layout has"),
    (["--out", "o", "--turntable", "avi"], "argument --turntable: invalid choice: 'avi'"),
    (["--out", "o", "--workers", "0"], "--workers must be at least 1, got 0"),
    (["--out", "o", "--mosaic", "0"], "--mosaic must be from 1 to 100 slices, got 0"),
])
def test_bad_batch_arguments_are_one_error_line_and_exit_2(tmp_path, capsys, args, message):
    make_dataset(tmp_path / "data", "folders", n=1)
    status, out, err = run_cli(capsys, "batch", tmp_path / "data", *args)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("viz3d: error: ")
    if message:
        assert message in err


def test_a_batch_with_a_broken_case_completes_the_others_and_exits_2_naming_how_many_failed(tmp_path):
    make_dataset(tmp_path / "data", "ctspinopelvic", n=2, broken=True)
    command = [sys.executable, "-m", "viz3d", "batch", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
               "--export", "stl", "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1] == f"viz3d: error: 1 of 3 cases failed (broken); see {tmp_path / 'out' / 'summary.csv'}"
    assert lines[0].startswith(f"viz3d: broken: failed: {tmp_path / 'data' / 'ct' / 'broken_ct.nii.gz'}: truncated")
    assert "Traceback" not in done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [row["status"] for row in summary["cases"]] == ["failed", "done", "done"]
    again = subprocess.run(command[:-2] + ["--cases", "s*"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "2 cases: 0 done, 2 already done, 0 failed" in again.stderr
