"""Tests for `viz3d export`: print-ready surfaces, formats read back, coordinates, budgets, overwrite rules.

Every format is read back with another library than the one that wrote it where one exists
(trimesh for STL, OBJ, PLY and GLB; VTK's XML reader for VTP) and compared with the surfaces
the export prepared: vertex positions, triangles, names and colours. The printability,
volume and thin-structure checks run on the real sample (41 TotalSegmentator labels + bone).
"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import viz3d
import viz3d.outputs.export
from viz3d.cli.main import main
from viz3d.outputs.export import export_settings, prepare_mesh
from viz3d.surfaces.meshing import Mesh
from viz3d.surfaces.quality import inspect_surface, make_printable
from viz3d.surfaces.simplify import decimate, largest_component

TABLE = "totalsegmentator"
FORMATS = ["stl", "obj", "ply", "vtp", "glb"]
SOME = [2, 3, 18, 101, 117]  # kidneys, small bowel (4 pieces), a rib in two pieces, costal cartilages (8 pieces)


# ------------------------------------------------------------------ helpers


def run_cli(capsys, *args):
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error(err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: "), lines
    assert "internal error" not in lines[0]
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def sample(sample_dir):
    """(CT path, label path, label Volume, meshes of all labels + bone, smoothed as export makes them)."""
    ct_path, label_path = sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz"
    ct, label = viz3d.load_ct(ct_path), viz3d.load_label(label_path)
    meshes = viz3d.build_meshes(ct, label, table=TABLE)
    return ct_path, label_path, label, meshes


def expected(meshes, values, **options):
    """What the export writes for these label values (and the bone when None is among them)."""
    settings = export_settings(**options)
    chosen = [m for m in meshes if (m.label in values if m.kind == "label" else None in values)]
    return [prepare_mesh(m, settings)[0] for m in chosen]


def export_cli(capsys, sample, out, *extra, labels=SOME, bone=False):
    ct_path, label_path, _, _ = sample
    args = ["export", ct_path, "--label", label_path, "--label-table", TABLE, "--out", out, "-q"]
    if labels is not None:
        args += ["--labels", ",".join(map(str, labels))]
    args += ["--no-bone"] if not bone else ["--bone"] if labels is not None else []  # a selection leaves bone out unless --bone
    status, _, err = run_cli(capsys, *args, *extra)
    assert status == 0, err
    return manifest_of(out), err


# ------------------------------------------------------------------ reading files back


def read_back(path: Path, fmt: str) -> dict:
    """part name -> (vertices, faces, RGB 0..255 or None) as another library reads the file."""
    import trimesh

    if fmt == "stl":
        tm = trimesh.load(str(path), file_type="stl", force="mesh", process=False)
        return {None: (np.asarray(tm.vertices), np.asarray(tm.faces), None)}
    if fmt == "ply":
        tm = trimesh.load(str(path), process=False)
        colors = np.asarray(tm.visual.vertex_colors)[:, :3]
        return {None: (np.asarray(tm.vertices), np.asarray(tm.faces), colors)}
    if fmt == "obj":
        scene = trimesh.load(str(path), process=False, split_object=True, group_material=False, force="scene")
        parts = {}
        for geometry in scene.geometry.values():  # trimesh renames the objects; each has its own material
            material = geometry.visual.material
            parts[material.name] = (np.asarray(geometry.vertices), np.asarray(geometry.faces),
                                    np.asarray(material.diffuse)[:3])
        return parts
    if fmt == "glb":
        scene = trimesh.load(str(path), force="scene")
        parts = {}
        for node in scene.graph.nodes_geometry:
            transform, name = scene.graph[node]
            geometry = scene.geometry[name]
            parts[node] = (np.asarray(geometry.vertices), np.asarray(geometry.faces),
                           np.asarray(geometry.visual.material.baseColorFactor)[:3], transform)
        return parts
    if fmt == "vtp":
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

        reader = vtkXMLPolyDataReader()
        reader.SetFileName(str(path))
        reader.Update()
        poly = reader.GetOutput()
        vertices = vtk_to_numpy(poly.GetPoints().GetData())
        faces = vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
        colors = vtk_to_numpy(poly.GetPointData().GetArray("RGB"))
        field = poly.GetFieldData()
        info = {name: [field.GetAbstractArray(name).GetValue(i) for i in range(field.GetAbstractArray(name).GetNumberOfValues())]
                for name in ("SPACE", "names", "parts", "units")}
        labels = vtk_to_numpy(poly.GetCellData().GetArray("label"))
        return {None: (vertices, faces, colors, info, labels)}
    raise AssertionError(fmt)


def rgb8(color) -> np.ndarray:
    return np.round(np.asarray(color) * 255).astype(int)


def assert_same_surface(vertices, faces, mesh: Mesh, fmt: str) -> None:
    """The file's triangles are the mesh's, in order, to the precision of the format."""
    atol = {"obj": 2e-5, "vtp": 1e-9}.get(fmt, 1e-4)  # OBJ: 5 decimals; STL, PLY, GLB: float32 (~1e-5 mm at 300 mm)
    assert len(faces) == mesh.n_triangles
    np.testing.assert_allclose(np.asarray(vertices, float)[np.asarray(faces)], mesh.vertices[mesh.faces], atol=atol, rtol=0)


# ------------------------------------------------------------------ every format, read back


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_back_per_structure(sample, tmp_path, capsys, fmt):
    manifest, _ = export_cli(capsys, sample, tmp_path / "out", "--format", fmt)
    assert manifest["format"] == fmt and manifest["coordinate_system"] == "RAS" and manifest["units"] == "mm"
    wanted = expected(sample[3], SOME)
    assert [e["label"] for e in manifest["meshes"]] == SOME
    listed = set()
    for entry, mesh in zip(manifest["meshes"], wanted):
        path = tmp_path / "out" / entry["file"]
        listed.add(entry["file"])
        assert entry["file"] == f"{mesh.label}_{mesh.name}.{fmt}"
        assert entry["triangles"] == mesh.n_triangles and entry["color"] == [round(c, 4) for c in mesh.color]
        parts = read_back(path, fmt)
        assert len(parts) == 1
        (part_name, data), = parts.items()
        vertices, faces = data[0], data[1]
        assert_same_surface(vertices, faces, mesh, fmt)
        if fmt == "stl":
            header = path.read_bytes()[:80].decode("ascii")
            assert "SPACE=RAS" in header and f"{mesh.label}_{mesh.name}" in header
        if fmt in ("ply", "vtp"):
            assert np.all(np.asarray(data[2]) == rgb8(mesh.color))  # every vertex in the class colour
        if fmt == "ply":
            assert b"comment SPACE=RAS" in path.read_bytes()[:400]
        if fmt == "obj":
            assert part_name == f"{mesh.label}_{mesh.name}"
            np.testing.assert_array_equal(data[2], rgb8(mesh.color))
            text = path.read_text()
            assert text.startswith("# SPACE=RAS") and f"\no {part_name}\n" in text
            assert f"mtllib {entry['material']}" in text
            listed.add(entry["material"])
        if fmt == "vtp":
            info, labels = data[3], data[4]
            assert info == {"SPACE": ["RAS"], "names": [mesh.name], "parts": [f"{mesh.label}_{mesh.name}"], "units": ["mm"]}
            assert np.all(labels == mesh.label)
        if fmt == "glb":
            assert part_name == f"{mesh.label}_{mesh.name}"
            np.testing.assert_array_equal(data[2], rgb8(mesh.color))
            transform = data[3]  # the root node: mm RAS -> glTF metres, superior up (+Y), anterior front (+Z)
            np.testing.assert_allclose(transform[:3, :3] @ [1, 0, 0], [-0.001, 0, 0], atol=1e-12)
            np.testing.assert_allclose(transform[:3, :3] @ [0, 0, 1], [0, 0.001, 0], atol=1e-12)
            np.testing.assert_allclose(transform[:3, :3] @ [0, 1, 0], [0, 0, 0.001], atol=1e-12)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(listed | {"manifest.json"})


@pytest.mark.parametrize("fmt", FORMATS)
def test_combined_scene_has_every_structure_as_a_named_part(sample, tmp_path, capsys, fmt):
    manifest, _ = export_cli(capsys, sample, tmp_path / "out", "--format", fmt, "--combine", bone=True)
    wanted = expected(sample[3], SOME + [None])
    files = {e["file"] for e in manifest["meshes"]}
    assert files == {f"scene.{fmt}"} and manifest["combined"] is True
    expected_names = [f"{m.label}_{m.name}" if m.kind == "label" else "bone" for m in wanted]
    assert [e["part"] for e in manifest["meshes"]] == expected_names
    parts = read_back(tmp_path / "out" / f"scene.{fmt}", fmt)
    ranges = [e["face_range"] for e in manifest["meshes"]]
    assert ranges[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    if fmt in ("stl", "ply", "vtp"):  # one merged surface; the manifest's face ranges say which part is which
        (vertices, faces, colors, *rest), = parts.values()
        assert len(faces) == sum(m.n_triangles for m in wanted) == ranges[-1][1]
        triangles = np.asarray(vertices, float)[faces]
        for mesh, (start, stop) in zip(wanted, ranges):
            np.testing.assert_allclose(triangles[start:stop], mesh.vertices[mesh.faces], atol=1e-4, rtol=0)
            if colors is not None:
                assert np.all(np.asarray(colors)[faces[start:stop]] == rgb8(mesh.color))
        if fmt == "vtp":
            info, labels = rest
            assert info["names"] == [m.name for m in wanted] and info["parts"] == expected_names
            for mesh, (start, stop) in zip(wanted, ranges):
                assert np.all(labels[start:stop] == (mesh.label if mesh.label is not None else -1))
    else:
        assert sorted(parts) == sorted(expected_names)
        for mesh, name in zip(wanted, expected_names):
            vertices, faces, color = parts[name][:3]
            assert_same_surface(vertices, faces, mesh, fmt)
            np.testing.assert_array_equal(color, rgb8(mesh.color))
    if fmt == "obj":
        assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "scene.mtl", "scene.obj"]


def test_merged_stl_is_one_printable_file(sample, tmp_path, capsys):
    import trimesh

    manifest, _ = export_cli(capsys, sample, tmp_path / "out", "--combine", labels=[30, 31, 32])
    stl = trimesh.load(str(tmp_path / "out" / "scene.stl"), file_type="stl", force="mesh")  # merges vertices
    assert stl.is_watertight and stl.is_winding_consistent and stl.volume > 0
    assert stl.body_count == 3  # L2, L1, T12 as separate shells
    assert stl.volume / 1000 == pytest.approx(sum(e["volume_ml"] for e in manifest["meshes"]), rel=1e-4)


# ------------------------------------------------------------------ coordinates


@pytest.mark.parametrize("fmt", ["stl", "vtp", "glb"])
def test_lps_is_ras_with_x_and_y_negated(sample, tmp_path, capsys, fmt):
    ras, _ = export_cli(capsys, sample, tmp_path / "ras", "--format", fmt, labels=[2, 101])
    lps, _ = export_cli(capsys, sample, tmp_path / "lps", "--format", fmt, "--coords", "lps", labels=[2, 101])
    assert ras["coordinate_system"] == "RAS" and lps["coordinate_system"] == "LPS"
    for a, b in zip(ras["meshes"], lps["meshes"]):
        assert a["file"] == b["file"]
        (va, fa, *ra), = read_back(tmp_path / "ras" / a["file"], fmt).values()
        (vb, fb, *rb), = read_back(tmp_path / "lps" / b["file"], fmt).values()
        np.testing.assert_array_equal(fa, fb)  # same triangles, same winding: the flip is a rotation
        np.testing.assert_allclose(vb, va * [-1, -1, 1], atol=1e-9)
        assert b["volume_ml"] == a["volume_ml"] > 0 and b["watertight"] and b["manifold"]
        (lo_a, hi_a), (lo_b, hi_b) = a["bounds"], b["bounds"]
        assert lo_b == pytest.approx([-hi_a[0], -hi_a[1], lo_a[2]]) and hi_b == pytest.approx([-lo_a[0], -lo_a[1], hi_a[2]])
        np.testing.assert_allclose(np.asarray(vb, float).min(axis=0), lo_b, atol=2e-3)
        if fmt == "stl":
            assert b"SPACE=LPS" in (tmp_path / "lps" / b["file"]).read_bytes()[:80]
        if fmt == "vtp":
            assert rb[1]["SPACE"] == ["LPS"]
        if fmt == "glb":  # the root node still puts the patient upright: L is +X, A is -Y -> +Z
            transform = rb[1]
            np.testing.assert_allclose(transform[:3, :3] @ [1, 0, 0], [0.001, 0, 0], atol=1e-12)
            np.testing.assert_allclose(transform[:3, :3] @ [0, -1, 0], [0, 0, 0.001], atol=1e-12)


# ------------------------------------------------------------------ printability, volumes, thin structures


def test_every_structure_of_the_real_sample_is_printable(sample, tmp_path, capsys):
    """All 41 labels and the bone: closed, 2-manifold, outward, no degenerate faces, as the manifest says
    and as trimesh finds independently in the written STL files."""
    import trimesh

    manifest, err = export_cli(capsys, sample, tmp_path / "out", labels=None, bone=True)
    assert "NOT printable" not in err
    values = np.unique(sample[2].array)
    assert len(manifest["meshes"]) == len(values) - 1 + 1 == 42
    assert manifest["printable"] is True
    for entry in manifest["meshes"]:
        assert entry["printable"] and entry["watertight"] and entry["manifold"] and entry["winding_consistent"], entry
        assert entry["degenerate_faces"] == 0 and entry["problems"] == [] and entry["volume_ml"] > 0
        stl = trimesh.load(str(tmp_path / "out" / entry["file"]), file_type="stl", force="mesh")
        assert stl.is_watertight and stl.is_winding_consistent and stl.is_volume, entry["name"]
        assert len(stl.faces) == entry["triangles"]
        assert stl.volume / 1000 == pytest.approx(entry["volume_ml"], rel=1e-4, abs=6e-5)  # manifest: 4 decimals
        assert np.all(trimesh.triangles.area(stl.triangles) > 0)
        assert stl.body_count == entry["components"]
        np.testing.assert_allclose(stl.bounds, entry["bounds"], atol=2e-3)


@pytest.mark.parametrize("extra", [[], ["--decimate", "0.5"], ["--max-triangles", "1500"]], ids=["full", "half", "1500"])
def test_volumes_agree_with_voxel_counts(sample, tmp_path, capsys, extra):
    """Every structure of 1000 voxels or more: within 5 % of voxels x voxel volume, smoothing on."""
    manifest, _ = export_cli(capsys, sample, tmp_path / "out", *extra, labels=None)
    label = sample[2]
    counts = np.bincount(label.array.ravel())
    big = [e for e in manifest["meshes"] if counts[e["label"]] >= 1000]
    assert len(big) >= 15
    for entry in big:
        voxel_ml = counts[entry["label"]] * label.voxel_volume_mm3 / 1000
        assert entry["volume_ml"] == pytest.approx(voxel_ml, rel=0.05), entry["name"]
        assert entry["printable"], entry
        if extra:
            assert entry["triangles"] <= (1500 if "1500" in extra else entry["decimated_from"] // 2 + 1)


def _rib_values(label) -> list[int]:
    names = json.loads((Path(__file__).resolve().parents[2] / "shared/data/label_tables/totalsegmentator_total.json").read_text())
    present = set(np.unique(label.array).tolist())
    return sorted(int(v) for v, n in names.items() if n.startswith("rib_") and int(v) in present)


@pytest.mark.parametrize("extra", [["--decimate", "0.5"], ["--decimate", "0.25"], ["--max-triangles", "200"]],
                         ids=["half", "quarter", "200"])
def test_thin_ribs_keep_their_pieces_and_volume(sample, tmp_path, capsys, extra):
    """The real sample's 12 ribs: as many surface pieces as the voxels have (6-connected), before and
    after smoothing and decimation, and the decimated volume within 5 % of the full one."""
    label = sample[2]
    ribs = _rib_values(label)
    assert len(ribs) == 12
    full, _ = export_cli(capsys, sample, tmp_path / "full", labels=ribs)
    raw, _ = export_cli(capsys, sample, tmp_path / "raw", "--no-smooth", labels=ribs)
    reduced, _ = export_cli(capsys, sample, tmp_path / "reduced", *extra, labels=ribs)
    for a, r, d in zip(full["meshes"], raw["meshes"], reduced["meshes"]):
        voxel_pieces = ndimage.label(label.array == a["label"])[1]
        assert a["components"] == r["components"] == d["components"] == voxel_pieces, a["name"]
        assert d["triangles"] < a["triangles"]
        assert d["volume_ml"] == pytest.approx(a["volume_ml"], rel=0.05), a["name"]
        voxel_ml = np.count_nonzero(label.array == a["label"]) * label.voxel_volume_mm3 / 1000
        assert a["volume_ml"] == pytest.approx(voxel_ml, rel=0.05), a["name"]  # smoothing does not thin them
        assert d["printable"] and a["printable"]


# ------------------------------------------------------------------ triangle budgets


def test_budget_and_ratio(sample):
    meshes = {m.name: m for m in sample[3]}
    liver = meshes["liver"]
    by_budget, notes = decimate(liver, max_triangles=3000)
    assert by_budget.n_triangles <= 3000 and notes["decimated_from"] == liver.n_triangles
    by_ratio, _ = decimate(liver, ratio=0.25)
    assert abs(by_ratio.n_triangles - liver.n_triangles / 4) <= 4
    both, _ = decimate(liver, max_triangles=100_000, ratio=0.1)
    assert both.n_triangles <= liver.n_triangles * 0.1 + 2
    same, notes = decimate(liver, max_triangles=10 ** 9)
    assert same is liver and notes == {}
    check = inspect_surface(by_budget.vertices, by_budget.faces)
    assert check.printable
    # smoothing after decimation: the surface is not the faceted raw decimation
    raw, _ = decimate(liver, max_triangles=3000, smooth=False)
    assert raw.n_triangles == by_budget.n_triangles
    assert np.abs(raw.vertices - by_budget.vertices).max() > 0.1


def test_budget_on_the_command_line(sample, tmp_path, capsys):
    """The budget is a hard limit. The labels stay printable at 400 triangles; the whole bone (11 pieces,
    many holes) cannot keep its topology in 400: it is written within budget and reported, not hidden."""
    manifest, err = export_cli(capsys, sample, tmp_path / "out", "--max-triangles", "400", "--format", "glb", bone=True)
    for entry in manifest["meshes"]:
        assert entry["triangles"] <= 400, entry
        if entry["kind"] == "label":
            assert entry["printable"], entry
        if not entry["printable"]:
            assert entry["problems"] and f"{entry['name']} ({entry['file']}) is NOT printable" in err
    assert manifest["settings"]["max_triangles"] == 400
    assert manifest["printable"] == all(e["printable"] for e in manifest["meshes"])
    manifest, err = export_cli(capsys, sample, tmp_path / "bone", "--max-triangles", "1000", "--bone-only",
                               labels=None, bone=True)
    (bone,) = manifest["meshes"]
    assert bone["triangles"] <= 1000 and bone["printable"] and bone["components"] == 11


# ------------------------------------------------------------------ selection


def test_bone_only_and_largest_component(sample, tmp_path, capsys):
    ct_path = sample[0]
    status, _, err = run_cli(capsys, "export", ct_path, "--label", sample[1], "--bone-only", "--out", tmp_path / "a", "-q")
    assert status == 0, err
    bone = manifest_of(tmp_path / "a")["meshes"]
    assert [e["file"] for e in bone] == ["bone.stl"] and bone[0]["components"] > 1
    status, _, err = run_cli(capsys, "export", ct_path, "--bone-only", "--largest-component", "--out", tmp_path / "b", "-q")
    assert status == 0, err
    (largest,) = manifest_of(tmp_path / "b")["meshes"]
    assert largest["components"] == 1 and largest["printable"]
    assert 0.5 * bone[0]["volume_ml"] < largest["volume_ml"] < bone[0]["volume_ml"]


def test_largest_component_keeps_cavities(tmp_path):
    """A hollow ball with a speck beside it: the speck goes, the ball keeps its inner wall."""
    from viz3d.io.volume import Volume

    grid = np.indices((40, 40, 40)).transpose(1, 2, 3, 0) - 20
    radius = np.linalg.norm(grid, axis=-1)
    array = ((radius < 14) & (radius > 7)).astype(np.uint8)
    array[2:4, 2:4, 2:4] = 1
    (mesh,) = viz3d.label_meshes(Volume(array, np.eye(4)), smooth=False)
    assert inspect_surface(mesh.vertices, mesh.faces).components == 3
    kept = largest_component(mesh)
    check = inspect_surface(kept.vertices, kept.faces)
    assert check.components == 2 and check.printable  # outer and inner wall; the inner one faces the cavity
    assert check.volume_mm3 == pytest.approx(np.count_nonzero((radius < 14) & (radius > 7)), rel=0.05)


def test_labels_selection_warns_about_absent_values(sample, tmp_path, capsys):
    manifest, err = export_cli(capsys, sample, tmp_path / "out", labels=[2, 55])
    assert [e["label"] for e in manifest["meshes"]] == [2]
    assert "viz3d: warning: label value(s) 55 not in" in err


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--bone-only", "--no-bone"], ["--bone-only", "--no-bone"]),
        (["--bone-only", "--labels", "2"], ["--bone-only", "--labels"]),
        (["--format", "3mf"], ["--format", "3mf"]),
        (["--coords", "xyz"], ["--coords", "xyz"]),
        (["--decimate", "0"], ["--decimate", "0"]),
        (["--decimate", "1.5"], ["--decimate", "1.5"]),
        (["--decimate", "half"], ["--decimate", "half"]),
        (["--max-triangles", "2"], ["--max-triangles", "4"]),
        (["--max-triangles", "many"], ["--max-triangles", "many"]),
    ],
)
def test_bad_export_options(sample, tmp_path, capsys, extra, fragments):
    status, out, err = run_cli(capsys, "export", sample[0], "--label", sample[1], "--out", tmp_path / "out", *extra)
    assert status == 2
    one_error(err, *fragments)
    assert os.listdir(tmp_path) == []


def test_bone_only_needs_a_ct(sample, tmp_path, capsys):
    status, _, err = run_cli(capsys, "export", "--label", sample[1], "--bone-only", "--out", tmp_path / "out")
    assert status == 2
    one_error(err, "--bone-only", "CT")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ overwriting


def test_identical_re_export_changes_nothing(sample, tmp_path, capsys):
    out = tmp_path / "out"
    export_cli(capsys, sample, out, "--format", "glb")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    time.sleep(0.01)
    export_cli(capsys, sample, out, "--format", "glb")
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_different_export_is_refused_without_force(sample, tmp_path, capsys):
    out = tmp_path / "out"
    export_cli(capsys, sample, out, labels=[2, 3])
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    ct_path, label_path = sample[0], sample[1]
    base = ["export", ct_path, "--label", label_path, "--label-table", TABLE, "--no-bone", "--out", out]
    # other settings: refused before any meshing
    status, _, err = run_cli(capsys, *base, "--labels", "2,3", "--format", "obj")
    assert status == 2
    one_error(err, str(out), "--force")
    # same settings, other input (the smoothing differs only in the files): refused after writing them aside
    status, _, err = run_cli(capsys, *base, "--labels", "2,3", "--decimate", "1")
    assert status == 2
    one_error(err, str(out), "--force")
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]
    # --force replaces it: the old export's files go, unrelated files stay
    status, _, err = run_cli(capsys, *base, "--labels", "3,18", "--format", "ply", "--force", "-q")
    assert status == 0, err
    assert sorted(os.listdir(out)) == ["18_small_bowel.ply", "3_kidney_left.ply", "manifest.json", "notes.txt"]
    assert manifest_of(out)["format"] == "ply"


def test_different_files_without_a_manifest_are_not_overwritten(sample, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "2_kidney_right.stl").write_bytes(b"somebody else's print")
    before = snapshot(out)
    ct_path, label_path = sample[0], sample[1]
    status, _, err = run_cli(capsys, "export", ct_path, "--label", label_path, "--label-table", TABLE, "--labels", "2",
                             "--no-bone", "--out", out)
    assert status == 2
    one_error(err, "2_kidney_right.stl", "--force")
    assert snapshot(out) == before


def test_failed_combined_write_leaves_the_folder_as_it_was(sample, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    export_cli(capsys, sample, out)
    before = snapshot(out)

    def full_disk(meshes, path):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(viz3d.outputs.export._WRITERS_COMBINED, "glb", full_disk)
    ct_path, label_path = sample[0], sample[1]
    status, _, err = run_cli(capsys, "export", ct_path, "--label", label_path, "--label-table", TABLE, "--out", out,
                             "--format", "glb", "--combine", "--force")
    assert status == 2
    one_error(err, "No space left")
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["out"]


# ------------------------------------------------------------------ checks and repairs


def _cube(offset=(0.0, 0.0, 0.0), size=10.0):
    vertices = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * size + offset
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return vertices, faces


def _mesh(vertices, faces):
    return Mesh("cube", "label", 1, (1.0, 0.0, 0.0), np.asarray(vertices, float), np.asarray(faces, np.int64))


def test_check_of_a_good_cube():
    check = inspect_surface(*_cube())
    assert check.printable and check.manifold and check.components == 1
    assert check.volume_mm3 == pytest.approx(1000) and check.area_mm2 == pytest.approx(600)


def test_check_counts_pieces_with_unused_and_pinched_vertices():
    vertices, faces = _cube()
    vertices = np.asarray(vertices, float)
    two = np.vstack([vertices, vertices + 20, [[99.0, 99.0, 99.0]]])  # and one vertex no face uses
    check = inspect_surface(two, np.vstack([faces, faces + 8]))
    assert check.components == 2 and check.vertices == 16 and check.printable
    assert check.volume_mm3 == pytest.approx(2000)
    touching = np.vstack([vertices, vertices + 10])  # the second cube's corner 0 is the first's corner 7
    shared = np.where(faces + 8 == 8, 7, faces + 8)
    pinched = inspect_surface(touching, np.vstack([faces, shared]))
    assert pinched.nonmanifold_vertices == 1 and pinched.components == 2 and not pinched.printable


def test_check_counts_each_pinched_vertex_once():
    """Four cubes touching corner to corner in a chain: three pinched vertices, four pieces."""
    vertices, faces = _cube()
    v = np.vstack([vertices + 10 * k for k in range(4)])  # corner 7 of cube k is corner 0 of cube k + 1
    f = np.vstack([faces + 8 * k for k in range(4)])
    _, first, inverse = np.unique(v, axis=0, return_index=True, return_inverse=True)
    f = first[inverse.ravel()][f]  # the touching corners become one vertex each
    check = inspect_surface(v, f)
    assert check.nonmanifold_vertices == 3 and check.components == 4 and check.vertices == 29
    assert check.watertight and check.winding_consistent and not check.manifold
    assert check.volume_mm3 == pytest.approx(4000)


def test_stl_records_hold_outward_unit_normals_and_the_space(tmp_path):
    """Binary STL layout read back with plain numpy: header, count, 50-byte facets, normals."""
    vertices, faces = _cube()
    faces = np.vstack([faces, [[0, 0, 1]]])  # one degenerate facet: its normal must be zero, not NaN
    path = viz3d.outputs.export.write_stl(_mesh(vertices, faces), tmp_path / "cube.stl")
    raw = path.read_bytes()
    assert len(raw) == 84 + 50 * len(faces)
    assert raw[:80].startswith(b"viz3d SPACE=RAS units=mm") and not raw[:5].lower() == b"solid"
    assert int(np.frombuffer(raw[80:84], "<u4")[0]) == len(faces)
    records = np.frombuffer(raw[84:], viz3d.outputs.export.STL_RECORD)
    np.testing.assert_allclose(records["corners"], np.asarray(vertices, np.float32)[faces])
    normals = records["normal"][:-1]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, rtol=1e-6)
    centres = records["corners"][:-1].mean(axis=1) - np.mean(vertices, axis=0)
    assert np.all(np.einsum("ij,ij->i", normals, centres) > 0)  # every facet faces away from the centre
    assert np.all(records["normal"][-1] == 0) and np.all(records["attribute"] == 0)


def test_repair_unmerged_vertices():
    vertices, faces = _cube()
    soup = vertices[faces].reshape(-1, 3)  # every triangle with its own three vertices: open everywhere
    mesh = _mesh(soup, np.arange(len(soup)).reshape(-1, 3))
    assert not inspect_surface(mesh.vertices, mesh.faces).watertight
    fixed, check, repairs = make_printable(mesh)
    assert check.printable and len(fixed.vertices) == 8 and repairs


def test_repair_degenerate_faces():
    vertices, faces = _cube()
    vertices = np.vstack([vertices, vertices[[1]]])  # a copy of vertex 1
    faces = np.vstack([faces[:-1], [[1, 7, 8]], [[8, 7, 3]], [[1, 8, 3]]])  # a zero-area sliver joins the copy
    check = inspect_surface(vertices, faces)
    assert check.degenerate_faces >= 1 and not check.printable
    _, check, repairs = make_printable(_mesh(vertices, faces))
    assert check.printable and check.degenerate_faces == 0 and any("degenerate" in r for r in repairs)


def test_repair_inconsistent_winding_and_inside_out():
    vertices, faces = _cube()
    flipped_one = faces.copy()
    flipped_one[3] = flipped_one[3, ::-1]
    _, check, repairs = make_printable(_mesh(vertices, flipped_one))
    assert check.printable and check.volume_mm3 == pytest.approx(1000) and repairs
    _, check, repairs = make_printable(_mesh(vertices, faces[:, ::-1]))
    assert check.printable and check.volume_mm3 == pytest.approx(1000) and repairs


def test_check_counts_pieces_as_trimesh_does_with_vertices_shuffled_and_unused():
    """Pieces of a closed surface (blobs of different sizes, one with a cavity), with the vertex
    numbering shuffled and unused vertices mixed in, against trimesh's face-adjacency split."""
    import trimesh

    from viz3d.io.volume import Volume

    grid = np.indices((44, 40, 36)).transpose(1, 2, 3, 0)
    array = np.zeros((44, 40, 36), np.uint8)
    for centre, radius in (((12, 12, 12), 8), ((30, 26, 20), 6), ((10, 30, 26), 3)):
        array[np.linalg.norm(grid - centre, axis=-1) < radius] = 1
    array[np.linalg.norm(grid - (12, 12, 12), axis=-1) < 3] = 0  # a cavity: a fourth, inward piece
    (mesh,) = viz3d.label_meshes(Volume(array, np.eye(4)), smooth=False)
    rng = np.random.default_rng(5)
    n = len(mesh.vertices)
    spare = 50
    new_number = rng.permutation(n + spare)[:n]  # 50 numbers no face uses, spread out
    vertices = np.zeros((n + spare, 3))
    vertices[new_number] = mesh.vertices
    vertices[np.setdiff1d(np.arange(n + spare), new_number)] = rng.uniform(0, 40, (spare, 3))
    faces = new_number[mesh.faces]
    check = inspect_surface(vertices, faces)
    expected = len(trimesh.Trimesh(vertices, faces, process=False).split(only_watertight=False))
    assert check.manifold and check.printable and check.vertices == n
    assert check.components == expected == 4


