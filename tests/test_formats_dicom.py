"""Tests for DICOM SEG (viz3d.io.dicom_seg) and RTSTRUCT (viz3d.io.rtstruct) label inputs.

The real CT series (``ct_dicom/``, anonymised down to empty UIDs) is copied with the UIDs
filled in, as any PACS export has them; the segmentation is ``label_for_ct_dicom.nii.gz`` (the
real TotalSegmentator label map on that series' grid), taken onto the series' frames through
nibabel's affine and pydicom's ImagePositionPatient / ImageOrientationPatient / PixelSpacing.
The SEG is written by highdicom and the RTSTRUCT by rt-utils, both from three of its structures;
what viz3d reads back is compared with the NIfTI label map of those three structures (voxel
counts, RAS boxes, surface centres and volumes).
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import viz3d
from viz3d.cli.main import main
from viz3d.errors import Viz3dError, Viz3dWarning
from viz3d.io.formats import format_of, load_segmentation
from viz3d.io.segmentation import label_layers

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

ORGANS = {5: "liver", 1: "spleen", 87: "autochthon_right"}  # value in the NIfTI -> name
COLORS = {5: (220, 120, 60), 1: (60, 120, 220), 87: (180, 40, 200)}


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def series(sample_dir, tmp_path_factory):
    """The real series with its UIDs filled in, and its datasets sorted by position (feet first)."""
    from pydicom.uid import CTImageStorage, generate_uid

    folder = tmp_path_factory.mktemp("ct_series")
    series_uid, study_uid = generate_uid(), generate_uid()
    datasets = []
    for number, source in enumerate(sorted((sample_dir / "ct_dicom").iterdir())):
        ds = pydicom.dcmread(str(source))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.PatientID = series_uid, study_uid, "anon"
        ds.save_as(str(folder / f"ct{number:03d}.dcm"))
        datasets.append(ds)
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return folder, datasets


@pytest.fixture(scope="module")
def frames(series, sample_dir):
    """The NIfTI label map sampled at every pixel of every frame: (slices, rows, columns)."""
    _, datasets = series
    image = nib.load(str(sample_dir / "label_for_ct_dicom.nii.gz"))
    data, to_index = np.asanyarray(image.dataobj), np.linalg.inv(image.affine)
    first = datasets[0]
    row, col = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    spacing_r, spacing_c = (float(x) for x in first.PixelSpacing)
    r, c = np.meshgrid(np.arange(first.Rows), np.arange(first.Columns), indexing="ij")
    out = []
    for ds in datasets:
        lps = np.array(ds.ImagePositionPatient, float) + c[..., None] * spacing_c * row + r[..., None] * spacing_r * col
        ijk = np.rint((lps * [-1, -1, 1]) @ to_index[:3, :3].T + to_index[:3, 3]).astype(int)
        out.append(data[ijk[..., 0], ijk[..., 1], ijk[..., 2]])
    return np.stack(out)


def write_seg(path, datasets, masks: dict, fractional=False, frame_of_reference=None):
    """``masks`` (name -> (slices, rows, cols) array, colour) as a DICOM SEG written by highdicom."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    descriptions, arrays = [], []
    for number, (name, (mask, rgb)) in enumerate(masks.items(), start=1):
        descriptions.append(hd.seg.SegmentDescription(
            number, name, codes.SCT.Organ, codes.SCT.Organ, hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor.from_rgb(*rgb)))
        arrays.append(mask.astype(np.float32) if fractional else mask.astype(np.uint8))
    seg = hd.seg.Segmentation(
        datasets, np.stack(arrays, axis=-1), "FRACTIONAL" if fractional else "BINARY", descriptions,
        generate_uid(), 1, generate_uid(), 1, "viz3d tests", "highdicom", "1", "1")
    if frame_of_reference is not None:
        seg.FrameOfReferenceUID = frame_of_reference
    seg.save_as(str(path))
    return path


@pytest.fixture(scope="module")
def seg_file(series, frames, tmp_path_factory):
    _, datasets = series
    masks = {name: (frames == value, COLORS[value]) for value, name in ORGANS.items()}
    return write_seg(tmp_path_factory.mktemp("seg") / "seg.dcm", datasets, masks)


@pytest.fixture(scope="module")
def ct(series):
    return viz3d.load_ct(series[0])


