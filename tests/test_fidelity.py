"""Surfaces against analytic truth: shape (normals), position (distance), volume, closedness.

Small versions of the shapes of the fidelity table in ``scripts/bench.py``: a ball, a tilted
torus like a rib, an ellipsoid, two halves of a ball touching along an oblique plane, on an
isotropic 0.8 mm grid and on 0.8 x 0.8 x 3 mm (thick slices), under RAS, LPS-stored and
oblique affines. The raw marching-cubes staircase (the default until this test was written)
had a mean normal error of 16-30 degrees here.
"""
import numpy as np
import pytest

from viz3d.surfaces import fidelity
from viz3d.surfaces.meshing import effective_resolution, label_meshes, upsampling_factors
from viz3d.surfaces.quality import mesh_report

GRIDS = {
    "RAS": {},
    "LPS": {"flip_lr_ap": True},
    "LAS (left-handed)": {"turn": np.diag([-1.0, 1.0, 1.0])},
    "oblique": {"turn": fidelity.rotation([1, 2, 3], 20)},
}
SHAPES = {
    "ball": lambda: fidelity.sphere(9.0),
    "rib-like torus": lambda: fidelity.torus(14.0, 4.0),
    "ellipsoid": lambda: fidelity.ellipsoid((12.0, 8.0, 6.0)),
}


def measured(shape, slice_mm, grid, **options):
    """(viz3d's surface error, 3D Slicer's default pipeline's error, the label map) for ``shape``."""
    label = fidelity.voxelise([shape], affine=fidelity.grid_affine((0.8, 0.8, slice_mm), **GRIDS[grid]))
    (mesh,) = label_meshes(label, **options)
    ours = fidelity.surface_error(mesh.vertices, mesh.faces, shape)
    slicer = fidelity.surface_error(*fidelity.slicer_surface(label, 1), shape)
    return ours, slicer, label


def voxel_volume_error_pct(label, shape):
    return 100.0 * (np.count_nonzero(label.array) * label.voxel_volume_mm3 / shape.volume - 1.0)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name", SHAPES)
def test_isotropic_surfaces_are_as_true_as_slicers_and_keep_the_volume(name, grid):
    shape = SHAPES[name]()
    ours, slicer, _ = measured(shape, 0.8, grid)
    assert ours.closed_outward
    assert ours.normal_error_deg < 4.0, "terraces: faces tilted against the true surface"
    assert ours.normal_error_deg <= slicer.normal_error_deg * 1.05 + 0.05
    assert ours.rms_mm <= max(slicer.rms_mm * 1.1, 0.07)
    assert abs(ours.volume_error_pct) < 1.0


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name", SHAPES)
def test_thick_slices_give_surfaces_truer_than_slicers(name, grid):
    shape = SHAPES[name]()
    ours, slicer, label = measured(shape, 3.0, grid)
    assert ours.closed_outward
    assert ours.normal_error_deg < 8.0
    assert ours.normal_error_deg < 0.85 * slicer.normal_error_deg
    assert ours.rms_mm < 0.85 * slicer.rms_mm
    # the volume is the voxels' (what the scan holds); the voxels themselves miss the truth by
    # up to ~1.5 % at 3 mm, so the surface answers for the voxel volume and not more
    assert abs(ours.volume_error_pct - voxel_volume_error_pct(label, shape)) < 1.0


def test_thick_slices_are_interpolated_between_slices_not_stepped():
    shape = fidelity.sphere(9.0)
    label = fidelity.voxelise([shape], spacing=(0.8, 0.8, 3.0))
    assert upsampling_factors(label.affine) == (1, 1, 4)
    (mesh,) = label_meshes(label)
    # the vertices' heights are spread through the slab, not stacked on the half-slice planes
    k = np.linalg.solve(label.affine[:3, :3], (mesh.vertices - label.affine[:3, 3]).T)[2]
    on_half_planes = np.abs((k - 0.5) - np.round(k - 0.5)) < 0.05
    assert on_half_planes.mean() < 0.3


def test_no_smoothing_gives_the_raw_staircase():
    shape = fidelity.sphere(9.0)
    raw, _, _ = measured(shape, 0.8, "RAS", smoothing=0.0)
    smooth, _, _ = measured(shape, 0.8, "RAS")
    assert raw.closed_outward and raw.normal_error_deg > 15.0 > 4.0 > smooth.normal_error_deg


