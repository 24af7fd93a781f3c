"""DICOM series input: a clinical folder (or any one file of it) becomes one `Volume` in RAS.

The folder is searched recursively. Files that are not DICOM (DICOMDIR, text, junk, empty
files) and DICOM files that are not image slices (no pixel data, no ImagePositionPatient /
ImageOrientationPatient, multi-frame objects) are skipped without fuss. Only regular files
are opened (a FIFO or device in the folder is skipped, never read); symlinked folders and
folders on another file system (``/proc`` under ``/``) are not entered; an entry that cannot
be read (permission denied) is skipped with a `Viz3dWarning` naming it. A folder holding more
than `MAX_SCAN_FILES` candidate files is refused (it is not one study).

Grouping into series
    By SeriesInstanceUID, and within one UID by the geometry every slice of a volume must
    share (orientation, rows x columns, pixel spacing). Where the UID is empty (anonymised
    data) the group key is StudyInstanceUID, SeriesNumber and that same geometry.
    `list_series` lists them, most slices first; ``index`` 0 is the default.

Choosing a series (``series=``), in this order of precedence
    1. a Python ``int``: the index in `list_series`;
    2. a string equal to a SeriesInstanceUID (the largest group with that UID);
    3. ``"index:N"``, ``"number:N"`` (SeriesNumber) or ``"uid:X"``;
    4. a bare integer string ``"N"``: the index N (never a SeriesNumber: write ``number:N``).
    Anything else is a `Viz3dError` listing the series that exist. Without ``series=`` a
    file given as ``path`` picks that file's series (a named DICOM file that is not an image
    slice is refused, DICOMDIR excepted: it stands for its folder); a folder gets the series
    with the most slices, and a `Viz3dWarning` says which one was loaded and which were skipped.

Geometry
    Slices are ordered by ImagePositionPatient projected on the slice normal
    (row cosine x column cosine), never by InstanceNumber or file name; the slice spacing
    comes from those positions, not from SliceThickness. The array is indexed
    ``(column, row, slice)`` like dcm2niix/nibabel; the LPS affine (DICOM's patient frame) is
    turned into RAS with ``diag(-1, -1, 1, 1)``.

Irregular stacks (never silently wrong geometry)
    * duplicate positions: identical pixel data -> one kept (warning); different pixel
      data -> `Viz3dError` (several acquisitions, echoes or phases in one series);
    * missing slices (a gap close to a whole multiple, 2 or more, of the median spacing) and
      otherwise non-uniform spacing -> a warning saying which, and linear resampling along the
      stack onto a regular grid at the median spacing;
    * gantry tilt (in-plane drift of the slice origins over the stack of more than half a
      pixel) -> a warning and resampling onto the orthogonal grid of the image planes,
      centred on the stack; voxels with no data get the series' minimum value;
    * slice origins that do not lie on one line -> `Viz3dError`;
    * a broken header (orientation cosines that are not unit vectors, voxel sizes outside
      0.001..1000 mm, positions beyond 100 m) -> `Viz3dError` naming the file or sizes;
    * Siemens mosaic slices (ImageType MOSAIC, or NumberOfImagesInMosaic (0019,100A)): several
      images tiled in one -> `Viz3dError` ("Siemens mosaic is not supported").
    Resampled data is float32.

Values
    HU = stored value x RescaleSlope + RescaleIntercept, per slice. int16 when that is exact
    (all slopes and intercepts integral and every value fits int16), otherwise float32. A slope
    or intercept that is not a finite number, or values beyond +-1e9, are refused
    (the file and tag are named). A series whose Modality is not CT is loaded with a
    `Viz3dWarning` that its values are not Hounsfield units, and ``meta["hounsfield"]`` False.
    Headers are read first (``stop_before_pixels``); pixels are then decoded once per file
    into one preallocated array.
"""
from __future__ import annotations

import os
import stat
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Viz3dError, check_regular_file, warn
from .. import runtime
from ..parallel import usable_cores
from .volume import MAX_ORIGIN_MM, MAX_SCALED_VALUE, Volume, check_grid

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
DUPLICATE_TOLERANCE_MM = 0.01  # slice positions closer than this along the normal are "the same"
GAP_FACTOR = 1.5  # a step larger than this times the median spacing means missing slices
DRIFT_FRACTION = 0.5  # in-plane drift (tilt) or scatter of slice origins tolerated, in pixels
POOL_MIN_SLICES = 32  # fewer compressed slices decode faster than a pool starts and feeds
SLICE_TIMEOUT_S = 10.0  # a slice decodes in well under a second: longer means a stuck worker
STOP_GRACE_S = 2.0  # a worker still busy this long after the pool is stopped is killed
MAX_SCAN_FILES = 100_000  # candidate files under one folder: more is a disk, not a study
MIN_DICOM_BYTES = 132  # preamble (128) + 'DICM': anything shorter is not a DICOM file
MOSAIC_TAG = (0x0019, 0x100A)  # Siemens NumberOfImagesInMosaic
_PIXEL_TAGS = {
    b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00",  # (7FE0,0010/0008/0009) little endian
    b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09",  # big endian (retired)
}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")  # uncompressed pixel data


