"""Measurements and checks of a surface: volume, area, closedness, winding (via trimesh)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .meshing import Mesh


@dataclass(frozen=True)
class MeshReport:
    """What a mesh measures: enclosed volume (mL), area (mm²), and whether it is printable."""

    triangles: int
    watertight: bool
    winding_consistent: bool
    volume_ml: float
    area_mm2: float
    components: int
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]]

    @property
    def outward(self) -> bool:
        """True for a closed surface with consistent winding and positive enclosed volume."""
        return self.watertight and self.winding_consistent and self.volume_ml > 0


def to_trimesh(mesh: Mesh):
    """The mesh as a `trimesh.Trimesh`, vertices and faces unchanged (no merging or repair)."""
    import trimesh

    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False, validate=False)


def mesh_report(mesh: Mesh) -> MeshReport:
    """Measure a mesh with trimesh.

    ``volume_ml`` is the signed enclosed volume in millilitres (positive when normals point
    outward); it is only meaningful when ``watertight`` is True.

    >>> import numpy as np
    >>> v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    >>> f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> r = mesh_report(Mesh("tet", "label", 1, (1, 0, 0), v, f))
    >>> r.watertight, round(r.volume_ml * 1000, 3)
    (True, 166.667)
    """
    import trimesh

    if not len(mesh.faces):
        zero = (0.0, 0.0, 0.0)
        return MeshReport(0, False, False, 0.0, 0.0, 0, (zero, zero))
    tm = to_trimesh(mesh)
    used = mesh.vertices[np.unique(mesh.faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    face_groups = trimesh.graph.connected_component_labels(tm.face_adjacency, node_count=len(mesh.faces))
    components = int(face_groups.max()) + 1
    return MeshReport(
        triangles=int(len(mesh.faces)),
        watertight=bool(tm.is_watertight),
        winding_consistent=bool(tm.is_winding_consistent),
        volume_ml=float(tm.volume) / 1000.0,
        area_mm2=float(tm.area),
        components=components,
        bounds=(tuple(float(x) for x in lo), tuple(float(x) for x in hi)),
    )
