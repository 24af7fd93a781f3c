"""The `Volume` type (array + voxel-to-RAS affine) and NIfTI loading with validation."""
from __future__ import annotations

import gzip
import os
import stat
import threading
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Viz3dError, check_regular_file, warn

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AIR_HU = -1024
VOXEL_SIZE_RANGE_MM = (1e-3, 1e3)  # a voxel edge outside this is a broken header, not a scan
MAX_ORIGIN_MM = 1e5  # a grid whose origin is 100 m from the scanner's centre is a broken header
MIN_AXIS_SINE = 0.1  # |det| / product of the voxel sizes: below it the voxel axes are nearly parallel
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_SCALED_VALUE = 1e9  # |value| after a header's scaling: beyond, the scaling is broken (HU end near 3e4)

_inflating: dict[str, tuple[tuple, Future]] = {}  # real path -> (identity, its decompressed bytes)
_inflating_lock = threading.Lock()


@dataclass(frozen=True)
class Volume:
    """A 3-D image on a grid placed in the patient's RAS frame.

    ``array[i, j, k]`` is the value at voxel index ``(i, j, k)``; ``affine`` maps
    ``(i, j, k, 1)`` to RAS millimetres (x towards the patient's right, y anterior, z superior).
    The affine may be flipped, anisotropic or oblique; nothing here assumes otherwise.
    Frozen: a `Volume` is a value, compared by its array, affine and source.

    Parameters
    ----------
    array : numpy.ndarray
        The 3-D voxel values: Hounsfield units for a CT, whole class values for a label map.
    affine : array_like
        The 4x4 voxel-to-RAS matrix (mm); stored as a float array.
    source : str, optional
        The file or folder it was read from, for messages and for finding a label map's
        names beside it; empty for a volume made in memory.
    meta : dict, optional
        What the reader learnt from the header (e.g. ``"hounsfield"``, ``"scaling"``, a
        segmentation's ``"layers"``); not compared.

    Raises
    ------
    Viz3dError
        When ``array`` is not 3-D, or ``affine`` is not a finite 4x4 matrix or is singular
        (a zero voxel size).

    See Also
    --------
    viz3d.api.load_ct, load_label : Volumes from files.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
    >>> v.voxel_sizes
    (2.0, 2.0, 3.0)
    >>> v.axcodes
    ('R', 'A', 'S')
    >>> Volume(np.zeros((4, 5)), np.eye(4))
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: volume: expected a 3-D image, got 2-D
    """

    array: np.ndarray
    affine: np.ndarray
    source: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.array.ndim != 3:
            raise Viz3dError(f"{self.source or 'volume'}: expected a 3-D image, got {self.array.ndim}-D")
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise Viz3dError(f"{self.source or 'volume'}: affine must be a finite 4x4 matrix")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise Viz3dError(f"{self.source or 'volume'}: affine is singular (zero voxel size)")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of voxels along the three array axes."""
        return tuple(int(n) for n in self.array.shape)

    @property
    def voxel_sizes(self) -> tuple[float, float, float]:
        """Voxel edge lengths in mm (column norms of the affine: nibabel's `voxel_sizes`)."""
        from nibabel.affines import voxel_sizes

        return tuple(float(s) for s in voxel_sizes(self.affine))

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in cubic millimetres."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Orientation codes of the array axes, e.g. ``('L', 'A', 'S')`` (nibabel's convention)."""
        import nibabel as nib

        return tuple(nib.aff2axcodes(self.affine))

    def world_bounds(self) -> np.ndarray:
        """Axis-aligned RAS bounding box of the voxel grid (voxel corners): ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]``."""
        return grid_box(self.affine, self.shape, pad=0.5)

    def same_grid(self, other: "Volume", atol: float = 1e-3) -> bool:
        """True when both volumes sample the same voxel centres (to ``atol`` mm).

        Grids that differ only by the order or direction of their array axes (a DICOM series
        read as LPS and its dcm2niix conversion in LAS) are the same grid.
        """
        (shape_a, affine_a), (shape_b, affine_b) = self._canonical_grid(), other._canonical_grid()
        return shape_a == shape_b and np.allclose(affine_a, affine_b, atol=atol)

    def _canonical_grid(self) -> tuple[tuple[int, ...], np.ndarray]:
        """Shape and affine after reordering and flipping the array axes towards RAS (no resampling)."""
        from nibabel.orientations import inv_ornt_aff, io_orientation

        ornt = io_orientation(self.affine)
        shape = [0, 0, 0]
        for old_axis, (new_axis, _) in enumerate(ornt):
            shape[int(new_axis)] = self.shape[old_axis]
        return tuple(shape), self.affine @ inv_ornt_aff(ornt, self.shape)


def grid_box(affine, shape, pad: float = 0.0) -> np.ndarray:
    """Axis-aligned RAS box ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of a grid's voxel centres.

    ``pad`` grows the grid by that many voxels along each array axis first (0.5: the voxels'
    outer faces).

    >>> grid_box(np.diag([-2.0, 1.0, 3.0, 1.0]), (4, 5, 6)).tolist()
    [[-6.0, 0.0, 0.0], [0.0, 4.0, 15.0]]
    """
    affine = np.asarray(affine, dtype=float)
    from nibabel.affines import apply_affine

    corners = np.array(np.meshgrid(*[[-pad, n - 1 + pad] for n in shape], indexing="ij")).reshape(3, -1).T
    world = apply_affine(affine, corners)
    return np.stack([world.min(axis=0), world.max(axis=0)])


def check_grid(source, affine, hint: str) -> None:
    """Refuse a voxel-to-world affine no scanner writes: what a broken header gives.

    Parameters
    ----------
    source : str or path-like
        The file or folder, for the message.
    affine : array_like
        The 4x4 voxel-to-world matrix (mm).
    hint : str
        Which header fields to check, e.g. ``"pixdim and the sform/qform"``.

    Raises
    ------
    Viz3dError
        When the affine is not finite, a voxel edge is outside `VOXEL_SIZE_RANGE_MM`, the
        voxel axes are nearly parallel (a shear that leaves less than `MIN_AXIS_SINE` of the
        volume of a box of those edges), or the origin lies beyond `MAX_ORIGIN_MM`.

    Examples
    --------
    >>> check_grid("ct.nii", np.diag([0.8, 0.8, 2.5, 1.0]), "pixdim")
    >>> check_grid("ct.nii", np.diag([0.8, 0.8, 1e6, 1.0]), "pixdim")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: ct.nii: voxel size (0.8, 0.8, 1e+06) mm is outside 0.001..1000 mm per edge: ... (check pixdim)
    """
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise Viz3dError(f"{source}: the voxel-to-world affine is not a finite 4x4 matrix (check {hint})")
    from nibabel.affines import voxel_sizes

    sizes = voxel_sizes(affine)
    low, high = VOXEL_SIZE_RANGE_MM
    if np.any(sizes < low) or np.any(sizes > high):
        shown = ", ".join(f"{size:.4g}" for size in sizes)
        raise Viz3dError(f"{source}: voxel size ({shown}) mm is outside {low:g}..{high:g} mm per edge: "
                         f"the header is broken (check {hint})")
    sine = abs(np.linalg.det(affine[:3, :3])) / float(np.prod(sizes))
    if sine < MIN_AXIS_SINE:
        raise Viz3dError(f"{source}: the voxel axes are nearly parallel (the affine is sheared to {sine:.2g} of a "
                         f"box's volume): the header is broken (check {hint})")
    if np.abs(affine[:3, 3]).max() > MAX_ORIGIN_MM:
        raise Viz3dError(f"{source}: the grid's origin {np.round(affine[:3, 3], 1).tolist()} mm is more than "
                         f"{MAX_ORIGIN_MM / 1000:g} m from the scanner's centre: the header is broken (check {hint})")


def _check_file(path: Path) -> None:
    status = check_regular_file(path, "a NIfTI file (.nii or .nii.gz)")
    if status.st_size == 0:
        raise Viz3dError(f"{path}: file is empty")


def _read_nifti(path: Path):
    """Open a NIfTI file with nibabel and read its data, turning every failure into Viz3dError."""
    try:
        return _read_checked_nifti(path)
    finally:
        forget_inflated(path)  # bytes started early for a file that failed a check first


def _read_checked_nifti(path: Path):
    import nibabel as nib

    _check_file(path)
    name = path.name.lower()
    if not name.endswith(NIFTI_SUFFIXES):
        raise Viz3dError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    img = _decompressed_nifti(path) if name.endswith(".gz") else None
    if img is None:
        try:
            img = nib.load(str(path))
        except Exception as exc:  # nibabel raises many types for corrupt headers
            raise Viz3dError(f"{path}: not a readable NIfTI file ({_reason(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise Viz3dError(f"{path}: not a NIfTI image")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    elif len(shape) > 3 and all(n == 1 for n in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise Viz3dError(f"{path}: expected a 3-D image, got shape {tuple(img.shape)}")
    if min(shape) < 1:
        raise Viz3dError(f"{path}: image has an empty dimension, shape {tuple(img.shape)}")
    _check_data_size(path, img)
    try:
        array = np.asanyarray(img.dataobj).reshape(shape)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise Viz3dError(f"{path}: truncated or corrupt image data ({_reason(exc)})") from None
    except MemoryError:
        raise Viz3dError(f"{path}: not enough memory to load {tuple(img.shape)} voxels of {img.get_data_dtype()}") from None
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise Viz3dError(f"{path}: header has no usable voxel-to-world affine (qform/sform)")
    check_grid(path, affine, "pixdim and the sform/qform")
    meta = {"path": str(path), "header_dtype": str(img.get_data_dtype()), "hounsfield": True}
    scaling = _scaling(path, img)
    if scaling is not None:
        meta["scaling"] = scaling
    return np.asarray(array), np.asarray(affine, dtype=float), meta


def _scaling(path: Path, img) -> tuple[float, float] | None:
    """The file's (scl_slope, scl_inter) when they change the stored values, else None.

    A slope of 0 or NaN means "not scaled" (the NIfTI convention; nibabel writes NaN); an
    infinite slope, which nibabel also ignores, is refused, as DICOM's non-finite
    RescaleSlope is. (A loaded image's header has its scaling reset: the array proxy holds it.)
    """
    slope = _raw_scl_slope(path)
    if slope is not None and np.isinf(slope):
        raise Viz3dError(f"{path}: scl_slope is {slope:g}: the stored values cannot be scaled to real values "
                         "(fix scl_slope; 0 means no scaling)")
    slope, inter = float(getattr(img.dataobj, "slope", 1.0)), float(getattr(img.dataobj, "inter", 0.0))
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def _raw_scl_slope(path: Path) -> float | None:
    """scl_slope as the file stores it (NIfTI-1: float32 at byte 112; NIfTI-2: float64 at 176)."""
    import struct

    try:
        with (gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")) as stream:
            head = stream.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    if len(head) < 348:
        return None
    for order in "<>":
        sizeof = struct.unpack_from(order + "i", head)[0]
        if sizeof == 348:
            return struct.unpack_from(order + "f", head, 112)[0]
        if sizeof == 540 and len(head) >= 540:
            return struct.unpack_from(order + "d", head, 176)[0]
    return None


def inflate_soon(path) -> None:
    """Start decompressing a ``.nii.gz`` in the background; the next load of that file takes it.

    ISA-L releases the GIL, so a command that calls this first decompresses its inputs while
    it imports nibabel, VTK and SciPy and hashes the files. Anything else is read as usual, and
    so is a file that changes before it is loaded. At most one buffer per file is held, until
    the file's next load takes it: call this only for a file about to be loaded.
    """
    path = Path(path)
    if not str(path).lower().endswith(".nii.gz"):
        return
    try:
        identity = _identity(path)
    except OSError:
        return
    future: Future = Future()

    def work():
        try:
            future.set_result(_inflate(path))
        except BaseException:  # never leave a waiting load hanging
            future.set_result(None)
            raise

    with _inflating_lock:
        if identity[0] in _inflating:
            return
        _inflating[identity[0]] = (identity, future)
    try:
        from .. import runtime

        runtime.start_thread(work, name="inflate")
    except BaseException:
        with _inflating_lock:
            _inflating.pop(identity[0], None)
        raise


def forget_inflated(*paths) -> None:
    """Drop what `inflate_soon` started for ``paths`` and no load took (a load that did not
    happen: the file's array came from elsewhere, or an error came first)."""
    with _inflating_lock:
        for path in paths:
            if path is not None:
                _inflating.pop(os.path.realpath(path), None)


def _identity(path: Path) -> tuple:
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):  # a FIFO or device: opening or reading it may never end
        raise OSError(f"{path}: not a regular file")
    return os.path.realpath(path), status.st_size, status.st_mtime_ns


_INFLATE_CHUNK = 1 << 24  # decompressed bytes per call: the GIL is taken again only between calls
_INFLATE_READ = 1 << 24  # compressed bytes per read of the file (a read needs the GIL)


def _inflate(path: Path) -> np.ndarray | None:
    """The whole decompressed stream of a gzip file in one array (ISA-L), or None.

    ISA-L's decompressor (`isal_zlib.decompressobj`) works without the GIL, 16 MB of output per
    call, and Python takes over only to read the file and copy each piece into the array.
    `igzip.open` reads the file 512 kB at a time: while another thread runs Python (imports,
    the meshing loop) each of those reads waits up to the interpreter's 5 ms switch interval for
    the GIL, and a 150 MB CT took 2 s instead of 0.3 s. (ISA-L's private reader, which
    decompresses straight into the array, was 0.27 s against 0.33 s here for the zoom-6 CT's
    160 MB on this machine's two shared cores; viz3d keeps to the public API.)
    """
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    try:
        with open(path, "rb") as raw:
            raw.seek(-4, 2)
            size = int.from_bytes(raw.read(4), "little")  # uncompressed size, modulo 2**32
            raw.seek(0)
            buffer = np.empty(size, np.uint8)
            inflater, pending, filled = isal_zlib.decompressobj(wbits=31), b"", 0  # 31: the gzip wrapper
            while not inflater.eof:
                pending = pending or raw.read(_INFLATE_READ)
                if not pending:
                    break
                piece = inflater.decompress(pending, _INFLATE_CHUNK)
                pending = inflater.unconsumed_tail
                if filled + len(piece) > size:
                    return None
                buffer[filled:filled + len(piece)] = np.frombuffer(piece, np.uint8)
                filled += len(piece)
            if filled != size or not inflater.eof or inflater.unused_data or raw.read(1):
                return None  # another gzip member follows, or the trailer's size is not the stream's: nibabel reads it
        return buffer
    except Exception:  # corrupt / truncated: nibabel.load reports it
        return None


def _inflated(path: Path) -> np.ndarray | None:
    """`_inflate` of ``path``, taken from `inflate_soon` when it started on this very file."""
    try:
        identity = _identity(path)
    except OSError:
        return None
    with _inflating_lock:
        held = _inflating.pop(identity[0], None)
    if held is not None and held[0] == identity:
        return held[1].result()
    return _inflate(path)  # not started, or the file changed since


def _decompressed_nifti(path: Path):
    """A .nii.gz decompressed by ISA-L (2-3x faster than zlib) straight into its voxel array.

    The stream is read into one buffer the size the gzip trailer gives, and the image's array
    is a view of that buffer (writable, no second copy). Returns None for anything unusual (no
    ISA-L, a corrupt, truncated or over-4-GiB stream, scaled or byte-swapped data): the caller
    then goes through ``nibabel.load``, whose checks name any problem precisely.
    """
    import io

    import nibabel as nib

    buffer = _inflated(path)
    if buffer is None:
        return None
    try:
        size = len(buffer)
        kind = nib.Nifti2Image if int.from_bytes(buffer[:4].tobytes(), "little") == 540 else nib.Nifti1Image
        head = buffer[: 1 << 20].tobytes()  # header and extensions
        header = kind.header_class.from_fileobj(io.BytesIO(head))
        offset, dtype, shape = int(header.get_data_offset()), header.get_data_dtype(), header.get_data_shape()
        slope, inter = header.get_slope_inter()
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if (offset > len(head) or offset + nbytes > size or not dtype.isnative
                or slope not in (None, 1.0) or inter not in (None, 0.0)):
            return None
        array = buffer[offset:offset + nbytes].view(dtype).reshape(shape, order="F")
        return kind(array, header.get_best_affine(), header)
    except Exception:  # corrupt / not NIfTI: nibabel.load reports it
        return None


def _check_data_size(path: Path, img) -> None:
    """Refuse headers that promise more voxel data than the file holds, before allocating it."""
    header = img.header
    expected = int(np.prod(img.shape, dtype=np.int64)) * header.get_data_dtype().itemsize
    # a loaded image's header says 0; the file's vox_offset is the array proxy's
    offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))
    if str(path).lower().endswith(".gz"):
        available = _gzip_data_size(path, offset + expected) - offset
    else:
        available = path.stat().st_size - offset
    if available < expected:
        raise Viz3dError(
            f"{path}: header says {tuple(img.shape)} voxels of {header.get_data_dtype()} "
            f"({expected} bytes) but the file holds only {max(available, 0)} bytes of image data"
        )


