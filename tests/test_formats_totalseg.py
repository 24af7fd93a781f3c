"""Tests for a folder of one NIfTI mask per structure (TotalSegmentator's default output) as a
label input (viz3d.io.totalseg).

The folder is made with nibabel from the real TotalSegmentator sample's label map, one mask
per class as TotalSegmentator writes them (uint8 0/1, the class's name as file name); the
expected values, names and surfaces are the label map's own.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import viz3d
from viz3d.cli.main import main
from viz3d.errors import Viz3dError
from viz3d.io.formats import load_segmentation
from viz3d.io.segmentation import label_layers
from viz3d.io.formats import resolve_label_table
from viz3d.io.labels import builtin_table

CLASSES = {1: "spleen", 2: "kidney_right", 5: "liver"}


def write_masks(folder, source, classes, empty=("brain",)):
    """One uint8 mask per class of ``source``'s label map, plus empty masks (structures not found)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = nib.load(str(source))
    data = np.asanyarray(image.dataobj)
    for value, name in classes.items():
        nib.save(nib.Nifti1Image((data == value).astype(np.uint8), image.affine), str(folder / f"{name}.nii.gz"))
    for name in empty:
        nib.save(nib.Nifti1Image(np.zeros(data.shape, np.uint8), image.affine), str(folder / f"{name}.nii.gz"))
    return folder


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_totalsegmentator_folder_is_the_label_map_it_came_from(sample_dir, tmp_path):
    folder = write_masks(tmp_path / "segmentations", sample_dir / "label.nii.gz", CLASSES)
    reference = nib.load(str(sample_dir / "label.nii.gz"))
    expected = np.asanyarray(reference.dataobj)
    expected = np.where(np.isin(expected, list(CLASSES)), expected, 0)
    segmentation = load_segmentation(folder)
    assert len(segmentation.layers) == 1
    assert np.array_equal(segmentation.label.array, expected)
    assert np.allclose(segmentation.label.affine, reference.affine)
    assert {v: n for v, n in segmentation.table.names.items() if v in CLASSES} == CLASSES
    assert segmentation.table.source == "file names (TotalSegmentator folder)"


def test_names_and_colours_are_totalsegmentators_and_empty_masks_are_skipped(sample_dir, tmp_path, capsys):
    folder = write_masks(tmp_path / "segmentations", sample_dir / "label.nii.gz", CLASSES)
    status, out, err = run_cli(capsys, "info", "--label", folder)
    assert status == 0, err
    assert "names from     : file names (TotalSegmentator folder)" in out
    assert "labels (3 present" in out and "brain" not in out
    builtin = builtin_table("totalsegmentator")
    data = np.asanyarray(nib.load(str(sample_dir / "label.nii.gz")).dataobj)
    for value, name in CLASSES.items():
        row = next(line for line in out.splitlines() if line.split()[:2] == [str(value), name])
        assert f" {int((data == value).sum())} " in row
        assert row.rstrip().endswith("#" + "".join(f"{round(255 * c):02x}" for c in builtin.color_of(value)))


def test_the_folders_surfaces_are_the_label_maps(sample_dir, tmp_path):
    folder = write_masks(tmp_path / "segmentations", sample_dir / "label.nii.gz", CLASSES)
    mine = {m.label: m for m in viz3d.build_meshes(None, viz3d.load_label(folder))}
    theirs = {m.label: m for m in viz3d.build_meshes(None, viz3d.load_label(sample_dir / "label.nii.gz"),
                                                       table="totalsegmentator", labels=sorted(CLASSES))}
    assert sorted(mine) == sorted(theirs) == sorted(CLASSES)
    for value, mesh in mine.items():
        assert mesh.name == CLASSES[value]
        assert np.linalg.norm(mesh.vertices.mean(axis=0) - theirs[value].vertices.mean(axis=0)) < 0.5
        assert len(mesh.faces) == len(theirs[value].faces)


def test_masks_that_overlap_go_to_layers_and_keep_whole_surfaces(sample_dir, tmp_path):
    """Names outside TotalSegmentator's classes are numbered in name order; a mask overlapping
    another is meshed from a layer of its own."""
    image = nib.load(str(sample_dir / "label.nii.gz"))
    liver = np.asanyarray(image.dataobj) == 5
    lesion = np.zeros_like(liver)
    lesion[60:70, 60:70, 10:16] = True  # part inside the liver, part outside
    folder = tmp_path / "masks"
    folder.mkdir()
    for name, mask in (("organ", liver), ("lesion", lesion)):
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), image.affine), str(folder / f"{name}.nii.gz"))
    assert (liver & lesion).any()
    segmentation = load_segmentation(folder)
    assert segmentation.table.names == {1: "lesion", 2: "organ"}
    assert segmentation.table.source == "file names (mask folder)"
    layers = label_layers(segmentation.label)
    assert len(layers) == 2
    assert np.array_equal(sum((layer.array == 1) for layer in layers) > 0, lesion)
    assert np.array_equal(sum((layer.array == 2) for layer in layers) > 0, liver)
    meshes = {m.name: m for m in viz3d.build_meshes(None, segmentation.label)}
    assert sorted(meshes) == ["lesion", "organ"]
    box = meshes["lesion"].vertices
    expected = (image.affine @ np.r_[np.argwhere(lesion).mean(axis=0), 1.0])[:3]
    assert np.linalg.norm(box.mean(axis=0) - expected) < 0.5


def test_a_mask_on_another_grid_is_refused(sample_dir, tmp_path):
    folder = write_masks(tmp_path / "segmentations", sample_dir / "label.nii.gz", CLASSES, empty=())
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(folder / "stomach.nii.gz"))
    with pytest.raises(Viz3dError, match="stomach.nii.gz: not on the grid of"):
        viz3d.load_label(folder)


def test_a_folder_without_masks_is_one_error_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no masks here")
    status, _, err = run_cli(capsys, "info", "--label", tmp_path)
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: ") and "holds no .nii or .nii.gz file" in lines[0]


def test_the_folder_names_what_resolve_label_table_reports(sample_dir, tmp_path):
    folder = write_masks(tmp_path / "segmentations", sample_dir / "label.nii.gz", CLASSES)
    assert resolve_label_table(None, folder).source == "file names (TotalSegmentator folder)"
    assert resolve_label_table("spinopelvic10", folder).source == "--label-table spinopelvic10"
