"""Turntable movies and multi-view sheets, checked by the frames and panels they contain.

Everything renders off screen from small synthetic scenes: a red sphere at the patient's left
(-x), a blue one at the right (+x), a green one anterior (+y) and a grey CT with a ball in it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shapes import uv_sphere

from viz3d.runtime import configure_offscreen

configure_offscreen()

from viz3d.errors import Viz3dError  # noqa: E402
from viz3d.outputs.motion import SHEET_CAPTION_HEIGHT, turntable, turntable_cameras, view_sheet  # noqa: E402
from viz3d.scene.scene import build_scene  # noqa: E402
from viz3d.io.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RED, BLUE, GREEN = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.8, 0.0)
SIZE = (160, 120)


def sphere(name, center, radius, color, n=12):
    """A closed UV sphere as a label Mesh."""
    return uv_sphere(name, center, radius, color, "label", n)


MESHES = [sphere("left", (-40, 0, 0), 12, RED), sphere("right", (40, 0, 0), 12, BLUE),
          sphere("anterior", (0, 40, 0), 12, GREEN)]


def small_ct():
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-60.0, -60.0, -40.0]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (31, 31, 21)], indexing="ij"), -1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    array = np.full((31, 31, 21), -1000, np.int16)
    array[np.linalg.norm(world, axis=-1) < 30] = 60
    return Volume(array, affine)


def colour_mask(image, rgb, cos_min=0.97, min_bright=40):
    img = image[..., :3].astype(float)
    target = np.asarray(rgb, float) / np.linalg.norm(rgb)
    cos = (img @ target) / np.maximum(np.linalg.norm(img, axis=-1), 1e-9)
    return (cos > cos_min) & (img.max(axis=-1) > min_bright)


def centre_x(image, rgb):
    cols = np.nonzero(colour_mask(image, rgb))[1]
    assert len(cols) > 10, f"colour {rgb} not in the picture"
    return cols.mean() / image.shape[1]


@pytest.fixture
def scene():
    made = build_scene(MESHES, small_ct(), off_screen=True, interactive=False, size=SIZE, view="anterior",
                       show_slices=False)
    made.legend.SetVisibility(False)  # keep the legend out of the colour checks
    made.set_view("anterior")
    yield made
    made.close()


# --------------------------------------------------------------------------- turntable
def test_gif_turntable_turns_about_the_si_axis(tmp_path, scene):
    import imageio.v3 as iio
    from PIL import Image

    camera = scene.plotter.renderer.GetActiveCamera()
    before = (camera.GetPosition(), camera.GetViewUp(), scene.view)
    calls = []
    out = turntable(scene, tmp_path / "spin.gif", frames=12, size=SIZE, progress=lambda d, t: calls.append((d, t)))
    assert out == tmp_path / "spin.gif"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spin.gif"]  # no temporary file left
    assert calls == [(i, 12) for i in range(1, 13)]
    assert (camera.GetPosition(), camera.GetViewUp(), scene.view) == before  # the scene's camera is back

    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 12 and im.size == SIZE
        assert im.info.get("loop") == 0  # loops forever
    frames = iio.imread(out, index=None)[..., :3]
    assert frames.shape == (12, SIZE[1], SIZE[0], 3)
    diffs = [np.abs(frames[i].astype(int) - frames[(i + 1) % 12]).mean() for i in range(12)]
    assert min(diffs) > 0.5, diffs  # every frame differs from the next one
    # frame 0 from anterior: the patient's left (red) on the viewer's right
    assert centre_x(frames[0], RED) > centre_x(frames[0], BLUE)
    # a quarter turn counter-clockwise seen from above: camera at the patient's left, anterior (green) on the left
    assert centre_x(frames[3], GREEN) < 0.45
    # half a turn: from posterior, the patient's left on the viewer's left
    assert centre_x(frames[6], RED) < centre_x(frames[6], BLUE)


def test_mp4_turntable_is_h264_with_the_frames_asked_for(tmp_path, scene):
    import imageio_ffmpeg

    out = turntable(scene, tmp_path / "spin.mp4", frames=8, size=SIZE, fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spin.mp4"]
    nframes, seconds = imageio_ffmpeg.count_frames_and_secs(str(out))
    assert nframes == 8 and seconds == pytest.approx(0.8, abs=0.15)
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and tuple(meta["size"]) == SIZE
    frames = [np.frombuffer(f, np.uint8).reshape(SIZE[1], SIZE[0], 3) for f in reader]
    assert len(frames) == 8
    assert all(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(frames, frames[1:]))


@pytest.mark.parametrize("axis, index", [("si", 2), ("ap", 1), ("lr", 0)])
def test_turntable_cameras_circle_the_axis_at_one_distance(scene, axis, index):
    cameras = turntable_cameras(scene, 16, axis)
    focal = np.array(scene.plotter.renderer.GetActiveCamera().GetFocalPoint())
    offsets = np.array([position - focal for position, _ in cameras])
    distances = np.linalg.norm(offsets, axis=1)
    assert np.ptp(distances) < 1e-6 * distances.max()  # a circle: no zooming while turning
    assert np.abs(offsets[:, index]).max() < 1e-6 * distances.max()  # in the plane across the axis
    angles = np.unwrap(np.arctan2(*offsets[:, [i for i in range(3) if i != index]].T[::-1]))
    assert abs(abs(angles[-1] - angles[0]) - 2 * np.pi * 15 / 16) < 1e-6  # one full turn in equal steps


def test_turntable_errors_leave_nothing_behind(tmp_path, scene, monkeypatch):
    with pytest.raises(Viz3dError, match="even"):
        turntable(scene, tmp_path / "odd.mp4", frames=4, size=(161, 120))
    with pytest.raises(Viz3dError, match=r"\.gif or \.mp4"):
        turntable(scene, tmp_path / "spin.avi", frames=4, size=SIZE)
    with pytest.raises(Viz3dError, match="axis"):
        turntable(scene, tmp_path / "spin.gif", frames=4, size=SIZE, axis="xy")
    with pytest.raises(Viz3dError, match="frames"):
        turntable(scene, tmp_path / "spin.gif", frames=1, size=SIZE)
    with pytest.raises(Viz3dError, match="does not exist"):
        turntable(scene, tmp_path / "missing" / "spin.gif", frames=4, size=SIZE)

    target = tmp_path / "spin.gif"
    target.write_bytes(b"old")
    import viz3d.outputs.motion as motion

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(motion, "render_image", broken)
    with pytest.raises(Viz3dError, match="No space"):
        turntable(scene, target, frames=4, size=SIZE)
    assert target.read_bytes() == b"old"  # the old file survives, no temporary is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spin.gif"]


# --------------------------------------------------------------------------- sheet
def test_view_sheet_has_one_labelled_panel_per_view(tmp_path, scene):
    from PIL import Image

    views = ["anterior", "left", "posterior", "right"]
    out = view_sheet(scene, tmp_path / "sheet.png", views=views, size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size == (4 * SIZE[0], SIZE[1] + SHEET_CAPTION_HEIGHT)  # one row of four panels
        sheet = np.asarray(im.convert("RGB"))
    panels = [sheet[SHEET_CAPTION_HEIGHT:, i * SIZE[0]:(i + 1) * SIZE[0]] for i in range(4)]
    captions = [sheet[:SHEET_CAPTION_HEIGHT, i * SIZE[0] + 2:(i + 1) * SIZE[0] - 2] for i in range(4)]
    for caption in captions:  # light text on the dark caption bar
        assert (caption.min(axis=-1) > 150).sum() > 20
    # the captions say different things (the view names, of different widths)
    widths = [np.ptp(np.nonzero((c.min(axis=-1) > 150).any(axis=0))[0]) for c in captions]
    assert len(set(widths)) >= 3
    for panel in panels:
        assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 50  # a rendered scene, not blank
    anterior, left, posterior, right = panels
    assert centre_x(anterior, RED) > centre_x(anterior, BLUE)  # anterior: patient's left on the right
    assert centre_x(posterior, RED) < centre_x(posterior, BLUE)
    assert centre_x(left, GREEN) < 0.5 < centre_x(right, GREEN)  # anterior on the left from the left side
    assert scene.view == "anterior"  # the scene's camera is back

    grid = view_sheet(scene, tmp_path / "grid.png", views=views + ["superior", "iso"], size=(80, 60))
    with Image.open(grid) as im:
        assert im.size == (3 * 80, 2 * (60 + SHEET_CAPTION_HEIGHT))  # six views: three columns, two rows
    with pytest.raises(Viz3dError, match="unknown view"):
        view_sheet(scene, tmp_path / "bad.png", views=["front"], size=SIZE)
    with pytest.raises(Viz3dError, match="PNG"):
        view_sheet(scene, tmp_path / "sheet.jpg", views=views, size=SIZE)


# --------------------------------------------------------------------------- command line
def test_turntable_and_sheet_commands_on_the_real_sample(tmp_path, sample_dir):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    base = [sys.executable, "-m", "viz3d"]
    inputs = [str(sample_dir / "ct.nii.gz"), "--label", str(sample_dir / "label.nii.gz"),
              "--label-table", "totalsegmentator", "--no-bone"]
    spin = subprocess.run(base + ["turntable", *inputs, "--out", str(tmp_path / "spin.gif"), "--frames", "6",
                                  "--size", "96x72", "--no-legend"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert spin.returncode == 0, spin.stderr
    assert "6 frames" in spin.stderr
    from PIL import Image

    with Image.open(tmp_path / "spin.gif") as im:
        assert im.n_frames == 6 and im.size == (96, 72)

    sheet = subprocess.run(base + ["screenshot", *inputs, "--out", str(tmp_path / "sheet.png"),
                                   "--views", "anterior,left,posterior,right", "--size", "96x72", "-q"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert sheet.returncode == 0, sheet.stderr
    with Image.open(tmp_path / "sheet.png") as im:
        # four panels in a row, and the legend naming all 41 structures in a band under them (too many
        # names for a 72-pixel column)
        assert im.size[0] == 4 * 96 and im.size[1] > 72 + SHEET_CAPTION_HEIGHT + 60

    bad = subprocess.run(base + ["turntable", *inputs, "--out", str(tmp_path / "odd.mp4"), "--size", "97x72"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert bad.returncode == 2 and "even" in bad.stderr
    bad = subprocess.run(base + ["screenshot", *inputs, "--out", str(tmp_path / "x.png"), "--views", "front"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert bad.returncode == 2 and "views" in bad.stderr
