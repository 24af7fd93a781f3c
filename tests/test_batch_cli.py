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


def test_shards_run_apart_and_merged_give_the_summary_of_one_run(tmp_path, capsys, monkeypatch):
    make_dataset(tmp_path / "data", "folders", n=4, broken=True)
    common = ["batch", tmp_path / "data"]
    from viz3d.batch import run  # cases one after another in this process: the shards are the subject here

    monkeypatch.setattr(run, "_run_pool", lambda cases, options, out, force, workers, report:
                        run._run_inline(cases, options, out, force, report))
    whole = run_cli(capsys, *common, "--out", tmp_path / "whole")
    assert whole[0] == 2
    for shard in ("1/3", "2/3"):
        status, _, err = run_cli(capsys, *common, "--out", tmp_path / "sharded", "--shard", shard)
        assert status in (0, 2) and "once every shard is done: viz3d batch --merge" in err
    status, _, err = run_cli(capsys, "batch", "--merge", tmp_path / "sharded")
    assert (status, err) == (2, f"viz3d: error: shard 3 of 3 not in {tmp_path / 'sharded' / 'shards'} yet "
                                "(still running, or failed: rerun it with --shard I/3)\n")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    run_cli(capsys, *common, "--out", tmp_path / "sharded", "--shard", "slurm")
    status, _, err = run_cli(capsys, "batch", "--merge", tmp_path / "sharded")
    assert status == 2 and err.splitlines()[-1].startswith("viz3d: error: 1 of 5 cases failed (broken)")
    one, merged = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "sharded"))
    drop = ("seconds", "peak_memory_mb")
    assert [{k: v for k, v in row.items() if k not in drop} for row in merged["cases"]] == [
        {k: v for k, v in row.items() if k not in drop} for row in one["cases"]]
    assert merged["structures"] == one["structures"]
    assert (tmp_path / "sharded" / "index.html").is_file()
