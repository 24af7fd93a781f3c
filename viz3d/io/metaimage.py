"""MetaImage files (``.mha``, or ``.mhd`` with its ``.raw`` / ``.zraw`` data), read with SimpleITK's
MetaImageIO and placed in RAS millimetres.

ITK's reading is the one every ITK-based tool (3D Slicer, ITK-SNAP, SimpleITK) shares: the
``TransformMatrix`` gives the axis directions and ``Offset`` the first voxel's centre, in LPS
millimetres; ``ElementSpacing`` scales the axes. ``AnatomicalOrientation`` only restates what the
matrix says and ITK does not place by it; viz3d warns when the two disagree.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import Viz3dError, check_regular_file, warn
from .volume import Volume, check_grid, ct_values, label_values

META_SUFFIXES = (".mha", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_stderr_lock = threading.Lock()


def is_metaimage(path: Path, head: bytes) -> bool:
    """Whether a file claims to be MetaImage: its name or a first line such as ``ObjectType = Image``.

    >>> is_metaimage(Path("ct.mha"), b""), is_metaimage(Path("ct"), b"ObjectType = Image\\nNDims = 3\\n")
    (True, True)
    """
    return path.name.lower().endswith(META_SUFFIXES) or re.match(rb"\s*(ObjectType|NDims)\s*=", head) is not None


def read_metaimage(path):
    """The SimpleITK image of a MetaImage file; any failure is one `Viz3dError` naming the reason.

    MetaIO writes its complaints to the process's stderr; they are caught and the first one
    becomes the message instead.
    """
    import SimpleITK as sitk

    path = Path(path)
    check_regular_file(path, "a MetaImage file (.mha or .mhd)")
    reader = sitk.ImageFileReader()
    reader.SetImageIO("MetaImageIO")
    reader.SetFileName(str(path))
    said = ""
    try:
        with _stderr_caught() as caught:
            try:
                image = reader.Execute()
            finally:
                said = caught()
    except MemoryError:
        raise Viz3dError(f"{path}: not enough memory to load the image") from None
    except RuntimeError as exc:
        raise Viz3dError(f"{path}: not a readable MetaImage file ({_reason(said, exc)})") from None
    return image


def metaimage_affine(path, image) -> np.ndarray:
    """The voxel -> RAS mm affine of a SimpleITK image (its direction, spacing, origin in LPS).

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> image = sitk.Image(4, 5, 6, sitk.sitkInt16)
    >>> image.SetSpacing((2.0, 2.0, 3.0)); image.SetOrigin((10.0, 20.0, 30.0))
    >>> metaimage_affine("ct.mha", image).tolist()
    [[-2.0, 0.0, 0.0, -10.0], [0.0, -2.0, 0.0, -20.0], [0.0, 0.0, 3.0, 30.0], [0.0, 0.0, 0.0, 1.0]]
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    check_grid(path, affine, "TransformMatrix, ElementSpacing and Offset")
    return affine


def metaimage_volume(path, role: str) -> Volume:
    """A MetaImage file as a CT (``role="ct"``) or label map (``role="label"``) `Volume`."""
    import SimpleITK as sitk

    path = Path(path)
    image = read_metaimage(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise Viz3dError(f"{path}: {image.GetNumberOfComponentsPerPixel()} values per voxel: expected a scalar image")
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise Viz3dError(f"{path}: expected a 3-D image, got size {tuple(image.GetSize())}")
    affine = metaimage_affine(path, image)
    _check_orientation(path, affine)
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # SimpleITK's (z, y, x) -> (i, j, k)
    meta = {"path": str(path), "format": "MetaImage", "header_dtype": str(array.dtype), "hounsfield": True}
    values = ct_values(path, array, meta) if role == "ct" else label_values(path, array)
    return Volume(values, affine, str(path), meta)


def _check_orientation(path: Path, affine: np.ndarray) -> None:
    """Warn when the header's AnatomicalOrientation contradicts its TransformMatrix.

    MetaIO's three letters say where each axis comes *from* (``RAI``: x from right to left, y
    from anterior to posterior, z from inferior to superior, i.e. LPS axes).
    """
    stated = _header_field(path, "AnatomicalOrientation")
    if not stated or len(stated) != 3 or "?" in stated:
        return
    import nibabel as nib

    opposite = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
    towards = "".join(opposite.get(letter, "?") for letter in stated.upper())
    actual = "".join(nib.aff2axcodes(affine))
    if towards != actual:
        warn(f"{path}: AnatomicalOrientation {stated} (axes towards {towards}) contradicts the TransformMatrix "
             f"(axes towards {actual}): placed by the TransformMatrix, as ITK does", stacklevel=4)


def _header_field(path: Path, key: str) -> str | None:
    """One ``Key = value`` field of a MetaImage text header (the header ends at ElementDataFile)."""
    with open(path, "rb") as stream:
        for raw in stream:
            if len(raw) > 4096:
                return None
            name, _, value = raw.decode("latin-1").partition("=")
            if name.strip() == key:
                return value.strip()
            if name.strip() == "ElementDataFile":
                return None
    return None


class _stderr_caught:
    """Send file descriptor 2 to a temporary file for a moment; ``caught()`` gives what came."""

    def __enter__(self):
        _stderr_lock.acquire()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self._read

    def _read(self) -> str:
        self._file.flush()
        self._file.seek(0)
        return self._file.read(1 << 16).decode("utf-8", "replace")

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.close()
        _stderr_lock.release()
        return False


def _reason(said: str, exc: Exception) -> str:
    """The most telling line of what MetaIO printed, else ITK's description."""
    for line in said.splitlines():
        line = line.strip()
        if line and not line.startswith(("MetaObject:", "MetaImage:")):
            return line.rstrip(".")
    for line in str(exc).splitlines():
        if "ITK ERROR" in line:
            return line.split(":", 2)[-1].strip()
    return "SimpleITK could not read it"
