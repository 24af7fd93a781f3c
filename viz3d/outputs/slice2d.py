"""The tutorial's picture: one windowed CT slice with the label map on top, as a PNG or an array.

A 2-D companion to the 3-D scene, for quality control and slides: the CT slice at its true
aspect ratio (anisotropic voxels included), in the radiological convention whatever the file's
orientation, with the labels in the label table's colours (filled or outlined), a legend of the
structures on that slice, the orientation letters on the four edges and a caption. `mosaic_image`
makes the 2-D QC sheet: N slices evenly through the labelled extent, one shared legend.

Conventions (the picture is what a radiology viewer shows):

========  ============================  ===============  ====================
plane     normal (RAS axis)             viewer's left    top
========  ============================  ===============  ====================
axial     z (inferior -> superior)      patient's right  anterior
coronal   y (posterior -> anterior)     patient's right  superior
sagittal  x (left -> right)             anterior         superior
========  ============================  ===============  ====================

The axial slice is seen from the feet, the coronal from the front, the sagittal from the
patient's left side. Any file orientation (RAS, LAS, LPS-stored, permuted or flipped axes) is
first reordered to RAS without resampling (`nibabel.orientations`); an oblique grid is shown on
its axes closest to the world's, with a warning saying how far off they are.

Positions (``at``):

- a number (``120.5``, or the string ``"120.5"``): world millimetres along the plane's normal
  (the RAS z coordinate for axial, y for coronal, x for sagittal); the nearest slice is shown;
- ``"i42"``: voxel index 42 along the file's own array axis closest to the normal (the ``k`` of
  ``ct[:, :, k]`` in the tutorial for an axial slice of an axial scan);
- a structure name (``"liver"``, case-insensitive, spaces or underscores alike): the slice
  through that structure's centre (the centroid of its voxels along the normal: the L3 level
  of ``"vertebrae_L3"``, mid-liver of ``"liver"``), or the nearest slice that shows it when the
  centre lies outside it; the 3-D scene's ``--slices axial=L3`` goes through the same centre;
- ``None``: the middle of the labelled extent, or of the CT without a label.

Labels are never interpolated: each pixel takes the label of the voxel it lies in (nearest
neighbour); the CT is interpolated linearly between voxel centres.

>>> import numpy as np
>>> from viz3d.io.volume import Volume
>>> ct = Volume(np.full((20, 20, 10), 40, np.int16), np.diag([1.0, 1.0, 3.0, 1.0]))
>>> slice_image(ct, plane="coronal", annotate=False, size=(200, 200)).shape  # 20 mm wide, 30 mm tall
(200, 133, 3)
"""
from __future__ import annotations

import difflib
import math
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Viz3dError, warn
from .atomic import check_output_file
from ..io.labels import short_names
from ..io.volume import Volume

PLANES = {"axial": 2, "coronal": 1, "sagittal": 0}
"""Plane name -> index of the RAS axis normal to it."""

EDGE_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
"""Plane -> the patient directions on the picture's (left, right, top, bottom) edges."""

DEFAULT_SIZE = (512, 512)
"""The box (width, height) in pixels the slice itself is fitted into (the legend and letters are outside it)."""

MOSAIC_PANEL_SIZE = (256, 256)
"""The box each mosaic panel is fitted into."""

MAX_MOSAIC = 64
OBLIQUE_DEGREES = 0.01  # axes further than this from the world's: the warning about an oblique grid
_AXIS = "xyz"
_BACKGROUND = (0, 0, 0)


# ------------------------------------------------------------------ public API


