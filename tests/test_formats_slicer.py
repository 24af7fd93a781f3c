"""Tests for 3D Slicer ``.seg.nrrd`` segmentations (viz3d.io.slicer_seg).

The files are written by slicerio (the 3D Slicer project's Python reader/writer of
segmentation files), which stores overlapping segments in layers as Slicer does; expected
names, colours and positions come from what was given to slicerio and from nibabel's reading
of the NIfTI of the same masks.
"""
from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

import viz3d
from viz3d.cli.main import main
from viz3d.errors import Viz3dError
from viz3d.io.formats import load_segmentation
from viz3d.io.segmentation import label_layers
from viz3d.io.formats import resolve_label_table

slicerio = pytest.importorskip("slicerio")
nrrd = pytest.importorskip("nrrd")

SHAPE = (40, 36, 30)
# ijk -> LPS: 1.2 x 1.0 x 1.5 mm voxels, rotated 25 degrees about the LPS z axis (oblique)
_T = np.deg2rad(25)
IJK_TO_LPS = np.array([[1.2 * np.cos(_T), -1.0 * np.sin(_T), 0, 30.0],
                       [1.2 * np.sin(_T), 1.0 * np.cos(_T), 0, -50.0],
                       [0, 0, 1.5, 80.0],
                       [0, 0, 0, 1]])
IJK_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0]) @ IJK_TO_LPS
SEGMENTS = [  # name, colour, ball centre (voxel index), radius (voxels)
    ("liver", (0.86, 0.55, 0.40), (14, 16, 14), 8.0),
    ("tumour", (0.90, 0.10, 0.10), (20, 17, 15), 5.0),  # inside/overlapping the liver: a second layer
    ("left kidney", (0.20, 0.40, 0.90), (30, 26, 16), 4.0),
]


def ball(centre, radius) -> np.ndarray:
    i, j, k = np.indices(SHAPE)
    return (i - centre[0]) ** 2 + (j - centre[1]) ** 2 + (k - centre[2]) ** 2 <= radius ** 2