@pytest.fixture(scope="module")
def nifti(sample_dir, tmp_path_factory):
    """The NIfTI label map the SEG and RTSTRUCT are made from: the real one's ORGANS (nibabel)."""
    image = nib.load(str(sample_dir / "label_for_ct_dicom.nii.gz"))
    data = np.asanyarray(image.dataobj)
    path = tmp_path_factory.mktemp("nifti") / "organs.nii.gz"
    nib.save(nib.Nifti1Image(np.where(np.isin(data, list(ORGANS)), data, 0).astype(np.uint8), image.affine), str(path))
    return path


@pytest.fixture(scope="module")
def nifti_rows(nifti):
    label = viz3d.load_label(nifti)
    return {row["value"]: row for row in viz3d.label_statistics(label, "totalsegmentator")}


def nifti_meshes(nifti) -> dict:
    return {m.label: m for m in viz3d.build_meshes(None, viz3d.load_label(nifti), table="totalsegmentator")}


def rows_by_name(label, table=None):
    return {row["name"]: row for row in viz3d.label_statistics(label, table)}


# ------------------------------------------------------------------ DICOM SEG


def test_a_seg_is_claimed_by_its_sop_class_not_its_name(seg_file, series):
    assert format_of(seg_file, "label").name == "DICOM SEG"
    assert format_of(next(series[0].iterdir()), "ct").name == "DICOM"


def test_seg_segments_have_their_labels_and_display_colours(seg_file):
    table = load_segmentation(seg_file).table
    assert table.names == dict(enumerate(ORGANS.values(), start=1))
    assert table.source == "DICOM SEG segment labels"
    for number, value in enumerate(ORGANS, start=1):
        assert np.allclose(np.array(table.color_of(number)) * 255, COLORS[value], atol=1.5)


def test_seg_voxels_land_where_the_nifti_label_maps_do(seg_file, ct, nifti_rows):
    """Same voxel counts and the same RAS boxes as the NIfTI label map of the same structures."""
    label = viz3d.load_label(seg_file, reference=ct)
    found = rows_by_name(label)
    for value, name in ORGANS.items():
        assert 0.99 < found[name]["voxels"] / nifti_rows[value]["voxels"] <= 1
        assert np.allclose(found[name]["bbox_mm"], nifti_rows[value]["bbox_mm"], atol=0.01)


def test_seg_surfaces_match_the_nifti_labels(seg_file, ct, nifti):
    mine = {m.name: m for m in viz3d.build_meshes(None, viz3d.load_label(seg_file, reference=ct))}
    theirs = nifti_meshes(nifti)
    for value, name in ORGANS.items():
        assert np.linalg.norm(mine[name].vertices.mean(axis=0) - theirs[value].vertices.mean(axis=0)) < 0.5
        assert abs(mesh_volume(mine[name]) / mesh_volume(theirs[value]) - 1) < 0.02


def mesh_volume(mesh) -> float:
    v = mesh.vertices[mesh.faces]
    return abs(float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()) / 6.0)


def test_a_fractional_seg_holds_the_voxels_of_half_or_more(series, frames, tmp_path):
    _, datasets = series
    liver = (frames == 5).astype(np.float32)
    liver[:, :, :256] *= 0.4  # the patient's right half below one half: outside
    path = write_seg(tmp_path / "fractional.dcm", datasets, {"liver": (liver, COLORS[5])}, fractional=True)
    label = viz3d.load_label(path)
    assert rows_by_name(label)["liver"]["voxels"] == int((liver >= 0.5).sum())


def test_overlapping_seg_segments_are_meshed_from_their_own_layers(series, frames, tmp_path):
    _, datasets = series
    liver = frames == 5
    box = np.zeros_like(liver)
    box[5:15, 200:300, 150:250] = True  # overlaps the liver
    assert (box & liver).any()
    path = write_seg(tmp_path / "overlap.dcm", datasets, {"liver": (liver, COLORS[5]), "box": (box, COLORS[1])})
    label = viz3d.load_label(path)
    assert len(label_layers(label)) == 2
    counts = {row["name"]: row["voxels"] for row in viz3d.label_statistics(label)}
    assert counts == {"liver": int(liver.sum()), "box": int(box.sum())}
    assert sorted(m.name for m in viz3d.build_meshes(None, label)) == ["box", "liver"]


