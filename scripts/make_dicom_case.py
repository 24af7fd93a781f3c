#!/usr/bin/env python3
"""Write a NIfTI CT as a JPEG 2000 lossless DICOM series, for benchmarks of DICOM loading.

The header of each slice is the first file of the real sample series
(``../shared/data/totalseg_example/ct_dicom``: JPEG 2000 lossless, RescaleIntercept -1024) with
the geometry, pixel data and UIDs of the new series. Stored values are HU + 1024 (HU below
-1024 become -1024), so the series loads back to the NIfTI's array and affine exactly.

    python scripts/make_dicom_case.py bench-cases/z6/ct.nii.gz bench-cases/z6/dicom-j2k
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, generate_uid

from viz3d.io.dicom import LPS_TO_RAS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_SERIES = ROOT.parent / "shared" / "data" / "totalseg_example" / "ct_dicom"


def write_series(ct_path: Path, out: Path) -> int:
    """Write ``ct_path`` (a RAS NIfTI) as one DICOM file per slice into ``out``; return the slice count.

    Written into a temporary folder that replaces ``out`` at the end, so an interrupted run
    leaves no half series behind.
    """
    image = nib.load(ct_path)
    hu = np.asanyarray(image.dataobj)
    affine = LPS_TO_RAS @ image.affine  # the flip is its own inverse: voxel (column, row, slice) -> LPS mm
    stored = (np.clip(hu.astype(np.int32), -1024, 65535 - 1024) + 1024).astype(np.uint16)
    template = pydicom.dcmread(sorted(p for p in TEMPLATE_SERIES.iterdir() if p.is_file())[0])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    series, study = generate_uid(), generate_uid()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    for k in range(hu.shape[2]):
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series, study
        ds.SeriesDescription = f"{ct_path.name} as JPEG 2000"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in np.r_[affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]]]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in affine[:3, :3] @ [0, 0, k] + affine[:3, 3]]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # between rows, between columns
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.BitsStored, ds.HighBit = 16, 15
        ds.compress(JPEG2000Lossless, np.ascontiguousarray(stored[:, :, k].T), encoding_plugin="pylibjpeg")
        ds.save_as(tmp / f"slice{k:04d}.dcm", enforce_file_format=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return hu.shape[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ct", type=Path, help="CT as NIfTI (HU)")
    parser.add_argument("out", type=Path, help="folder for the series (replaced)")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {write_series(args.ct, args.out)} slices to {args.out}")


if __name__ == "__main__":
    main()