def slice_image(ct, label=None, table=None, plane="axial", at=None, window="soft", opacity=0.5, outline=False, *,
                size=DEFAULT_SIZE, annotate=True) -> np.ndarray:
    """The windowed CT slice with the label map on top, as an RGB array.

    Parameters
    ----------
    ct : Volume or path-like
        The CT (Hounsfield units): a `Volume`, or a NIfTI file / DICOM folder (`viz3d.load_ct`).
    label : Volume, path-like or None
        The label map, on the CT's grid or any other (sampled through both affines).
    table : LabelTable, str, path-like or None
        Names and colours: a `LabelTable`, a built-in name or a file; by default the names the
        label map's file carries or has beside it (`viz3d.api.label_table_for`).
    plane : {"axial", "coronal", "sagittal"}
        The slice's plane; see the module's docstring for the picture's orientation.
    at : float, str or None
        Where: mm along the plane's normal, ``"i42"`` (voxel index), a structure name, or
        ``None`` (middle of the labelled extent); see the module's docstring.
    window : str or (float, float)
        ``"soft"`` (40/400), ``"bone"`` (400/1800), ``"lung"`` (-600/1500), ``"brain"`` (40/80)
        or ``(center, width)`` in HU: ``center - width/2`` is black, ``center + width/2`` white.
    opacity : float
        Opacity of the filled labels, 0..1 (default 0.5).
    outline : bool
        Draw each structure's outline in its full colour instead of filling it.
    size : (int, int)
        The box (width, height) in pixels the slice is fitted into, keeping its true aspect
        ratio (default 512 x 512).
    annotate : bool
        With the orientation letters, the legend of the structures on this slice and the
        caption (default); ``False``: the slice's pixels only.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.

    Raises
    ------
    Viz3dError
        An unknown plane or window, ``at`` outside the CT or naming no structure of the table
        or label map, an opacity outside 0..1, a bad size.

    Examples
    --------
    >>> import numpy as np
    >>> from viz3d.io.volume import Volume
    >>> ct = Volume(np.full((8, 8, 4), 40, np.int16), np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> picture = slice_image(ct, annotate=False, size=(64, 64))
    >>> picture.shape, int(picture[0, 0, 0])   # 40 HU is the soft window's centre: mid-grey
    ((64, 64, 3), 128)
    """
    return _slice_picture(ct, label, table, plane, at, window, opacity, outline, size, annotate)[0]


def mosaic_image(ct, label=None, table=None, plane="axial", n=9, window="soft", opacity=0.5, outline=False, *,
                 size=MOSAIC_PANEL_SIZE) -> np.ndarray:
    """A QC sheet: ``n`` slices evenly through the labelled extent, each with its position, one legend.

    The extent is the label map's along the plane's normal (the CT's without a label); slice
    ``i`` of ``n`` lies at the middle of the ``i``-th of ``n`` equal parts of it. Panels read
    left to right, top to bottom, from inferior to superior (axial), posterior to anterior
    (coronal), left to right of the patient (sagittal).

    Parameters
    ----------
    ct : Volume or path-like
        The CT (Hounsfield units): a `Volume`, or a NIfTI file / DICOM folder (`viz3d.load_ct`).
    label : Volume, path-like or None
        The label map, on the CT's grid or any other (sampled through both affines).
    table : LabelTable, str, path-like or None
        Names and colours, as in `slice_image`.
    plane : {"axial", "coronal", "sagittal"}
        The slices' plane.
    n : int
        The number of slices, 1 to `MAX_MOSAIC` (default 9).
    window : str or (float, float)
        A preset name or ``(center, width)`` in HU, as in `slice_image`.
    opacity : float
        Opacity of the filled labels, 0..1 (default 0.5).
    outline : bool
        Draw each structure's outline in its full colour instead of filling it.
    size : (int, int)
        The box (width, height) in pixels each panel is fitted into (default 256 x 256).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.

    Raises
    ------
    Viz3dError
        As `slice_image`; and when ``n`` is not a whole number from 1 to `MAX_MOSAIC`, or the
        extent holds fewer than ``n`` slices.

    Examples
    --------
    >>> import numpy as np
    >>> from viz3d.io.volume import Volume
    >>> ct = Volume(np.zeros((8, 8, 12), np.int16), np.eye(4))
    >>> mosaic_image(ct, n=4, size=(32, 32)).ndim
    3
    """
    return _mosaic_picture(ct, label, table, plane, n, window, opacity, outline, size)[0]


