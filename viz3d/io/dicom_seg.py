"""DICOM Segmentation objects (SEG; binary and fractional), read with highdicom.

Each segment keeps its SegmentNumber as label value, its SegmentLabel as name and its
RecommendedDisplayCIELabValue, converted to RGB, as colour. The frames are placed by their own
per-frame positions and shared orientation and spacing (highdicom's ``get_volume``), in the
frame of reference of the CT they were drawn on; when that CT is given it must share the
SEG's FrameOfReferenceUID. A fractional segment holds the voxels of value 0.5 or more.
Segments that overlap go to different layers (`viz3d.io.segmentation.Segmentation`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import Viz3dError, check_regular_file
from .segmentation import Segmentation, layered
from .labels import LabelTable
from .volume import Volume, check_grid

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SOURCE = "DICOM SEG segment labels"
FRACTIONAL_INSIDE = 0.5  # a fractional segment's voxels at or above this (of its maximum) are inside


def is_dicom_seg(path, head: bytes) -> bool:
    """Whether a file is a DICOM file whose SOP class (in its file meta) is Segmentation Storage.

    >>> is_dicom_seg("seg.nrrd", b"NRRD0004")
    False
    """
    return sop_class_of(path, head) == SEG_SOP_CLASS


def sop_class_of(path, head: bytes) -> str:
    """The MediaStorageSOPClassUID of a DICOM file's meta header ("" for anything else)."""
    if head[128:132] != b"DICM":
        return ""
    import pydicom

    try:
        return str(pydicom.filereader.read_file_meta_info(str(path)).get("MediaStorageSOPClassUID", ""))
    except Exception:  # a broken meta header: the reader of whatever claims it says what is wrong
        return ""


def read_dataset(path, sop_class: str, what: str, pixels: bool = True):
    """A DICOM file read by pydicom, refused in one line unless its SOP class is ``sop_class``."""
    import pydicom

    path = Path(path)
    check_regular_file(path, f"a {what} file")
    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except Exception as exc:  # InvalidDicomError, truncated files, bad values
        raise Viz3dError(f"{path}: not a readable {what} file ({_reason(exc)})") from None
    found = str(dataset.get("SOPClassUID", ""))
    if found != sop_class:
        kind = dataset.get("Modality", "") or "unknown modality"
        raise Viz3dError(f"{path}: not a {what} (SOP class {found or 'missing'}, {kind})")
    return dataset


def refuse_dicom_image(path) -> None:
    """Refuse a DICOM file given as a label that is no segmentation (a CT slice, a report)."""
    import pydicom

    path = Path(path)
    try:
        dataset = pydicom.dcmread(str(path), stop_before_pixels=True)
        kind = f"a DICOM {dataset.get('Modality', '') or 'file'}"
    except Exception:
        kind = "not a readable DICOM file"
    raise Viz3dError(f"{path}: {kind}, not a segmentation: a DICOM label must be a SEG or an RTSTRUCT "
                     "(a CT series is given as the CT)")


def check_frame_of_reference(path, uid: str, ct: Volume | None, what: str) -> None:
    """Refuse a segmentation drawn in another frame of reference than the given DICOM CT's.

    A CT from a file with no frame of reference (NIfTI, NRRD) cannot be checked: the
    segmentation is placed by its own positions, which are in patient coordinates too.

    >>> ct = Volume(np.zeros((1, 1, 1)), np.eye(4), "ct/", {"FrameOfReferenceUID": "1.2.3"})
    >>> check_frame_of_reference("seg.dcm", "1.2.3", ct, "DICOM SEG")
    >>> check_frame_of_reference("seg.dcm", "1.2.4", ct, "DICOM SEG")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: seg.dcm: the DICOM SEG's frame of reference (FrameOfReferenceUID 1.2.4) is not the CT's ...
    """
    theirs = (ct.meta.get("FrameOfReferenceUID") or "") if ct is not None else ""
    if theirs and uid and uid != theirs:
        raise Viz3dError(f"{path}: the {what}'s frame of reference (FrameOfReferenceUID {uid}) is not the CT's "
                         f"({ct.source}: {theirs}): it was drawn on another scan")


SIBLINGS_SHOWN = 3  # sibling folders named in the message when the referenced CT is not found


