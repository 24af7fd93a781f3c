"""Triangle budgets and clean-ups of finished surfaces: decimation, smoothing, largest piece, LPS.

Everything here takes and returns `Mesh` objects and leaves the input untouched. The mesh work
is done by libraries: quadric decimation by ``fast-simplification`` (falling back to libigl's
topology-safe ``qslim`` when the fast pass pinches two sheets of a surface together),
smoothing and normals by VTK.
"""
from __future__ import annotations

import threading

from dataclasses import replace

import numpy as np

from ..errors import Viz3dError
from .meshing import Mesh, face_volumes_and_areas
from .polydata import clean, compact, face_components, from_polydata, to_polydata

# Windowed sinc after decimation: gentler than the meshing step's pass band (0.1), because on a coarse
# surface a thin rib's shape is itself "high frequency": 0.1 took 67 % of a 100-triangle rib's
# volume, 0.3 takes 26 %, close to the 20 % the decimation itself costs (restored afterwards).
SMOOTHING_ITERATIONS = 10
SMOOTHING_PASSBAND = 0.3
VOLUME_RESTORE_STEPS = 3
MIN_TRIANGLES = 4  # the smallest closed surface, a tetrahedron
COORDINATE_SYSTEMS = ("RAS", "LPS")


# ------------------------------------------------------------------ coordinates


def to_coordinates(mesh: Mesh, system: str) -> Mesh:
    """The mesh in ``"RAS"`` (as built) or ``"LPS"`` (x and y negated: DICOM's and 3D Slicer's files).

    Negating two axes is a rotation by 180 degrees about the S axis, so the winding (and with
    it the outward normals) stays as it is.

    >>> m = Mesh("m", "label", 1, (1, 0, 0), np.array([[1.0, 2.0, 3.0]]), np.zeros((0, 3), np.int64))
    >>> to_coordinates(m, "lps").vertices.tolist()
    [[-1.0, -2.0, 3.0]]
    """
    system = system.upper()
    if system not in COORDINATE_SYSTEMS:
        raise Viz3dError(f"unknown coordinate system {system!r}; choose RAS or LPS")
    if system == "RAS":
        return mesh
    return replace(mesh, vertices=mesh.vertices * np.array([-1.0, -1.0, 1.0]))


# ------------------------------------------------------------------ pieces


def largest_component(mesh: Mesh) -> Mesh:
    """Only the piece enclosing the most volume, with any cavities inside it (specks, the table dropped).

    A cavity is a piece with inward-facing (negative) volume whose bounding box lies inside the
    kept piece's box; it belongs to the kept solid and is kept with it.
    """
    faces = mesh.faces
    count, labels = face_components(faces, len(mesh.vertices))
    if count <= 1:
        return mesh
    tri = mesh.vertices[faces]
    volume = np.bincount(labels, weights=face_volumes_and_areas(mesh.vertices, faces)[0], minlength=count)
    keep_piece = int(np.argmax(volume))
    lo, hi = _piece_boxes(tri, labels, count)
    inside = np.all(lo >= lo[keep_piece], axis=1) & np.all(hi <= hi[keep_piece], axis=1) & (volume < 0)
    inside[keep_piece] = True
    vertices, new_faces = compact(mesh.vertices, faces[inside[labels]])
    return replace(mesh, vertices=vertices, faces=new_faces)


