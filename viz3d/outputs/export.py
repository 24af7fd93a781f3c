"""Mesh files (STL, OBJ, PLY, VTP, GLB) and the manifest that describes them, written atomically.

`export_meshes` prepares every surface (largest piece, triangle budget, printability check and
repair, RAS or LPS), writes all files into a staging folder beside the output folder, and swaps
them in only when all are complete and only if that changes no file of a different, earlier
export (unless ``force``). The swap is atomic for the folder as a whole, also when the process
is killed: a new folder is one rename; into an existing one, a journal in the folder lists the
renames before the first is made, and whichever viz3d next opens the folder (`recover`)
completes them. An export's staging folder is locked (``flock``) while its process lives, so
leftovers of dead exports are removed, and two exports into one folder take turns to swap.
"""
from __future__ import annotations

import contextlib
import errno
import filecmp
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .atomic import atomic_path  # also re-exported here: viz3d.outputs.export.atomic_path
from ..errors import Viz3dError, warn
from ..surfaces.meshing import Mesh
from ..parallel import ordered_map

try:
    import fcntl
except ImportError:  # not POSIX: no locks (exports into one folder at once are not guarded)
    fcntl = None

MANIFEST_NAME = "manifest.json"
JOURNAL_NAME = ".viz3d-export-journal.json"  # in the output folder only while an export swaps its files in
FORMATS = ("stl", "obj", "ply", "vtp", "glb")
COMBINED_STEM = "scene"
GLTF_ROOT = "viz3d_patient_mm"
# glTF is metres, +Y up, +Z the front of the asset. The GLB root node maps the mm vertex data to
# that: the patient's superior side up, anterior to the front, real size.
_GLTF_FROM = {
    "RAS": np.array([[-1, 0, 0], [0, 0, 1], [0, 1, 0]], float) / 1000.0,
    "LPS": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float) / 1000.0,
}


@dataclass
class PlacedMesh(Mesh):
    """A `Mesh` whose vertices are in the export's coordinate system (``space``: RAS or LPS, mm)."""

    space: str = "RAS"