@pytest.mark.parametrize("method", ["flying-edges", "lewiner", "surface-nets"])
def test_every_method_gives_a_closed_outward_ball_near_the_truth(method):
    shape = fidelity.sphere(9.0)
    ours, _, _ = measured(shape, 0.8, "oblique", method=method)
    assert ours.closed_outward
    assert ours.normal_error_deg < 6.0 and ours.rms_mm < 0.1 and abs(ours.volume_error_pct) < 1.0


@pytest.mark.parametrize("spacing", [(0.8, 0.8, 0.8), (0.8, 0.8, 3.0), (0.8, 0.8, 5.0), (3.0, 3.0, 3.0)])
def test_touching_labels_do_not_push_into_each_other_beyond_half_a_voxel(spacing):
    # on 3 mm voxels each half-ball is seven voxels across: smoothing alone rounded each flat
    # face a voxel into the other half (2.9 mm both together), as 3D Slicer's do (2.3 mm)
    upper, lower = fidelity.ball_halves(10.0, tilt=35.0)
    label = fidelity.voxelise([upper, lower], affine=fidelity.grid_affine(spacing, **GRIDS["oblique"]))
    a, b = label_meshes(label)
    assert (a.label, b.label) == (1, 2)
    # half the voxel's width across the shared plane (its normal n): 0.4 mm for a plane along
    # the grid's 0.8 mm axes, 1.5 mm for one between 3 mm slices
    normal = fidelity.rotation([1.0, 0.0, 0.0], 35.0) @ [0.0, 0.0, 1.0]
    half_voxel = 0.5 * float(np.abs(normal @ label.affine[:3, :3]).sum())
    if len(set(spacing)) == 1:  # cubic voxels: half an edge (viz3d's and Slicer's surfaces reached 2.9 and 2.3 mm at 3 mm)
        half_voxel = 0.5 * spacing[0]
    assert fidelity.penetration_mm(a.vertices, a.faces, b.vertices, b.faces) <= half_voxel
    assert fidelity.penetration_mm(b.vertices, b.faces, a.vertices, a.faces) <= half_voxel
    for mesh in (a, b):  # and each keeps its voxels' volume (5 mm slices: itself 3 % off the truth)
        assert mesh_report(mesh).printable
        voxels = np.count_nonzero(label.array == mesh.label) * label.voxel_volume_mm3
        assert mesh_report(mesh).volume_mm3 == pytest.approx(voxels, rel=0.02)


@pytest.mark.parametrize("slice_mm", [0.8, 3.0])
def test_a_five_millimetre_tube_stays_closed_and_keeps_its_thickness(slice_mm):
    tube = fidelity.torus(14.0, 2.5, tilt=30.0)
    label = fidelity.voxelise([tube], affine=fidelity.grid_affine((0.8, 0.8, slice_mm), **GRIDS["LPS"]))
    (mesh,) = label_meshes(label)
    error = fidelity.surface_error(mesh.vertices, mesh.faces, tube)
    assert error.closed_outward and mesh_report(mesh).printable
    assert abs(error.volume_error_pct - voxel_volume_error_pct(label, tube)) < 1.5
    # the tube's radius: vertices sit on average within a tenth of it from the true surface
    assert np.mean(np.abs(tube.distance(mesh.vertices))) < 0.25


@pytest.mark.parametrize("voxel_mm", [0.8, 3.0])
def test_a_label_one_voxel_thin_between_two_others_keeps_its_shape_and_volume(voxel_mm):
    # a disc one voxel thick pressed between two blocks, and a single voxel two voxels from them:
    # kept apart from their neighbours, neither may be pushed in from both sides
    from viz3d.io.volume import Volume

    array = np.zeros((24, 24, 15), np.uint8)
    array[2:22, 2:22, 2:7] = 1
    array[2:22, 2:22, 7] = 2
    array[2:22, 2:22, 8:13] = 3
    array[11, 11, 10] = 4  # a single voxel carved out of the upper block
    meshes = {m.label: m for m in label_meshes(Volume(array, np.diag([voxel_mm] * 3 + [1.0])))}
    for value in (2, 4):
        report = mesh_report(meshes[value])
        assert report.printable
        voxels = np.count_nonzero(array == value) * voxel_mm**3
        assert report.volume_mm3 == pytest.approx(voxels, rel=0.03)
    # the disc's two faces stay apart by most of a voxel
    disc = meshes[2].vertices[:, 2] / voxel_mm
    top, bottom = disc[disc > 7], disc[disc < 7]
    assert np.median(top) - np.median(bottom) > 0.8


