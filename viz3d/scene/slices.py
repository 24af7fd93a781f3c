"""The CT on a world-axis plane: where the plane's samples lie and what they hold (numpy only).

The scene draws each CT plane (axial, coronal, sagittal: normal to world z, y, x) as one
textured quad. This module computes, without any graphics:

- `plane_grid`: a regular grid on the plane covering the CT, aligned with the world axes, one
  sample per voxel when the CT's axes are the world's (any order, any flips);
- `sample_plane`: the CT's values at those samples (linear between slices; trilinear on an
  oblique grid) and which samples lie inside the CT;
- `value_codes` / `encode_plane`: the values as 16-bit codes in two bytes of an RGB texture,
  the third byte marking samples inside the CT. The scene's shader turns codes into grey with
  the window as two numbers, so a window/level change touches no array.

>>> import numpy as np
>>> grid = plane_grid(np.diag([-2.0, 2.0, 3.0, 1.0]), (4, 5, 6), axis=2)
>>> grid.shape, grid.origin, grid.spacing
((4, 5), (-6.0, 0.0), (2.0, 2.0))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.volume import grid_box

MAX_PLANE_SAMPLES = 4096  # per side: what current drivers take as a texture (llvmpipe 16384; GL 3.2 promises 1024)
ALIGNED_TOLERANCE = 1e-3  # voxels a sample may be off a voxel centre and still read it directly
_CODES = 65535  # 16-bit codes


@dataclass(frozen=True)
class PlaneGrid:
    """Samples of a plane normal to world coordinate ``axis`` (0 x, 1 y, 2 z).

    The in-plane world coordinates are ``u`` and ``v`` (the other two, in increasing order);
    sample ``(i, j)`` lies at ``u = origin[0] + i * spacing[0]``, ``v = origin[1] + j * spacing[1]``
    for ``i < shape[0]``, ``j < shape[1]``.
    """

    axis: int
    u: int
    v: int
    origin: tuple[float, float]
    spacing: tuple[float, float]
    shape: tuple[int, int]


def plane_grid(affine, shape, axis: int, max_samples: int | None = None) -> PlaneGrid:
    """The sample grid of the plane normal to world ``axis`` through a CT of ``shape`` and ``affine``.

    It spans the world box of the CT's voxel centres. Along each in-plane world axis the step is
    the voxel size of the grid axis closest to it, so a CT whose axes are the world's (RAS, LAS,
    LPS, permuted) gets exactly one sample per voxel, at the voxel centres. At most
    ``max_samples`` (default `MAX_PLANE_SAMPLES`) per side, spread over the same extent.
    """
    max_samples = MAX_PLANE_SAMPLES if max_samples is None else max(int(max_samples), 2)
    affine = np.asarray(affine, dtype=float)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    matrix = affine[:3, :3]
    sizes = np.linalg.norm(matrix, axis=0)
    lo, hi = grid_box(affine, shape)
    u, v = (k for k in range(3) if k != axis)
    origin, spacing, count = [], [], []
    for k in (u, v):
        step = float(sizes[np.argmax(np.abs(matrix[k]) / sizes)])
        n = int(round((hi[k] - lo[k]) / step)) + 1
        n = min(n, max_samples)
        step = (hi[k] - lo[k]) / (n - 1) if n > 1 else step
        origin.append(float(lo[k]))
        spacing.append(float(step))
        count.append(n)
    return PlaneGrid(axis, u, v, (origin[0], origin[1]), (spacing[0], spacing[1]), (count[0], count[1]))


def plane_points(grid: PlaneGrid, position: float) -> np.ndarray:
    """World positions of all samples at ``position``, ``(v * u, 3)``, ``u`` varying fastest."""
    (u0, v0), (du, dv), (nu, nv) = grid.origin, grid.spacing, grid.shape
    points = np.full((nv, nu, 3), float(position))
    points[..., grid.u] = u0 + du * np.arange(nu)[None, :]
    points[..., grid.v] = v0 + dv * np.arange(nv)[:, None]
    return points.reshape(-1, 3)


def plane_corners(grid: PlaneGrid, position: float) -> np.ndarray:
    """World positions (4 x 3) of samples (0, 0), (last, 0), (last, last), (0, last) at ``position``."""
    (u0, v0), (du, dv), (nu, nv) = grid.origin, grid.spacing, grid.shape
    corners = np.full((4, 3), float(position))
    corners[:, grid.u] = [u0, u0 + (nu - 1) * du, u0 + (nu - 1) * du, u0]
    corners[:, grid.v] = [v0, v0, v0 + (nv - 1) * dv, v0 + (nv - 1) * dv]
    return corners


def sample_plane(array: np.ndarray, affine, grid: PlaneGrid, position: float) -> tuple[np.ndarray, np.ndarray]:
    """The CT's values on the plane at world ``position``: (float32 values, inside mask), shape (v, u).

    Rows run along ``v`` and columns along ``u`` (the layout of a VTK image with ``u`` as x).
    Values are linear between the two nearest slices when the CT's axes are the world's (the
    in-plane samples are the voxels themselves), trilinear otherwise (`scipy.ndimage.map_coordinates`).
    A sample is inside when it lies within half a voxel of the CT's voxel centres.

    >>> a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> values, inside = sample_plane(a, np.eye(4), plane_grid(np.eye(4), a.shape, 2), 1.5)
    >>> values.tolist()
    [[1.5, 13.5], [5.5, 17.5], [9.5, 21.5]]
    >>> bool(inside.all())
    True
    """
    affine = np.asarray(affine, dtype=float)
    shape = np.array(array.shape)
    to_voxel = np.linalg.inv(affine)
    (u0, v0), (du, dv), (nu, nv) = grid.origin, grid.spacing, grid.shape
    start = np.zeros(3)
    start[[grid.u, grid.v, grid.axis]] = (u0, v0, position)
    base = to_voxel[:3, :3] @ start + to_voxel[:3, 3]  # voxel coordinates of sample (0, 0)
    step_u, step_v = to_voxel[:3, grid.u] * du, to_voxel[:3, grid.v] * dv
    aligned = _aligned_axes(base, step_u, step_v, shape, (nu, nv))
    if aligned is not None:
        return _aligned_plane(array, base, aligned, (nu, nv))
    if array.dtype.kind == "f" and array.dtype.itemsize < 4:
        array = array.astype(np.float32)  # map_coordinates takes no float16
    iu, iv = np.arange(nu, dtype=float), np.arange(nv, dtype=float)
    voxel = base[:, None, None] + step_u[:, None, None] * iu[None, None, :] + step_v[:, None, None] * iv[None, :, None]
    inside = np.all((voxel >= -0.5) & (voxel <= shape[:, None, None] - 0.5), axis=0)
    from scipy import ndimage

    values = ndimage.map_coordinates(array, voxel.reshape(3, -1), order=1, mode="nearest", output=np.float32)
    return values.reshape(nv, nu), inside


def _aligned_axes(base, step_u, step_v, shape, counts):
    """(through axis, u axis, u step, v axis, v step) when the samples are whole voxels in-plane.

    Whole within `ALIGNED_TOLERANCE` over the plane's whole extent, so affines with rounding
    noise (float32 headers, quaternions) still take the direct path.
    """
    tol = ALIGNED_TOLERANCE
    axes = []
    for step, n in ((step_u, counts[0]), (step_v, counts[1])):
        along = int(np.argmax(np.abs(step)))
        drift = np.abs(step) * max(n - 1, 1)  # how far the last sample moves along each voxel axis
        drift[along] = abs(abs(step[along]) - 1) * max(n - 1, 1)
        if np.any(drift > tol):
            return None
        axes.append((along, 1 if step[along] > 0 else -1))
    (ju, su), (jv, sv) = axes
    if ju == jv:
        return None
    through = 3 - ju - jv
    for j, s, n in ((ju, su, counts[0]), (jv, sv, counts[1])):
        first, last = base[j], base[j] + s * (n - 1)
        if abs(first - round(first)) > tol or min(first, last) < -tol or max(first, last) > shape[j] - 1 + tol:
            return None
    return through, ju, su, jv, sv


def _aligned_plane(array, base, aligned, counts):
    """The plane read straight from the array: two slices (views) blended, rows along v."""
    through, ju, su, jv, sv = aligned
    n = array.shape[through]
    k = float(base[through])
    inside = -0.5 <= k <= n - 0.5
    k = min(max(k, 0.0), n - 1.0)
    k0 = int(np.floor(k))
    k1, f = min(k0 + 1, n - 1), k - k0
    rows = _run(base[jv], sv, counts[1])
    cols = _run(base[ju], su, counts[0])

    def plane(index):
        slab = array[(slice(None),) * through + (index,)]  # a view: the other two axes, in grid order
        if [j for j in range(3) if j != through][0] != jv:
            slab = slab.T  # rows along v, columns along u
        return slab[rows, cols].astype(np.float32)

    values = plane(k0)
    if f > 0:
        values += np.float32(f) * (plane(k1) - values)
    return values, np.full(values.shape, inside)


def _run(first: float, step: int, count: int) -> slice:
    """The slice of ``count`` whole voxels from ``first`` in direction ``step`` (+1 or -1)."""
    start = int(round(first))
    stop = start + step * count
    return slice(start, None if stop < 0 else stop, step)


def value_codes(array: np.ndarray) -> tuple[float, float]:
    """(offset, scale) with value = offset + scale * code, code in 0..65535, for all of ``array``.

    Exact (scale 1) for 8- and 16-bit integer CTs, the usual HU int16, without scanning the
    array; other types scan it once for the range of their finite values (NaN and infinities
    are drawn as outside the CT).

    >>> value_codes(np.zeros(3, np.int16))
    (-32768.0, 1.0)
    >>> value_codes(np.array([0.0, 655.35]))
    (0.0, 0.01)
    """
    array = np.asarray(array)
    dtype = array.dtype
    if dtype.kind == "b":
        return 0.0, 1.0
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        return float(np.iinfo(dtype).min), 1.0
    finite = array[np.isfinite(array)] if dtype.kind == "f" else array
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if dtype.kind in "iu" and hi - lo <= _CODES:
        return lo, 1.0
    return lo, (hi - lo) / _CODES if hi > lo else 1.0


def encode_plane(values: np.ndarray, inside: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """RGB bytes (shape + (3,)): high and low byte of each value's 16-bit code, 255 where inside.

    >>> encode_plane(np.array([[-1000.0, 300.0]]), np.array([[True, False]]), -32768.0, 1.0).tolist()
    [[[124, 24, 255], [129, 44, 0]]]
    """
    codes = np.rint((np.asarray(values, np.float64) - offset) / scale)
    codes = np.clip(np.nan_to_num(codes, nan=0.0), 0, _CODES).astype(np.uint16)
    out = np.empty(codes.shape + (3,), np.uint8)
    out[..., 0] = codes >> 8
    out[..., 1] = codes & 0xFF
    out[..., 2] = np.where(inside & np.isfinite(values), 255, 0)
    return out