def safe_filename(text: str, max_length: int = 80) -> str:
    """A file-name stem made of letters, digits, ``.``, ``_`` and ``-`` only.

    Path separators, ``..`` and other characters become ``_``, so a name taken from a label
    table can never point outside the export folder.

    >>> safe_filename("../../etc/passwd")
    'etc_passwd'
    >>> safe_filename("vertebrae L1 (left)")
    'vertebrae_L1_left'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    stem = re.sub(r"\.{2,}", "_", stem)
    stem = re.sub(r"_+", "_", stem).strip("._-")
    return stem[:max_length] or "unnamed"


def mesh_stem(mesh: Mesh) -> str:
    """``<value>_<name>`` for a label mesh, ``bone`` for the bone surface: file and part name."""
    if mesh.kind == "bone":
        return "bone"
    return f"{mesh.label}_{safe_filename(mesh.name)}"


def mesh_filename(mesh: Mesh, suffix: str = ".stl") -> str:
    """``<value>_<name>.stl`` for a label mesh, ``bone.stl`` for the bone surface."""
    return f"{mesh_stem(mesh)}{suffix}"


def export_settings(
    *,
    format: str = "stl",
    coords: str = "RAS",
    combine: bool = False,
    max_triangles: int | None = None,
    decimate: float | None = None,
    smooth: bool = True,
    largest_component: bool = False,
    extra: dict | None = None,
) -> dict:
    """The export's options as the manifest records them; validates them (`Viz3dError`).

    >>> export_settings(format="GLB", coords="lps")["coordinate_system"]
    'LPS'
    """
    fmt = str(format).lower()
    if fmt not in FORMATS:
        raise Viz3dError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    system = str(coords).upper()
    if system not in ("RAS", "LPS"):
        raise Viz3dError(f"unknown coordinate system {coords!r}; choose ras or lps")
    if max_triangles is not None and int(max_triangles) < 4:
        raise Viz3dError(f"--max-triangles must be at least 4 (a closed surface needs 4 triangles), got {max_triangles}")
    if decimate is not None and not (0.0 < float(decimate) <= 1.0):
        raise Viz3dError(f"--decimate is the fraction of triangles to keep, between 0 (exclusive) and 1, got {decimate}")
    settings = {
        "format": fmt,
        "coordinate_system": system,
        "combine": bool(combine),
        "max_triangles": None if max_triangles is None else int(max_triangles),
        "decimate": None if decimate is None else float(decimate),
        "smooth": bool(smooth),
        "largest_component": bool(largest_component),
    }
    settings.update(extra or {})
    return settings


# ------------------------------------------------------------------ preparing surfaces

def prepare_mesh(mesh: Mesh, settings: dict) -> tuple[PlacedMesh, dict]:
    """One surface made ready to write: (mesh in the output coordinates, its manifest facts)."""
    from ..surfaces.quality import make_printable
    from ..surfaces.simplify import decimate, largest_component, to_coordinates

    notes: dict = {}
    if settings["largest_component"]:
        mesh = largest_component(mesh)
    if settings["max_triangles"] is not None or settings["decimate"] is not None:
        mesh, notes = decimate(mesh, max_triangles=settings["max_triangles"], ratio=settings["decimate"],
                               smooth=settings["smooth"])
    mesh, check, repairs = make_printable(mesh)
    repairs = notes.pop("repairs", []) + repairs
    placed = to_coordinates(mesh, settings["coordinate_system"])
    placed = PlacedMesh(**{f.name: getattr(placed, f.name) for f in fields(Mesh)}, space=settings["coordinate_system"])
    lo, hi = check.bounds
    if settings["coordinate_system"] == "LPS":  # the check ran in RAS: same surface, x and y negated
        lo, hi = (-hi[0], -hi[1], lo[2]), (-lo[0], -lo[1], hi[2])
    facts = {
        "kind": mesh.kind,
        "label": mesh.label,
        "name": mesh.name,
        "triangles": check.triangles,
        "vertices": check.vertices,
        "watertight": check.watertight,
        "manifold": check.manifold,
        "winding_consistent": check.winding_consistent,
        "degenerate_faces": check.degenerate_faces,
        "components": check.components,
        "volume_ml": round(check.volume_ml, 4),
        "area_mm2": round(check.area_mm2, 2),
        "bounds": [[round(float(x), 3) for x in lo], [round(float(x), 3) for x in hi]],
        "color": [round(float(c), 4) for c in mesh.color],
        "printable": check.printable,
        "problems": check.problems(),
        "repairs": repairs,
    }
    facts.update(notes)
    return placed, facts


# ------------------------------------------------------------------ the export


def export_meshes(
    meshes: list[Mesh],
    out_dir: str | Path,
    *,
    format: str = "stl",
    coords: str = "RAS",
    combine: bool = False,
    max_triangles: int | None = None,
    decimate: float | None = None,
    smooth: bool = True,
    largest_component: bool = False,
    force: bool = False,
    settings: dict | None = None,
    progress=None,
) -> dict:
    """Write the meshes and ``manifest.json`` into ``out_dir``; return the manifest.

    One file per mesh (``<value>_<name>.<ext>``, ``bone.<ext>``; OBJ with a ``.mtl`` beside it),
    or with ``combine`` one ``scene.<ext>`` holding every mesh as a named part. Units are
    millimetres (the GLB's root node scales them to glTF's metres). Every mesh is checked and
    repaired where needed; the manifest says per mesh whether it is printable.

    Files are written in a staging folder beside ``out_dir`` and moved in only when all are
    complete; an existing export that would change is left alone unless ``force`` (an identical
    re-export changes nothing and succeeds).

    Parameters
    ----------
    meshes : list of Mesh
        The surfaces to write.
    out_dir : str or path-like
        The export's folder (created if missing).
    format : {"stl", "obj", "ply", "vtp", "glb"}, optional
        The file format (default binary STL).
    coords : {"RAS", "LPS"}, optional
        The coordinate system written (default RAS, as viz3d's meshes are).
    combine : bool, optional
        One ``scene.<ext>`` holding every mesh as a named part instead of one file per mesh.
    max_triangles : int or None, optional
        A triangle budget per mesh (at least 4): larger meshes are decimated to it.
    decimate : float or None, optional
        The fraction of triangles to keep, between 0 (exclusive) and 1.
    smooth : bool, optional
        Smooth decimated surfaces lightly (removes the facets decimation leaves).
    largest_component : bool, optional
        Keep each mesh's largest connected piece only.
    force : bool, optional
        Replace an existing export made with other settings.
    settings : dict or None, optional
        The meshing options, written into the manifest.
    progress : callable or None, optional
        If given, called as ``progress(stage, done, total, item)`` as meshes are prepared.

    Returns
    -------
    dict
        The manifest, as written to ``manifest.json``: ``{"coordinate_system", "units": "mm",
        "format", "combined", "settings", "meshes": [{"kind", "label", "name", "file",
        "triangles", "vertices", "watertight", "manifold", "winding_consistent",
        "degenerate_faces", "components", "volume_ml", "area_mm2", "bounds", "color",
        "printable", "problems", "repairs", ...}]}``.

    Raises
    ------
    Viz3dError
        When ``format``, ``coords``, ``max_triangles`` or ``decimate`` is invalid; ``out_dir``
        is empty, the root folder, not a folder, not writable, or holds an export made with
        other settings (without ``force``) or an interrupted export that is not viz3d's; a
        file cannot be written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.diag([0.8, 0.8, 0.8, 1.0])), table="spinopelvic10")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     manifest = export_meshes(meshes, pathlib.Path(folder) / "meshes")
    ...     print(sorted(path.name for path in (pathlib.Path(folder) / "meshes").iterdir()))
    ['1_L1.stl', 'manifest.json']
    >>> entry = manifest["meshes"][0]
    >>> manifest["units"], entry["file"], entry["watertight"], entry["printable"]
    ('mm', '1_L1.stl', True, True)
    >>> export_meshes(meshes, "meshes", format="fbx")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: unknown export format 'fbx'; choose one of stl, obj, ply, vtp, glb
    """
    options = export_settings(format=format, coords=coords, combine=combine, max_triangles=max_triangles,
                              decimate=decimate, smooth=smooth, largest_component=largest_component, extra=settings)
    out_dir = check_output_folder(out_dir)
    check_existing_export(out_dir, options, force=force)
    report = progress or (lambda *args: None)
    manifest = _new_manifest(options)

    def write_all(staging: Path) -> None:
        placed, entries = [], manifest["meshes"]
        report("checking and writing surfaces", 0, len(meshes), "")
        with contextlib.closing(ordered_map(lambda mesh: _prepare_and_write(mesh, staging, options), meshes,
                                            size=lambda mesh: mesh.n_triangles)) as done:
            for count, (mesh, (ready, facts)) in enumerate(zip(meshes, done), start=1):
                placed.append(ready)
                entries.append(facts)
                report("checking and writing surfaces", count, len(meshes), mesh.name)
        manifest["printable"] = all(e["printable"] for e in entries)
        if options["combine"]:
            _write_combined(placed, entries, staging, options["format"])
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")

    _write_staged(out_dir, write_all, force=force)
    return manifest


def _new_manifest(options: dict) -> dict:
    """The manifest before any mesh is in it: generator, frame, units, format and settings."""
    manifest = {
        "generator": f"viz3d {_version()}",
        "coordinate_system": options["coordinate_system"],
        "units": "mm",
        "format": options["format"],
        "combined": options["combine"],
        "settings": options,
        "printable": True,
        "meshes": [],
    }
    if options["format"] == "glb":
        manifest["gltf_root_node"] = {
            "name": GLTF_ROOT,
            "matrix": _gltf_root_matrix(options["coordinate_system"]).T.ravel().round(6).tolist(),
            "meaning": "vertices are in mm; the root node scales them to metres with the patient's superior "
                       "side along +Y and anterior along +Z, as glTF viewers expect",
        }
    return manifest


def _prepare_and_write(mesh: Mesh, staging: Path, options: dict):
    """One job per mesh: check and repair it (`prepare_mesh`), then, one file per mesh, write it
    into ``staging`` at once. Returns the mesh as placed and its manifest entry."""
    fmt = options["format"]
    ready, facts = prepare_mesh(mesh, options)
    if not options["combine"]:
        facts["file"] = mesh_filename(ready, f".{fmt}")
        if fmt == "obj":
            facts["material"] = mesh_filename(ready, ".mtl")
        (write_stl if fmt == "stl" else _WRITERS_SINGLE[fmt])(ready, staging / facts["file"])
    return ready, facts


def _write_combined(placed: list, entries: list[dict], staging: Path, fmt: str) -> None:
    """Every mesh as a named part of one ``scene.<ext>``; each entry gets its part and face range."""
    name = f"{COMBINED_STEM}.{fmt}"
    _WRITERS_COMBINED[fmt](placed, staging / name)
    start = 0
    for entry, mesh in zip(entries, placed):
        entry["file"] = name
        entry["part"] = mesh_stem(mesh)
        entry["face_range"] = [start, start + mesh.n_triangles]
        start += mesh.n_triangles
        if fmt == "obj":
            entry["material"] = f"{COMBINED_STEM}.mtl"


def _version() -> str:
    from .. import __version__

    return __version__


# ------------------------------------------------------------------ overwrite rules and staging


def check_existing_export(out_dir: str | Path, settings: dict, *, force: bool = False) -> None:
    """Look at ``out_dir`` before any meshing: a usable folder (`check_output_folder`), whatever
    an interrupted export left completed (`recover`), and refuse when it holds an export made
    with other settings (unless ``force``).

    Only a cheap first look: whether the files themselves would change is decided when they
    are written (`export_meshes`).
    """
    check_output_folder(out_dir)
    recover(out_dir)
    if force:
        return
    manifest_path = Path(out_dir) / MANIFEST_NAME
    if not manifest_path.is_file():
        return
    try:
        old = json.loads(manifest_path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        old = None
    if old != json.loads(json.dumps(settings)):
        raise Viz3dError(f"{out_dir}: already holds an export made with other settings (its {MANIFEST_NAME}); "
                         "choose another folder or use --force to replace it")


def check_output_folder(out_dir: str | Path, what: str = "the export") -> Path:
    """``out_dir`` as a `Path` if ``what`` (an export, a batch) may be written there; refuses
    (`Viz3dError`) an empty path (it would write into the current folder), the root folder, an
    existing file or other non-folder, and a folder that cannot be created or written.

    >>> check_output_folder("/", "the batch")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: /: is the root folder; give the batch a folder of its own
    """
    if not str(out_dir).strip():
        raise Viz3dError(f"--out is empty: give the folder to write {what} to "
                         "(an empty path would scatter the files into the current folder)")
    out = Path(out_dir)
    if out.resolve() == Path(out.resolve().anchor):
        raise Viz3dError(f"{out_dir}: is the root folder; give {what} a folder of its own")
    if out.exists() and not out.is_dir():
        raise Viz3dError(f"{out_dir}: exists and is not a folder; give a folder for {what}")
    return check_writable_dir(out)


# ------------------------------------------------------------------ the swap: staging, journal, recovery


def recover(out_dir: str | Path) -> bool:
    """Complete what an export into ``out_dir`` that died left undone; True if there was a swap to finish.

    An export killed while it swapped its files in left a journal in the folder: its renames
    are completed, so the folder holds exactly the new export (with a warning saying so); one
    killed before that left the folder as it was. Either way the staging folders of exports
    whose process is gone (``.NAME.tmp-*`` beside the folder, no longer locked) are removed.
    Every export calls this before it looks at the folder.
    """
    place = _place(out_dir)
    finished = False
    try:
        if place.is_dir():
            with _locked(place):
                finished = _finish_journal(place, out_dir)
                _remove_dead_staging(place)
        elif place.parent.is_dir():
            _remove_dead_staging(place)
    except OSError as exc:
        raise Viz3dError(f"{out_dir}: cannot open the output folder ({exc.strerror or exc})") from None
    if finished:
        warn(f"{out_dir}: completed an export that was interrupted while it replaced the files; "
             "the folder holds that export now", stacklevel=2)
    return finished


def _place(out_dir: str | Path) -> Path:
    """Where the folder really is (links resolved), so the staging folder beside it is on its file system."""
    return Path(out_dir).resolve()


def _staging_pattern(place: Path) -> re.Pattern:
    """Names of staging folders beside ``place`` (`tempfile.mkdtemp`: the prefix and 8 characters)."""
    return re.compile(rf"\.{re.escape(place.name)}\.tmp-[a-z0-9_]{{8}}")


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive ``flock`` on ``folder`` (waiting for another export's swap to end)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _lock(fd, wait=True)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, *, wait: bool) -> bool:
    """An exclusive ``flock`` on ``fd``: True if held; False if another holds it (or, on a file
    system that does not support locks, always: then nothing is removed on the strength of it)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _new_staging(place: Path) -> tuple[Path, int]:
    """A new staging folder beside ``place``, locked for as long as the returned descriptor is open.

    A cleaner may remove the folder between its creation and the lock (it looks unlocked,
    like a dead export's): then it is made again.
    """
    for _ in range(10):
        staging = Path(tempfile.mkdtemp(prefix=f".{place.name}.tmp-", dir=place.parent))
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        _lock(fd, wait=True)
        try:
            if os.stat(staging).st_ino == os.fstat(fd).st_ino:
                staging.chmod(0o777 & ~_umask())
                return staging, fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(errno.EAGAIN, "staging folders beside it keep disappearing")


