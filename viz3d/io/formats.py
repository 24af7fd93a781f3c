"""The one loading seam: every input format viz3d reads is one `Format` entry in `FORMATS`.

A format says whether a path is one of its files (`Format.claims`, from the name or the first
bytes) and gives up to three functions: a CT reader returning a `Volume`, a label reader
returning a `Segmentation` (given the CT, where there is one: a DICOM SEG is checked against
its frame of reference, an RTSTRUCT's contours are filled onto its grid), and the label table
(names, colours) its files carry. `load_ct`, `load_segmentation` and `table_in_file` pick the
first entry that claims the path, so a new format is one new entry.

========================  =====  =====  ==============================================
format                    CT     label  claimed by
========================  =====  =====  ==============================================
NIfTI                     yes    yes    ``.nii``, ``.nii.gz`` (and whatever no other claims)
NRRD, 3D Slicer seg.nrrd  yes    yes    ``.nrrd``, ``.nhdr``, or the ``NRRD000`` magic
MetaImage                 yes    yes    ``.mha``, ``.mhd``, or a ``ObjectType =`` first line
DICOM series              yes           a folder, ``.dcm``, or ``DICM`` at byte 128
DICOM SEG, RTSTRUCT              yes    their SOP class in the DICOM file meta
mask folder                      yes    a folder (TotalSegmentator: one NIfTI per structure)
========================  =====  =====  ==============================================

A SEG or RTSTRUCT named as the CT is refused in one line saying to give it as the label; given
without a CT, an RTSTRUCT is filled onto the CT series it names, found in its folder or a sibling
folder (`viz3d.io.dicom_seg.find_referenced_ct`).

A file that claims a format and is not one of its files is refused by that format's reader
with one `Viz3dError` naming the file and the reason (never passed on to another reader).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from . import labels
from ..errors import Viz3dError
from .labels import LabelTable, is_nifti_name
from .segmentation import Segmentation, reference_ct
from .volume import NIFTI_SUFFIXES, Volume

HEAD_BYTES = 1 << 16  # what `Format.claims` sees of a file: magic numbers and a NRRD header's first fields


@dataclass(frozen=True)
class Format:
    """One input format.

    Parameters
    ----------
    name : str
        What it is called in messages (``"NRRD"``).
    claims : callable
        ``claims(path, head) -> bool``: whether ``path`` (a file whose first bytes are ``head``,
        or a folder, with ``head`` empty) is one of its files.
    read_ct : callable or None
        ``read_ct(path, series, progress) -> Volume`` for a CT in Hounsfield units.
    read_segmentation : callable or None
        ``read_segmentation(path, reference) -> Segmentation`` for a label map or segmentation;
        ``reference`` is the CT (a `Volume`, a function returning it, or None), which only the
        formats that need it look at (`reference_ct`).
    names : callable or None
        ``names(path) -> LabelTable | None``: the table the file carries, read cheaply (a
        header), for `table_in_file`.
    """

    name: str
    claims: Callable[[Path, bytes], bool]
    read_ct: Callable | None = None
    read_segmentation: Callable[[Path, object], Segmentation] | None = None
    names: Callable[[Path], LabelTable | None] | None = None


def _nifti_ct(path, series=None, progress=None) -> Volume:
    from .volume import load_ct

    return load_ct(path)


def _nifti_segmentation(path, reference=None) -> Segmentation:
    from .volume import load_nifti_label

    return Segmentation((load_nifti_label(path),))


def _dicom_ct(path, series=None, progress=None) -> Volume:
    from .dicom import load_dicom

    return load_dicom(path, series=series, progress=progress)


def _claims_dicom(path: Path, head: bytes) -> bool:
    from .dicom import is_dicom_path

    return is_dicom_path(path)


def _nrrd_ct(path, series=None, progress=None) -> Volume:
    from .nrrd import nrrd_volume

    return nrrd_volume(path, "ct")


def _nrrd_segmentation(path, reference=None) -> Segmentation:
    from .nrrd import nrrd_volume, read_header
    from .slicer_seg import is_slicer_header, read_slicer_segmentation

    if is_slicer_header(read_header(path)):
        return read_slicer_segmentation(path)
    return Segmentation((nrrd_volume(path, "label"),))


def _nrrd_names(path) -> LabelTable | None:
    from .nrrd import read_header
    from .slicer_seg import is_slicer_header, slicer_table

    header = read_header(path)
    return slicer_table(path, header) if is_slicer_header(header) else None


def _claims_nrrd(path: Path, head: bytes) -> bool:
    from .nrrd import is_nrrd

    return is_nrrd(path, head)


def _metaimage_ct(path, series=None, progress=None) -> Volume:
    from .metaimage import metaimage_volume

    return metaimage_volume(path, "ct")


def _metaimage_segmentation(path, reference=None) -> Segmentation:
    from .metaimage import metaimage_volume

    return Segmentation((metaimage_volume(path, "label"),))


def _claims_metaimage(path: Path, head: bytes) -> bool:
    from .metaimage import is_metaimage

    return is_metaimage(path, head)


def _claims_mask_folder(path: Path, head: bytes) -> bool:
    return path.is_dir()


def _mask_folder_segmentation(path, reference=None) -> Segmentation:
    from .totalseg import read_mask_folder

    return read_mask_folder(path)


def _mask_folder_names(path) -> LabelTable | None:
    from .totalseg import mask_folder_table

    return mask_folder_table(path)


def _claims_dicom_seg(path: Path, head: bytes) -> bool:
    from .dicom_seg import is_dicom_seg

    return is_dicom_seg(path, head)


def _dicom_seg_segmentation(path, reference=None) -> Segmentation:
    from .dicom_seg import read_dicom_seg

    return read_dicom_seg(path, reference_ct(reference))


def _dicom_seg_names(path) -> LabelTable | None:
    from .dicom_seg import dicom_seg_table

    return dicom_seg_table(path)


def _claims_rtstruct(path: Path, head: bytes) -> bool:
    from .rtstruct import is_rtstruct

    return is_rtstruct(path, head)


def _rtstruct_segmentation(path, reference=None) -> Segmentation:
    from .rtstruct import read_rtstruct

    return read_rtstruct(path, reference_ct(reference))


def _rtstruct_names(path) -> LabelTable | None:
    from .rtstruct import rtstruct_table

    return rtstruct_table(path)


def _segmentation_as_ct(path, series=None, progress=None) -> Volume:
    """A DICOM SEG or RTSTRUCT named where the CT goes: refused in one line saying where it goes.

    >>> _segmentation_as_ct("rs.dcm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: rs.dcm: a DICOM segmentation (SEG or RTSTRUCT), not a CT: give it as the label (--label rs.dcm); ...
    """
    raise Viz3dError(f"{path}: a DICOM segmentation (SEG or RTSTRUCT), not a CT: give it as the label (--label {path}); "
                     "the CT series it was drawn on is found beside it")


def _claims_other_dicom(path: Path, head: bytes) -> bool:
    return path.is_file() and (head[128:132] == b"DICM" or path.name.lower().endswith(".dcm"))


def _not_a_segmentation(path, reference=None) -> Segmentation:
    from .dicom_seg import refuse_dicom_image

    refuse_dicom_image(path)


NIFTI = Format("NIfTI", lambda path, head: path.name.lower().endswith(NIFTI_SUFFIXES),
               read_ct=_nifti_ct, read_segmentation=_nifti_segmentation)

FORMATS: tuple[Format, ...] = (
    NIFTI,
    Format("NRRD", _claims_nrrd, read_ct=_nrrd_ct, read_segmentation=_nrrd_segmentation, names=_nrrd_names),
    Format("MetaImage", _claims_metaimage, read_ct=_metaimage_ct, read_segmentation=_metaimage_segmentation),
    Format("DICOM SEG", _claims_dicom_seg, read_ct=_segmentation_as_ct, read_segmentation=_dicom_seg_segmentation,
           names=_dicom_seg_names),
    Format("DICOM RTSTRUCT", _claims_rtstruct, read_ct=_segmentation_as_ct, read_segmentation=_rtstruct_segmentation,
           names=_rtstruct_names),
    Format("DICOM", _claims_dicom, read_ct=_dicom_ct),
    Format("DICOM image (not a segmentation)", _claims_other_dicom, read_segmentation=_not_a_segmentation),
    Format("mask folder (TotalSegmentator)", _claims_mask_folder, read_segmentation=_mask_folder_segmentation,
           names=_mask_folder_names),
)
"""Every format, in the order they are asked whether a path is theirs (NIfTI, the fallback,
reads whatever no other format claims and says what is wrong with it)."""


def format_of(path, role: str) -> Format:
    """The format that reads ``path`` as a ``role`` (``"ct"`` or ``"label"``).

    >>> format_of("ct.nii.gz", "ct").name, format_of("seg.nrrd", "label").name, format_of("ct.mha", "ct").name
    ('NIfTI', 'NRRD', 'MetaImage')
    """
    path = Path(os.fspath(path))
    head = _head(path)
    for entry in FORMATS:
        reader = entry.read_ct if role == "ct" else entry.read_segmentation
        if reader is not None and entry.claims(path, head):
            return entry
    return NIFTI


def _head(path: Path) -> bytes:
    """The first `HEAD_BYTES` of a regular file (nothing for a folder, a FIFO or a missing file)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b""
        with open(path, "rb") as stream:
            return stream.read(HEAD_BYTES)
    except OSError:
        return b""


def load_ct(path, series=None, progress=None) -> Volume:
    """A CT in Hounsfield units from any format in `FORMATS` (``series`` and ``progress``: DICOM's,
    see `viz3d.io.dicom.load_dicom`)."""
    return format_of(path, "ct").read_ct(path, series, progress)


def load_segmentation(path, reference=None) -> Segmentation:
    """The label map or segmentation of a file or folder in any format in `FORMATS`.

    ``reference`` is the CT the segmentation belongs to, if any: a `Volume` or a function
    returning one (called only by the formats that need it: DICOM SEG, RTSTRUCT).
    """
    return format_of(path, "label").read_segmentation(Path(os.fspath(path)), reference)


def load_label(path: str | Path, reference=None) -> Volume:
    """Load a label map (integer class values) from any file or folder viz3d reads.

    NIfTI, NRRD, MetaImage, a 3D Slicer ``.seg.nrrd``, a TotalSegmentator folder, a DICOM SEG
    or RTSTRUCT: see `FORMATS` (`Segmentation.label`: with overlapping segments, their
    layers are in ``meta["layers"]``). Integer types are kept. Float files are accepted when
    every value is integral and non-negative.

    Parameters
    ----------
    path : str or path-like
        The label file, or a folder (TotalSegmentator's masks, a DICOM SEG or RTSTRUCT).
    reference : Volume, callable or None, optional
        The CT it belongs to (a `Volume`, a function returning one, or None): an RTSTRUCT is
        filled onto its grid, a DICOM SEG checked against its frame of reference.

    Returns
    -------
    Volume
        The label map: whole non-negative class values, 0 the background; ``source`` is
        ``path``.

    Raises
    ------
    Viz3dError
        Naming the file: when it is missing or unreadable, a DICOM image rather than a
        segmentation, an RTSTRUCT without a ``reference`` or of another frame of reference,
        or holds non-integral or negative values (the first offending value is named).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import nibabel as nib
    >>> import numpy as np
    >>> array = np.zeros((20, 20, 20), np.float32)
    >>> array[5:15, 5:15, 5:15] = 2.0
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "label.nii.gz"
    ...     nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    ...     label = load_label(path)
    >>> label.array.dtype, np.unique(label.array).tolist()
    (dtype('uint8'), [0, 2])
    >>> array[0, 0, 0] = 0.5
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +ELLIPSIS
    ...     path = pathlib.Path(folder) / "label.nii.gz"
    ...     nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    ...     load_label(path)
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: .../label.nii.gz: label map has non-integral values (e.g. 0.5); labels must be whole numbers
    """
    return load_segmentation(path, reference).label


def table_in_file(path) -> LabelTable | None:
    """The label table a label input carries itself (a ``.seg.nrrd``'s segments, a mask folder's
    file names), or None: then the names are looked for as for any label map.

    >>> table_in_file("label.nii.gz") is None
    True
    """
    entry = format_of(path, "label")
    if entry.names is None:
        return None
    return entry.names(Path(os.fspath(path)))


def resolve_label_table(spec=None, label_path=None) -> LabelTable:
    """The label table naming a label input's values, with its source: `viz3d.io.labels.resolve_label_table`'s
    order, with the table a non-NIfTI input carries itself (`table_in_file`) in second place.

    Parameters
    ----------
    spec : LabelTable, str, path-like or None
        What the user asked for (``--label-table``), or None.
    label_path : str, path-like or None
        The label input (a file or a folder); None gives ``spec`` or the default.

    Returns
    -------
    LabelTable

    Examples
    --------
    >>> resolve_label_table().source
    'default (spinopelvic10)'
    """
    carried = None
    if spec is None and label_path is not None and not is_nifti_name(label_path):
        carried = table_in_file(label_path)
    return labels.resolve_label_table(spec, label_path, carried=carried)
