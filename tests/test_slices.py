"""The CT on world-axis planes (viz3d.scene.slices) against scipy's trilinear sampling of world points."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from shapes import oblique_affine

from viz3d.scene import slices


def _reference(array, affine, grid, position):
    """Values and inside mask at the grid's world points, sampled through the inverse affine."""
    (u0, v0), (du, dv), (nu, nv) = grid.origin, grid.spacing, grid.shape
    u, v = np.meshgrid(u0 + du * np.arange(nu), v0 + dv * np.arange(nv))
    world = np.zeros((3,) + u.shape)
    world[grid.u], world[grid.v], world[grid.axis] = u, v, position
    inverse = np.linalg.inv(affine)
    voxel = np.einsum("ij,jab->iab", inverse[:3, :3], world) + inverse[:3, 3][:, None, None]
    shape = np.array(array.shape)[:, None, None]
    inside = np.all((voxel >= -0.5) & (voxel <= shape - 0.5), axis=0)
    values = ndimage.map_coordinates(array.astype(np.float64), voxel.reshape(3, -1), order=1, mode="nearest")
    return values.reshape(u.shape), inside


def _signed_permutations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            affine = np.eye(4)
            affine[:3, :3] = 0
            for j, (k, s, size) in enumerate(zip(perm, signs, (1.5, 2.0, 0.7))):
                affine[k, j] = s * size
            affine[:3, 3] = (3.0, -4.0, 10.0)
            yield affine


@pytest.mark.parametrize("order", ["C", "F"])
def test_axis_aligned_grids_sample_like_scipy_at_every_orientation(order):
    rng = np.random.default_rng(1)
    array = np.asarray(rng.integers(-1000, 2000, (7, 5, 6)).astype(np.int16), order=order)
    checked = 0
    for affine in _signed_permutations():
        for axis in range(3):
            grid = slices.plane_grid(affine, array.shape, axis)
            # one sample per voxel in the plane: the two other grid axes' sizes, in some order
            assert sorted(grid.shape) == sorted(n for j, n in enumerate(array.shape)
                                                if np.argmax(np.abs(affine[:3, j])) != axis)
            for position in np.linspace(-12.0, 16.0, 6):
                values, inside = slices.sample_plane(array, affine, grid, position)
                expected, expected_inside = _reference(array, affine, grid, position)
                np.testing.assert_array_equal(inside, expected_inside)
                np.testing.assert_allclose(values, expected, atol=1e-3)
                checked += inside.any()
    assert checked > 100  # most positions cut the CT


def test_voxel_centres_are_sampled_exactly():
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS: i runs towards the patient's right
    grid = slices.plane_grid(affine, array.shape, 2)
    values, inside = slices.sample_plane(array, affine, grid, 3.0 * 4)  # world z of slice k = 4
    assert inside.all()
    # rows along world y (j), columns along world x: increasing x is decreasing i
    np.testing.assert_array_equal(values, array[::-1, :, 4].T)


def test_oblique_grids_sample_like_scipy_and_leave_out_the_outside():
    rng = np.random.default_rng(2)
    array = rng.normal(size=(12, 9, 7)).astype(np.float32)
    affine = oblique_affine()
    for axis in range(3):
        grid = slices.plane_grid(affine, array.shape, axis)
        centre = (affine[:3, :3] @ ((np.array(array.shape) - 1) / 2) + affine[:3, 3])[axis]
        values, inside = slices.sample_plane(array, affine, grid, centre)
        expected, expected_inside = _reference(array, affine, grid, centre)
        np.testing.assert_array_equal(inside, expected_inside)
        assert 0 < inside.mean() < 1  # a rotated CT covers only part of the world-aligned box
        np.testing.assert_allclose(values[inside], expected[inside], atol=1e-4)


