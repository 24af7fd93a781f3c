"""Checks and repairs of a surface: closed, 2-manifold, outward, no degenerate faces; volume, area.

`inspect_surface` measures everything the export manifest reports in a few sorted passes over
numpy arrays (no Python loop over triangles: about a second per million triangles), and
`make_printable` repairs what it finds with library tools (VTK's vtkCleanPolyData, libigl's
duplicate-face resolution, non-manifold splitting and orientation), then checks again.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .meshing import Mesh, face_volumes_and_areas
from .polydata import compact

DEGENERATE_AREA = 1e-12  # a face is degenerate below this area, relative to the squared box diagonal
FLAT_PIECE = 1e-6  # a closed piece is flat when |volume| < FLAT_PIECE * area^1.5 (a cube has 0.068)


@dataclass(frozen=True)
class SurfaceCheck:
    """What a surface measures and whether it is printable (a closed, outward 2-manifold).

    ``watertight``: every edge has exactly two faces. ``winding_consistent``: those two faces
    run along it in opposite directions. ``manifold``: both, and the faces around every vertex
    form one fan. ``inverted_components``: closed pieces that face inward without being a
    cavity inside another piece. ``flat_components``: closed pieces that enclose no volume
    (two faces back to back: what is left of a piece that decimation collapsed).
    """

    triangles: int
    vertices: int
    watertight: bool
    winding_consistent: bool
    manifold: bool
    boundary_edges: int
    nonmanifold_edges: int
    nonmanifold_vertices: int
    degenerate_faces: int
    components: int
    inverted_components: int
    flat_components: int
    volume_mm3: float
    area_mm2: float
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]]

    @property
    def volume_ml(self) -> float:
        return self.volume_mm3 / 1000.0

    @property
    def printable(self) -> bool:
        """A closed, consistently wound, outward 2-manifold with no degenerate faces."""
        return (self.triangles > 0 and self.manifold and self.degenerate_faces == 0
                and self.inverted_components == 0 and self.flat_components == 0 and self.volume_mm3 > 0)

    def problems(self) -> list[str]:
        """What stops the surface from being printable, in words (empty when it is)."""
        out = []
        if self.triangles == 0:
            return ["empty surface"]
        if self.boundary_edges:
            out.append(f"open: {self.boundary_edges} boundary edges")
        if self.nonmanifold_edges:
            out.append(f"{self.nonmanifold_edges} edges shared by more than two faces")
        if self.watertight and not self.winding_consistent:
            out.append("inconsistent winding")
        if self.nonmanifold_vertices:
            out.append(f"{self.nonmanifold_vertices} pinched (non-manifold) vertices")
        if self.degenerate_faces:
            out.append(f"{self.degenerate_faces} degenerate (zero-area) faces")
        if self.inverted_components:
            out.append(f"{self.inverted_components} inside-out pieces")
        if self.flat_components:
            out.append(f"{self.flat_components} flat pieces that enclose no volume")
        if self.watertight and self.winding_consistent and self.volume_mm3 <= 0:
            out.append("encloses no positive volume (faces point inward)")
        return out


def inspect_surface(vertices: np.ndarray, faces: np.ndarray) -> SurfaceCheck:
    """Check and measure a triangle surface given as numpy arrays (see `SurfaceCheck`).

    >>> v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    >>> f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> c = inspect_surface(v, f)
    >>> c.printable, c.components, round(c.volume_mm3, 3), c.bounds[1]
    (True, 1, 166.667, (10.0, 10.0, 10.0))
    >>> inspect_surface(v, f[:3]).problems()
    ['open: 3 boundary edges']
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    m = len(faces)
    if m == 0:
        zero = (0.0, 0.0, 0.0)
        return SurfaceCheck(0, 0, False, False, False, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, (zero, zero))
    n = len(vertices)
    index = np.int32 if max(n, 3 * m) < 2**31 else np.int64  # half the memory traffic of every gather
    a = faces.ravel().astype(index)  # the vertex at each corner
    after = np.arange(1, 3 * m + 1, dtype=index)
    after[2::3] -= 3  # the next corner in the same face
    b = a[after]  # the vertex there: each corner's half-edge runs a -> b
    degree = np.bincount(a, minlength=n)  # faces at each vertex
    used = degree > 0
    rows = np.ascontiguousarray((vertices if used.all() else vertices[used]).T)  # x, y, z rows: fast reductions
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    diagonal2 = float(np.sum((hi - lo) ** 2)) or 1.0

    signed, double_area = face_volumes_and_areas(vertices, faces)
    repeated = (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 2] == faces[:, 0])
    degenerate = int(np.count_nonzero(repeated | (double_area <= 2 * DEGENERATE_AREA * diagonal2)))

    edges = _edges(a, b, n, index)
    watertight = edges.boundary == 0 and edges.nonmanifold == 0
    winding = _winding(edges, watertight)
    nonmanifold_vertices, components, piece = _pieces(faces, edges, after, a, degree, used, index,
                                                       closed=watertight and winding)
    inverted, flat = _orientation(vertices, faces, piece, components, signed, double_area, watertight)
    return SurfaceCheck(
        triangles=m,
        vertices=int(np.count_nonzero(used)),
        watertight=watertight,
        winding_consistent=bool(winding),
        manifold=bool(watertight and winding and nonmanifold_vertices == 0),
        boundary_edges=edges.boundary,
        nonmanifold_edges=edges.nonmanifold,
        nonmanifold_vertices=nonmanifold_vertices,
        degenerate_faces=degenerate,
        components=int(components),
        inverted_components=inverted,
        flat_components=flat,
        volume_mm3=float(signed.sum()),
        area_mm2=float(double_area.sum() / 2.0),
        bounds=(tuple(float(x) for x in lo), tuple(float(x) for x in hi)),
    )


