"""`viz3d batch` case discovery: every layout, what is skipped and why, --cases."""
from pathlib import Path

import pytest

from viz3d.batch.layouts import Case, detect_layout, discover, select_cases
from viz3d.batch.sample import make_dataset
from viz3d.errors import Viz3dError


@pytest.mark.parametrize("layout", ["nnunet", "ctspinopelvic", "folders", "manifest"])
def test_each_layout_is_detected_and_gives_every_case_with_its_ct_and_label(tmp_path, layout):
    ids = make_dataset(tmp_path, layout, n=3)
    root = tmp_path / "cases.csv" if layout == "manifest" else tmp_path
    found = discover(root)
    assert found.layout == layout
    assert [case.id for case in found.cases] == ids
    for case in found.cases:
        assert case.ct.is_file() and case.label.is_file() and case.ct != case.label
    assert found.skipped == ()


def test_a_case_whose_label_is_missing_is_listed_as_skipped_with_why(tmp_path):
    make_dataset(tmp_path, "ctspinopelvic", n=2)
    (tmp_path / "labels" / "s02_label.nii.gz").unlink()
    found = discover(tmp_path)
    assert [case.id for case in found.cases] == ["s01"]
    assert [(s.path, s.why) for s in found.skipped] == [("ct/s02_ct.nii.gz", "no label map labels/s02_label.nii.gz")]


def test_an_nnunet_label_without_image_and_a_second_channel_are_skipped_with_why(tmp_path):
    make_dataset(tmp_path, "nnunet", n=2)
    (tmp_path / "imagesTr" / "s02_0001.nii.gz").write_bytes(b"")
    (tmp_path / "labelsTr" / "orphan.nii.gz").write_bytes(b"")
    (tmp_path / "imagesTr" / "notes.txt").write_text("x")
    found = discover(tmp_path)
    assert [case.id for case in found.cases] == ["s01", "s02"]
    why = {s.path: s.why for s in found.skipped}
    assert why["imagesTr/s02_0001.nii.gz"].startswith("channel 0001")
    assert why["labelsTr/orphan.nii.gz"] == "no image imagesTr/orphan_0000.nii.gz"
    assert why["imagesTr/notes.txt"] == "not a NIfTI file (.nii or .nii.gz)"


def test_nnunet_test_images_without_a_labels_folder_are_cases_of_the_ct_alone(tmp_path):
    make_dataset(tmp_path, "nnunet", n=1)
    (tmp_path / "imagesTs").mkdir()
    (tmp_path / "imagesTs" / "t01_0000.nii.gz").write_bytes(b"")
    found = discover(tmp_path)
    test_case = next(case for case in found.cases if case.id == "t01")
    assert test_case.label is None and test_case.ct.name == "t01_0000.nii.gz"


def test_a_case_folder_with_a_dicom_series_and_a_label_map_is_a_case(tmp_path, sample_dir):
    case = tmp_path / "p1"
    case.mkdir()
    (case / "series").symlink_to(sample_dir / "ct_dicom")
    (case / "segmentation.nii.gz").symlink_to(sample_dir / "label_for_ct_dicom.nii.gz")
    found = discover(tmp_path, "folders")
    assert found.cases == (Case("p1", case / "series", case / "segmentation.nii.gz"),)


def test_case_folders_without_a_label_map_or_with_two_say_why(tmp_path):
    make_dataset(tmp_path, "folders", n=1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    for name in ("ct.nii.gz", "label.nii.gz", "mask.nii.gz"):
        (tmp_path / "two" / name).write_bytes(b"")
    (tmp_path / "only_ct").mkdir()
    (tmp_path / "only_ct" / "ct.nii.gz").write_bytes(b"")
    why = {s.path: s.why for s in discover(tmp_path).skipped}
    assert why == {"empty": "no image file (NIfTI, NRRD, MetaImage) or DICOM folder",
                   "two": "several label maps (label.nii.gz, mask.nii.gz): keep one per case folder",
                   "only_ct": "no label map (an image named *label*, *seg*, *mask*..., a SEG or RTSTRUCT, a mask folder)"}


def test_a_manifest_keeps_its_other_columns_and_skips_rows_whose_files_are_missing(tmp_path):
    make_dataset(tmp_path, "manifest", n=2)
    with open(tmp_path / "cases.csv", "a") as handle:
        handle.write("s09,data/nowhere.nii.gz,data/s01_seg.nii.gz,site-3\n")
    found = discover(tmp_path / "cases.csv")
    assert [case.id for case in found.cases] == ["s01", "s02"]
    assert dict(found.cases[0].extra) == {"site": "site-1"}
    assert found.skipped[0].path == "cases.csv line 4"
    assert found.skipped[0].why == f"CT {tmp_path / 'data' / 'nowhere.nii.gz'} does not exist"


def test_a_pyradiomics_manifest_with_image_and_mask_columns_names_cases_by_their_files(tmp_path):
    make_dataset(tmp_path, "manifest", n=2)
    data = tmp_path / "data"
    (tmp_path / "radiomics.tsv").write_text("Image\tMask\tReader\n"
                                            f"{data / 's01_ct.nii.gz'}\tdata/s01_seg.nii.gz\tA\n"
                                            f"{data / 's02_ct.nii.gz'}\tdata/s02_seg.nii.gz\tB\n")
    found = discover(tmp_path / "radiomics.tsv")
    assert found.layout == "manifest"
    assert [(case.id, dict(case.extra)) for case in found.cases] == [("s01", {"Reader": "A"}), ("s02", {"Reader": "B"})]


def test_a_manifest_without_a_ct_or_label_column_is_refused_naming_its_header(tmp_path):
    (tmp_path / "m.csv").write_text("a,b\n1,2\n")
    with pytest.raises(Viz3dError, match=r"no CT column .* in the header \['a', 'b'\]"):
        discover(tmp_path / "m.csv")


def test_a_folder_of_no_known_layout_asks_for_layout(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(Viz3dError, match="cannot tell the dataset's layout.*--layout"):
        detect_layout(tmp_path)
    with pytest.raises(Viz3dError, match="unknown layout 'kaggle'"):
        discover(tmp_path, "kaggle")


def test_cases_are_selected_by_id_or_pattern_and_an_unmatched_pattern_is_refused():
    cases = [Case(name, None, Path(name)) for name in ("s01", "s02", "t01")]
    assert [c.id for c in select_cases(cases, "s0[2],t*")] == ["s02", "t01"]
    with pytest.raises(Viz3dError, match="no case matches x9"):
        select_cases(cases, "s01,x9")


def test_two_cases_with_one_id_keep_the_first_and_skip_the_second(tmp_path):
    make_dataset(tmp_path, "manifest", n=2)
    with open(tmp_path / "cases.csv", "a") as handle:
        handle.write("S01,data/s02_ct.nii.gz,data/s02_seg.nii.gz,x\n")
    found = discover(tmp_path / "cases.csv")
    assert [case.id for case in found.cases] == ["s01", "s02"]
    assert "case id 'S01' is taken by" in found.skipped[0].why