def test_repair_cubes_touching_along_an_edge():
    a_vertices, a_faces = _cube()
    b_vertices, b_faces = _cube(offset=(10.0, 10.0, 0.0))
    # share the edge x=10, y=10: merge those two vertices of the second cube into the first's
    vertices = np.vstack([a_vertices, b_vertices])
    faces = np.vstack([a_faces, b_faces + 8])
    vertices, inverse = np.unique(vertices, axis=0, return_inverse=True)
    faces = inverse.ravel()[faces]
    check = inspect_surface(vertices, faces)
    assert check.nonmanifold_edges == 1 and not check.printable
    _, check, repairs = make_printable(_mesh(vertices, faces))
    assert check.printable and check.components == 2 and check.volume_mm3 == pytest.approx(2000)


def test_unrepairable_surface_is_reported_not_hidden(tmp_path):
    vertices, faces = _cube()
    open_box = _mesh(vertices, faces[:-2])  # the lid is missing: a hole no merge can close
    manifest = viz3d.export_meshes([open_box], tmp_path / "out")
    (entry,) = manifest["meshes"]
    assert entry["printable"] is False and entry["watertight"] is False and manifest["printable"] is False
    assert any("open" in p for p in entry["problems"])
    assert (tmp_path / "out" / entry["file"]).exists()