def _gzip_data_size(path: Path, needed: int) -> int:
    """Uncompressed size of a gzip file, at least as far as ``needed``, without holding its data.

    The gzip trailer stores the size modulo 2**32 (of the last member only): when it already
    covers ``needed`` the file is long enough; otherwise the stream is decompressed in chunks
    and counted, which stops being cheap only for files that are really too short.
    """
    with open(path, "rb") as raw:
        raw.seek(-4, 2)
        if int.from_bytes(raw.read(4), "little") >= needed:
            return needed
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total < needed and (chunk := stream.read(1 << 24)):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        pass  # truncated or corrupt: what decompressed so far is what is available
    return total


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_ct(path: str | Path) -> Volume:
    """Load a CT in Hounsfield units from a NIfTI file (scaling applied by nibabel).

    Integer data keeps its dtype; float data becomes float32. Voxels stored as NaN or
    infinity (or beyond float32's range) become air (-1024 HU) with a `Viz3dWarning` that
    counts them, so a few missing voxels never break meshing or display. Scaling
    (scl_slope, scl_inter) that takes values beyond +-`MAX_SCALED_VALUE` is refused, as a
    DICOM series' RescaleSlope / RescaleIntercept is: the values themselves are then unknown.
    """
    path = Path(path)
    array, affine, meta = _read_nifti(path)
    return Volume(ct_values(path, array, meta), affine, str(path), meta)


