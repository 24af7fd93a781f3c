"""A folder of one NIfTI mask per structure (TotalSegmentator's default output: ``spleen.nii.gz``,
``kidney_right.nii.gz``, ...) as a label input.

Each mask's name is its file name without ``.nii`` / ``.nii.gz``. When every name is one of
TotalSegmentator's classes, each keeps that class's value (the value its ``--ml`` label map
and the built-in ``totalsegmentator`` table give it); otherwise the masks are numbered 1, 2, ...
in name order. Every non-zero voxel of a mask is inside it; empty masks are skipped. Masks that
overlap go to different layers (see `viz3d.io.segmentation.Segmentation`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import Viz3dError
from .segmentation import Segmentation, layered
from .labels import LabelTable, builtin_table
from .volume import NIFTI_SUFFIXES, Volume

SOURCE = "file names (mask folder)"
SOURCE_TOTALSEG = "file names (TotalSegmentator folder)"


def mask_files(folder) -> list[tuple[str, Path]]:
    """(structure name, file) of every NIfTI mask directly in ``folder``, in name order.

    Raises
    ------
    Viz3dError
        When the folder holds no NIfTI file, or two files give one name.
    """
    folder = Path(folder)
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise Viz3dError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    masks: dict[str, Path] = {}
    for entry in entries:
        lower = entry.lower()
        if entry.startswith(".") or not lower.endswith(NIFTI_SUFFIXES):
            continue
        name = entry[: -len(".nii.gz")] if lower.endswith(".nii.gz") else entry[: -len(".nii")]
        if name in masks:
            raise Viz3dError(f"{folder}: {masks[name].name} and {entry} are both masks of '{name}'")
        masks[name] = folder / entry
    if not masks:
        raise Viz3dError(f"{folder}: a folder given as a label map must hold one NIfTI mask per structure "
                         "(TotalSegmentator's output); this one holds no .nii or .nii.gz file")
    return sorted(masks.items())


def mask_folder_table(folder) -> LabelTable:
    """The names (and TotalSegmentator's values and colours, where they all are its classes) of a
    mask folder's structures.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("spleen", "liver"):
    ...     _ = (folder / f"{name}.nii.gz").write_bytes(b"")
    >>> table = mask_folder_table(folder)
    >>> table.names, table.source
    ({5: 'liver', 1: 'spleen'}, 'file names (TotalSegmentator folder)')
    """
    folder = Path(folder)
    masks = mask_files(folder)
    known = builtin_table("totalsegmentator")
    by_name = {name: value for value, name in known.names.items()}
    if all(name in by_name for name, _ in masks):
        values = {name: by_name[name] for name, _ in masks}
        colors = {values[name]: known.colors[values[name]] for name, _ in masks if values[name] in known.colors}
        return LabelTable(folder.name, {values[name]: name for name, _ in masks}, colors, SOURCE_TOTALSEG)
    return LabelTable(folder.name, {value: name for value, (name, _) in enumerate(masks, start=1)}, {}, SOURCE)


def read_mask_folder(folder) -> Segmentation:
    """A mask folder as a `Segmentation`: the masks' values painted into label-map layers (a mask
    goes to the first layer none of whose voxels it overlaps), with `mask_folder_table`'s names.

    Raises
    ------
    Viz3dError
        When a mask cannot be read or is not on the grid of the first.
    """
    from .volume import load_nifti_label

    folder = Path(folder)
    table = mask_folder_table(folder)
    value_of = {name: value for value, name in table.names.items()}
    files = mask_files(folder)
    grid = load_nifti_label(files[0][1])

    def masks():  # one at a time: a folder of 117 masks is 117 CT-sized arrays
        for name, path in files:
            mask = grid if path == files[0][1] else load_nifti_label(path)
            if mask.shape != grid.shape or not np.allclose(mask.affine, grid.affine, atol=1e-3):
                raise Viz3dError(f"{path}: not on the grid of {grid.source} ({mask.shape} vs {grid.shape} voxels, "
                                 "or another affine): a mask folder's masks share one grid")
            yield value_of[name], mask.array != 0  # an empty mask (structure not found) paints nothing

    layers = layered(masks(), grid.shape, np.uint8 if max(value_of.values()) < 256 else np.uint16)
    meta = {"path": str(folder), "format": "mask folder"}
    return Segmentation(tuple(Volume(layer, grid.affine, str(folder), dict(meta)) for layer in layers), table)
