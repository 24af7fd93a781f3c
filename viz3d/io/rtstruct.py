"""DICOM RT Structure Sets (RTSTRUCT): each ROI's contours filled onto the CT's grid.

An RTSTRUCT holds polygons in patient coordinates (LPS mm), not voxels, so it is read against
the CT it was drawn on (the CT given with it; when that CT is a DICOM series, its
FrameOfReferenceUID must be the ROIs'). Each ROI keeps its ROINumber as label value, its
ROIName as name and its ROIDisplayColor as colour. A closed planar contour fills the voxels of
the CT slice it lies on whose centres it encloses; contours on one slice combine by parity, so
a contour inside another is a hole, as RT planning systems draw them. Contours that are open,
single points, or do not lie on one of the CT's slices are skipped with one warning per ROI.
ROIs that overlap (a body outline and the organs in it) go to different layers
(`viz3d.io.segmentation.Segmentation`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import Viz3dError, warn
from .dicom_seg import RTSTRUCT_SOP_CLASS, check_frame_of_reference, read_dataset, sop_class_of
from .segmentation import Segmentation, layered
from .labels import LabelTable
from .volume import Volume

SOURCE = "RTSTRUCT ROI names"
ON_CONTOUR = 0.01  # a pixel centre this close (in pixels) to a contour lies on it: inside
OFF_PLANE_VOXELS = 0.25  # a contour farther than this (in slices) from a CT slice's centre is off-plane
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
    if ct is None:
        raise Viz3dError(f"{path}: an RTSTRUCT holds contours, not voxels: give the CT it was drawn on "
                         "(the CT argument) to fill them onto its grid")
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
            yield number, _roi_mask(path, table.name_of(number), contours.get(number, []), to_index, ct.shape)

    layers = layered(masks(), ct.shape, np.uint8 if max(table.names) < 256 else np.uint16)
    meta = {"path": str(path), "format": "DICOM RTSTRUCT", "filled_on": ct.source}
    return Segmentation(tuple(Volume(layer, ct.affine, str(path), dict(meta)) for layer in layers), table)


def _matches(ct: Volume, uid: str) -> bool:
    theirs = ct.meta.get("FrameOfReferenceUID") or ""
    return not theirs or theirs == uid


def _roi_mask(path: Path, name: str, contours, to_index: np.ndarray, shape) -> np.ndarray:
    """The voxels one ROI's closed planar contours enclose (by parity on each slice)."""
    mask = np.zeros(shape, bool)
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
        level = float(np.mean(index[:, axis]))
        slice_index = int(round(level))
        if np.ptp(index[:, axis]) > 2 * OFF_PLANE_VOXELS or abs(level - slice_index) > OFF_PLANE_VOXELS:
            skipped["off the CT's slices"] = skipped.get("off the CT's slices", 0) + 1
            continue
        if not 0 <= slice_index < shape[axis]:
            skipped["outside the CT"] = skipped.get("outside the CT", 0) + 1
            continue
        in_plane = [a for a in range(3) if a != axis]
        plane = [slice(None)] * 3
        plane[axis] = slice_index
        view = mask[tuple(plane)]
        view ^= polygon_mask(index[:, in_plane], view.shape)
    if skipped:
        said = ", ".join(f"{count} {reason}" for reason, count in skipped.items())
        warn(f"{path}: ROI '{name}': contours skipped ({said}): only closed planar contours on the CT's slices "
             "are filled", stacklevel=5)
    return mask


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