def ct_values(path, array: np.ndarray, meta: dict) -> np.ndarray:
    """A CT's voxel array as every reader returns it: integers kept, floats as float32 with NaN and
    infinite voxels set to air (counted in ``meta["nonfinite_voxels"]``, with a warning).

    ``meta["scaling"]`` (slope, intercept), when the file's header scaled the values, is checked:
    scaled values beyond +-`MAX_SCALED_VALUE` are refused. Any other type is refused.

    >>> ct_values("ct.nrrd", np.array([[[0.5, -1000.0]]]), {}).dtype
    dtype('float32')
    >>> ct_values("ct.nrrd", np.array([[["a"]]]), {})
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: ct.nrrd: unsupported CT data type <U1
    """
    if array.dtype.kind == "f":
        if "scaling" in meta:
            _check_scaled_range(path, array, meta["scaling"])
        return _air_for_nonfinite(path, array, meta)
    if array.dtype.kind not in "iub":
        raise Viz3dError(f"{path}: unsupported CT data type {array.dtype}")
    return array


def _check_scaled_range(path: Path, array: np.ndarray, scaling: tuple[float, float]) -> None:
    """Refuse scaled values beyond `MAX_SCALED_VALUE` or infinite (the header's fault; a NaN
    stored as such stays a voxel matter)."""
    with np.errstate(invalid="ignore", over="ignore"):
        top = float(np.nanmax(np.abs(array))) if array.size and not np.all(np.isnan(array)) else 0.0
    if not top <= MAX_SCALED_VALUE:
        slope, inter = scaling
        raise Viz3dError(f"{path}: scl_slope {slope:g} and scl_inter {inter:g} scale the stored values to "
                         f"{top:g}, beyond +-{MAX_SCALED_VALUE:g}: the header's scaling is broken")