def test_plane_corners_span_the_grid():
    affine = np.diag([0.5, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-10, 20, 30)
    grid = slices.plane_grid(affine, (11, 6, 5), 1)
    corners = slices.plane_corners(grid, 22.0)
    np.testing.assert_allclose(corners[:, 1], 22.0)
    np.testing.assert_allclose(corners[[0, 2]], [[-10, 22, 30], [-5, 22, 40]])


def test_plane_grids_are_capped(monkeypatch):
    monkeypatch.setattr(slices, "MAX_PLANE_SAMPLES", 16)
    grid = slices.plane_grid(np.diag([0.1, 0.1, 1.0, 1.0]), (100, 40, 3), 2)
    assert grid.shape == (16, 16)
    assert grid.spacing[0] * 15 == pytest.approx(9.9)
    with pytest.raises(ValueError, match="axis"):
        slices.plane_grid(np.eye(4), (2, 2, 2), 3)


@pytest.mark.parametrize("dtype, values", [
    (np.int16, [-1024, 0, 3071, -32768, 32767]),
    (np.uint8, [0, 7, 255]),
    (np.int32, [-2000, 0, 60000]),
    (np.float32, [-0.25, 0.0, 0.5, 1.75]),
])
def test_codes_round_trip(dtype, values):
    array = np.array(values, dtype=dtype)
    offset, scale = slices.value_codes(array)
    rgb = slices.encode_plane(array.astype(np.float32)[None], np.ones((1, len(values)), bool), offset, scale)
    decoded = offset + scale * (rgb[0, :, 0].astype(float) * 256 + rgb[0, :, 1])
    exact = np.dtype(dtype).kind in "iu"
    np.testing.assert_allclose(decoded, values, atol=0 if exact else scale / 2 + 1e-9)
    assert (rgb[..., 2] == 255).all()


def test_outside_and_missing_values_are_marked():
    rgb = slices.encode_plane(np.array([[1.0, np.nan, 2.0]]), np.array([[True, True, False]]), 0.0, 1.0)
    assert rgb[0, :, 2].tolist() == [255, 0, 0]


def test_plane_points_run_along_u_first_and_end_at_the_corners():
    grid = slices.plane_grid(oblique_affine(), (12, 9, 7), 0, max_samples=5)
    assert max(grid.shape) <= 5
    points = slices.plane_points(grid, -3.0).reshape(grid.shape[1], grid.shape[0], 3)
    corners = slices.plane_corners(grid, -3.0)
    np.testing.assert_allclose([points[0, 0], points[0, -1], points[-1, -1], points[-1, 0]], corners)
    assert np.all(np.diff(points[0, :, grid.u]) > 0) and np.all(np.diff(points[:, 0, grid.v]) > 0)


def test_rounding_noise_in_the_affine_keeps_the_direct_path(monkeypatch):
    """Off-diagonal noise of float32 headers still reads whole voxels (50 ms -> 7 ms a plane)."""
    taken = []
    direct = slices._aligned_plane
    monkeypatch.setattr(slices, "_aligned_plane", lambda *args: taken.append(1) or direct(*args))
    array = np.random.default_rng(4).normal(size=(30, 20, 10)).astype(np.float32)
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    affine[:3, :3] += 1e-8 * np.array([[0, 1, -1], [1, 0, 1], [-1, 1, 0]])
    grid = slices.plane_grid(affine, array.shape, 2)
    values, inside = slices.sample_plane(array, affine, grid, 2.5 * 4)
    assert taken and inside.all()
    np.testing.assert_allclose(values, array[:, :, 4].T, atol=1e-5)
    affine[0, 1] = 1e-3  # a real shear is not rounding noise: sampled through the affine
    taken.clear()
    slices.sample_plane(array, affine, slices.plane_grid(affine, array.shape, 2), 10.0)
    assert not taken


def test_float16_cts_sample_on_oblique_planes():
    array = np.random.default_rng(5).normal(size=(12, 9, 7)).astype(np.float16)
    grid = slices.plane_grid(oblique_affine(), array.shape, 1)
    values, inside = slices.sample_plane(array, oblique_affine(), grid, 8.0)
    expected, _ = slices.sample_plane(array.astype(np.float32), oblique_affine(), grid, 8.0)
    np.testing.assert_allclose(values[inside], expected[inside])


def test_codes_span_the_finite_values_only():
    array = np.array([10.0, 50.0, np.inf, -np.inf, np.nan], np.float32)
    offset, scale = slices.value_codes(array)
    assert offset == 10.0 and scale == pytest.approx(40 / 65535)
    rgb = slices.encode_plane(array[None], np.ones((1, 5), bool), offset, scale)
    assert rgb[0, :, 2].tolist() == [255, 255, 0, 0, 0]  # not finite: drawn as outside the CT
    assert rgb[0, 1, :2].tolist() == [255, 255] and rgb[0, 0, :2].tolist() == [0, 0]
    assert slices.value_codes(np.full(3, np.nan)) == (0.0, 1 / 65535)  # nothing finite: any range
