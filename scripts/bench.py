#!/usr/bin/env python3
"""Measure viz3d against naive baselines on a clinical-size case, in one run.

Builds (and caches, in the git-ignored ``bench-cases/``) a case with
``../shared/tools/make_bench_case.py --zoom N``, then measures, in this one run:

* the naive baseline the tutorial and the dataset scripts use: for each label,
  ``skimage.measure.marching_cubes(label == v, 0.5)`` on the whole volume, vertices scaled to mm;
  and the same plus load and STL writing, as the baseline for an end-to-end export;
* viz3d's label meshing as ``export`` does it (world mm, outward, smoothed) and the bone surface,
  and the surface checks export runs on them (one core);
* ``viz3d export`` end to end (load, mesh, write), wall time and peak resident memory (each
  run starts with an empty cache; what it wrote is deleted after it, as the naive run's files are);
* ``viz3d screenshot`` of the full scene (time to first frame), wall time and peak memory;
* the same screenshot again, with meshes and the decoded CT in the cache;
* the least any PyVista program needs for that frame: import PyVista while it reads the cached
  meshes, add them to a plotter and draw them once (no slices, legend or checks);
* loading the case's CT as a JPEG 2000 DICOM series (written once by ``scripts/make_dicom_case.py``),
  slices decoded in this process alone and on a pool of processes, one per core;
* surface fidelity (``--fidelity-only`` prints just this): analytic shapes (a ball, an ellipsoid, a
  torus tilted like a rib, a 5 mm tube, two half-balls touching along an oblique plane) voxelised on
  0.8 mm grids with 0.8, 3 and 5 mm between slices under RAS, LPS-stored and oblique affines, meshed by
  each of viz3d's methods, raw marching cubes, and 3D Slicer's default closed-surface pipeline rebuilt
  from its parameters (`viz3d.surfaces.fidelity.slicer_surface`); each row gives the worst of the three affines:
  area-weighted normal error, RMS and max vertex distance, volume error (and the voxels' own), time;
* frames per second while rotating the camera (full meshes, and the cheap interaction drawing
  the window switches to while the mouse drags) and while changing window/level (as a slider
  drag draws it, and with the full meshes), each against a plain re-render, offscreen.

``--batch`` measures only ``viz3d batch`` (issue #16's speed and memory targets): ``--batch-cases`` (8)
copies of the zoom-4 case as a CTSpinoPelvic1K dataset, made into STL meshes and one anterior
screenshot each by the local pool (default workers) and by a Dask LocalCluster of as many workers,
against shell loops of ``viz3d export`` + ``viz3d screenshot`` and of ``viz3d export`` alone, and the
workers' per-case peak memory (``OUT/summary.csv``) against one ``viz3d export``'s
(``bench-results/bench-batch.json`` unless ``--json``). Dask against the pool is also given in CPU
time (the command's and its workers'), which the machine's other tenants change far less than
wall time.

viz3d's own timings are the median of ``--repeat`` runs (default 3; the naive baseline, a minute
long at zoom 6, runs once). Prints a table and writes JSON (``bench-results/bench-z<N>.json`` unless ``--json``).
Ratios are what to compare: the machines are shared and absolute times are noisy.

    python scripts/bench.py --zoom 6
    python scripts/bench.py --batch
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAKE_CASE = ROOT.parent / "shared" / "tools" / "make_bench_case.py"


def build_case(zoom: int, cache: Path) -> Path:
    """The benchmark case folder for ``zoom``, built once and reused."""
    folder = cache / f"z{zoom}"
    if not ((folder / "ct.nii.gz").exists() and (folder / "label.nii.gz").exists()):
        subprocess.run([sys.executable, str(MAKE_CASE), "--zoom", str(zoom), "--out-dir", str(folder)], check=True)
    return folder


def build_dicom_case(case: Path) -> Path:
    """The case's CT as a JPEG 2000 DICOM series beside it, written once and reused."""
    folder = case / "dicom-j2k"
    if not folder.is_dir():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_dicom_case.py"), str(case / "ct.nii.gz"), str(folder)],
                       check=True, stdout=subprocess.DEVNULL)
    return folder


DICOM_SCRIPT = r"""
import json, sys, time
import numpy as np
import viz3d.io.dicom as dicom
import viz3d.runtime
viz3d.runtime.enable()  # the command line's speed-ups (forked decoders among them), as a command runs
if sys.argv[2] == "serial":
    dicom.POOL_MIN_SLICES = 10**9  # every slice decoded in this process
start = time.perf_counter()
volume = dicom.load_dicom(sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - start, "sum": int(volume.array.sum(dtype=np.int64)),
                  "slices": volume.shape[2]}))
"""