def test_a_single_voxel_stays_a_closed_piece_with_volume():
    array = np.zeros((9, 9, 9), np.uint8)
    array[4, 4, 4] = 1
    array[1:4, 1:4, 1:4] = 1  # and a small cube beside it
    from viz3d.io.volume import Volume

    (mesh,) = label_meshes(Volume(array, np.diag([3.0, 3.0, 3.0, 1.0])))
    report = mesh_report(mesh)
    assert report.printable and report.components == 2
    assert report.volume_mm3 == pytest.approx(28 * 27.0, rel=0.02)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_smoothing_factor_outside_zero_to_one_is_refused(bad):
    from viz3d.errors import Viz3dError

    label = fidelity.voxelise([fidelity.sphere(3.0)], spacing=(1.0, 1.0, 1.0))
    with pytest.raises(Viz3dError, match="smoothing"):
        label_meshes(label, smoothing=bad)


def test_an_unknown_method_is_refused_with_the_choices():
    from viz3d.errors import Viz3dError

    label = fidelity.voxelise([fidelity.sphere(3.0)], spacing=(1.0, 1.0, 1.0))
    with pytest.raises(Viz3dError, match="flying-edges, surface-nets, lewiner"):
        label_meshes(label, method="cubes")


@pytest.mark.parametrize("slice_mm", [3.0, 5.0])
@pytest.mark.parametrize("extent", [(3, 3, 1), (8, 8, 2), (8, 8, 3)])
def test_structures_a_few_slices_thick_keep_their_voxel_volume(extent, slice_mm):
    from viz3d.io.volume import Volume

    array = np.zeros((20, 20, 9), np.uint8)
    array[6:6 + extent[0], 6:6 + extent[1], 3:3 + extent[2]] = 1
    label = Volume(array, np.diag([0.7, 0.7, slice_mm, 1.0]))
    (mesh,) = label_meshes(label)
    report = mesh_report(mesh)
    assert report.printable
    assert report.volume_mm3 == pytest.approx(array.sum() * label.voxel_volume_mm3, rel=0.02)


@pytest.mark.parametrize("grid", ["RAS", "oblique"])
def test_a_five_millimetre_tube_on_five_millimetre_slices_keeps_its_voxel_volume(grid):
    tube = fidelity.torus(20.0, 2.5, tilt=30.0)
    label = fidelity.voxelise([tube], affine=fidelity.grid_affine((0.8, 0.8, 5.0), **GRIDS[grid]))
    (mesh,) = label_meshes(label)
    assert mesh_report(mesh).printable
    assert mesh_report(mesh).volume_mm3 == pytest.approx(np.count_nonzero(label.array) * label.voxel_volume_mm3, rel=0.02)


@pytest.mark.parametrize("slice_mm", [0.8, 3.0, 5.0])
@pytest.mark.parametrize("grid", GRIDS)
def test_label_maps_drawn_on_their_own_grid_are_not_taken_for_resampled_ones(grid, slice_mm):
    shapes = [SHAPES[name]() for name in SHAPES] + list(fidelity.ball_halves(10.0, tilt=35.0))
    for shape in shapes:
        label = fidelity.voxelise([shape], affine=fidelity.grid_affine((0.8, 0.8, slice_mm), **GRIDS[grid]))
        assert effective_resolution(label.array)[0] == (1, 1, 1), shape.name


@pytest.mark.parametrize("factor", [3, 4, 6])
def test_a_label_map_upsampled_from_a_coarser_grid_is_found_with_its_step(factor):
    coarse = fidelity.voxelise([fidelity.sphere(18.0)], spacing=(3.0, 3.0, 3.0))
    steps, phases = effective_resolution(fidelity.upsample_labels(coarse, factor).array)
    assert steps == (factor,) * 3 and phases == (0, 0, 0)
    # shifted by a voxel, the blocks start one voxel later
    shifted = np.asarray(fidelity.upsample_labels(coarse, factor).array)[:, 1:]
    assert effective_resolution(shifted) == ((factor,) * 3, (0, factor - 1, 0))


@pytest.mark.parametrize("grid", ["RAS", "oblique"])
@pytest.mark.parametrize("name", ["ball", "ellipsoid"])
def test_a_label_map_upsampled_from_3mm_is_meshed_without_its_3mm_terraces(name, grid):
    shape = {"ball": fidelity.sphere(18.0), "ellipsoid": fidelity.ellipsoid()}[name]
    coarse = fidelity.voxelise([shape], affine=fidelity.grid_affine((3.0, 3.0, 3.0), **GRIDS[grid]))
    label = fidelity.upsample_labels(coarse, 6)  # 0.5 mm voxels, each boundary a 6-voxel staircase
    (mesh,) = label_meshes(label)
    ours = fidelity.surface_error(mesh.vertices, mesh.faces, shape)
    slicer = fidelity.surface_error(*fidelity.slicer_surface(label, 1), shape)
    assert ours.closed_outward and mesh_report(mesh).printable
    # smoothing at the 0.5 mm scale left the 3 mm terraces: 18-20 degrees, as Slicer's pipeline
    # does; meshed directly at 3 mm these shapes give 4.5-6 degrees
    assert ours.normal_error_deg < 10.0 and ours.normal_error_deg < 0.5 * slicer.normal_error_deg
    assert ours.rms_mm < 0.8 * slicer.rms_mm
    assert abs(ours.volume_error_pct - voxel_volume_error_pct(label, shape)) < 1.0


