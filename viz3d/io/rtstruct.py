"""DICOM RT Structure Sets (RTSTRUCT): each ROI's contours filled onto the CT's grid.

An RTSTRUCT holds polygons in patient coordinates (LPS mm), not voxels, so it is read against
the CT it was drawn on (the CT given with it; when that CT is a DICOM series, its
FrameOfReferenceUID must be the ROIs'). Each ROI keeps its ROINumber as label value, its
ROIName as name and its ROIDisplayColor as colour. A closed planar contour fills the voxels of
the CT slice it lies on whose centres it encloses; contours on one slice combine by parity, so
a contour inside another is a hole, as RT planning systems draw them. A CT slice with no
contour on it between two contours of the ROI (drawn between the CT's slices, or on every other
slice) is interpolated from them by shape (`fill_levels`). Contours that are open, single
points, not parallel to the CT's slices, or between slices that all have contours of their own
are skipped with one warning per ROI. Without a CT, the series the RTSTRUCT names is looked for
beside it (`viz3d.io.dicom_seg.find_referenced_ct`).
ROIs that overlap (a body outline and the organs in it) go to different layers
(`viz3d.io.segmentation.Segmentation`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import Viz3dError, warn
from .dicom_seg import RTSTRUCT_SOP_CLASS, check_frame_of_reference, find_referenced_ct, read_dataset, sop_class_of
from .segmentation import Segmentation, layered
from .labels import LabelTable
from .volume import Volume

SOURCE = "RTSTRUCT ROI names"
ON_CONTOUR = 0.01  # a pixel centre this close (in pixels) to a contour lies on it: inside
OFF_PLANE_VOXELS = 0.25  # a contour farther than this (in slices) from a CT slice's centre is off-plane
MAX_GAP_STEPS = 1.5  # levels farther apart than this times the ROI's median step enclose no slice (a gap)
_WHAT = "DICOM RTSTRUCT"


def is_rtstruct(path, head: bytes) -> bool:
    """Whether a file is a DICOM file whose SOP class (in its file meta) is RT Structure Set Storage.

    >>> is_rtstruct("rt.dcm", b"")
    False
    """
    return sop_class_of(path, head) == RTSTRUCT_SOP_CLASS


def rtstruct_table(path) -> LabelTable:
    """The names and display colours of an RTSTRUCT's ROIs, by ROINumber."""
    dataset = read_dataset(path, RTSTRUCT_SOP_CLASS, _WHAT, pixels=False)
    names = {int(item.ROINumber): str(item.get("ROIName", "") or f"roi_{int(item.ROINumber)}")
             for item in dataset.get("StructureSetROISequence", [])}
    if not names:
        raise Viz3dError(f"{path}: the RTSTRUCT describes no ROI (empty StructureSetROISequence)")
    colors = {}
    for item in dataset.get("ROIContourSequence", []):
        number = int(item.get("ReferencedROINumber", -1))
        color = item.get("ROIDisplayColor")
        if number in names and color is not None and len(color) == 3:
            colors[number] = tuple(min(max(float(c) / 255.0, 0.0), 1.0) for c in color)
    return LabelTable(Path(path).name, names, colors, SOURCE)


def read_rtstruct(path, ct: Volume | None) -> Segmentation:
    """An RTSTRUCT's ROIs filled onto ``ct``'s grid, as a `Segmentation`.

    Raises
    ------
    Viz3dError
        When the file is not an RTSTRUCT, no CT is given, or its ROIs' frame of reference is
        not the CT's.
    """
    path = Path(path)
    dataset = read_dataset(path, RTSTRUCT_SOP_CLASS, _WHAT, pixels=False)
    table = rtstruct_table(path)
    if ct is None:  # contours, not voxels: they need the grid of the CT series they were drawn on
        ct = find_referenced_ct(path, dataset, "RTSTRUCT")
    frames = {str(item.get("ReferencedFrameOfReferenceUID", "")) for item in dataset.get("StructureSetROISequence", [])}
    frames |= {str(item.FrameOfReferenceUID) for item in dataset.get("ReferencedFrameOfReferenceSequence", [])
               if "FrameOfReferenceUID" in item}
    frames.discard("")
    if frames and not any(_matches(ct, uid) for uid in frames):
        check_frame_of_reference(path, sorted(frames)[0], ct, "RTSTRUCT")
    to_index = np.linalg.inv(ct.affine)
    contours = {int(item.get("ReferencedROINumber", -1)): item.get("ContourSequence", [])
                for item in dataset.get("ROIContourSequence", [])}

    def masks():
        for number in sorted(table.names):
            yield number, _roi_mask(path, table.name_of(number), contours.get(number, []), to_index, ct)

    layers = layered(masks(), ct.shape, np.uint8 if max(table.names) < 256 else np.uint16)
    meta = {"path": str(path), "format": "DICOM RTSTRUCT", "filled_on": ct.source}
    return Segmentation(tuple(Volume(layer, ct.affine, str(path), dict(meta)) for layer in layers), table)