@dataclass
class _Edges:
    """Half-edges grouped by their undirected edge (see `_edges`)."""

    order: np.ndarray  # half-edges sorted by edge
    sorted_key: np.ndarray  # their edges' keys, low * n + high
    starts: np.ndarray  # where each edge's run of half-edges starts in ``order``
    counts: np.ndarray  # half-edges per edge
    forward: np.ndarray  # per half-edge: low -> high
    boundary: int  # edges with one face
    nonmanifold: int  # edges with more than two


def _edges(a: np.ndarray, b: np.ndarray, n: int, index) -> _Edges:
    """Half-edges ``a -> b`` grouped by their undirected edge: a closed, consistently wound
    2-manifold has exactly two per edge, running in opposite directions."""
    forward = a < b
    key = np.minimum(a, b).astype(np.int64)
    key *= n
    key += np.maximum(a, b)
    order = np.argsort(key, kind="stable").astype(index)  # surfaces come in spatially coherent runs: timsort is 1.5x faster here
    sorted_key = key[order]
    del key
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    counts = np.diff(np.r_[starts, len(sorted_key)])
    return _Edges(order, sorted_key, starts, counts, forward, int(np.count_nonzero(counts == 1)),
                  int(np.count_nonzero(counts > 2)))


def _winding(edges: _Edges, watertight: bool) -> bool:
    """Whether the two half-edges of every two-face edge run in opposite directions."""
    if watertight:
        first, second = edges.order[0::2], edges.order[1::2]
        return bool(not np.any(edges.forward[first] == edges.forward[second]))
    pair_forward = edges.forward[edges.order]
    pairs = edges.counts == 2
    return bool(not np.any(pair_forward[edges.starts[pairs]] == pair_forward[edges.starts[pairs] + 1]))


