"""Tests for the 2-D slice picture (`viz3d.outputs.slice2d`, `viz3d slice`), checked by the pictures' content.

Synthetic CTs carry markers whose place in the picture is known from the radiological
convention (axial: the patient's right on the viewer's left, anterior up; coronal: superior up;
sagittal: anterior on the left), stored in several orientations; the real TotalSegmentator
sample must show its liver on the viewer's left.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from PIL import Image
from scipy import ndimage

from viz3d.cli.main import main
from viz3d.errors import Viz3dError, Viz3dWarning
from viz3d.io.labels import LabelTable, load_label_table
from viz3d.outputs.slice2d import mosaic_image, save_slice, slice_image
from viz3d.io.volume import Volume

TABLE = LabelTable("test", {1: "alpha", 2: "beta", 5: "Liver"}, {1: (1.0, 0.0, 0.0), 2: (0.0, 0.0, 1.0), 5: (0.0, 1.0, 0.0)})
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


# ------------------------------------------------------------------ helpers


def stored_as(volume: Volume, codes: str) -> Volume:
    """The same image in the world, stored with array axes ``codes`` (e.g. "LPS", "ASR"): no resampling."""
    ornt = ornt_transform(axcodes2ornt(volume.axcodes), axcodes2ornt(tuple(codes)))
    array = apply_orientation(volume.array, ornt)
    return Volume(np.ascontiguousarray(array), volume.affine @ inv_ornt_aff(ornt, volume.shape))


def marker_ct(voxel, shape=(20, 16, 10), background=0, value=3000) -> Volume:
    """A RAS CT (1 mm voxels, origin 0) of ``background`` HU with one voxel of ``value``."""
    array = np.full(shape, background, np.int16)
    array[voxel] = value
    return Volume(array, np.eye(4))


def brightest(picture: np.ndarray) -> tuple[float, float]:
    """Row and column (fractions of the height and width) of the brightest pixels' centre."""
    grey = picture[..., 0].astype(int)
    rows, cols = np.nonzero(grey == grey.max())
    return rows.mean() / picture.shape[0], cols.mean() / picture.shape[1]


def has_colour(picture: np.ndarray, rgb) -> bool:
    return bool(np.all(picture == np.array(rgb, np.uint8), axis=-1).any())


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ------------------------------------------------------------------ orientation


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "ASR", "PIL"])
def test_a_marker_on_the_patients_right_shows_on_the_viewers_left_of_an_axial_slice_whatever_the_storage(codes):
    ct = stored_as(marker_ct((16, 8, 5)), codes)  # x = 16 of 0..19: the patient's right
    row, col = brightest(slice_image(ct, at=5.0, window="bone", annotate=False))
    assert col < 0.3, (codes, col)
    assert 0.4 < row < 0.6


@pytest.mark.parametrize("codes", ["RAS", "LPS", "ASR"])
def test_a_marker_anterior_shows_at_the_top_of_an_axial_slice_whatever_the_storage(codes):
    ct = stored_as(marker_ct((10, 13, 5)), codes)  # y = 13 of 0..15: anterior
    row, col = brightest(slice_image(ct, at=5.0, window="bone", annotate=False))
    assert row < 0.25, (codes, row)
    assert 0.4 < col < 0.6


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LPI"])
def test_a_coronal_slice_has_superior_up_and_the_patients_right_on_the_left(codes):
    ct = stored_as(marker_ct((16, 8, 8)), codes)  # right and superior (z = 8 of 0..9)
    row, col = brightest(slice_image(ct, plane="coronal", at=8.0, window="bone", annotate=False))
    assert row < 0.25 and col < 0.3, (codes, row, col)


@pytest.mark.parametrize("codes", ["RAS", "LPS"])
def test_a_sagittal_slice_has_superior_up_and_anterior_on_the_left(codes):
    ct = stored_as(marker_ct((10, 13, 8)), codes)  # anterior and superior
    row, col = brightest(slice_image(ct, plane="sagittal", at=10.0, window="bone", annotate=False))
    assert row < 0.25 and col < 0.3, (codes, row, col)