def referenced_series_uids(dataset) -> list[str]:
    """The SeriesInstanceUIDs of the image series a SEG or RTSTRUCT says it was drawn on.

    An RTSTRUCT names them in ReferencedFrameOfReferenceSequence > RTReferencedStudySequence >
    RTReferencedSeriesSequence, a SEG in ReferencedSeriesSequence.

    >>> import pydicom
    >>> series = pydicom.Dataset(); series.SeriesInstanceUID = "1.2.3"
    >>> seg = pydicom.Dataset(); seg.ReferencedSeriesSequence = [series]
    >>> referenced_series_uids(seg)
    ['1.2.3']
    """
    items = list(dataset.get("ReferencedSeriesSequence", []))
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            items += list(study.get("RTReferencedSeriesSequence", []))
    uids = [str(item.get("SeriesInstanceUID", "") or "") for item in items]
    return list(dict.fromkeys(uid for uid in uids if uid))


def search_folders(path) -> list[Path]:
    """Where the CT of a SEG or RTSTRUCT file is looked for: its own folder (with what is under
    it), then that folder's sibling folders, in name order (hidden ones left out).

    >>> import tempfile
    >>> study = Path(tempfile.mkdtemp())
    >>> for name in ("rt", "ct", ".cache"):
    ...     (study / name).mkdir()
    >>> [folder.name for folder in search_folders(study / "rt" / "rs.dcm")]
    ['rt', 'ct']
    """
    own = Path(path).resolve().parent
    parent = own.parent
    if parent == own:
        return [own]
    try:
        siblings = sorted(entry for entry in parent.iterdir()
                          if entry.is_dir() and not entry.name.startswith(".") and entry != own)
    except OSError:
        siblings = []
    return [own, *siblings]


def find_referenced_ct(path, dataset, what: str) -> Volume:
    """The CT series a SEG or RTSTRUCT was drawn on, found by its SeriesInstanceUID among the DICOM
    series in the file's folder and its sibling folders (`search_folders`), loaded.

    Raises
    ------
    Viz3dError
        In one line: when the file names no series, or that series is in none of those folders
        (the UID and the folders are named).
    """
    import warnings

    from .dicom import list_series, load_dicom

    path = Path(path)
    uids = referenced_series_uids(dataset)
    if not uids:
        raise Viz3dError(f"{path}: the {what} names no CT series it was drawn on (no referenced SeriesInstanceUID): "
                         "give that CT (the CT argument)")
    folders = search_folders(path)
    for folder in folders:
        try:
            with warnings.catch_warnings():  # unreadable entries of unrelated folders: not the user's concern
                warnings.simplefilter("ignore")
                infos = list_series(folder)
        except Viz3dError:  # more files than one study holds, or gone meanwhile: not there
            continue
        found = next((info for info in infos if info.uid in uids), None)
        if found is not None:
            return load_dicom(_common_folder(found.files), series=f"uid:{found.uid}")
    siblings = [folder.name for folder in folders[1:]]
    shown = ", ".join(siblings[:SIBLINGS_SHOWN]) + (f" and {len(siblings) - SIBLINGS_SHOWN} more"
                                                    if len(siblings) > SIBLINGS_SHOWN else "")
    where = f"{folders[0]} nor in its sibling folders ({shown})" if siblings else f"{folders[0]} (it has no sibling folders)"
    raise Viz3dError(f"{path}: the {what} was drawn on CT series {' or '.join(uids)} (SeriesInstanceUID), which is "
                     f"not in {where}: give that CT (the CT argument)")


def _common_folder(files) -> Path:
    """The deepest folder holding every one of ``files``.

    >>> _common_folder([Path("/a/ct/1.dcm"), Path("/a/ct/x/2.dcm")]).as_posix()
    '/a/ct'
    """
    import os

    return Path(os.path.commonpath([str(Path(f).parent) for f in files]))


def dicom_seg_table(path) -> LabelTable:
    """The names and colours of a SEG's segments (its header only), by SegmentNumber."""
    dataset = read_dataset(path, SEG_SOP_CLASS, "DICOM SEG", pixels=False)
    names, colors = {}, {}
    for item in dataset.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        names[number] = str(item.get("SegmentLabel", "") or f"segment_{number}")
        if "RecommendedDisplayCIELabValue" in item:
            colors[number] = lab_to_rgb(item.RecommendedDisplayCIELabValue)
    if not names:
        raise Viz3dError(f"{path}: the DICOM SEG describes no segment (empty SegmentSequence)")
    return LabelTable(Path(path).name, names, colors, SOURCE)


def lab_to_rgb(value) -> tuple[float, float, float]:
    """DICOM's scaled CIELab triple (0..65535 each) as sRGB in 0..1 (highdicom's conversion).

    >>> lab_to_rgb((65535, 32896, 32896))  # L* 100, a* b* 0: white
    (1.0, 1.0, 1.0)
    """
    import highdicom as hd

    rgb = hd.color.CIELabColor.from_dicom_value(tuple(int(v) for v in value)).to_rgb()
    return tuple(round(float(c) / 255.0, 6) for c in rgb)