def save_slice(path, ct, label=None, table=None, *, mosaic=None, **options) -> Path:
    """Write `slice_image` (or, with ``mosaic=N``, `mosaic_image`) to a PNG, atomically.

    The file appears complete or not at all.

    Parameters
    ----------
    path : str or path-like
        The ``.png`` file to write, in an existing folder.
    ct : Volume or path-like
        The CT, as in `slice_image`.
    label : Volume, path-like or None
        The label map, as in `slice_image`.
    table : LabelTable, str, path-like or None
        Names and colours, as in `slice_image`.
    mosaic : int or None, optional
        With a number N, `mosaic_image` of N slices instead of one slice.
    **options
        `slice_image`'s (``plane``, ``at``, ``window``, ``opacity``, ``outline``, ``size``,
        ``annotate``); with ``mosaic`` not ``at``.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    Viz3dError
        When ``path`` is not a ``.png`` file name, is a folder or its folder is missing (before
        anything is loaded); ``mosaic`` is given with ``at``; and as `slice_image` and
        `mosaic_image`.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from viz3d.io.volume import Volume
    >>> ct = Volume(np.zeros((8, 8, 4), np.int16), np.eye(4))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     out = save_slice(pathlib.Path(folder) / "slice.png", ct)
    ...     print(out.name, out.read_bytes()[:4])
    slice.png b'\\x89PNG'
    >>> save_slice("slice.jpg", ct)
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: slice.jpg: the slice picture is written as PNG; use a .png file name
    """
    return save_slice_summary(path, ct, label, table, mosaic=mosaic, **options)[0]


# ------------------------------------------------------------------ what the CLI calls


def check_output(path) -> Path:
    """Refuse an output that is not a ``.png`` file name in an existing folder (before any loading)."""
    return check_output_file(path, (".png",), "the slice picture is written as PNG")


def save_slice_summary(path, ct, label=None, table=None, *, mosaic=None, plane="axial", at=None, window="soft",
                       opacity=0.5, outline=False, size=None, annotate=True) -> tuple[Path, str]:
    """`save_slice`, also returning a one-line summary of what was drawn (the command line prints it)."""
    from PIL import Image

    from .atomic import atomic_path

    path = check_output(path)
    if mosaic is not None:
        if at is not None:
            raise Viz3dError("a mosaic spreads its slices over the labelled extent: give either --at or --mosaic, not both")
        picture, summary = _mosaic_picture(ct, label, table, plane, mosaic, window, opacity, outline,
                                           MOSAIC_PANEL_SIZE if size is None else size)
    else:
        picture, summary = _slice_picture(ct, label, table, plane, at, window, opacity, outline,
                                          DEFAULT_SIZE if size is None else size, annotate)
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return path, summary


# ------------------------------------------------------------------ validation


def _volume(value, what: str, loader) -> Volume | None:
    if value is None or isinstance(value, Volume):
        return value
    if isinstance(value, (str, os.PathLike)):
        return loader(value)
    raise Viz3dError(f"{what} must be a viz3d Volume or a file path, got {type(value).__name__}")


def _inputs(ct, label, table):
    from ..api import label_table_for, load_ct
    from ..io.labels import LabelTable
    from ..io.formats import load_label

    if ct is None:
        raise Viz3dError("a slice picture needs a CT")
    ct = _volume(ct, "ct", load_ct)
    label = _volume(label, "label", lambda path: load_label(path, reference=ct))  # an RTSTRUCT: the CT's grid
    if not isinstance(table, LabelTable):
        table = label_table_for(label, table)  # the file's own names (header, sidecar) and a check they fit
    return ct, label, table


def _plane(plane) -> str:
    name = str(plane).strip().lower() if isinstance(plane, str) else None
    if name not in PLANES:
        raise Viz3dError(f"unknown plane {plane!r}; choose axial, coronal or sagittal")
    return name


def _window(window) -> tuple[tuple[float, float], str]:
    """``(center, width)`` and how the caption names it."""
    from ..scene.scene import WINDOW_PRESETS

    if isinstance(window, str):
        key = window.strip().lower()
        if key not in WINDOW_PRESETS:
            raise Viz3dError(f"unknown window preset {window!r}; choose one of {', '.join(WINDOW_PRESETS)} or give CENTER,WIDTH")
        center, width = WINDOW_PRESETS[key]
        return (center, width), f"{key} {center:g}/{width:g}"
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise Viz3dError(f"a window is a preset name or (center, width) in HU, got {window!r}") from None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise Viz3dError(f"a window needs a finite center and a positive width, got {center:g},{width:g}")
    return (center, width), f"{center:g}/{width:g}"


