"""Surfaces from volumes: one per label class and one bone surface, in RAS millimetres.

Pure functions of arrays and affines: VTK's imaging and poly-data filters do the work,
nothing here renders or opens a window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """A named triangle surface in RAS millimetres.

    ``vertices`` is ``(N, 3)`` float, ``faces`` is ``(M, 3)`` int64 vertex indices with
    counter-clockwise winding seen from outside (normals point outward). ``color`` is RGB in
    0..1. ``kind`` is ``"label"`` (``label`` holds the class value) or ``"bone"`` (``label``
    is None).
    """

    name: str
    kind: str
    label: int | None
    color: tuple[float, float, float]
    vertices: np.ndarray
    faces: np.ndarray

    @property
    def n_triangles(self) -> int:
        """Number of triangles."""
        return int(len(self.faces))


BONE_COLOR = (0.89, 0.85, 0.79)
DEFAULT_BONE_HU = 200.0
DEFAULT_MIN_BONE_COMPONENT_MM3 = 500.0
SMOOTHING_ITERATIONS = 20
SMOOTHING_PASSBAND = 0.1  # windowed-sinc pass band: lower smooths more (3D Slicer's default is 0.01)


def use_all_cores() -> None:
    """Let VTK's threaded filters (flying edges, smoothing) use every core.

    PyPI's VTK wheels default to the sequential SMP backend; the STDThread backend is
    bundled and gives ~1.8x on two cores.
    """
    from vtkmodules.vtkCommonCore import vtkSMPTools

    if vtkSMPTools.GetBackend() != "STDThread":
        vtkSMPTools.SetBackend("STDThread")


def present_labels(label_array: np.ndarray) -> list[int]:
    """Sorted non-zero values present in a label array.

    >>> present_labels(np.array([[[0, 3], [3, 7]]], dtype=np.uint8))
    [3, 7]
    """
    from scipy import ndimage

    boxes = ndimage.find_objects(label_array)
    return [value for value, box in enumerate(boxes, start=1) if box is not None]


def label_meshes(
    label: "Volume",
    names=None,
    *,
    labels: list[int] | None = None,
    smooth: bool = True,
    progress=None,
) -> list[Mesh]:
    """One closed, outward-facing surface per label class, in RAS millimetres.

    Each class is contoured by flying edges (VTK's marching cubes) at 0.5 on its binary mask,
    cropped to the class's bounding box plus one voxel of background on every side, so the
    cost grows with the labelled boxes and not with volume x number of labels, and surfaces
    are closed where a structure touches the edge of the volume.

    Parameters
    ----------
    label : Volume
        Integer label map.
    names : LabelTable, optional
        Supplies ``name_of(value)`` and ``color_of(value)``; defaults to the built-in table.
    labels : list of int, optional
        Only these class values (values absent from the map are ignored).
    smooth : bool
        Windowed-sinc smoothing (volume-preserving; it does not shrink thin bones the way
        Laplacian smoothing does).
    progress : callable, optional
        Called as ``progress(done, total, name)`` after each mesh.
    """
    from scipy import ndimage

    if names is None:
        from .labels import load_label_table

        names = load_label_table(None)
    array = label.array
    boxes = ndimage.find_objects(array)
    wanted = set(labels) if labels is not None else None
    todo = [
        (value, box)
        for value, box in enumerate(boxes, start=1)
        if box is not None and (wanted is None or value in wanted)
    ]
    use_all_cores()
    meshes = []
    for done, (value, box) in enumerate(todo, start=1):
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, array.shape))
        mask = np.pad((array[grown] == value).view(np.uint8), 1)
        origin = np.array([s.start - 1 for s in grown], dtype=float)
        vertices, faces = _contour(mask, origin, 0.5, smooth)
        if smooth and len(faces):
            vertices = _restore_volume(vertices, faces, float(np.count_nonzero(mask)))
        name = names.name_of(value)
        if len(faces):
            vertices, faces = _to_world(vertices, faces, label.affine)
            meshes.append(Mesh(name, "label", value, names.color_of(value), vertices, faces))
        if progress is not None:
            progress(done, len(todo), name)
    return meshes


def bone_mesh(
    ct: "Volume",
    *,
    hu: float = DEFAULT_BONE_HU,
    min_component_mm3: float = DEFAULT_MIN_BONE_COMPONENT_MM3,
    smooth: bool = True,
) -> Mesh | None:
    """The bone surface: where the CT is at least ``hu`` Hounsfield units.

    Connected pieces enclosing less than ``min_component_mm3`` are dropped (specks, noise).
    The surface is closed at the edges of the volume. Returns None when nothing reaches the
    threshold.
    """
    array = ct.array
    iso = float(np.ceil(hu) - 0.5) if array.dtype.kind in "iub" else float(hu)
    inside = array >= iso
    if not inside.any():
        return None
    box = tuple(_axis_extent(inside, axis) for axis in range(3))
    del inside
    floor = iso - 1000.0
    if array.dtype.kind in "iu":
        floor = max(floor, float(np.iinfo(array.dtype).min))
    sub = np.pad(array[box], 1, constant_values=array.dtype.type(floor))
    origin = np.array([s.start - 1 for s in box], dtype=float)
    use_all_cores()
    vertices, faces = _contour(sub, origin, iso, smooth=False)
    vertices, faces = _drop_small_components(vertices, faces, min_component_mm3 / ct.voxel_volume_mm3)
    if not len(faces):
        return None
    if smooth:
        vertices = _smooth(vertices, faces)
    vertices, faces = _to_world(vertices, faces, ct.affine)
    return Mesh("bone", "bone", None, BONE_COLOR, vertices, faces)


def _axis_extent(mask: np.ndarray, axis: int) -> slice:
    other = tuple(a for a in range(3) if a != axis)
    hits = np.flatnonzero(mask.any(axis=other))
    return slice(int(hits[0]), int(hits[-1]) + 1)


def _image_data(array: np.ndarray, origin: np.ndarray):
    """Wrap a C-ordered (i, j, k) numpy array as vtkImageData in voxel-index coordinates."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = vtkImageData()
    image.SetDimensions(*array.shape)
    image.SetOrigin(*origin)
    image.SetSpacing(1.0, 1.0, 1.0)
    # VTK runs x fastest: the transposed C-order buffer is the Fortran-order view of the array.
    flat = np.ascontiguousarray(array.transpose(2, 1, 0)).ravel()
    scalars = numpy_to_vtk(flat, deep=False)
    scalars._numpy_reference = flat  # keep the buffer alive as long as the VTK array
    image.GetPointData().SetScalars(scalars)
    return image


def _contour(array: np.ndarray, origin: np.ndarray, iso: float, smooth: bool):
    """Flying-edges isosurface of ``array`` at ``iso``: (vertices in index space, faces)."""
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    fe = vtkFlyingEdges3D()
    fe.SetInputData(_image_data(array, origin))
    fe.SetValue(0, iso)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    vertices, faces = _polydata_arrays(fe.GetOutput())
    if smooth and len(faces):
        vertices = _smooth(vertices, faces)
    return vertices, faces


def _polydata_arrays(poly) -> tuple[np.ndarray, np.ndarray]:
    from vtkmodules.util.numpy_support import vtk_to_numpy

    if poly.GetNumberOfPoints() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vertices = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    faces = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    return vertices, faces


def _polydata(vertices: np.ndarray, faces: np.ndarray):
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData

    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(vertices, dtype=np.float64), deep=True))
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True), numpy_to_vtkIdTypeArray(faces.ravel().astype(np.int64), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(points)
    poly.SetPolys(cells)
    return poly


def _smooth(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Windowed-sinc smoothing (Taubin-like low-pass; no Laplacian shrinkage). Faces are unchanged."""
    from vtkmodules.vtkFiltersCore import vtkWindowedSincPolyDataFilter
    from vtkmodules.util.numpy_support import vtk_to_numpy

    smoother = vtkWindowedSincPolyDataFilter()
    smoother.SetInputData(_polydata(vertices, faces))
    smoother.SetNumberOfIterations(SMOOTHING_ITERATIONS)
    smoother.SetPassBand(SMOOTHING_PASSBAND)
    smoother.BoundarySmoothingOff()
    smoother.FeatureEdgeSmoothingOff()
    smoother.NonManifoldSmoothingOn()
    smoother.NormalizeCoordinatesOn()
    smoother.Update()
    return vtk_to_numpy(smoother.GetOutput().GetPoints().GetData()).astype(np.float64)


def _restore_volume(vertices: np.ndarray, faces: np.ndarray, target: float) -> np.ndarray:
    """Offset a closed surface along its vertex normals until it encloses ``target`` (index units).

    Marching cubes on a binary mask cuts every convex corner and smoothing rounds thin
    structures further, so ribs and processes lose 5-40 % of their voxel volume; moving each
    vertex by the same distance ``(target - volume) / area`` along its normal restores the
    volume to first order without changing the shape. Two rounds take the error below 0.5 %.
    The offset is capped at half a voxel so it never invents structure.
    """
    for _ in range(2):
        a, b, c = (vertices[faces[:, i]] for i in range(3))
        volume = float(np.einsum("ij,ij->", a, np.cross(b, c))) / 6.0
        area = float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()) / 2.0
        if area <= 0:
            break
        offset = float(np.clip((target - volume) / area, -0.5, 0.5))
        vertices = vertices + offset * _vertex_normals(vertices, faces)
    return vertices


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals that follow the faces' winding (no reorientation, no splitting)."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals

    normals = vtkPolyDataNormals()
    normals.SetInputData(_polydata(vertices, faces))
    normals.ComputePointNormalsOn()
    normals.ComputeCellNormalsOff()
    normals.SplittingOff()
    normals.ConsistencyOff()
    normals.AutoOrientNormalsOff()
    normals.Update()
    return vtk_to_numpy(normals.GetOutput().GetPointData().GetNormals()).astype(np.float64)


def _drop_small_components(vertices, faces, min_voxels: float):
    """Remove connected surface pieces that enclose fewer than ``min_voxels`` voxels."""
    from vtkmodules.vtkFiltersCore import vtkPolyDataConnectivityFilter
    from vtkmodules.util.numpy_support import vtk_to_numpy

    if not len(faces) or min_voxels <= 0:
        return vertices, faces
    conn = vtkPolyDataConnectivityFilter()
    conn.SetInputData(_polydata(vertices, faces))
    conn.SetExtractionModeToAllRegions()
    conn.ColorRegionsOn()
    conn.Update()
    out = conn.GetOutput()
    kept_vertices, kept_faces = _polydata_arrays(out)
    region = vtk_to_numpy(out.GetPointData().GetArray("RegionId")).astype(np.int64)[kept_faces[:, 0]]
    enclosed = np.abs(np.bincount(region, weights=_signed_tetra_volumes(kept_vertices, kept_faces)))
    keep_face = enclosed[region] >= min_voxels
    return _compact(kept_vertices, kept_faces[keep_face])


def _signed_tetra_volumes(vertices, faces) -> np.ndarray:
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    return np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0


def _compact(vertices, faces):
    """Drop vertices no face uses and renumber the faces."""
    used = np.zeros(len(vertices), bool)
    used[faces.ravel()] = True
    new_index = np.cumsum(used) - 1
    return vertices[used], new_index[faces]


def _to_world(vertices: np.ndarray, faces: np.ndarray, affine: np.ndarray):
    """Map index-space vertices to RAS mm and wind faces so normals point outward.

    Flying edges winds its triangles outward (away from values above the iso-value) in index
    space. A left-handed affine (one flipped axis, e.g. LAS) mirrors the surface, which
    reverses the winding, so the faces are flipped back.
    """
    world = vertices @ affine[:3, :3].T + affine[:3, 3]
    flip = np.linalg.det(affine[:3, :3]) < 0
    return world, (faces[:, ::-1].copy() if flip else faces)