def _remove_dead_staging(place: Path) -> None:
    """Remove the staging folders beside ``place`` that no living export holds locked."""
    pattern = _staging_pattern(place)
    try:
        with os.scandir(place.parent) as entries:
            names = [e.name for e in entries if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for name in names:
        try:
            fd = os.open(place.parent / name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _lock(fd, wait=False):
                shutil.rmtree(place.parent / name, ignore_errors=True)
        finally:
            os.close(fd)


def _write_staged(out_dir: Path, write_all, *, force: bool) -> None:
    """Write the export into a locked staging folder beside ``out_dir``, then swap it in (`_swap_in`).

    Any failure leaves ``out_dir`` as it was; errors name ``out_dir``, not the staging folder,
    and a full disk says so.
    """
    place = _place(out_dir)
    created = _make_parents(place.parent)
    try:
        staging, lock = _new_staging(place)
    except OSError as exc:
        _remove_created(created)
        raise _writing_error(out_dir, None, exc) from None
    succeeded = False
    try:
        write_all(staging)
        _swap_in(staging, place, out_dir, force=force)
        succeeded = True
    except (OSError, Viz3dError) as exc:
        raise _writing_error(out_dir, staging, exc) from None
    finally:
        if staging.exists() and not _journal_refers_to(place, staging):  # else the next export completes the swap
            shutil.rmtree(staging, ignore_errors=True)
        os.close(lock)
        if not succeeded:
            _remove_created(created)


def _writing_error(out_dir, staging: Path | None, exc: Exception) -> Viz3dError:
    """The error to report for ``exc``: naming ``out_dir`` (never the staging folder), saying
    "no space left on device" for a full disk (also when a writer's error wraps it)."""
    code = getattr(exc, "errno", None) or getattr(exc.__context__, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return Viz3dError(f"{out_dir}: {what}; nothing was written (the folder is as it was)")
    if isinstance(exc, Viz3dError):
        return Viz3dError(str(exc).replace(f"{staging}/", f"{out_dir}/").replace(str(staging), str(out_dir))) \
            if staging is not None else exc
    return Viz3dError(f"{out_dir}: writing failed ({exc.strerror or exc})")


def _swap_in(staging: Path, place: Path, out_dir, *, force: bool) -> None:
    """Put the staged export in place, atomically for the folder as a whole.

    A folder that does not exist yet is the staging folder renamed. Into an existing one (under
    its lock): refused (unless ``force``) when a file of the same name with other content is
    there; otherwise a journal listing the renames (changed and new files, the manifest last)
    and the removals (with ``force``: files the old manifest lists that this export does not
    write) is renamed into the folder, then they are made (`_roll_forward`). Identical files
    are left alone, time stamps and all.
    """
    if not place.exists():
        try:
            os.rename(staging, place)
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise  # another export made the folder meanwhile: swap into it below
    if not place.is_dir():
        raise Viz3dError(f"{out_dir}: exists and is not a folder")
    with _locked(place):
        _finish_journal(place, out_dir)  # an export that died while swapping into it
        names = sorted(p.name for p in staging.iterdir())
        changed = [n for n in names if (place / n).exists() and not _same_file(staging / n, place / n)]
        if changed and not force:
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise Viz3dError(f"{out_dir}: already holds a different export ({shown} would change); "
                             "choose another folder or use --force to replace it")
        moves = sorted((n for n in names if n in changed or not (place / n).exists()), key=lambda n: n == MANIFEST_NAME)
        removals = sorted(_files_of_old_manifest(place) - set(names)) if force else []
        if not moves and not removals:
            return  # identical: nothing changes
        _write_journal(place, staging, {"staging": staging.name, "moves": moves, "removals": removals})
        _roll_forward(place, staging, moves, removals)


def _write_journal(place: Path, staging: Path, journal: dict) -> None:
    """The journal, complete in the folder or absent: written in the staging folder (which goes
    with a dead export), then renamed in."""
    (staging / JOURNAL_NAME).write_text(json.dumps(journal))
    os.replace(staging / JOURNAL_NAME, place / JOURNAL_NAME)


def _journal_refers_to(place: Path, staging: Path) -> bool:
    """Whether the journal in ``place`` (if any) is that of the swap from ``staging``."""
    try:
        return json.loads((place / JOURNAL_NAME).read_text()).get("staging") == staging.name
    except (OSError, ValueError, AttributeError):
        return False


def _roll_forward(place: Path, staging: Path, moves: list[str], removals: list[str]) -> None:
    """Make the journal's renames and removals (each at most once: a file already moved is no
    longer in the staging folder), then remove the journal and the staging folder."""
    for name in moves:
        if os.path.lexists(staging / name):
            os.replace(staging / name, place / name)
    for name in removals:
        with contextlib.suppress(FileNotFoundError):
            (place / name).unlink()
    (place / JOURNAL_NAME).unlink()
    shutil.rmtree(staging, ignore_errors=True)


def _finish_journal(place: Path, out_dir) -> bool:
    """Complete the swap a journal in ``place`` describes (the caller holds the folder's lock)."""
    try:
        journal = json.loads((place / JOURNAL_NAME).read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        raise Viz3dError(f"{out_dir}: cannot read the journal of an interrupted export ({JOURNAL_NAME}: {exc}); "
                         "export again with --force") from None
    staging, moves, removals = journal.get("staging"), journal.get("moves"), journal.get("removals")

    def plain(names) -> bool:  # file names only, no path
        return isinstance(names, list) and all(isinstance(n, str) and n == Path(n).name and n not in ("", ".", "..")
                                               for n in names)

    if not (isinstance(staging, str) and _staging_pattern(place).fullmatch(staging) and plain(moves)
            and plain(removals)):
        raise Viz3dError(f"{out_dir}: the journal of an interrupted export ({JOURNAL_NAME}) is not viz3d's; "
                         "remove it and export again with --force")
    _roll_forward(place, place.parent / staging, moves, removals)
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.is_file() and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _files_of_old_manifest(out_dir: Path) -> set[str]:
    """File names an earlier manifest in ``out_dir`` lists (plain names inside the folder only)."""
    try:
        old = json.loads((out_dir / MANIFEST_NAME).read_text())
        files = set()
        for entry in old.get("meshes", []):
            for key in ("file", "material"):
                name = entry.get(key)
                if isinstance(name, str) and name == Path(name).name and not name.startswith("."):
                    files.add(name)
        return files
    except (OSError, ValueError, AttributeError):
        return set()


def check_writable_dir(out_dir: str | Path) -> Path:
    """Fail early, with a precise message, when ``out_dir`` cannot be created or written."""
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if probe == out_dir and not probe.is_dir():
        raise Viz3dError(f"{out_dir}: exists and is not a folder")
    if not probe.is_dir():
        raise Viz3dError(f"{out_dir}: cannot create output folder ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise Viz3dError(f"{out_dir}: output folder is not writable")
    return out_dir


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing ancestors; return those created, deepest first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return missing


def _remove_created(created: list[Path]) -> None:
    for path in created:  # deepest first; only folders this export made, and only if empty
        try:
            path.rmdir()
        except OSError:
            break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ writers


def _space(mesh: Mesh) -> str:
    return getattr(mesh, "space", "RAS")


def _merged(meshes: list[Mesh]) -> PlacedMesh:
    """All meshes as one (vertices stacked, faces renumbered), in mesh order."""
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    vertices = np.concatenate([m.vertices for m in meshes]) if meshes else np.zeros((0, 3))
    faces = np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]) if meshes else np.zeros((0, 3), np.int64)
    return PlacedMesh(COMBINED_STEM, "scene", None, (1.0, 1.0, 1.0), vertices, faces,
                      space=_space(meshes[0]) if meshes else "RAS")


STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
STL_CHUNK = 1 << 14  # facets filled and written at a time: 16 k keep the buffers in the CPU cache (13 % faster than 128 k)


def write_stl(mesh: Mesh, path: str | Path) -> Path:
    """Write a binary STL atomically; the header says ``SPACE=RAS`` (or LPS) for 3D Slicer.

    The 50-byte facet records are filled with numpy, a chunk at a time: VTK's writer, which
    computes and writes facet by facet, takes 1.5-2x longer on clinical-size meshes.
    """
    path = Path(path)
    header = f"viz3d SPACE={_space(mesh)} units=mm {mesh_stem(mesh) if mesh.kind != 'scene' else ''}"[:79]
    faces = np.asarray(mesh.faces)
    vertices = np.asarray(mesh.vertices, np.float32)
    records = np.zeros(min(len(faces), STL_CHUNK), STL_RECORD)  # reused: stays in the CPU's cache
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        stream.write(header.encode("ascii", "replace").ljust(80, b" "))
        stream.write(np.array(len(faces), "<u4").tobytes())
        for start in range(0, len(faces), STL_CHUNK):
            part = records[: min(STL_CHUNK, len(faces) - start)]
            corners = part["corners"]
            vertices.take(faces[start:start + len(part)], axis=0, out=corners)
            part["normal"] = _unit_normals(corners).T
            stream.write(part.data)  # not tofile: its C stdio loses errno (ENOSPC: "N requested and M written")
    return path


def _unit_normals(corners: np.ndarray) -> np.ndarray:
    """Unit normals (3 x n rows: x, y, z) of triangles (n x 3 corners x 3); zero for degenerate ones.

    Component rows instead of np.cross on n x 3 arrays: half the time, for a third of a write.
    """
    e1 = (corners[:, 1] - corners[:, 0]).T.copy()
    e2 = (corners[:, 2] - corners[:, 0]).T.copy()
    normal = np.empty_like(e1)
    for k, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):
        np.multiply(e1[i], e2[j], out=normal[k])
        normal[k] -= e1[j] * e2[i]
    length = np.sqrt(np.einsum("ij,ij->j", normal, normal))
    np.divide(normal, length, out=normal, where=length > 0)  # a degenerate facet's normal stays zero
    return normal


def _write_stl_combined(meshes: list[Mesh], path: Path) -> None:
    write_stl(_merged(meshes), path)


def _rgb8(color) -> np.ndarray:
    return np.clip(np.round(np.asarray(color, float) * 255), 0, 255).astype(np.uint8)


def _color_polydata(meshes: list[Mesh]):
    """One vtkPolyData of all meshes with per-point ``RGB`` colours and per-cell ``label`` / ``part``."""
    from vtkmodules.util.numpy_support import numpy_to_vtk

    from ..surfaces.polydata import to_polydata

    merged = _merged(meshes)
    poly = to_polydata(merged.vertices, merged.faces)
    colors = np.concatenate([np.broadcast_to(_rgb8(m.color), (len(m.vertices), 3)) for m in meshes])
    rgb = numpy_to_vtk(np.ascontiguousarray(colors), deep=True)
    rgb.SetName("RGB")
    poly.GetPointData().AddArray(rgb)
    poly.GetPointData().SetActiveScalars("RGB")
    for name, values in (("label", [-1 if m.label is None else m.label for m in meshes]), ("part", range(len(meshes)))):
        per_face = np.repeat(np.asarray(list(values), np.int32), [m.n_triangles for m in meshes])
        array = numpy_to_vtk(per_face, deep=True)
        array.SetName(name)
        poly.GetCellData().AddArray(array)
    return poly


def _write_ply(meshes: list[Mesh], path: Path) -> None:
    """Binary PLY (VTK) with per-vertex RGB colours; comments give SPACE= for 3D Slicer and the parts."""
    from vtkmodules.vtkIOPLY import vtkPLYWriter

    with atomic_path(path) as tmp:
        writer = vtkPLYWriter()
        writer.SetFileName(str(tmp))
        writer.SetFileTypeToBinary()
        writer.SetInputData(_color_polydata(meshes))
        writer.SetArrayName("RGB")
        writer.SetColorModeToDefault()
        writer.EnableAlphaOff()
        writer.AddComment(f"SPACE={_space(meshes[0])}")
        writer.AddComment("units mm")
        start = 0
        for mesh in meshes:
            writer.AddComment(f"part {mesh_stem(mesh)} faces {start} {start + mesh.n_triangles}")
            start += mesh.n_triangles
        _vtk_write(writer, path, "PLY")
        _check_ply_complete(tmp)


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_ply_complete(path: Path) -> None:
    """Raise ENOSPC when a binary PLY of triangles is shorter than its header says.

    VTK's PLY writer ignores failed writes (it reported success on a full disk, leaving a short
    file), so the file is measured against its header: every element's fixed properties, and
    for each list property (the faces' corners) a count and three items.
    """
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
        size = os.fstat(handle.fileno()).st_size
    end = head.find(b"end_header\n")
    expected = None
    if head.startswith(b"ply\n") and end >= 0:
        expected, count = end + len(b"end_header\n"), 0
        for words in (line.split() for line in head[:end].decode("ascii", "replace").splitlines()):
            if words[:1] == ["element"]:
                count = int(words[2])
            elif words[:2] == ["property", "list"]:
                expected += count * (_PLY_SIZES[words[2]] + 3 * _PLY_SIZES[words[3]])
            elif words[:1] == ["property"]:
                expected += count * _PLY_SIZES[words[1]]
    if expected is None or size < expected:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (the PLY file came out short)")


def _write_vtp(meshes: list[Mesh], path: Path) -> None:
    """VTK XML poly data: point ``RGB``, cell ``label``/``part``, field data ``SPACE`` (3D Slicer), names."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkStringArray
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    poly = _color_polydata(meshes)
    field = poly.GetFieldData()
    for name, values in (("SPACE", [_space(meshes[0])]), ("names", [m.name for m in meshes]),
                         ("parts", [mesh_stem(m) for m in meshes])):
        strings = vtkStringArray()
        strings.SetName(name)
        for value in values:
            strings.InsertNextValue(value)
        field.AddArray(strings)
    colors = numpy_to_vtk(np.array([m.color for m in meshes], np.float64), deep=True)
    colors.SetName("colors")
    field.AddArray(colors)
    units = vtkStringArray()
    units.SetName("units")
    units.InsertNextValue("mm")
    field.AddArray(units)
    with atomic_path(path) as tmp:
        writer = vtkXMLPolyDataWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(poly)
        writer.SetDataModeToAppended()
        writer.EncodeAppendedDataOff()
        writer.SetCompressorTypeToZLib()
        writer.SetCompressionLevel(1)
        _vtk_write(writer, path, "VTP")


def _vtk_write(writer, path: Path, what: str) -> None:
    """Run a VTK writer; a failure it knows the system's reason for (a full disk above all) is an
    `OSError` like any other writer's, so it is reported as such, and any other a `Viz3dError`."""
    from vtkmodules.vtkCommonMisc import vtkErrorCode

    if not writer.Write():
        code = writer.GetErrorCode()
        if code == vtkErrorCode.OutOfDiskSpaceError:
            code = errno.ENOSPC
        if 0 < code < vtkErrorCode.FirstVTKErrorCode and code in errno.errorcode:  # codes below VTK's own: errno's
            raise OSError(code, os.strerror(code))
        raise Viz3dError(f"{path}: could not write {what} file")


def _write_obj(meshes: list[Mesh], path: Path) -> None:
    """Wavefront OBJ with one object and one material per mesh, and the .mtl beside it."""
    mtl = path.with_suffix(".mtl")
    with atomic_path(mtl) as tmp:
        lines = ["# viz3d materials: one per structure, diffuse colour = class colour"]
        for mesh in meshes:
            r, g, b = (float(c) for c in mesh.color)
            lines += ["", f"newmtl {mesh_stem(mesh)}", "Ka 0 0 0", f"Kd {r:.4f} {g:.4f} {b:.4f}", "Ks 0.1 0.1 0.1",
                      "Ns 20", "d 1", "illum 2"]
        tmp.write_text("\n".join(lines) + "\n")
        with atomic_path(path) as obj_tmp, open(obj_tmp, "w") as out:
            out.write(f"# SPACE={_space(meshes[0])} units=mm\n# {_version_line()}\nmtllib {mtl.name}\n")
            offset = 1
            for mesh in meshes:
                stem = mesh_stem(mesh)
                out.write(f"o {stem}\nusemtl {stem}\ns 1\n")
                _write_rows(out, "v %.5f %.5f %.5f\n", mesh.vertices)
                _write_rows(out, "f %d %d %d\n", mesh.faces + offset)
                offset += len(mesh.vertices)


def _version_line() -> str:
    return f"written by viz3d {_version()}"


def _write_rows(out, row_format: str, array: np.ndarray, chunk: int = 200_000) -> None:
    """Write rows of a 2-D array with one %-format per row, a chunk at a time (C formatting, no per-row Python)."""
    for start in range(0, len(array), chunk):
        block = array[start:start + chunk]
        out.write((row_format * len(block)) % tuple(block.ravel().tolist()))


def _gltf_root_matrix(space: str) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = _GLTF_FROM[space]
    return matrix


def _write_glb(meshes: list[Mesh], path: Path) -> None:
    """Binary glTF (trimesh): a root node (mm -> metres, patient upright) and one named node per mesh,
    each with its own PBR material in the class colour and smooth vertex normals."""
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    from ..surfaces.simplify import vertex_normals

    scene = trimesh.Scene()
    scene.graph.update(frame_from=scene.graph.base_frame, frame_to=GLTF_ROOT, matrix=_gltf_root_matrix(_space(meshes[0])))
    for mesh in meshes:
        stem = mesh_stem(mesh)
        material = PBRMaterial(name=stem, baseColorFactor=list(_rgb8(mesh.color)) + [255], metallicFactor=0.0,
                               roughnessFactor=0.6)
        part = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_normals=vertex_normals(mesh.vertices, mesh.faces),
                               process=False, validate=False, visual=TextureVisuals(material=material))
        part.metadata["name"] = mesh.name
        scene.add_geometry(part, node_name=stem, geom_name=stem, parent_node_name=GLTF_ROOT)
    data = scene.export(file_type="glb", include_normals=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


_WRITERS_SINGLE = {
    "obj": lambda mesh, path: _write_obj([mesh], path),
    "ply": lambda mesh, path: _write_ply([mesh], path),
    "vtp": lambda mesh, path: _write_vtp([mesh], path),
    "glb": lambda mesh, path: _write_glb([mesh], path),
}
_WRITERS_COMBINED = {
    "stl": _write_stl_combined,
    "obj": _write_obj,
    "ply": _write_ply,
    "vtp": _write_vtp,
    "glb": _write_glb,
}
