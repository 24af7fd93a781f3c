"""The benchmark script, run small so that it does not rot (the real figures come from zoom 6)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_zoom_2(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--zoom", "2", "--cache", str(tmp_path / "cases"),
         "--json", str(out), "--seconds", "0.3", "--repeat", "2", "--no-fidelity"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["shape"] == [244, 202, 60] and result["labels"] == 41
    for key in ("naive_mesh_s", "viz3d_mesh_s", "check_s", "export_s", "screenshot_s", "screenshot_cached_s",
                "first_frame_floor_s", "dicom_serial_s", "dicom_pooled_s"):
        assert result[key] > 0, key
    for key in ("rotate_fps", "rotate_full_resolution_fps", "window_level_fps", "plain_render_fps"):
        assert result[key] > 0, key
    assert result["export_peak_mb"] > result["input_mb"]
    for name in ("export", "screenshot", "screenshot_cached"):  # the child's own CPU time, all its threads
        assert 0 < result[f"{name}_cpu_s"] < 2 * max(result[f"{name}_all_s"]) * (os.cpu_count() or 1), name
    assert "CPU s" in run.stdout
    assert len(result["export_all_s"]) == len(result["viz3d_mesh_all_s"]) == 2  # medians of --repeat runs
    # the runs are listed rounded to 1 ms, the median is of the exact times
    assert min(result["export_all_s"]) - 5e-4 <= result["export_s"] <= max(result["export_all_s"]) + 5e-4
    assert "meshing_speedup_vs_naive" in result["ratios"] and "first_frame_over_floor" in result["ratios"]
    assert "floor" in run.stdout and "DICOM" in run.stdout and result["dicom_slices"] == 60
    assert "speed-up" in run.stdout and "fps" in run.stdout


@pytest.mark.slow
def test_bench_fidelity_table(tmp_path):
    out = tmp_path / "fidelity.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--fidelity-only", "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["fidelity"]
    assert len(rows) == 5 * 4 * 5 and "3D Slicer default" in run.stdout
    ours = {(r["shape"], r["slice_mm"]): r for r in rows if r["method"] == "viz3d flying-edges"}
    slicer = {(r["shape"], r["slice_mm"]): r for r in rows if r["method"] == "3D Slicer default"}
    for key, row in ours.items():
        assert row["closed"], key
        assert row["normal_deg"] <= slicer[key]["normal_deg"] * 1.05 + 0.1, key


@pytest.mark.slow
def test_bench_batch_section(tmp_path):
    """`--batch`: viz3d batch against shell loops of export (+ screenshot), two cases, once."""
    out = tmp_path / "batch.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--batch", "--batch-cases", "2",
                          "--repeat", "1", "--cache", str(tmp_path / "cases"), "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["batch_cases"] == 2 and (tmp_path / "cases" / "batch-z4-2" / "labels" / "c02_label.nii.gz").exists()
    for key in ("loop_export_screenshot_s", "loop_export_s", "batch_local_s", "batch_dask_s", "single_export_peak_mb",
                "batch_local_worker_peak_mb", "batch_dask_worker_peak_mb", "single_screenshot_peak_mb"):
        assert result[key] > 0, key
    assert set(result["ratios"]) == {"batch_speedup_vs_export_screenshot_loop", "batch_over_export_loop",
                                     "dask_over_local_pool", "worker_peak_over_single_export",
                                     "worker_peak_over_single_screenshot", "export_only_worker_peak_over_single_export"}
    assert len(result["targets"]) == 4 and "worker / single export" in run.stdout