def test_the_same_world_image_gives_the_same_picture_in_every_storage_order():
    rng = np.random.default_rng(0)
    ras = Volume(rng.integers(-200, 300, (12, 10, 8)).astype(np.int16), np.diag([0.9, 1.1, 2.5, 1.0]))
    label = Volume((ras.array > 150).astype(np.uint8), ras.affine)
    for plane in ("axial", "coronal", "sagittal"):
        reference = slice_image(ras, label, TABLE, plane=plane, annotate=False)
        for codes in ("LPS", "ASR", "ILA"):
            picture = slice_image(stored_as(ras, codes), stored_as(label, codes), TABLE, plane=plane, annotate=False)
            assert np.array_equal(picture, reference), (plane, codes)


def test_an_oblique_grid_is_shown_on_its_closest_axes_with_a_warning():
    angle = np.radians(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation
    ct = Volume(marker_ct((16, 8, 5)).array, affine)
    with pytest.warns(Viz3dWarning, match=r"oblique \(its axes are up to 10\.0 degrees"):
        picture = slice_image(ct, at="i5", window="bone", annotate=False)
    assert brightest(picture)[1] < 0.3  # still on the viewer's left
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a grid on the world's axes: no warning
        slice_image(marker_ct((16, 8, 5)), annotate=False)


# ------------------------------------------------------------------ true aspect ratio


def test_anisotropic_voxels_keep_their_true_aspect_ratio():
    array = np.zeros((40, 40, 10), np.int16)
    array[:, :, 4] = 1000  # one 3 mm axial layer
    array[20, :, :] = 1000  # one 0.8 mm sagittal layer
    ct = Volume(array, np.diag([0.8, 0.8, 3.0, 1.0]))
    picture = slice_image(ct, plane="coronal", at=16.0, window=(500, 1000), size=(320, 320), annotate=False)
    assert picture.shape == (300, 320, 3)  # 30 mm tall, 32 mm wide
    bright = picture[..., 0] >= 128  # above half the layers' value: one voxel wide (linear between voxel centres)
    layer_rows = np.count_nonzero(bright[:, 2])  # a column away from the sagittal layer
    column_px = np.count_nonzero(bright[2, :])  # a row away from the axial layer
    assert layer_rows == 30 and column_px == 8  # 3 mm and 0.8 mm at 10 px per mm: 3.75 x taller per voxel


# ------------------------------------------------------------------ labels, colours, legend


def two_label_case():
    """A CT of 40 HU; label 1 (alpha) on the patient's right half of slices 2-7, label 2 (beta) only on slice 7."""
    ct = Volume(np.full((20, 16, 10), 40, np.int16), np.eye(4))
    label = np.zeros(ct.shape, np.uint8)
    label[10:, 4:12, 2:8] = 1
    label[2:6, 4:12, 7] = 2
    return ct, Volume(label, ct.affine)


def test_the_labels_colour_is_where_the_label_is_and_never_blended_between_labels():
    ct, label = two_label_case()
    picture = slice_image(ct, label, TABLE, at=7.0, opacity=1.0, size=(200, 200), annotate=False)
    red = np.all(picture == RED, axis=-1)
    blue = np.all(picture == BLUE, axis=-1)
    grey = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2])
    assert (red | blue | grey).all()  # nearest neighbour: nothing between the classes' colours
    rows, cols = np.nonzero(red)
    assert cols.max() < 100  # alpha is on the patient's right: the viewer's left half
    assert rows.min() >= 40 and rows.max() < 120  # y = 4..11 of 16, anterior up
    assert np.nonzero(blue)[1].min() > 100  # beta at x = 2..5: the patient's left