def test_unprintable_surface_warns_on_the_command_line(sample, tmp_path, capsys, monkeypatch):
    import viz3d.api

    real = viz3d.api._build_meshes

    def with_a_hole(*args, **kwargs):
        meshes = real(*args, **kwargs)
        meshes[0].faces = meshes[0].faces[:-5]
        return meshes

    monkeypatch.setattr(viz3d.api, "_build_meshes", with_a_hole)
    status, _, err = run_cli(capsys, "export", "--label", sample[1], "--labels", "2,3", "--label-table", TABLE,
                             "--out", tmp_path / "out")
    assert status == 0
    warnings = [line for line in err.splitlines() if "NOT printable" in line]
    assert len(warnings) == 1 and "kidney_right" in warnings[0] and "open" in warnings[0]
    assert manifest_of(tmp_path / "out")["meshes"][0]["printable"] is False


# ------------------------------------------------------------------ info


def test_info_shows_bounding_boxes(sample_dir, capsys):
    label_path = sample_dir / "label.nii.gz"
    img = nib.load(str(label_path))
    label = np.asanyarray(img.dataobj)
    status, out, err = run_cli(capsys, "info", "--label", label_path, "--label-table", TABLE)
    assert status == 0, err
    assert "bounding box RAS mm" in out
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[0].isdigit() and ".." in parts[4]:  # then the colour
            rows[int(parts[0])] = [tuple(float(x) for x in part.split("..")) for part in parts[4:7]]
    assert sorted(rows) == sorted(set(np.unique(label).tolist()) - {0})
    for value in (2, 5, 101):
        ijk = np.argwhere(label == value)
        corners = np.array([[i, j, k] for i in (ijk[:, 0].min() - 0.5, ijk[:, 0].max() + 0.5)
                            for j in (ijk[:, 1].min() - 0.5, ijk[:, 1].max() + 0.5)
                            for k in (ijk[:, 2].min() - 0.5, ijk[:, 2].max() + 0.5)])
        world = nib.affines.apply_affine(img.affine, corners)
        for axis in range(3):
            assert rows[value][axis] == pytest.approx((world[:, axis].min(), world[:, axis].max()), abs=0.051)
    stats = viz3d.label_statistics(viz3d.load_label(label_path), TABLE)
    assert all(len(row["bbox_mm"]) == 2 for row in stats)


