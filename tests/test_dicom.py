"""DICOM series input: the real JPEG 2000 sample against dcm2niix, and synthetic clinical folders.

Synthetic series are written with pydicom (32x32 slices, explicit VR little endian) from a
known field in LPS millimetres, so every loaded voxel can be checked against the truth at
its world position.
"""
import os
import re
import shutil
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from viz3d.errors import Viz3dWarning
from viz3d.io.dicom import SeriesInfo, is_dicom_path, list_series, load_dicom
from viz3d.errors import Viz3dError
from viz3d.surfaces.meshing import bone_mesh
from viz3d.surfaces.quality import to_trimesh
from viz3d.io.formats import load_label
from viz3d.io.volume import Volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
VERTEBRAE = range(26, 51)  # TotalSegmentator: vertebrae S1 ... C1
MPEG2 = "1.2.840.10008.1.2.4.100"
JPEG_XL = "1.2.840.10008.1.2.4.110"  # same length as MPEG2's UID: patched into the file


# ---------------------------------------------------------------------------------------------
# helpers


def dcm2niix_binary():
    found = shutil.which("dcm2niix") or shutil.which("dcm2niix", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("dcm2niix not installed (pip install dcm2niix)")
    return found


def dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([dcm2niix_binary(), "-z", "y", "-f", "conv", "-o", str(out), str(folder)],
                   check=True, capture_output=True, timeout=120)
    return nib.load(str(out / "conv.nii.gz"))


def canonical(array, affine):
    """Array and affine reoriented to the closest RAS axes (nibabel), for world-space comparison."""
    ornt = io_orientation(affine)
    return apply_orientation(array, ornt), affine @ inv_ornt_aff(ornt, array.shape)


def ds(value):
    return DSfloat(float(value), auto_format=True)


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def write_slice(path, *, position, orientation, hu, pixel_spacing=(1.0, 1.0), slope=1.0, intercept=-1024.0,
                series_uid="", study_uid="1.2.3.4", series_number=1, description="axial", instance=1,
                signed=False, thickness=None, transfer_syntax=ExplicitVRLittleEndian, pixel_data=None,
                stored=None, with_geometry=True):
    """One CT slice: ``hu`` (rows, columns) in HU, stored as (hu - intercept) / slope."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    d = Dataset()
    d.file_meta = meta
    d.SOPClassUID = CTImageStorage
    d.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    d.PatientID = "P001"
    d.StudyDate = "20240102"
    d.Modality = "CT"
    d.StudyInstanceUID = study_uid
    d.SeriesInstanceUID = series_uid
    d.SeriesNumber = series_number
    d.SeriesDescription = description
    d.InstanceNumber = instance
    d.FrameOfReferenceUID = "1.2.3.4.5"
    if with_geometry:
        d.ImagePositionPatient = [ds(v) for v in position]
        d.ImageOrientationPatient = [ds(v) for v in orientation]
    d.PixelSpacing = [ds(v) for v in pixel_spacing]
    if thickness is not None:
        d.SliceThickness = ds(thickness)
    rows, columns = hu.shape
    d.Rows, d.Columns = rows, columns
    d.SamplesPerPixel = 1
    d.PhotometricInterpretation = "MONOCHROME2"
    d.BitsAllocated, d.BitsStored, d.HighBit = 16, 16, 15
    d.PixelRepresentation = 1 if signed else 0
    d.RescaleSlope = ds(slope)
    d.RescaleIntercept = ds(intercept)
    if pixel_data is not None:
        d.PixelData = pixel_data
        d["PixelData"].VR = "OB"
    else:
        if stored is None:
            stored = np.rint((hu - intercept) / slope)
        stored = stored.astype(np.int16 if signed else np.uint16)
        d.PixelData = stored.tobytes()
    d.save_as(path, enforce_file_format=True)
    return path


def write_series(folder, depths_or_positions, field, *, orientation=AXIAL, shape=(32, 32), pixel_spacing=(1.0, 1.0),
                 origin=(-16.0, -16.0, 0.0), seed=0, prefix="IMG", **kwargs):
    """A series from a field of LPS world points; shuffled file names and contradicting InstanceNumbers.

    ``depths_or_positions`` is a list of depths along the slice normal from ``origin``, or of
    full ImagePositionPatient triples. Returns the slice positions in the order written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    positions = [np.asarray(p, float) if np.ndim(p) else np.asarray(origin, float) + p * normal
                 for p in depths_or_positions]
    rng = np.random.default_rng(seed)
    names = rng.permutation(len(positions)) + 1000
    instances = np.arange(len(positions))[::-1] + 1  # contradicts the order along the normal
    j, i = np.indices(shape)  # row index, column index
    for k, position in enumerate(positions):
        world = (position[:, None, None] + row[:, None, None] * i * pixel_spacing[1]
                 + col[:, None, None] * j * pixel_spacing[0])
        write_slice(folder / f"{prefix}{names[k]}", position=position, orientation=orientation, hu=field(world),
                    pixel_spacing=pixel_spacing, instance=int(instances[k]), **kwargs)
    return positions


def ramp(world):
    """A linear field in LPS mm (linear interpolation reproduces it exactly)."""
    x, y, z = world
    return 0.5 * x + 1.0 * y + 2.0 * z


def voxel_lps(volume: Volume) -> np.ndarray:
    """LPS world coordinates (3, i, j, k) of every voxel of ``volume``."""
    ijk = np.indices(volume.shape).reshape(3, -1).astype(float)
    ras = volume.affine[:3, :3] @ ijk + volume.affine[:3, 3:4]
    return (np.array([-1.0, -1.0, 1.0])[:, None] * ras).reshape((3,) + volume.shape)


def loaded(path, **kwargs):
    """load_dicom with its Viz3dWarnings collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = load_dicom(path, **kwargs)
    return volume, [str(w.message) for w in caught if issubclass(w.category, Viz3dWarning)]


# ---------------------------------------------------------------------------------------------
# the real sample: JPEG 2000 lossless, empty SeriesInstanceUID, 3 mm thickness at 2 mm spacing


@pytest.fixture(scope="module")
def real(sample_dir):
    volume, messages = loaded(sample_dir / "ct_dicom")
    return volume, messages


@pytest.fixture(scope="module")
def real_dcm2niix(sample_dir, tmp_path_factory):
    return dcm2niix(sample_dir / "ct_dicom", tmp_path_factory.mktemp("dcm2niix"))


def test_real_jpeg2000_series_loads_with_meta(real):
    volume, messages = real
    assert messages == []
    assert volume.shape == (512, 512, 20)
    assert volume.array.dtype == np.int16
    assert volume.voxel_sizes == pytest.approx((0.9765625, 0.9765625, 2.0))
    meta = volume.meta
    assert meta["slice_spacing"] == pytest.approx(2.0)
    assert meta["slice_thickness"] == pytest.approx(3.0)
    assert "JPEG 2000" in meta["transfer_syntax"]
    assert meta["PatientID"] == "" and meta["SeriesInstanceUID"] == ""
    assert meta["Modality"] == "CT" and meta["StudyDate"] == "20221208"
    assert meta["SeriesDescription"] == "CT Body 3.0" and meta["n_slices"] == 20
    assert [s["n_slices"] for s in meta["series_list"]] == [20]
    assert -1100 <= volume.array.min() and volume.array.max() > 1000  # air and bone in HU


def test_real_series_equals_dcm2niix_in_world_space(real, real_dcm2niix):
    volume, _ = real
    ours, our_affine = canonical(volume.array, volume.affine)
    theirs, their_affine = canonical(np.asanyarray(real_dcm2niix.dataobj), real_dcm2niix.affine)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(our_affine, their_affine, atol=1e-3)
    assert np.array_equal(ours, theirs)


def test_real_label_shares_the_grid_and_vertebrae_sit_on_bone(real, sample_dir):
    volume, _ = real
    label = load_label(sample_dir / "label_for_ct_dicom.nii.gz")
    hu, hu_affine = canonical(volume.array, volume.affine)
    labels, label_affine = canonical(label.array, label.affine)
    assert hu.shape == labels.shape
    np.testing.assert_allclose(hu_affine, label_affine, atol=1e-3)
    present = [v for v in VERTEBRAE if np.any(labels == v)]
    assert present, "the sample label map should contain vertebrae"
    vertebra = np.isin(labels, present)
    bone_fraction = np.mean(hu[vertebra] > 150)
    assert bone_fraction > 0.5, f"vertebrae {present}: only {bone_fraction:.2f} of their voxels above 150 HU"


def test_one_file_of_the_real_series_loads_the_series(real, sample_dir):
    first = sorted((sample_dir / "ct_dicom").iterdir())[0]
    assert is_dicom_path(first) and is_dicom_path(sample_dir / "ct_dicom")
    assert not is_dicom_path(sample_dir / "ct.nii.gz")
    volume = load_dicom(first)
    assert volume.same_grid(real[0]) and np.array_equal(volume.array, real[0].array)


# ---------------------------------------------------------------------------------------------
# geometry against known truth


SPHERE_LPS = np.array([30.0, -40.0, 100.0])
OBLIQUE = rotation([1, 2, 3], 25)


def sphere(world):
    return np.where(np.linalg.norm(world - SPHERE_LPS[:, None, None], axis=0) <= 9.0, 1000.0, 0.0)


@pytest.fixture(scope="module")
def sphere_folder(tmp_path_factory):
    """An oblique series (0.9 x 1.1 mm pixels, 1.5 mm slices) holding a bright sphere."""
    folder = tmp_path_factory.mktemp("sphere")
    row, col = OBLIQUE[:, 0], OBLIQUE[:, 1]
    normal = np.cross(row, col)
    spacing = (1.1, 0.9)  # between rows, between columns
    origin = SPHERE_LPS - 15.5 * 0.9 * row - 15.5 * 1.1 * col - 11.5 * 1.5 * normal
    positions = [origin + k * 1.5 * normal for k in range(24)]
    write_series(folder, positions, sphere, orientation=tuple(row) + tuple(col), pixel_spacing=spacing,
                 series_uid="1.2.826.0.1.99.1", thickness=1.5)
    return folder


def test_sphere_world_centre_is_lps_centre_mirrored(sphere_folder):
    volume, messages = loaded(sphere_folder)
    assert messages == []
    assert volume.shape == (32, 32, 24)
    assert volume.voxel_sizes == pytest.approx((0.9, 1.1, 1.5))
    bright = np.argwhere(volume.array > 500).T.astype(float)
    centroid = volume.affine[:3, :3] @ bright.mean(axis=1) + volume.affine[:3, 3]
    expected_ras = SPHERE_LPS * [-1, -1, 1]
    assert np.linalg.norm(centroid - expected_ras) < 1.0
    mesh = bone_mesh(volume, hu=200)
    assert mesh is not None
    assert np.linalg.norm(to_trimesh(mesh).center_mass - expected_ras) < 1.0


def test_oblique_series_matches_dcm2niix(sphere_folder, tmp_path):
    volume, _ = loaded(sphere_folder)
    image = dcm2niix(sphere_folder, tmp_path / "out")
    ours, our_affine = canonical(volume.array, volume.affine)
    theirs, their_affine = canonical(np.asanyarray(image.dataobj), image.affine)
    np.testing.assert_allclose(our_affine, their_affine, atol=1e-3)
    assert np.array_equal(ours, theirs)


def assert_matches_ramp(volume, region=(slice(None),) * 3, atol=0.011):
    expected = ramp(voxel_lps(volume))
    np.testing.assert_allclose(volume.array[region], expected[region], atol=atol)


def test_shuffled_names_and_instance_numbers_do_not_change_the_order(tmp_path):
    write_series(tmp_path, [2.0 * k for k in range(10)], ramp, slope=0.01, intercept=0.0, signed=True)
    volume, messages = loaded(tmp_path)
    assert messages == []
    assert volume.shape == (32, 32, 10) and volume.voxel_sizes == pytest.approx((1, 1, 2))
    assert volume.axcodes == ("L", "P", "S")
    assert_matches_ramp(volume)


def test_missing_slice_warns_and_interpolates_onto_the_regular_grid(tmp_path):
    depths = [2.0 * k for k in range(12) if k != 5]
    write_series(tmp_path, depths, ramp, slope=0.01, intercept=0.0, signed=True)
    volume, messages = loaded(tmp_path)
    assert any("missing slices" in m for m in messages), messages
    assert volume.shape == (32, 32, 12) and volume.voxel_sizes == pytest.approx((1, 1, 2))
    assert volume.array.dtype == np.float32
    assert_matches_ramp(volume)
    assert volume.meta["n_slices"] == 11 and volume.meta["resampled"]


def test_non_uniform_spacing_is_resampled_at_the_median_spacing(tmp_path):
    write_series(tmp_path, [0, 2, 4, 5, 6, 8, 10, 12, 14], ramp, slope=0.01, intercept=0.0, signed=True)
    volume, messages = loaded(tmp_path)
    assert any("non-uniform slice spacing" in m for m in messages), messages
    assert volume.shape == (32, 32, 8) and volume.meta["slice_spacing"] == pytest.approx(2.0)
    assert_matches_ramp(volume)


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path):
    tilt = np.radians(15)
    orientation = (1.0, 0.0, 0.0, 0.0, np.cos(tilt), np.sin(tilt))
    positions = [np.array([-16.0, -16.0, 2.0 * k]) for k in range(16)]  # table moves along z
    write_series(tmp_path, positions, ramp, orientation=orientation, slope=0.01, intercept=0.0, signed=True)
    volume, messages = loaded(tmp_path)
    assert any("gantry tilt of 15.00 degrees" in m for m in messages), messages
    linear = volume.affine[:3, :3]
    gram = linear.T @ linear
    assert np.allclose(gram, np.diag(np.diag(gram)), atol=1e-9), "resampled grid must be orthogonal"
    assert volume.voxel_sizes == pytest.approx((1.0, 1.0, 2.0 * np.cos(tilt)))
    assert volume.meta["tilt_deg"] == pytest.approx(15.0, abs=0.01)
    # rows away from the edges that the shift moves out of the field of view hold the exact ramp
    assert_matches_ramp(volume, (slice(None), slice(6, 26), slice(None)))


def test_scattered_slice_origins_are_refused(tmp_path):
    positions = [np.array([-16.0 + (3.0 if k == 4 else 0.0), -16.0, 2.0 * k]) for k in range(8)]
    write_series(tmp_path, positions, ramp, slope=0.01, intercept=0.0, signed=True)
    with pytest.raises(Viz3dError, match="do not lie on one line"):
        load_dicom(tmp_path)


# ---------------------------------------------------------------------------------------------
# several series, junk, selection


@pytest.fixture
def clinical_folder(tmp_path):
    """An axial stack, a coronal scout beside it, and junk in the same (nested) folder."""
    write_series(tmp_path / "study" / "a", [2.0 * k for k in range(12)], lambda w: 0 * w[0] + 40.0,
                 series_uid="1.2.826.0.1.7.2", series_number=2, description="axial body")
    write_series(tmp_path / "study" / "a", [-10.0, 0.0, 10.0], lambda w: 0 * w[0] + 100.0, orientation=CORONAL,
                 origin=(-16.0, 0.0, 30.0), series_uid="1.2.826.0.1.7.1", series_number=1, description="scout",
                 prefix="SCOUT")
    junk = tmp_path / "study"
    (junk / "README.txt").write_text("not an image\n")
    (junk / "empty").write_bytes(b"")
    (junk / "notes.dcm").write_text("hello")
    (junk / "random.bin").write_bytes(np.random.default_rng(1).bytes(3000))
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.FileSetID = "TEST"
    dicomdir.save_as(junk / "DICOMDIR", enforce_file_format=True)
    write_slice(junk / "secondary_capture", position=(0, 0, 0), orientation=AXIAL, hu=np.zeros((8, 8)),
                with_geometry=False, series_uid="1.2.826.0.1.7.9")
    return tmp_path


def test_main_series_picked_with_a_warning_and_junk_ignored(clinical_folder):
    infos = list_series(clinical_folder)
    assert [(i.index, i.n_slices, i.description) for i in infos] == [(0, 12, "axial body"), (1, 3, "scout")]
    assert isinstance(infos[0], SeriesInfo) and len(infos[0].files) == 12
    volume, messages = loaded(clinical_folder)
    assert volume.shape == (32, 32, 12) and np.all(volume.array == 40)
    assert len(messages) == 1 and "loaded #0" in messages[0] and "scout" in messages[0] and "skipped" in messages[0]
    assert [s["description"] for s in volume.meta["series_list"]] == ["axial body", "scout"]


@pytest.mark.parametrize("choice", [1, "1", "index:1", "number:1", "1.2.826.0.1.7.1", "uid:1.2.826.0.1.7.1"])
def test_series_argument_picks_the_scout(clinical_folder, choice):
    volume, messages = loaded(clinical_folder, series=choice)
    assert messages == []
    assert volume.shape == (32, 32, 3) and np.all(volume.array == 100)
    assert volume.meta["SeriesDescription"] == "scout"
    # rows run down (column cosine -z); slices along row x column = +y in LPS, i.e. posterior
    assert volume.axcodes == ("L", "I", "P")


def test_a_file_of_the_scout_picks_the_scout(clinical_folder):
    scout_file = next((clinical_folder / "study" / "a").glob("SCOUT*"))
    volume, messages = loaded(scout_file)
    assert messages == [] and volume.meta["SeriesDescription"] == "scout"


def test_a_dicomdir_stands_for_its_folder(clinical_folder):
    dicomdir = clinical_folder / "study" / "DICOMDIR"
    assert is_dicom_path(dicomdir)
    volume, messages = loaded(dicomdir)
    assert volume.meta["SeriesDescription"] == "axial body" and len(messages) == 1


@pytest.mark.parametrize("choice", [5, "number:7", "nope", "index:x"])
def test_unknown_series_lists_what_exists(clinical_folder, choice):
    with pytest.raises(Viz3dError) as info:
        load_dicom(clinical_folder, series=choice)
    message = str(info.value)
    assert "\n" not in message and "axial body" in message and "scout" in message


def test_anonymised_series_are_split_by_geometry(tmp_path):
    write_series(tmp_path, [2.0 * k for k in range(6)], lambda w: 0 * w[0] + 10.0)
    write_series(tmp_path, [0.0, 5.0], lambda w: 0 * w[0], orientation=CORONAL, prefix="C")
    infos = list_series(tmp_path)
    assert [(i.uid, i.n_slices) for i in infos] == [("", 6), ("", 2)]


def test_folders_without_dicom_images_are_refused(tmp_path):
    with pytest.raises(Viz3dError, match="no DICOM image series"):
        load_dicom(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    write_slice(tmp_path / "nogeom.dcm", position=(0, 0, 0), orientation=AXIAL, hu=np.zeros((4, 4)), with_geometry=False)
    with pytest.raises(Viz3dError, match=r"no DICOM image series.*1 not DICOM, 1 without image position"):
        load_dicom(tmp_path)
    with pytest.raises(Viz3dError, match="no such file"):
        load_dicom(tmp_path / "missing")
    with pytest.raises(Viz3dError, match="not a DICOM file"):
        load_dicom(tmp_path / "a.txt")


# ---------------------------------------------------------------------------------------------
# values


def test_slope_1_intercept_minus_1024_gives_exact_int16(tmp_path):
    write_series(tmp_path, [2.0 * k for k in range(5)], lambda w: np.rint(w[0] * 20) + 50 * w[2], intercept=-1024)
    volume, _ = loaded(tmp_path)
    assert volume.array.dtype == np.int16
    lps = voxel_lps(volume)
    assert np.array_equal(volume.array, np.rint(lps[0] * 20) + 50 * lps[2])


def test_fractional_slope_gives_float32(tmp_path):
    write_series(tmp_path, [2.0 * k for k in range(4)], lambda w: w[0] * 2 + 0.5, slope=0.5, intercept=-1024)
    volume, _ = loaded(tmp_path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, voxel_lps(volume)[0] * 2 + 0.5)


def test_per_slice_intercepts_are_applied_per_slice(tmp_path):
    folder = tmp_path
    j, i = np.indices((32, 32))
    for k in range(6):
        hu = (i + 3 * j + 100 * k).astype(float)
        write_slice(folder / f"s{5 - k}", position=(0, 0, 2.0 * k), orientation=AXIAL, hu=hu, intercept=-1000.0 - 37 * k,
                    instance=k + 1)
    volume, _ = loaded(folder)
    assert volume.array.dtype == np.int16
    expected = np.stack([(i + 3 * j + 100 * k).T for k in range(6)], axis=2)
    # RAS affine: i runs to -x (left), j to -y (posterior), k superior; array is (column, row, slice)
    assert np.array_equal(volume.array, expected)


def test_values_beyond_int16_become_float32_exactly(tmp_path):
    stored = np.full((8, 8), 40000, dtype=np.uint16)
    for k in range(3):
        write_slice(tmp_path / f"s{k}", position=(0, 0, k), orientation=AXIAL, hu=np.zeros((8, 8)), intercept=10,
                    stored=stored + k)
    volume, _ = loaded(tmp_path)
    assert volume.array.dtype == np.float32
    assert np.array_equal(volume.array[0, 0], [40010, 40011, 40012])


# ---------------------------------------------------------------------------------------------
# duplicates and transfer syntaxes


def test_identical_duplicate_slice_is_dropped_with_a_warning(tmp_path):
    write_series(tmp_path, [2.0 * k for k in range(6)], ramp, slope=0.01, intercept=0.0, signed=True)
    some = sorted(tmp_path.iterdir())[2]
    shutil.copy(some, tmp_path / "copy_of_a_slice")
    volume, messages = loaded(tmp_path)
    assert volume.shape == (32, 32, 6)
    assert any("1 duplicate slice" in m for m in messages), messages
    assert_matches_ramp(volume)


def test_different_images_at_one_position_are_refused(tmp_path):
    write_series(tmp_path, [2.0 * k for k in range(6)], ramp, slope=0.01, intercept=0.0, signed=True)
    write_slice(tmp_path / "second_echo", position=(-16.0, -16.0, 4.0), orientation=AXIAL, hu=np.zeros((32, 32)),
                slope=0.01, intercept=0.0, signed=True)
    with pytest.raises(Viz3dError, match="same position") as info:
        load_dicom(tmp_path)
    assert "second_echo" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("uid, name", [(JPEG_XL, JPEG_XL), (MPEG2, "MPEG2")])
def test_unsupported_transfer_syntax_is_named(tmp_path, uid, name):
    for k in range(3):
        path = write_slice(tmp_path / f"s{k}", position=(0, 0, k), orientation=AXIAL, hu=np.zeros((32, 32)),
                           transfer_syntax=MPEG2, pixel_data=encapsulate([b"\xff\x0a" + bytes(64)]))
        if uid != MPEG2:
            path.write_bytes(path.read_bytes().replace(MPEG2.encode(), uid.encode()))
    with pytest.raises(Viz3dError, match="unsupported transfer syntax") as info:
        load_dicom(tmp_path)
    message = str(info.value)
    assert name in message and uid in message and str(tmp_path / "s0") in message


def test_header_pass_then_one_preallocated_array(tmp_path):
    """Peak memory stays near one copy of the volume (no per-slice list then np.stack)."""
    j, i = np.indices((128, 128))
    for k in range(40):
        write_slice(tmp_path / f"s{k:03d}", position=(0, 0, 1.5 * k), orientation=AXIAL,
                    hu=(i + j + k).astype(float), intercept=-1024)
    tracemalloc.start()
    try:
        volume = load_dicom(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.array.dtype == np.int16
    assert peak < 1.5 * volume.array.nbytes + 1_000_000, f"peak {peak} bytes for a {volume.array.nbytes}-byte volume"


def test_a_single_slice_takes_its_thickness_with_a_warning(tmp_path):
    write_slice(tmp_path / "only", position=(0, 0, 5), orientation=AXIAL, hu=np.zeros((8, 8)), thickness=2.5)
    volume, messages = loaded(tmp_path)
    assert volume.shape == (8, 8, 1) and volume.voxel_sizes == pytest.approx((1, 1, 2.5))
    assert any("single slice" in m for m in messages)


# ---------------------------------------------------------------------------------------------
# through the command line and the meshing


def run_viz3d(capsys, *args):
    from viz3d.cli.main import main

    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_info_on_a_dicom_folder_shows_identity_and_series(clinical_folder, capsys):
    status, out, err = run_viz3d(capsys, "info", clinical_folder)
    assert status == 0, err
    names = "PatientID|Modality|SeriesInstanceUID|SeriesDescription|n_slices|transfer_syntax"
    fields = dict(re.findall(rf"^\s+({names})\s*: (.*)$", out, re.M))
    assert fields["SeriesInstanceUID"] == "1.2.826.0.1.7.2"
    assert fields["SeriesDescription"] == "axial body" and fields["n_slices"] == "12"
    assert fields["Modality"] == "CT" and "Little Endian" in fields["transfer_syntax"]
    assert re.search(r"^\s+\*\[0\]\s+12 slices.*axial body", out, re.M)
    assert re.search(r"^\s+ \[1\]\s+3 slices.*scout", out, re.M)
    assert err.count("viz3d: warning:") == 1 and "scout" in err
    status, out, err = run_viz3d(capsys, "info", clinical_folder, "--series", "1")
    assert status == 0 and re.search(r"n_slices\s*: 3$", out, re.M)


def test_info_shows_empty_identity_of_the_anonymised_real_series(sample_dir, capsys):
    status, out, err = run_viz3d(capsys, "info", sample_dir / "ct_dicom")
    assert status == 0, err
    assert re.search(r"PatientID\s*: \(empty\)$", out, re.M)
    assert re.search(r"SeriesInstanceUID\s*: \(empty\)$", out, re.M)
    assert "JPEG 2000" in out


@pytest.mark.parametrize("series", ["7", "number:9", "abc"])
def test_bad_dicom_input_is_one_error_line(clinical_folder, tmp_path, capsys, series):
    status, out, err = run_viz3d(capsys, "info", clinical_folder, "--series", series)
    assert status == 2 and err.startswith("viz3d: error:") and err.count("\n") == 1 and "Traceback" not in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.dcm").write_text("not dicom")
    status, out, err = run_viz3d(capsys, "export", junk, "--out", tmp_path / "out")
    assert status == 2 and err.startswith("viz3d: error:") and err.count("\n") == 1 and str(junk) in err
    assert not (tmp_path / "out").exists()


def test_label_meshes_of_the_real_series_sit_on_its_bone(real, sample_dir):
    """Vertebra surfaces from the dcm2niix-grid label map lie on the bone surface of the DICOM CT."""
    from scipy.spatial import cKDTree

    from viz3d.io.labels import builtin_table
    from viz3d.surfaces.meshing import bone_mesh, label_meshes
    from viz3d.io.formats import load_label

    label = load_label(sample_dir / "label_for_ct_dicom.nii.gz")
    vertebrae = label_meshes(label, builtin_table("totalsegmentator"), labels=list(range(26, 51)))
    assert len(vertebrae) >= 2
    bone = cKDTree(bone_mesh(real[0], hu=200).vertices)
    for mesh in vertebrae:
        distance, _ = bone.query(mesh.vertices)
        # the label's outer surface is the cortical bone surface, to within a voxel or two
        assert np.median(distance) < 2.0, mesh.name
        # while the same surface with y negated (an LPS/RAS confusion) is far off the bone
        off, _ = bone.query(mesh.vertices * [1, -1, 1])
        assert np.median(off) > 20.0, mesh.name


# ---------------------------------------------------------------------------------------------
# compressed series decoded on a pool of processes


@pytest.fixture
def pooled(monkeypatch, tmp_path, speedups):
    """Any compressed series of 2+ slices goes to the pool (the command line's speed-ups on); each
    decode notes its process id."""
    import os

    import viz3d.io.dicom as dicom

    monkeypatch.setattr(dicom, "POOL_MIN_SLICES", 2)
    log = tmp_path / "decoded-by"
    real_read = dicom._read_pixels

    def noting(header):  # forked workers inherit this patched module
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {header.path.name}\n")
        return real_read(header)

    monkeypatch.setattr(dicom, "_read_pixels", noting)
    return log


def decoded_by(log):
    return [line.split() for line in log.read_text().splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_a_pooled_jpeg2000_series_equals_the_serial_one(real, sample_dir, pooled, monkeypatch):
    import os

    import viz3d.io.dicom as dicom

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})  # 3 workers even on one core
    counted = []
    volume, messages = loaded(sample_dir / "ct_dicom", progress=lambda done, total: counted.append((done, total)))
    assert counted == [(k, 20) for k in range(1, 21)]
    serial, _ = real
    assert messages == [] and volume.array.dtype == serial.array.dtype
    assert np.array_equal(volume.array, serial.array) and np.allclose(volume.affine, serial.affine)
    pids = {pid for pid, _ in decoded_by(pooled)}
    assert str(os.getpid()) in pids and len(pids) >= 3, pids  # the first slice here, the rest in workers
    assert sorted(name for _, name in decoded_by(pooled)) == sorted(p.name for p in (sample_dir / "ct_dicom").iterdir())
    assert dicom._decode_workers([]) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_an_undecodable_slice_is_the_same_error_with_or_without_the_pool(sample_dir, tmp_path, pooled, monkeypatch):
    import multiprocessing
    import os

    import viz3d.io.dicom as dicom

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # a pool even on one core

    folder = tmp_path / "series"
    shutil.copytree(sample_dir / "ct_dicom", folder)
    victim = sorted(folder.iterdir())[11]
    corrupt_pixel_data(victim)
    with pytest.raises(Viz3dError) as pooled_error:
        load_dicom(folder)
    deadline = time.monotonic() + 5
    while multiprocessing.active_children() and time.monotonic() < deadline:  # reaped by the pool's thread
        time.sleep(0.05)
    assert multiprocessing.active_children() == []  # none left blocked on a result nobody reads
    monkeypatch.setattr(dicom, "POOL_MIN_SLICES", 10**6)
    with pytest.raises(Viz3dError) as serial_error:
        load_dicom(folder)
    assert str(pooled_error.value) == str(serial_error.value)
    assert len({pid for pid, _ in decoded_by(pooled)}) >= 2  # the first error came from a worker
    assert str(serial_error.value).startswith(f"{victim}: cannot decode pixel data (JPEG 2000")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_a_pool_that_breaks_or_cannot_start_leaves_the_work_to_this_process(real, sample_dir, pooled, monkeypatch):
    import concurrent.futures
    import os

    import viz3d.io.dicom as dicom

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    parent, noting = os.getpid(), dicom._read_pixels

    def dies_in_a_worker(header):
        if os.getpid() != parent and header.path.name == sorted(p.name for p in header.path.parent.iterdir())[5]:
            os._exit(1)  # killed, out of memory: the pool breaks
        return noting(header)

    monkeypatch.setattr(dicom, "_read_pixels", dies_in_a_worker)
    broken, _ = loaded(sample_dir / "ct_dicom")
    assert np.array_equal(broken.array, real[0].array)

    def cannot_start(*args, **kwargs):
        raise OSError("no more processes")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", cannot_start)
    pooled.unlink()
    refused, _ = loaded(sample_dir / "ct_dicom")
    assert np.array_equal(refused.array, real[0].array)
    assert {pid for pid, _ in decoded_by(pooled)} == {str(parent)}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32])
@pytest.mark.parametrize("slope, intercept", [(1, -1024), (2, -2048), (-3, 100), (32767, 5), (40000, -3),
                                              (1, 2**30), (70000, 2**31)])
def test_integer_hu_is_exact_for_any_stored_type(dtype, slope, intercept):
    """HU = stored x slope + intercept in integers, checked against Python's unbounded integers."""
    from viz3d.io.dicom import _integer_hu

    info = np.iinfo(dtype)
    stored = np.random.default_rng(0).integers(info.min, info.max, size=(32, 32), endpoint=True).astype(dtype)
    stored[0, :2] = info.min, info.max
    expected = stored.astype(object) * slope + intercept
    assert (_integer_hu(stored, slope, intercept).astype(object) == expected).all()


def real_slices_repeated(sample_dir, folder, copies=2):
    """The real JPEG 2000 slices ``copies`` times along the stack (pixel data as is): 20 x copies slices."""
    folder.mkdir()
    slices = [pydicom.dcmread(p) for p in sorted((sample_dir / "ct_dicom").iterdir())]
    slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    step = float(slices[1].ImagePositionPatient[2]) - float(slices[0].ImagePositionPatient[2])
    for n in range(copies * len(slices)):
        ds = slices[n % len(slices)]
        x, y, z0 = (float(v) for v in slices[0].ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z0 + n * step]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"s{n:03d}.dcm")
    return sorted(folder.iterdir())


def corrupt_pixel_data(path):
    """Replace a slice's pixel data with a JPEG 2000 start and nothing after it: no decoder reads it."""
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds.save_as(path)


def processes_mentioning(text):
    """Process ids whose command line contains ``text`` (forked workers share their parent's)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_the_command_line_leaves_no_worker_behind(sample_dir, tmp_path):
    """An undecodable slice: one error line, exit 2, at once, and every worker gone (they may
    be blocked writing results nobody reads, which would also keep the caller's pipes open)."""
    files = real_slices_repeated(sample_dir, tmp_path / "pooled-series", copies=3)
    corrupt_pixel_data(files[33])
    command = [sys.executable, "-m", "viz3d", "info", str(files[0].parent)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)  # orphans holding stderr: a hang
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"viz3d: error: {files[33]}: cannot decode pixel data")
    assert processes_mentioning(str(files[0].parent)) == []  # stopped before the command ended
    good = real_slices_repeated(sample_dir, tmp_path / "good-series")[0].parent
    ok = subprocess.run(command[:-1] + [str(good)], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "40 slices" in ok.stdout, ok.stderr
    assert processes_mentioning(str(good)) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_workers_exit_when_their_process_is_killed(sample_dir, tmp_path):
    folder = real_slices_repeated(sample_dir, tmp_path / "killed-series", copies=20)[0].parent
    script = ("import os, signal, threading, time, sys\n"
              "import viz3d.io.dicom as dicom, viz3d.runtime\n"
              "viz3d.runtime.enable()\n"
              "threading.Thread(target=dicom.load_dicom, args=(sys.argv[1],), daemon=True).start()\n"
              "time.sleep(1.5)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", script, str(folder)], timeout=60)
    deadline = time.monotonic() + 5
    while processes_mentioning(str(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(folder)) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_a_stuck_worker_leaves_the_rest_to_this_process(real, sample_dir, pooled, monkeypatch):
    import os

    import viz3d.io.dicom as dicom

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(dicom, "SLICE_TIMEOUT_S", 1.0)
    parent, noting = os.getpid(), dicom._read_pixels
    stuck_on = sorted(p.name for p in (sample_dir / "ct_dicom").iterdir())[9]

    def stuck_in_a_worker(header):
        if os.getpid() != parent and header.path.name == stuck_on:
            time.sleep(3600)  # a lock that is never released
        return noting(header)

    monkeypatch.setattr(dicom, "_read_pixels", stuck_in_a_worker)
    start = time.monotonic()
    volume, _ = loaded(sample_dir / "ct_dicom")
    assert np.array_equal(volume.array, real[0].array) and time.monotonic() - start < 10
    assert [str(parent), stuck_on] in decoded_by(pooled)  # taken over here


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool forks: Linux only")
def test_a_program_that_catches_failed_loads_still_exits(sample_dir, tmp_path):
    """Failed pooled loads, each caught, then the end of the program: no thread left waiting on a worker."""
    files = real_slices_repeated(sample_dir, tmp_path / "series", copies=2)
    corrupt_pixel_data(files[21])
    script = ("import os, sys\n"
              "os.sched_getaffinity = lambda pid: {0, 1}\n"
              "import viz3d.io.dicom as dicom, viz3d.runtime\n"
              "from viz3d.errors import Viz3dError\n"
              "viz3d.runtime.enable()\n"
              "for _ in range(6):\n"
              "    try:\n"
              "        dicom.load_dicom(sys.argv[1])\n"
              "    except Viz3dError:\n"
              "        pass\n"
              "    else:\n"
              "        sys.exit('loaded a corrupt series')\n")
    run = subprocess.run([sys.executable, "-c", script, str(files[0].parent)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_command_lines_ctrl_c_stops_a_load_in_any_thread(sample_dir, monkeypatch):
    """The CLI's Ctrl-C handler sets runtime.STOP; a load (in the CLI, a thread beside the meshing) stops at its next slice."""
    import signal
    import threading

    import viz3d.runtime as runtime

    monkeypatch.setattr(runtime, "STOP", threading.Event())
    with pytest.raises(KeyboardInterrupt):
        runtime.enter_command_line()
        try:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)  # the handler the command line installed
        finally:
            runtime.leave_command_line()
    assert runtime.STOP.is_set()
    decoded = []
    with pytest.raises(KeyboardInterrupt):
        load_dicom(sample_dir / "ct_dicom", progress=lambda done, total: decoded.append(done))
    assert decoded == [1]


# ---------------------------------------------------------------------------------------------
# no wrong answer, no hang (issue #19): broken headers are refused in one line, special files never opened


def set_tags(path, **values):
    """Rewrite tags of a written slice with raw text (what a broken writer leaves: 'NaN', '1e300')."""
    from pydicom import config

    before = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = pydicom.dcmread(path)
            for keyword, value in values.items():
                if isinstance(keyword, str) and keyword.startswith("tag_"):
                    group, element = int(keyword[4:8], 16), int(keyword[8:], 16)
                    d.add_new((group, element), "US", value)
                else:
                    setattr(d, keyword, value)
            d.save_as(path)
    finally:
        config.settings.writing_validation_mode = before


def small_series(folder, depths=range(6), **tags):
    """A 32 x 32 CT series at 2 mm (``depths`` in steps), every slice then given ``tags``."""
    write_series(folder, [2.0 * k for k in depths], ramp, slope=1.0, intercept=-1024.0)
    files = sorted(Path(folder).iterdir())
    for path in files:
        if tags:
            set_tags(path, **tags)
    return files


@pytest.mark.parametrize("tag, value, gap", [
    ("RescaleSlope", "1e300", False), ("RescaleIntercept", "1e38", False), ("RescaleSlope", "1e38", False),
    ("RescaleSlope", "NaN", True), ("RescaleSlope", "NaN", False), ("RescaleIntercept", "-inf", False),
])
def test_rescale_values_that_are_not_finite_or_overflow_are_refused_in_one_line(tmp_path, capsys, tag, value, gap):
    files = small_series(tmp_path / "s", depths=[k for k in range(8) if not (gap and k == 4)])
    set_tags(files[2], **{tag: value})
    status, out, err = run_viz3d(capsys, "info", tmp_path / "s")
    assert status == 2 and err.count("\n") == 1 and "HU range" not in out, err
    assert err.startswith(f"viz3d: error: {files[2]}: {tag}") or err.startswith(f"viz3d: error: {files[2]}: RescaleSlope")
    assert "internal error" not in err


def test_a_named_dicom_file_that_is_not_an_image_slice_is_refused_not_replaced(clinical_folder, capsys):
    named = clinical_folder / "study" / "secondary_capture"  # DICOM with pixels but no position / orientation
    status, out, err = run_viz3d(capsys, "info", named)
    assert status == 2 and out == ""
    assert err == (f"viz3d: error: {named}: a DICOM file without image position/orientation/spacing, not a slice of an "
                   "image series: name one of the series' slices, or its folder\n")


def test_a_named_slice_loads_its_own_series_even_beside_a_bigger_one(clinical_folder):
    scout_file = sorted((clinical_folder / "study" / "a").glob("SCOUT*"))[1]
    volume, messages = loaded(scout_file)
    assert volume.meta["SeriesInstanceUID"] == pydicom.dcmread(scout_file).SeriesInstanceUID == "1.2.826.0.1.7.1"
    assert volume.shape[2] == 3 and messages == []


def test_a_series_of_another_modality_says_its_values_are_not_hounsfield_units(tmp_path):
    small_series(tmp_path, Modality="MR")
    volume, messages = loaded(tmp_path)
    assert volume.meta["Modality"] == "MR" and volume.meta["hounsfield"] is False
    assert len(messages) == 1 and "Modality is MR, not CT: its values are NOT Hounsfield units" in messages[0]
    ct, messages = loaded(small_series(tmp_path / "ct")[0])
    assert ct.meta["hounsfield"] is True and messages == []


@pytest.mark.parametrize("tags", [{"ImageType": ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]}, {"tag_0019100A": 36}],
                         ids=["ImageType", "NumberOfImagesInMosaic"])
def test_a_siemens_mosaic_is_refused_by_name(tmp_path, tags):
    small_series(tmp_path, **tags)
    with pytest.raises(Viz3dError, match="Siemens mosaic is not supported; convert the series with dcm2niix"):
        load_dicom(tmp_path)


def test_absurd_pixel_or_slice_spacing_is_refused_naming_the_sizes(tmp_path):
    small_series(tmp_path / "pixels", PixelSpacing=["1e-6", "1e-6"])
    with pytest.raises(Viz3dError, match=r"voxel size \(1e-06, 1e-06, 2\) mm is outside 0.001..1000 mm"):
        load_dicom(tmp_path / "pixels")
    write_series(tmp_path / "slices", [0.0, 5000.0, 10000.0], ramp)
    with pytest.raises(Viz3dError, match=r"voxel size \(1, 1, 5000\) mm is outside"):
        load_dicom(tmp_path / "slices")


def test_uneven_spacing_is_called_uneven_not_missing_slices(tmp_path):
    write_series(tmp_path, [0.0, 2.0, 4.0, 7.5, 9.5, 11.5, 13.5], ramp, slope=0.01, intercept=0.0, signed=True)
    volume, messages = loaded(tmp_path)
    assert len(messages) == 1 and "missing slices" not in messages[0]
    assert "uneven slice spacing (2 to 3.5 mm; steps of 3.5 mm after slice 2 are not whole multiples of the typical 2 mm" \
        in messages[0]
    assert_matches_ramp(volume)


def test_slices_too_sparse_to_be_one_volume_are_refused(tmp_path):
    write_series(tmp_path, [0.0, 1.0, 2.0, 2000.0], ramp)
    with pytest.raises(Viz3dError, match="a regular grid would need 2001 slices, most of them invented"):
        load_dicom(tmp_path)


def test_unreadable_and_special_entries_in_the_folder_are_skipped_and_named(tmp_path, capsys):
    small_series(tmp_path)
    try:
        os.stat("/proc/1/cwd")
        pytest.skip("/proc/1/cwd is readable here: no entry to be denied")
    except PermissionError:
        pass
    os.symlink("/proc/1/cwd", tmp_path / "denied")
    os.mkfifo(tmp_path / "pipe")  # opening it would wait for a writer for ever
    os.symlink("/proc/self/mem", tmp_path / "mem")
    status, out, err = run_viz3d(capsys, "info", tmp_path)
    assert status == 0 and re.search(r"n_slices\s*: 6$", out, re.M), err
    assert err == (f"viz3d: warning: {tmp_path}: 1 entry could not be read and was skipped: "
                   f"{tmp_path / 'denied'}: Permission denied\n")


@pytest.mark.parametrize("name", ["slice.dcm", "slice"])
def test_a_fifo_named_as_a_dicom_file_is_refused_at_once(tmp_path, name):
    small_series(tmp_path)
    fifo = tmp_path / name
    os.mkfifo(fifo)
    try:
        run = subprocess.run([sys.executable, "-m", "viz3d", "info", str(fifo)], capture_output=True, text=True,
                             timeout=30)
    finally:
        try:  # a reader stuck opening it (a regression) is let go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"viz3d: error: {fifo}: is a FIFO (named pipe), not a regular file; expected a ")


def test_a_device_as_ct_is_refused_by_name():
    from viz3d.api import load_ct

    with pytest.raises(Viz3dError, match=r"/dev/zero: is a character device, not a regular file"):
        load_ct("/dev/zero")


def test_pydicom_warnings_come_out_as_one_named_viz3d_warning_line(tmp_path, capsys):
    small_series(tmp_path, NumberOfFrames="0")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown even if an earlier test in this process had pydicom say it
        status, out, err = run_viz3d(capsys, "info", tmp_path)
    assert status == 0 and re.search(r"n_slices\s*: 6$", out, re.M)
    assert set(err.splitlines()) == {
        "viz3d: warning: pydicom: A value of '0' for (0028,0008) 'Number of Frames' is invalid, assuming 1 frame"}


def test_compressed_slices_with_a_corrupt_size_are_refused_as_corrupt_not_as_out_of_memory(sample_dir, tmp_path):
    """Rows x Columns of 60000 x 60000 on JPEG 2000 slices: 21 GB promised, 512 x 512 decoded."""
    for path in sorted((sample_dir / "ct_dicom").iterdir())[:3]:
        shutil.copy(path, tmp_path / path.name)
        set_tags(tmp_path / path.name, Rows=60000, Columns=60000)
    limit = 2**31  # the child's address space: the 21 GB array must never be asked for
    code = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
            f"from viz3d.cli.main import main; raise SystemExit(main(['info', {str(tmp_path)!r}]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    named = run.stderr.split(": cannot decode")[0].removeprefix("viz3d: error: ")
    assert Path(named).parent == tmp_path
    assert ": cannot decode pixel data (JPEG 2000 Image Compression (Lossless Only); the header says 60000x60000 " \
           "pixels of 16 bits): " in run.stderr


def test_a_folder_with_more_files_than_one_study_is_refused_before_reading_them(tmp_path, monkeypatch, capsys):
    """`viz3d info /` scanned the whole disk (and stopped on /proc with a PermissionError, exit 1)."""
    import viz3d.io.dicom as dicom

    small_series(tmp_path)
    monkeypatch.setattr(dicom, "MAX_SCAN_FILES", 5)
    status, out, err = run_viz3d(capsys, "info", tmp_path)
    assert status == 2 and err == (f"viz3d: error: {tmp_path}: more than 5 files under this folder: not one study; "
                                   "name the folder of the series (or one of its files)\n")