def dicom_loads(folder: Path, repeat: int) -> dict:
    """Median seconds to load ``folder`` with slices decoded serially and on the pool, alternated."""
    runs: dict[str, list] = {"serial": [], "pooled": []}
    for _ in range(repeat):
        for mode, measured in runs.items():
            out = subprocess.run([sys.executable, "-c", DICOM_SCRIPT, str(folder), mode], check=True,
                                 capture_output=True, text=True)
            measured.append(json.loads(out.stdout.strip().splitlines()[-1]))
    sums = {run["sum"] for measured in runs.values() for run in measured}
    if len(sums) != 1:
        raise SystemExit(f"DICOM loads disagree: voxel sums {sums}")
    return {"dicom_slices": runs["serial"][0]["slices"],
            **{f"dicom_{mode}_s": float(np.median([run["seconds"] for run in measured])) for mode, measured in runs.items()}}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def naive_meshes(label: np.ndarray, spacing) -> list:
    """The tutorial's way: marching cubes of ``label == v`` over the whole volume, per label.

    The label array is made C-contiguous first: on the Fortran-ordered array nibabel returns,
    skimage is 2-2.5x slower still, and the baseline should be the fast version of the naive way.
    """
    from skimage.measure import marching_cubes

    label = np.ascontiguousarray(label)
    meshes = []
    for value in np.unique(label):
        if value == 0:
            continue
        vertices, faces, _, _ = marching_cubes(label == value, 0.5, spacing=spacing)
        meshes.append((vertices, faces))
    return meshes


def write_stls(meshes, folder: Path) -> None:
    from viz3d.outputs.export import write_stl
    from viz3d.surfaces.meshing import Mesh

    for index, (vertices, faces) in enumerate(meshes):
        write_stl(Mesh(str(index), "label", index, (1, 1, 1), vertices, faces.astype(np.int64)), folder / f"{index}.stl")


