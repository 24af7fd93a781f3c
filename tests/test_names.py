"""Names that are never wrong: where a label map's names come from, what happens when a table
does not fit the values present, and selecting structures by value, range and name.

Real data: the TotalSegmentator sample (its label map carries TotalSegmentator's label table in
a NIfTI header extension), the real TotalSegmentator and ITK-SNAP tables.
"""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from viz3d.cli.main import main, make_parser
from viz3d.errors import Viz3dError
from viz3d.io.labels import builtin_table, resolve_label_table, select_labels, table_from_nifti_header

ITKSNAP_REAL = "ctspinopelvic1k_v4_itksnap.txt"


def run_cli(capsys, *args):
    """Run the CLI in-process; return (status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("viz3d: warning:")]


def info_names(out: str) -> dict[int, str]:
    """value -> name from the label rows `viz3d info` prints."""
    names = {}
    rows = out.split("bounding box RAS mm", 1)[1].splitlines()[1:]
    for row in rows:
        fields = row.split()
        if len(fields) > 2 and fields[0].isdigit():
            names[int(fields[0])] = fields[1]
    return names


def write_plain(source, path):
    """``source``'s label map without any header extension (as most tools other than
    TotalSegmentator write it)."""
    image = nib.load(str(source))
    data = np.asanyarray(image.dataobj).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    assert len(nib.load(str(path)).header.extensions) == 0
    return path


def totalseg_header_xml(names: dict[int, str]) -> bytes:
    """The XML TotalSegmentator's ``add_label_map_to_nifti`` (totalsegmentator/nifti_ext_header.py)
    writes, written out here independently of viz3d."""
    cycle = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255], [255, 128, 0],
             [255, 0, 128], [128, 255, 128], [0, 128, 255], [128, 128, 128], [185, 170, 155]]
    pre = ('<?xml version="1.0" encoding="UTF-8"?> <CaretExtension>  <Date><![CDATA[2013-07-14T05:45:09]]></Date>   '
           '<VolumeInformation Index="0">   <LabelTable>')
    body = ""
    for key, name in names.items():
        r, g, b = cycle[key % len(cycle)]
        body += f'<Label Key="{key}" Red="{r/255}" Green="{g/255}" Blue="{b/255}" Alpha="1"><![CDATA[{name}]]></Label>\n'
    post = ('  </LabelTable>  <StudyMetaDataLinkSet>  </StudyMetaDataLinkSet>  <VolumeType><![CDATA[Label]]></VolumeType>'
            '   </VolumeInformation></CaretExtension>')
    return (pre + "\n" + body + "\n" + post + "\n              ").encode("utf-8")


@pytest.fixture(scope="module")
def plain_label(sample_dir, tmp_path_factory):
    """The real TotalSegmentator label map with its header table removed."""
    return write_plain(sample_dir / "label.nii.gz", tmp_path_factory.mktemp("plain") / "label.nii.gz")


@pytest.fixture(scope="module")
def present(sample_dir):
    array = np.asanyarray(nib.load(str(sample_dir / "label.nii.gz")).dataobj)
    return [int(v) for v in np.unique(array) if v]


# ------------------------------------------------------------------ where names come from


def test_a_label_map_written_with_a_totalsegmentator_header_gets_its_names_without_label_table(tmp_path, capsys):
    names = {1: "spleen", 2: "kidney_right", 5: "liver", 31: "vertebrae_L1"}
    data = np.zeros((8, 8, 8), np.uint8)
    for i, value in enumerate(names):
        data[i * 2:i * 2 + 2] = value
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(0, totalseg_header_xml(names)))
    path = tmp_path / "seg.nii.gz"
    nib.save(image, str(path))

    table = table_from_nifti_header(path)
    assert table.names == names
    assert table.source == "NIfTI header (TotalSegmentator)"
    assert table.colors == {}  # TotalSegmentator's colour cycle means nothing: viz3d's colours instead

    status, out, err = run_cli(capsys, "info", "--label", path)
    assert status == 0, err
    assert info_names(out) == names
    assert "names from     : NIfTI header (TotalSegmentator)" in out
    assert warning_lines(err) == []


def test_the_real_totalsegmentator_sample_names_value_5_liver_not_l5(sample_dir, present, capsys):
    status, out, err = run_cli(capsys, "info", sample_dir / "ct.nii.gz", "--label", sample_dir / "label.nii.gz")
    assert status == 0, err
    names = info_names(out)
    total = builtin_table("totalsegmentator")
    assert names == {v: total.name_of(v) for v in present}
    assert names[5] == "liver" and "L5" not in names.values()
    assert "names from     : NIfTI header (TotalSegmentator)" in out
    assert warning_lines(err) == []


def test_a_sidecar_json_beside_the_label_map_names_it(plain_label, tmp_path, capsys):
    label = shutil.copy(plain_label, tmp_path / "case7.nii.gz")
    (tmp_path / "case7.json").write_text(json.dumps({"1": "Milz", "5": {"name": "Leber", "color": [200, 100, 50]}}))
    table = resolve_label_table(None, label)
    assert table.source == "sidecar case7.json"
    assert table.name_of(5) == "Leber" and table.color_of(5) == pytest.approx((200 / 255, 100 / 255, 50 / 255))

    status, out, err = run_cli(capsys, "info", "--label", label)
    assert status == 0, err
    names = info_names(out)
    assert names[1] == "Milz" and names[5] == "Leber" and names[2] == "label_2"
    assert "names from     : sidecar case7.json" in out


def test_a_bids_sidecar_json_is_not_taken_for_a_label_table(plain_label, tmp_path):
    label = shutil.copy(plain_label, tmp_path / "seg.nii.gz")
    (tmp_path / "seg.json").write_text(json.dumps({"Modality": "CT", "ConversionSoftware": "dcm2niix"}))
    assert resolve_label_table(None, label).source == "default (spinopelvic10)"


def test_a_real_itksnap_table_beside_the_label_map_names_it(plain_label, tables_dir, tmp_path, capsys):
    label = shutil.copy(plain_label, tmp_path / "spine.nii.gz")
    shutil.copy(tables_dir / ITKSNAP_REAL, tmp_path / "spine.txt")
    table = resolve_label_table(None, label)
    assert table.source == "sidecar spine.txt"
    assert table.name_of(20) == "L1" and table.name_of(26) == "sacrum"
    status, out, err = run_cli(capsys, "info", "--label", label)
    assert status == 0, err
    assert info_names(out)[20] == "L1"
    assert "names from     : sidecar spine.txt" in out


def test_an_nnunet_v2_dataset_json_up_the_tree_names_the_label_map(plain_label, tmp_path, capsys):
    dataset = tmp_path / "Dataset017_Abdomen"
    (dataset / "labelsTr" / "fold0").mkdir(parents=True)
    label = shutil.copy(plain_label, dataset / "labelsTr" / "fold0" / "abd_001.nii.gz")
    total = {name: value for value, name in builtin_table("totalsegmentator").names.items()}  # v2: name -> value
    total["tumour_region"] = [5, 6]  # a region: names no single value
    (dataset / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": total,
                                                      "numTraining": 1, "file_ending": ".nii.gz"}))
    table = resolve_label_table(None, label)
    assert table.source == "nnU-Net dataset.json"
    status, out, err = run_cli(capsys, "info", "--label", label)
    assert status == 0, err
    assert info_names(out)[5] == "liver"
    assert "names from     : nnU-Net dataset.json" in out
    assert warning_lines(err) == []


def test_an_nnunet_v1_dataset_json_maps_values_to_names(plain_label, tmp_path):
    label = shutil.copy(plain_label, tmp_path / "la_003.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "spleen", "5": "liver"}}))
    table = resolve_label_table(None, label)
    assert table.source == "nnU-Net dataset.json" and table.name_of(5) == "liver"


def test_label_table_comes_first_then_header_then_sidecar(sample_dir, tmp_path):
    label = shutil.copy(sample_dir / "label.nii.gz", tmp_path / "label.nii.gz")
    (tmp_path / "label.json").write_text(json.dumps({"5": "not_the_liver"}))
    assert resolve_label_table(None, label).source == "NIfTI header (TotalSegmentator)"
    chosen = resolve_label_table("spinopelvic10", label)
    assert chosen.source == "--label-table spinopelvic10" and chosen.name_of(5) == "L5"


# ------------------------------------------------------------------ a table that does not fit


def test_the_default_table_on_totalsegmentator_values_warns_once_and_names_every_value_label_n(plain_label, present,
                                                                                                 capsys):
    status, out, err = run_cli(capsys, "info", "--label", plain_label)
    assert status == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1, err
    assert "totalsegmentator" in lines[0]
    assert "10-11, 13-14, 18-20, 30-33, 52" in lines[0]  # the values it does not name, runs as ranges
    names = info_names(out)
    assert names == {v: f"label_{v}" for v in present}  # never L5 on the liver
    assert "names from     : none (the default table, spinopelvic10, does not fit" in out


def test_a_chosen_table_that_does_not_cover_the_values_warns_once_and_names_the_rest_label_n(plain_label, present,
                                                                                               capsys):
    status, out, err = run_cli(capsys, "info", "--label", plain_label, "--label-table", "spinopelvic10")
    assert status == 0, err
    lines = warning_lines(err)
    assert len(lines) == 1, err
    assert "--label-table spinopelvic10" in lines[0] and "totalsegmentator" in lines[0]
    assert "117" in lines[0] and " 5," not in lines[0]
    names = info_names(out)
    assert names[10] == "label_10" and names[117] == "label_117"
    assert names[5] == "L5"  # the user chose this table: its names stay on the values it names


def test_meshes_named_with_a_table_that_does_not_fit_warn_once_even_from_the_cache(plain_label, capsys):
    import viz3d

    for _ in range(2):  # built, then from the mesh cache: the warning is repeated once each time
        with pytest.warns(viz3d.Viz3dWarning) as caught:
            _, meshes = viz3d.api.load_and_mesh(None, plain_label, labels=[5, 10])
        notes = [str(w.message) for w in caught if "does not name" in str(w.message)]
        assert len(notes) == 1
        assert sorted(m.name for m in meshes) == ["label_10", "label_5"]


# ------------------------------------------------------------------ where the names came from, recorded


def test_info_prints_the_label_table_source(sample_dir, capsys):
    status, out, _ = run_cli(capsys, "info", "--label", sample_dir / "label.nii.gz", "--label-table", "totalsegmentator")
    assert status == 0
    assert "names from     : --label-table totalsegmentator" in out


def test_the_export_manifest_records_where_the_names_came_from(sample_dir, tmp_path, capsys):
    out = tmp_path / "meshes"
    status, _, err = run_cli(capsys, "export", "--label", sample_dir / "label.nii.gz", "--labels", "liver", "--out", out, "-q")
    assert status == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["label_table_source"] == "NIfTI header (TotalSegmentator)"
    assert [m["file"] for m in manifest["meshes"]] == ["5_liver.stl"]


# ------------------------------------------------------------------ selection


def test_labels_takes_values_ranges_and_names_resolved_through_the_table():
    total = builtin_table("totalsegmentator")
    assert select_labels("1,3-5", total) == [1, 3, 4, 5]
    assert select_labels("LIVER", total) == [5]
    # a range of names: the table's values between them, inclusive, whichever comes first
    assert select_labels("vertebrae_L1-vertebrae_L5,sacrum", total) == [25, 27, 28, 29, 30, 31]
    assert select_labels("vertebrae_L5-vertebrae_L1", total) == [27, 28, 29, 30, 31]
    spine = builtin_table("spinopelvic10")
    assert select_labels("L1-L5,sacrum", spine) == [1, 2, 3, 4, 5, 7]
    assert select_labels(["right_hip", 1], spine) == [1, 9]


def test_an_unknown_name_is_refused_with_close_matches(sample_dir, tmp_path, capsys):
    with pytest.raises(Viz3dError, match="did you mean liver"):
        select_labels("livr", builtin_table("totalsegmentator"))
    with pytest.raises(Viz3dError, match="'vertebra_L1'.*did you mean vertebrae_L1"):
        select_labels("vertebra_L1-L5", builtin_table("totalsegmentator"))
    out = tmp_path / "out"
    status, _, err = run_cli(capsys, "export", "--label", sample_dir / "label.nii.gz", "--labels", "L6-L5,sacrum",
                             "--out", out)  # TotalSegmentator has no L6 (L1-L5 stands for vertebrae_L1-vertebrae_L5)
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: --labels L6-L5,sacrum: no structure named 'L6'")
    assert not out.exists()


def test_export_with_names_and_ranges_writes_the_selected_structures(sample_dir, tmp_path, capsys):
    out = tmp_path / "meshes"
    status, _, err = run_cli(capsys, "export", sample_dir / "ct.nii.gz", "--label", sample_dir / "label.nii.gz",
                             "--labels", "Liver,2-3,vertebrae_T12-vertebrae_L2", "--out", out, "-q")
    assert status == 0, err
    files = {m["file"] for m in json.loads((out / "manifest.json").read_text())["meshes"]}
    assert files == {"2_kidney_right.stl", "3_kidney_left.stl", "5_liver.stl", "30_vertebrae_L2.stl",
                     "31_vertebrae_L1.stl", "32_vertebrae_T12.stl"}  # and no bone: a selection leaves it out


def test_a_selection_leaves_out_the_bone_unless_bone_asks_for_it(sample_dir, tmp_path, capsys):
    common = ["export", sample_dir / "ct.nii.gz", "--label", sample_dir / "label.nii.gz", "--labels", "kidney_left", "-q"]
    status, _, err = run_cli(capsys, *common, "--out", tmp_path / "a")
    assert status == 0, err
    assert {m["kind"] for m in json.loads((tmp_path / "a" / "manifest.json").read_text())["meshes"]} == {"label"}
    status, _, err = run_cli(capsys, *common, "--bone", "--out", tmp_path / "b")
    assert status == 0, err
    kinds = [m["kind"] for m in json.loads((tmp_path / "b" / "manifest.json").read_text())["meshes"]]
    assert sorted(kinds) == ["bone", "label"]
    status, _, err = run_cli(capsys, *common, "--bone", "--no-bone", "--out", tmp_path / "c")
    assert status == 2
    assert err.startswith("viz3d: error: --bone and --no-bone exclude each other") and len(err.splitlines()) == 1


def test_labels_without_a_label_map_is_refused(sample_dir, tmp_path, capsys):
    status, _, err = run_cli(capsys, "export", sample_dir / "ct.nii.gz", "--labels", "liver", "--out", tmp_path / "o")
    assert status == 2
    assert err.startswith("viz3d: error: --labels liver: ") and "--label LABEL" in err


# ------------------------------------------------------------------ window


@pytest.mark.parametrize("text, expected", [("40/400", (40.0, 400.0)), ("-600/1500", (-600.0, 1500.0)),
                                            ("40,400", (40.0, 400.0)), ("BONE", "bone"), ("Soft", "soft")])
def test_window_accepts_center_slash_width_and_preset_names_in_any_case(text, expected):
    args = make_parser().parse_args(["screenshot", "ct.nii.gz", "--out", "x.png", f"--window={text}"])
    assert args.window == expected


@pytest.mark.parametrize("text", ["40/0", "40/-400", "a/b", "40/400/4", "nan/400"])
def test_window_refuses_a_bad_center_slash_width(text, capsys):
    status, _, err = run_cli(capsys, "screenshot", "ct.nii.gz", "--out", "x.png", f"--window={text}")
    assert status == 2
    assert len(err.splitlines()) == 1 and "--window" in err and text in err


def test_editing_a_sidecar_table_renames_the_meshes_on_the_next_run_not_the_cached_names(plain_label, tmp_path):
    import viz3d.api

    label = shutil.copy(plain_label, tmp_path / "case9.nii.gz")
    sidecar = tmp_path / "case9.json"
    sidecar.write_text(json.dumps({"5": "Leber"}))
    _, first = viz3d.api.load_and_mesh(None, label, labels="5")
    assert [m.name for m in first] == ["Leber"]
    assert viz3d.api.meshes_cached(None, label, labels="5")
    sidecar.write_text(json.dumps({"5": "liver"}))  # the names are part of the cache key: the file's content
    assert not viz3d.api.meshes_cached(None, label, labels="5")
    _, second = viz3d.api.load_and_mesh(None, label, labels="Liver")
    assert [m.name for m in second] == ["liver"]