def test_a_seg_of_a_few_slices_is_padded_onto_the_cts_grid_at_those_slices(series, ct, tmp_path):
    """highdicom leaves empty frames out: the SEG holds 4 of the 20 slices; given its CT, the
    label map is on the CT's grid (no 'different grids' warning), its voxels where they were."""
    _, datasets = series
    box = np.zeros((len(datasets), datasets[0].Rows, datasets[0].Columns), bool)
    box[5:9, 200:240, 150:170] = True
    path = write_seg(tmp_path / "few.dcm", datasets, {"box": (box, COLORS[1])})
    alone, with_ct = viz3d.load_label(path), viz3d.load_label(path, reference=ct)
    assert alone.shape[2] == 4 and with_ct.same_grid(ct) and not viz3d.api.alignment_warnings(ct, with_ct)
    assert rows_by_name(alone)["box"]["bbox_mm"] == rows_by_name(with_ct)["box"]["bbox_mm"]
    assert rows_by_name(with_ct)["box"]["voxels"] == int(box.sum())


def test_info_lists_the_segs_segments(series, seg_file, capsys):
    status, out, err = run_cli(capsys, "info", series[0], "--label", seg_file)
    assert status == 0, err
    assert "names from     : DICOM SEG segment labels" in out
    for name in ORGANS.values():
        assert any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip()[:1].isdigit())


def test_a_seg_of_another_frame_of_reference_is_one_error_line_and_nothing_written(series, frames, tmp_path, capsys):
    folder, datasets = series
    path = write_seg(tmp_path / "elsewhere.dcm", datasets, {"liver": (frames == 5, COLORS[5])},
                     frame_of_reference="1.2.3.4.5.6")
    out_dir = tmp_path / "never"
    status, _, err = run_cli(capsys, "export", folder, "--label", path, "--out", out_dir)
    assert status == 2 and not out_dir.exists()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: "), lines
    assert "frame of reference (FrameOfReferenceUID 1.2.3.4.5.6) is not the CT's" in lines[0]


def test_a_ct_slice_given_as_the_label_is_refused_in_one_line(series, capsys):
    slice_file = next(series[0].iterdir())
    status, _, err = run_cli(capsys, "info", "--label", slice_file)
    assert status == 2
    assert err.count("\n") == 1 and "a DICOM CT, not a segmentation" in err


def test_a_file_claiming_to_be_a_seg_that_is_not_is_one_error_line(tmp_path, capsys):
    """Its SOP class says Segmentation Storage; it describes no segment and holds no frames."""
    from pydicom.dataset import FileDataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3"
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    body = pydicom.Dataset()
    body.SOPClassUID, body.SOPInstanceUID, body.Modality = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.3", "SEG"
    fake = tmp_path / "seg.dcm"
    FileDataset(str(fake), body, file_meta=meta, preamble=bytes(128)).save_as(str(fake), enforce_file_format=True)
    assert format_of(fake, "label").name == "DICOM SEG"
    out_dir = tmp_path / "never"
    status, _, err = run_cli(capsys, "export", "--label", fake, "--out", out_dir)
    assert status == 2 and not out_dir.exists()
    assert err.count("\n") == 1 and err.startswith("viz3d: error: ")
    assert "the DICOM SEG describes no segment" in err


# ------------------------------------------------------------------ RTSTRUCT


@pytest.fixture(scope="module")
def rtstruct_file(series, frames, tmp_path_factory):
    rt_utils = pytest.importorskip("rt_utils")
    folder, _ = series
    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(folder))
    for value, name in ORGANS.items():
        builder.add_roi(mask=(frames == value).transpose(1, 2, 0), color=list(COLORS[value]), name=name,
                        approximate_contours=False)
    path = tmp_path_factory.mktemp("rt") / "rtstruct.dcm"
    builder.save(str(path))
    return path


def test_rtstruct_rois_are_filled_onto_the_ct_grid_with_names_and_colours(rtstruct_file, ct, nifti_rows):
    """rt-utils traces the boundary pixels' centres (OpenCV's contours); filled back, centres on
    the contour included, the voxels are the NIfTI's but for the one-pixel cuts rt-utils makes
    to join a hole to its outline (its "pin holes"): under 1 %."""
    label = viz3d.load_label(rtstruct_file, reference=ct)
    assert label.same_grid(ct)
    table = load_segmentation(rtstruct_file, ct).table
    assert table.source == "RTSTRUCT ROI names"
    found = rows_by_name(label)
    for value, name in ORGANS.items():
        number = next(n for n, roi in table.names.items() if roi == name)
        assert np.allclose(np.array(table.color_of(number)) * 255, COLORS[value])
        assert 0.99 < found[name]["voxels"] / nifti_rows[value]["voxels"] <= 1
        assert np.allclose(found[name]["bbox_mm"], nifti_rows[value]["bbox_mm"], atol=0.01)