def test_half_opacity_blends_the_label_colour_with_the_ct():
    ct, label = two_label_case()
    picture = slice_image(ct, label, TABLE, at=4.0, opacity=0.5, size=(200, 200), annotate=False)
    inside = picture[80, 20].astype(int)  # alpha's voxels (x >= 10, y 4..11)
    assert inside.tolist() == [191, 64, 64]  # half red, half mid-grey (0.75 and 0.25 of 255)
    assert picture[80, 180].tolist() == [128, 128, 128]


def test_outlines_colour_the_border_and_leave_the_inside_grey():
    ct, label = two_label_case()
    picture = slice_image(ct, label, TABLE, at=4.0, outline=True, size=(200, 200), annotate=False)
    red = np.all(picture == RED, axis=-1)
    assert red.any()
    assert picture[80, 50].tolist() == [128, 128, 128]  # inside alpha
    filled = ndimage.binary_fill_holes(red)
    assert filled.sum() > 5 * red.sum()  # a closed ring around the structure


def test_the_legend_lists_only_the_structures_on_that_slice():
    ct, label = two_label_case()  # pure swatch colours appear only in the legend at opacity 0.5
    only_alpha = slice_image(ct, label, TABLE, at=4.0)
    assert has_colour(only_alpha, RED) and not has_colour(only_alpha, BLUE)
    both = slice_image(ct, label, TABLE, at=7.0)
    assert has_colour(both, RED) and has_colour(both, BLUE)
    none = slice_image(ct, label, TABLE, at=0.0)
    assert not has_colour(none, RED) and not has_colour(none, BLUE)


def test_a_label_map_on_another_grid_is_sampled_through_both_affines():
    ct = Volume(np.full((20, 16, 10), 40, np.int16), np.eye(4))
    coarse = np.zeros((10, 8, 5), np.uint8)
    coarse[5:, 2:6, 1:4] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = 0.5  # 2 mm voxel i covers the 1 mm voxels 2i and 2i+1
    fine = Volume(np.repeat(np.repeat(np.repeat(coarse, 2, 0), 2, 1), 2, 2), ct.affine)
    on_other_grid = slice_image(ct, Volume(coarse, affine), TABLE, at=4.0, opacity=1.0, annotate=False)
    assert np.array_equal(on_other_grid, slice_image(ct, fine, TABLE, at=4.0, opacity=1.0, annotate=False))
    assert has_colour(on_other_grid, RED)


# ------------------------------------------------------------------ where the slice is


def slice_coded_ct(codes="RAS") -> Volume:
    """A CT whose file slice k (third array axis) holds 100 k HU, 2.5 mm apart from z = -20 mm."""
    array = np.broadcast_to(np.arange(10, dtype=np.int16) * 100, (12, 12, 10)).copy()
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    affine[2, 3] = -20.0
    volume = Volume(array, affine)
    if codes == "RAS":
        return volume
    flipped = affine.copy()  # the same file array, stored inferior-wards: slice k at z = 2.5 - 2.5 k
    flipped[2, 2], flipped[2, 3] = -2.5, 2.5
    return Volume(array, flipped)


