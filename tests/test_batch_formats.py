"""`viz3d batch` on every input format of issue #17, in a folder per case and in a CSV manifest.

Each case is small and synthetic, written by an independent writer: NRRD by pynrrd, MetaImage
by SimpleITK, a 3D Slicer ``.seg.nrrd`` by slicerio, a TotalSegmentator-style mask folder by
nibabel (the CTs and label maps: `viz3d.batch.sample.synthetic_case`, 24^3 voxels of 2 mm), and
a DICOM CT series by pydicom with an RTSTRUCT (rt-utils) or a DICOM SEG (highdicom) drawn on it
(`synthetic_dicom`: a liver box of 480 voxels and a spleen box of 108).
"""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from synthetic_dicom import BOXES, box_masks, write_ct_series, write_rtstruct, write_seg
from viz3d.batch.case import MARKER
from viz3d.batch.layouts import Case, discover
from viz3d.batch.options import BatchOptions
from viz3d.batch.run import run_batch
from viz3d.batch.sample import synthetic_case

nrrd = pytest.importorskip("nrrd")
sitk = pytest.importorskip("SimpleITK")
slicerio = pytest.importorskip("slicerio")
pytest.importorskip("rt_utils")
pytest.importorskip("highdicom")

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
DICOM_NAMES = sorted(BOXES)  # liver, spleen
EXPECTED = {"nrrd": ["L1", "L2"], "metaimage": ["L1", "L2"], "slicer": ["ball", "box"],
            "totalseg": ["liver", "spleen"], "rtstruct": DICOM_NAMES, "dicomseg": DICOM_NAMES}
"""Case -> the names of its label surfaces (NRRD and MetaImage label maps: the default table's)."""


def write_nrrd(path, array, affine):
    header = {"space": "left-posterior-superior", "space directions": (RAS_TO_LPS @ affine)[:3, :3].T,
              "space origin": (RAS_TO_LPS @ affine)[:3, 3], "kinds": ["domain"] * 3, "encoding": "gzip"}
    nrrd.write(str(path), array, header, index_order="F")


def write_metaimage(path, array, affine):
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))  # SimpleITK is z, y, x
    lps = RAS_TO_LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(image, str(path))


def write_cases(root):
    """One case folder per format; returns case id -> (CT path, label path) as discovery should find them."""
    ct, label, affine = synthetic_case(0)
    cases = {}
    folder = root / "nrrd"
    folder.mkdir(parents=True)
    write_nrrd(folder / "ct.nrrd", ct, affine)
    write_nrrd(folder / "label.nrrd", label, affine)
    cases["nrrd"] = (folder / "ct.nrrd", folder / "label.nrrd")
    folder = root / "metaimage"
    folder.mkdir()
    write_metaimage(folder / "scan.mha", ct, affine)
    write_metaimage(folder / "seg.mha", label, affine)
    cases["metaimage"] = (folder / "scan.mha", folder / "seg.mha")
    folder = root / "slicer"
    folder.mkdir()
    nib.save(nib.Nifti1Image(ct, affine), str(folder / "ct.nii.gz"))
    segmentation = slicerio.create_segmentation(label.shape, RAS_TO_LPS @ affine)
    for value, name, colour in ((1, "ball", [0.9, 0.6, 0.2]), (2, "box", [0.2, 0.5, 0.9])):
        slicerio.add_segment(segmentation, label == value, {"id": name, "name": name, "color": colour})
    slicerio.write_segmentation(str(folder / "Segmentation.seg.nrrd"), segmentation)
    cases["slicer"] = (folder / "ct.nii.gz", folder / "Segmentation.seg.nrrd")
    folder = root / "totalseg"
    (folder / "segmentations").mkdir(parents=True)
    nib.save(nib.Nifti1Image(ct, affine), str(folder / "ct.nii.gz"))
    for value, name in ((1, "liver"), (2, "spleen")):
        nib.save(nib.Nifti1Image((label == value).astype(np.uint8), affine), str(folder / "segmentations" / f"{name}.nii.gz"))
    cases["totalseg"] = (folder / "ct.nii.gz", folder / "segmentations")
    datasets = write_ct_series(root / "rtstruct" / "CT")
    write_rtstruct(root / "rtstruct" / "CT", root / "rtstruct" / "RS.dcm")
    cases["rtstruct"] = (root / "rtstruct" / "CT", root / "rtstruct" / "RS.dcm")
    datasets = write_ct_series(root / "dicomseg" / "CT")
    write_seg(datasets, root / "dicomseg" / "SEG" / "seg.dcm")
    cases["dicomseg"] = (root / "dicomseg" / "CT", root / "dicomseg" / "SEG" / "seg.dcm")
    return cases


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return root, write_cases(root)