@dataclass(frozen=True)
class SeriesInfo:
    """One loadable series of a DICOM folder, as `list_series` reports it.

    ``files`` are ordered along the slice normal; ``n_slices`` counts them (duplicates
    included). ``number`` is the SeriesNumber (None when missing); ``uid`` may be ``''``
    in anonymised data.
    """

    index: int
    uid: str
    number: int | None
    description: str
    n_slices: int
    rows: int
    columns: int
    modality: str
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    files: tuple[Path, ...] = field(repr=False)

    def describe(self) -> str:
        """One-line summary such as ``#0 number 2 'CT Body' CT 120 slices 512x512 uid 1.2.3``."""
        number = "-" if self.number is None else self.number
        return (
            f"#{self.index} number {number} {self.description!r} {self.modality or '?'} "
            f"{self.n_slices} slice{'s' if self.n_slices != 1 else ''} {self.columns}x{self.rows} "
            f"uid {self.uid or '(empty)'}"
        )

    def as_dict(self) -> dict:
        """The summary without the file list (what ``Volume.meta['series_list']`` holds)."""
        return {
            "index": self.index, "uid": self.uid, "number": self.number, "description": self.description,
            "modality": self.modality, "n_slices": self.n_slices, "rows": self.rows, "columns": self.columns,
        }


@dataclass
class _Header:
    """What the loader needs from one slice's header."""

    path: Path
    tags: dict
    rows: int
    columns: int
    orientation: np.ndarray  # (6,) row cosine, column cosine (LPS)
    position: np.ndarray  # (3,) ImagePositionPatient (LPS mm)
    spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns)
    slope: float
    intercept: float
    transfer_syntax: str
    samples: int
    frames: int
    bits: int = 16  # BitsAllocated
    mosaic: bool = False  # Siemens mosaic: several images tiled in one
    size: int = 0  # bytes in the file