def _pieces(faces, edges: _Edges, after, a, degree, used, index, *, closed: bool):
    """``(pinched vertices, pieces, piece of each face)``: faces are joined through shared edges.

    Fans: around each vertex, step from a face to the face across the next edge; a vertex whose
    faces form more than one cycle is pinched (counted only on a closed, consistently wound
    surface)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    m, n = len(faces), len(degree)
    order, sorted_key = edges.order, edges.sorted_key
    if not closed:
        same = sorted_key[1:] == sorted_key[:-1]
        src, dst = order[:-1][same] // 3, order[1:][same] // 3
        graph = csr_matrix((np.ones(len(src), np.bool_), (src, dst)), shape=(m, m))
        components, piece = connected_components(graph, directed=False)
        return 0, components, piece
    first, second = order[0::2], order[1::2]
    twin = np.empty(len(order), index)
    twin[first], twin[second] = second, first
    step = after[twin]  # the corner of the twin's face at the same vertex: the next one in that face
    corner = np.empty(n, index)
    corner[a] = np.arange(len(a), dtype=index)  # one corner of each vertex (any)
    kept = np.flatnonzero(used)
    nonmanifold_vertices = int(np.count_nonzero(_cycle_lengths(step, corner[kept]) < degree[kept]))
    if nonmanifold_vertices:
        components, piece = _components(twin.reshape(m, 3) // 3)
        return nonmanifold_vertices, components, piece
    # no pinches: pieces joined through vertices are those joined through edges. Each edge once,
    # (low, high), in the sorted order the CSR format wants (every key is there twice): no COO
    # conversion or index sort, and half the edges to walk.
    edge = sorted_key[0::2]
    low = edge // n
    indptr = np.zeros(n + 1, index)
    np.cumsum(np.bincount(low, minlength=n), out=indptr[1:])
    graph = csr_matrix((np.ones(len(edge), np.bool_), (edge - low * n).astype(index), indptr), shape=(n, n))
    components, vertex_piece = connected_components(graph, directed=True, connection="weak")
    components -= int(np.count_nonzero(~used))  # unused vertices are pieces of their own
    return 0, components, vertex_piece[faces[:, 0]]  # numbers of unused vertices' pieces stay empty bins


def _orientation(vertices, faces, piece, components, signed, double_area, watertight: bool) -> tuple[int, int]:
    """``(inverted, flat)`` pieces: inward pieces are fine only as cavities inside an outward piece."""
    if not watertight:
        return 0, 0
    piece_volume = np.bincount(piece, weights=signed, minlength=components)
    is_flat = _flat(piece_volume, np.bincount(piece, weights=double_area, minlength=components) / 2.0)
    inverted = 0
    if np.any((piece_volume < 0) & ~is_flat):
        inverted = _count_inverted(vertices, faces, piece, np.where(is_flat, 0.0, piece_volume))
    return inverted, int(np.count_nonzero(is_flat))


def _cycle_lengths(step: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Length of the cycle of the permutation ``step`` through each corner in ``start``.

    Around a vertex, `step` goes from face to face; the vertex is pinched when that cycle is
    shorter than its number of faces. All vertices walk at once, for as many steps as the
    longest fan (a dozen on marching-cubes surfaces): 3x faster than finding every cycle.

    >>> _cycle_lengths(np.array([1, 2, 0, 4, 3]), np.array([0, 3, 4])).tolist()
    [3, 2, 2]
    """
    length = np.ones(len(start), np.int64)
    walking = np.arange(len(start))
    origin, at = start, step[start]
    while True:
        going = at != origin
        walking, origin, at = walking[going], origin[going], at[going]
        if not len(walking):
            return length
        length[walking] += 1
        at = step[at]


def _components(neighbours: np.ndarray):
    """Connected components of a graph whose node i links to every node in row i of ``neighbours``.

    The graphs here are symmetric (faces across shared edges) or permutations (corner to corner
    around a vertex), so strongly connected components are the connected ones, and scipy finds
    them without first building the transposed graph (1.5x faster).
    """
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    count, width = neighbours.shape
    graph = csr_matrix((np.ones(count * width, np.bool_), neighbours.ravel(), np.arange(0, count * width + 1, width)),
                       shape=(count, count))
    return connected_components(graph, directed=True, connection="strong")


def _piece_boxes(vertices, faces, piece, count):
    tri = vertices[faces]
    lo = np.full((count, 3), np.inf)
    hi = np.full((count, 3), -np.inf)
    np.minimum.at(lo, piece, tri.min(axis=1))
    np.maximum.at(hi, piece, tri.max(axis=1))
    return lo, hi


def _inside_out(lo, hi, piece_volume) -> np.ndarray:
    """Per piece: inward-facing and not inside the box of an outward-facing piece (so no cavity)."""
    flip = np.zeros(len(piece_volume), bool)
    positive = np.flatnonzero(piece_volume > 0)
    for index in np.flatnonzero(piece_volume < 0):  # one step per inward piece, not per face
        inside = np.all(lo[index] >= lo[positive], axis=1) & np.all(hi[index] <= hi[positive], axis=1)
        flip[index] = not inside.any()
    return flip


def _flat(piece_volume, piece_area) -> np.ndarray:
    return np.abs(piece_volume) < FLAT_PIECE * piece_area ** 1.5


def flat_pieces(vertices, faces) -> np.ndarray:
    """Boolean per face: the face belongs to a closed piece that encloses no volume."""
    from .polydata import face_components

    count, piece = face_components(faces, len(vertices))
    signed, double_area = face_volumes_and_areas(vertices, faces)
    volume = np.bincount(piece, weights=signed, minlength=count)
    return _flat(volume, np.bincount(piece, weights=double_area, minlength=count) / 2.0)[piece]


def _count_inverted(vertices, faces, piece, piece_volume) -> int:
    lo, hi = _piece_boxes(vertices, faces, piece, len(piece_volume))
    return int(np.count_nonzero(_inside_out(lo, hi, piece_volume)))


def inverted_pieces(vertices, faces) -> np.ndarray:
    """Boolean per face: the face belongs to an inside-out piece (see `SurfaceCheck`)."""
    from .polydata import face_components

    count, piece = face_components(faces, len(vertices))
    volume = np.bincount(piece, weights=face_volumes_and_areas(vertices, faces)[0], minlength=count)
    lo, hi = _piece_boxes(vertices, faces, piece, count)
    return _inside_out(lo, hi, volume)[piece]