def remove(*paths: str) -> None:
    """Delete files and folders a measured run wrote (untimed)."""
    for path in map(Path, paths):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_child(args: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Run a command; return (wall seconds, peak resident memory of that process in MB, its CPU
    seconds: user + system, all threads).

    The files earlier runs wrote are flushed to disk first (untimed), so no run pays for
    another's writing. CPU time is the steadier figure on a shared machine: wall time also
    counts the other tenants, CPU time only this process's work (and its page faults).
    """
    os.sync()
    start = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"benchmark step failed ({status}): {' '.join(args)}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


FPS_SCRIPT = r"""
import json, sys, time
from viz3d.runtime import configure_offscreen, enable
configure_offscreen()
enable()  # the command line's speed-ups, as `viz3d view` runs
import viz3d
from viz3d.io.labels import load_label_table
ct, label = viz3d.load_ct(sys.argv[1]), viz3d.load_label(sys.argv[2])
meshes = viz3d.build_meshes(ct, label, table="totalsegmentator")
scene = viz3d.build_scene(meshes, ct, off_screen=True, size=(1024, 768), interactive=False)
window = scene.plotter.render_window
window.Render()
SECONDS = float(sys.argv[3])
def rate(step, seconds=SECONDS, least=3):
    frames, start = 0, time.perf_counter()
    while frames < least or time.perf_counter() - start < seconds:
        step(frames)
        window.Render()
        frames += 1
    return frames / (time.perf_counter() - start)
camera = scene.plotter.renderer.camera
full_rotate = rate(lambda i: camera.Azimuth(5), seconds=SECONDS / 2)
def paired(first, second, seconds, least=3):
    # frame rates of two steps alternated frame by frame, so machine noise hits both alike
    times, frames, start = ([], []), 0, time.perf_counter()
    while frames < least or time.perf_counter() - start < seconds:
        for step, spent in zip((first, second), times):
            t = time.perf_counter()
            step(frames)
            window.Render()
            spent.append(time.perf_counter() - t)
        frames += 1
    return tuple(len(spent) / sum(spent) for spent in times)
set_window = lambda i: scene.set_window(40 + 10 * (i % 50), 400 + 20 * (i % 30))
level_full, plain_full = paired(set_window, lambda i: None, SECONDS / 2, least=8)  # ~0.7 s frames: more pairs
start = time.perf_counter()
lod_triangles = scene.build_lod()
lod_build = time.perf_counter() - start
scene.begin_interaction()  # what the window does while the mouse drags the camera or a slider
rotate = rate(lambda i: camera.Azimuth(5))
level, plain = paired(set_window, lambda i: None, SECONDS)
scene.end_interaction()
print(json.dumps({"rotate_fps": rotate, "rotate_full_resolution_fps": full_rotate, "lod_triangles": lod_triangles,
                  "lod_build_s": lod_build, "window_level_fps": level, "plain_render_fps": plain,
                  "window_level_full_resolution_fps": level_full, "plain_render_full_resolution_fps": plain_full}))
"""


FLOOR_SCRIPT = r"""
import os, sys, threading
from pathlib import Path
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
importing = threading.Thread(target=lambda: __import__("pyvista.plotting"))  # while the meshes are read
importing.start()
import numpy as np
from viz3d import cache
(entry,) = Path(os.environ["VIZ3D_CACHE_DIR"]).glob("meshes-*.json")
meshes, _ = cache.load_meshes(entry.name[len("meshes-"):-len(".json")])
importing.join()
import pyvista
plotter = pyvista.Plotter(off_screen=True, window_size=(1024, 768))
plotter.disable_anti_aliasing()
for mesh in meshes:
    if len(mesh.faces):
        poly = pyvista.PolyData.from_regular_faces(mesh.vertices.astype(np.float32), mesh.faces)
        actor = plotter.add_mesh(poly, color=mesh.color, opacity=0.35 if mesh.kind == "bone" else 1.0, reset_camera=False)
        actor.prop.culling = "none" if mesh.kind == "bone" else "back"
plotter.view_xz()
plotter.render_window.Render()  # drawn once and read back, as viz3d.outputs.render.render_image does
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter
grab = vtkWindowToImageFilter()
grab.SetInput(plotter.render_window)
grab.ReadFrontBufferOff()
grab.ShouldRerenderOff()
grab.Update()
image = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
assert image.shape[0] == 1024 * 768 and image.std() > 0
os._exit(0)
"""


FIDELITY_METHODS = ("viz3d flying-edges", "viz3d surface-nets", "viz3d lewiner", "raw marching cubes", "3D Slicer default")


RESAMPLED = "3 mm x6"  # the fidelity table's label maps drawn on a 3 mm grid and written on a 0.5 mm one


def fidelity_rows(spacings=(0.8, 3.0, 5.0, RESAMPLED)) -> list[dict]:
    """The fidelity table: one row per shape, slice spacing and method, worst over the affines.

    ``RESAMPLED`` stands for a label map voxelised on a 3 mm grid and upsampled 6-fold as the
    zoom-6 case is (`viz3d.surfaces.fidelity.upsample_labels`): 0.5 mm voxels, 3 mm terraces."""
    from viz3d.surfaces import fidelity
    from viz3d.surfaces.meshing import label_meshes

    halves = fidelity.ball_halves(14.0, tilt=35.0)
    shapes = {"ball r18": [fidelity.sphere(18.0)], "ellipsoid 24/16/11": [fidelity.ellipsoid()],
              "torus R26 r5 (rib)": [fidelity.torus()], "tube R20 r2.5": [fidelity.torus(20.0, 2.5)],
              "touching half-balls r14": list(halves)}
    grids = {"RAS": {}, "LPS": {"flip_lr_ap": True}, "oblique": {"turn": fidelity.rotation([1, 2, 3], 20)}}

    def surfaces(label, method, count):
        if method == "3D Slicer default":
            return [fidelity.slicer_surface(label, value) for value in range(1, count + 1)]
        options = {"smoothing": 0.0} if method == "raw marching cubes" else {"method": method.split()[1]}
        return [(m.vertices, m.faces) for m in label_meshes(label, **options)]

    warm = fidelity.voxelise([fidelity.sphere(4.0)], spacing=(0.8, 0.8, 3.0))  # imports and first calls, untimed
    for method in FIDELITY_METHODS:
        surfaces(warm, method, 1)
    rows = []
    for shape_name, parts in shapes.items():
        for spacing in spacings:
            if spacing == RESAMPLED:
                coarse = {grid: fidelity.voxelise(parts, affine=fidelity.grid_affine((3.0, 3.0, 3.0), **kw))
                          for grid, kw in grids.items()}
                labels = {grid: fidelity.upsample_labels(label, 6) for grid, label in coarse.items()}
            else:
                labels = {grid: fidelity.voxelise(parts, affine=fidelity.grid_affine((0.8, 0.8, spacing), **kw))
                          for grid, kw in grids.items()}
            for method in FIDELITY_METHODS:
                worst = dict(normal_deg=0.0, rms_mm=0.0, max_mm=0.0, volume_pct=0.0, voxel_volume_pct=0.0,
                             penetration_mm=0.0, closed=True, seconds=0.0)
                for label in labels.values():
                    start = time.perf_counter()
                    built = surfaces(label, method, len(parts))
                    worst["seconds"] = max(worst["seconds"], time.perf_counter() - start)
                    for value, ((vertices, faces), part) in enumerate(zip(built, parts), start=1):
                        error = fidelity.surface_error(vertices, faces, part)
                        voxels = 100 * (np.count_nonzero(label.array == value) * label.voxel_volume_mm3 / part.volume - 1)
                        worst["normal_deg"] = max(worst["normal_deg"], error.normal_error_deg)
                        worst["rms_mm"] = max(worst["rms_mm"], error.rms_mm)
                        worst["max_mm"] = max(worst["max_mm"], error.max_mm)
                        worst["volume_pct"] = max(worst["volume_pct"], abs(error.volume_error_pct), key=abs)
                        worst["voxel_volume_pct"] = max(worst["voxel_volume_pct"], abs(voxels))
                        worst["closed"] &= error.closed_outward
                    if len(built) == 2:
                        worst["penetration_mm"] = max(worst["penetration_mm"], fidelity.penetration_mm(*built[0], *built[1]),
                                                      fidelity.penetration_mm(*built[1], *built[0]))
                rows.append(dict(shape=shape_name, slice_mm=spacing, method=method, **worst))
    return rows


def print_fidelity(rows: list[dict]) -> None:
    print(f"{'shape':<24} {'slices':>7} {'method':<20} {'normal':>7} {'RMS':>6} {'max':>6} {'|volume|':>8} "
          f"{'voxels':>7} {'into':>5} {'closed':>6} {'time':>6}")
    for r in rows:
        into = f"{r['penetration_mm']:.2f}" if r["shape"].startswith("touching") else "-"
        slices = r["slice_mm"] if isinstance(r["slice_mm"], str) else f"{r['slice_mm']:.1f}mm"
        print(f"{r['shape']:<24} {slices:>7} {r['method']:<20} {r['normal_deg']:>6.1f}\u00b0 "
              f"{r['rms_mm']:>6.2f} {r['max_mm']:>6.2f} {r['volume_pct']:>7.1f}% {r['voxel_volume_pct']:>6.1f}% "
              f"{into:>5} {'yes' if r['closed'] else 'NO':>6} {1000 * r['seconds']:>4.0f}ms")


# ----------------------------------------------------------------------- viz3d batch (issue #16)
BATCH_ZOOM = 4
BATCH_TABLE = ["--label-table", "totalsegmentator"]


def build_batch_dataset(cache: Path, count: int) -> Path:
    """``count`` copies of the zoom-4 case as a CTSpinoPelvic1K dataset (``ct/{id}_ct.nii.gz``,
    ``labels/{id}_label.nii.gz``; hard links where the file system allows), built once and reused."""
    case = build_case(BATCH_ZOOM, cache)
    root = cache / f"batch-z{BATCH_ZOOM}-{count}"
    for index in range(1, count + 1):
        for source, target in ((case / "ct.nii.gz", root / "ct" / f"c{index:02d}_ct.nii.gz"),
                               (case / "label.nii.gz", root / "labels" / f"c{index:02d}_label.nii.gz")):
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    return root


def batch_peaks(out: Path) -> list[float]:
    """The per-case peak memory (MB) of a batch's case rows in ``out/summary.csv``."""
    import csv

    with open(out / "summary.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["level"] == "case"]
    if any(row["status"] != "done" for row in rows):
        raise SystemExit(f"benchmark batch had failed cases: {[(r['case'], r['error']) for r in rows]}")
    return [float(row["peak_memory_mb"]) for row in rows]


def batch_section(args) -> dict:
    """Issue #16's figures, measured in this one run (see the module's text)."""
    from viz3d.batch.layouts import discover
    from viz3d.batch.resources import default_workers

    root = build_batch_dataset(args.cache, args.batch_cases)
    cases = discover(root).cases
    ids = [case.id for case in cases]
    workers = default_workers(cases)
    cli = [sys.executable, "-m", "viz3d"]
    env = dict(os.environ, VIZ3D_NO_CACHE="1")
    results: dict = {"batch_cases": len(ids), "zoom": BATCH_ZOOM, "workers": workers,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
                     "dataset": str(root)}
    runs: dict[str, list] = {"loop_export_screenshot": [], "loop_export": [], "batch_local": [], "batch_dask": [],
                             "batch_export_only": [], "single_export": []}
    peaks: dict[str, list] = {"batch_local": [], "batch_dask": [], "batch_export_only": []}
    cpus: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def case_args(case):
            return [str(case.ct), "--label", str(case.label), *BATCH_TABLE, "--quiet"]

        def loop(screenshots: bool) -> float:
            start = time.perf_counter()
            for case in cases:  # as a shell loop runs them: one command after another
                run_child(cli + ["export", *case_args(case), "--out", f"{tmp}/loop/{case.id}/meshes"], env)
                if screenshots:
                    run_child(cli + ["screenshot", *case_args(case), "--view", "anterior",
                                     "--out", f"{tmp}/loop/{case.id}/screenshot-anterior.png"], env)
            seconds = time.perf_counter() - start
            remove(f"{tmp}/loop")
            return seconds

        def batch(engine: list[str], name: str, outputs=("--screenshot", "anterior")) -> float:
            out = Path(tmp) / name
            wall, _, cpu = run_child(cli + ["batch", str(root), "--out", str(out), "--export", "stl",
                                            *outputs, *BATCH_TABLE, "--force", "--quiet", *engine], env)
            peaks[name].append(batch_peaks(out))
            cpus.setdefault(name, []).append(cpu)  # the batch's and its workers' (each is waited for)
            remove(str(out))
            return wall

        for _ in range(args.repeat):  # the ways alternated, so the machine's load hits each alike
            runs["loop_export_screenshot"].append(loop(screenshots=True))
            runs["loop_export"].append(loop(screenshots=False))
            runs["batch_local"].append(batch([], "batch_local"))
            runs["batch_dask"].append(batch(["--dask", "local", "--workers", str(workers)], "batch_dask"))
            # the same work as one viz3d export: the workers' peak memory without the drawing's
            runs["batch_export_only"].append(batch([], "batch_export_only", outputs=()))
            wall, peak, _ = run_child(cli + ["export", *case_args(cases[0]), "--out", f"{tmp}/single"], env)
            runs["single_export"].append(wall)
            results.setdefault("single_export_peaks_mb", []).append(round(peak, 1))
            # the loop's other command: a worker also draws, so this is its peak's other yardstick
            _, peak, _ = run_child(cli + ["screenshot", *case_args(cases[0]), "--view", "anterior",
                                          "--out", f"{tmp}/single.png"], env)
            results.setdefault("single_screenshot_peaks_mb", []).append(round(peak, 1))
            remove(f"{tmp}/single", f"{tmp}/single.png")
    for name, measured in runs.items():
        results[f"{name}_s"] = float(np.median(measured))
        results[f"{name}_all_s"] = [round(wall, 2) for wall in measured]
    for name, measured in cpus.items():
        results[f"{name}_cpu_s"] = float(np.median(measured))
    for name, measured in peaks.items():
        every = [peak for run in measured for peak in run]
        results[f"{name}_worker_peak_mb"] = max(every)
        results[f"{name}_worker_peak_median_mb"] = float(np.median(every))
        results[f"{name}_worker_peaks_mb"] = measured
    results["single_export_peak_mb"] = max(results["single_export_peaks_mb"])
    results["single_screenshot_peak_mb"] = max(results["single_screenshot_peaks_mb"])
    results["ratios"] = {
        "batch_speedup_vs_export_screenshot_loop": results["loop_export_screenshot_s"] / results["batch_local_s"],
        "batch_over_export_loop": results["batch_local_s"] / results["loop_export_s"],
        "dask_over_local_pool": results["batch_dask_s"] / results["batch_local_s"],
        # CPU time of the command and its workers: what Dask adds, whatever else the machine runs
        "dask_over_local_pool_cpu": results["batch_dask_cpu_s"] / results["batch_local_cpu_s"],
        "worker_peak_over_single_export": results["batch_local_worker_peak_mb"] / results["single_export_peak_mb"],
        "worker_peak_over_single_screenshot": (results["batch_local_worker_peak_mb"]
                                               / results["single_screenshot_peak_mb"]),
        "export_only_worker_peak_over_single_export": (results["batch_export_only_worker_peak_mb"]
                                                       / results["single_export_peak_mb"]),
    }
    results["targets"] = {
        "batch >= 1.3x faster than export+screenshot loop":
            results["ratios"]["batch_speedup_vs_export_screenshot_loop"] >= 1.3,
        "batch <= export loop + 10%": results["ratios"]["batch_over_export_loop"] <= 1.1,
        "dask within 10% of local pool": abs(results["ratios"]["dask_over_local_pool"] - 1) <= 0.1,
        # a worker needing less than the command is no miss: the notes budget memory per worker
        "worker peak within 10% of single export": results["ratios"]["worker_peak_over_single_export"] <= 1.1,
    }
    return results


def print_batch(r: dict) -> None:
    n, ratios = r["batch_cases"], r["ratios"]
    rows = [
        ("dataset", f"{n} zoom-{r['zoom']} cases, STL + anterior screenshot ({r['machine']})"),
        ("loop: viz3d export + viz3d screenshot", f"{r['loop_export_screenshot_s']:.1f} s  {r['loop_export_screenshot_all_s']}"),
        ("loop: viz3d export", f"{r['loop_export_s']:.1f} s  {r['loop_export_all_s']}"),
        (f"viz3d batch, local pool ({r['workers']} workers)", f"{r['batch_local_s']:.1f} s  {r['batch_local_all_s']}"),
        (f"viz3d batch --dask local --workers {r['workers']}", f"{r['batch_dask_s']:.1f} s  {r['batch_dask_all_s']}"),
        ("  batch speed-up vs export+screenshot loop",
         f"{ratios['batch_speedup_vs_export_screenshot_loop']:.2f}x (target >= 1.3x)"),
        ("  batch / export loop", f"{ratios['batch_over_export_loop']:.2f} (target <= 1.10)"),
        ("  dask / local pool", f"{ratios['dask_over_local_pool']:.2f} (target 0.90-1.10)"),
        ("  dask / local pool, CPU time", f"{ratios['dask_over_local_pool_cpu']:.2f} "
                                          f"({r['batch_dask_cpu_s']:.1f} s / {r['batch_local_cpu_s']:.1f} s)"),
        ("peak memory: batch worker (per case, max)", f"{r['batch_local_worker_peak_mb']:.0f} MB "
                                                     f"(median {r['batch_local_worker_peak_median_mb']:.0f} MB; "
                                                     f"dask {r['batch_dask_worker_peak_mb']:.0f} MB)"),
        ("peak memory: one viz3d export", f"{r['single_export_peak_mb']:.0f} MB"),
        ("  worker / single export", f"{ratios['worker_peak_over_single_export']:.2f} (target <= 1.10)"),
        ("peak memory: one viz3d screenshot", f"{r['single_screenshot_peak_mb']:.0f} MB"),
        ("  worker / single screenshot", f"{ratios['worker_peak_over_single_screenshot']:.2f}"),
        ("batch --export stl alone (no picture)", f"{r['batch_export_only_s']:.1f} s, worker peak "
                                                  f"{r['batch_export_only_worker_peak_mb']:.0f} MB"),
        ("  worker / single export", f"{ratios['export_only_worker_peak_over_single_export']:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for target, held in r["targets"].items():
        print(f"{'held' if held else 'MISSED':>6}  {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoom", type=int, default=6, help="case size: 2 (smoke), 4 (24 M voxels), 6 (80 M voxels)")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench-cases", help="where cases are built and kept")
    parser.add_argument("--json", type=Path, help="output JSON (default bench-results/bench-z<N>.json)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each frame-rate loop runs (default 3)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="viz3d's timings are the median of this many runs (default 3); the naive one runs once")
    parser.add_argument("--fidelity-only", action="store_true", help="measure (and save) only the fidelity table")
    parser.add_argument("--no-fidelity", action="store_true", help="leave out the fidelity table (a minute)")
    parser.add_argument("--batch", action="store_true",
                        help="measure (and save) only viz3d batch against shell loops of export and screenshot")
    parser.add_argument("--batch-cases", type=int, default=8, help="cases in the --batch dataset (default 8)")
    args = parser.parse_args()
    from viz3d import runtime

    if args.batch:
        batch = batch_section(args)
        print_batch(batch)
        out = args.json or ROOT / "bench-results" / "bench-batch.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(batch, indent=2) + "\n")
        print(f"wrote {out}")
        return

    runtime.enable()  # viz3d measured as its command line runs it: the speed-ups on (see viz3d.runtime)

    if args.fidelity_only:
        fidelity = fidelity_rows()
        print_fidelity(fidelity)
        out = args.json or ROOT / "bench-results" / "fidelity.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"fidelity": fidelity}, indent=1) + "\n")
        print(f"wrote {out}")
        return

    import nibabel as nib

    import viz3d
    from viz3d.io.labels import load_label_table

    case = build_case(args.zoom, args.cache)
    ct_path, label_path = case / "ct.nii.gz", case / "label.nii.gz"
    results: dict = {"zoom": args.zoom, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"}
    table = load_label_table("totalsegmentator")

    # Commands first, while this process is small: a forked child's peak resident memory
    # counts the parent's pages until exec.
    cli = [sys.executable, "-m", "viz3d"]
    inputs = [str(ct_path), "--label", str(label_path), "--label-table", "totalsegmentator", "--quiet"]
    runs: dict[str, list] = {"export": [], "screenshot": [], "screenshot_cached": [], "first_frame_floor": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            # Each export and first screenshot starts with an empty mesh cache of its own. What
            # a run wrote is deleted once it is measured, as the naive export's files are: kept,
            # every later run would write into memory the system has not used yet, which costs
            # this virtual machine 0.3-0.4 s per export (the naive run writes once, at the end).
            cold = dict(os.environ, VIZ3D_CACHE_DIR=f"{tmp}/cache-export-{i}")
            runs["export"].append(run_child(cli + ["export", *inputs, "--out", f"{tmp}/out-{i}"], cold))
            remove(f"{tmp}/out-{i}", f"{tmp}/cache-export-{i}")
            shots = dict(os.environ, VIZ3D_CACHE_DIR=f"{tmp}/cache-screenshot-{i}")
            runs["screenshot"].append(run_child(cli + ["screenshot", *inputs, "--out", f"{tmp}/s.png"], shots))
            runs["screenshot_cached"].append(run_child(cli + ["screenshot", *inputs, "--out", f"{tmp}/s2.png"], shots))
            runs["first_frame_floor"].append(run_child([sys.executable, "-c", FLOOR_SCRIPT], shots))
            remove(f"{tmp}/cache-screenshot-{i}", f"{tmp}/s.png", f"{tmp}/s2.png")
        for name, measured in runs.items():  # median time, highest peak memory
            results[f"{name}_s"] = float(np.median([wall for wall, _, _ in measured]))
            results[f"{name}_peak_mb"] = max(peak for _, peak, _ in measured)
            results[f"{name}_all_s"] = [round(wall, 3) for wall, _, _ in measured]
            results[f"{name}_cpu_s"] = float(np.median([cpu for _, _, cpu in measured]))
        fps = subprocess.run([sys.executable, "-c", FPS_SCRIPT, str(ct_path), str(label_path), str(args.seconds)],
                             check=True, capture_output=True, text=True,
                             env=dict(os.environ, VIZ3D_CACHE_DIR=f"{tmp}/cache-fps"))
    results.update(json.loads(fps.stdout.strip().splitlines()[-1]))
    results.update(dicom_loads(build_dicom_case(case), args.repeat))

    load_s, (ct, label) = timed(lambda: (viz3d.load_ct(ct_path), viz3d.load_label(label_path)))
    results.update(shape=list(label.shape), labels=len(viz3d.surfaces.meshing.present_labels(label.array)), load_s=load_s,
                   input_mb=(ct.array.nbytes + label.array.nbytes) / 2**20)

    spacing = label.voxel_sizes
    # the tutorial loads both files with nibabel; the naive export then meshes the labels
    nib_load_s, (_, naive_label) = timed(lambda: (np.asarray(nib.load(ct_path).dataobj),
                                                  np.asarray(nib.load(label_path).dataobj)))
    naive_s, naive = timed(naive_meshes, naive_label, spacing)
    with tempfile.TemporaryDirectory() as tmp:
        naive_write_s, _ = timed(write_stls, naive, Path(tmp))
    results.update(naive_mesh_s=naive_s, naive_triangles=int(sum(len(f) for _, f in naive)),
                   naive_export_s=nib_load_s + naive_s + naive_write_s)
    del naive, naive_label

    mesh_times, bone_times = [], []
    for _ in range(args.repeat):  # the first run includes its imports, as the naive one does
        seconds, meshes = timed(viz3d.label_meshes, label, table)
        mesh_times.append(seconds)
    for _ in range(args.repeat):
        seconds, bone = timed(viz3d.bone_mesh, ct)
        bone_times.append(seconds)
    mesh_s, bone_s = float(np.median(mesh_times)), float(np.median(bone_times))
    from viz3d.surfaces.quality import inspect_surface

    every = meshes + ([bone] if bone else [])
    check_times = [timed(lambda every=every: [inspect_surface(m.vertices, m.faces) for m in every])[0]
                   for _ in range(args.repeat)]
    results.update(check_s=float(np.median(check_times)))
    results.update(viz3d_mesh_all_s=[round(t, 3) for t in mesh_times], viz3d_mesh_s=mesh_s,
                   viz3d_triangles=int(sum(m.n_triangles for m in meshes)), bone_s=bone_s,
                   bone_triangles=bone.n_triangles if bone else 0,
                   output_mb=sum(m.vertices.nbytes + m.faces.nbytes for m in every) / 2**20)
    del meshes, bone, every, ct, label

    results["ratios"] = {
        "meshing_speedup_vs_naive": results["naive_mesh_s"] / results["viz3d_mesh_s"],
        "export_speedup_vs_naive": results["naive_export_s"] / results["export_s"],
        "export_peak_over_inputs_plus_meshes": results["export_peak_mb"] / (results["input_mb"] + results["output_mb"]),
        "window_level_over_plain_render": results["window_level_fps"] / results["plain_render_fps"],
        "window_level_over_plain_render_full_meshes": (results["window_level_full_resolution_fps"]
                                                       / results["plain_render_full_resolution_fps"]),
        "cached_first_frame_speedup": results["screenshot_s"] / results["screenshot_cached_s"],
        "first_frame_over_floor": results["screenshot_s"] / results["first_frame_floor_s"],
        "dicom_pool_speedup": results["dicom_serial_s"] / results["dicom_pooled_s"],
    }
    if not args.no_fidelity:  # last: its imports would count in the children's peak memory
        results["fidelity"] = fidelity_rows()
    out = args.json or ROOT / "bench-results" / f"bench-z{args.zoom}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    if "fidelity" in results:
        print()
        print_fidelity(results["fidelity"])
    print(f"wrote {out}")


def print_table(r: dict) -> None:
    rows = [
        ("case", f"zoom {r['zoom']}: {' x '.join(map(str, r['shape']))} voxels, {r['labels']} labels ({r['machine']})"),
        ("naive marching cubes, all labels", f"{r['naive_mesh_s']:.2f} s ({r['naive_triangles'] / 1e6:.2f} M triangles)"),
        ("viz3d label meshing (smoothed, world mm)", f"{r['viz3d_mesh_s']:.2f} s ({r['viz3d_triangles'] / 1e6:.2f} M triangles)"),
        ("  speed-up", f"{r['ratios']['meshing_speedup_vs_naive']:.1f}x"),
        ("viz3d bone surface", f"{r['bone_s']:.2f} s ({r['bone_triangles'] / 1e6:.2f} M triangles)"),
        ("viz3d surface checks (all surfaces, one core)", f"{r['check_s']:.2f} s"),
        ("naive load + mesh + write STL", f"{r['naive_export_s']:.2f} s"),
        ("viz3d export end to end",
         f"{r['export_s']:.2f} s ({r['export_cpu_s']:.2f} CPU s), peak {r['export_peak_mb']:.0f} MB"),
        ("  speed-up", f"{r['ratios']['export_speedup_vs_naive']:.1f}x"),
        ("  peak / (inputs + meshes)", f"{r['ratios']['export_peak_over_inputs_plus_meshes']:.2f}x"),
        ("viz3d screenshot (first frame)",
         f"{r['screenshot_s']:.2f} s ({r['screenshot_cpu_s']:.2f} CPU s), peak {r['screenshot_peak_mb']:.0f} MB"),
        ("  same again, meshes and CT cached",
         f"{r['screenshot_cached_s']:.2f} s ({r['ratios']['cached_first_frame_speedup']:.1f}x faster)"),
        ("  floor: bare PyVista draws the cached meshes", f"{r['first_frame_floor_s']:.2f} s (first frame / floor: "
                                                         f"{r['ratios']['first_frame_over_floor']:.1f}x)"),
        (f"DICOM JPEG 2000 load ({r['dicom_slices']} slices)", f"{r['dicom_pooled_s']:.2f} s on all cores, "
                                                               f"{r['dicom_serial_s']:.2f} s in one process "
                                                               f"({r['ratios']['dicom_pool_speedup']:.1f}x)"),
        ("rotate, full meshes", f"{r['rotate_full_resolution_fps']:.1f} fps"),
        ("rotate, 1024x768 offscreen (LOD)",
         f"{r['rotate_fps']:.1f} fps ({r['lod_triangles'] / 1e3:.0f} k triangles, built in {r['lod_build_s']:.2f} s)"),
        ("window/level drag (slider)", f"{r['window_level_fps']:.1f} fps (plain render {r['plain_render_fps']:.1f} fps)"),
        ("window/level, full meshes", f"{r['window_level_full_resolution_fps']:.1f} fps "
                                      f"(plain render {r['plain_render_full_resolution_fps']:.1f} fps)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
