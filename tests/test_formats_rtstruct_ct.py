"""An RTSTRUCT read without its CT: the referenced series found beside it; contours between
the CT's slices interpolated.

A small synthetic study (`synthetic_dicom`): an axial CT series of 20 x 24 x 8 voxels of
1 x 1 x 2 mm written by pydicom in ``study/ct/``, and an RTSTRUCT drawn on it by rt-utils
from two boxes (liver: slices 2-6, rows 3-14, columns 4-11; spleen: slices 1-3, rows 16-21,
columns 2-7) in ``study/rt/``, as a PACS export lays them out.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import viz3d
from synthetic_dicom import BOXES, ORIGIN, STEP, box_masks, write_ct_series, write_rtstruct
from viz3d.cli.main import main
from viz3d.errors import Viz3dError

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("rt_utils")


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_ct_series(root / "ct")
    write_rtstruct(root / "ct", root / "rt" / "rs.dcm")
    return root


def voxels(mask_ranges) -> int:
    return int(np.prod([high - low for low, high in mask_ranges]))


def counts(label) -> dict[str, int]:
    return {row["name"]: row["voxels"] for row in viz3d.label_statistics(label)}


def expected_box_ras(name) -> list:
    """The RAS box (voxels' outer faces) of one of `BOXES`: columns along L, rows along P, slices along S
    (1 x 1 x `STEP` mm voxels)."""
    (s0, s1), (r0, r1), (c0, c1) = BOXES[name]
    x = sorted(-(ORIGIN[0] + c) for c in (c0 - 0.5, c1 - 0.5))
    y = sorted(-(ORIGIN[1] + r) for r in (r0 - 0.5, r1 - 0.5))
    z = [ORIGIN[2] + STEP * (s - 0.5) for s in (s0, s1)]
    return [[x[0], y[0], z[0]], [x[1], y[1], z[1]]]


def test_an_rtstruct_without_a_ct_is_filled_onto_the_series_in_its_sibling_folder(study):
    label = viz3d.load_label(study / "rt" / "rs.dcm")
    ct = viz3d.load_ct(study / "ct")
    assert label.same_grid(ct) and label.meta["filled_on"] == str(study / "ct")
    assert counts(label) == {name: voxels(ranges) for name, ranges in BOXES.items()}


def test_the_found_series_puts_each_roi_at_its_boxs_ras_position(study):
    rows = {row["name"]: row for row in viz3d.label_statistics(viz3d.load_label(study / "rt" / "rs.dcm"))}
    for name in BOXES:
        assert np.allclose(rows[name]["bbox_mm"], expected_box_ras(name), atol=1e-6), name


def test_an_rtstruct_beside_its_slices_in_one_folder_finds_them(study, tmp_path):
    shutil.copytree(study / "ct", tmp_path / "export")
    shutil.copy(study / "rt" / "rs.dcm", tmp_path / "export" / "RS.dcm")
    assert counts(viz3d.load_label(tmp_path / "export" / "RS.dcm"))["liver"] == voxels(BOXES["liver"])


def test_info_and_export_take_an_rtstruct_alone(study, tmp_path, capsys):
    status, out, err = run_cli(capsys, "info", "--label", study / "rt" / "rs.dcm")
    assert status == 0, err
    rows = [line.split() for line in out.split("names from", 1)[1].splitlines()[2:]]
    listed = {row[1]: int(row[2]) for row in rows if row and row[0].isdigit()}
    assert listed == {name: voxels(ranges) for name, ranges in BOXES.items()}
    status, _, err = run_cli(capsys, "export", "--label", study / "rt" / "rs.dcm", "--out", tmp_path / "meshes",
                             "--no-cache")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "meshes").glob("*.stl")) == ["1_liver.stl", "2_spleen.stl"]


def test_an_rtstruct_whose_series_is_nowhere_near_is_one_error_line_naming_its_uid(study, tmp_path, capsys):
    alone = tmp_path / "patient" / "rt"
    alone.mkdir(parents=True)
    (tmp_path / "patient" / "notes").mkdir()
    shutil.copy(study / "rt" / "rs.dcm", alone / "rs.dcm")
    uid = pydicom.dcmread(str(study / "ct" / "ct000.dcm")).SeriesInstanceUID
    status, _, err = run_cli(capsys, "export", "--label", alone / "rs.dcm", "--out", tmp_path / "never", "--no-cache")
    assert status == 2 and not (tmp_path / "never").exists()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: "), lines
    assert f"drawn on CT series {uid} (SeriesInstanceUID)" in lines[0]
    assert f"not in {alone.resolve()} nor in its sibling folders (notes)" in lines[0]


def test_an_rtstruct_given_as_the_ct_is_one_error_line_saying_to_give_it_as_the_label(study, capsys):
    status, _, err = run_cli(capsys, "info", study / "rt" / "rs.dcm")
    assert status == 2 and err.count("\n") == 1
    assert "a DICOM segmentation (SEG or RTSTRUCT), not a CT: give it as the label (--label" in err


def shifted_copy(study, tmp_path, name, keep=None, shift_mm=0.0):
    """The RTSTRUCT with ROI ``name``'s contours moved ``shift_mm`` along S, keeping only the
    contours on the CT slices in ``keep`` (all when None), saved beside the CT."""
    dataset = pydicom.dcmread(str(study / "rt" / "rs.dcm"))
    number = next(r.ROINumber for r in dataset.StructureSetROISequence if r.ROIName == name)
    roi = next(item for item in dataset.ROIContourSequence if item.ReferencedROINumber == number)
    contours = []
    for contour in roi.ContourSequence:
        points = np.array(contour.ContourData, float).reshape(-1, 3)
        if keep is not None and round((points[0, 2] - ORIGIN[2]) / STEP) not in keep:
            continue
        points[:, 2] += shift_mm
        contour.ContourData = [f"{x:.4f}" for x in points.ravel()]
        contours.append(contour)
    roi.ContourSequence = contours
    path = study / "rt" / f"{tmp_path.name}.dcm"
    dataset.save_as(str(path))
    return path


def test_contours_drawn_halfway_between_the_ct_slices_fill_the_slices_between_them(study, tmp_path, recwarn):
    """The liver's five contours, 1 mm (half a slice) up, lie between slices 2..7: the four slices
    enclosed are interpolated (the same box each), none skipped and no warning."""
    label = viz3d.load_label(shifted_copy(study, tmp_path, "liver", shift_mm=STEP / 2))
    liver = label.array == 1
    assert sorted(set(np.nonzero(liver)[2].tolist())) == [3, 4, 5, 6]
    assert int(liver.sum()) == 4 * voxels(BOXES["liver"][1:] + ((0, 1),))
    assert not [w for w in recwarn if "contours skipped" in str(w.message)]


def test_a_liver_contoured_on_every_other_slice_fills_the_slices_between(study, tmp_path):
    label = viz3d.load_label(shifted_copy(study, tmp_path, "liver", keep={2, 4, 6}))
    assert counts(label)["liver"] == voxels(BOXES["liver"])


def test_a_slice_an_roi_skips_within_a_stack_of_every_slice_stays_empty(study, tmp_path):
    """Two pieces along S (slices 1-2 and 5-6), contoured on every slice: slices 3 and 4 are a
    gap of the ROI, not missing contours."""
    masks = box_masks()
    pieces = np.zeros_like(masks["liver"])
    pieces[[1, 2, 5, 6], 5:10, 5:10] = True
    path = write_rtstruct(study / "ct", study / "rt" / f"{tmp_path.name}.dcm", {"pieces": pieces})
    mask = viz3d.load_label(path).array == 1
    assert sorted(set(np.nonzero(mask)[2].tolist())) == [1, 2, 5, 6] and int(mask.sum()) == 100


def test_a_contour_across_the_ct_slices_is_still_skipped_with_a_warning(study, tmp_path):
    dataset = pydicom.dcmread(str(study / "rt" / "rs.dcm"))
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    points = np.array(contour.ContourData, float).reshape(-1, 3)
    points[:, 2] += np.linspace(0, 3 * STEP, len(points))  # tilted through three slices
    contour.ContourData = [f"{x:.4f}" for x in points.ravel()]
    dataset.save_as(str(tmp_path / "tilted.dcm"))
    ct = viz3d.load_ct(study / "ct")
    with pytest.warns(viz3d.Viz3dWarning, match=r"contours skipped \(1 not parallel to the CT's slices\)"):
        viz3d.load_label(tmp_path / "tilted.dcm", reference=ct)


def test_an_rtstruct_naming_no_series_and_given_no_ct_is_refused(study, tmp_path):
    dataset = pydicom.dcmread(str(study / "rt" / "rs.dcm"))
    del dataset.ReferencedFrameOfReferenceSequence
    dataset.save_as(str(tmp_path / "bare.dcm"))
    with pytest.raises(Viz3dError, match="names no CT series it was drawn on"):
        viz3d.load_label(tmp_path / "bare.dcm")


def test_meshes_of_an_rtstruct_filled_onto_a_ct_found_beside_it_are_not_cached(study, tmp_path, monkeypatch):
    """The cache key holds the label file, not the CT series found beside it: a changed series
    must never serve the old surfaces, so such meshes are built afresh each time."""
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(tmp_path / "cache"))
    from viz3d import api, cache

    _, meshes = api.load_and_mesh(None, study / "rt" / "rs.dcm")
    cache.flush()
    assert meshes and not any((tmp_path / "cache").rglob("meshes-*"))