# ------------------------------------------------------------------ repair


def make_printable(mesh: Mesh, check: SurfaceCheck | None = None) -> tuple[Mesh, SurfaceCheck, list[str]]:
    """Repair a surface where needed; return (mesh, its final check, the repairs made, in words).

    Steps, each only when the check asks for it and followed by a new check:

    1. degenerate faces or open edges: merge coincident vertices and drop collapsed faces
       (vtkCleanPolyData; surfaces built in pieces are often only "open" at duplicated vertices);
    2. edges with more than two faces or pinched vertices: drop duplicated face pairs and split
       the surface at the pinches (libigl), so touching parts become separate closed pieces;
    3. inconsistent winding: orient each piece consistently (libigl's breadth-first orientation);
    4. flat pieces (two faces back to back, enclosing nothing): drop them;
    5. inside-out pieces: flip them.

    What is still wrong afterwards is in ``check.problems()``; nothing is hidden.
    """
    check = check or inspect_surface(mesh.vertices, mesh.faces)
    repairs: list[str] = []
    if check.printable or check.triangles == 0:
        return mesh, check, repairs
    vertices, faces = mesh.vertices, mesh.faces
    if check.degenerate_faces or check.boundary_edges:
        from .polydata import clean

        vertices, faces = clean(vertices, faces)
        repairs.append(f"merged coincident vertices, removed {check.degenerate_faces} degenerate faces"
                       if check.degenerate_faces else "merged coincident vertices")
        check = inspect_surface(vertices, faces)
        if check.degenerate_faces:
            vertices, faces = _drop_degenerate(vertices, faces)
            check = inspect_surface(vertices, faces)
    if check.nonmanifold_edges or check.nonmanifold_vertices:
        import igl

        before = check
        faces, _ = igl.resolve_duplicated_faces(np.ascontiguousarray(faces, np.int64))
        vertices, faces, _ = igl.split_nonmanifold(np.ascontiguousarray(vertices, np.float64),
                                                   np.ascontiguousarray(faces, np.int64))
        vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
        vertices, faces = compact(vertices, faces)
        check = inspect_surface(vertices, faces)
        repairs.append(f"split {before.nonmanifold_edges} non-manifold edges and {before.nonmanifold_vertices} pinched "
                       f"vertices ({before.components} -> {check.components} pieces)")
    if check.watertight and not check.winding_consistent:
        import igl

        faces, _ = igl.bfs_orient(np.ascontiguousarray(faces, np.int64))
        faces = np.asarray(faces, np.int64)
        check = inspect_surface(vertices, faces)
        repairs.append("made the winding consistent")
    if check.flat_components:
        before = check
        vertices, faces = compact(vertices, faces[~flat_pieces(vertices, faces)])
        check = inspect_surface(vertices, faces)
        repairs.append(f"dropped {before.flat_components} flat pieces that enclosed no volume")
    if check.watertight and check.winding_consistent and (check.inverted_components or check.volume_mm3 < 0):
        flip = inverted_pieces(vertices, faces)
        if check.volume_mm3 < 0 and not flip.any():
            flip[:] = True
        faces = np.where(flip[:, None], faces[:, ::-1], faces)
        check = inspect_surface(vertices, faces)
        repairs.append(f"turned {int(np.count_nonzero(flip))} inward-facing faces outward")
    return replace(mesh, vertices=vertices, faces=faces), check, repairs


def _drop_degenerate(vertices, faces):
    """Remove zero-area faces that vertex merging did not collapse (three distinct, collinear points)."""
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    threshold = 2 * DEGENERATE_AREA * (float(np.sum((hi - lo) ** 2)) or 1.0)
    keep = face_volumes_and_areas(vertices, faces)[1] > threshold  # twice each face's area
    return compact(vertices, faces[keep])


def to_trimesh(mesh: Mesh):
    """The mesh as a `trimesh.Trimesh`, vertices and faces unchanged (no merging or repair)."""
    import trimesh

    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False, validate=False)


def mesh_report(mesh: Mesh) -> SurfaceCheck:
    """Check and measure a `Mesh` (`inspect_surface` on its vertices and faces).

    ``volume_ml`` is the signed enclosed volume in millilitres (positive when normals point
    outward); it is only meaningful when ``watertight`` is True.

    >>> import numpy as np
    >>> v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    >>> f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> r = mesh_report(Mesh("tet", "label", 1, (1, 0, 0), v, f))
    >>> r.watertight, round(r.volume_ml * 1000, 3)
    (True, 166.667)
    """
    return inspect_surface(mesh.vertices, mesh.faces)