def shown_slice(picture: np.ndarray) -> int:
    """Which file slice k a picture of `slice_coded_ct` shows (window 450/900: grey = 255 * k / 9)."""
    return int(round(picture[picture.shape[0] // 2, picture.shape[1] // 2, 0] / 255 * 9))


@pytest.mark.parametrize("at, k", [(-5.0, 6), ("-4", 6), (-20.0, 0), ("i3", 3), (" I9 ", 9), (None, 4)])
def test_at_picks_the_slice_by_mm_and_by_the_files_index(at, k):
    picture = slice_image(slice_coded_ct(), at=at, window=(450, 900), annotate=False)
    assert shown_slice(picture) == k


def test_an_index_counts_along_the_files_array_even_when_it_runs_inferior_wards():
    ct = slice_coded_ct("flipped")
    assert shown_slice(slice_image(ct, at="i3", window=(450, 900), annotate=False)) == 3
    assert shown_slice(slice_image(ct, at=2.5 - 2.5 * 7, window=(450, 900), annotate=False)) == 7


def test_at_a_structure_name_picks_the_slice_through_its_centre_case_insensitively():
    """The slice through the structure's centre (as viewers jump to a segment), not its largest
    cross-section: here a wide plate at the structure's end (slice 1), where the old rule went."""
    ct = slice_coded_ct()
    label = np.zeros(ct.shape, np.uint8)
    label[4:8, 4:8, 1:9] = 5  # "Liver" in slices 1..8: centroid at 3.55 ...
    label[2:10, 2:10, 1] = 5  # ... its largest cross-section in slice 1
    label[0, 0, 9] = 1
    picture = slice_image(ct, Volume(label, ct.affine), TABLE, at="liver", window=(450, 900), opacity=0.0, annotate=False)
    assert shown_slice(picture) == 4
    label[:, :, 3:6] = 0  # no liver at its centre (2.71 now): the nearest slice that shows it
    picture = slice_image(ct, Volume(label, ct.affine), TABLE, at="liver", window=(450, 900), opacity=0.0, annotate=False)
    assert shown_slice(picture) == 2
    with pytest.raises(Viz3dError, match="'livr' is not a number, 'i<index>' or a structure .* did you mean liver"):
        slice_image(ct, Volume(label, ct.affine), TABLE, at="livr")
    with pytest.raises(Viz3dError, match=r"beta \(label 2\) is not in"):
        slice_image(ct, Volume(label, ct.affine), TABLE, at="BETA")


def test_the_default_slice_is_the_middle_of_the_labelled_extent():
    ct = slice_coded_ct()
    label = np.zeros(ct.shape, np.uint8)
    label[3:5, 3:5, 6:9] = 1
    picture = slice_image(ct, Volume(label, ct.affine), TABLE, window=(450, 900), opacity=0.0, annotate=False)
    assert shown_slice(picture) == 7


# ------------------------------------------------------------------ window


@pytest.mark.parametrize("window, centre", [("soft", 40), ("bone", 400), ("lung", -600), ("brain", 40), ((100, 50), 100)])
def test_a_voxel_at_the_windows_centre_is_mid_grey(window, centre):
    picture = slice_image(Volume(np.full((8, 8, 4), centre, np.int16), np.eye(4)), window=window, annotate=False)
    assert np.all((picture == 127) | (picture == 128))


def test_the_window_maps_its_low_end_to_black_and_its_high_end_to_white():
    array = np.zeros((8, 8, 4), np.int16)
    array[:4] = -160  # soft window: 40 - 400 / 2
    array[4:] = 240  # 40 + 400 / 2
    picture = slice_image(Volume(array, np.eye(4)), window="soft", size=(80, 80), annotate=False)
    assert picture[40, 70].tolist() == [0, 0, 0]  # x = 0..3: the patient's left, the viewer's right
    assert picture[40, 10].tolist() == [255, 255, 255]
    bone = slice_image(Volume(array, np.eye(4)), window="bone", size=(80, 80), annotate=False)
    assert 100 < bone[40, 10, 0] < 128  # 240 HU is below the bone window's centre (400)


# ------------------------------------------------------------------ mosaic


def test_a_mosaic_has_n_panels_evenly_through_the_labelled_extent():
    ct = Volume(np.broadcast_to(np.arange(40, dtype=np.int16) * 20, (8, 8, 40)).copy(), np.eye(4))  # slice k: 20 k HU
    label = np.zeros(ct.shape, np.uint8)
    label[2:4, 2:4, 10:30] = 1  # the labelled extent: slices 10..29
    picture = mosaic_image(ct, Volume(label, ct.affine), TABLE, n=4, window=(400, 800), opacity=0.0, size=(96, 96))
    grey = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2]) & (picture[..., 0] > 0)
    panels, count = ndimage.label(grey)
    boxes = [box for box in ndimage.find_objects(panels) if (box[0].stop - box[0].start) * (box[1].stop - box[1].start) > 2000]
    assert len(boxes) == 4
    boxes.sort(key=lambda box: (box[0].start, box[1].start))  # reading order
    shown = [int(round(np.median(picture[box][..., 0]) / 255 * 40)) for box in boxes]  # grey = 255 * 20 k / 800
    assert shown == [12, 17, 22, 27]


@pytest.mark.parametrize("n, message", [(0, "1 to 64"), (65, "1 to 64"), (2.5, "whole number"), (30, "holds only 20")])
def test_a_bad_mosaic_count_is_refused(n, message):
    ct = Volume(np.zeros((8, 8, 40), np.int16), np.eye(4))
    label = np.zeros(ct.shape, np.uint8)
    label[..., 10:30] = 1
    with pytest.raises(Viz3dError, match=message):
        mosaic_image(ct, Volume(label, ct.affine), TABLE, n=n)


# ------------------------------------------------------------------ the command line


@pytest.fixture
def small_case(tmp_path):
    import nibabel as nib

    ct, label = two_label_case()
    nib.save(nib.Nifti1Image(ct.array, ct.affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label.array, label.affine), tmp_path / "label.nii.gz")
    return tmp_path


@pytest.mark.parametrize("args, fragment", [
    (["--plane", "oblique"], "invalid choice: 'oblique'"),
    (["--at", "999"], "position 999 mm is outside the CT"),
    (["--at", "i10"], "slice index i10 is outside the CT: its axial slices are i0..i9"),
    (["--at", "gamma"], "'gamma' is not a number, 'i<index>' or a structure"),
    (["--mosaic", "0"], "a mosaic has 1 to 64 slices"),
    (["--mosaic", "many"], "argument --mosaic: invalid int value"),
    (["--mosaic", "3", "--at", "i2"], "either --at or --mosaic"),
    (["--opacity", "1.5"], "opacity must be from 0"),
    (["--window", "skin"], "unknown window preset 'skin'"),
])
def test_bad_input_gives_one_error_line_exit_2_and_no_png(capsys, small_case, args, fragment):
    out = small_case / "slice.png"
    status, _, err = run_cli(capsys, "slice", small_case / "ct.nii.gz", "--label", small_case / "label.nii.gz",
                             "--out", out, *args)
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: ") and "Traceback" not in err, err
    assert fragment in lines[0]
    assert sorted(p.name for p in small_case.iterdir()) == ["ct.nii.gz", "label.nii.gz"]  # nothing written


def test_an_output_that_is_not_a_png_in_an_existing_folder_is_refused(capsys, small_case):
    for out, fragment in ((small_case / "slice.jpg", "use a .png file name"), (small_case / "no" / "s.png", "does not exist")):
        status, _, err = run_cli(capsys, "slice", small_case / "ct.nii.gz", "--out", out)
        assert status == 2 and fragment in err and len(err.splitlines()) == 1


def test_the_command_writes_the_png_it_describes(capsys, small_case):
    out = small_case / "slice.png"
    status, _, err = run_cli(capsys, "slice", small_case / "ct.nii.gz", "--label", small_case / "label.nii.gz",
                             "--out", out, "--at", "i7", "--outline")
    assert status == 0, err
    assert "wrote" in err and "axial z = 7.0 mm (slice i7 of 10)" in err and "2 structures" in err
    picture = np.asarray(Image.open(out).convert("RGB"))
    table = load_label_table(None)  # spinopelvic10: L1 and L2 outlined in their full colours
    assert all(has_colour(picture, np.rint(np.array(table.color_of(v)) * 255)) for v in (1, 2))
    assert not list(small_case.glob(".*tmp*"))  # written atomically: no temporary file left


# ------------------------------------------------------------------ the real sample


@pytest.fixture(scope="module")
def real_case():
    from viz3d.api import load_ct
    from viz3d.io.labels import load_label_table
    from viz3d.io.formats import load_label

    sample = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg_example"
    return load_ct(sample / "ct.nii.gz"), load_label(sample / "label.nii.gz"), load_label_table("totalsegmentator")


def colour_columns(picture, table, value):
    """Columns (fractions of the width) of the pixels in ``value``'s colour (opacity 1)."""
    rgb = np.rint(np.array(table.color_of(value)) * 255).astype(np.uint8)
    return np.nonzero(np.all(picture == rgb, axis=-1))[1] / picture.shape[1]


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_the_real_sample_shows_the_liver_on_the_viewers_left_and_the_spleen_on_the_right(real_case, plane):
    ct, label, table = real_case
    picture = slice_image(ct, label, table, plane=plane, at="liver", opacity=1.0, annotate=False)
    liver = colour_columns(picture, table, 5)
    assert liver.size > 1000 and np.median(liver) < 0.45
    spleen_slice = slice_image(ct, label, table, plane=plane, at="spleen", opacity=1.0, annotate=False)
    assert np.median(colour_columns(spleen_slice, table, 1)) > 0.55


def test_the_real_sample_sagittal_slice_has_the_spine_posterior_on_the_right(real_case):
    ct, label, table = real_case
    picture = slice_image(ct, label, table, plane="sagittal", at="vertebrae_L1", opacity=1.0, annotate=False)
    liver = colour_columns(slice_image(ct, label, table, plane="sagittal", at="liver", opacity=1.0, annotate=False), table, 5)
    assert np.median(colour_columns(picture, table, 31)) > np.median(liver)  # vertebra behind the liver


def test_the_real_sample_renders_from_the_command_line_slice_and_mosaic(capsys, tmp_path):
    sample = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalseg_example"
    for extra in ([], ["--plane", "coronal", "--at", "liver", "--window", "bone"], ["--mosaic", "6", "--outline"]):
        out = tmp_path / "slice.png"
        status, _, err = run_cli(capsys, "slice", sample / "ct.nii.gz", "--label", sample / "label.nii.gz",
                                 "--label-table", "totalsegmentator", "--out", out, *extra)
        assert status == 0, err
        picture = np.asarray(Image.open(out).convert("RGB"))
        assert picture.shape[0] > 150 and picture.shape[1] > 500
        assert np.unique(picture.reshape(-1, 3), axis=0).shape[0] > 200  # a CT with colours, not a blank


def test_save_slice_writes_a_png_from_python(tmp_path):
    ct, label = two_label_case()
    out = save_slice(tmp_path / "s.png", ct, label, TABLE, plane="coronal", at="alpha")
    assert out == tmp_path / "s.png"
    assert np.asarray(Image.open(out)).shape[2] in (3, 4)


def test_without_a_table_the_slice_takes_the_names_the_label_file_carries(sample_dir):
    # the sample's label map carries TotalSegmentator's names in its header: the legend's swatch
    # for value 5 is the liver's colour, not the workshop default's L5
    picture = slice_image(str(sample_dir / "ct.nii.gz"), str(sample_dir / "label.nii.gz"), at="liver")
    liver = tuple(int(round(255 * c)) for c in load_label_table("totalsegmentator").color_of(5))
    l5 = tuple(int(round(255 * c)) for c in load_label_table("spinopelvic10").color_of(5))
    assert has_colour(picture, liver) and not has_colour(picture, l5)


def test_a_short_name_picks_the_same_slice_as_the_full_one(real_case):
    """``--at L1`` on TotalSegmentator's names, as ``--labels L1`` and ``--slices axial=L1`` take it
    (before: "'L1' is not a number, 'i<index>' or a structure")."""
    ct, label, table = real_case
    short = slice_image(ct, label, table, at="L1", opacity=1.0, annotate=False)
    np.testing.assert_array_equal(short, slice_image(ct, label, table, at="vertebrae_L1", opacity=1.0, annotate=False))
    with pytest.raises(Viz3dError, match="'left' is not a number"):
        slice_image(ct, label, table, at="left")  # the last word of many names: no shorthand
