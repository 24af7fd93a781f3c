"""NRRD images (``.nrrd``, or ``.nhdr`` with its detached data; raw, gzip or bzip2 encoded), read with
pynrrd and placed in RAS millimetres from their own ``space``, ``space directions`` and
``space origin`` fields."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import Viz3dError, check_regular_file, warn
from .volume import Volume, check_grid, ct_values, label_values

NRRD_SUFFIXES = (".nrrd", ".nhdr")
NRRD_MAGIC = b"NRRD000"

# the sign each world axis of a NRRD space gets in RAS (NRRD's own names and their short forms)
SPACE_SIGNS = {
    "right-anterior-superior": (1.0, 1.0, 1.0), "ras": (1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0), "lps": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0), "las": (-1.0, 1.0, 1.0),
}


def read_header(path) -> dict:
    """The header of a NRRD file as pynrrd parses it (no voxel data read).

    Raises
    ------
    Viz3dError
        When ``path`` is not a regular file or not a NRRD file.
    """
    import nrrd

    path = Path(path)
    check_regular_file(path, "a NRRD file (.nrrd or .nhdr)")
    try:
        return nrrd.read_header(str(path))
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, UnicodeDecodeError, ...
        raise Viz3dError(f"{path}: not a readable NRRD file ({_reason(exc)})") from None


def read_nrrd(path) -> tuple[np.ndarray, dict]:
    """A NRRD file's voxel array (axis order as in the file: fastest first) and its header.

    Raises
    ------
    Viz3dError
        When the file is not NRRD, its data is missing, truncated or corrupt.
    """
    import nrrd

    path = Path(path)
    header = read_header(path)
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except MemoryError:
        raise Viz3dError(f"{path}: not enough memory to load {header.get('sizes')} voxels of {header.get('type')}") from None
    except Exception as exc:
        raise Viz3dError(f"{path}: truncated or corrupt NRRD image data ({_reason(exc)})") from None
    return np.asarray(data), header


def spatial_axes(path, header: dict) -> list[int]:
    """The array axes that are placed in space (their ``space directions`` row is not ``none``).

    >>> spatial_axes("x.nrrd", {"dimension": 3})
    [0, 1, 2]
    >>> spatial_axes("x.nrrd", {"dimension": 4, "space directions": [[np.nan] * 3, [1, 0, 0], [0, 1, 0], [0, 0, 1]]})
    [1, 2, 3]
    """
    dimension = int(header.get("dimension", 0))
    directions = header.get("space directions")
    if directions is None:
        return list(range(dimension))
    rows = np.asarray(directions, dtype=float).reshape(dimension, -1)
    return [axis for axis in range(dimension) if np.all(np.isfinite(rows[axis]))]


def nrrd_affine(path, header: dict) -> np.ndarray:
    """The voxel -> RAS mm affine of a NRRD header's three spatial axes.

    Column ``j`` is axis ``j``'s ``space directions`` vector and the translation the
    ``space origin``, both in the header's ``space`` (RAS, LPS or LAS), turned into RAS. A file
    without ``space directions`` is placed as ITK and 3D Slicer read it: LPS axes scaled by its
    ``spacings`` (1 mm where absent) at the origin, with a warning; a file with directions but
    no named ``space`` is read as LPS too.

    Examples
    --------
    >>> header = {"dimension": 3, "space": "left-posterior-superior", "space origin": [10.0, 20.0, 30.0],
    ...           "space directions": [[2.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]]}
    >>> nrrd_affine("ct.nrrd", header).tolist()
    [[-2.0, 0.0, 0.0, -10.0], [0.0, -2.0, 0.0, -20.0], [0.0, 0.0, 3.0, 30.0], [0.0, 0.0, 0.0, 1.0]]
    """
    axes = spatial_axes(path, header)
    if len(axes) != 3:
        raise Viz3dError(f"{path}: expected 3 spatial axes, the header gives {len(axes)} "
                         f"(sizes {_sizes(header)}): not a 3-D image")
    space = str(header.get("space", "")).strip().lower()
    if space and space not in SPACE_SIGNS:
        raise Viz3dError(f"{path}: NRRD space '{header['space']}' cannot be placed in patient coordinates "
                         "(viz3d reads RAS, LPS and LAS spaces)")
    if header.get("space directions") is None:
        spacings = np.asarray(header.get("spacings", [1.0] * int(header.get("dimension", 3))), dtype=float)
        spacings = np.where(np.isfinite(spacings), spacings, 1.0)[axes]
        warn(f"{path}: no 'space directions' in the NRRD header: placed as ITK and 3D Slicer read it "
             f"(LPS axes, spacings {np.round(spacings, 4).tolist()} mm, origin at 0)", stacklevel=4)
        rows = np.diag(spacings)
    else:
        rows = np.asarray(header["space directions"], dtype=float)[axes]
        if rows.shape != (3, 3):
            raise Viz3dError(f"{path}: 'space directions' are {rows.shape[1]}-D vectors: expected 3-D ones")
    if not space and header.get("space directions") is not None:
        warn(f"{path}: the NRRD header names no 'space': its directions are read as LPS (as ITK does)", stacklevel=4)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float).reshape(-1)
    if origin.shape != (3,):
        raise Viz3dError(f"{path}: 'space origin' has {origin.size} coordinates: expected 3")
    signs = np.asarray(SPACE_SIGNS.get(space, SPACE_SIGNS["lps"]))
    affine = np.eye(4)
    affine[:3, :3] = (rows * signs).T
    affine[:3, 3] = origin * signs
    affine += 0.0  # no negative zeros from the sign flips (they print as -0.000)
    check_grid(path, affine, "'space directions' and 'space origin'")
    return affine


def nrrd_volume(path, role: str) -> Volume:
    """A NRRD file as a CT (``role="ct"``) or label map (``role="label"``) `Volume`.

    Axes of size 1 that are not spatial are dropped; any other non-spatial axis (a vector or
    a list of layers) is refused here (a 3D Slicer ``.seg.nrrd`` is read by
    `viz3d.io.slicer_seg`).
    """
    path = Path(path)
    array, header = read_nrrd(path)
    affine = nrrd_affine(path, header)
    axes = spatial_axes(path, header)
    extra = [axis for axis in range(array.ndim) if axis not in axes]
    if any(array.shape[axis] != 1 for axis in extra):
        raise Viz3dError(f"{path}: expected a 3-D image, got sizes {_sizes(header)} "
                         f"(kinds {header.get('kinds', 'not given')})")
    array = array.reshape([array.shape[axis] for axis in axes])
    if min(array.shape) < 1:
        raise Viz3dError(f"{path}: image has an empty dimension, sizes {_sizes(header)}")
    meta = {"path": str(path), "format": "NRRD", "header_dtype": str(array.dtype), "hounsfield": True,
            "space": header.get("space", "")}
    values = ct_values(path, array, meta) if role == "ct" else label_values(path, array)
    return Volume(values, affine, str(path), meta)


def is_nrrd(path: Path, head: bytes) -> bool:
    """Whether a file claims to be NRRD: its name (``.nrrd``, ``.nhdr``) or its magic line."""
    return path.name.lower().endswith(NRRD_SUFFIXES) or head.startswith(NRRD_MAGIC)


def _sizes(header: dict) -> tuple:
    return tuple(int(n) for n in np.atleast_1d(header.get("sizes", ())))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