def _opacity(opacity) -> float:
    try:
        value = float(opacity)
    except (TypeError, ValueError):
        raise Viz3dError(f"opacity must be a number from 0 to 1, got {opacity!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN too
        raise Viz3dError(f"opacity must be from 0 (invisible) to 1 (opaque), got {opacity!r}")
    return value


def _box(size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise Viz3dError(f"size must be (width, height) in pixels, got {size!r}") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise Viz3dError(f"size must be between 16 and 8192 pixels per side, got {width}x{height}")
    return width, height


def _mosaic_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise Viz3dError(f"a mosaic has a whole number of slices, got {n!r}")
    if not 1 <= int(n) <= MAX_MOSAIC:
        raise Viz3dError(f"a mosaic has 1 to {MAX_MOSAIC} slices, got {n}")
    return int(n)


# ------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class _Grid:
    """A volume with its array axes reordered and flipped towards R, A, S (views, no resampling)."""

    volume: Volume
    array: np.ndarray
    affine: np.ndarray  # canonical voxel index -> RAS mm
    ornt: np.ndarray  # nibabel orientation: file axis -> (canonical axis, flip)

    @property
    def shape(self):
        return self.array.shape

    @property
    def spacing(self) -> np.ndarray:
        from nibabel.affines import voxel_sizes

        return voxel_sizes(self.affine)

    def file_axis(self, axis: int) -> tuple[int, bool]:
        """The file's array axis that became canonical ``axis``, and whether it was flipped."""
        row = int(np.nonzero(self.ornt[:, 0] == axis)[0][0])
        return row, bool(self.ornt[row, 1] < 0)

    def positions(self, axis: int) -> np.ndarray:
        """World coordinate (mm) along RAS ``axis`` of each slice's centre, slices normal to canonical ``axis``."""
        centre = (np.array(self.shape, float) - 1) / 2
        base = self.affine[axis, :3] @ centre - self.affine[axis, axis] * centre[axis] + self.affine[axis, 3]
        return base + self.affine[axis, axis] * np.arange(self.shape[axis])

    def obliquity_degrees(self) -> float:
        cosines = np.abs(np.diag(self.affine[:3, :3])) / self.spacing
        return float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))


def _grid(volume: Volume) -> _Grid:
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(volume.affine)
    array = apply_orientation(volume.array, ornt)
    affine = volume.affine @ inv_ornt_aff(ornt, volume.shape)
    return _Grid(volume, array, affine, ornt)


def _in_plane(axis: int) -> tuple[int, int]:
    u, v = (a for a in range(3) if a != axis)
    return u, v


