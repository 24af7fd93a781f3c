"""Pictures a radiologist would show (issue #15): what is asked for is framed, named, told apart and never hidden.

Checked by picture content, off screen at small sizes: the camera frames the drawn surfaces (not
the CT box), CT planes never cover them, the legend never lies over them and names every one, close
table colours are made distinct with one warning, and `--slices` / `--colors` on the command line.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from shapes import uv_sphere

from viz3d.outputs.render import render_image
from viz3d.runtime import configure_offscreen

configure_offscreen()  # before anything here creates a VTK window

from viz3d.errors import Viz3dError, Viz3dWarning  # noqa: E402
from viz3d.scene.scene import BACKGROUND, VIEWS, build_scene  # noqa: E402
from viz3d.io.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (320, 240)
RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


# --------------------------------------------------------------------------- helpers
def big_ct(shape=(80, 80, 60)):
    """A 240 x 240 x 180 mm CT of soft tissue (40 HU) in air, centred on the origin."""
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) * 1.5
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    array = np.full(shape, -1000, np.int16)
    array[np.linalg.norm(world[..., :2], axis=-1) < 110] = 40
    return Volume(array, affine, source="/data/case_0042/ct.nii.gz")


def drawn(image):
    """Pixels that are not the background."""
    return np.abs(image.astype(int) - np.round(np.array(BACKGROUND) * 255)).max(axis=-1) > 6


def without_marker(scene, image):
    """``image`` with the orientation marker's corner painted as background."""
    image = image.copy()
    h, w = image.shape[:2]
    x0, y0, x1, y1 = scene.orientation_viewport
    image[int((1 - y1) * h):int(np.ceil((1 - y0) * h)), int(x0 * w):int(np.ceil(x1 * w))] = np.round(np.array(BACKGROUND) * 255)
    return image


def box_of(mask):
    rows, cols = np.nonzero(mask)
    assert len(rows) > 30, "nothing drawn"
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def free_width(scene, width):
    return scene._free_area()[1] * width


def surfaces_only(scene, size=SIZE):
    """The picture of the surfaces alone (planes and legend hidden, the same camera)."""
    slices = scene.is_visible("slices")
    legend = scene.legend is not None and scene.legend.GetVisibility()
    scene.set_visible("slices", False)
    if legend:
        scene.legend.SetVisibility(False)
    try:
        return render_image(scene, size=size)
    finally:
        scene.set_visible("slices", slices)
        if legend:
            scene.legend.SetVisibility(True)


def unchanged(a, b, mask):
    """Share of ``mask``'s pixels that are the same colour in ``a`` and ``b``."""
    same = np.abs(a.astype(int) - b.astype(int)).max(axis=-1) <= 12
    return same[mask].mean()