def _matches(ct: Volume, uid: str) -> bool:
    theirs = ct.meta.get("FrameOfReferenceUID") or ""
    return not theirs or theirs == uid


def _roi_mask(path: Path, name: str, contours, to_index: np.ndarray, ct: Volume) -> np.ndarray:
    """The voxels one ROI's closed planar contours enclose: `contour_levels` filled by `fill_levels`."""
    levels, skipped = contour_levels(contours, to_index, ct.shape)
    mask, unused = fill_levels(levels, ct.shape, ct.voxel_sizes)
    if unused:
        skipped["between the CT's slices with no slice of their own to fill"] = unused
    if skipped:
        said = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        warn(f"{path}: ROI '{name}': contours skipped ({said}): only closed planar contours parallel to the CT's "
             "slices are filled", stacklevel=5)
    return mask


def contour_levels(contours, to_index: np.ndarray, shape) -> tuple[dict, dict[str, int]]:
    """An ROI's closed planar contours as 2-D masks by level: ``{(axis, level): mask}``, where
    ``axis`` is the CT's axis the contour is constant along and ``level`` its index there
    (to 0.01 of a slice; contours at one level combine by parity), and the skipped ones counted
    by reason (open, points, not parallel to the CT's slices, outside the CT).

    >>> square = [0, 0, 2.0, 3, 0, 2.0, 3, 3, 2.0, 0, 3, 2.0]
    >>> levels, skipped = contour_levels([{"ContourData": square}], np.diag([-1.0, -1.0, 1.0, 1.0]), (5, 5, 5))
    >>> list(levels), int(levels[2, 2.0].sum()), skipped
    ([(2, 2.0)], 16, {})
    """
    levels: dict = {}
    skipped: dict[str, int] = {}
    for contour in contours:
        kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
        points = np.asarray(contour.get("ContourData", []), dtype=float)
        if kind != "CLOSED_PLANAR" or points.size < 9 or points.size % 3:
            reason = "open" if kind.startswith("OPEN") else "single points" if kind == "POINT" else \
                f"{kind.lower()} or with fewer than 3 points"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        lps = points.reshape(-1, 3)
        index = (np.c_[lps * [-1.0, -1.0, 1.0], np.ones(len(lps))] @ to_index.T)[:, :3]
        axis = int(np.argmin(np.ptp(index, axis=0)))  # the slice axis: the contour's index is constant along it
        level = round(float(np.mean(index[:, axis])), 2)
        if np.ptp(index[:, axis]) > 2 * OFF_PLANE_VOXELS:
            skipped["not parallel to the CT's slices"] = skipped.get("not parallel to the CT's slices", 0) + 1
            continue
        if not -0.5 <= level < shape[axis] - 0.5:
            skipped["outside the CT"] = skipped.get("outside the CT", 0) + 1
            continue
        in_plane = [a for a in range(3) if a != axis]
        mask = polygon_mask(index[:, in_plane], tuple(shape[a] for a in in_plane))
        key = (axis, level)
        levels[key] = levels[key] ^ mask if key in levels else mask
    return levels, skipped


def fill_levels(levels: dict, shape, voxel_sizes=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, int]:
    """An ROI's voxels from its contour levels (`contour_levels`), and how many levels between
    the CT's slices filled nothing (their neighbours' slices all have contours of their own).

    A level within `OFF_PLANE_VOXELS` of a CT slice fills that slice (levels on one slice by
    parity). A CT slice with no level on it, between two successive levels no farther apart
    than `MAX_GAP_STEPS` times the ROI's usual step between levels, is interpolated from the
    two by shape: their signed distance maps (millimetres, in-plane) weighted by how near the
    slice is to each, inside where the sum is negative. So contours drawn between the CT's
    slices, or on every other slice, fill the slices between them, while a slice an ROI
    with contours on each slice skips (two pieces along the axis) stays empty.

    >>> disk = lambda r: np.hypot(*np.mgrid[-6:7, -6:7]) <= r
    >>> levels = {(2, 0.5): disk(2), (2, 1.5): disk(4), (2, 2.5): disk(6)}  # halfway between slices
    >>> mask, unused = fill_levels(levels, (13, 13, 4))
    >>> [int(mask[..., k].sum()) for k in range(4)]  # disks of radius 2, 4, 6: 13, 49, 113 pixels
    [0, 25, 73, 0]
    >>> bool((disk(2) <= mask[..., 1]).all() and (mask[..., 1] <= disk(4)).all())  # between its neighbours
    True
    """
    from collections import defaultdict

    mask, unused = np.zeros(shape, bool), 0
    by_axis: dict[int, dict[float, np.ndarray]] = defaultdict(dict)
    for (axis, level), plane in levels.items():
        by_axis[axis][level] = plane
    for axis, planes in by_axis.items():
        moved = np.moveaxis(mask, axis, 0)  # a view: slices along the axis first
        on, between = set(), set()
        for level, plane in planes.items():
            nearest = int(round(level))
            if abs(level - nearest) <= OFF_PLANE_VOXELS and 0 <= nearest < shape[axis]:
                moved[nearest] ^= plane
                on.add(nearest)
            else:
                between.add(level)
        sizes = [float(voxel_sizes[a]) for a in range(3) if a != axis]
        unused += len(between - _interpolate_between(moved, planes, on, sizes))
    return mask, unused


