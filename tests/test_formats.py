"""Tests for the loading seam (viz3d.io.formats) and the NRRD and MetaImage readers.

Every file is written by an independent writer (SimpleITK, which converts a nibabel-written
NIfTI to ITK's LPS geometry itself, or pynrrd with a header built here) and every expected
position comes from nibabel's reading of the NIfTI of the same image: a marker voxel must land
at the same RAS millimetres whatever the file's space (RAS, LPS) or obliquity.
"""
from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import viz3d
from viz3d.cli.main import main
from viz3d.errors import Viz3dError
from viz3d.io.formats import FORMATS, format_of, load_segmentation
from viz3d.io.segmentation import Segmentation, label_layers

sitk = pytest.importorskip("SimpleITK")
nrrd = pytest.importorskip("nrrd")
sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's notes on NIfTI fields MetaImage has no room for

MARKER = (3, 5, 2)  # the voxel holding the marker value, in the NIfTI's index order
MARKER_HU = 2500


def run_cli(capsys, *args):
    """Run the CLI in-process; return (status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error(err: str, *fragments: str) -> str:
    """stderr is exactly one ``viz3d: error:`` line holding every fragment."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def rotation(degrees_x: float, degrees_z: float) -> np.ndarray:
    tx, tz = np.deg2rad(degrees_x), np.deg2rad(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
    return rz @ rx


GRIDS = {
    "ras": np.array([[0.8, 0, 0, -40.0], [0, 0.9, 0, 12.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]]),
    "lps": np.array([[-0.8, 0, 0, 40.0], [0, -0.9, 0, 60.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]]),
    "oblique": np.vstack([np.hstack([rotation(20, 35) @ np.diag([0.8, 0.9, 2.5]), [[-20.0], [7.0], [55.0]]]),
                          [0, 0, 0, 1]]),
}


def marker_image(tmp_path, grid: str):
    """A small CT (int16, air with a soft-tissue block) with one marker voxel, as NIfTI (nibabel)."""
    array = np.full((12, 10, 7), -1000, np.int16)
    array[2:9, 2:8, 1:6] = 40
    array[MARKER] = MARKER_HU
    path = tmp_path / f"marker_{grid}.nii.gz"
    nib.save(nib.Nifti1Image(array, GRIDS[grid]), str(path))
    return path


def marker_ras(path) -> np.ndarray:
    """Where the marker sits in RAS mm, read by nibabel (the reference)."""
    image = nib.load(str(path))
    index = np.argwhere(np.asanyarray(image.dataobj) == MARKER_HU)[0]
    return (image.affine @ np.r_[index, 1.0])[:3]


def viz3d_marker(volume) -> np.ndarray:
    index = np.argwhere(volume.array == MARKER_HU)
    assert len(index) == 1
    return (volume.affine @ np.r_[index[0], 1.0])[:3]


def sitk_copy(nifti, target, compress=True):
    """``nifti`` read and written again by SimpleITK (its own NIfTI -> LPS conversion)."""
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(target), compress)
    return target


def pynrrd_copy(nifti, target, space: str, detached=False, encoding="gzip"):
    """``nifti`` written by pynrrd in ``space`` ("RAS" or "LPS"): the header's directions are the
    NIfTI affine's columns, with x and y negated for LPS."""
    image = nib.load(str(nifti))
    signs = np.array([1.0, 1.0, 1.0]) if space == "RAS" else np.array([-1.0, -1.0, 1.0])
    header = {"space": {"RAS": "right-anterior-superior", "LPS": "left-posterior-superior"}[space],
              "space directions": (image.affine[:3, :3] * signs[:, None]).T,
              "space origin": image.affine[:3, 3] * signs, "kinds": ["domain"] * 3, "encoding": encoding}
    nrrd.write(str(target), np.asanyarray(image.dataobj), header, detached_header=detached, index_order="F")
    return target


# ------------------------------------------------------------------ the registry


def test_each_format_is_claimed_by_its_name_or_its_first_bytes(tmp_path):
    nameless = tmp_path / "scan"
    nameless.write_bytes(b"NRRD0004\ntype: short\n")
    meta = tmp_path / "scan2"
    meta.write_bytes(b"ObjectType = Image\nNDims = 3\n")
    assert format_of(nameless, "ct").name == "NRRD"
    assert format_of(meta, "label").name == "MetaImage"
    assert format_of(tmp_path / "x.nhdr", "ct").name == "NRRD"
    assert format_of(tmp_path / "x.mhd", "label").name == "MetaImage"
    assert format_of(tmp_path, "ct").name == "DICOM"
    assert format_of(tmp_path, "label").name.startswith("mask folder")
    assert format_of(tmp_path / "x.nii", "label").name == "NIfTI"
    assert format_of(tmp_path / "anything.else", "label").name == "NIfTI"  # its reader says what is wrong
    assert len({entry.name for entry in FORMATS}) == len(FORMATS)


