"""The few functions notebooks, scripts and the command line use: load -> meshes -> scene -> outputs.

Example::

    import viz3d
    ct, label = viz3d.load_ct("ct.nii.gz"), viz3d.load_label("label.nii.gz")
    meshes = viz3d.build_meshes(ct, label, table="totalsegmentator")
    viz3d.export_meshes(meshes, "meshes/")                          # STL + manifest.json
    viz3d.screenshot(viz3d.build_scene(meshes, ct, off_screen=True), "scene.png")
"""
from __future__ import annotations

import warnings

import numpy as np

from .errors import Viz3dError
from .meshing import DEFAULT_BONE_HU, Mesh, bone_mesh, label_meshes
from .dicom import is_dicom_path, list_series, load_dicom
from .volume import Volume, load_label
from .volume import load_ct as _load_nifti_ct


def load_ct(path, series=None) -> Volume:
    """A CT in Hounsfield units from a NIfTI file, or from a DICOM folder or any file of a series.

    ``series`` picks one of several DICOM series (see `viz3d.dicom.load_dicom`).
    """
    return load_dicom(path, series=series) if is_dicom_path(path) else _load_nifti_ct(path)


class Viz3dWarning(UserWarning):
    """Something the user should know about their inputs that does not stop the work."""


def alignment_warnings(ct: Volume, label: Volume) -> list[str]:
    """Say when a CT and a label map are not on one grid, and loudly when they do not overlap.

    Each surface is placed with its own file's affine, so the overlay stays right in world
    space even when the grids differ; this only tells the user that they differ.
    """
    if ct.same_grid(label):
        return []
    messages = [
        f"CT {ct.source or ''} {ct.shape} and label {label.source or ''} {label.shape} are on different grids; "
        "each is placed in world space with its own affine (no resampling)"
    ]
    a, b = ct.world_bounds(), label.world_bounds()
    if np.any(a[1] < b[0]) or np.any(b[1] < a[0]):
        messages.append(
            "CT and label DO NOT OVERLAP in world space (CT box "
            f"{np.round(a, 1).tolist()} mm, label box {np.round(b, 1).tolist()} mm): they are probably not the same patient or scan"
        )
    return messages


def build_meshes(
    ct: Volume | None = None,
    label: Volume | None = None,
    *,
    table=None,
    labels: list[int] | None = None,
    bone: bool = True,
    bone_hu: float = DEFAULT_BONE_HU,
    smooth: bool = True,
    progress=None,
) -> list[Mesh]:
    """Label surfaces (from ``label``) followed by the bone surface (from ``ct``), in RAS mm.

    ``table`` is a `LabelTable`, a built-in table name or a label-table file (default: the
    workshop's ``spinopelvic10``). Grid mismatches between ``ct`` and ``label`` are reported
    with `Viz3dWarning`.
    """
    from .labels import LabelTable, load_label_table

    if ct is None and label is None:
        raise Viz3dError("nothing to mesh: give a CT, a label map, or both")
    if ct is not None and label is not None:
        for message in alignment_warnings(ct, label):
            warnings.warn(message, Viz3dWarning, stacklevel=2)
    names = table if isinstance(table, LabelTable) else load_label_table(table)
    meshes = []
    if label is not None:
        meshes += label_meshes(label, names, labels=labels, smooth=smooth, progress=progress)
    if ct is not None and bone:
        surface = bone_mesh(ct, hu=bone_hu, smooth=smooth)
        if surface is not None:
            meshes.append(surface)
        else:
            warnings.warn(f"no voxel of {ct.source or 'the CT'} reaches {bone_hu:g} HU: no bone surface", Viz3dWarning, stacklevel=2)
    return meshes


def label_statistics(label: Volume, table=None) -> list[dict]:
    """Per class present: value, name, voxel count and volume in mL (counted inside each class's box)."""
    from scipy import ndimage

    from .labels import LabelTable, load_label_table

    names = table if isinstance(table, LabelTable) else load_label_table(table)
    rows = []
    for value, box in enumerate(ndimage.find_objects(label.array), start=1):
        if box is None:
            continue
        count = int(np.count_nonzero(label.array[box] == value))
        rows.append({"value": value, "name": names.name_of(value), "voxels": count, "volume_ml": count * label.voxel_volume_mm3 / 1000.0})
    return rows
