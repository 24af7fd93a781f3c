"""One case of a batch: its outputs under OUT/<case>/, made whole or not at all, and its row.

`run_case` loads the case and builds its meshes once, then makes every output asked for from
them with the single-case commands' functions (`viz3d.outputs.export.export_meshes`,
`viz3d.scene.build_scene` with `viz3d.outputs.render.screenshot`, `viz3d.outputs.motion.view_sheet`
and `turntable`, `viz3d.outputs.web.write_html`, `viz3d.outputs.slice2d.save_slice`). Everything
is written into a staging folder ``OUT/.staging-<case>-<random>``; the done-marker
``case.json`` (the case's key, row and structures) is written last, and the folder is then
renamed to ``OUT/<case>``. An earlier ``OUT/<case>`` is first renamed aside
(``OUT/.replaced-<case>-<random>``) and removed after; `tidy` puts it back if a batch was
killed between the two renames, and removes the staging folders of dead batches.

A case is done when ``OUT/<case>/case.json`` holds the key of its inputs' content and the
options (`case_key`): a rerun skips it, a change of either redoes it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
import traceback
import warnings
from pathlib import Path

from ..errors import Viz3dError
from .layouts import Case
from .options import BatchOptions

MARKER = "case.json"
STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"
THUMBNAIL_SIZE = (320, 240)
GRID_MISMATCH = "on different grids"  # the words of `viz3d.api.alignment_warnings`


def case_key(case: Case, options: BatchOptions) -> tuple[str, dict]:
    """The key of a case's work: a digest of its inputs' bytes, its label table's and the options.

    Returns the key and the inputs' content digests (``ct``, ``label``, ``table``; None where
    there is none), which the summary records.
    """
    from ..cache import content_key
    from ..io.labels import label_table_file

    table = label_table_file(options.label_table, case.label)
    table = table if table is not None and table.is_file() else None
    digests = {what: (content_key([path], {}) if path is not None else None)
               for what, path in (("ct", case.ct), ("label", case.label), ("table", table))}
    text = json.dumps({"digests": digests, "options": options.fingerprint()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32], digests


def done_row(out: Path, case: Case, key: str) -> dict | None:
    """The stored result of a case already done with ``key`` (its ``case.json``), or None."""
    marker = Path(out) / case.id / MARKER
    try:
        stored = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) and stored.get("key") == key else None


def run_case(case: Case, options: BatchOptions, out: str | os.PathLike, force: bool = False) -> dict:
    """Make the case's outputs under ``out/<case.id>`` unless already done; return its result.

    The result is the ``case.json`` record: ``{"key", "case": row, "structures": [...]}``,
    where ``row["status"]`` is ``"done"`` (made now), ``"reused"`` (done before with the same
    inputs and options) or ``"failed"`` with ``row["error"]`` one line saying why. Never raises
    for a problem of the case (bad or missing input, an output that cannot be made): the
    failure stays in its row. A KeyboardInterrupt leaves no staging folder behind.
    """
    out = Path(out)
    started = time.perf_counter()
    _release_memory()
    _reset_peak_memory()
    row = {"case": case.id, "ct": str(case.ct or ""), "label": str(case.label or ""), **dict(case.extra)}
    try:
        key, digests = case_key(case, options)
    except Viz3dError as exc:
        return _failed(row, str(exc), started)
    row.update(ct_digest=digests["ct"] or "", label_digest=digests["label"] or "", table_digest=digests["table"] or "")
    if not force:
        stored = done_row(out, case, key)
        if stored is not None:
            stored["case"]["status"] = "reused"
            return stored
    staging = out / f"{STAGING_PREFIX}{case.id}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(parents=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            structures, outputs = _make_outputs(case, options, staging)
        notes = _warning_lines(caught)
        row.update(status="done", error="", outputs=outputs, warnings=notes,
                   grid_mismatch=any(GRID_MISMATCH in note for note in notes),
                   structures=len([s for s in structures if s["kind"] == "label"]),
                   seconds=round(time.perf_counter() - started, 2), peak_memory_mb=_peak_memory_mb())
        record = {"key": key, "options": options.as_dict(), "case": row, "structures": structures}
        (staging / MARKER).write_text(json.dumps(record, indent=1, default=str) + "\n")
        _swap_in(staging, out / case.id)
        return record
    except Viz3dError as exc:
        return _failed(row, str(exc), started)
    except MemoryError:
        return _failed(row, "out of memory", started)
    except Exception as exc:  # a bug, not bad input: still one line, the traceback's last frame named
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return _failed(row, f"internal error: {type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})",
                       started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _failed(row: dict, message: str, started: float) -> dict:
    row.update(status="failed", error=" ".join(message.split()), seconds=round(time.perf_counter() - started, 2),
               peak_memory_mb=_peak_memory_mb())
    return {"key": None, "case": row, "structures": []}


def _warning_lines(caught) -> list[str]:
    from ..errors import warning_line

    lines = []
    for item in caught:
        line = warning_line(item.message, item.category, item.filename)
        if line is not None and line not in lines:
            lines.append(line.removeprefix("viz3d: warning: "))
    return lines


# --------------------------------------------------------------------------- the outputs


def _make_outputs(case: Case, options: BatchOptions, folder: Path) -> tuple[list[dict], list[str]]:
    """Every output of the case in ``folder``: (the structures' measurements, the files written)."""
    from ..api import load_and_mesh, load_ct

    outputs: list[str] = []
    meshes, ct = [], None
    if options.wants_meshes or not options.mosaic:
        ct, meshes = load_and_mesh(case.ct, case.label, table=options.label_table, labels=options.labels,
                                   bone=options.bone, bone_hu=options.bone_hu, smooth=options.smoothing > 0,
                                   smoothing=options.smoothing, method=options.method, use_cache=False)
    elif case.ct is not None:
        ct = load_ct(case.ct)
    manifest = None
    if options.export:
        manifest = _export(case, meshes, options, folder)
        outputs.append("meshes/")
    if options.wants_scene:
        outputs += _pictures(case, meshes, ct, options, folder)
    if options.html:
        outputs.append(_html(case, meshes, ct, options, folder))
    if options.mosaic:
        outputs.append(_mosaic(case, ct, options, folder))
    pictures = [name for name in outputs if name.endswith(".png")]
    if pictures:
        _thumbnail(folder / pictures[0], folder / "thumbnail.png")
    elif ct is not None:  # no picture asked for: the index still shows the case, as a 2-D slice
        _slice_thumbnail(case, ct, options, folder / "thumbnail.png")
    return structure_rows(meshes, manifest), outputs


def _export(case: Case, meshes, options: BatchOptions, folder: Path) -> dict:
    from ..io.formats import resolve_label_table
    from ..outputs.export import export_meshes

    if not meshes:
        raise Viz3dError("nothing to export: no label of the selection is present and no bone surface")
    meshing = {"labels": options.labels, "bone": options.bone, "bone_only": False,
               "bone_hu": 200.0 if options.bone_hu is None else options.bone_hu, "label_table": options.label_table,
               "smoothing": options.smoothing, "method": options.method,
               "label_table_source": resolve_label_table(options.label_table, case.label).source}
    return export_meshes(meshes, folder / "meshes", format=options.export, coords=options.coords,
                         combine=options.combine, max_triangles=options.max_triangles, decimate=options.decimate,
                         smooth=options.smoothing > 0, largest_component=options.largest_component, settings=meshing)


def _names_source(case: Case, options: BatchOptions, meshes) -> str | None:
    from ..io.formats import resolve_label_table

    if case.label is None or not any(mesh.kind == "label" for mesh in meshes):
        return None
    return resolve_label_table(options.label_table, case.label).source


def _pictures(case: Case, meshes, ct, options: BatchOptions, folder: Path) -> list[str]:
    """Screenshots, the sheet and the turntable, all from one scene."""
    _offscreen()
    from ..outputs.motion import turntable, view_sheet
    from ..outputs.render import screenshot
    from ..scene.scene import build_scene

    if not meshes and ct is None:
        raise Viz3dError("nothing to draw: no surface and no CT")
    first = options.screenshot[0] if options.screenshot else "anterior"
    scene = build_scene(meshes, ct, window=options.window_values, show_slices=options.show_slices, view=first,
                        off_screen=True, size=options.size, interactive=False, slices=options.slices,
                        colors=options.colors, name=case.id, names_source=_names_source(case, options, meshes))
    written = []
    try:
        for view in options.screenshot:
            scene.set_view(view)
            written.append(screenshot(scene, folder / f"screenshot-{view}.png", size=options.size).name)
        if options.sheet:
            written.append(view_sheet(scene, folder / "sheet.png", views=options.sheet_views,
                                      size=options.sheet_size).name)
        if options.turntable:
            scene.set_view("anterior")
            written.append(turntable(scene, folder / f"turntable.{options.turntable}", frames=options.frames,
                                     size=options.turntable_size, fps=options.fps).name)
    finally:
        scene.close()
    return written


def _offscreen() -> None:
    """Headless rendering when there is no display (before VTK is imported in this worker)."""
    try:
        from ..runtime import configure_offscreen
    except ImportError:  # before viz3d.runtime
        from ..outputs.render import configure_offscreen
    configure_offscreen()


def _html(case: Case, meshes, ct, options: BatchOptions, folder: Path) -> str:
    from ..outputs.web import write_html

    if not meshes and ct is None:
        raise Viz3dError("nothing to show in the page: no surface and no CT")
    return write_html(meshes, ct, folder / "scene.html", window=options.window_values, view="iso",
                      show_slices=options.show_slices, slices=options.slices, colors=options.colors,
                      title=f"viz3d — {case.id}").name


def _mosaic(case: Case, ct, options: BatchOptions, folder: Path) -> str:
    from ..outputs.slice2d import save_slice

    if ct is None:
        raise Viz3dError("a slice mosaic needs a CT; this case has only a label map")
    return save_slice(folder / "mosaic.png", ct, case.label, options.label_table, mosaic=options.mosaic,
                      window=options.window).name


def _thumbnail(picture: Path, out: Path) -> None:
    from PIL import Image

    with Image.open(picture) as image:
        image.thumbnail(THUMBNAIL_SIZE)
        image.save(out, format="PNG")


def _slice_thumbnail(case: Case, ct, options: BatchOptions, out: Path) -> None:
    """The axial slice through the middle of the labels, with them on top (no OpenGL needed)."""
    from PIL import Image

    from ..outputs.atomic import atomic_path
    from ..outputs.slice2d import slice_image

    picture = slice_image(ct, case.label, options.label_table, window=options.window, size=THUMBNAIL_SIZE,
                          annotate=False)
    with atomic_path(out) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


# --------------------------------------------------------------------------- measurements


def structure_rows(meshes, manifest: dict | None = None) -> list[dict]:
    """A row per surface: volume, area, triangles, pieces, closed/printable, centroid, box (RAS mm).

    With an export's ``manifest``, its measurements of the surfaces as written (checked and
    repaired) are used; else each mesh is checked here (`viz3d.surfaces.quality.mesh_report`).

    Examples
    --------
    >>> import numpy as np
    >>> from viz3d.surfaces.meshing import Mesh
    >>> v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    >>> f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> row = structure_rows([Mesh("tet", "label", 1, (1, 0, 0), v, f)])[0]
    >>> row["closed"], row["volume_ml"], row["centroid"]
    (True, 0.1667, [2.5, 2.5, 2.5])
    """
    from ..surfaces.quality import mesh_report

    entries = {(e["kind"], e["label"]): e for e in (manifest or {}).get("meshes", [])}
    lps = (manifest or {}).get("coordinate_system") == "LPS"
    rows = []
    for mesh in meshes:
        entry = entries.get((mesh.kind, mesh.label))
        if entry is not None and lps:  # the summary is in RAS: x and y of the written box negated back
            (x0, y0, z0), (x1, y1, z1) = entry["bounds"]
            entry = {**entry, "bounds": [[-x1, -y1, z0], [-x0, -y0, z1]]}
        if entry is None:
            check = mesh_report(mesh)
            entry = {"triangles": check.triangles, "components": check.components, "watertight": check.watertight,
                     "printable": check.printable, "volume_ml": round(check.volume_ml, 4),
                     "area_mm2": round(check.area_mm2, 2), "problems": check.problems(),
                     "bounds": [[round(float(x), 3) for x in corner] for corner in check.bounds]}
        rows.append({"kind": mesh.kind, "label": mesh.label, "name": mesh.name, "volume_ml": entry["volume_ml"],
                     "area_mm2": entry["area_mm2"], "triangles": entry["triangles"],
                     "components": entry["components"], "closed": bool(entry["watertight"]),
                     "printable": bool(entry["printable"]), "problems": "; ".join(entry["problems"]),
                     "centroid": centroid(mesh.vertices, mesh.faces), "bbox": entry["bounds"]})
    return rows


def centroid(vertices, faces) -> list[float]:
    """The centre of the volume a closed surface encloses (of its vertices if it encloses none), mm.

    >>> import numpy as np
    >>> cube = np.array([[x, y, z] for x in (0, 2) for y in (0, 2) for z in (0, 2)], float)
    >>> centroid(cube, np.empty((0, 3), int))
    [1.0, 1.0, 1.0]
    """
    import numpy as np

    vertices = np.asarray(vertices, dtype=float)
    if not len(vertices):
        return [float("nan")] * 3
    faces = np.asarray(faces)
    if len(faces):
        a, b, c = (vertices[faces[:, i]] for i in range(3))
        volumes = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
        total = volumes.sum()
        if abs(total) > 1e-9:
            centre = ((a + b + c) * volumes[:, None]).sum(axis=0) / (4.0 * total)
            return [round(float(x), 3) for x in centre]
    return [round(float(x), 3) for x in vertices.mean(axis=0)]


# --------------------------------------------------------------------------- folders


def _swap_in(staging: Path, final: Path) -> None:
    """Put the finished ``staging`` folder at ``final``, an earlier one there set aside first."""
    aside = None
    if final.exists():
        aside = final.parent / f"{REPLACED_PREFIX}{final.name}-{secrets.token_hex(4)}"
        os.rename(final, aside)
    os.rename(staging, final)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def tidy(out: str | os.PathLike, cases=None) -> None:
    """Clean what a killed batch left in ``out``: staging folders go; a case folder set aside for
    its replacement comes back when the replacement never arrived, else goes.

    ``cases`` (ids) limits it to those cases' folders: shards of one batch run side by side in
    one ``out``, each tidying its own. Call it only while no other batch writes those cases
    (`viz3d.batch.run` holds a lock).
    """
    out = Path(out)
    if not out.is_dir():
        return
    mine = None if cases is None else set(cases)
    for prefix in (STAGING_PREFIX, REPLACED_PREFIX):
        for entry in sorted(out.iterdir()):
            match = re.fullmatch(rf"{re.escape(prefix)}(.+)-[0-9a-f]{{8}}", entry.name)
            if not match or (mine is not None and match.group(1) not in mine):
                continue
            final = out / match.group(1)
            if prefix == STAGING_PREFIX or final.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.rename(entry, final)


# --------------------------------------------------------------------------- memory


def _release_memory() -> None:
    """Give back what an earlier case of this worker left allocated: its cycles collected, then
    the C heap's free pages returned to the system (glibc's ``malloc_trim``). Without it a worker's
    second case started ~250 MB above its first (the first's freed arrays, kept by the allocator)
    and peaked that much higher."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak_memory() -> None:
    """Start this process's peak resident memory afresh (Linux: ``/proc/self/clear_refs``), so a
    worker that runs many cases reports each one's own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_memory_mb() -> float:
    """This process's peak resident memory since `_reset_peak_memory`, in MB (the lifetime peak
    where ``/proc`` is missing)."""
    try:
        status = Path("/proc/self/status").read_text()
        return round(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024, 1)
    except (OSError, AttributeError):
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