@dataclass
class _Scene:
    """Everything a picture needs, resolved once: grids, plane, window, table."""

    ct: _Grid
    label: Volume | None
    label_grid: _Grid | None  # the label reordered like the CT, when both are on one grid
    table: object
    plane: str
    axis: int
    window: tuple[float, float]
    window_text: str
    opacity: float
    outline: bool

    def slice_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The CT and label values on canonical slice ``index``, indexed ``[u, v]`` (u, v increasing)."""
        take = [slice(None)] * 3
        take[self.axis] = index
        ct = np.asarray(self.ct.array[tuple(take)], dtype=np.float32)
        if self.label is None:
            labels = np.zeros(ct.shape, np.int64)
        elif self.label_grid is not None:
            labels = np.asarray(self.label_grid.array[tuple(take)]).astype(np.int64)
        else:
            labels = self._sampled_labels(index, ct.shape)
        return ct, labels

    def _sampled_labels(self, index: int, shape) -> np.ndarray:
        """The label map at the CT slice's voxel centres (the voxel each one lies in)."""
        u, v = _in_plane(self.axis)
        ijk = np.zeros((3, shape[0] * shape[1]))
        grid_u, grid_v = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        ijk[u], ijk[v], ijk[self.axis] = grid_u.ravel(), grid_v.ravel(), index
        from nibabel.affines import apply_affine

        ct_to_label = np.linalg.inv(self.label.affine) @ self.ct.affine
        voxel = np.rint(apply_affine(ct_to_label, ijk.T).T).astype(np.int64)
        inside = np.all((voxel >= 0) & (voxel < np.array(self.label.shape)[:, None]), axis=0)
        values = np.zeros(voxel.shape[1], np.int64)
        values[inside] = self.label.array[voxel[0, inside], voxel[1, inside], voxel[2, inside]]
        return values.reshape(shape)

    def label_counts(self, mask_of) -> np.ndarray:
        """Per canonical CT slice along the normal: how many label voxels ``mask_of(array)`` selects."""
        n = self.ct.shape[self.axis]
        if self.label_grid is not None:
            others = tuple(a for a in range(3) if a != self.axis)
            return np.count_nonzero(mask_of(self.label_grid.array), axis=others)
        voxels = np.argwhere(mask_of(self.label.array)).T.astype(float)  # label file's indices
        if voxels.size == 0:
            return np.zeros(n, np.int64)
        from nibabel.affines import apply_affine

        label_to_ct = np.linalg.inv(self.ct.affine) @ self.label.affine
        index = np.rint(apply_affine(label_to_ct, voxels.T)[:, self.axis]).astype(np.int64)
        index = index[(index >= 0) & (index < n)]
        return np.bincount(index, minlength=n)

    def labelled_extent(self) -> tuple[int, int] | None:
        """First and last canonical slice holding a label voxel, or None."""
        if self.label is None:
            return None
        if self.label_grid is not None:
            others = tuple(a for a in range(3) if a != self.axis)
            hit = np.nonzero(np.any(self.label_grid.array > 0, axis=others))[0]
        else:
            hit = np.nonzero(self.label_counts(lambda array: array > 0))[0]
        return (int(hit[0]), int(hit[-1])) if hit.size else None

    def position(self, index: int) -> float:
        return float(self.ct.positions(self.axis)[index])

    def where(self, index: int) -> str:
        return f"{_AXIS[self.axis]} = {self.position(index):.1f} mm"


def _scene(ct, label, table, plane, window, opacity, outline) -> _Scene:
    ct, label, table = _inputs(ct, label, table)
    plane = _plane(plane)
    window, window_text = _window(window)
    grid = _grid(ct)
    angle = grid.obliquity_degrees()
    if angle > OBLIQUE_DEGREES:
        warn(f"{ct.source or 'the CT'}: the grid is oblique (its axes are up to {angle:.1f} degrees off the world's): "
             f"the {plane} picture shows the grid's own slice closest to that plane, not resampled, so its edges "
             f"and mm positions are that much off the true {plane} plane", stacklevel=4)
    label_grid = None
    if label is not None and label.same_grid(ct):
        label_grid = _grid(label)
    return _Scene(grid, label, label_grid, table, plane, PLANES[plane], window, window_text, _opacity(opacity), bool(outline))


# ------------------------------------------------------------------ where the slice is


_INDEX = re.compile(r"^\s*[iI]\s*(-?\d+)\s*$")


def _name_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def _slice_index(scene: _Scene, at) -> int:
    """The canonical slice index ``at`` names (see the module's docstring)."""
    n = scene.ct.shape[scene.axis]
    plane = scene.plane
    if at is None:
        extent = scene.labelled_extent()
        if extent is None:
            if scene.label is not None:
                warn(f"{scene.label.source or 'the label map'} has no labelled voxel inside the CT: "
                     f"showing the CT's middle {plane} slice", stacklevel=4)
            return (n - 1) // 2
        return (extent[0] + extent[1]) // 2
    if isinstance(at, bool):
        raise Viz3dError(f"a slice position is mm, 'i<index>' or a structure name, got {at!r}")
    if isinstance(at, numbers.Real):
        return _index_of_mm(scene, float(at), repr(at))
    if not isinstance(at, str) or not at.strip():
        raise Viz3dError(f"a slice position is mm, 'i<index>' or a structure name, got {at!r}")
    match = _INDEX.match(at)
    if match:
        index = int(match.group(1))
        file_axis, flipped = scene.ct.file_axis(scene.axis)
        if not 0 <= index < n:
            raise Viz3dError(f"slice index {at.strip()} is outside the CT: its {plane} slices are i0..i{n - 1} "
                             f"(array axis {file_axis})")
        return n - 1 - index if flipped else index
    try:
        mm = float(at)
    except ValueError:
        return _index_of_structure(scene, at.strip())
    return _index_of_mm(scene, mm, at.strip())


