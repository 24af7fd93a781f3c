"""The scene builder and picture output, checked by what the pictures show.

Everything renders off screen (Mesa EGL when there is no display). The interactive window is
driven under a virtual X display (Xvfb) in a subprocess, through its real event loop.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from shapes import oblique_affine, uv_sphere

from viz3d.outputs.render import render_image, screenshot
from viz3d.runtime import configure_offscreen, has_display

configure_offscreen()  # before anything here creates a VTK window

from viz3d.errors import Viz3dError  # noqa: E402
from viz3d.surfaces.meshing import Mesh  # noqa: E402
from viz3d.scene.scene import (  # noqa: E402
    GROUPS,
    KEYMAP,
    SLICE_AXES,
    VIEWS,
    WINDOW_PRESETS,
    build_scene,
)
from viz3d.io.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZE = (480, 360)
RED, BLUE, GREEN, YELLOW = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.8, 0.0), (1.0, 0.85, 0.0)


# --------------------------------------------------------------------------- helpers
def sphere(name, center, radius, color, kind="label", n=16):
    """A closed UV sphere as a Mesh (numpy only)."""
    return uv_sphere(name, center, radius, color, kind, n)


def synthetic_ct(affine=None, shape=(60, 50, 40)):
    """Air with a soft-tissue ball (40 HU, radius 40 mm) and a bone ball (1200 HU) at the patient's right."""
    if affine is None:
        affine = np.diag([2.0, 2.0, 2.5, 1.0])
        affine[:3, 3] = [-59.0, -49.0, -48.75]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    array = np.full(shape, -1000, np.int16)
    array[np.linalg.norm(world, axis=-1) < 40] = 40
    array[np.linalg.norm(world - [20, 0, 10], axis=-1) < 10] = 1200
    return Volume(array, affine)


def colour_mask(image, rgb, cos_min=0.985, min_bright=50):
    """Pixels whose colour points the way of ``rgb`` (any shading) and are not dark."""
    img = image[..., :3].astype(float)
    target = np.asarray(rgb, float) / np.linalg.norm(rgb)
    norm = np.linalg.norm(img, axis=-1)
    cos = (img @ target) / np.maximum(norm, 1e-9)
    return (cos > cos_min) & (img.max(axis=-1) > min_bright)


def overlay_box(actor_or_viewport, image):
    """Pixel box (row0, row1, col0, col1) of the legend actor or of a normalised viewport."""
    h, w = image.shape[:2]
    if isinstance(actor_or_viewport, tuple):
        x0, y0, x1, y1 = actor_or_viewport
    else:  # a 2-D actor placed in normalised viewport coordinates, Position2 relative to Position
        x0, y0 = actor_or_viewport.GetPositionCoordinate().GetValue()[:2]
        dx, dy = actor_or_viewport.GetPosition2Coordinate().GetValue()[:2]
        x1, y1 = x0 + dx, y0 + dy
    return int((1 - y1) * h), int(math.ceil((1 - y0) * h)), int(x0 * w), int(math.ceil(x1 * w))


def without_overlays(scene, image):
    """The picture with the legend and the orientation marker painted black."""
    image = image.copy()
    boxes = [overlay_box(scene.orientation_viewport, image)]
    if scene.legend is not None:
        boxes.append(scene.legend_box(image.shape[1::-1]))
    for r0, r1, c0, c1 in boxes:
        image[max(r0, 0):r1, max(c0, 0):c1] = 0
    return image


def centroid(mask):
    rows, cols = np.nonzero(mask)
    assert len(rows) > 30, "colour not found in the picture"
    return cols.mean(), rows.mean()


