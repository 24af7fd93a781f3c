"""Mesh files and the manifest that describes them, written atomically."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import Viz3dError
from .meshing import Mesh
from .quality import mesh_report

MANIFEST_NAME = "manifest.json"


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


def mesh_filename(mesh: Mesh, suffix: str = ".stl") -> str:
    """``<value>_<name>.stl`` for a label mesh, ``bone.stl`` for the bone surface."""
    if mesh.kind == "bone":
        return f"bone{suffix}"
    return f"{mesh.label}_{safe_filename(mesh.name)}{suffix}"


def write_stl(mesh: Mesh, path: str | Path) -> Path:
    """Write a binary STL (VTK's writer) atomically: a temporary name, then a rename."""
    from vtkmodules.vtkIOGeometry import vtkSTLWriter

    from .meshing import _polydata

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = vtkSTLWriter()
        writer.SetFileName(str(tmp))
        writer.SetFileTypeToBinary()
        writer.SetInputData(_polydata(mesh.vertices, mesh.faces))
        if not writer.Write():
            raise Viz3dError(f"{path}: could not write STL file")
    return path


def check_writable_dir(out_dir: str | Path) -> Path:
    """Fail early, with a precise message, when ``out_dir`` cannot be created or written."""
    out_dir = Path(out_dir)
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise Viz3dError(f"{out_dir}: cannot create output folder ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise Viz3dError(f"{out_dir}: output folder is not writable")
    return out_dir


def export_meshes(meshes: list[Mesh], out_dir: str | Path) -> dict:
    """Write one binary STL per mesh and ``manifest.json`` into ``out_dir``; return the manifest.

    Everything is written into a staging folder beside ``out_dir`` first and moved in only
    when all files are complete, so a failure leaves ``out_dir`` as it was.
    The manifest: ``{"coordinate_system": "RAS", "units": "mm", "meshes": [{"kind", "label",
    "name", "file", "triangles", "watertight", "volume_ml", "area_mm2"}, ...]}``.
    """
    out_dir = check_writable_dir(out_dir)
    created = _make_parents(out_dir.parent)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        staging.chmod(0o777 & ~_umask())
    except OSError as exc:
        _remove_created(created)
        raise Viz3dError(f"{out_dir}: cannot write output folder ({exc.strerror})") from None
    succeeded = False
    try:
        entries = []
        for mesh in meshes:
            name = mesh_filename(mesh)
            write_stl(mesh, staging / name)
            report = mesh_report(mesh)
            entries.append(
                {
                    "kind": mesh.kind,
                    "label": mesh.label,
                    "name": mesh.name,
                    "file": name,
                    "triangles": report.triangles,
                    "watertight": report.watertight,
                    "volume_ml": round(report.volume_ml, 4),
                    "area_mm2": round(report.area_mm2, 2),
                    "color": [round(float(c), 4) for c in mesh.color],
                }
            )
        manifest = {"coordinate_system": "RAS", "units": "mm", "meshes": entries}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into(staging, out_dir)
        succeeded = True
    except OSError as exc:
        raise Viz3dError(f"{out_dir}: writing failed ({exc.strerror or exc})") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not succeeded:
            _remove_created(created)
    return manifest


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


def _move_into(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    if not out_dir.is_dir():
        raise Viz3dError(f"{out_dir}: exists and is not a folder")
    for item in sorted(staging.iterdir()):
        os.replace(item, out_dir / item.name)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Write to the yielded temporary path; it replaces ``path`` only if the block succeeds.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise Viz3dError(f"{path.parent}: cannot write there ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; finished files follow the umask like any other
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