def test_an_rtstruct_fills_a_nifti_cts_grid_by_patient_coordinates(rtstruct_file, nifti, nifti_rows):
    """A CT converted to NIfTI (dcm2niix's LAS grid, rows flipped against the series') has no
    frame of reference to check; the contours fill it by position all the same."""
    grid = viz3d.load_ct(nifti)
    label = viz3d.load_label(rtstruct_file, reference=grid)
    assert label.same_grid(grid) and np.allclose(label.affine, grid.affine)
    for value, name in ORGANS.items():
        row = rows_by_name(label)[name]
        assert 0.99 < row["voxels"] / nifti_rows[value]["voxels"] <= 1
        assert np.allclose(row["bbox_mm"], nifti_rows[value]["bbox_mm"], atol=0.01)


def test_rtstruct_surfaces_sit_where_the_nifti_labels_do(rtstruct_file, ct, nifti):
    mine = {m.name: m for m in viz3d.build_meshes(None, viz3d.load_label(rtstruct_file, reference=ct))}
    theirs = nifti_meshes(nifti)
    for value, name in ORGANS.items():
        assert np.linalg.norm(mine[name].vertices.mean(axis=0) - theirs[value].vertices.mean(axis=0)) < 0.5
        assert abs(mesh_volume(mine[name]) / mesh_volume(theirs[value]) - 1) < 0.02


def test_an_rtstruct_without_a_ct_nor_its_series_beside_it_is_one_error_line(rtstruct_file, tmp_path, capsys):
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "rtstruct.dcm").write_bytes(rtstruct_file.read_bytes())
    status, _, err = run_cli(capsys, "export", "--label", alone / "rtstruct.dcm", "--out", tmp_path / "never",
                             "--no-cache")
    assert status == 2 and not (tmp_path / "never").exists()
    assert err.count("\n") == 1 and "(SeriesInstanceUID), which is not in" in err and "give that CT" in err


def test_an_rtstruct_on_another_frame_of_reference_is_refused(rtstruct_file, ct, tmp_path):
    dataset = pydicom.dcmread(str(rtstruct_file))
    for item in dataset.StructureSetROISequence:
        item.ReferencedFrameOfReferenceUID = "1.2.3.4"
    for item in dataset.ReferencedFrameOfReferenceSequence:
        item.FrameOfReferenceUID = "1.2.3.4"
    dataset.save_as(str(tmp_path / "moved.dcm"))
    with pytest.raises(Viz3dError, match="drawn on another scan"):
        viz3d.load_label(tmp_path / "moved.dcm", reference=ct)


def test_open_contours_and_one_between_slices_with_contours_of_their_own_are_skipped_with_one_warning(
        rtstruct_file, ct, tmp_path):
    """The liver's second contour, moved 0.9 mm, lies between two slices that both have contours:
    there is no slice left for it to fill (see tests/test_formats_rtstruct_ct.py for those that do)."""
    dataset = pydicom.dcmread(str(rtstruct_file))
    liver = next(item for item in dataset.ROIContourSequence
                 if item.ReferencedROINumber == next(r.ROINumber for r in dataset.StructureSetROISequence
                                                     if r.ROIName == "liver"))
    liver.ContourSequence[0].ContourGeometricType = "OPEN_PLANAR"
    points = np.array(liver.ContourSequence[1].ContourData, float).reshape(-1, 3)
    points[:, 2] += 0.9  # between two slices (2 mm apart)
    liver.ContourSequence[1].ContourData = [f"{x:.4f}" for x in points.ravel()]
    dataset.save_as(str(tmp_path / "odd.dcm"))
    with pytest.warns(Viz3dWarning, match=r"ROI 'liver': contours skipped \(1 open, 1 between the CT's slices "
                      r"with no slice of their own to fill\)"):
        viz3d.load_label(tmp_path / "odd.dcm", reference=ct)


def test_export_and_slice_accept_an_rtstruct_with_its_ct(series, rtstruct_file, tmp_path, capsys):
    folder, _ = series
    status, _, err = run_cli(capsys, "export", folder, "--label", rtstruct_file, "--out", tmp_path / "meshes",
                             "--no-bone")
    assert status == 0, err
    assert sorted(p.stem.split("_", 1)[1] for p in (tmp_path / "meshes").glob("*.stl")) == sorted(ORGANS.values())
    status, _, err = run_cli(capsys, "slice", folder, "--label", rtstruct_file, "--out", tmp_path / "s.png")
    assert status == 0, err
    assert (tmp_path / "s.png").stat().st_size > 0