def world_to_pixel(scene, point, image):
    renderer = scene.plotter.renderer
    renderer.SetWorldPoint(*point, 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    return x, image.shape[0] - 1 - y



# --------------------------------------------------------------------------- offscreen plumbing
def test_importing_scene_and_render_is_cheap():
    code = ("import sys, viz3d.scene.scene, viz3d.outputs.render; "
            "print(sorted(m for m in ('pyvista', 'vtk', 'vtkmodules') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_pyvista_imported_in_the_background_is_whole_when_used():
    """The scene waits for the background import: using PyVista mid-import broke its lazy modules."""
    code = ("import time; from viz3d.runtime import enable, import_pyvista, import_pyvista_soon; "
            "enable(); import_pyvista_soon(); "
            "time.sleep(0.2); pv = import_pyvista(); print(pv.Plotter.__name__, pv.OFF_SCREEN)")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Plotter", "True"]


def test_configure_offscreen_without_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("VTK_DEFAULT_OPENGL_WINDOW", raising=False)
    assert not has_display()
    configure_offscreen()
    assert os.environ["VTK_DEFAULT_OPENGL_WINDOW"] == "vtkEGLRenderWindow"
    monkeypatch.setenv("DISPLAY", ":0")
    assert has_display()


# --------------------------------------------------------------------------- the picture
def test_screenshot_shows_labels_legend_and_slices(tmp_path, scenes):
    meshes = [
        sphere("red organ", (-30, 0, 0), 12, RED),
        sphere("blue organ", (30, 0, 0), 12, BLUE),
        sphere("yellow organ", (0, 20, 25), 10, YELLOW),
        sphere("bone", (0, 0, 0), 35, (0.89, 0.85, 0.79), kind="bone"),
    ]
    scene = build_scene(meshes, synthetic_ct(), off_screen=True, interactive=False, size=SIZE, view="anterior")
    scenes.append(scene)
    out = screenshot(scene, tmp_path / "scene.png", size=(640, 480))
    assert out == tmp_path / "scene.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.png"]  # no temporary file left

    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (640, 480)
        image = np.asarray(im.convert("RGB"))
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # shaded surfaces, slices, text
    body = without_overlays(scene, image)
    for colour in (RED, BLUE, YELLOW):
        assert colour_mask(body, colour).sum() > 300, colour
    # the bone surface shows in its colour (blended over what is behind it)
    assert colour_mask(body, (0.89, 0.85, 0.79), cos_min=0.999, min_bright=120).sum() > 300

    # the legend lists the label names (not the bone) and shows each colour swatch and text
    assert scene.legend_labels == ["red organ", "blue organ", "yellow organ"]
    assert [name for name, _ in scene.legend_entries] == scene.legend_labels
    r0, r1, c0, c1 = scene.legend_box(image.shape[1::-1])
    assert c1 > 0.6 * image.shape[1] and r0 < 0.1 * image.shape[0]  # upper right
    box = image[max(r0, 0):r1, c0:c1]
    for colour in (RED, BLUE, YELLOW):
        assert colour_mask(box, colour).sum() >= 9, colour
    assert (box.min(axis=-1) > 180).sum() > 50  # light text on the dark box


def test_legend_stays_readable_with_many_labels(scenes):
    rng = np.random.default_rng(0)
    meshes = [sphere(f"structure {i}", rng.uniform(-50, 50, 3), 3, tuple(rng.uniform(0.2, 1, 3)), n=4) for i in range(40)]
    scene = build_scene(meshes, None, off_screen=True, interactive=False, size=SIZE, colors="distinct")
    scenes.append(scene)
    assert scene.legend_labels == [f"structure {i}" for i in range(40)]  # every one named
    image = render_image(scene, size=SIZE)
    r0, r1, c0, c1 = scene.legend_box(image.shape[1::-1])
    assert r0 >= 0 and r1 <= image.shape[0] and c1 - c0 < 0.45 * image.shape[1]


# --------------------------------------------------------------------------- orientation
# red at the patient's left (-x), blue at the right (+x), green anterior (+y), yellow superior (+z)
ORIENTATION_MESHES = [
    sphere("patient left", (-40, 0, 0), 10, RED),
    sphere("patient right", (40, 0, 0), 10, BLUE),
    sphere("anterior", (0, 40, 0), 10, GREEN),
    sphere("superior", (0, 0, 40), 10, YELLOW),
]
# view -> expected picture: which side of the screen each is on ("right"/"left"/"top"/"bottom"/None)
EXPECTED_SIDES = {
    "anterior": {RED: "right", BLUE: "left", YELLOW: "top"},
    "posterior": {RED: "left", BLUE: "right", YELLOW: "top"},
    "left": {GREEN: "left", YELLOW: "top"},  # camera at the patient's left: anterior on screen left
    "right": {GREEN: "right", YELLOW: "top"},
    "superior": {RED: "left", BLUE: "right", GREEN: "top"},  # from above, anterior up
    "inferior": {RED: "right", BLUE: "left", GREEN: "top"},  # radiological axial display
}


@pytest.fixture(scope="module")
def orientation_scene():
    scene = build_scene(ORIENTATION_MESHES, None, off_screen=True, interactive=False, size=SIZE,
                        show_slices=False, show_bone=False)
    yield scene
    scene.close()


@pytest.mark.parametrize("view", list(EXPECTED_SIDES))
def test_camera_presets_follow_radiological_convention(orientation_scene, view):
    scene = orientation_scene
    scene.set_view(view)
    assert scene.view == view
    image = without_overlays(scene, render_image(scene, size=SIZE))
    h, w = image.shape[:2]
    cx, cy = world_to_pixel(scene, scene.bounds.reshape(3, 2).mean(axis=1), image)  # the middle of the scene
    assert 0.2 * w < cx < 0.8 * w and 0.2 * h < cy < 0.8 * h
    for colour, side in EXPECTED_SIDES[view].items():
        x, y = centroid(colour_mask(image, colour))
        if side == "right":
            assert x > cx + 0.1 * w, (view, colour, x)
        elif side == "left":
            assert x < cx - 0.1 * w, (view, colour, x)
        elif side == "top":
            assert y < cy - 0.1 * h, (view, colour, y)


def test_iso_view_and_every_preset_fit_the_scene(orientation_scene):
    scene = orientation_scene
    for view in VIEWS:
        scene.set_view(view)
        image = without_overlays(scene, render_image(scene, size=SIZE))
        for colour in (RED, BLUE, GREEN, YELLOW):
            if view in ("left", "right") and colour in (RED, BLUE):
                continue  # one hides behind the other
            if view in ("superior", "inferior") and colour == YELLOW:
                continue  # on the view axis, in front of / behind the centre
            mask = colour_mask(image, colour)
            rows, cols = np.nonzero(mask)
            assert len(rows) > 30, (view, colour)
            # whole sphere in the picture, not cut by the border
            assert rows.min() > 0 and cols.min() > 0 and rows.max() < SIZE[1] - 1 and cols.max() < SIZE[0] - 1
    scene.set_view("iso")
    image = without_overlays(scene, render_image(scene, size=SIZE))
    (rx, _), (bx, _), (_, yy) = (centroid(colour_mask(image, c)) for c in (RED, BLUE, YELLOW))
    _, cy = world_to_pixel(scene, scene.bounds.reshape(3, 2).mean(axis=1), image)
    # from anterior-left-superior the patient's left (red) is right of the patient's right (blue)
    assert rx > bx and yy < cy
    with pytest.raises(Viz3dError, match="unknown view"):
        scene.set_view("front")


# --------------------------------------------------------------------------- window / level
def test_window_level_changes_only_the_shader_numbers(scenes):
    ct = synthetic_ct()
    before = ct.array.copy()
    array_id = id(ct.array)
    scene = build_scene([], ct, off_screen=True, interactive=False, size=SIZE, view="inferior")
    scenes.append(scene)
    assert scene.window == (40.0, 400.0)
    render_image(scene, size=SIZE)
    textures = {axis: (image.GetMTime(), image.GetPointData().GetScalars().GetMTime())
                for axis, image in scene.slice_images.items()}

    def uniforms(axis="axial"):
        from vtkmodules.vtkCommonCore import reference

        u = scene.slice_actors[axis].GetShaderProperty().GetFragmentCustomUniforms()
        scale, shift = reference(0.0), reference(0.0)
        assert u.GetUniformf("ctScale", scale) and u.GetUniformf("ctShift", shift)
        return scale.get(), shift.get()

    # the ball (40 HU) at the centre of the axial plane seen from below
    def mean_grey():
        image = render_image(scene, size=SIZE)
        h, w = image.shape[:2]
        patch = image[h // 2 - 10:h // 2 + 10, w // 2 - 10:w // 2 + 10]
        assert np.ptp(patch, axis=-1).max() == 0  # greyscale
        return float(patch.mean())

    soft = mean_grey()
    assert soft == pytest.approx(255 * ((40 - (40 - 200)) / 400), abs=3)  # 40 HU in soft window: 127.5
    # int16 codes are HU + 32768: grey = (HU - (centre - width / 2)) / width
    assert uniforms() == pytest.approx((1 / 400, (-32768 - (40 - 200)) / 400))
    scene.apply_preset("bone")
    assert scene.window == WINDOW_PRESETS["bone"] == (400, 1800)
    assert uniforms("sagittal") == pytest.approx((1 / 1800, (-32768 - (400 - 900)) / 1800))
    bone = mean_grey()
    assert bone == pytest.approx(255 * ((40 - (400 - 900)) / 1800), abs=3)  # 76.5
    scene.set_window(40, 80)
    assert scene.window == (40.0, 80.0)
    scene.apply_preset("lung")
    assert scene.window == (-600.0, 1500.0)
    assert mean_grey() > 230
    # nothing was re-sampled or re-coloured: the textures' data are untouched
    assert textures == {axis: (image.GetMTime(), image.GetPointData().GetScalars().GetMTime())
                        for axis, image in scene.slice_images.items()}

    assert id(ct.array) == array_id and scene.ct is ct
    np.testing.assert_array_equal(ct.array, before)
    with pytest.raises(Viz3dError, match="width"):
        scene.set_window(40, 0)
    with pytest.raises(Viz3dError, match="unknown window preset"):
        scene.apply_preset("liver")


def test_window_on_a_float_ct_uses_its_own_value_range(scenes):
    """A CT of non-integer values (codes scaled to its range) is windowed in its own units."""
    ct = synthetic_ct()
    array = np.where(ct.array > 0, 0.3, 0.0).astype(np.float32)
    array[0, 0, 0] = 1.0  # the range is 0 .. 1
    scene = build_scene([], Volume(array, ct.affine), off_screen=True, interactive=False, size=SIZE,
                        view="inferior", window=(0.5, 1.0))
    scenes.append(scene)
    image = render_image(scene, size=SIZE)
    h, w = image.shape[:2]
    assert float(image[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5].mean()) == pytest.approx(0.3 * 255, abs=3)
    scene.set_window(0.3, 0.2)  # 0.3 is now mid-grey
    image = render_image(scene, size=SIZE)
    assert float(image[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5].mean()) == pytest.approx(127.5, abs=3)


# --------------------------------------------------------------------------- slices in world coordinates
def _las_affine():
    affine = np.diag([-2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [60.0, -49.0, -48.75]
    return affine


@pytest.mark.parametrize("kind", ["LAS", "oblique"])
def test_slices_are_placed_in_world_coordinates(kind, scenes):
    affine = _las_affine() if kind == "LAS" else oblique_affine()
    shape = (40, 30, 20)
    ct = Volume(np.zeros(shape, np.int16), affine)
    scene = build_scene([], ct, off_screen=True, interactive=False, size=SIZE)
    scenes.append(scene)
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    for axis, k in zip(SLICE_AXES, (2, 1, 0)):
        lo, hi = scene.slice_ranges[axis]
        assert (lo, hi) == pytest.approx((world[k].min(), world[k].max()))
        assert scene.slice_positions[axis] == pytest.approx(centre[k])  # starts through the centre
        plane = scene.slice_planes[axis]
        normal = np.zeros(3)
        normal[k] = 1
        assert plane.GetNormal() == pytest.approx(tuple(normal))
        target = lo + 0.3 * (hi - lo)
        assert scene.set_slice(axis, target) == pytest.approx(target)
        assert plane.GetOrigin()[k] == pytest.approx(target)
        assert scene.slice_positions[axis] == pytest.approx(target)
        assert scene.set_slice(axis, hi + 100) == pytest.approx(hi)  # clamped to the CT
        # the quad lies in the plane and spans the CT's extent across it
        quad = np.asarray(scene.slice_actors[axis].GetMapper().GetInput().GetPoints().GetData())
        assert np.allclose(quad[:, k], hi)
        others = [j for j in range(3) if j != k]
        assert np.allclose(quad[:, others].min(axis=0), world[others].min(axis=1))
        assert np.allclose(quad[:, others].max(axis=0), world[others].max(axis=1))
    with pytest.raises(Viz3dError, match="unknown slice axis"):
        scene.set_slice("transverse", 0)


@pytest.mark.parametrize("kind", ["RAS", "LAS", "oblique"])
def test_bright_voxels_appear_where_the_affine_puts_them(kind, scenes):
    """A bright blob drawn on the axial plane lands at its world position on screen."""
    affine = {"RAS": np.diag([2.0, 2.0, 2.5, 1.0]), "LAS": _las_affine(), "oblique": oblique_affine()}[kind]
    shape = (40, 30, 20)
    array = np.full(shape, -1000, np.int16)
    blob = (slice(4, 9), slice(20, 25), slice(8, 12))  # low i, high j
    array[blob] = 2000
    if kind == "LAS":
        array = np.asfortranarray(array)  # nibabel's usual memory layout
    ct = Volume(array, affine)
    centre_ijk = np.array([6.0, 22.0, 9.5])
    world = affine[:3, :3] @ centre_ijk + affine[:3, 3]
    scene = build_scene([], ct, off_screen=True, interactive=False, size=SIZE, view="inferior",
                        window=WINDOW_PRESETS["bone"])
    scenes.append(scene)
    # VTK holds the planes only, one sample per voxel on an axis-aligned grid, not a copy of the CT
    planes = {axis: image.GetDimensions() for axis, image in scene.slice_images.items()}
    if kind != "oblique":
        assert planes == {"axial": (40, 30, 1), "coronal": (40, 20, 1), "sagittal": (30, 20, 1)}
    scene.set_slice("axial", world[2])
    scene.set_visible("slices", True)
    for axis in ("coronal", "sagittal"):  # keep only the axial plane in view
        scene.slice_actors[axis].SetVisibility(False)
    image = without_overlays(scene, render_image(scene, size=SIZE))
    bright = (image.min(axis=-1) > 200) & (np.ptp(image, axis=-1) < 10)
    x, y = centroid(bright)
    ex, ey = world_to_pixel(scene, world, image)
    assert abs(x - ex) < 6 and abs(y - ey) < 6, (kind, (x, y), (ex, ey))
    if kind == "RAS":  # low i is the patient's left: on the viewer's right from below
        assert x > SIZE[0] / 2
    if kind == "LAS":  # low i is now the patient's right: on the viewer's left
        assert x < SIZE[0] / 2


# --------------------------------------------------------------------------- visibility
def test_visibility_toggles_flip_actor_visibility(scenes):
    meshes = [sphere("organ", (0, 0, 0), 10, RED), sphere("bone", (0, 0, 0), 20, (0.9, 0.85, 0.8), kind="bone")]
    scene = build_scene(meshes, synthetic_ct(), off_screen=True, interactive=False, size=SIZE, show_bone=False)
    scenes.append(scene)
    groups = {"bone": scene.bone_actors, "labels": scene.label_actors, "slices": scene.slice_actors}
    assert all(groups[g] for g in GROUPS)
    assert not scene.is_visible("bone") and not scene.bone_actors["bone"].GetVisibility()
    for group in GROUPS:
        actors = list(groups[group].values())
        state = scene.is_visible(group)
        assert all(bool(a.GetVisibility()) == state for a in actors)
        assert scene.toggle(group) is (not state)
        assert all(bool(a.GetVisibility()) == (not state) for a in actors)
        scene.set_visible(group, True)
        assert scene.is_visible(group) and all(a.GetVisibility() for a in actors)
    scene.set_visible("labels", False)
    assert not scene.legend.GetVisibility()  # the legend goes with the labels
    with pytest.raises(Viz3dError, match="unknown group"):
        scene.toggle("organs")


def test_scene_without_ct_or_meshes(scenes):
    scene = build_scene([], None, off_screen=True, interactive=True, size=SIZE)
    scenes.append(scene)
    assert scene.slice_positions == {} and scene.legend is None
    with pytest.raises(Viz3dError, match="no CT"):
        scene.set_slice("axial", 0)
    scene.set_window(100, 200)  # remembered, nothing to draw it on
    assert scene.window == (100.0, 200.0)
    assert render_image(scene, size=(64, 48)).shape == (48, 64, 3)
    with pytest.raises(Viz3dError, match="window"):
        build_scene([], None, off_screen=True, window=(40, -5))
    with pytest.raises(Viz3dError, match="unknown view"):
        build_scene([], None, off_screen=True, view="top")
    with pytest.raises(Viz3dError, match="out of range"):
        build_scene([Mesh("bad", "label", 1, RED, np.zeros((3, 3)), np.array([[0, 1, 5]]))], None, off_screen=True)


def test_label_back_faces_are_culled_and_the_picture_is_unchanged(scenes):
    """Closed, outward label surfaces lose nothing when their back faces are culled: the picture
    is the one drawn without culling (the green ball's rim around the red one included), while
    the translucent bone keeps both sides."""
    front = sphere("front", (0, 0, 0), 20, RED, n=24)
    behind = sphere("behind", (0, -60, 0), 30, GREEN, n=24)  # behind the red one, seen from anterior
    bone = sphere("bone", (-60, 0, 0), 20, YELLOW, kind="bone", n=24)
    scene = build_scene([front, behind, bone], None, off_screen=True, interactive=False, view="anterior", size=SIZE)
    scenes.append(scene)
    assert all(actor.prop.culling == "back" for actor in scene.label_actors.values())
    assert all(actor.prop.culling == "none" for actor in scene.bone_actors.values())
    culled = render_image(scene, size=SIZE)
    red = colour_mask(culled, RED)
    cx, cy = world_to_pixel(scene, (0, 0, 0), culled)
    assert red[int(cy), int(cx)] and red.sum() > 500 and colour_mask(culled, GREEN).sum() > 200
    both_sides = build_scene([front, behind, bone], None, off_screen=True, interactive=False, view="anterior",
                             size=SIZE, cull_back_faces=False)  # for open or inward surfaces from elsewhere
    scenes.append(both_sides)
    assert all(actor.prop.culling == "none" for actor in both_sides.label_actors.values())
    drawn_whole = render_image(both_sides, size=SIZE)
    differing = np.abs(culled.astype(int) - drawn_whole.astype(int)).max(axis=-1) > 8
    assert differing.sum() <= 0.001 * differing.size


def test_show_without_display_is_a_clear_error(scenes, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    scene = build_scene([], None, off_screen=False, interactive=True, size=(64, 48))
    scenes.append(scene)
    assert scene.plotter.off_screen  # nothing to show on
    with pytest.raises(Viz3dError, match="no display"):
        scene.show()


# --------------------------------------------------------------------------- screenshot files
def test_screenshot_errors_leave_nothing_behind(tmp_path, scenes, monkeypatch):
    scene = build_scene([sphere("organ", (0, 0, 0), 10, RED)], None, off_screen=True, interactive=False, size=(64, 48))
    scenes.append(scene)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(Viz3dError, match="not-a-folder"):
        screenshot(scene, blocker / "out.png")
    with pytest.raises(Viz3dError, match="missing"):
        screenshot(scene, tmp_path / "missing" / "out.png")
    with pytest.raises(Viz3dError, match=r"\.png"):
        screenshot(scene, tmp_path / "out.jpg")

    # an existing picture survives a failed write, and no temporary file is left
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    import viz3d.outputs.render as render

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(render, "render_image", broken)
    with pytest.raises(Viz3dError, match=str(tmp_path)):
        screenshot(scene, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder", "out.png"]

    monkeypatch.undo()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(Viz3dError, match="locked"):
                screenshot(scene, locked / "out.png")
        finally:
            locked.chmod(0o700)
    screenshot(scene, target, size=(64, 48))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a 0600 temporary


# --------------------------------------------------------------------------- the interactive window
# The documented key map (viz3d/scene.py docstring and the on-screen help line).
DOCUMENTED_KEYS = {
    "F1": ("apply_preset", "soft"), "F2": ("apply_preset", "bone"),
    "F3": ("apply_preset", "lung"), "F4": ("apply_preset", "brain"),
    "1": ("set_view", "anterior"), "2": ("set_view", "posterior"), "4": ("set_view", "left"),
    "5": ("set_view", "right"), "6": ("set_view", "superior"), "7": ("set_view", "inferior"),
    "0": ("set_view", "iso"),
    "o": ("toggle", "bone"), "l": ("toggle", "labels"), "x": ("toggle", "slices"),
    "Prior": ("step_slice", ("axial", 1)), "Next": ("step_slice", ("axial", -1)),
}
# keys PyVista or VTK already use in the window
RESERVED_KEYS = set("qebvwsrfpumijtca3C") | {"Up", "Down", "plus", "minus"}


def test_key_map_is_the_documented_one():
    from viz3d.scene.scene import HELP_TEXT

    for key, action in DOCUMENTED_KEYS.items():
        assert KEYMAP[key] == action, key
    for key, (method, argument) in KEYMAP.items():
        if key.startswith("KP_"):  # keypad twins of the digit keys
            assert KEYMAP[key[3:]] == (method, argument)
        else:
            assert key in DOCUMENTED_KEYS
    assert not RESERVED_KEYS & set(KEYMAP)
    for words in ("F1 soft", "F2 bone", "F3 lung", "F4 brain", "1 anterior", "2 posterior", "4 left",
                  "5 right", "6 superior", "7 inferior", "0 iso", "o bone", "l labels", "x slices",
                  "PgUp/PgDn axial"):
        assert words in HELP_TEXT


def _free_display() -> int:
    for number in range(91, 400):
        if not Path(f"/tmp/.X{number}-lock").exists() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number
    raise RuntimeError("no free X display number")


@pytest.fixture
def xvfb_display():
    """A virtual X display (Xvfb) for the duration of one test; yields its DISPLAY string."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): cannot test the interactive window")
    for _attempt in range(5):
        number = _free_display()
        proc = subprocess.Popen(
            ["Xvfb", f":{number}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        socket = Path(f"/tmp/.X11-unix/X{number}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None and not socket.exists():
            time.sleep(0.05)
        if proc.poll() is None and socket.exists():
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("could not start Xvfb")
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


DRIVER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from viz3d.surfaces.meshing import Mesh
    from viz3d.outputs.render import render_image
    from viz3d.scene.scene import KEYMAP, build_scene
    from viz3d.io.volume import Volume

    array = np.full((30, 20, 10), -1000, np.int16)
    array[10:20, 5:15, 3:7] = 300
    ct = Volume(array, np.diag([2.0, 2.0, 3.0, 1.0]))
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], float)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    meshes = [Mesh("organ", "label", 1, (1, 0, 0), v, f), Mesh("bone", "bone", None, (0.9, 0.85, 0.8), v + 5, f)]
    scene = build_scene(meshes, ct, off_screen=False, interactive=True, size=(640, 480))
    iren = scene.plotter.iren.interactor
    log = {"window_class": type(scene.plotter.render_window).__name__, "initial": scene.state(),
           "keys": {}, "sliders": {}}
    picture = render_image(scene, size=(320, 240))  # before show(): the window draws once
    log["picture"] = [list(picture.shape), len(np.unique(picture.reshape(-1, 3), axis=0))]

    def press(key):  # as X delivers a key: press, character, release
        iren.SetKeyEventInformation(0, 0, key if len(key) == 1 else "\\0", 1, key)
        iren.InvokeEvent("KeyPressEvent")
        iren.InvokeEvent("CharEvent")
        iren.InvokeEvent("KeyReleaseEvent")

    def drive(step=0):
        try:
            log["mapped"] = bool(scene.plotter.render_window.GetMapped())
            for key in KEYMAP:
                before = scene.state()
                press(key)
                log["keys"][key] = [before, scene.state()]
            for name, value in [("window_center", 250.0), ("window_width", 700.0), ("axial", 9.0),
                                ("coronal", 7.0), ("sagittal", 33.0)]:
                widget = scene.sliders[name]
                widget.InvokeEvent("StartInteractionEvent")
                dragging = scene.interacting
                widget.GetRepresentation().SetValue(value)
                widget.InvokeEvent("InteractionEvent")
                widget.InvokeEvent("EndInteractionEvent")
                log["sliders"][name] = [value, scene.state(), dragging, scene.interacting]
            iren.InvokeEvent("StartInteractionEvent")  # a camera drag
            log["camera_drag"] = [scene.interacting]
            iren.InvokeEvent("EndInteractionEvent")
            log["camera_drag"].append(scene.interacting)
            scene.set_window(-100, 900)  # a method call moves the sliders too
            log["synced"] = [scene.sliders[n].GetRepresentation().GetValue() for n in ("window_center", "window_width")]
        finally:
            press("q")  # PyVista's quit key ends show()

    scene.plotter.iren.add_timer_event(max_steps=1, duration=200, callback=drive)
    scene.show()
    print("STATE " + json.dumps(log))
    """
)


def test_interactive_window_keys_and_sliders(xvfb_display, tmp_path):
    driver = tmp_path / "drive_scene.py"
    driver.write_text(DRIVER)
    env = dict(os.environ)
    env["DISPLAY"] = xvfb_display
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("VTK_DEFAULT_OPENGL_WINDOW", None)  # this process chose EGL; the child uses X
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, str(driver)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("STATE ")]
    assert lines, out.stdout[-2000:] + out.stderr[-2000:]
    log = json.loads(lines[-1][len("STATE "):])

    assert log["window_class"] == "vtkXOpenGLRenderWindow" and log["mapped"]
    assert log["picture"][0] == [240, 320, 3] and log["picture"][1] > 50
    assert log["initial"]["window"] == [40.0, 400.0] and log["initial"]["view"] == "anterior"
    assert log["initial"]["visible"] == {"bone": True, "labels": True, "slices": True}
    assert set(log["keys"]) == set(KEYMAP)
    for key, (method, argument) in {**KEYMAP, **DOCUMENTED_KEYS}.items():
        before, after = log["keys"][key]
        if method == "apply_preset":
            assert after["window"] == list(WINDOW_PRESETS[argument]), key
        elif method == "set_view":
            assert after["view"] == argument, key
        elif method == "toggle":
            assert after["visible"][argument] is (not before["visible"][argument]), key
            others = {g: v for g, v in after["visible"].items() if g != argument}
            assert others == {g: v for g, v in before["visible"].items() if g != argument}, key
        elif method == "step_slice":
            axis, steps = argument
            assert after["slices"][axis] == pytest.approx(before["slices"][axis] + 2.0 * steps), key
        else:  # pragma: no cover - a new kind of key needs a check here
            pytest.fail(f"no check for {method}")
    sliders = log["sliders"]
    assert sliders["window_center"][1]["window"][0] == 250.0
    assert sliders["window_width"][1]["window"] == [250.0, 700.0]
    assert sliders["axial"][1]["slices"]["axial"] == 9.0
    assert sliders["coronal"][1]["slices"]["coronal"] == 7.0
    assert sliders["sagittal"][1]["slices"]["sagittal"] == 33.0
    assert log["synced"] == [-100.0, 900.0]
    # dragging a slider or the camera switches to the cheap drawing and back
    assert all(entry[2:] == [True, False] for entry in sliders.values())
    assert log["camera_drag"] == [True, False]


# --------------------------------------------------------------------------- level of detail
def test_coarse_meshes_only_while_interacting(scenes, monkeypatch):
    """Above the triangle budget the camera drags draw simplified copies; still frames the full meshes."""
    import viz3d.scene.scene as scene_module

    big = sphere("big", (0, 0, 0), 30, RED, n=120)  # ~57 k triangles
    other = sphere("other", (70, 0, 0), 20, BLUE, n=80)
    monkeypatch.setattr(scene_module, "LOD_TRIANGLES", 20_000)
    scene = build_scene([big, other], None, off_screen=True, size=SIZE, interactive=False)
    scenes.append(scene)
    full = {name: actor.GetMapper() for name, actor in scene.label_actors.items()}
    coarse_total = scene.build_lod()
    assert coarse_total < 0.6 * (big.n_triangles + other.n_triangles)
    assert 5_000 < coarse_total < 40_000  # near the budget, not collapsed
    still = render_image(scene, size=SIZE)
    scene.begin_interaction()
    assert all(actor.GetMapper() is not full[name] for name, actor in scene.label_actors.items())
    # the coarse copies stay culled (half the fragments once the surfaces fill the picture): the
    # few triangles clustering flips are turned back, so culling opens no hole
    assert all(actor.prop.culling == "back" for actor in scene.label_actors.values())
    moving = render_image(scene, size=SIZE)
    for actor in scene.label_actors.values():
        actor.prop.culling = "none"
    both_sides = render_image(scene, size=SIZE)
    for actor in scene.label_actors.values():
        actor.prop.culling = "back"
    assert (np.abs(both_sides.astype(int) - moving).max(axis=-1) > 30).sum() < 0.001 * moving.shape[0] * moving.shape[1]
    scene.end_interaction()
    assert all(actor.GetMapper() is full[name] for name, actor in scene.label_actors.items())
    assert all(actor.prop.culling == "back" for actor in scene.label_actors.values())
    # the coarse copies still show both spheres in their colours, where they were
    for colour in (RED, BLUE):
        assert abs(colour_mask(moving, colour).sum() - colour_mask(still, colour).sum()) < 0.1 * colour_mask(still, colour).sum()
    assert np.array_equal(render_image(scene, size=SIZE), still)


def test_coarse_copies_wound_against_their_neighbours_are_turned_over():
    from viz3d.surfaces.polydata import polydata_arrays, to_polydata
    from viz3d.scene.scene import _consistently_wound

    ball = sphere("ball", (0, 0, 0), 10, RED, n=12)
    faces = np.array(ball.faces)
    broken = faces.copy()
    broken[[3, 40, 41, 100]] = broken[[3, 40, 41, 100]][:, ::-1]
    poly = to_polydata(ball.vertices, broken)
    _, repaired = polydata_arrays(_consistently_wound(poly))
    np.testing.assert_array_equal(repaired, faces)
    whole = to_polydata(ball.vertices, faces)
    assert _consistently_wound(whole) is whole  # nothing to turn: the same surface


@pytest.mark.parametrize("kind", ["axis-aligned", "oblique"])
def test_interaction_draws_bone_in_one_pass_and_keeps_the_planes(kind, scenes):
    """While dragging, bone skips the OIT pass; the planes (one textured quad each) stay as they
    are; the picture stays where it was."""
    ct = synthetic_ct(oblique_affine() if kind == "oblique" else None)
    bone = sphere("bone", ct.affine[:3, :3] @ [30, 25, 20] + ct.affine[:3, 3], 15, (0.9, 0.85, 0.8), kind="bone")
    scene = build_scene([bone], ct, off_screen=True, interactive=False, size=SIZE, view="inferior")
    scenes.append(scene)
    renderer = scene.plotter.renderer
    assert renderer.GetUseOIT()
    still = render_image(scene, size=SIZE)
    scene.build_lod()
    scene.begin_interaction()
    assert scene.interacting and not renderer.GetUseOIT()
    moving = render_image(scene, size=SIZE)
    # the same picture up to blending: the planes and the bone are where they were
    assert np.mean(np.abs(moving.astype(int) - still.astype(int))) < 8
    scene.end_interaction()
    assert renderer.GetUseOIT()
    assert np.array_equal(render_image(scene, size=SIZE), still)


def test_small_scenes_have_no_coarse_copies(scenes):
    scene = build_scene([sphere("s", (0, 0, 0), 10, RED)], None, off_screen=True, size=SIZE, interactive=False)
    scenes.append(scene)
    mapper = scene.label_actors["s"].GetMapper()
    assert scene.build_lod() == scene.label_actors["s"].GetMapper().GetInput().GetNumberOfPolys()
    scene.begin_interaction()
    assert scene.label_actors["s"].GetMapper() is mapper
    scene.end_interaction()