def test_a_nifti_label_map_is_a_segmentation_of_one_layer(sample_dir):
    segmentation = load_segmentation(sample_dir / "label.nii.gz")
    assert isinstance(segmentation, Segmentation) and len(segmentation.layers) == 1
    assert segmentation.table is None  # names found as before: the header, a sidecar, ...
    reference = nib.load(str(sample_dir / "label.nii.gz"))
    assert np.array_equal(segmentation.label.array, np.asanyarray(reference.dataobj))
    assert np.allclose(segmentation.label.affine, reference.affine)


def test_layers_on_different_grids_are_refused():
    a = viz3d.Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4), "seg")
    b = viz3d.Volume(np.zeros((2, 2, 3), np.uint8), np.eye(4), "seg")
    with pytest.raises(Viz3dError, match="layer 1 is not on the grid of layer 0"):
        Segmentation((a, b))


# ------------------------------------------------------------------ NRRD and MetaImage: placement


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("suffix,compress", [(".nrrd", True), (".nrrd", False), (".mha", True), (".mhd", False)])
def test_a_simpleitk_written_ct_puts_the_marker_where_nibabel_puts_the_niftis(tmp_path, grid, suffix, compress):
    nifti = marker_image(tmp_path, grid)
    copy = sitk_copy(nifti, tmp_path / f"copy{suffix}", compress)
    ct = viz3d.load_ct(copy)
    assert np.allclose(viz3d_marker(ct), marker_ras(nifti), atol=1e-3)
    assert ct.array.dtype == np.int16 and ct.shape == (12, 10, 7)
    assert np.allclose(ct.voxel_sizes, [0.8, 0.9, 2.5], atol=1e-4)


@pytest.mark.parametrize("grid", sorted(GRIDS))
@pytest.mark.parametrize("space", ["RAS", "LPS"])
def test_a_pynrrd_written_ct_in_ras_or_lps_space_puts_the_marker_where_nibabel_does(tmp_path, grid, space):
    nifti = marker_image(tmp_path, grid)
    ct = viz3d.load_ct(pynrrd_copy(nifti, tmp_path / "copy.nrrd", space))
    assert np.allclose(viz3d_marker(ct), marker_ras(nifti), atol=1e-4)


def test_a_detached_nhdr_with_raw_data_is_read_from_its_data_file(tmp_path):
    nifti = marker_image(tmp_path, "oblique")
    header = pynrrd_copy(nifti, tmp_path / "copy.nhdr", "LPS", detached=True, encoding="raw")
    assert (tmp_path / "copy.raw").is_file()
    assert np.allclose(viz3d_marker(viz3d.load_ct(header)), marker_ras(nifti), atol=1e-4)


def test_the_real_label_map_as_nrrd_and_metaimage_gives_the_niftis_surfaces(sample_dir, tmp_path):
    """SimpleITK's copies of the real TotalSegmentator label map: same values, same grid, and the
    spleen and liver surfaces' centres within 0.5 mm and volumes within 2 % of the NIfTI's."""
    nifti = sample_dir / "label.nii.gz"
    reference = viz3d.load_label(nifti)
    wanted = [1, 5]  # spleen, liver
    expected = {m.label: m for m in viz3d.build_meshes(None, reference, table="totalsegmentator", labels=wanted)}
    for suffix in (".nrrd", ".mha"):
        label = viz3d.load_label(sitk_copy(nifti, tmp_path / f"label{suffix}"))
        assert label.same_grid(reference) and np.array_equal(label.array, reference.array)
        meshes = viz3d.build_meshes(None, label, table="totalsegmentator", labels=wanted)
        assert sorted(m.label for m in meshes) == wanted
        for mesh in meshes:
            ref = expected[mesh.label]
            assert np.linalg.norm(mesh.vertices.mean(axis=0) - ref.vertices.mean(axis=0)) < 0.5
            assert abs(_volume(mesh) / _volume(ref) - 1) < 0.02


def _volume(mesh) -> float:
    v = mesh.vertices[mesh.faces]
    return abs(float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()) / 6.0)