def _index_of_mm(scene: _Scene, mm: float, text: str) -> int:
    positions = scene.ct.positions(scene.axis)
    step = positions[1] - positions[0] if len(positions) > 1 else scene.ct.spacing[scene.axis]
    exact = (mm - positions[0]) / step if math.isfinite(mm) else math.nan
    n = len(positions)
    if not -0.5 <= exact <= n - 0.5:  # NaN too
        low, high = positions[0] - step / 2, positions[-1] + step / 2
        raise Viz3dError(f"position {text} mm is outside the CT: its {scene.plane} slices cover "
                         f"{_AXIS[scene.axis]} = {low:.1f}..{high:.1f} mm")
    return int(min(max(math.floor(exact + 0.5), 0), n - 1))


def _index_of_structure(scene: _Scene, name: str) -> int:
    table = scene.table
    if scene.label is None:
        raise Viz3dError(f"slice position {name!r} names a structure: give the label map too (--label)")
    key = _name_key(name)
    values = sorted(v for v, known in table.names.items() if v > 0 and _name_key(known) == key)
    if not values:  # a shorthand: "L1" for TotalSegmentator's vertebrae_L1 (as --labels and --slices take it)
        values = [v for short, v in short_names({_name_key(known): v for v, known in table.names.items() if v > 0}).items()
                  if short == key]
    if not values:
        match = re.fullmatch(r"label_(\d+)", key)  # the name viz3d gives values missing from the table
        values = [int(match.group(1))] if match else []
    if not values:
        names = [known for v, known in table.names.items() if v > 0]
        close = difflib.get_close_matches(name.lower(), [known.lower() for known in names], n=3, cutoff=0.6)
        named = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        hint = f"; did you mean {', '.join(close)}?" if close else f" (it names: {named})"
        raise Viz3dError(f"slice position {name!r} is not a number, 'i<index>' or a structure of the "
                         f"{table.name} label table{hint}")
    counts = scene.label_counts(lambda array: np.isin(array, values))
    if not counts.any():
        shown = ", ".join(map(str, values))
        raise Viz3dError(f"{table.name_of(values[0])} (label {shown}) is not in {scene.label.source or 'the label map'}"
                         f"{' inside the CT' if scene.label_grid is None else ''}")
    # through the structure's centre (its centroid along the normal), as viewers jump to a segment;
    # where the structure is missing there (a U shape), the nearest slice that shows it
    centre = float(np.average(np.arange(len(counts)), weights=counts))
    shown = np.nonzero(counts)[0]
    return int(shown[np.argmin(np.abs(shown - centre) - 1e-9 * counts[shown])])


def _mosaic_indices(scene: _Scene, n: int) -> list[int]:
    extent = scene.labelled_extent() or (0, scene.ct.shape[scene.axis] - 1)
    low, high = extent
    count = high - low + 1
    if n > count:
        where = "labelled extent" if scene.labelled_extent() else "CT"
        raise Viz3dError(f"a mosaic of {n} slices: the {where} holds only {count} {scene.plane} slice"
                         f"{'s' if count != 1 else ''}")
    return [low + int(math.floor((i + 0.5) * count / n)) for i in range(n)]


# ------------------------------------------------------------------ pixels