@pytest.fixture(scope="module")
def sample_meshes(sample_dir):
    """The real sample's CT and its 41 label surfaces (no bone), TotalSegmentator names."""
    from viz3d.api import load_and_mesh

    return load_and_mesh(sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz", table="totalsegmentator", bone=False)


# --------------------------------------------------------------------------- planes never hide
def test_selected_vertebrae_are_not_hidden_by_the_ct_planes(sample_meshes, scenes):
    """The user's picture: T11-L2 from the front with the bone window. The coronal plane went
    through the CT's centre, in front of the spine; now it lies behind the vertebrae."""
    ct, meshes = sample_meshes
    vertebrae = [m for m in meshes if m.label in (30, 31, 32, 33)]
    assert len(vertebrae) == 4
    scene = build_scene(vertebrae, ct, window=(400, 1800), view="anterior", off_screen=True, interactive=False, size=SIZE)
    scenes.append(scene)
    image = without_marker(scene, render_image(scene, size=SIZE))
    alone = without_marker(scene, surfaces_only(scene))
    spine = drawn(alone)
    r0, r1, c0, c1 = scene.legend_box(SIZE)
    spine[r0:r1, c0:c1] = False
    assert spine.mean() > 0.15  # the vertebrae fill a good share of the picture
    assert unchanged(image, alone, spine) > 0.97  # and every pixel of them is still theirs with the planes
    plane = drawn(image) & ~spine
    plane[r0:r1, c0:c1] = False
    assert plane.sum() > 0.05 * plane.size  # the planes are there, behind
    # the coronal plane at the vertebrae's posterior edge; the other two seen edge-on through them
    assert scene.slice_positions["coronal"] < scene.focus_bounds[2]
    lo, hi = scene.focus_bounds[4:6]
    assert lo <= scene.slice_positions["axial"] <= hi


@pytest.mark.parametrize("view", VIEWS)
def test_no_view_has_a_plane_in_front_of_the_surfaces(view, scenes):
    # on both sides of the CT's centre along every axis: a plane through the centre hides one from any side
    meshes = [uv_sphere("red", (30, 40, -20), 18, RED, "label", 24), uv_sphere("blue", (-20, -30, 30), 14, BLUE, "label", 24)]
    scene = build_scene(meshes, big_ct(), view=view, off_screen=True, interactive=False, size=SIZE)
    scenes.append(scene)
    image = without_marker(scene, render_image(scene, size=SIZE))
    alone = without_marker(scene, surfaces_only(scene))
    mask = drawn(alone)
    r0, r1, c0, c1 = scene.legend_box(SIZE)
    mask[r0:r1, c0:c1] = False
    assert mask.sum() > 300
    assert unchanged(image, alone, mask) > 0.98, view
    if view == "iso":  # seen at an angle, all three planes show, as a backdrop
        assert (drawn(image) & ~mask).sum() > 0.1 * mask.size


# --------------------------------------------------------------------------- framing
@pytest.mark.parametrize("view", ["anterior", "posterior", "left", "superior", "iso"])
def test_camera_frames_the_drawn_surfaces_not_the_ct_box(view, scenes):
    """A 30 mm structure in a 240 mm CT fills the picture's free area, not a tenth of it."""
    meshes = [uv_sphere("small", (50, 30, -40), 15, RED, "label", 24)]
    scene = build_scene(meshes, big_ct(), view=view, off_screen=True, interactive=False, size=SIZE, show_slices=False)
    scenes.append(scene)
    image = without_marker(scene, surfaces_only(scene))  # the legend hidden, the camera where it was
    r0, r1, c0, c1 = box_of(drawn(image))
    fill_w, fill_h = (c1 - c0) / free_width(scene, SIZE[0]), (r1 - r0) / SIZE[1]
    assert max(fill_w, fill_h) > 0.8, (fill_w, fill_h)
    assert r0 > 0 and c0 > 0 and r1 < SIZE[1] and c1 < SIZE[0]  # whole, not cut


# --------------------------------------------------------------------------- the legend
def test_legend_names_all_41_structures_of_the_sample_and_never_covers_them(sample_meshes, scenes):
    ct, meshes = sample_meshes
    size = (640, 480)  # a turntable frame's size
    scene = build_scene(meshes, ct, view="posterior", off_screen=True, interactive=False, size=size)
    scenes.append(scene)
    assert len(meshes) == 41
    assert scene.legend_labels == [m.name for m in meshes]  # every structure named, none "+k more"
    assert {"autochthon_left", "autochthon_right", "rib_left_11", "rib_right_11"} <= set(scene.legend_labels)
    r0, r1, c0, c1 = scene.legend_box(size)
    assert 0 <= r0 and r1 <= size[1] and c1 <= size[0] and c1 - c0 < 0.35 * size[0]
    with_legend = render_image(scene, size=size)
    scene.legend.SetVisibility(False)
    bare = render_image(scene, size=size)  # the same camera
    scene.legend.SetVisibility(True)
    anatomy = drawn(bare)
    assert anatomy[r0:r1, c0:c1].sum() == 0  # no surface or plane pixel where the legend goes
    assert (np.abs(with_legend.astype(int) - bare.astype(int)).max(axis=-1) > 0)[r0:r1, c0:c1].mean() > 0.3
    # and the anatomy fills the rest: its width most of the free width
    rows, cols = np.nonzero(anatomy[:, :c0])
    assert (cols.max() - cols.min()) > 0.8 * scene._free_area()[1] * size[0]


def test_legend_uses_columns_and_smaller_type_for_large_sets():
    from viz3d.scene.scene import legend_picture

    entries = [(f"structure_number_{i}", (0.5, 0.2 + i / 200, 0.3)) for i in range(120)]
    few = legend_picture(entries[:4], 300, 400)
    many = legend_picture(entries, 700, 400)
    assert many.height <= 400 and many.width <= 700
    assert many.width > 2 * few.width  # columns
    picture = np.asarray(many)
    assert (picture.min(axis=-1) > 180).sum() > 1000  # text


# --------------------------------------------------------------------------- colours
def lab_distance(a, b):
    from skimage.color import deltaE_ciede2000, rgb2lab

    return float(deltaE_ciede2000(rgb2lab(np.array([[a]], float)), rgb2lab(np.array([[b]], float)))[0, 0])


def test_close_table_colours_are_made_distinct_with_one_warning(tables_dir, scenes):
    from viz3d.io.labels import builtin_table, load_label_table

    spine = load_label_table(tables_dir / "ctspinopelvic1k_v4_itksnap.txt")
    values = {spine.name_of(v): v for v in spine.names}
    t11, l2 = spine.color_of(values["T11"]), spine.color_of(values["L2"])
    assert lab_distance(t11, l2) < 10  # the table's own colours: hard to tell apart
    total = builtin_table("totalsegmentator")
    greens = [("colon", total.color_of(20)), ("pancreas", total.color_of(7)), ("kidney_right", total.color_of(2))]
    meshes = [uv_sphere("T11", (-40, 0, 0), 10, t11, "label", 12), uv_sphere("L2", (40, 0, 0), 10, l2, "label", 12)]
    meshes += [uv_sphere(name, (0, 30 * i, 30), 10, color, "label", 12) for i, (name, color) in enumerate(greens)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = build_scene(meshes, None, off_screen=True, interactive=False, size=SIZE)
    scenes.append(scene)
    ours = [w for w in caught if issubclass(w.category, Viz3dWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert "\n" not in message and "T11" in message and "L2" in message
    colours = {name: tuple(actor.prop.color.float_rgb) for name, actor in scene.label_actors.items()}
    names = list(colours)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert lab_distance(colours[a], colours[b]) >= 10, (a, b)
    assert colours["T11"] == pytest.approx(t11, abs=0.5 / 255)  # the first of a pair keeps its table colour
    assert dict(scene.legend_entries)["L2"] == pytest.approx(colours["L2"], abs=0.5 / 255)  # the legend shows the drawn colour
    # meshes given are not changed
    assert tuple(meshes[1].color) == pytest.approx(l2)


def test_distinct_palette_for_a_hundred_classes(scenes):
    from skimage.color import deltaE_ciede2000, rgb2lab

    from viz3d.io.labels import delta_e_ciede2000, distinct_colors, srgb_to_lab

    palette = distinct_colors(120)
    assert palette == distinct_colors(120) and len(set(palette)) == 120
    lab = rgb2lab(np.array(palette)[None])[0]
    d = deltaE_ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    assert d[:41, :41].min() > 12 and d.min() > 7
    rng = np.random.default_rng(1)
    a, b = rng.random((500, 3)), rng.random((500, 3))
    np.testing.assert_allclose(srgb_to_lab(a), rgb2lab(a), atol=1e-6)
    np.testing.assert_allclose(delta_e_ciede2000(srgb_to_lab(a), srgb_to_lab(b)),
                               deltaE_ciede2000(rgb2lab(a), rgb2lab(b)), atol=1e-6)

    meshes = [uv_sphere(f"s{i}", (i * 5.0, 0, 0), 2, (0.2, 0.8, 0.2), "label", 6) for i in range(50)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distinct: nothing to warn about
        scene = build_scene(meshes, None, off_screen=True, interactive=False, size=SIZE, colors="distinct")
    scenes.append(scene)
    drawn_colours = [tuple(actor.prop.color.float_rgb) for actor in scene.label_actors.values()]
    np.testing.assert_allclose(drawn_colours, [c for _, c in scene.legend_entries], atol=0.5 / 255)  # 8 bits a channel
    lab = rgb2lab(np.array(drawn_colours)[None])[0]
    d = deltaE_ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    assert d.min() > 10  # 50 structures all of one table colour, now 50 that can be told apart
    with pytest.raises(Viz3dError, match="colour mode"):
        build_scene(meshes, None, off_screen=True, colors="rainbow")


# --------------------------------------------------------------------------- --slices
def test_slice_positions_by_mm_index_off_and_structure_name(scenes):
    from viz3d.scene.scene import parse_slices

    assert parse_slices("axial=120,coronal=off,sagittal=i40") == {"axial": 120.0, "coronal": "off", "sagittal": ("index", 40)}
    assert parse_slices({"axial": "L3", "coronal": "auto"}) == {"axial": "L3", "coronal": "auto"}
    for bad, match in (("axial", "AXIS=POSITION"), ("top=3", "unknown plane"), ("axial=nan", "finite")):
        with pytest.raises(Viz3dError, match=match):
            parse_slices(bad)
    ct = big_ct()
    meshes = [uv_sphere("vertebrae_L3", (0, 0, -30), 10, RED, "label", 12)]
    scene = build_scene(meshes, ct, off_screen=True, interactive=False, size=SIZE,
                        slices="axial=L3,coronal=off,sagittal=i10")
    scenes.append(scene)
    assert set(scene.slice_actors) == {"axial", "sagittal"}  # off: no plane
    assert scene.slice_positions["axial"] == pytest.approx(-30, abs=0.5)  # through the structure's middle
    assert scene.slice_positions["sagittal"] == pytest.approx(ct.affine[0, 3] + 10 * 3.0)
    assert not scene.auto_slices
    scene.set_view("posterior")  # positions given stay where they were put
    assert scene.slice_positions["axial"] == pytest.approx(-30, abs=0.5)
    with pytest.raises(Viz3dError, match="no drawn structure"):
        build_scene(meshes, ct, off_screen=True, interactive=False, size=SIZE, slices="axial=L5")
    with pytest.raises(Viz3dError, match="outside the CT"):
        build_scene(meshes, ct, off_screen=True, interactive=False, size=SIZE, slices="axial=i500")
    # auto planes follow the view until one is moved by hand
    scene = build_scene(meshes, ct, view="anterior", off_screen=True, interactive=False, size=SIZE)
    scenes.append(scene)
    front = scene.slice_positions["coronal"]
    scene.set_view("posterior")
    assert scene.slice_positions["coronal"] > front  # now in front of the surfaces as the camera sees them: behind
    scene.set_slice("coronal", 0.0)
    scene.set_view("anterior")
    assert scene.slice_positions["coronal"] == 0.0 and "coronal" not in scene.auto_slices


def test_slices_and_colors_options_on_the_command_line(tmp_path, sample_dir, tables_dir):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    out = tmp_path / "shot.png"
    run = subprocess.run(
        [sys.executable, "-m", "viz3d", "screenshot", str(sample_dir / "ct.nii.gz"), "--label", str(sample_dir / "label.nii.gz"),
         "--label-table", "totalsegmentator", "--labels", "30,31,32,33", "--no-bone", "--view", "anterior", "--window", "bone",
         "--slices", "axial=L1,sagittal=off", "--out", str(out), "--size", "160x120"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    assert out.is_file()
    run = subprocess.run(
        [sys.executable, "-m", "viz3d", "screenshot", str(sample_dir / "ct.nii.gz"), "--label", str(sample_dir / "label.nii.gz"),
         "--label-table", "totalsegmentator", "--no-bone", "--out", str(out), "--size", "160x120", "-q"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    # the built-in TotalSegmentator colours are viz3d's own generated ones: replaced without a word
    lines = [line for line in run.stderr.splitlines() if line.startswith("viz3d: warning: colours")]
    assert lines == []
    run = subprocess.run(
        [sys.executable, "-m", "viz3d", "screenshot", str(sample_dir / "ct.nii.gz"), "--label", str(sample_dir / "label.nii.gz"),
         "--label-table", "totalsegmentator", "--no-bone", "--colors", "distinct", "--out", str(out), "--size", "160x120",
         "--slices", "axial=L9"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert run.returncode == 2 and "no drawn structure" in run.stderr and "warning: colours" not in run.stderr


# --------------------------------------------------------------------------- sheets and turntables
def test_sheet_panels_are_not_squeezed_by_the_legend(tmp_path, scenes):
    from PIL import Image

    from viz3d.outputs.motion import SHEET_CAPTION_HEIGHT, view_sheet

    meshes = [uv_sphere(f"organ number {i}", (40.0 * (i % 4) - 60, 0, 30.0 * (i // 4) - 45), 12,
                        (1.0, 0.1 + 0.07 * i, 0.0) if i % 2 else (0.0, 0.2 + 0.06 * i, 1.0), "label", 12) for i in range(12)]
    scene = build_scene(meshes, big_ct(), off_screen=True, interactive=False, size=SIZE)
    scenes.append(scene)
    views = ["anterior", "posterior"]
    with_legend = view_sheet(scene, tmp_path / "sheet.png", views=views, size=SIZE)
    bare = view_sheet(scene, tmp_path / "bare.png", views=views, size=SIZE, legend="none")
    with Image.open(with_legend) as a, Image.open(bare) as b:
        sheet, plain = np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))
    assert plain.shape[1] == 2 * SIZE[0] and sheet.shape[1] > plain.shape[1]  # a column of its own
    np.testing.assert_array_equal(sheet[:, : 2 * SIZE[0]], plain)  # the panels are the same as without a legend
    column = sheet[SHEET_CAPTION_HEIGHT:, 2 * SIZE[0]:]
    assert (column.min(axis=-1) > 180).sum() > 200  # the names
    panel = plain[SHEET_CAPTION_HEIGHT:, : SIZE[0]]
    r0, r1, c0, c1 = box_of(drawn(without_marker(scene, panel)))
    assert max((c1 - c0) / SIZE[0], (r1 - r0) / SIZE[1]) > 0.75  # the surfaces fill the panel


def test_turntable_frames_show_the_surfaces_large(tmp_path, scenes):
    from PIL import Image

    from viz3d.outputs.motion import turntable

    meshes = [uv_sphere("a", (30, 20, 0), 12, RED, "label", 16), uv_sphere("b", (-10, 40, 10), 12, BLUE, "label", 16)]
    scene = build_scene(meshes, big_ct(), off_screen=True, interactive=False, size=(160, 120), view="anterior")
    scenes.append(scene)
    turntable(scene, tmp_path / "spin.gif", frames=4, size=(160, 120))
    with Image.open(tmp_path / "spin.gif") as im:
        im.seek(0)
        frame = np.asarray(im.convert("RGB"))
    # the red and blue surfaces (GIF colours: reddish / bluish pixels) span most of the free width
    colourful = (np.abs(frame[..., 0].astype(int) - frame[..., 2]) > 80)
    colourful[:, int(scene._free_area()[1] * 160):] = False
    rows, cols = np.nonzero(colourful)
    assert len(cols) > 200 and (cols.max() - cols.min()) > 0.6 * scene._free_area()[1] * 160


def test_generated_colours_too_close_are_replaced_without_a_warning():
    from viz3d.io.labels import default_color
    from viz3d.scene.scene import MIN_COLOR_DIFFERENCE, assign_colors

    # the palette's 120 colours are 8.5 apart, not all 10: such a pair (never neighbours) is the case here
    first, close = next((a, b) for a in range(1, 121) for b in range(a + 1, 121)
                        if lab_distance(default_color(a), default_color(b)) < MIN_COLOR_DIFFERENCE)
    assert close - first > 2
    meshes = [dataclasses.replace(uv_sphere(f"s{v}", (30 * i, 0, 0), 5, default_color(v), "label", 8), label=v)
              for i, v in enumerate([first, close])]
    drawn, changes, message = assign_colors(meshes)
    assert message is None and list(changes) == [f"s{close}"]
    assert lab_distance(drawn[0].color, drawn[1].color) >= MIN_COLOR_DIFFERENCE


def test_the_samples_41_structures_keep_their_table_colours_in_the_scene(sample_meshes):
    """The built-in palette tells the sample's 41 TotalSegmentator classes apart by itself, so the
    scene recolours none of them: the liver has the same colour in every picture, whatever else is
    drawn. Before, 27 pairs were too close and were recoloured per scene."""
    from viz3d.io.labels import default_color
    from viz3d.scene.scene import assign_colors

    _, meshes = sample_meshes
    assert len(meshes) == 41 and all(tuple(m.color) == default_color(m.label) for m in meshes)
    drawn, changes, message = assign_colors(meshes)
    assert changes == {} and message is None


def test_the_legend_says_where_the_names_came_from(sample_dir, scenes):
    import argparse

    from viz3d.cli.main import _names_source
    from viz3d.scene.scene import legend_picture

    entries = [("liver", (0.8, 0.45, 0.04)), ("spleen", (0.3, 0.5, 0.9))]
    plain = legend_picture(entries, 400, 400)
    titled = legend_picture(entries, 400, 400, title="names: NIfTI header (TotalSegmentator)")
    assert titled.height > plain.height and titled.width >= plain.width
    args = argparse.Namespace(label=str(sample_dir / "label.nii.gz"), label_table=None)
    assert _names_source(args) == "NIfTI header (TotalSegmentator)"  # the sample carries TotalSegmentator's table
    args.label_table = "spinopelvic10"
    assert "spinopelvic10" in _names_source(args)
    meshes = [uv_sphere("liver", (0, 0, 0), 10, entries[0][1], "label", 12)]
    scene = build_scene(meshes, None, off_screen=True, interactive=False, size=SIZE, names_source="sidecar label.json")
    scenes.append(scene)
    assert scene.legend_title == "names: sidecar label.json"


# --------------------------------------------------------------------------- the orientation marker
def marker_box(scene, size):
    """The orientation marker's pixel box (row0, row1, col0, col1) in a picture of ``size``."""
    x0, y0, x1, y1 = scene.orientation_viewport
    w, h = size
    return int((1 - y1) * h), int(np.ceil((1 - y0) * h)), int(x0 * w), int(np.ceil(x1 * w))


def surfaces_without_marker(scene, size):
    """The surfaces alone, with the same camera: no planes, legend or orientation marker."""
    scene.orientation_widget.SetEnabled(False)
    try:
        return surfaces_only(scene, size)
    finally:
        scene.orientation_widget.SetEnabled(True)


def block_of_spheres(columns, rows, prefix="organ"):
    """A wall of ``columns`` x ``rows`` touching spheres seen from the front, alternately red and blue."""
    return [uv_sphere(f"{prefix} {c}-{r}", (20.0 * c, 0, 20.0 * r), 10.5, RED if (c + r) % 2 else BLUE, "label", 10)
            for c in range(columns) for r in range(rows)]


@pytest.mark.parametrize("case", ["legend hidden", "no legend", "tall legend", "sample, legend hidden"])
def test_orientation_marker_never_covers_a_surface(case, sample_meshes, scenes):
    """With the legend hidden (``--no-legend``), without a legend (bone only) or with a legend in a
    full-height column (117 names in a 640 x 480 turntable frame: the marker then at the lower
    left), the camera leaves the marker's corner free: no surface pixel where the marker is drawn.
    Before, the surfaces filled the whole width and ran under the marker."""
    from viz3d.io.labels import builtin_table

    ct, size, view = big_ct(), SIZE, "anterior"
    if case == "sample, legend hidden":
        ct, meshes = sample_meshes
        view = "posterior"
    elif case == "no legend":
        meshes = [dataclasses.replace(m, kind="bone", name="bone") for m in block_of_spheres(4, 3)]
    elif case == "tall legend":
        table, size = builtin_table("totalsegmentator"), (640, 480)
        meshes = block_of_spheres(4, 3) + [uv_sphere(table.name_of(v), (25.0, -30, 20.0), 2, table.color_of(v), "label", 6)
                                           for v in range(13, 118)]
    else:
        meshes = block_of_spheres(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Viz3dWarning)  # the red and blue spheres are recoloured
        scene = build_scene(meshes, ct, view=view, off_screen=True, interactive=False, size=size)
    scenes.append(scene)
    if case in ("legend hidden", "sample, legend hidden"):
        scene.legend.SetVisibility(False)
        scene.set_view(view)  # as --no-legend does: refit without the legend's room
    if case == "tall legend":
        # the legend took the right-hand column
        assert scene.orientation_viewport[0] == 0.0 and not getattr(scene, "legend_left_out", False)
    r0, r1, c0, c1 = marker_box(scene, size)
    scene.set_visible("slices", False)
    marker_alone = drawn(render_image(scene, size=size))[r0:r1, c0:c1]
    scene.set_visible("slices", True)
    surfaces = drawn(surfaces_without_marker(scene, size))
    assert marker_alone.mean() > 0.05  # the marker is there
    assert surfaces[r0:r1, c0:c1].sum() == 0  # and no surface pixel under it
    free = scene._free_area()
    r0, r1, c0, c1 = box_of(surfaces)  # the surfaces still fill the free area
    assert max((r1 - r0) / size[1] / (free[3] - free[2]), (c1 - c0) / size[0] / (free[1] - free[0])) > 0.8


def test_a_legend_too_wide_for_the_picture_is_left_out_with_a_warning(scenes):
    """117 names cannot stand beside the surfaces in a 320 x 240 picture (the narrowest legend is
    wider than the picture): it is left out, with one warning that says so, instead of covering the
    anatomy; at 1024 x 768 the same scene names all 117."""
    from viz3d.io.labels import builtin_table

    table = builtin_table("totalsegmentator")
    meshes = block_of_spheres(4, 3) + [uv_sphere(table.name_of(v), (25.0, -30, 20.0), 2, table.color_of(v), "label", 6)
                                       for v in range(13, 118)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = build_scene(meshes, None, off_screen=True, interactive=False, size=SIZE)
        scenes.append(scene)
        image = render_image(scene, size=SIZE)
    told = [str(w.message) for w in caught if "do not fit" in str(w.message)]
    assert len(told) == 1 and "117 names" in told[0] and "320x240" in told[0], told
    assert scene.legend_left_out and scene.legend_box(SIZE) is None
    surfaces = drawn(without_marker(scene, surfaces_only(scene)))
    np.testing.assert_array_equal(drawn(without_marker(scene, image)), surfaces)  # nothing over the surfaces
    r0, r1, c0, c1 = box_of(surfaces)
    assert max((r1 - r0) / SIZE[1], (c1 - c0) / SIZE[0]) > 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Viz3dWarning)  # the red and blue spheres are recoloured
        big = build_scene(meshes, None, off_screen=True, interactive=False, size=(1024, 768))
    scenes.append(big)
    assert not big.legend_left_out and len(big.legend_labels) == 117


def test_a_plane_at_a_structure_name_goes_through_its_centre_as_viz3d_slice_does(sample_meshes, sample_dir, tmp_path,
                                                                                 scenes):
    """``--slices axial=L1`` puts the plane through the structure's centre (the centroid of the
    solid it encloses), the level ``viz3d slice --at vertebrae_L1`` shows; before, the middle of its
    box, which misses a structure with a long thin part (here a ball with a spur: the box's middle
    lies between them)."""
    import re

    from viz3d.outputs.slice2d import save_slice_summary

    ball, spur = uv_sphere("x", (0, 0, -40), 15, RED, "label", 16), uv_sphere("x", (0, 0, 40), 2, RED, "label", 6)
    spurred = dataclasses.replace(ball, name="vertebrae_L3", vertices=np.concatenate([ball.vertices, spur.vertices]),
                                  faces=np.concatenate([ball.faces, spur.faces + len(ball.vertices)]))
    scene = build_scene([spurred], big_ct(), off_screen=True, interactive=False, size=SIZE, slices="axial=L3")
    scenes.append(scene)
    assert scene.slice_positions["axial"] == pytest.approx(-40, abs=1.0)  # in the ball (the box's middle: -1.5)

    ct, meshes = sample_meshes
    scene = build_scene(meshes, ct, off_screen=True, interactive=False, size=SIZE, slices="axial=L1,coronal=liver")
    scenes.append(scene)
    for plane, name, axis in (("axial", "vertebrae_L1", "z"), ("coronal", "liver", "y")):
        _, summary = save_slice_summary(tmp_path / f"{plane}.png", sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz",
                                        plane=plane, at=name)
        shown = float(re.search(rf"{axis} = (-?[0-9.]+) mm", summary).group(1))
        assert scene.slice_positions[plane] == pytest.approx(shown, abs=3.0), (plane, summary)  # within a 3 mm slice


def test_a_plane_at_a_structure_in_the_label_map_but_not_drawn_goes_through_its_voxels_centre(
        sample_meshes, sample_dir, tmp_path, scenes):
    """``--labels liver --slices axial=L1``: L1 is in the label map but not drawn, and the plane
    goes through the centroid of its voxels, the level ``viz3d slice --at L1`` shows (before, it
    was refused). Without the label map's centres the scene still refuses the name."""
    import re

    from viz3d import load_label
    from viz3d.io.labels import builtin_table
    from viz3d.outputs.slice2d import save_slice_summary
    from viz3d.scene.scene import structure_centres, undrawn_plane_names

    ct, meshes = sample_meshes
    liver = [m for m in meshes if m.name == "liver"]
    assert undrawn_plane_names("axial=L1,coronal=liver,sagittal=auto", liver) == ["L1"]
    label = load_label(sample_dir / "label.nii.gz")
    centres = structure_centres(label, builtin_table("totalsegmentator"), ["L1"])
    ijk = np.argwhere(np.asarray(label.array) == 31)  # vertebrae_L1
    expected_z = (label.affine[:3, :3] @ ijk.mean(axis=0) + label.affine[:3, 3])[2]
    scene = build_scene(liver, ct, off_screen=True, interactive=False, size=SIZE, slices="axial=L1", centres=centres)
    scenes.append(scene)
    assert scene.slice_positions["axial"] == pytest.approx(expected_z, abs=1e-6)
    _, summary = save_slice_summary(tmp_path / "l1.png", sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz",
                                    plane="axial", at="L1")
    shown = float(re.search(r"z = (-?[0-9.]+) mm", summary).group(1))
    assert scene.slice_positions["axial"] == pytest.approx(shown, abs=3.0)  # within a 3 mm slice
    with pytest.raises(Viz3dError, match="no drawn structure"):
        build_scene(liver, ct, off_screen=True, interactive=False, size=SIZE, slices="axial=L1")


def test_planes_at_undrawn_structures_on_the_command_line_refuse_only_names_not_in_the_table(tmp_path, sample_dir):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    base = [sys.executable, "-m", "viz3d", "screenshot", str(sample_dir / "ct.nii.gz"), "--label",
            str(sample_dir / "label.nii.gz"), "--labels", "liver", "--size", "160x120", "-q"]
    out = tmp_path / "shot.png"
    run = subprocess.run(base + ["--slices", "axial=L1,coronal=stomach", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    assert out.is_file()
    for spec, message in (("axial=L9", "label table has no such name"), ("axial=brain", "brain (label 90) is not in")):
        run = subprocess.run(base + ["--slices", spec, "--out", str(tmp_path / "no.png")],
                             capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
        errors = [line for line in run.stderr.splitlines() if line.startswith("viz3d: error:")]
        assert run.returncode == 2 and len(errors) == 1 and message in errors[0], run.stderr
        assert not (tmp_path / "no.png").exists()


def test_a_picture_of_another_size_is_laid_out_and_framed_for_that_size(sample_meshes, scenes):
    """The web view draws the scene at its page's size (here 785 x 577, the scene built at
    1024 x 768): the legend is laid out again for that size, the orientation marker clear of it,
    and neither covers a surface. Before, the legend laid out for 768 rows ran down over the
    marker at the lower right."""
    ct, meshes = sample_meshes
    scene = build_scene(meshes, ct, view="anterior", off_screen=True, interactive=False, size=(1024, 768))
    scenes.append(scene)
    size = (785, 577)
    image = render_image(scene, size=size)
    legend = scene.legend_box(size)
    marker = marker_box(scene, size)
    assert legend[1] <= size[1] and legend[2] >= 0  # the legend inside the picture
    assert marker[0] >= legend[1] or marker[3] <= legend[2]  # the marker below or beside it, not on it
    surfaces = drawn(surfaces_without_marker(scene, size))
    for r0, r1, c0, c1 in (legend, marker):
        assert surfaces[r0:r1, c0:c1].sum() == 0
    assert drawn(image)[legend[0]:legend[1], legend[2]:legend[3]].mean() > 0.9  # and the legend is drawn there
    r0, r1, c0, c1 = box_of(surfaces)
    assert (c1 - c0) > 0.8 * scene._free_area()[1] * size[0]  # framed for this size
    again = render_image(scene, size=(1024, 768))  # and back
    assert scene.legend_box() == scene.legend_box((1024, 768)) and again.shape == (768, 1024, 3)