def is_dicom_path(path) -> bool:
    """True for a folder, a ``.dcm`` file or a file with the DICOM preamble ('DICM' at byte 128).

    >>> is_dicom_path("scan.nii.gz"), is_dicom_path("slice.dcm")
    (False, True)
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISDIR(mode):
        return True
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return False
    if name.endswith(".dcm") or name == "dicomdir":
        return True
    if not stat.S_ISREG(mode):  # missing, a FIFO or a device: never opened here (it may never answer)
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def list_series(path) -> list[SeriesInfo]:
    """List the image series under a folder (or under the folder of a file), most slices first.

    Parameters
    ----------
    path : str or path-like
        A folder (searched recursively), or a DICOM file: its folder is listed.

    Returns
    -------
    list of SeriesInfo
        One summary per image series (index, SeriesInstanceUID, number, description,
        modality, slices, size, orientation, pixel spacing, files), the one with the most
        slices first: the index ``load_ct(path, series=index)`` takes. Empty when the folder
        holds no image series.

    Raises
    ------
    Viz3dError
        When ``path`` does not exist or cannot be read, or names a file that is not DICOM
        or is a DICOM file other than an image slice (DICOMDIR stands for its folder).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from pydicom.dataset import Dataset, FileMetaDataset
    >>> from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    >>> def write_slice(path, z):
    ...     ds = Dataset()
    ...     ds.file_meta = FileMetaDataset()
    ...     ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ...     ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = CTImageStorage, generate_uid(), "1.2.3"
    ...     ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 2, "abdomen"
    ...     ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, z], [1, 0, 0, 0, 1, 0]
    ...     ds.PixelSpacing, ds.Rows, ds.Columns = [0.5, 0.5], 16, 16
    ...     ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ...     ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ...     ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ...     ds.PixelData = np.zeros((16, 16), np.int16).tobytes()
    ...     ds.save_as(path, enforce_file_format=True)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for k in range(3):
    ...         write_slice(pathlib.Path(folder) / f"slice{k}.dcm", 2.0 * k)
    ...     (info,) = list_series(folder)
    >>> print(info.describe())
    #0 number 2 'abdomen' CT 3 slices 16x16 uid 1.2.3
    >>> list_series("missing")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: missing: no such file or folder
    """
    folder, _ = _folder_of(Path(path))
    return [info for info, _ in _scan(folder)[0]]


def load_dicom(path, series: int | str | None = None, progress=None) -> Volume:
    """Load one DICOM series as a `Volume` in Hounsfield units (for CT) with a RAS affine.

    ``path`` is a folder (searched recursively) or one file of the series. ``series`` picks
    a series by index, SeriesInstanceUID, ``number:N`` or ``index:N`` (see the module
    documentation for the precedence). Problems are reported as one-line `Viz3dError`;
    resampling, skipped series and dropped duplicates as `viz3d.Viz3dWarning`.
    ``progress``, if given, is called as ``progress(done, total)`` as slices are decoded.
    """
    path = Path(path)
    folder, picked_file = _folder_of(path)
    groups, skipped = _scan(folder)
    if not groups:
        raise Viz3dError(f"{folder}: no DICOM image series found ({_skip_summary(skipped)})")
    if series is not None:
        chosen = _select(folder, groups, series)
    elif picked_file is not None:
        target = picked_file.resolve()
        chosen = next((i for i, (_, hs) in enumerate(groups) if any(h.path.resolve() == target for h in hs)), None)
        if chosen is None:  # changed or became unreadable since it was first read
            raise Viz3dError(f"{picked_file}: this file was not among the slices read from {folder}; is it still there?")
    else:
        chosen = 0
        if len(groups) > 1:
            others = "; ".join(info.describe() for info, _ in groups[1:11])
            if len(groups) > 11:
                others += f"; and {len(groups) - 11} more (see list_series)"
            _warn(
                f"{folder}: {len(groups)} series; loaded {groups[0][0].describe()}; skipped {others} "
                "(pick another with series= / --series)"
            )
    info, headers = groups[chosen]
    return _load_series(folder, info, headers, [g[0] for g in groups], progress)


# ---------------------------------------------------------------------------------------------
# scanning and grouping


def _folder_of(path: Path) -> tuple[Path, Path | None]:
    """The folder to scan and, when ``path`` is an image slice, that file.

    A named file that is DICOM but not an image slice is refused (loading some other series
    of its folder instead would be a wrong answer); DICOMDIR stands for its folder.
    """
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return path, None
    except OSError:
        pass  # check_regular_file says what is wrong
    check_regular_file(path, "a DICOM file or a folder of DICOM files")
    try:
        header = _read_header(path)
    except OSError as exc:
        raise Viz3dError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if header is None:
        raise Viz3dError(f"{path}: not a DICOM file (no 'DICM' preamble) and not a folder")
    if isinstance(header, str):
        if path.name.lower() == "dicomdir":
            return path.parent, None
        raise Viz3dError(f"{path}: a DICOM file {header}, not a slice of an image series: "
                         "name one of the series' slices, or its folder")
    return path.parent, path


def _read_header(path: Path):
    """A `_Header` for an image slice, a reason string for other DICOM files, None for non-DICOM.

    Only files with the 'DICM' preamble are parsed (pydicom refuses the others too); an
    ``OSError`` opening the file or reading its first bytes (permission denied) is the
    caller's to report.
    """
    import pydicom

    with open(path, "rb") as fp:
        start = fp.read(MIN_DICOM_BYTES)
        if len(start) < MIN_DICOM_BYTES or start[128:] != b"DICM":
            return None
        fp.seek(0)
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            pixel_tag = fp.read(4)
        except Exception:  # a corrupt header of any kind: not usable
            return None
        size = os.fstat(fp.fileno()).st_size
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    has_pixels = pixel_tag in _PIXEL_TAGS or ts == _DEFLATED  # deflated: position unknown, assume so
    if not has_pixels:
        return "without pixel data"
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            return "multi-frame (not supported)"
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=float)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        rows, columns = int(ds.Rows), int(ds.Columns)
        slope = _rescale(ds, "RescaleSlope", 1.0)
        intercept = _rescale(ds, "RescaleIntercept", 0.0)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except Exception:  # missing, malformed or unparsable values (pydicom raises many types)
        return "without image position/orientation/spacing"
    if orientation.shape != (6,) or position.shape != (3,) or len(spacing) != 2 or min(spacing) <= 0:
        return "without image position/orientation/spacing"
    if not (np.all(np.isfinite(orientation)) and np.all(np.isfinite(position))) or rows < 1 or columns < 1:
        return "without image position/orientation/spacing"
    tags = {
        name: _text_of(ds, name)
        for name in ("PatientID", "StudyDate", "Modality", "SeriesInstanceUID", "StudyInstanceUID",
                     "SeriesDescription", "SeriesNumber", "SliceThickness", "SpacingBetweenSlices",
                     "FrameOfReferenceUID")
    }
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except Exception:
        return "with an unreadable SamplesPerPixel"
    return _Header(path, tags, rows, columns, orientation, position, spacing, slope, intercept, ts,
                   samples, frames, bits, _is_mosaic(ds), size)


def _rescale(ds, name: str, default: float) -> float:
    """RescaleSlope / RescaleIntercept as a float: ``default`` when absent or empty, NaN when
    present but not a number (refused later with the file and tag named, never replaced)."""
    value = ds.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def _is_mosaic(ds) -> bool:
    """Siemens mosaic: ImageType says MOSAIC, or the private NumberOfImagesInMosaic is there."""
    try:
        image_type = ds.get("ImageType") or []
        kinds = [str(image_type)] if isinstance(image_type, str) else [str(v) for v in image_type]
    except Exception:
        kinds = []
    return any(kind.strip().upper() == "MOSAIC" for kind in kinds) or MOSAIC_TAG in ds


def _number(value, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _text_of(ds, name: str) -> str:
    """A tag's value as text ('' when absent or unreadable: a corrupt identity never stops a load)."""
    try:
        return _text(ds.get(name))
    except Exception:
        return ""


def _scan(folder: Path) -> tuple[list[tuple[SeriesInfo, list[_Header]]], dict]:
    """Read every header under ``folder`` and group the image slices into sorted series."""
    skipped: dict[str, int] = {}
    groups: dict[tuple, list[_Header]] = {}
    candidates, unreadable = _candidate_files(folder, skipped)
    for path in candidates:
        try:
            header = _read_header(path)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror or exc}")
            continue
        if not isinstance(header, _Header):
            reason = header or "not DICOM"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        geometry = (tuple(float(v) for v in np.round(header.orientation, 4) + 0.0), header.rows, header.columns,
                    tuple(float(v) for v in np.round(header.spacing, 4) + 0.0))
        uid = header.tags["SeriesInstanceUID"]
        key = ("uid", uid) + geometry if uid else (
            "geometry", header.tags["StudyInstanceUID"], header.tags["SeriesNumber"]) + geometry
        groups.setdefault(key, []).append(header)
    if unreadable:
        skipped[f"unreadable ({unreadable[0]}{'; ...' if len(unreadable) > 1 else ''})"] = len(unreadable)
        _warn(f"{folder}: {len(unreadable)} entr{'ies' if len(unreadable) != 1 else 'y'} could not be read and "
              f"{'were' if len(unreadable) != 1 else 'was'} skipped: {'; '.join(unreadable[:3])}"
              f"{'; ...' if len(unreadable) > 3 else ''}")
    ordered = []
    for key, headers in groups.items():
        normal = _normal(headers[0].orientation)
        with np.errstate(over="ignore", invalid="ignore"):  # absurd positions are refused at load
            headers.sort(key=lambda h: (float(h.position @ normal), str(h.path)))
        ordered.append((key, headers))
    ordered.sort(key=lambda kh: (-len(kh[1]), _series_number(kh[1][0]) or 0, str(kh[1][0].path)))
    result = []
    for index, (key, headers) in enumerate(ordered):
        first = headers[0]
        info = SeriesInfo(
            index=index, uid=first.tags["SeriesInstanceUID"], number=_series_number(first),
            description=first.tags["SeriesDescription"], n_slices=len(headers), rows=first.rows,
            columns=first.columns, modality=first.tags["Modality"], orientation=key[-4],
            pixel_spacing=key[-1], files=tuple(h.path for h in headers),
        )
        result.append((info, headers))
    return result, skipped