def _panel(scene: _Scene, index: int, box) -> tuple[np.ndarray, np.ndarray]:
    """The slice's RGB pixels in the radiological convention at its true aspect ratio, and its label pixels."""
    from scipy.ndimage import map_coordinates

    ct, labels = scene.slice_arrays(index)
    # to the picture's layout: rows from the top edge's direction down, columns from the left edge's
    # direction across (for each plane both in-plane axes run backwards: see the module's table)
    ct, labels = ct[::-1, ::-1].T, labels[::-1, ::-1].T
    u, v = _in_plane(scene.axis)
    rows, cols = ct.shape
    height_mm, width_mm = rows * scene.ct.spacing[v], cols * scene.ct.spacing[u]
    scale = min(box[0] / width_mm, box[1] / height_mm)  # pixels per mm
    width, height = max(1, int(round(width_mm * scale))), max(1, int(round(height_mm * scale)))
    # the voxel each pixel's centre lies in (labels), and its continuous index (the CT)
    row_at = (np.arange(height) + 0.5) * rows / height - 0.5
    col_at = (np.arange(width) + 0.5) * cols / width - 0.5
    ct = np.nan_to_num(ct, nan=-1e4)
    grey = map_coordinates(ct, np.meshgrid(row_at, col_at, indexing="ij"), order=1, mode="nearest")
    center, window_width = scene.window
    grey = np.clip((grey - (center - window_width / 2)) / window_width, 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    near_row = np.clip(np.floor(row_at + 0.5).astype(int), 0, rows - 1)
    near_col = np.clip(np.floor(col_at + 0.5).astype(int), 0, cols - 1)
    labels = labels[near_row[:, None], near_col[None, :]]
    present = np.unique(labels)
    present = present[present > 0]
    if present.size:
        lut_index = np.searchsorted(present, labels)  # valid where labels > 0
        colours = np.array([scene.table.color_of(int(value)) for value in present], float)
        on = labels > 0
        if scene.outline:
            on &= _edges(labels, thickness=1 if max(width, height) < 700 else 2)
            rgb[on] = colours[lut_index[on]]
        else:
            rgb[on] = (1 - scene.opacity) * rgb[on] + scene.opacity * colours[lut_index[on]]
    return np.rint(rgb * 255).astype(np.uint8), labels


def _edges(labels: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels of a structure next to (4-connected) a pixel of another value, grown to ``thickness``."""
    edge = np.zeros(labels.shape, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[0, :] = edge[-1, :] = True  # the picture's border closes an outline cut by it
    edge[:, 0] = edge[:, -1] = True
    for _ in range(thickness - 1):
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :] & (labels[1:, :] == labels[:-1, :])
        grown[:-1, :] |= edge[1:, :] & (labels[:-1, :] == labels[1:, :])
        grown[:, 1:] |= edge[:, :-1] & (labels[:, 1:] == labels[:, :-1])
        grown[:, :-1] |= edge[:, 1:] & (labels[:, :-1] == labels[:, 1:])
        edge = grown
    return edge


# ------------------------------------------------------------------ the annotated picture

_FONT = 9  # points at 100 dpi: about 12 px tall
_CHAR_PX = 6.6  # average width of a character at _FONT
_ROW_PX = 16
_SWATCH_PX = 11
_MARGIN = 22  # room for the orientation letters around a slice


def _slice_picture(ct, label, table, plane, at, window, opacity, outline, size, annotate):
    scene = _scene(ct, label, table, plane, window, opacity, outline)
    box = _box(size)
    index = _slice_index(scene, at)
    rgb, labels = _panel(scene, index, box)
    present = [int(v) for v in np.unique(labels) if v > 0]
    n = scene.ct.shape[scene.axis]
    file_axis, flipped = scene.ct.file_axis(scene.axis)
    file_index = n - 1 - index if flipped else index
    where = f"{scene.plane} {scene.where(index)} (slice i{file_index} of {n})"
    summary = f"{where}, window {scene.window_text}, {len(present)} structure{'s' if len(present) != 1 else ''}"
    if not annotate:
        return rgb, summary
    caption = f"{where}   window {scene.window_text}"
    return _compose([(rgb, None)], 1, scene, present, caption), summary


def _mosaic_picture(ct, label, table, plane, n, window, opacity, outline, size):
    scene = _scene(ct, label, table, plane, window, opacity, outline)
    n = _mosaic_count(n)
    box = _box(size)
    indices = _mosaic_indices(scene, n)
    panels, present = [], set()
    for index in indices:
        rgb, labels = _panel(scene, index, box)
        present.update(int(v) for v in np.unique(labels) if v > 0)
        panels.append((rgb, scene.where(index)))
    columns = max(1, int(math.ceil(math.sqrt(n))))
    first, last = scene.position(indices[0]), scene.position(indices[-1])
    caption = (f"{scene.plane}: {n} slices, {_AXIS[scene.axis]} = {first:.1f}..{last:.1f} mm"
               f"{' through the labelled extent' if scene.labelled_extent() else ''}   window {scene.window_text}")
    summary = f"{scene.plane} mosaic of {n} slices, {len(present)} structures, window {scene.window_text}"
    return _compose(panels, columns, scene, sorted(present), caption), summary


def _compose(panels, columns, scene: _Scene, present, caption) -> np.ndarray:
    """Panels on a black sheet with the orientation letters around each, a legend on the right and the caption below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    mosaic = len(panels) > 1 or panels[0][1] is not None
    font = _FONT - 1 if mosaic else _FONT
    height, width = panels[0][0].shape[:2]
    margin = _MARGIN - 6 if mosaic else _MARGIN
    label_row = _ROW_PX if mosaic else 0  # each mosaic panel's position under it
    gap = 12 if mosaic else 0  # between panels, so one's right letter does not touch the next one's left
    cell_w, cell_h = width + 2 * margin + gap, height + 2 * margin + label_row + gap
    rows = int(math.ceil(len(panels) / columns))
    grid_w, grid_h = columns * cell_w, rows * cell_h
    names = [f"{value} {scene.table.name_of(value)}" for value in present]
    caption_h = 2 * _ROW_PX
    room = max(grid_h, 12 * _ROW_PX)
    per_column = max(1, (room - 2 * _ROW_PX) // _ROW_PX)
    legend_columns = int(math.ceil(len(names) / per_column)) if names else 0
    column_w = int(_SWATCH_PX + 10 + _CHAR_PX * max((len(n) for n in names), default=0)) + 12
    legend_w = legend_columns * column_w + (12 if names else 0)
    fig_w, fig_h = grid_w + legend_w, room + caption_h
    fig = Figure(figsize=(fig_w / 100, fig_h / 100), dpi=100, facecolor=np.array(_BACKGROUND) / 255)
    FigureCanvasAgg(fig)

    def text(x, y, string, **kwargs):  # x, y in pixels from the top-left corner
        kwargs.setdefault("color", "white")
        kwargs.setdefault("fontsize", font)
        fig.text(x / fig_w, 1 - y / fig_h, string, **kwargs)

    left, right, top, bottom = EDGE_LETTERS[scene.plane]
    top_offset = (room - grid_h) // 2
    for number, (rgb, where) in enumerate(panels):
        x0 = (number % columns) * cell_w + margin + gap // 2
        y0 = top_offset + (number // columns) * cell_h + margin + gap // 2
        fig.figimage(rgb, xo=x0, yo=fig_h - y0 - height, origin="upper")
        letter = dict(color="#ffd24d", fontsize=font + 1, fontweight="bold", ha="center", va="center")
        text(x0 - margin / 2, y0 + height / 2, left, **letter)
        text(x0 + width + margin / 2, y0 + height / 2, right, **letter)
        text(x0 + width / 2, y0 - margin / 2, top, **letter)
        text(x0 + width / 2, y0 + height + margin / 2, bottom, **letter)
        if where is not None:
            text(x0 + width / 2, y0 + height + margin + label_row / 2, where, ha="center", va="center")
    if names:
        x_legend = grid_w + 6
        text(x_legend, _ROW_PX / 2 + 2, "on this slice" if not mosaic else "on these slices", va="center",
             color="#bbbbbb")
        for number, (value, name) in enumerate(zip(present, names)):
            column, row = divmod(number, per_column)
            x = x_legend + column * column_w
            y = (row + 1.5) * _ROW_PX
            fig.add_artist(Rectangle(((x) / fig_w, 1 - (y + _SWATCH_PX / 2) / fig_h), _SWATCH_PX / fig_w,
                                     _SWATCH_PX / fig_h, transform=fig.transFigure,
                                     facecolor=scene.table.color_of(value), edgecolor="white", linewidth=0.5))
            text(x + _SWATCH_PX + 6, y, name, va="center")
    text(8, room + caption_h / 2, caption, va="center", color="#dddddd")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
