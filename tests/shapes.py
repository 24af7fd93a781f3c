"""Test geometry shared by the scene, slices, motion and web tests."""
import math

import numpy as np

from viz3d.surfaces.meshing import Mesh


def uv_sphere(name, center, radius, color, kind="label", n=16):
    """A closed, outward-wound UV sphere as a `Mesh` (numpy only); ``n`` rings of latitude."""
    theta = np.linspace(0, np.pi, n + 1)[1:-1]
    phi = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    vertices = np.vstack([[0, 0, 1], ring, [0, 0, -1]]) * radius + np.asarray(center, float)
    m = 2 * n
    faces = [[0, 1 + j, 1 + (j + 1) % m] for j in range(m)]
    for i in range(n - 2):
        for j in range(m):
            a, b = 1 + i * m + j, 1 + i * m + (j + 1) % m
            faces += [[a, a + m, b], [b, a + m, b + m]]
    last = len(vertices) - 1
    faces += [[last, 1 + (n - 2) * m + (j + 1) % m, 1 + (n - 2) * m + j] for j in range(m)]
    return Mesh(name, kind, None if kind == "bone" else 1, color, vertices, np.asarray(faces, np.int64))


def oblique_affine():
    """A voxel-to-RAS affine rotated 30 degrees about z and 12 about x, voxels 1.5 x 2 x 3 mm."""
    a, b = math.radians(30), math.radians(12)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([1.5, 2.0, 3.0])
    affine[:3, 3] = [-20.0, 5.0, 40.0]
    return affine


def write_box_case(folder, *, shape, bone, label, value, affine, bone_hu=800):
    """A CT of air with one box of bone (``bone``: index slices) and a label map with one box of
    class ``value``, written as ``ct.nii.gz`` and ``label.nii.gz`` in ``folder``; returns their paths."""
    import nibabel as nib

    ct = np.full(shape, -1000, np.int16)
    ct[bone] = bone_hu
    label_map = np.zeros(shape, np.uint8)
    label_map[label] = value
    paths = folder / "ct.nii.gz", folder / "label.nii.gz"
    for array, path in zip((ct, label_map), paths):
        nib.save(nib.Nifti1Image(array, affine), path)
    return paths