def test_surface_lies_inside_the_info_bounding_box(sample, tmp_path, capsys):
    manifest, _ = export_cli(capsys, sample, tmp_path / "out", "--no-smooth", labels=None)
    boxes = {row["value"]: row["bbox_mm"] for row in viz3d.label_statistics(sample[2], TABLE)}
    for entry in manifest["meshes"]:
        (lo, hi), (blo, bhi) = entry["bounds"], boxes[entry["label"]]
        assert np.all(np.asarray(lo) >= np.asarray(blo) - 1e-6) and np.all(np.asarray(hi) <= np.asarray(bhi) + 1e-6)


# ------------------------------------------------------------------ speed (clinical size)


BENCH = Path(__file__).resolve().parents[1] / "bench-cases" / "z6"


@pytest.mark.slow
@pytest.mark.skipif(not (BENCH / "label.nii.gz").exists(), reason="bench-cases/z6 not built")
def test_every_surface_of_a_clinical_size_case_is_printable():
    """At clinical size every label's surface is closed, manifold and outward as meshed (how long
    the checks take is the benchmark's business: scripts/bench.py reports it)."""
    label = viz3d.load_label(BENCH / "label.nii.gz")
    meshes = viz3d.build_meshes(None, label, table=TABLE)
    checks = [inspect_surface(m.vertices, m.faces) for m in meshes]
    assert len(checks) == 41 and all(c.printable for c in checks)