def read_dicom_seg(path, ct: Volume | None = None) -> Segmentation:
    """A DICOM SEG as a `Segmentation` placed in RAS mm by its frames' positions.

    Raises
    ------
    Viz3dError
        When the file is not a readable SEG, its frame of reference is not the given CT's, or
        its frames do not lie on one regular 3-D grid.
    """
    import highdicom as hd

    path = Path(path)
    dataset = read_dataset(path, SEG_SOP_CLASS, "DICOM SEG")
    table = dicom_seg_table(path)
    check_frame_of_reference(path, str(dataset.get("FrameOfReferenceUID", "")), ct, "DICOM SEG")
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except Exception as exc:
        raise Viz3dError(f"{path}: not a readable DICOM SEG ({_reason(exc)})") from None
    fractional = str(dataset.get("SegmentationType", "")) == "FRACTIONAL"
    numbers = sorted(table.names)
    try:
        first = _oriented(seg.get_volume(segment_numbers=numbers[:1], combine_segments=False, rescale_fractional=True))
    except Exception as exc:
        raise Viz3dError(f"{path}: the SEG's frames do not form one regular 3-D grid ({_reason(exc)})") from None
    affine = LPS_TO_RAS @ np.asarray(first.affine, dtype=float)
    check_grid(path, affine, "the per-frame ImagePositionPatient, ImageOrientationPatient and PixelSpacing")
    shape = first.spatial_shape

    def masks():  # one segment at a time: a SEG of 100 segments on a CT grid is 100 CT-sized arrays
        for number in numbers:
            volume = first if number == numbers[0] else _oriented(seg.get_volume(
                segment_numbers=[number], combine_segments=False, rescale_fractional=True))
            array = np.asarray(volume.array).reshape(shape)
            yield number, (array >= FRACTIONAL_INSIDE) if fractional else (array != 0)

    layers = layered(masks(), shape, np.uint8 if max(numbers) < 256 else np.uint16)
    layers, affine = on_ct_grid(layers, affine, ct)
    meta = {"path": str(path), "format": "DICOM SEG", "FrameOfReferenceUID": str(dataset.get("FrameOfReferenceUID", "")),
            "SegmentationType": str(dataset.get("SegmentationType", ""))}
    return Segmentation(tuple(Volume(layer, affine, str(path), dict(meta)) for layer in layers), table)


def on_ct_grid(layers: list[np.ndarray], affine: np.ndarray, ct: Volume | None, atol: float = 1e-3):
    """``layers`` padded onto the CT's grid when they lie on it (a SEG holds only the frames its
    segments touch: a few slices of the CT), else as they are, with their own affine.

    >>> ct = Volume(np.zeros((4, 4, 6)), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> part = np.diag([2.0, 2.0, 3.0, 1.0]); part[2, 3] = 6.0  # from the CT's third slice
    >>> layers, affine = on_ct_grid([np.ones((4, 4, 2), np.uint8)], part, ct)
    >>> layers[0].shape, layers[0][0, 0].tolist(), bool(np.allclose(affine, ct.affine))
    ((4, 4, 6), [0, 0, 1, 1, 0, 0], True)
    """
    if ct is None or not np.allclose(affine[:3, :3], ct.affine[:3, :3], atol=atol):
        return layers, affine
    start = np.linalg.solve(ct.affine[:3, :3], affine[:3, 3] - ct.affine[:3, 3])
    offset = np.rint(start).astype(int)
    shape = layers[0].shape
    if not np.allclose(start, offset, atol=atol) or np.any(offset < 0) or np.any(offset + shape > np.array(ct.shape)):
        return layers, affine
    region = tuple(slice(o, o + n) for o, n in zip(offset, shape, strict=True))
    padded = []
    for layer in layers:
        whole = np.zeros(ct.shape, layer.dtype)
        whole[region] = layer
        padded.append(whole)
    return padded, ct.affine.copy()


def _oriented(volume):
    """highdicom's volume (frames, rows, columns) with its axes turned towards L, P and S, as
    viz3d's DICOM CT is stored (columns, rows, slices upwards): the same grid, the same surfaces."""
    try:
        return volume.to_patient_orientation("LPS")
    except Exception:  # not in patient coordinates: kept as it is (placed by its affine all the same)
        return volume


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