def _interpolate_between(stack: np.ndarray, planes: dict, on: set, sizes) -> set:
    """Fill the slices of ``stack`` (slices first) with no level on them between two near levels;
    the levels that filled some."""
    ordered = sorted(planes)
    if len(ordered) < 2:
        return set()
    steps = np.diff(ordered)
    widest = MAX_GAP_STEPS * float(np.median(steps)) + 1e-6
    distances = {}
    for low, high in zip(ordered[:-1], ordered[1:]):
        if high - low > widest:
            continue
        for index in range(int(np.ceil(low)), int(np.floor(high)) + 1):
            if index in on or not 0 <= index < len(stack) or not low < index < high:
                continue
            for level in (low, high):
                if level not in distances:
                    distances[level] = signed_distance(planes[level], sizes)
            weight = (index - low) / (high - low)
            stack[index] |= (1 - weight) * distances[low] + weight * distances[high] < 0
    return set(distances)


def signed_distance(mask: np.ndarray, sizes=(1.0, 1.0)) -> np.ndarray:
    """The signed distance (mm) of each pixel centre to a 2-D mask's edge: negative inside,
    positive outside, halfway between the pixels either side of the edge (an empty mask is far
    from everything).

    >>> signed_distance(np.array([[0, 1, 1, 0]], bool)).tolist()
    [[0.5, -0.5, -0.5, 0.5]]
    """
    from scipy import ndimage

    if not mask.any():
        return np.full(mask.shape, 1e9)
    padded = np.pad(mask, 1)  # the border is outside: a mask filling the plane has an edge
    outside = ndimage.distance_transform_edt(~padded, sampling=sizes)
    inside = ndimage.distance_transform_edt(padded, sampling=sizes)
    half = 0.5 * float(np.mean(sizes))  # from a pixel centre to the edge beside it
    signed = np.where(padded, half - inside, outside - half)
    return signed[1:-1, 1:-1]


def polygon_mask(polygon: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a ``shape`` grid whose centres (integer coordinates) lie inside ``polygon``
    or on it (``(n, 2)`` vertices in the grid's index coordinates; even-odd rule).

    A contour traced through the centres of a mask's boundary pixels (as rt-utils and OpenCV
    trace them) gives back the whole mask: centres on the contour are inside, on every side.

    >>> polygon_mask(np.array([[0.5, 0.5], [3.5, 0.5], [3.5, 2.5], [0.5, 2.5]]), (5, 4)).astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    >>> polygon_mask(np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 2.0], [1.0, 2.0]]), (5, 4)).astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    out = np.zeros(shape, bool)
    low = np.maximum(np.ceil(polygon.min(axis=0) - ON_CONTOUR).astype(int), 0)
    high = np.minimum(np.floor(polygon.max(axis=0) + ON_CONTOUR).astype(int), np.array(shape) - 1)
    if np.any(high < low):
        return out
    u, v = np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1), indexing="ij")
    inside, on = np.zeros(u.shape, bool), np.zeros(u.shape, bool)
    for (u0, v0), (u1, v1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        if v0 != v1:  # an edge parallel to the ray never crosses it
            crosses = (v0 > v) != (v1 > v)
            inside ^= crosses & (u < u0 + (v - v0) * (u1 - u0) / (v1 - v0))
        du, dv = u1 - u0, v1 - v0
        t = np.clip(((u - u0) * du + (v - v0) * dv) / max(du * du + dv * dv, 1e-12), 0.0, 1.0)
        on |= (u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2 <= ON_CONTOUR ** 2
    out[low[0]:high[0] + 1, low[1]:high[1] + 1] = inside | on
    return out