def centre_ras(mask: np.ndarray) -> np.ndarray:
    return (IJK_TO_RAS @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[:3]


@pytest.fixture
def seg_file(tmp_path):
    """A .seg.nrrd written by slicerio: liver and tumour overlap (two layers), kidney apart."""
    segmentation = slicerio.create_segmentation(SHAPE, IJK_TO_LPS)
    for name, color, centre, radius in SEGMENTS:
        slicerio.add_segment(segmentation, ball(centre, radius), {"id": name.replace(" ", "_"), "name": name,
                                                                  "color": list(color)})
    path = tmp_path / "case.seg.nrrd"
    slicerio.write_segmentation(str(path), segmentation)
    return path


def set_field(path, key: str, value: str | None):
    """Rewrite one header field of a NRRD file (or drop it with ``value=None``), data unchanged."""
    data, header = nrrd.read(str(path), index_order="F")
    if value is None:
        del header[key]
    else:
        header[key] = value
    nrrd.write(str(path), data, header, index_order="F")


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_every_segment_keeps_its_name_and_colour(seg_file):
    segmentation = load_segmentation(seg_file)
    table = segmentation.table
    assert sorted(table.names.values()) == sorted(name for name, *_ in SEGMENTS)
    for name, color, *_ in SEGMENTS:
        value = next(v for v, n in table.names.items() if n == name)
        assert np.allclose(table.color_of(value), color)
    assert table.source == "Slicer segmentation header"
    assert resolve_label_table(None, seg_file).names == table.names  # what info, legends and manifests say


def test_overlapping_segments_are_in_two_layers_each_voxel_where_slicerio_put_it(seg_file):
    segmentation = load_segmentation(seg_file)
    assert len(segmentation.layers) == 2
    value = {name: v for v, name in segmentation.table.names.items()}
    for name, _, centre, radius in SEGMENTS:
        held = [layer.array == value[name] for layer in segmentation.layers]
        assert sum(int(h.any()) for h in held) == 1  # one layer holds each segment
        assert np.array_equal(np.logical_or.reduce(held), ball(centre, radius))


def test_segments_land_at_the_same_ras_mm_as_a_nifti_of_the_same_masks(seg_file, tmp_path):
    """slicerio writes LPS; the NIfTI (nibabel, RAS) of the liver mask puts it at the same place."""
    label = viz3d.load_label(seg_file)
    liver = ball(SEGMENTS[0][2], SEGMENTS[0][3])
    nifti = tmp_path / "liver.nii.gz"
    nib.save(nib.Nifti1Image(liver.astype(np.uint8), IJK_TO_RAS), str(nifti))
    image = nib.load(str(nifti))
    expected = (image.affine @ np.r_[np.argwhere(np.asanyarray(image.dataobj)).mean(axis=0), 1.0])[:3]
    value = next(v for v, n in load_segmentation(seg_file).table.names.items() if n == "liver")
    layer = next(layer for layer in label_layers(label) if (layer.array == value).any())
    found = (layer.affine @ np.r_[np.argwhere(layer.array == value).mean(axis=0), 1.0])[:3]
    assert np.allclose(found, expected, atol=1e-4)


def test_each_segment_is_meshed_from_its_own_layer(seg_file):
    """Overlapping segments keep whole surfaces: the tumour inside the liver is a ball of its own."""
    meshes = viz3d.build_meshes(None, viz3d.load_label(seg_file))
    by_name = {mesh.name: mesh for mesh in meshes}
    assert sorted(by_name) == sorted(name for name, *_ in SEGMENTS)
    voxel_mm3 = abs(np.linalg.det(IJK_TO_LPS[:3, :3]))
    for name, color, centre, radius in SEGMENTS:
        mesh, mask = by_name[name], ball(centre, radius)
        assert np.allclose(mesh.color, color, atol=1e-6)
        assert np.linalg.norm(mesh.vertices.mean(axis=0) - centre_ras(mask)) < 0.5
        v = mesh.vertices[mesh.faces]
        volume = abs(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()) / 6.0
        assert abs(volume / (mask.sum() * voxel_mm3) - 1) < 0.05


def test_info_lists_every_segment_with_its_colour_and_the_names_source(seg_file, capsys):
    status, out, err = run_cli(capsys, "info", "--label", seg_file)
    assert status == 0, err
    assert "names from     : Slicer segmentation header" in out
    assert "labels (3 present" in out
    voxel_ml = abs(np.linalg.det(IJK_TO_LPS[:3, :3])) / 1000
    for name, color, centre, radius in SEGMENTS:
        row = next(line for line in out.splitlines() if re.match(rf"\s+\d+\s+{name}\s", line))
        hex_colour = "#" + "".join(f"{round(255 * c):02x}" for c in color)
        assert row.rstrip().endswith(hex_colour)
        count = int(ball(centre, radius).sum())
        assert f" {count} " in row and f"{count * voxel_ml:.2f}" in row


def test_export_writes_one_named_surface_per_segment(seg_file, tmp_path, capsys):
    out_dir = tmp_path / "meshes"
    status, _, err = run_cli(capsys, "export", "--label", seg_file, "--out", out_dir)
    assert status == 0, err
    names = sorted(p.name for p in out_dir.glob("*.stl"))
    assert len(names) == 3 and any("tumour" in n for n in names) and any("left" in n for n in names)


def test_segments_sharing_a_value_across_layers_get_distinct_values(seg_file):
    """slicerio numbers each layer from 1: the tumour (layer 1, value 1) and the liver (layer 0,
    value 1) must not become one class."""
    _, header = nrrd.read(str(seg_file), index_order="F")
    assert header["Segment0_LabelValue"] == header["Segment1_LabelValue"]  # the case under test
    table = load_segmentation(seg_file).table
    assert len(table.names) == 3


def test_a_segment_in_a_layer_the_file_does_not_have_is_one_error_line(seg_file, tmp_path, capsys):
    set_field(seg_file, "Segment2_Layer", "7")
    out_dir = tmp_path / "never"
    status, out, err = run_cli(capsys, "export", "--label", seg_file, "--out", out_dir)
    assert status == 2 and not out_dir.exists()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: ")
    assert "inconsistent Slicer segmentation header: Segment2_Layer is 7 but the data has 2 layers" in lines[0]


@pytest.mark.parametrize("key,value,message", [
    ("Segment1_LabelValue", "one", "Segment1_LabelValue is 'one': expected a whole number"),
    ("Segment0_Color", "0.5 0.5", "Segment0_Color is '0.5 0.5': expected three numbers in 0..1"),
    ("Segment1_Layer", None, "Segment1_Layer is missing"),
    ("Segment5_Name", "ghost", "Segment3 is missing"),
])
def test_inconsistent_segment_fields_are_refused_with_what_is_wrong(seg_file, key, value, message):
    set_field(seg_file, key, value)
    with pytest.raises(Viz3dError, match=re.escape(message)):
        viz3d.load_label(seg_file)


def test_two_segments_on_one_value_of_one_layer_are_refused(seg_file):
    set_field(seg_file, "Segment2_Layer", "0")
    set_field(seg_file, "Segment2_LabelValue", "1")
    with pytest.raises(Viz3dError, match="Segment0 and Segment2 both have label value 1 in layer 0"):
        viz3d.load_label(seg_file)


def test_a_single_layer_segmentation_keeps_slicers_label_values(tmp_path):
    segmentation = slicerio.create_segmentation(SHAPE, IJK_TO_LPS)
    slicerio.add_segment(segmentation, ball((10, 10, 10), 4), {"name": "a", "color": [1, 0, 0]})
    slicerio.add_segment(segmentation, ball((28, 25, 18), 4), {"name": "b", "color": [0, 1, 0]})
    path = tmp_path / "two.seg.nrrd"
    slicerio.write_segmentation(str(path), segmentation)
    loaded = load_segmentation(path)
    assert len(loaded.layers) == 1 and loaded.table.names == {1: "a", 2: "b"}
    assert np.array_equal(loaded.label.array, segmentation["voxels"])


def test_screenshot_draws_a_slicer_segmentation(seg_file, tmp_path, capsys):
    picture = tmp_path / "seg.png"
    status, _, err = run_cli(capsys, "screenshot", "--label", seg_file, "--out", picture, "--size", "320x240")
    assert status == 0, err
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