def _piece_boxes(tri: np.ndarray, labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per piece, the min and max corner of its faces' bounding box."""
    lo = np.full((count, 3), np.inf)
    hi = np.full((count, 3), -np.inf)
    np.minimum.at(lo, labels, tri.min(axis=1))
    np.maximum.at(hi, labels, tri.max(axis=1))
    return lo, hi


# ------------------------------------------------------------------ decimation


def target_triangles(n_triangles: int, *, max_triangles: int | None = None, ratio: float | None = None) -> int:
    """How many triangles a surface of ``n_triangles`` may keep under a budget and/or a ratio.

    >>> target_triangles(10000, max_triangles=2000), target_triangles(10000, ratio=0.5)
    (2000, 5000)
    >>> target_triangles(10000, max_triangles=8000, ratio=0.5), target_triangles(100, max_triangles=5000)
    (5000, 100)
    """
    target = n_triangles
    if max_triangles is not None:
        target = min(target, int(max_triangles))
    if ratio is not None:
        target = min(target, int(round(ratio * n_triangles)))
    return max(target, min(n_triangles, MIN_TRIANGLES))


def decimate(
    mesh: Mesh,
    *,
    max_triangles: int | None = None,
    ratio: float | None = None,
    smooth: bool = True,
) -> tuple[Mesh, dict]:
    """Quadric decimation to a triangle budget, then smoothing, volume kept; returns (mesh, notes).

    ``max_triangles`` caps the count; ``ratio`` keeps that fraction (0 < ratio <= 1); with both
    the smaller target wins. Degenerate (zero-area) faces are cleaned away first: quadric
    decimation cannot collapse them and silently stops short. ``fast-simplification`` does the
    collapse; when its result is not a closed 2-manifold (two sheets of a thin part pinched onto
    one edge) or has lost or flattened a piece, libigl's ``qslim``, which refuses collapses that
    change the topology, does it again from the input. The budget is a hard limit: when even
    ``qslim`` cannot meet it without changing the topology, the fast result is kept and repaired
    (`viz3d.surfaces.quality.make_printable`), and ``notes["repairs"]`` says what was done.
    With ``smooth``, windowed-sinc smoothing removes the facets decimation leaves and a uniform
    normal offset restores the enclosed volume of the input (so thin ribs keep their thickness).

    ``notes`` has ``decimated_from`` (the input's triangle count) and ``decimator``; it is
    empty when the surface is already within budget.
    """
    from .quality import inspect_surface

    target = target_triangles(mesh.n_triangles, max_triangles=max_triangles, ratio=ratio)
    if target >= mesh.n_triangles:
        return mesh, {}
    before = inspect_surface(mesh.vertices, mesh.faces)
    vertices, faces = mesh.vertices, mesh.faces
    if before.degenerate_faces:
        vertices, faces = clean(vertices, faces)
    source = vertices, faces
    vertices, faces = _fast_quadric(vertices, faces, target)
    decimator = "fast-simplification"
    after = inspect_surface(vertices, faces)
    pieces_before = before.components - before.flat_components
    repairs: list[str] = []
    if before.manifold and (not after.manifold or after.flat_components or after.components != pieces_before):
        safe_vertices, safe_faces = _qslim(*source, target)
        if len(safe_faces) <= target:
            vertices, faces, decimator = safe_vertices, safe_faces, "libigl qslim"
        else:  # the budget needs a change of topology (closing holes of a many-holed bone): keep it, repaired
            from .quality import make_printable

            fixed, _, repairs = make_printable(replace(mesh, vertices=vertices, faces=faces), after)
            vertices, faces = fixed.vertices, fixed.faces
    if smooth and len(faces):
        vertices = smooth_surface(vertices, faces)
    if before.watertight and before.volume_mm3 > 0 and len(faces):
        for _ in range(VOLUME_RESTORE_STEPS):  # first order each time: a few steps converge
            vertices = restore_volume(vertices, faces, before.volume_mm3)
    notes = {"decimated_from": mesh.n_triangles, "decimator": decimator}
    if repairs:
        notes["repairs"] = repairs
    return replace(mesh, vertices=vertices, faces=faces), notes


# fast-simplification keeps the mesh it simplifies in global variables between the calls its
# `simplify` makes (load, simplify, read back), and Python may switch threads between them: two
# surfaces decimated side by side swapped results (a label's file held another label's surface).
_ONE_FAST_SIMPLIFICATION = threading.Lock()


def _fast_quadric(vertices, faces, target: int):
    import fast_simplification

    with _ONE_FAST_SIMPLIFICATION:
        out_vertices, out_faces = fast_simplification.simplify(
            np.ascontiguousarray(vertices, dtype=np.float64), np.ascontiguousarray(faces, dtype=np.int64),
            target_count=int(target),
        )
    return compact(np.asarray(out_vertices, np.float64), np.asarray(out_faces, np.int64))


def _qslim(vertices, faces, target: int):
    import igl

    out = igl.qslim(np.asfortranarray(vertices, dtype=np.float64), np.asfortranarray(faces, dtype=np.int32), int(target))
    return compact(np.ascontiguousarray(out[0], np.float64), np.ascontiguousarray(out[1], np.int64))


# ------------------------------------------------------------------ smoothing and volume


def smooth_surface(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """New vertex positions after windowed-sinc smoothing (VTK); topology and faces unchanged."""
    from .meshing import windowed_sinc

    smoothed = windowed_sinc(to_polydata(vertices, faces), SMOOTHING_ITERATIONS, SMOOTHING_PASSBAND, nonmanifold=True)
    return from_polydata(smoothed)[0]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals that follow the faces' winding (VTK; no reorientation, no splitting)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    from .meshing import point_normals

    return vtk_to_numpy(point_normals(to_polydata(vertices, faces)).GetPointData().GetNormals()).astype(np.float64)


def restore_volume(vertices: np.ndarray, faces: np.ndarray, target_mm3: float) -> np.ndarray:
    """Move every vertex the same distance along its normal so the surface encloses ``target_mm3``.

    The distance ``(target - volume) / area`` restores the volume to first order without
    changing the shape; it is capped at half the surface's mean thickness scale (volume/area)
    so a surface is never inflated into something else.
    """
    from . import meshing

    return meshing.restore_volume(np.array(vertices, np.float64), np.asarray(faces, np.int64), target_mm3, max_offset=None,
                           tolerance=0.0)