def _air_for_nonfinite(path: Path, array: np.ndarray, meta: dict) -> np.ndarray:
    """``array`` as float32 with NaN, infinite and out-of-float32 voxels set to air, with a warning."""
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~(np.abs(array) <= FLOAT32_MAX)  # NaN compares false
    if not bad.any():
        return array.astype(np.float32, copy=False)
    array = array.copy() if not array.flags.writeable else array
    array[bad] = AIR_HU
    count = int(bad.sum())
    meta["nonfinite_voxels"] = count
    warn(f"{path}: {count} voxel{'s are' if count != 1 else ' is'} NaN or infinite (of {array.size}): "
         f"set to air ({AIR_HU} HU)", stacklevel=3)
    return array.astype(np.float32, copy=False)


def load_nifti_label(path: str | Path) -> Volume:
    """Load a label map from a NIfTI file (see `viz3d.io.formats.load_label`)."""
    path = Path(path)
    array, affine, meta = _read_nifti(path)
    return Volume(label_values(path, array), affine, str(path), meta)


def label_values(path, array: np.ndarray) -> np.ndarray:
    """A label map's voxel array as every reader returns it: whole non-negative numbers in the
    smallest of uint8, uint16 and uint32 that holds them.

    >>> label_values("seg.nrrd", np.array([[[0.0, 7.0]]])).dtype
    dtype('uint8')
    >>> label_values("seg.nrrd", np.array([[[0.5]]]))
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: seg.nrrd: label map has non-integral values (e.g. 0.5); labels must be whole numbers
    """
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise Viz3dError(f"{path}: label map contains NaN or infinite values")
        rounded = np.rint(array)
        off = rounded != array
        if off.any():
            value = array[off].flat[0]
            raise Viz3dError(f"{path}: label map has non-integral values (e.g. {value:g}); labels must be whole numbers")
        array = rounded
    elif array.dtype.kind == "b":
        array = array.astype(np.uint8)
    elif array.dtype.kind not in "iu":
        raise Viz3dError(f"{path}: unsupported label data type {array.dtype}")
    if array.size and array.min() < 0:
        raise Viz3dError(f"{path}: label map has negative values (min {array.min()}); labels must be >= 0")
    top = int(array.max()) if array.size else 0
    if top >= 2**32:
        raise Viz3dError(f"{path}: label value {top} is too large (labels must be below 2**32)")
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    if array.dtype != dtype:
        array = array.astype(dtype)
    return array