# ------------------------------------------------------------------ issue 19: the output path, a full disk


@pytest.mark.parametrize("where", ["empty", "a file"])
def test_an_empty_output_path_or_a_file_is_refused_before_meshing(sample, tmp_path, capsys, monkeypatch, where):
    """`--out ''` wrote the export's files into the current folder with exit 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    monkeypatch.setattr(viz3d.outputs.export, "_write_staged", lambda *a, **k: pytest.fail("the export was written"))
    out = "" if where == "empty" else str(tmp_path / "notes.txt")
    ct_path, label_path = sample[0], sample[1]
    status, _, err = run_cli(capsys, "export", ct_path, "--label", label_path, "--label-table", TABLE, "--labels", "2",
                             "--no-bone", "--out", out)
    assert status == 2
    one_error(err, "--out is empty" if where == "empty" else f"{out}: exists and is not a folder")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("root", ["/", "//", "/tmp/.."])
def test_the_root_folder_is_refused_as_an_output_folder(sample, monkeypatch, root):
    monkeypatch.setattr(viz3d.outputs.export, "_write_staged", lambda *a, **k: pytest.fail("the export was written"))
    with pytest.raises(viz3d.Viz3dError, match="is the root folder; give the export a folder of its own"):
        viz3d.export_meshes(sample[3][:1], root)


def _full_disk_temporaries(monkeypatch):
    """Every file written through `atomic_path` goes to /dev/full (each write: ENOSPC)."""
    import viz3d.outputs.atomic

    def to_dev_full(folder, name, suffix):
        tmp = Path(folder) / f".{name}.tmp-full{suffix}"
        tmp.symlink_to("/dev/full")
        return tmp

    monkeypatch.setattr(viz3d.outputs.atomic, "_create_temporary", to_dev_full)


@pytest.mark.parametrize("fmt", ["stl", "obj", "glb", "ply", "vtp"])
def test_a_full_disk_says_no_space_left_naming_the_output_folder(sample, tmp_path, capsys, monkeypatch, fmt):
    """A full disk said "1984 requested and 0 written" about the staging folder (numpy's tofile)."""
    out = tmp_path / "out"
    export_cli(capsys, sample, out)
    before = snapshot(out)
    _full_disk_temporaries(monkeypatch)
    ct_path, label_path = sample[0], sample[1]
    status, _, err = run_cli(capsys, "export", ct_path, "--label", label_path, "--label-table", TABLE, "--labels", "2,3",
                             "--no-bone", "--out", out, "--format", fmt, "--force")
    assert status == 2
    one_error(err, f"{out}: no space left on device")
    assert ".tmp-" not in err and "requested" not in err
    assert snapshot(out) == before and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_full_disk_while_the_manifest_is_written_says_so(sample, tmp_path, monkeypatch):
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name == "manifest.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(viz3d.Viz3dError) as caught:
        viz3d.export_meshes(sample[3][:2], tmp_path / "out")
    assert str(caught.value).startswith(f"{tmp_path / 'out'}: no space left on device") and ".tmp-" not in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_surfaces_decimated_side_by_side_keep_their_own_geometry(sample):
    """fast-simplification holds its mesh in global variables between calls: with threads switching
    often, a surface prepared beside another came back with the other's geometry."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    meshes = [m for m in sample[3] if m.label in (2, 3)]  # the two kidneys
    settings = export_settings(decimate=0.5)
    alone = [prepare_mesh(m, settings)[0] for m in meshes]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows at once
    try:
        for _ in range(20):
            with ThreadPoolExecutor(2) as pool:
                together = list(pool.map(lambda m: prepare_mesh(m, settings)[0], meshes))
            for a, b in zip(alone, together):
                assert len(a.faces) == len(b.faces) and np.array_equal(a.vertices, b.vertices), a.name
    finally:
        sys.setswitchinterval(interval)