@pytest.fixture(scope="module")
def inline_run(dataset, tmp_path_factory):
    root, _ = dataset
    out = tmp_path_factory.mktemp("out")
    return out, run_batch(discover(root, "folders").cases, BatchOptions(export="stl"), out, engine="inline")


def label_names(out, case) -> list[str]:
    manifest = json.loads((out / case / "meshes" / "manifest.json").read_text())
    return sorted(m["name"] for m in manifest["meshes"] if m["name"] != "bone")


def test_a_folder_per_case_finds_the_ct_and_label_of_every_format(dataset):
    root, cases = dataset
    found = discover(root)
    assert found.layout == "folders" and found.skipped == ()
    assert found.cases == tuple(Case(case, ct, label) for case, (ct, label) in sorted(cases.items()))


def test_every_format_runs_to_its_named_surfaces(inline_run):
    out, result = inline_run
    assert {record["case"]["case"]: record["case"]["status"] for record in result.records} == dict.fromkeys(EXPECTED, "done")
    for case, names in EXPECTED.items():
        assert label_names(out, case) == names, case


def test_the_summary_gives_each_dicom_structure_its_box_volume(inline_run):
    """1 x 1 x 2 mm voxels: the liver box (480 voxels) is 0.96 mL, the spleen box (108) 0.216 mL;
    the surfaces enclose about that (smoothing rounds the corners)."""
    out, result = inline_run
    for case in ("rtstruct", "dicomseg"):
        record = json.loads((out / case / MARKER).read_text())
        volumes = {s["name"]: s["volume_ml"] for s in record["structures"] if s["name"] in DICOM_NAMES}
        for name, voxels in (("liver", 480), ("spleen", 108)):
            assert abs(volumes[name] / (voxels * 2e-3) - 1) < 0.25, (case, name, volumes[name])


def test_a_manifest_of_every_format_gives_the_same_cases(dataset, tmp_path):
    root, cases = dataset
    manifest = tmp_path / "cases.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "image", "mask", "site"])
        for case, (ct, label) in sorted(cases.items()):
            writer.writerow([case, ct, label, "A"])
    found = discover(manifest)
    assert found.layout == "manifest" and found.skipped == ()
    assert [(c.id, c.ct, c.label, c.extra) for c in found.cases] == [
        (case, ct, label, (("site", "A"),)) for case, (ct, label) in sorted(cases.items())]
    result = run_batch([c for c in found.cases if c.id in ("metaimage", "rtstruct")], BatchOptions(export="stl"),
                       tmp_path / "out", engine="inline")
    assert not result.failed
    assert label_names(tmp_path / "out", "rtstruct") == DICOM_NAMES and label_names(tmp_path / "out", "metaimage") == ["L1", "L2"]


def test_a_pacs_export_with_the_rtstruct_among_the_slices_is_one_case(dataset, tmp_path):
    """CT slices and the RTSTRUCT in one folder (named RS...dcm, after more slices than are peeked
    at): the folder is the CT and the RTSTRUCT the label."""
    root, _ = dataset
    folder = tmp_path / "p1" / "DICOM"
    write_ct_series(folder, slices=24)
    write_rtstruct(folder, folder / "RS.rtstruct.dcm", box_masks(24))
    found = discover(tmp_path, "folders")
    assert found.cases == (Case("p1", folder, folder / "RS.rtstruct.dcm"),)


def test_a_case_folder_with_a_label_map_and_an_rtstruct_says_there_are_two(dataset, tmp_path):
    root, cases = dataset
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "label.nii.gz").write_bytes(cases["slicer"][0].read_bytes())
    (folder / "ct.nii.gz").write_bytes(cases["slicer"][0].read_bytes())
    (folder / "RS.dcm").write_bytes(cases["rtstruct"][1].read_bytes())
    found = discover(tmp_path, "folders")
    assert [(s.path, s.why) for s in found.skipped] == [
        ("both", "several label maps (label.nii.gz, RS.dcm): keep one per case folder")]


def test_a_totalsegmentator_folder_of_more_masks_than_are_peeked_at_is_the_label(dataset, tmp_path):
    root, cases = dataset
    folder = tmp_path / "many"
    (folder / "segmentations").mkdir(parents=True)
    (folder / "ct.nii.gz").write_bytes(cases["totalseg"][0].read_bytes())
    mask = (cases["totalseg"][1] / "liver.nii.gz").read_bytes()
    for number in range(30):
        (folder / "segmentations" / f"structure_{number:02d}.nii.gz").write_bytes(mask)
    assert discover(tmp_path, "folders").cases == (Case("many", folder / "ct.nii.gz", folder / "segmentations"),)