def test_touching_labels_upsampled_from_3mm_do_not_push_into_each_other_beyond_half_a_coarse_voxel():
    upper, lower = fidelity.ball_halves(14.0, tilt=35.0)
    coarse = fidelity.voxelise([upper, lower], affine=fidelity.grid_affine((3.0, 3.0, 3.0), **GRIDS["oblique"]))
    label = fidelity.upsample_labels(coarse, 6)
    assert effective_resolution(label.array)[0] == (6, 6, 6)
    a, b = label_meshes(label)
    normal = fidelity.rotation([1.0, 0.0, 0.0], 35.0) @ [0.0, 0.0, 1.0]
    half_voxel = 0.5 * float(np.abs(normal @ coarse.affine[:3, :3]).sum())  # of the 3 mm grid the labels were drawn on
    assert fidelity.penetration_mm(a.vertices, a.faces, b.vertices, b.faces) <= half_voxel
    assert fidelity.penetration_mm(b.vertices, b.faces, a.vertices, a.faces) <= half_voxel
    assert mesh_report(a).printable and mesh_report(b).printable


def nearest_onto(coarse, spacing):
    """``coarse`` written onto a grid of ``spacing`` (same orientation, tiling the same box) by
    nearest neighbour, as segmentation tools write a 3 mm result onto a CT's grid."""
    from viz3d.io.volume import Volume

    sizes = np.asarray(coarse.voxel_sizes, float)
    ratio = np.asarray(spacing, float) / sizes  # fine voxel in coarse voxels
    shape = np.floor(np.asarray(coarse.shape) / ratio).astype(int)
    ijk = [np.arange(n) * r - 0.5 + r / 2 for n, r in zip(shape, ratio)]  # fine centres, coarse index
    index = [np.clip(np.floor(c + 0.5).astype(int), 0, n - 1) for c, n in zip(ijk, coarse.shape)]
    array = np.asarray(coarse.array)[np.ix_(*index)]
    affine = np.array(coarse.affine, float)
    affine[:3, 3] = affine[:3, :3] @ np.array([c[0] for c in ijk]) + affine[:3, 3]
    affine[:3, :3] = affine[:3, :3] * ratio
    return Volume(np.asfortranarray(array), affine)


@pytest.mark.parametrize("grid", ["RAS", "oblique"])
def test_a_3mm_map_written_on_a_0977mm_ct_grid_is_meshed_on_its_own_grid(grid):
    # the DICOM sample's label: 3 mm written on 0.977 x 0.977 x 2 mm, 3.07 voxels per coarse
    # voxel in plane: its terraces alternate 3 and 4 voxels and, across a body, drift a whole
    # coarse voxel against any whole-number grid (two balls 150 mm apart)
    shapes = [fidelity.sphere(18.0, centre=(-75.0, 0.0, 0.0), name="right"),
              fidelity.sphere(18.0, centre=(75.0, 0.0, 0.0), name="left")]
    coarse = fidelity.voxelise(shapes, affine=fidelity.grid_affine((3.0, 3.0, 3.0), **GRIDS[grid]))
    label = nearest_onto(coarse, (0.9765625, 0.9765625, 2.0))
    steps, _ = effective_resolution(label.array)
    assert steps[0] == pytest.approx(3.072, abs=0.02)
    for value, (mesh, shape) in enumerate(zip(label_meshes(label), shapes), start=1):
        ours = fidelity.surface_error(mesh.vertices, mesh.faces, shape)
        slicer = fidelity.surface_error(*fidelity.slicer_surface(label, value), shape)
        assert ours.closed_outward and mesh_report(mesh).printable
        # voxel by voxel, as before: about Slicer's 10-11 degrees; on the 3 mm grid itself 4.5
        assert ours.normal_error_deg < 0.65 * slicer.normal_error_deg and ours.rms_mm < 0.85 * slicer.rms_mm
