"""How true a surface is: analytic shapes, their voxelisation, and the surface's error against them.

A shape whose surface is known exactly (a sphere, an ellipsoid, a tilted torus like a rib, two
halves of a ball touching along an oblique plane) is voxelised on a grid of any affine: a
voxel is inside when its centre is. A surface built from that label map is then measured
against the true surface:

- the distance of every vertex to the true surface (RMS and max, mm): what a print gets;
- the angle between each face's normal and the true normal at the face centre, averaged with
  the face areas as weights (degrees): what the eye sees as terraces;
- the enclosed volume against the true volume (%);
- closedness and orientation (every edge shared by two faces running along it in opposite
  directions, positive enclosed volume).

numpy, and VTK for 3D Slicer's pipeline and the distance between two surfaces: nothing here
renders or reads a file. `scripts/bench.py` prints the fidelity
table from these functions; the tests hold the default surfaces to thresholds with them.

>>> shape = sphere(radius=6.0)
>>> label = voxelise([shape], spacing=(1.0, 1.0, 1.0))
>>> int(label.array.max()), label.shape
(1, (17, 17, 17))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .meshing import face_volumes_and_areas
from ..io.volume import Volume


@dataclass(frozen=True)
class Shape:
    """A solid with a known surface: signed distance (mm, negative inside) and outward normal.

    ``radius`` bounds the solid around ``centre`` (for the grid); ``volume`` is exact (mm³).
    """

    name: str
    centre: np.ndarray
    radius: float
    volume: float
    distance: Callable[[np.ndarray], np.ndarray]
    normal: Callable[[np.ndarray], np.ndarray]


def rotation(axis, degrees: float) -> np.ndarray:
    """The 3 x 3 rotation by ``degrees`` about ``axis`` (Rodrigues' formula).

    >>> np.round(rotation([0, 0, 1], 90) @ [1.0, 0.0, 0.0], 6).tolist()
    [0.0, 1.0, 0.0]
    """
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * x + (1 - np.cos(t)) * x @ x


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)


def sphere(radius: float = 18.0, centre=(0.0, 0.0, 0.0), name: str = "sphere") -> Shape:
    """A ball.

    >>> s = sphere(2.0)
    >>> s.distance(np.array([[3.0, 0, 0], [0, 0, 0]])).tolist()
    [1.0, -2.0]
    """
    c = np.asarray(centre, float)
    return Shape(name, c, radius, 4 / 3 * np.pi * radius**3,
                 lambda p: np.linalg.norm(p - c, axis=-1) - radius, lambda p: _unit(p - c))


def torus(major: float = 26.0, minor: float = 5.0, tilt: float = 30.0, centre=(0.0, 0.0, 0.0),
          name: str = "torus") -> Shape:
    """A ring of round section (``minor`` radius) about an axis tilted by ``tilt`` degrees: a rib.

    >>> t = torus(10.0, 2.0, tilt=0.0)
    >>> t.distance(np.array([[10.0, 0, 0], [13.0, 0, 0]])).tolist()
    [-2.0, 1.0]
    """
    c = np.asarray(centre, float)
    turn = rotation([1.0, 0.3, 0.0], tilt)

    def local(p):
        q = (p - c) @ turn  # rows: turn.T @ (p - c)
        ring = np.linalg.norm(q[:, :2], axis=1)
        return q, ring

    def distance(p):
        q, ring = local(p)
        return np.hypot(ring - major, q[:, 2]) - minor

    def normal(p):
        q, ring = local(p)
        toward = q.copy()
        toward[:, :2] *= (1 - major / np.maximum(ring, 1e-12))[:, None]  # from the tube's core circle
        return _unit(toward) @ turn.T

    return Shape(name, c, major + minor, 2 * np.pi**2 * major * minor**2, distance, normal)


def ellipsoid(axes=(24.0, 16.0, 11.0), turn_degrees: float = 25.0, centre=(0.0, 0.0, 0.0),
              name: str = "ellipsoid") -> Shape:
    """An ellipsoid with semi-axes ``axes`` (mm), turned about an oblique axis.

    Distances are to the nearest surface point, found by bisection on the Lagrange parameter
    (exact to 1e-9 mm), not the first-order estimate.

    >>> e = ellipsoid((3.0, 2.0, 1.0), turn_degrees=0.0)
    >>> np.round(e.distance(np.array([[5.0, 0, 0], [0, 0, 0.5]])), 9).tolist()
    [2.0, -0.5]
    """
    c = np.asarray(centre, float)
    a = np.asarray(axes, float)
    turn = rotation([1.0, 1.0, 0.5], turn_degrees)

    def closest(p):
        q = (p - c) @ turn
        f = np.sum((q / a) ** 2, axis=1) - 1
        # x(t) = a² q / (a² + t) on the surface: g(t) = sum (a q / (a² + t))² - 1 = 0, monotone in t
        lo = np.where(f > 0, 0.0, -np.min(a) ** 2 * (1 - 1e-12))
        hi = np.where(f > 0, np.linalg.norm(q, axis=1) * np.max(a) + 1.0, 0.0)
        for _ in range(100):
            t = (lo + hi) / 2
            g = np.sum((a * q / (a**2 + t[:, None])) ** 2, axis=1) - 1
            lo, hi = np.where(g > 0, t, lo), np.where(g > 0, hi, t)
        x = a**2 * q / (a**2 + ((lo + hi) / 2)[:, None])
        return q, x, f

    def distance(p):
        q, x, f = closest(p)
        return np.sign(f) * np.linalg.norm(q - x, axis=1)

    def normal(p):
        q, x, _ = closest(p)
        return _unit(x / a**2) @ turn.T

    return Shape(name, c, float(a.max()), 4 / 3 * np.pi * float(np.prod(a)), distance, normal)


def ball_halves(radius: float = 14.0, tilt: float = 35.0, centre=(0.0, 0.0, 0.0)) -> tuple[Shape, Shape]:
    """A ball cut in two by a plane through its centre tilted ``tilt`` degrees from axial:
    two solids touching along a disc, like two vertebrae or two organs.

    Distances are exact inside each half and a lower bound outside near the rim, where the
    sphere and the plane meet at a right angle.

    >>> upper, lower = ball_halves(5.0, tilt=0.0)
    >>> upper.distance(np.array([[0, 0, 2.0]])).tolist(), lower.distance(np.array([[0, 0, 2.0]])).tolist()
    ([-2.0], [2.0])
    """
    c = np.asarray(centre, float)
    n = rotation([1.0, 0.0, 0.0], tilt) @ np.array([0.0, 0.0, 1.0])
    ball = sphere(radius, c)

    def half(sign, name):
        def distance(p):
            return np.maximum(ball.distance(p), -sign * ((p - c) @ n))

        def normal(p):
            on_plane = -sign * ((p - c) @ n) > ball.distance(p)
            return np.where(on_plane[:, None], -sign * n, ball.normal(p))

        return Shape(name, c, radius, ball.volume / 2, distance, normal)

    return half(1.0, "upper half"), half(-1.0, "lower half")


def grid_affine(spacing, turn: np.ndarray | None = None, flip_lr_ap: bool = False) -> np.ndarray:
    """A voxel-to-RAS affine with voxel sizes ``spacing``: axis-aligned RAS, LPS-stored
    (``flip_lr_ap``: i runs right-to-left and j anterior-to-posterior, as DICOM stores it)
    or turned by the rotation ``turn`` (oblique). The origin is set by `voxelise`.

    >>> grid_affine((0.8, 0.8, 3.0), flip_lr_ap=True)[:3, :3].diagonal().tolist()
    [-0.8, -0.8, 3.0]
    """
    linear = np.diag(np.asarray(spacing, float))
    if flip_lr_ap:
        linear = np.diag([-1.0, -1.0, 1.0]) @ linear
    if turn is not None:
        linear = turn @ linear
    affine = np.eye(4)
    affine[:3, :3] = linear
    return affine


def voxelise(shapes, spacing=(0.8, 0.8, 0.8), affine: np.ndarray | None = None,
             offset=(0.31, 0.17, 0.43), margin: float = 2.0) -> Volume:
    """A label map of ``shapes`` (values 1, 2, ... in order; a later shape wins where they
    overlap): a voxel is labelled when its centre is inside.

    The grid covers the shapes' bounding spheres with ``margin`` voxels to spare; ``offset``
    (in voxels) moves the grid against the shapes so that their centres fall between voxel
    centres, as they do in a scan. ``affine`` gives the grid's orientation (its translation is
    replaced); by default an RAS grid of ``spacing``.
    """
    affine = grid_affine(spacing) if affine is None else np.array(affine, float)
    linear = affine[:3, :3]
    centre = np.mean([s.centre for s in shapes], axis=0)
    reach = max(np.linalg.norm(s.centre - centre) + s.radius for s in shapes)
    # half-extent in voxels along each index axis: the bounding sphere through the inverse map
    half = np.ceil(reach * np.linalg.norm(np.linalg.inv(linear), axis=1) + margin).astype(int)
    shape = tuple(int(2 * h + 1) for h in half)
    affine[:3, 3] = centre - linear @ (half + np.asarray(offset, float))
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    world = (linear @ ijk).T + affine[:3, 3]
    array = np.zeros(len(world), np.uint8)
    for value, s in enumerate(shapes, start=1):
        array[s.distance(world) <= 0] = value
    return Volume(np.asfortranarray(array.reshape(shape)), affine)


def upsample_labels(label: Volume, factor: int) -> Volume:
    """``label`` written on a grid ``factor`` times finer along every axis, the way a segmentation
    made at a coarse resolution reaches a fine CT grid (and `scripts/bench.py`'s clinical-size
    case is made from the 3 mm sample): each class's 0/1 mask, inside its box plus one voxel,
    linearly interpolated with voxels as cells (scipy's ``grid_mode``) and kept where it is at
    least 0.5, the higher value winning where two classes reach; the new voxels tile the old
    ones' box. Its boundaries step in terraces ``factor`` voxels high.

    >>> coarse = voxelise([sphere(6.0)], spacing=(3.0, 3.0, 3.0))
    >>> fine = upsample_labels(coarse, 3)
    >>> fine.shape, [round(float(v), 3) for v in fine.voxel_sizes]
    ((27, 27, 27), [1.0, 1.0, 1.0])
    >>> round(float(np.count_nonzero(fine.array) / np.count_nonzero(coarse.array) / 27), 2)
    0.9
    """
    from scipy import ndimage

    array = np.asarray(label.array)
    out = np.zeros(tuple(n * factor for n in array.shape), np.uint8)
    best = np.zeros(out.shape, np.float32)
    for value, box in enumerate(ndimage.find_objects(array), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, array.shape))
        mask = ndimage.zoom((array[box] == value).astype(np.float32), factor, order=1, mode="nearest", grid_mode=True)
        target = tuple(slice(s.start * factor, s.stop * factor) for s in box)
        wins = (mask >= 0.5) & (mask > best[target])
        out[target][wins] = value
        best[target][wins] = mask[wins]
    affine = np.array(label.affine, float)
    affine[:3, 3] += affine[:3, :3] @ np.full(3, -0.5 + 0.5 / factor)  # the first new voxel's centre
    affine[:3, :3] /= factor
    return Volume(np.asfortranarray(out), affine)


@dataclass(frozen=True)
class SurfaceError:
    """A surface measured against its true shape (see the module's docstring)."""

    normal_error_deg: float
    rms_mm: float
    max_mm: float
    volume_error_pct: float
    closed_outward: bool
    triangles: int


def closed_and_outward(faces: np.ndarray, vertices: np.ndarray) -> bool:
    """Closed, consistently wound and outward (`viz3d.surfaces.quality.inspect_surface`: every edge
    has two faces running along it in opposite directions, and the enclosed volume is positive).

    >>> v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    >>> f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> closed_and_outward(f, v), closed_and_outward(f[:, ::-1], v), closed_and_outward(f[:3], v)
    (True, False, False)
    """
    from .quality import inspect_surface

    if not len(faces):
        return False
    check = inspect_surface(np.asarray(vertices, np.float64), np.asarray(faces, np.int64))
    return check.watertight and check.winding_consistent and check.volume_mm3 > 0


def surface_error(vertices: np.ndarray, faces: np.ndarray, shape: Shape) -> SurfaceError:
    """Measure a surface (RAS mm) against ``shape``.

    >>> s = sphere(10.0)
    >>> import vtkmodules.vtkFiltersSources as src
    >>> from viz3d.surfaces.polydata import polydata_arrays
    >>> ball = src.vtkSphereSource(radius=10.0, theta_resolution=200, phi_resolution=200)
    >>> _ = ball.Update()
    >>> e = surface_error(*polydata_arrays(ball.GetOutput()), s)
    >>> e.normal_error_deg < 1.0, e.rms_mm < 0.01, abs(e.volume_error_pct) < 0.1, e.closed_outward
    (True, True, True, True)
    """
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    corners = vertices[faces]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = np.linalg.norm(cross, axis=1)
    keep = area > 0
    true_normal = shape.normal(corners.mean(axis=1)[keep])
    cosine = np.einsum("ij,ij->i", cross[keep] / area[keep, None], true_normal)
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    distance = shape.distance(vertices[np.unique(faces)])
    volume = float(face_volumes_and_areas(vertices, faces)[0].sum())
    return SurfaceError(
        normal_error_deg=float(np.average(angle, weights=area[keep])),
        rms_mm=float(np.sqrt(np.mean(distance**2))),
        max_mm=float(np.abs(distance).max()),
        volume_error_pct=100.0 * (volume - shape.volume) / shape.volume,
        closed_outward=closed_and_outward(faces, vertices),
        triangles=int(len(faces)),
    )


def penetration_mm(vertices: np.ndarray, faces: np.ndarray, other_vertices: np.ndarray,
                   other_faces: np.ndarray) -> float:
    """How deep the first surface reaches inside the closed second one (mm; 0 when it stays out).

    Signed distances from VTK's vtkImplicitPolyDataDistance (negative inside the second surface,
    which must be wound outward).
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy
    from vtkmodules.vtkFiltersCore import vtkImplicitPolyDataDistance

    from .polydata import to_polydata

    implicit = vtkImplicitPolyDataDistance()
    implicit.SetInput(to_polydata(np.asarray(other_vertices, np.float64), np.asarray(other_faces, np.int64)))
    points = np.ascontiguousarray(vertices, np.float64)
    out = numpy_to_vtk(np.zeros(len(points)), deep=True)
    implicit.FunctionValue(numpy_to_vtk(points, deep=True), out)
    return float(max(0.0, -vtk_to_numpy(out).min()))


def slicer_surface(label: Volume, value: int, factor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """3D Slicer's default closed surface of class ``value``, rebuilt from its published
    parameters for comparison: discrete flying edges on the label map padded by one voxel,
    windowed-sinc smoothing with pass band 10^(-4 f) and 20 + 40 f iterations (normalised
    coordinates, non-manifold smoothing on), then the voxel-to-RAS transform. No volume
    correction. Returns (vertices in RAS mm, faces wound outward).
    """
    from .meshing import flying_edges, windowed_sinc, to_world, smoothing_parameters
    from .polydata import polydata_arrays

    padded = np.asfortranarray(np.pad(np.asarray(label.array), 1))
    poly = flying_edges(padded, np.full(3, -1.0), value, discrete=True)
    if factor > 0:
        poly = windowed_sinc(poly, *smoothing_parameters(factor), nonmanifold=True)
    vertices, faces = polydata_arrays(poly)
    vertices, faces = to_world(vertices, faces.copy(), label.affine)
    if float(face_volumes_and_areas(vertices, faces)[0].sum()) < 0:  # discrete flying edges' winding
        faces = faces[:, ::-1].copy()
    return vertices, faces
