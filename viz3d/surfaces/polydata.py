"""Triangle surfaces as arrays (vertices (N, 3), faces (M, 3)): to vtkPolyData and back, compaction,
merging coincident vertices, connected pieces.

Importing this module is cheap: only numpy at module level, VTK inside the functions, so
`viz3d.surfaces.meshing` stays importable without any rendering module.
"""
from __future__ import annotations

import numpy as np

from ..errors import Viz3dError


def to_polydata(vertices: np.ndarray, faces: np.ndarray, *, dtype=np.float64):
    """A triangle vtkPolyData holding copies of ``vertices`` (N, 3) and ``faces`` (M, 3).

    The points are stored as ``dtype`` (float64 by default); ``dtype=None`` keeps the vertices'
    own type (the meshing pipeline's float32 stays float32).
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, dtype=dtype), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    connectivity = np.ascontiguousarray(faces, dtype=np.int64).ravel()
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True), numpy_to_vtkIdTypeArray(connectivity, deep=True))
    poly = vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    return poly


def polydata_arrays(poly) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) numpy arrays of a triangle vtkPolyData, without copying.

    The vertices keep VTK's point type and are a view of the points; the faces are an int64
    view of the connectivity (a copy only where VTK's ids are not 64-bit). Nothing checks that
    every cell is a triangle: use `from_polydata` for checked copies.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy

    if poly.GetNumberOfPolys() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vertices = vtk_to_numpy(poly.GetPoints().GetData())
    faces = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return vertices, faces.astype(np.int64, copy=False)


def from_polydata(poly) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float64 (N, 3), faces int64 (M, 3)) of a vtkPolyData's triangles (copies)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy

    if poly.GetNumberOfPolys() == 0 or poly.GetPoints() is None:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    if not np.all(np.diff(vtk_to_numpy(poly.GetPolys().GetOffsetsArray())) == 3):
        raise Viz3dError("internal: expected a surface made of triangles only")
    vertices, faces = polydata_arrays(poly)
    return vertices.astype(np.float64), faces.astype(np.int64)


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop vertices no face uses and renumber the faces.

    >>> v, f = compact(np.arange(15.0).reshape(5, 3), np.array([[4, 2, 0]]))
    >>> v[:, 0].tolist(), f.tolist()
    ([0.0, 6.0, 12.0], [[2, 1, 0]])
    """
    used = np.zeros(len(vertices), bool)
    used[faces.ravel()] = True
    if used.all():
        return vertices, faces
    new_index = np.cumsum(used) - 1
    return vertices[used], new_index[faces]


def face_components(faces: np.ndarray, n_vertices: int | None = None) -> tuple[int, np.ndarray]:
    """(number of pieces, piece index of every face): faces are joined through shared edges."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    m = len(faces)
    if m == 0:
        return 0, np.zeros(0, np.int64)
    n = int(faces.max()) + 1 if n_vertices is None else n_vertices
    a = faces.ravel()
    b = faces[:, [1, 2, 0]].ravel()
    key = np.minimum(a, b) * n + np.maximum(a, b)
    order = np.argsort(key)
    same = key[order][1:] == key[order][:-1]
    src, dst = order[:-1][same] // 3, order[1:][same] // 3
    graph = csr_matrix((np.ones(len(src), np.bool_), (src, dst)), shape=(m, m))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels


def clean(vertices: np.ndarray, faces: np.ndarray, tolerance: float | None = None):
    """Merge coincident vertices and drop the faces that collapse (VTK's vtkCleanPolyData).

    ``tolerance`` is absolute (mm); by default one part in 10^9 of the bounding-box diagonal,
    which merges copies of one point but never two points a surface really has.
    """
    from vtkmodules.vtkFiltersCore import vtkCleanPolyData

    if not len(faces):
        return vertices, faces
    used = vertices[np.unique(faces)]
    diagonal = float(np.linalg.norm(used.max(axis=0) - used.min(axis=0))) or 1.0
    cleaner = vtkCleanPolyData()
    cleaner.SetInputData(to_polydata(vertices, faces))
    cleaner.ToleranceIsAbsoluteOn()
    cleaner.SetAbsoluteTolerance(diagonal * 1e-9 if tolerance is None else tolerance)
    cleaner.PointMergingOn()
    cleaner.ConvertPolysToLinesOn()  # collapsed triangles become lines: dropped below
    cleaner.ConvertLinesToPointsOn()
    cleaner.ConvertStripsToPolysOn()
    cleaner.Update()
    out = cleaner.GetOutput()
    from vtkmodules.vtkCommonDataModel import vtkPolyData

    polys_only = vtkPolyData()
    polys_only.SetPoints(out.GetPoints())
    polys_only.SetPolys(out.GetPolys())
    new_vertices, new_faces = from_polydata(polys_only)
    keep = (new_faces[:, 0] != new_faces[:, 1]) & (new_faces[:, 1] != new_faces[:, 2]) & (new_faces[:, 2] != new_faces[:, 0])
    return compact(new_vertices, new_faces[keep])