def test_info_reads_a_nrrd_ct_and_a_metaimage_label_map(sample_dir, tmp_path, capsys):
    ct = sitk_copy(sample_dir / "ct.nii.gz", tmp_path / "ct.nrrd")
    label = sitk_copy(sample_dir / "label.nii.gz", tmp_path / "label.mha")
    status, out, err = run_cli(capsys, "info", ct, "--label", label, "--label-table", "totalsegmentator")
    assert status == 0, err
    assert "labels (41 present" in out and " liver " in out
    assert "different grids" not in err


# ------------------------------------------------------------------ NRRD and MetaImage: bad input


def test_a_file_named_nrrd_that_is_not_nrrd_is_one_error_line(tmp_path, capsys):
    fake = tmp_path / "ct.nrrd"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    status, _, err = run_cli(capsys, "info", fake)
    assert status == 2
    one_error(err, str(fake), "not a readable NRRD file")


def test_a_nrrd_whose_data_is_cut_short_is_one_error_line(tmp_path, capsys):
    nifti = marker_image(tmp_path, "ras")
    path = pynrrd_copy(nifti, tmp_path / "cut.nrrd", "RAS", encoding="raw")
    path.write_bytes(path.read_bytes()[:-100])
    status, _, err = run_cli(capsys, "info", path)
    assert status == 2
    one_error(err, "cut.nrrd", "NRRD image data")


def test_a_nrrd_in_an_unplaceable_space_is_refused(tmp_path):
    path = tmp_path / "scanner.nrrd"
    nrrd.write(str(path), np.zeros((3, 3, 3), np.int16),
               {"space": "scanner-xyz", "space directions": np.eye(3), "space origin": np.zeros(3)})
    with pytest.raises(Viz3dError, match="scanner-xyz.*cannot be placed"):
        viz3d.load_ct(path)


def test_a_nrrd_vector_image_is_not_taken_for_a_ct(tmp_path):
    path = tmp_path / "vectors.nrrd"
    directions = np.vstack([[np.nan] * 3, np.eye(3)])
    nrrd.write(str(path), np.zeros((3, 4, 4, 4), np.int16),
               {"space": "RAS", "space directions": directions, "kinds": ["vector", "domain", "domain", "domain"]},
               index_order="F")
    with pytest.raises(Viz3dError, match="expected a 3-D image"):
        viz3d.load_ct(path)


def test_a_broken_metaimage_is_one_error_line_and_nothing_else_on_stderr(tmp_path):
    """MetaIO prints its complaints on the process's stderr: the command shows one line only."""
    fake = tmp_path / "ct.mha"
    fake.write_text("ObjectType = Image\nDimSize = 4 4\nElementDataFile = LOCAL\n")
    result = subprocess.run([sys.executable, "-m", "viz3d", "info", str(fake)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    one_error(result.stderr, "ct.mha", "not a readable MetaImage file")


def test_a_float_label_map_with_fractions_is_refused_in_any_format(tmp_path):
    image = sitk.GetImageFromArray(np.full((3, 3, 3), 0.5, np.float32))
    sitk.WriteImage(image, str(tmp_path / "soft.mha"))
    with pytest.raises(Viz3dError, match="non-integral values"):
        viz3d.load_label(tmp_path / "soft.mha")


def test_layers_are_what_label_layers_gives_back():
    a = viz3d.Volume(np.array([[[1, 0]]], np.uint8), np.eye(4), "s")
    b = viz3d.Volume(np.array([[[0, 2]]], np.uint8), np.eye(4), "s")
    label = Segmentation((a, b)).label
    assert [layer.array.tolist() for layer in label_layers(label)] == [[[[1, 0]]], [[[0, 2]]]]


def test_a_metaimage_whose_anatomical_orientation_contradicts_its_matrix_is_placed_by_the_matrix(tmp_path):
    """ITK places by TransformMatrix and Offset; a contradicting AnatomicalOrientation is named."""
    nifti = marker_image(tmp_path, "ras")
    path = sitk_copy(nifti, tmp_path / "ct.mha", compress=False)
    data = path.read_bytes()
    stated = data.split(b"AnatomicalOrientation = ", 1)[1][:3]
    assert stated == b"LPI"  # ITK's letters: axes from L, P, I, i.e. towards R, A, S (the NIfTI's RAS)
    path.write_bytes(data.replace(b"AnatomicalOrientation = LPI", b"AnatomicalOrientation = RAI", 1))
    with pytest.warns(viz3d.Viz3dWarning, match="AnatomicalOrientation RAI .* contradicts the TransformMatrix"):
        ct = viz3d.load_ct(path)
    assert np.allclose(viz3d_marker(ct), marker_ras(nifti), atol=1e-3)
