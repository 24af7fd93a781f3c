"""Small synthetic DICOM studies for tests: a CT series written by pydicom, with an RTSTRUCT
(rt-utils) or a DICOM SEG (highdicom) drawn on it, laid out as PACS exports put them.

The CT is ``ROWS x COLUMNS x SLICES`` voxels of 1 x 1 x ``STEP`` mm, axial, with its first
voxel centre at LPS (-10, -12, 0); the structures are boxes given by voxel ranges, so every
test knows where each voxel of them is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS, COLUMNS, SLICES, STEP = 24, 20, 8, 2.0
ORIGIN = (-10.0, -12.0, 0.0)  # LPS mm of the first voxel's centre
BOXES = {"liver": ((2, 7), (3, 15), (4, 12)), "spleen": ((1, 4), (16, 22), (2, 8))}
"""Structure name -> (slices, rows, columns) voxel ranges."""
COLOURS = {"liver": (220, 120, 60), "spleen": (60, 120, 220)}


def write_ct_series(folder: Path, series_uid: str | None = None, slices: int = SLICES) -> list:
    """A CT series of ``slices`` axial slices in ``folder`` (one file each); its datasets, feet first."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = series_uid or generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, frame_uid
        ds.PatientID, ds.PatientName, ds.StudyID, ds.AccessionNumber = "synthetic", "Synthetic^Case", "1", "1"
        ds.StudyDate, ds.StudyTime, ds.Manufacturer, ds.PatientBirthDate, ds.PatientSex = "20260101", "1200", "x", "", "O"
        ds.ReferringPhysicianName, ds.StudyDescription = "", "synthetic"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = "CT", 2, k + 1, "synthetic CT"
        ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], ORIGIN[2] + STEP * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.Rows, ds.Columns = [1.0, 1.0], STEP, ROWS, COLUMNS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.full((ROWS, COLUMNS), 1024 + 40, np.int16).tobytes()
        ds.save_as(str(folder / f"ct{k:03d}.dcm"), enforce_file_format=True)
        datasets.append(ds)
    return datasets


def box_masks(slices: int = SLICES) -> dict[str, np.ndarray]:
    """Each of `BOXES` as a boolean (slices, rows, columns) array."""
    masks = {}
    for name, ranges in BOXES.items():
        mask = np.zeros((slices, ROWS, COLUMNS), bool)
        mask[tuple(slice(*r) for r in ranges)] = True
        masks[name] = mask
    return masks


def write_rtstruct(ct_folder: Path, path: Path, masks: dict | None = None) -> Path:
    """An RTSTRUCT drawn by rt-utils on the series in ``ct_folder`` (`box_masks` by default)."""
    import rt_utils

    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(ct_folder))
    for name, mask in (masks or box_masks()).items():
        builder.add_roi(mask=mask.transpose(1, 2, 0), color=list(COLOURS.get(name, (200, 200, 0))), name=name,
                        approximate_contours=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    builder.save(str(path))
    return path


def write_seg(datasets: list, path: Path, masks: dict | None = None) -> Path:
    """A binary DICOM SEG written by highdicom on ``datasets`` (`box_masks` by default)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    masks = masks or box_masks(len(datasets))
    descriptions = [hd.seg.SegmentDescription(
        number, name, codes.SCT.Organ, codes.SCT.Organ, hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        display_color=hd.color.CIELabColor.from_rgb(*COLOURS.get(name, (200, 200, 0))))
        for number, name in enumerate(masks, start=1)]
    array = np.stack([mask.astype(np.uint8) for mask in masks.values()], axis=-1)
    seg = hd.seg.Segmentation(datasets, array, "BINARY", descriptions, generate_uid(), 1, generate_uid(), 1,
                              "viz3d tests", "highdicom", "1", "1")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(path))
    return path
