"""Small synthetic datasets in each layout, for tests, examples and benchmarks of `viz3d batch`.

`make_dataset` writes tiny cases (24^3 voxels by default: a CT with a bright "bone" ball and a
label map of two structures) in any layout of `viz3d.batch.layouts`, optionally with a broken
case (a truncated file) and a case whose label map lies on another grid. ``source`` copies a
real CT and label map instead, one copy per case.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from ..errors import Viz3dError

NAMES = {1: "L1", 2: "L2"}  # the workshop scheme's names, as the default table gives them


def synthetic_case(index: int = 0, size: int = 24, spacing: float = 2.0):
    """(CT, label) arrays and their affine: a ball of 700 HU in -50 HU tissue, label 1 a ball and
    label 2 a box, both a little larger for each ``index``.

    Examples
    --------
    >>> ct, label, affine = synthetic_case(1)
    >>> ct.shape, sorted(set(label.ravel().tolist())), float(affine[0, 0])
    ((24, 24, 24), [0, 1, 2], 2.0)
    """
    import numpy as np

    grid = np.indices((size, size, size)).astype(np.float32)
    centre = (size - 1) / 2.0
    radius = size * (0.22 + 0.02 * (index % 3))
    ball = ((grid - centre) ** 2).sum(axis=0) <= radius ** 2
    ct = np.full((size,) * 3, -50, np.int16)
    ct[ball] = 700
    label = np.zeros((size,) * 3, np.uint8)
    label[ball] = 1
    lo, hi = size // 8, size // 8 + max(3, size // 6 + index % 2)
    label[lo:hi, lo:hi, lo:hi] = 2
    affine = np.diag([spacing, spacing, spacing, 1.0])
    return ct, label, affine


def make_dataset(folder, layout: str = "ctspinopelvic", n: int = 3, *, broken: bool = False,
                 other_grid: bool = False, source: tuple | None = None, size: int = 24) -> list[str]:
    """Write ``n`` cases (``s01``, ``s02``, ...) in ``layout`` under ``folder``; return their ids.

    ``broken`` adds a case ``broken`` whose CT file is cut short; ``other_grid`` a case
    ``shifted`` whose label map has its own grid (half the voxel size, shifted). ``source``
    ``(ct_path, label_path)`` copies real files instead of synthetic ones. For ``manifest``
    the cases go to ``folder/data/`` and the manifest is ``folder/cases.csv`` with a ``site``
    column.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> make_dataset(root, "nnunet", n=2)
    ['s01', 's02']
    >>> sorted(p.name for p in (root / "imagesTr").iterdir())
    ['s01_0000.nii.gz', 's02_0000.nii.gz']
    """
    folder = Path(folder)
    ids = [f"s{i:02d}" for i in range(1, n + 1)] + ["broken"] * broken + ["shifted"] * other_grid
    rows = []
    for index, case in enumerate(ids):
        ct_path, label_path = _paths(folder, layout, case)
        ct_path.parent.mkdir(parents=True, exist_ok=True)
        label_path.parent.mkdir(parents=True, exist_ok=True)
        if source is not None:
            shutil.copyfile(source[0], ct_path)
            shutil.copyfile(source[1], label_path)
        else:
            _write_synthetic(ct_path, label_path, index, size, shifted=case == "shifted")
        if case == "broken":
            data = ct_path.read_bytes()
            ct_path.write_bytes(data[: len(data) // 2])
        rows.append({"case_id": case, "ct": str(ct_path.relative_to(folder)),
                     "label": str(label_path.relative_to(folder)), "site": f"site-{index % 2 + 1}"})
    if layout == "nnunet":
        (folder / "dataset.json").write_text(json.dumps({
            "channel_names": {"0": "CT"}, "labels": {"background": 0, **{v: k for k, v in NAMES.items()}},
            "numTraining": len(ids), "file_ending": ".nii.gz"}, indent=1))
    if layout == "manifest":
        with open(folder / "cases.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return ids


def _paths(folder: Path, layout: str, case: str) -> tuple[Path, Path]:
    if layout == "nnunet":
        return folder / "imagesTr" / f"{case}_0000.nii.gz", folder / "labelsTr" / f"{case}.nii.gz"
    if layout == "ctspinopelvic":
        return folder / "ct" / f"{case}_ct.nii.gz", folder / "labels" / f"{case}_label.nii.gz"
    if layout == "folders":
        return folder / case / "ct.nii.gz", folder / case / "label.nii.gz"
    if layout == "manifest":
        return folder / "data" / f"{case}_ct.nii.gz", folder / "data" / f"{case}_seg.nii.gz"
    raise Viz3dError(f"unknown layout {layout!r}")


def _write_synthetic(ct_path: Path, label_path: Path, index: int, size: int, shifted: bool) -> None:
    import nibabel as nib
    import numpy as np

    ct, label, affine = synthetic_case(index, size)
    nib.save(nib.Nifti1Image(ct, affine), ct_path)
    if shifted:  # the same structures on a finer grid placed half a voxel off
        label = label.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        affine = affine.copy()
        affine[:3, :3] /= 2.0
        affine[:3, 3] += 0.5
    nib.save(nib.Nifti1Image(np.ascontiguousarray(label), affine), label_path)
