"""Tests for viz3d.io.volume: the Volume type's geometry and NIfTI loading with validation.

Every file is written here with nibabel/numpy (or is the real TotalSegmentator sample);
expected values are computed independently of viz3d (nibabel, numpy, explicit corners).
"""
from __future__ import annotations

import gzip
import itertools
import os
import subprocess
import sys
import threading
import time
import warnings

import nibabel as nib
import numpy as np
import pytest

from viz3d.errors import Viz3dError, Viz3dWarning
from viz3d.surfaces.meshing import bone_mesh
from viz3d.io.formats import load_label
from viz3d.io.volume import AIR_HU, Volume, inflate_soon, load_ct


# ------------------------------------------------------------------ helpers


def _rotation(axis: str, degrees: float) -> np.ndarray:
    """A 3x3 right-handed rotation about x, y or z."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _affine(linear, origin) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = linear
    aff[:3, 3] = origin
    return aff


def _corner_box(shape, affine) -> np.ndarray:
    """[[min xyz], [max xyz]] of the 8 outer voxel corners, one corner at a time."""
    points = []
    for corner in itertools.product(*[(-0.5, n - 0.5) for n in shape]):
        points.append(affine @ np.array([*corner, 1.0]))
    points = np.array(points)[:, :3]
    return np.array([points.min(axis=0), points.max(axis=0)])


def _save(array, path, affine=None, dtype=None):
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(array, affine, dtype=dtype) if dtype is not None else nib.Nifti1Image(array, affine)
    nib.save(img, str(path))
    return path


# Each case: (name, 3x3 linear part, voxel sizes it was built from, origin).
_OBLIQUE = _rotation("z", 30) @ _rotation("x", 20)
GEOMETRY_CASES = [
    ("RAS_iso", np.diag([1.0, 1.0, 1.0]), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    ("LAS", np.diag([-0.8, 0.8, 2.5]), (0.8, 0.8, 2.5), (200.0, -150.0, 30.0)),
    ("LPS", np.diag([-0.7, -0.7, 1.25]), (0.7, 0.7, 1.25), (180.0, 175.0, -400.0)),
    ("PIR_permuted", np.array([[0, 0, 3.0], [-0.5, 0, 0], [0, -1.5, 0]]), (0.5, 1.5, 3.0), (10.0, 20.0, 30.0)),
    ("oblique_aniso", _OBLIQUE @ np.diag([0.6, 0.9, 4.0]), (0.6, 0.9, 4.0), (-12.5, 40.0, 7.0)),
    ("oblique_flipped", _rotation("y", -25) @ np.diag([-1.1, 1.0, -2.0]), (1.1, 1.0, 2.0), (5.0, 5.0, 5.0)),
]


# ------------------------------------------------------------------ Volume geometry


@pytest.mark.parametrize("name, linear, sizes, origin", GEOMETRY_CASES, ids=[c[0] for c in GEOMETRY_CASES])
def test_volume_geometry(name, linear, sizes, origin):
    shape = (7, 5, 4)
    affine = _affine(linear, origin)
    vol = Volume(np.zeros(shape, np.int16), affine, source=name)

    assert vol.shape == shape
    assert vol.voxel_sizes == pytest.approx(sizes, abs=1e-9)
    assert vol.voxel_volume_mm3 == pytest.approx(float(np.prod(sizes)), rel=1e-9)
    assert vol.axcodes == tuple(nib.aff2axcodes(affine))
    np.testing.assert_allclose(vol.world_bounds(), _corner_box(shape, affine), atol=1e-9)
    assert vol.affine.dtype == float
    assert vol.same_grid(Volume(np.ones(shape, np.uint8), affine.copy()))


def test_axcodes_of_known_orientations():
    assert Volume(np.zeros((2, 2, 2)), np.diag([-1.0, 1.0, 1.0, 1.0])).axcodes == ("L", "A", "S")
    assert Volume(np.zeros((2, 2, 2)), np.diag([-1.0, -1.0, 1.0, 1.0])).axcodes == ("L", "P", "S")
    permuted = np.array([[0, 0, 3.0, 0], [-0.5, 0, 0, 0], [0, -1.5, 0, 0], [0, 0, 0, 1]])
    assert Volume(np.zeros((2, 2, 2)), permuted).axcodes == ("P", "I", "R")


def test_world_bounds_worked_example():
    """2x3x4 voxels of 1x2x3 mm at the origin, x flipped: the box is written out by hand."""
    affine = np.diag([-1.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [10.0, 0.0, -5.0]
    vol = Volume(np.zeros((2, 3, 4)), affine)
    # x: 10 - 1*(-0.5 .. 1.5) = 8.5 .. 10.5; y: 2*(-0.5 .. 2.5) = -1 .. 5; z: -5 + 3*(-0.5 .. 3.5) = -6.5 .. 5.5
    np.testing.assert_allclose(vol.world_bounds(), [[8.5, -1.0, -6.5], [10.5, 5.0, 5.5]])


def test_same_grid_detects_shape_and_affine_changes():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    a = Volume(np.zeros((4, 4, 4)), aff)
    shifted = aff.copy()
    shifted[0, 3] = 0.5
    assert not a.same_grid(Volume(np.zeros((4, 4, 5)), aff))
    assert not a.same_grid(Volume(np.zeros((4, 4, 4)), shifted))
    tiny = aff.copy()
    tiny[0, 3] = 1e-5
    assert a.same_grid(Volume(np.zeros((4, 4, 4)), tiny))


@pytest.mark.parametrize(
    "array, affine, fragment",
    [
        (np.zeros((4, 4)), np.eye(4), "3-D"),
        (np.zeros((4, 4, 4, 2)), np.eye(4), "3-D"),
        (np.zeros((4, 4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (np.zeros((4, 4, 4)), np.full((4, 4), np.nan), "finite"),
        (np.zeros((4, 4, 4)), np.eye(3), "4x4"),
    ],
    ids=["2d", "4d", "singular", "nan_affine", "3x3_affine"],
)
def test_volume_rejects_bad_construction(array, affine, fragment):
    with pytest.raises(Viz3dError, match=fragment):
        Volume(array, affine, source="thing.nii.gz")


# ------------------------------------------------------------------ loading: geometry from files


def test_qform_only_file_loads_with_qform_affine(tmp_path):
    rot = _rotation("z", 25) @ _rotation("y", 10)
    qform = _affine(rot @ np.diag([0.9, 1.1, 2.5]), (-30.0, 12.0, 80.0))
    decoy = np.diag([5.0, 5.0, 5.0, 1.0])  # an sform that must be ignored (code 0)
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), None)
    img.set_qform(qform, code=1)
    img.set_sform(decoy, code=0)
    path = tmp_path / "qform_only.nii.gz"
    nib.save(img, str(path))

    header = nib.load(str(path)).header
    assert int(header["sform_code"]) == 0 and int(header["qform_code"]) == 1
    vol = load_ct(path)
    np.testing.assert_allclose(vol.affine, qform, atol=1e-4)
    assert vol.voxel_sizes == pytest.approx((0.9, 1.1, 2.5), abs=1e-5)
    assert vol.axcodes == tuple(nib.aff2axcodes(qform))
    np.testing.assert_array_equal(vol.array, np.arange(60).reshape(3, 4, 5))


def test_sform_wins_over_qform(tmp_path):
    sform = _affine(np.diag([-0.5, 0.5, 3.0]), (100.0, -50.0, 0.0))
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), None)
    img.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]), code=1)
    img.set_sform(sform, code=2)
    path = _save_img(img, tmp_path / "both.nii")
    np.testing.assert_allclose(load_ct(path).affine, sform, atol=1e-5)


def _save_img(img, path):
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("name", ["las.nii.gz", "lps.nii"])
def test_flipped_affine_round_trips(tmp_path, name):
    linear = np.diag([-0.8, 0.8, 2.5]) if name.startswith("las") else np.diag([-0.7, -0.7, 1.25])
    affine = _affine(linear, (10.0, 20.0, 30.0))
    data = np.random.default_rng(0).integers(-1000, 1500, size=(6, 5, 4)).astype(np.int16)
    vol = load_ct(_save(data, tmp_path / name, affine))
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(vol.array, data)
    assert vol.axcodes == tuple(nib.aff2axcodes(affine))


# ------------------------------------------------------------------ loading: data types


def test_uint16_label_values_up_to_1000_are_kept(tmp_path):
    data = np.zeros((8, 8, 8), np.uint16)
    data[1, 1, 1] = 1000
    data[2:4, 2:4, 2:4] = 257
    data[5, 5, 5] = 999
    vol = load_label(_save(data, tmp_path / "big_labels.nii.gz"))
    assert vol.array.dtype == np.uint16
    np.testing.assert_array_equal(vol.array, data)
    assert sorted(np.unique(vol.array).tolist()) == [0, 257, 999, 1000]


def test_small_integer_label_values_survive_dtype_narrowing(tmp_path):
    data = np.zeros((5, 5, 5), np.int32)
    data[1, 1, 1], data[2, 2, 2] = 7, 255
    vol = load_label(_save(data, tmp_path / "int32_label.nii.gz", dtype=np.int32))
    assert vol.array.dtype.kind == "u"
    np.testing.assert_array_equal(vol.array, data)


def test_integral_float_labels_become_integers(tmp_path):
    data = np.zeros((6, 6, 6), np.float32)
    data[1:3, 1:3, 1:3] = 3.0
    data[4, 4, 4] = 117.0
    vol = load_label(_save(data, tmp_path / "float_label.nii.gz"))
    assert vol.array.dtype.kind in "iu"
    np.testing.assert_array_equal(vol.array, data.astype(np.int64))


def test_non_integral_float_labels_are_refused(tmp_path):
    data = np.zeros((6, 6, 6), np.float32)
    data[2, 2, 2] = 2.5
    path = _save(data, tmp_path / "soft_label.nii.gz")
    with pytest.raises(Viz3dError) as info:
        load_label(path)
    message = str(info.value)
    assert str(path) in message and "non-integral" in message and "2.5" in message


def test_nan_labels_are_refused(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    path = _save(data, tmp_path / "nan_label.nii.gz")
    with pytest.raises(Viz3dError, match="NaN"):
        load_label(path)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_negative_labels_are_refused(tmp_path, dtype):
    data = np.zeros((4, 4, 4), dtype)
    data[1, 1, 1] = -3
    path = _save(data, tmp_path / "neg_label.nii.gz")
    with pytest.raises(Viz3dError) as info:
        load_label(path)
    assert str(path) in str(info.value) and "negative" in str(info.value)


def test_label_values_beyond_uint32_are_not_silently_wrapped(tmp_path):
    data = np.zeros((4, 4, 4), np.int64)
    data[1, 1, 1] = 2**33 + 5
    path = _save(data, tmp_path / "huge_value.nii.gz", dtype=np.int64)
    try:
        vol = load_label(path)
    except Viz3dError as exc:  # refusing the file, naming it, is fine too
        assert str(path) in str(exc)
        return
    assert int(vol.array.max()) == 2**33 + 5


def test_int32_ct_loads(sample_dir):
    path = sample_dir / "ct_full_fov.nii.gz"
    img = nib.load(str(path))
    vol = load_ct(path)
    assert img.get_data_dtype() == np.int32
    assert vol.array.dtype == np.int32
    assert vol.shape == img.shape == (122, 101, 112)
    np.testing.assert_array_equal(vol.array, np.asanyarray(img.dataobj))


def test_nan_in_float_ct_becomes_air_with_a_warning_that_counts_them(tmp_path):
    data = np.full((12, 12, 12), -600.0, np.float32)
    data[3:9, 3:9, 3:9] = 1000.0
    data[0, 0, 0] = np.nan  # in air
    data[6, 6, 6] = np.nan  # inside the bone block
    data[1, 2, 3] = -np.inf
    path = _save(data, tmp_path / "nan_ct.nii.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = load_ct(path)
    said = [str(w.message) for w in caught if issubclass(w.category, Viz3dWarning)]
    assert said == [f"{path}: 3 voxels are NaN or infinite (of 1728): set to air (-1024 HU)"]
    assert vol.array.dtype == np.float32
    assert np.all(np.isfinite(vol.array))
    assert vol.array[0, 0, 0] == AIR_HU == -1024
    assert vol.array[6, 6, 6] == AIR_HU
    assert vol.array[1, 2, 3] == AIR_HU
    assert vol.meta["nonfinite_voxels"] == 3
    assert vol.array[3, 3, 3] == 1000.0 and vol.array[10, 10, 10] == -600.0

    mesh = bone_mesh(vol, smooth=False)
    assert mesh is not None and mesh.n_triangles > 0
    assert np.all(np.isfinite(mesh.vertices))
    # Same surface as when the NaNs had been air all along.
    clean = data.copy()
    clean[~np.isfinite(clean)] = AIR_HU
    reference = bone_mesh(Volume(clean, vol.affine), smooth=False)
    np.testing.assert_allclose(mesh.vertices, reference.vertices)
    np.testing.assert_array_equal(mesh.faces, reference.faces)


def test_four_d_single_volume_loads_as_three_d(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6, 1)
    vol = load_ct(_save(data, tmp_path / "single.nii.gz"))
    assert vol.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.array, data[..., 0])


@pytest.mark.parametrize("shape", [(6, 6), (6, 6, 6, 3)], ids=["2d", "4d_three_volumes"])
def test_wrong_dimensionality_is_refused(tmp_path, shape):
    path = _save(np.zeros(shape, np.int16), tmp_path / "bad_dims.nii.gz")
    with pytest.raises(Viz3dError) as info:
        load_ct(path)
    assert str(path) in str(info.value) and "3-D" in str(info.value)


# ------------------------------------------------------------------ loading: broken files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(Viz3dError, match="no such file"):
        load_ct(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(Viz3dError, match="empty"):
        load_label(path)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(Viz3dError, match="folder"):
        load_ct(tmp_path)


@pytest.mark.parametrize("name", ["trunc.nii.gz", "trunc.nii"])
def test_truncated_file(tmp_path, name):
    full = _save(np.arange(20 * 20 * 20, dtype=np.int16).reshape(20, 20, 20), tmp_path / ("full_" + name))
    data = full.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Viz3dError) as info:
        load_ct(path)
    assert str(path) in str(info.value)


def test_gzip_stream_complete_but_too_short(tmp_path):
    """A properly ended gzip stream holding less voxel data than the header says."""
    header = nib.Nifti1Header()
    header.set_data_shape((20, 20, 20))
    header.set_data_dtype(np.int16)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path = tmp_path / "short.nii.gz"
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 1000)
    with pytest.raises(Viz3dError) as info:
        load_ct(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "name, content",
    [
        ("text.nii.gz", b"this is not a NIfTI file\n"),
        ("text.nii", b"this is not a NIfTI file either\n" * 20),
        ("gzipped_text.nii.gz", gzip.compress(b"hello " * 200)),
        ("picture.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64),
        ("notes.txt", b"some notes\n"),
    ],
)
def test_not_a_nifti_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(Viz3dError) as info:
        load_ct(path)
    assert str(path) in str(info.value) and "NIfTI" in str(info.value)


def test_header_promising_huge_data_fails_fast_without_allocating(tmp_path):
    """Uncompressed .nii whose header says 2000^3 float32 (32 GB) but holds 1 kB."""
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path = tmp_path / "liar.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 1024)
    start = time.perf_counter()
    with pytest.raises(Viz3dError) as info:
        load_ct(path)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert str(path) in message and "2000" in message


def _with_header(path, **fields):
    """A .nii written by nibabel, then header fields set as raw values (what a broken writer leaves)."""
    img = nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_qform(img.affine, code=1)
    for name, value in fields.items():
        img.header[name] = value
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("slope, inter", [(1e38, 0.0), (1.0, 1e38), (3e37, -1e38)])
def test_scaling_beyond_any_real_value_is_refused_not_made_air(tmp_path, slope, inter):
    path = _with_header(tmp_path / "scaled.nii", scl_slope=slope, scl_inter=inter)
    with pytest.raises(Viz3dError, match="scl_slope .* and scl_inter .*: the header's scaling is broken") as info:
        load_ct(path)
    assert str(path) in str(info.value)


def test_infinite_scl_slope_is_refused_while_nan_means_unscaled(tmp_path):
    with pytest.raises(Viz3dError, match=r"scl_slope is inf"):
        load_ct(_with_header(tmp_path / "inf.nii", scl_slope=np.inf))
    unscaled = load_ct(_with_header(tmp_path / "nan.nii", scl_slope=np.nan, scl_inter=np.nan))  # nibabel's "no scaling"
    assert unscaled.array.dtype == np.int16 and unscaled.array.max() == 6 * 5 * 4 - 1


SHEARED = np.array([[2.0, 1e30, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
PARALLEL = np.array([[2.0, 2.0, 0, 0], [0, 0.01, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine, fragment", [
    (SHEARED, "voxel size (2, 1e+30, 3) mm is outside 0.001..1000 mm"),
    (np.diag([1e-6, 1.0, 1.0, 1.0]), "voxel size (1e-06, 1, 1) mm is outside"),
    (np.diag([1.0, 1.0, 5e3, 1.0]), "voxel size (1, 1, 5000) mm is outside"),
    (PARALLEL, "voxel axes are nearly parallel"),
    (np.array([[1.0, 0, 0, 1e9], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "more than 100 m from the scanner"),
], ids=["sheared_1e30", "tiny_voxels", "huge_voxels", "parallel_axes", "far_origin"])
def test_absurd_affines_are_refused_naming_what_is_wrong(tmp_path, affine, fragment):
    path = tmp_path / "absurd.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), affine), str(path))
    for load in (load_ct, load_label):
        with pytest.raises(Viz3dError) as info:
            load(path)
        assert fragment in str(info.value) and str(path) in str(info.value)


def test_info_on_a_sheared_nifti_is_one_error_line_not_an_internal_error(tmp_path, capsys):
    from viz3d.cli.main import main

    path = tmp_path / "sheared.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), SHEARED), str(path))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"viz3d: error: {path}: voxel size") and err.count("\n") == 1


def test_nibabel_header_fixes_come_out_as_viz3d_warning_lines(tmp_path, capfd):
    """nibabel logs its fixes through a stderr handler of its own; the command line prefixes them."""
    from viz3d.cli.main import main

    path = _with_header(tmp_path / "fixed.nii", qform_code=99)
    assert main(["info", str(path)]) == 0
    err = capfd.readouterr().err
    assert err.splitlines() == ["viz3d: warning: nibabel: qform_code 99 not valid; setting to 0"]


@pytest.fixture
def fifo(tmp_path):
    """A named pipe with no writer (opening it for reading would wait for ever); released after."""
    path = tmp_path / "ct.nii.gz"
    os.mkfifo(path)
    yield path
    try:  # a reader stuck in open() (a regression) is let go: the open succeeds, then EOF
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_a_fifo_as_ct_is_refused_by_name_and_never_opened(fifo):
    for load in (load_ct, load_label):
        with pytest.raises(Viz3dError, match=r"is a FIFO \(named pipe\), not a regular file; expected a NIfTI file"):
            load(fifo)
    before = threading.active_count()
    inflate_soon(fifo)  # the background decompression a command starts first
    assert threading.active_count() == before


def test_the_command_line_refuses_a_fifo_ct_at_once(fifo):
    for command in (["info"], ["export", "--out", str(fifo.parent / "out"), "--no-cache"]):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "viz3d", command[0], str(fifo), *command[1:]],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "FIFO" in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert time.monotonic() - started < 30


# ------------------------------------------------------------------ the real sample


def test_real_sample_matches_nibabel(sample_dir):
    ct_path, label_path = sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz"
    ct_img, label_img = nib.load(str(ct_path)), nib.load(str(label_path))
    ct, label = load_ct(ct_path), load_label(label_path)

    assert ct.shape == ct_img.shape == (122, 101, 30)
    assert label.shape == label_img.shape
    np.testing.assert_allclose(ct.affine, ct_img.affine)
    np.testing.assert_allclose(label.affine, label_img.affine)
    np.testing.assert_array_equal(ct.array, np.asanyarray(ct_img.dataobj))
    np.testing.assert_array_equal(label.array, np.asanyarray(label_img.dataobj))
    assert label.array.dtype.kind == "u"
    assert ct.voxel_sizes == pytest.approx(tuple(float(z) for z in ct_img.header.get_zooms()))
    assert ct.axcodes == tuple(nib.aff2axcodes(ct_img.affine)) == ("R", "A", "S")
    assert ct.same_grid(label)
    assert ct.source == str(ct_path)


# ------------------------------------------------------------------ .nii.gz read by ISA-L
@pytest.mark.parametrize("variant", ["plain", "scaled", "big-endian", "nifti2", "extension"])
def test_gzipped_nifti_reads_exactly_as_nibabel(tmp_path, variant, monkeypatch):
    """The fast .nii.gz path gives nibabel's values and affine, writable; odd files take nibabel's path."""
    import viz3d.io.volume as volume_module

    rng = np.random.default_rng(3)
    data = rng.integers(-1000, 2000, size=(23, 17, 11)).astype(np.int16)
    affine = np.array([[-0.8, 0.1, 0, 30], [0, 0.9, 0.2, -10], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    kind = nib.Nifti2Image if variant == "nifti2" else nib.Nifti1Image
    if variant == "big-endian":  # a header (and data) written big-endian, as some scanners' tools do
        img = kind(data, affine, header=nib.Nifti1Header(endianness=">"))
    else:
        img = kind(data, affine)
    if variant == "scaled":
        img.header.set_slope_inter(0.5, -3.0)
    if variant == "extension":
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"x" * 5000))
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    reference = nib.load(path)
    fast = volume_module._decompressed_nifti(path)
    assert (fast is None) == (variant in ("scaled", "big-endian"))  # those go through nibabel.load
    ct = load_ct(path)
    expected = np.asanyarray(reference.dataobj)
    np.testing.assert_array_equal(ct.array, expected)
    np.testing.assert_allclose(ct.affine, reference.affine)
    if fast is not None:
        assert ct.array.flags.writeable and ct.array.dtype == np.int16
        monkeypatch.setattr(nib, "load", lambda *a, **k: pytest.fail("the fast path should not call nibabel.load"))
        np.testing.assert_array_equal(load_ct(path).array, expected)


def test_inflated_in_the_background_loads_the_same_and_holds_nothing_after(tmp_path):
    import os

    import viz3d.io.volume as volume

    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    first = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(first, affine), str(path))
    volume.inflate_soon(path)
    volume.inflate_soon(path)  # once per file
    assert len(volume._inflating) == 1
    np.testing.assert_array_equal(load_ct(path).array, first)
    assert not volume._inflating
    # the file changes after the early start: the load reads the new file, the old bytes are dropped
    volume.inflate_soon(path)
    nib.save(nib.Nifti1Image(first + 7, affine), str(path))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    np.testing.assert_array_equal(load_ct(path).array, first + 7)
    assert not volume._inflating
    # only NIfTI gzip files start early
    other = tmp_path / "notes.txt.gz"
    other.write_bytes(gzip.compress(b"text"))
    volume.inflate_soon(other)
    volume.inflate_soon(tmp_path / "missing.nii.gz")
    assert not volume._inflating


@pytest.mark.parametrize("cut", [0, 1, 5000])
def test_inflated_chunk_by_chunk_equals_nibabel(tmp_path, monkeypatch, cut):
    """The stream goes into the array in chunks (here 4099 bytes, so many and a ragged last one)
    from reads of the file in pieces (1000 bytes); a truncated file (``cut`` bytes short) gives
    None and nibabel's path reports it."""
    import viz3d.io.volume as volume

    monkeypatch.setattr(volume, "_INFLATE_CHUNK", 4099)
    monkeypatch.setattr(volume, "_INFLATE_READ", 1000)
    data = np.random.default_rng(3).integers(-1024, 3000, (37, 41, 29)).astype(np.int16)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 1.5, 1.0])), str(path))
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])
        assert volume._inflate(path) is None
        if cut > 8:  # voxel data missing, not only the trailer
            with pytest.raises(Viz3dError, match="ct.nii.gz"):
                load_ct(path)
        return
    buffer = volume._inflate(path)
    assert buffer is not None and buffer.flags.writeable
    assert buffer.tobytes() == gzip.decompress(path.read_bytes())
    np.testing.assert_array_equal(load_ct(path).array, data)