def _candidate_files(folder: Path, skipped: dict) -> tuple[list[Path], list[str]]:
    """The regular files under ``folder`` long enough to be DICOM, sorted, and the entries that
    could not be examined (``'path: reason'``).

    Nothing is opened here. FIFOs, devices and sockets are counted in ``skipped`` (opening one
    may never return); so are symlinked folders and folders on another file system, which are
    not entered (``/`` holds ``/proc``). More than `MAX_SCAN_FILES` candidates is refused.
    """
    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    files: list[Path] = []
    unreadable: list[str] = []
    device = os.stat(folder).st_dev
    pending = [folder]
    while pending:
        where = pending.pop()
        try:
            with os.scandir(where) as listing:
                entries = list(listing)
        except OSError as exc:
            unreadable.append(f"{where}: {exc.strerror or exc}")
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.stat(follow_symlinks=False).st_dev != device:
                        skip("folder on another file system (not entered)")
                    else:
                        pending.append(Path(entry.path))
                    continue
                status = entry.stat()  # a symlinked file counts as its target
            except FileNotFoundError:
                skip("broken symlink")
                continue
            except OSError as exc:
                unreadable.append(f"{entry.path}: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(status.st_mode):
                skip("symlinked folder (not entered)")
            elif not stat.S_ISREG(status.st_mode):
                skip("not a regular file (FIFO, device or socket)")
            elif status.st_size < MIN_DICOM_BYTES:
                skip("not DICOM")
            else:
                files.append(Path(entry.path))
                if len(files) > MAX_SCAN_FILES:
                    raise Viz3dError(f"{folder}: more than {MAX_SCAN_FILES} files under this folder: not one study; "
                                     "name the folder of the series (or one of its files)")
    return sorted(files), unreadable


def _series_number(header: _Header) -> int | None:
    try:
        return int(float(header.tags["SeriesNumber"]))
    except ValueError:
        return None


def _skip_summary(skipped: dict) -> str:
    if not skipped:
        return "the folder holds no files"
    return "skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))


def _select(folder: Path, groups, series) -> int:
    """Index of the series named by ``series`` (see the module documentation)."""
    infos = [info for info, _ in groups]

    def by_index(n: int) -> int | None:
        return n if 0 <= n < len(infos) else None

    found = None
    if isinstance(series, (int, np.integer)) and not isinstance(series, bool):
        found = by_index(int(series))
    elif isinstance(series, str):
        text = series.strip()
        matches = [info.index for info in infos if info.uid and info.uid == text]
        if matches:
            found = matches[0]
        else:
            prefix, _, rest = text.partition(":")
            prefix, rest = prefix.strip().lower(), rest.strip()
            if prefix == "uid" and rest:
                found = next((info.index for info in infos if info.uid == rest), None)
            elif prefix in ("index", "number") and rest.lstrip("-").isdigit():
                n = int(rest)
                if prefix == "index":
                    found = by_index(n)
                else:
                    found = next((info.index for info in infos if info.number == n), None)
            elif text.isdigit():
                found = by_index(int(text))
    if found is None:
        listing = "; ".join(info.describe() for info in infos)
        raise Viz3dError(
            f"{folder}: no series {series!r} (give an index, a SeriesInstanceUID, number:N or index:N); "
            f"series here: {listing}"
        )
    return found


# ---------------------------------------------------------------------------------------------
# geometry


def _normal(orientation: np.ndarray) -> np.ndarray:
    """The slice normal for sorting (+z for parallel cosines: such a series is refused at load)."""
    row, col = _cosines(orientation)
    normal = np.cross(row, col)
    length = np.linalg.norm(normal)
    return normal / length if length > 1e-6 else np.array([0.0, 0.0, 1.0])


def _cosines(orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row, col = orientation[:3], orientation[3:]
    norms = np.linalg.norm(row), np.linalg.norm(col)
    if min(norms) < 1e-6:
        return np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    return row / norms[0], col / norms[1]


@dataclass
class _Plan:
    """How the sorted slices become a regular orthogonal grid."""

    slots: list[int]  # for each sorted header, the slice index it fills (duplicates share one)
    depths: np.ndarray  # position of each unique slice along the normal (mm)
    target: np.ndarray | None  # regular depths to resample onto, or None when already regular
    spacing: float
    drift: np.ndarray  # in-plane offset (LPS mm) of the slice origins per mm along the normal
    tilt_deg: float
    reasons: list[str]


def _plan(folder: Path, info: SeriesInfo, headers: list[_Header]) -> _Plan:
    row, col = _cosines(headers[0].orientation)
    if abs(row @ col) > 1e-3:
        raise Viz3dError(f"{headers[0].path}: ImageOrientationPatient row and column cosines are not perpendicular")
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    depth = np.array([h.position @ normal for h in headers])
    slots, depths = [], []
    for d in depth:
        if depths and d - depths[-1] < DUPLICATE_TOLERANCE_MM:
            slots.append(len(depths) - 1)
        else:
            depths.append(float(d))
            slots.append(len(depths) - 1)
    depths = np.array(depths)
    pixel = min(headers[0].spacing)
    reasons: list[str] = []
    if len(depths) == 1:
        spacing = _number(headers[0].tags["SpacingBetweenSlices"], 0.0) or _number(headers[0].tags["SliceThickness"], 0.0) or 1.0
        reasons.append(f"a single slice: slice spacing {spacing:g} mm taken from the header")
        return _Plan(slots, depths, None, spacing, np.zeros(3), 0.0, reasons)

    # slice origins must lie on one line: in-plane offset linear in depth
    first_of_slot = {}
    for header, slot in zip(headers, slots):
        first_of_slot.setdefault(slot, header.position)
    origins = np.array([first_of_slot[k] for k in range(len(depths))])
    offsets = origins - origins[0]
    inplane = offsets - np.outer(offsets @ normal, normal)
    extent = depths[-1] - depths[0]
    drift = inplane[-1] / extent
    scatter = np.linalg.norm(inplane - np.outer(depths - depths[0], drift), axis=1).max()
    if scatter > DRIFT_FRACTION * pixel:
        raise Viz3dError(
            f"{folder}: series {info.describe()}: slice origins do not lie on one line "
            f"(in-plane scatter up to {scatter:.2f} mm); cannot build one volume from it"
        )
    stack = offsets[-1] / np.linalg.norm(offsets[-1])
    tilt = float(np.degrees(np.arccos(np.clip(abs(stack @ normal), -1.0, 1.0))))
    if np.linalg.norm(inplane[-1]) > DRIFT_FRACTION * pixel:
        reasons.append(f"gantry tilt of {tilt:.2f} degrees: resampled onto an orthogonal grid")
    else:
        drift = np.zeros(3)

    steps = np.diff(depths)
    median = float(np.median(steps))
    uniform = depths[0] + np.arange(len(depths)) * extent / (len(depths) - 1)
    if np.abs(depths - uniform).max() <= max(DUPLICATE_TOLERANCE_MM, 0.01 * median):
        return _Plan(slots, depths, None, extent / (len(depths) - 1), drift, tilt, reasons)
    count = int(round(extent / median)) + 1
    if count > 2 * len(depths) + 1:
        raise Viz3dError(
            f"{folder}: series {info.describe()}: {len(depths)} slices spread over {extent:g} mm at a typical spacing of "
            f"{median:g} mm: a regular grid would need {count} slices, most of them invented by interpolation "
            "(are these slices one volume?)")
    target = np.linspace(depths[0], depths[-1], count)
    spacing = extent / (count - 1)
    if steps.max() > GAP_FACTOR * median:
        where = np.flatnonzero(steps > GAP_FACTOR * median)
        gaps = ", ".join(f"{steps[i]:g} mm after slice {i}" for i in where[:5])
        if _whole_multiples(steps[where] / median):
            reasons.append(
                f"missing slices (gaps of {gaps}; typical spacing {median:g} mm): "
                f"linearly interpolated onto a regular {spacing:g} mm grid"
            )
        else:
            reasons.append(
                f"uneven slice spacing ({steps.min():g} to {steps.max():g} mm; steps of {gaps} are not whole "
                f"multiples of the typical {median:g} mm, so no slice is simply missing): "
                f"linearly interpolated onto a regular {spacing:g} mm grid"
            )
    else:
        reasons.append(
            f"non-uniform slice spacing ({steps.min():g} to {steps.max():g} mm): "
            f"resampled onto a regular grid at the median spacing {spacing:g} mm"
        )
    return _Plan(slots, depths, target, spacing, drift, tilt, reasons)


def _whole_multiples(ratios: np.ndarray) -> bool:
    """True when every gap is close to a whole number (2 or more) of typical steps: slices missing.

    >>> _whole_multiples(np.array([2.02, 3.0])), _whole_multiples(np.array([1.75]))
    (True, False)
    """
    return bool(np.all(np.abs(ratios - np.round(ratios)) <= 0.2))


# ---------------------------------------------------------------------------------------------
# checks before any pixel is decoded


def _check_headers(info: SeriesInfo, headers: list[_Header]) -> None:
    """Refuse what no decoding can make right: mosaics, broken geometry, unusable rescale values,
    pixel data shorter than the header's image. Each message names the file and the tag."""
    for header in headers:
        if header.mosaic:
            raise Viz3dError(
                f"{header.path}: Siemens mosaic (ImageType MOSAIC / NumberOfImagesInMosaic: several slices tiled in "
                "one image): Siemens mosaic is not supported; convert the series with dcm2niix")
        _check_orientation(header)
        if np.abs(header.position).max() > MAX_ORIGIN_MM:
            raise Viz3dError(f"{header.path}: ImagePositionPatient {header.position.tolist()} mm is more than "
                             f"{MAX_ORIGIN_MM / 1000:g} m from the scanner's centre: the header is broken")
        for name, value in (("RescaleSlope", header.slope), ("RescaleIntercept", header.intercept)):
            if not abs(value) <= MAX_SCALED_VALUE:  # NaN included
                raise Viz3dError(f"{header.path}: {name} {value:g} is not a usable number (not finite, or beyond "
                                 f"+-{MAX_SCALED_VALUE:g}): the stored values cannot be turned into real values")
        _check_pixel_bytes(header)


def _check_orientation(header: _Header) -> None:
    norms = np.linalg.norm(header.orientation[:3]), np.linalg.norm(header.orientation[3:])
    if max(abs(norms[0] - 1.0), abs(norms[1] - 1.0)) > 0.1:
        shown = ", ".join(f"{v:g}" for v in header.orientation)
        raise Viz3dError(f"{header.path}: ImageOrientationPatient ({shown}) is not two unit vectors: "
                         "the header is broken")


def _check_pixel_bytes(header: _Header) -> None:
    """For uncompressed pixel data: the file must be able to hold the image its header describes
    (a corrupt Rows, Columns or BitsAllocated would otherwise allocate gigabytes first)."""
    if header.transfer_syntax not in _NATIVE:
        return
    if header.bits not in (1, 8, 16, 32, 64):
        raise Viz3dError(f"{header.path}: BitsAllocated {header.bits} is not a valid pixel size (1, 8, 16, 32 or 64)")
    needed = (header.rows * header.columns * header.samples * header.bits + 7) // 8
    if needed > header.size:
        raise Viz3dError(f"{header.path}: the header describes {header.rows}x{header.columns} pixels of {header.bits} bits "
                         f"({needed} bytes) but the file holds only {header.size} bytes: truncated or corrupt")


# ---------------------------------------------------------------------------------------------
# pixels


def _check_transfer_syntaxes(headers: list[_Header]) -> list[str]:
    """Names of the series' transfer syntaxes; Viz3dError for one no installed decoder reads."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    names = []
    for ts in dict.fromkeys(h.transfer_syntax for h in headers):
        where = next(h.path for h in headers if h.transfer_syntax == ts)
        uid = UID(ts) if ts else None
        label = f"{uid.name} ({ts})" if uid is not None and uid.name != ts else f"'{ts or 'missing'}'"
        try:
            decoder = get_decoder(uid) if uid is not None else None
        except (NotImplementedError, ValueError):
            decoder = None
        if decoder is None:
            raise Viz3dError(f"{where}: unsupported transfer syntax {label}: no decoder for its pixel data "
                             "(convert the series, e.g. with dcm2niix)")
        if not decoder.is_available:
            raise Viz3dError(
                f"{where}: transfer syntax {label} needs a pixel-data plugin that is not installed "
                f"(pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg)"
            )
        names.append(uid.name)
    return names


def _read_pixels(header: _Header) -> np.ndarray:
    """Stored values of one slice as (rows, columns)."""
    import pydicom

    try:
        ds = pydicom.dcmread(header.path)
        pixels = ds.pixel_array
    except Exception as exc:
        from pydicom.uid import UID

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Viz3dError(f"{header.path}: cannot decode pixel data ({UID(header.transfer_syntax).name}; the header says "
                         f"{header.rows}x{header.columns} pixels of {header.bits} bits): {reason}") from None
    if pixels.shape != (header.rows, header.columns):
        raise Viz3dError(f"{header.path}: pixel data has shape {pixels.shape}, header says {header.rows}x{header.columns}")
    return pixels


def _stored_slices(headers: list[_Header]):
    """Yield each slice's stored values, in the order of ``headers``.

    Compressed slices (JPEG 2000: ~25 ms each; pydicom's decoders hold the GIL, so threads
    gain nothing) are decoded by a pool of forked processes, one per core, when there are at
    least `POOL_MIN_SLICES` of them: 180 slices of 732 x 606 take 2.5 s on two cores instead of
    4.1 s. Fork, not spawn or forkserver: those run the caller's script again in each worker.
    The first slice is decoded here first, so the decoder is imported before the fork and a
    slice no decoder reads fails before any work. The workers ignore Ctrl-C (it is this
    process's to handle), exit when this process dies (else one left writing a result nobody
    reads would wait forever), and are stopped once the results are in or anything goes wrong.
    A pool that cannot start or breaks (a worker killed), or a slice that takes more than
    `SLICE_TIMEOUT_S` (a worker stuck on a lock another thread held at the fork), leaves the
    rest to this process. Errors are the same one-line `Viz3dError` either way.
    """
    workers = _decode_workers(headers)
    if workers < 2:
        yield from map(_read_pixels, headers)
        return
    yield _read_pixels(headers[0])
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, TimeoutError
    from concurrent.futures.process import BrokenProcessPool

    done, pool = 1, None
    try:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                   initializer=_worker_started, initargs=(os.getpid(),))
        for future in [pool.submit(_read_pixels_in_worker, header) for header in headers[1:]]:
            yield future.result(timeout=SLICE_TIMEOUT_S)
            done += 1
    except (BrokenProcessPool, TimeoutError, OSError):
        pass  # this process decodes what is left
    finally:
        if pool is not None:
            _stop(pool)
    yield from map(_read_pixels, headers[done:])


def _stop(pool) -> None:
    """Cancel the slices not started and let the workers finish the one in hand; kill those still
    busy after `STOP_GRACE_S` (stuck). A worker is never killed while it may be sending a result:
    a half-sent one would leave this process's reader waiting forever (and a hang at its exit)."""
    from multiprocessing.connection import wait

    busy = {p.sentinel: p for p in (getattr(pool, "_processes", None) or {}).values()}  # gone after shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + STOP_GRACE_S
    while busy and (left := deadline - time.monotonic()) > 0:
        for sentinel in wait(list(busy), timeout=left):  # ready once the worker has exited
            del busy[sentinel]
    for process in busy.values():
        process.kill()


def _worker_started(parent: int) -> None:
    """In each decoding worker: leave Ctrl-C to the parent, and exit when the parent is gone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    runtime.start_thread(watch, name="parent-watch", daemon=True)


def _read_pixels_in_worker(header: _Header) -> np.ndarray:
    """`_read_pixels`, as the forked worker's copy of this module holds it (the pool sends only this name)."""
    return _read_pixels(header)


def _decode_workers(headers: list[_Header]) -> int:
    """How many processes should decode ``headers``: one per usable core, or 1 (this one)."""
    from pydicom.uid import UID

    compressed = sum(1 for h in headers if h.transfer_syntax and UID(h.transfer_syntax).is_compressed)
    if compressed < POOL_MIN_SLICES or not runtime.decode_in_processes():
        return 1  # the pool forks: opt-in, Linux only (macOS's system frameworks break in forked children)
    return max(1, min(usable_cores(), compressed // 8))


def _fill(folder: Path, info: SeriesInfo, headers: list[_Header], plan: _Plan, progress=None) -> tuple[np.ndarray, int]:
    """Decode every slice once into one preallocated (column, row, slice) array of HU.

    The array is allocated once the first slice has decoded to the header's Rows x Columns
    (compressed pixel data cannot be checked before: a corrupt header is refused as such,
    not as a lack of memory). ``progress(done, total)`` is called after each slice.
    """
    integral = all(_exact_integer(h.slope, h.intercept) for h in headers)
    dtype = np.int16 if integral else np.float32
    first = headers[0]
    shape = (first.columns, first.rows, len(plan.depths))
    array = None
    filled = -1
    duplicates = 0
    with closing(_stored_slices(headers)) as slices:  # an error below stops the decoding pool at once
        for done, (header, slot, stored) in enumerate(zip(headers, plan.slots, slices), 1):
            if progress is not None:
                progress(done, len(headers))
            if runtime.STOP.is_set():  # the command line's Ctrl-C: a load in any thread stops here
                raise KeyboardInterrupt  # the load runs beside other work; Ctrl-C reached the main thread
            if array is None:
                array = _allocate(folder, shape, dtype)
            if array.dtype == np.int16 and stored.dtype.kind in "iub" and stored.dtype.itemsize <= 4:
                values = _integer_hu(stored, int(header.slope), int(header.intercept))
                if values.size and (values.min() < -32768 or values.max() > 32767):
                    array = array.astype(np.float32, order="F")  # exact HU no longer fit int16
                    values = values.astype(np.float32)
            else:
                if array.dtype != np.float32:
                    array = array.astype(np.float32, order="F")
                values = _scaled(header, stored)
            if slot == filled:
                if not np.array_equal(array[:, :, slot], values.T):
                    keeper = headers[plan.slots.index(slot)].path
                    raise Viz3dError(
                        f"{folder}: series {info.describe()}: {keeper.name} and {header.path.name} are different images at the "
                        f"same position ({plan.depths[slot]:.3f} mm along the slice normal): several acquisitions, echoes or "
                        "phases in one series are not supported"
                    )
                duplicates += 1
                continue
            array[:, :, slot] = values.T
            filled = slot
            del stored, values
    return array, duplicates


def _allocate(folder: Path, shape: tuple[int, int, int], dtype) -> np.ndarray:
    try:
        return np.empty(shape, dtype=dtype, order="F")
    except MemoryError:
        raise Viz3dError(f"{folder}: not enough memory to load {shape} voxels of {np.dtype(dtype)}") from None


def _exact_integer(slope: float, intercept: float) -> bool:
    """Whether ``stored * slope + intercept`` can be computed exactly in int64 for any stored
    value up to 32 bits: integral, and small enough (a slope of 1e38 is integral too).

    >>> _exact_integer(1.0, -1024.0), _exact_integer(0.5, 0.0), _exact_integer(1e38, 0.0)
    (True, False, False)
    """
    return (np.isfinite(slope) and np.isfinite(intercept) and float(slope).is_integer()
            and float(intercept).is_integer() and abs(slope) <= 2**15 and abs(intercept) <= 2**31)


def _scaled(header: _Header, stored: np.ndarray) -> np.ndarray:
    """``stored * slope + intercept`` as float32; Viz3dError for values beyond +-`MAX_SCALED_VALUE`."""
    with np.errstate(over="ignore", invalid="ignore"):
        values = stored.astype(np.float64) * header.slope + header.intercept
        top = float(np.max(np.abs(values))) if values.size else 0.0
    if not top <= MAX_SCALED_VALUE:  # NaN included
        raise Viz3dError(
            f"{header.path}: RescaleSlope {header.slope:g} and RescaleIntercept {header.intercept:g} give values up to "
            f"{top:g}, beyond +-{MAX_SCALED_VALUE:g}: the rescale values are broken")
    return values.astype(np.float32)


def _integer_hu(stored: np.ndarray, slope: int, intercept: int) -> np.ndarray:
    """``stored * slope + intercept`` exactly, in as few bytes as exactness allows (int32 when no
    16-bit stored value can leave its range, else int64), computed in place.

    >>> _integer_hu(np.array([[0, 4095]], np.uint16), 1, -1024)
    array([[-1024,  3071]], dtype=int32)
    """
    small = stored.dtype.itemsize <= 2 and 65536 * abs(slope) + abs(intercept) < 2**31
    values = stored.astype(np.int32 if small else np.int64)
    if slope != 1:
        values *= slope
    values += intercept
    return values


def _resample_stack(array: np.ndarray, depths: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Linear interpolation along the slice axis onto ``target`` depths (scipy), in chunks."""
    from scipy.interpolate import make_interp_spline

    out = np.empty(array.shape[:2] + (len(target),), dtype=np.float32, order="F")
    step = max(1, int(2**22 // max(1, array.shape[1] * array.shape[2])))
    for start in range(0, array.shape[0], step):
        chunk = np.asarray(array[start:start + step], dtype=np.float32)
        out[start:start + step] = make_interp_spline(depths, chunk, k=1, axis=2)(target)
    return out


def _untilt(array: np.ndarray, shift: tuple[float, float], centre: float) -> np.ndarray:
    """Undo the in-plane shift of ``shift`` voxels per slice, keeping slice ``centre`` in place."""
    from scipy.ndimage import affine_transform

    a, b = shift
    matrix = np.array([[1.0, 0.0, -a], [0.0, 1.0, -b], [0.0, 0.0, 1.0]])  # output -> input index
    offset = np.array([a * centre, b * centre, 0.0])
    fill = float(array.min())
    return affine_transform(array, matrix, offset=offset, order=1, mode="constant", cval=fill,
                            output=np.float32)


def _load_series(folder: Path, info: SeriesInfo, headers: list[_Header], infos: list[SeriesInfo], progress=None) -> Volume:
    if any(h.samples != 1 for h in headers):
        raise Viz3dError(f"{headers[0].path}: colour images (SamplesPerPixel {headers[0].samples}) are not supported; "
                         "expected a greyscale series such as CT")
    _check_headers(info, headers)
    syntax_names = _check_transfer_syntaxes(headers)
    plan = _plan(folder, info, headers)
    first = headers[0]
    check_grid(f"{folder}: series {info.describe()}", _lps_affine(first, plan.spacing, first.position),
               "PixelSpacing and the slice positions / SliceThickness")
    modality = first.tags["Modality"].upper()
    if modality != "CT":
        _warn(f"{folder}: series {info.describe()}: "
              + (f"Modality is {modality}, not CT: its values are NOT Hounsfield units (the HU range, windows and bone "
                 "threshold assume CT)" if modality else "has no Modality: read as CT in Hounsfield units"))
    array, duplicates = _fill(folder, info, headers, plan, progress)

    row, col = _cosines(first.orientation)
    origin = first.position.copy()
    if plan.target is not None:
        array = _resample_stack(array, plan.depths, plan.target)
    if np.any(plan.drift):
        # slice k of the (regular) stack is shifted in-plane by k * per_slice from slice 0
        per_slice = plan.drift * plan.spacing
        shift = (float(per_slice @ row) / first.spacing[1], float(per_slice @ col) / first.spacing[0])
        centre = (array.shape[2] - 1) / 2.0
        array = _untilt(array, shift, centre)
        origin = origin + centre * per_slice
    lps = _lps_affine(first, plan.spacing, origin)

    messages = list(plan.reasons)
    if duplicates:
        messages.append(f"{duplicates} duplicate slice{'s' if duplicates != 1 else ''} (same position, same pixels) ignored")
    for message in messages:
        _warn(f"{folder}: series {info.describe()}: {message}")

    tags = first.tags
    thickness = _number(tags["SliceThickness"], 0.0)
    meta = {
        "path": str(folder),
        "PatientID": tags["PatientID"],
        "StudyDate": tags["StudyDate"],
        "Modality": tags["Modality"],
        "hounsfield": modality in ("CT", ""),  # False: not CT, the values are not HU (no default bone threshold)
        "StudyInstanceUID": tags["StudyInstanceUID"],
        "SeriesInstanceUID": tags["SeriesInstanceUID"],
        "SeriesNumber": tags["SeriesNumber"],
        "SeriesDescription": tags["SeriesDescription"],
        "FrameOfReferenceUID": tags["FrameOfReferenceUID"],
        "n_slices": info.n_slices,
        "transfer_syntax": ", ".join(syntax_names),
        "series_index": info.index,
        "series_list": [i.as_dict() for i in infos],
        "slice_spacing": float(plan.spacing),
        "slice_thickness": thickness if thickness > 0 else "",
        "tilt_deg": round(plan.tilt_deg, 3),
        "resampled": "; ".join(r for r in plan.reasons if "resampled" in r or "interpolated" in r),
        "duplicates_dropped": duplicates,
    }
    return Volume(array, LPS_TO_RAS @ lps, str(folder), meta)


def _lps_affine(first: _Header, spacing: float, origin: np.ndarray) -> np.ndarray:
    """The voxel -> LPS affine of the (column, row, slice) array: columns along the row cosine."""
    row, col = _cosines(first.orientation)
    normal = _normal(first.orientation)
    lps = np.eye(4)
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite spacing: check_grid refuses the result
        lps[:3, 0] = row * first.spacing[1]
        lps[:3, 1] = col * first.spacing[0]
        lps[:3, 2] = normal * spacing
    lps[:3, 3] = origin
    return lps


def _warn(message: str) -> None:
    warn(message, stacklevel=3)
