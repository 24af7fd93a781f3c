"""Pictures from one scene for galleries and QC: a turntable movie and a labelled multi-view sheet.

Both render off screen from one built `viz3d.scene.scene.Scene` (meshes are built once; only the
camera moves), with the same colours, window and overlays as a screenshot, and write their file
atomically (a hidden temporary file in the same folder, renamed when complete).

- `turntable`: the camera circles the scene about a world axis through its centre (``si``: the
  patient's superior-inferior axis, RAS z; also ``ap`` (y) and ``lr`` (x)), one full turn over
  ``frames`` frames, at a fixed distance that keeps the whole scene in the picture at every
  angle. Written as GIF (Pillow, loops forever) or MP4 (H.264 ``libx264``, ``yuv420p``, through
  imageio's ffmpeg plugin ``imageio-ffmpeg``; MP4 needs an even width and height).
- `view_sheet`: one panel per camera preset, each with its name above it, composed with Pillow
  into one PNG, with the legend in a column of its own at the right (no panel gives it room).

In both, the camera frames the drawn surfaces (not the CT box) and the CT planes placed ``auto``
move for each camera so that they never hide the surfaces (`Scene.place_auto_slices`).

Importing this module is cheap: PyVista, VTK and imageio are imported where they are used.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import Viz3dError
from ..scene.views import SHEET_VIEWS
from .atomic import atomic_path, output_folder
from ..scene.size import check_size
from .render import render_image

TURNTABLE_AXES = {"si": (0.0, 0.0, 1.0), "ap": (0.0, 1.0, 0.0), "lr": (1.0, 0.0, 0.0)}
TURNTABLE_FORMATS = (".gif", ".mp4")
# where a turn starts when the scene's camera looks along the axis: (camera direction, view-up)
_SIDE_START = {"si": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), "ap": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
               "lr": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))}
DEFAULT_FRAMES = 72
GIF_MAX_BYTES = 2 * 2**30  # a GIF is assembled in memory (MP4 frames are streamed to the encoder)
DEFAULT_FPS = 24
SHEET_CAPTION_HEIGHT = 30
SHEET_BACKGROUND = (26, 28, 36)
SHEET_TEXT = (235, 235, 235)
SHEET_LEGEND_PAD = 8


# --------------------------------------------------------------------------- turntable
def turntable(scene, out_path, *, frames: int = DEFAULT_FRAMES, size=(640, 480), axis: str = "si",
              fps: float = DEFAULT_FPS, progress=None) -> Path:
    """Render one full turn of the camera about ``axis`` and write it as a GIF or MP4 at ``out_path``.

    The turn starts from the scene's current camera direction (its view preset, e.g. anterior)
    and goes counter-clockwise seen from the positive end of the axis (for ``si``: from above,
    anterior -> patient's left -> posterior -> right). The scene's camera is restored
    afterwards. The file is written atomically.

    Parameters
    ----------
    scene : Scene
        A scene from `viz3d.scene.scene.build_scene`.
    out_path : str or path-like
        The ``.gif`` (Pillow, loops forever) or ``.mp4`` (H.264 through imageio-ffmpeg) file.
    frames : int, optional
        Frames in the turn, 2 to 3600 (default 72).
    size : (int, int), optional
        Each frame's (width, height) in pixels; even for an MP4.
    axis : {"si", "ap", "lr"}, optional
        The world axis turned about: superior-inferior (RAS z, default), anterior-posterior
        (y) or left-right (x).
    fps : float, optional
        Frames per second, 0.5 to 120 (default 24).
    progress : callable or None, optional
        If given, called as ``progress(done, total)`` after each frame.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    Viz3dError
        Before anything is drawn: when ``out_path`` is not a ``.gif`` or ``.mp4`` file name or
        its folder is missing; ``axis``, ``frames``, ``fps`` or ``size`` is invalid; an MP4's
        size is odd or its encoder (imageio-ffmpeg) is missing; a GIF would not fit in memory.

    See Also
    --------
    view_sheet : The scene from several presets in one PNG.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> scene = viz3d.build_scene(meshes, off_screen=True, interactive=False)
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     path = turntable(scene, pathlib.Path(folder) / "turn.gif", frames=12, size=(160, 120))  # renders: OpenGL
    ...     print(path.name, path.read_bytes()[:6])
    turn.gif b'GIF89a'
    >>> turntable(scene, "turn.avi")  # refused before anything is drawn
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: turn.avi: a turntable is written as .gif or .mp4; use one of those file names
    >>> scene.close()
    """
    out_path = Path(out_path)
    frames, fps, (width, height) = check_turntable(out_path, frames=frames, fps=fps, size=size, axis=axis)
    suffix = out_path.suffix.lower()
    output_folder(out_path)  # checked before any rendering
    if suffix == ".mp4":
        _ffmpeg_exe()  # fail early, before any rendering, when the encoder is missing

    writer = None
    saved = _save_camera(scene)
    try:
        with atomic_path(out_path) as tmp:
            try:
                _resize(scene, width, height)
                cameras = turntable_cameras(scene, frames, axis)
                images = []
                if suffix == ".mp4":
                    writer = _mp4_writer(tmp, fps)
                for index, (position, up) in enumerate(cameras):
                    camera = scene.plotter.renderer.GetActiveCamera()
                    camera.SetPosition(*position)
                    camera.SetViewUp(*up)
                    scene.place_auto_slices()  # a plane re-sampled only when the turn takes it to the other side
                    scene.plotter.renderer.ResetCameraClippingRange(*scene.bounds)
                    image = render_image(scene, size=(width, height))
                    if writer is not None:
                        writer.append_data(image)
                    else:
                        images.append(image)
                    if progress is not None:
                        progress(index + 1, frames)
                if writer is not None:
                    writer.close()
                    writer = None
                else:
                    _write_gif(tmp, images, fps)
            except BaseException:
                _close_quietly(writer)
                raise
    finally:
        _restore_camera(scene, saved)
    return out_path


def check_turntable(out_path, *, frames: int = DEFAULT_FRAMES, fps: float = DEFAULT_FPS, size=(640, 480),
                    axis: str = "si") -> tuple[int, float, tuple[int, int]]:
    """Check a turntable's file name, frames, speed, size and axis before any loading or drawing,
    as `turntable` does; return ``(frames, fps, (width, height))``.

    Parameters
    ----------
    out_path : str or path-like
        The ``.gif`` or ``.mp4`` to write, in an existing folder.
    frames : int, optional
        Frames in one turn, 2 to 3600.
    fps : float, optional
        Frames per second, 0.5 to 120.
    size : tuple of int, optional
        ``(width, height)`` of each frame; even for MP4 (H.264, yuv420p).
    axis : {"si", "ap", "lr"}, optional
        The world axis the camera turns about.

    Returns
    -------
    tuple
        ``(frames, fps, (width, height))`` as numbers.

    Raises
    ------
    Viz3dError
        Saying which value is wrong and what it may be.

    Examples
    --------
    >>> check_turntable("spin.mp4", frames=36, size=(640, 480))
    (36, 24.0, (640, 480))
    >>> check_turntable("spin.mp4", size=(641, 480))
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: an MP4 (H.264, yuv420p) needs an even width and height, got 641x480
    """
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    if suffix not in TURNTABLE_FORMATS:
        raise Viz3dError(f"{out_path}: a turntable is written as .gif or .mp4; use one of those file names")
    if axis not in TURNTABLE_AXES:
        raise Viz3dError(f"unknown turntable axis {axis!r}; choose one of {', '.join(TURNTABLE_AXES)}")
    try:
        frames = int(frames)
        fps = float(fps)
    except (TypeError, ValueError):
        raise Viz3dError(f"frames and fps must be numbers, got {frames!r}, {fps!r}") from None
    if not 2 <= frames <= 3600:
        raise Viz3dError(f"frames must be between 2 and 3600, got {frames}")
    if not (0.5 <= fps <= 120):
        raise Viz3dError(f"fps must be between 0.5 and 120, got {fps:g}")
    width, height = check_size(size)
    if suffix == ".mp4" and (width % 2 or height % 2):
        raise Viz3dError(f"an MP4 (H.264, yuv420p) needs an even width and height, got {width}x{height}")
    if suffix == ".gif" and frames * width * height * 3 > GIF_MAX_BYTES:
        raise Viz3dError(f"a GIF of {frames} frames of {width}x{height} is too large to assemble "
                         f"({frames * width * height * 3 / 2**30:.1f} GiB of pixels); write an .mp4, or fewer or "
                         "smaller frames")
    output_folder(out_path)
    return frames, fps, (width, height)


def turntable_cameras(scene, frames: int, axis: str = "si") -> list[tuple[np.ndarray, np.ndarray]]:
    """Camera (position, view-up) for each frame of one turn about ``axis`` through the centre of
    the drawn surfaces (`Scene.focus_bounds`).

    The first frame looks from the scene's current camera direction; the distance is the
    largest of the per-frame fits (`Scene.fit_camera`), so the surfaces never leave the picture
    and do not change size while they turn.
    """
    if axis not in TURNTABLE_AXES:
        raise Viz3dError(f"unknown turntable axis {axis!r}; choose one of {', '.join(TURNTABLE_AXES)}")
    b = np.asarray(scene.focus_bounds, float)
    center = np.array([(b[0] + b[1]) / 2, (b[2] + b[3]) / 2, (b[4] + b[5]) / 2])
    camera = scene.plotter.renderer.GetActiveCamera()
    direction = np.array(camera.GetPosition()) - np.array(camera.GetFocalPoint())
    direction /= max(np.linalg.norm(direction), 1e-12)
    up = np.array(camera.GetViewUp(), float)
    rotation_axis = np.array(TURNTABLE_AXES[axis])
    if abs(direction @ rotation_axis) > 0.999:  # looking along the axis: start from a side instead
        direction, up = (np.array(v, float) for v in _SIDE_START[axis])

    rotated = []
    for index in range(frames):
        r = _rotation(rotation_axis, 2 * math.pi * index / frames)
        rotated.append((r @ direction, r @ up))

    def fit(d, u, area):
        camera.SetFocalPoint(*center)
        camera.SetPosition(*(center + d))
        camera.SetViewUp(*u)
        camera.OrthogonalizeViewUp()
        return scene.fit_camera(camera, center, shift=False, areas=[area])

    # one free area for every frame (the window centre stays): the one where the largest of the
    # per-frame fits is nearest
    distance, area = min(((max(fit(d, u, a) for d, u in rotated), a) for a in scene.free_areas()),
                         key=lambda da: da[0])
    fit(*rotated[-1], area)  # leaves the camera's window centre on that area
    focal = np.array(camera.GetFocalPoint())
    return [(focal + d * distance, u) for d, u in rotated]


def _rotation(axis, angle) -> np.ndarray:
    """Rotation matrix for ``angle`` radians about the unit vector ``axis`` (right-hand rule)."""
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    c, s = math.cos(angle), math.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) * c + s * k + (1 - c) * np.outer([x, y, z], [x, y, z])


def _mp4_writer(path, fps):
    import imageio.v2 as imageio

    return imageio.get_writer(
        str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        macro_block_size=2, quality=8, ffmpeg_log_level="error", output_params=["-movflags", "+faststart"],
    )


def _write_gif(path, images, fps) -> None:
    import imageio.v3 as iio

    duration = int(round(1000.0 / fps))  # ms per frame (GIF stores hundredths of a second)
    iio.imwrite(str(path), np.stack(images), extension=".gif", plugin="pillow", duration=duration, loop=0)


def _ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise Viz3dError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or write a .gif)") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise Viz3dError(f"no ffmpeg for MP4 ({exc}); write a .gif instead") from None


def _close_quietly(writer) -> None:
    if writer is None:
        return
    try:
        writer.close()
    except Exception:  # the file is being discarded anyway
        pass


# --------------------------------------------------------------------------- multi-view sheet
def view_sheet(scene, out_path, *, views=SHEET_VIEWS, size=(640, 480), columns: int | None = None,
               legend: str = "side") -> Path:
    """Render ``scene`` from each camera preset in ``views`` and write one labelled PNG sheet.

    Each panel has the view's name in a caption bar above it; panels go left to right.
    Each panel frames the drawn surfaces and places the ``auto`` planes for its view. The
    scene's camera, planes and legend are restored afterwards. The file is written atomically.

    Parameters
    ----------
    scene : Scene
        A scene from `viz3d.scene.scene.build_scene`.
    out_path : str or path-like
        The ``.png`` file to write.
    views : sequence of str, optional
        Camera presets (`viz3d.scene.scene.VIEWS`), one panel each (default: anterior, left,
        posterior, right).
    size : (int, int), optional
        Each panel's (width, height) in pixels.
    columns : int or None, optional
        Panels per row (default: all in one row up to 4, else the smallest square-ish grid).
    legend : {"side", "first", "all", "none"}, optional
        ``"side"`` (default: every structure named in a column of its own at the right of the
        sheet, or in a band under the panels when the sheet is too low for the names; every
        panel left whole to its view), ``"first"`` (the label legend only in the first
        panel), ``"all"`` or ``"none"``.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    Viz3dError
        Before anything is drawn: when ``out_path`` is not a ``.png`` file name or its folder
        is missing; no view is given or one is unknown; ``legend`` or ``size`` is invalid.

    See Also
    --------
    turntable : The scene turning, as a movie.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> scene = viz3d.build_scene(meshes, off_screen=True, interactive=False)
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     path = view_sheet(scene, pathlib.Path(folder) / "sheet.png", size=(160, 120))  # renders: OpenGL
    ...     print(path.name, path.read_bytes()[:4])
    sheet.png b'\\x89PNG'
    >>> view_sheet(scene, "sheet.png", views=["anterior", "top"])  # refused before anything is drawn
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: unknown view 'top'; choose from anterior, posterior, left, right, superior, inferior, iso
    >>> scene.close()
    """
    from ..scene.scene import VIEW_DIRECTIONS, VIEWS

    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise Viz3dError(f"{out_path}: a view sheet is written as PNG; use a .png file name")
    views = [str(v).strip().lower() for v in views]
    views = [v for v in views if v]
    if not views:
        raise Viz3dError("give at least one view for the sheet")
    unknown = [v for v in views if v not in VIEW_DIRECTIONS]
    if unknown:
        raise Viz3dError(f"unknown view {unknown[0]!r}; choose from {', '.join(VIEWS)}")
    if legend not in ("side", "first", "all", "none"):
        raise Viz3dError(f"legend must be 'side', 'first', 'all' or 'none', got {legend!r}")
    width, height = check_size(size)
    n = len(views)
    if columns is None:
        columns = n if n <= 4 else math.ceil(math.sqrt(n))
    columns = max(1, min(int(columns), n))
    rows = math.ceil(n / columns)
    output_folder(out_path)  # checked before any rendering

    from PIL import Image, ImageDraw

    from ..scene.scene import legend_picture

    box = scene.legend
    legend_shown = bool(box is not None and box.GetVisibility())
    side, below = None, None
    panels_width, panels_height = columns * width, rows * (height + SHEET_CAPTION_HEIGHT)
    if legend == "side" and legend_shown and scene.legend_entries:
        max_width = max(panels_width * 0.45, 160)
        side = legend_picture(scene.legend_entries, max_width, panels_height - SHEET_CAPTION_HEIGHT - SHEET_LEGEND_PAD,
                              title=scene.legend_title)
        if side.width > max_width:  # too many names for the sheet's height: a band under the panels
            side = None
            for band in range(60, 4000, 20):
                below = legend_picture(scene.legend_entries, panels_width - 2 * SHEET_LEGEND_PAD, band,
                                       title=scene.legend_title)
                if below.width <= panels_width - 2 * SHEET_LEGEND_PAD:
                    break
    side_width = side.width + 2 * SHEET_LEGEND_PAD if side is not None else 0
    below_height = below.height + 2 * SHEET_LEGEND_PAD if below is not None else 0
    sheet = Image.new("RGB", (panels_width + side_width, panels_height + below_height), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(int(SHEET_CAPTION_HEIGHT * 0.6))
    saved = _save_camera(scene)
    if side is not None:
        sheet.paste(side, (panels_width + SHEET_LEGEND_PAD, SHEET_CAPTION_HEIGHT))
    if below is not None:
        sheet.paste(below, (SHEET_LEGEND_PAD, panels_height + SHEET_LEGEND_PAD))
    try:
        _resize(scene, width, height)
        for index, name in enumerate(views):
            if legend_shown:
                box.SetVisibility(legend == "all" or (legend == "first" and index == 0))
            scene.set_view(name)
            image = render_image(scene, size=(width, height))
            col, row = index % columns, index // columns
            x0, y0 = col * width, row * (height + SHEET_CAPTION_HEIGHT)
            sheet.paste(Image.fromarray(image), (x0, y0 + SHEET_CAPTION_HEIGHT))
            text = name
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            draw.text((x0 + (width - (right - left)) / 2 - left, y0 + (SHEET_CAPTION_HEIGHT - (bottom - top)) / 2 - top),
                      text, fill=SHEET_TEXT, font=font)
            if col:  # a thin separator between panels
                draw.line([(x0, y0), (x0, y0 + height + SHEET_CAPTION_HEIGHT - 1)], fill=(70, 72, 80))
    finally:
        if legend_shown:
            box.SetVisibility(True)
        _restore_camera(scene, saved)

    with atomic_path(out_path) as tmp:
        sheet.save(tmp, format="PNG")
    return out_path


def _font(pixels: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=pixels)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


# --------------------------------------------------------------------------- shared helpers
def _resize(scene, width, height) -> None:
    """Size the scene's window as the pictures will be, so camera fits use their aspect ratio."""
    window = scene.plotter.render_window
    if window is None:
        raise Viz3dError("this scene's window has been closed; build the scene again")
    window.SetSize(width, height)


def _save_camera(scene):
    window = scene.plotter.render_window
    camera = scene.plotter.renderer.GetActiveCamera()
    return (tuple(window.GetSize()) if window is not None else None, scene.view,
            camera.GetPosition(), camera.GetFocalPoint(), camera.GetViewUp(), camera.GetWindowCenter(),
            scene.slice_positions)


def _restore_camera(scene, saved) -> None:
    size, view, position, focal, up, window_center, slices = saved
    window = scene.plotter.render_window
    if window is None:
        return
    if size and size != (0, 0):
        window.SetSize(*size)
    camera = scene.plotter.renderer.GetActiveCamera()
    camera.SetPosition(*position)
    camera.SetFocalPoint(*focal)
    camera.SetViewUp(*up)
    camera.SetWindowCenter(*window_center)
    scene.view = view
    for axis, where in slices.items():
        scene.move_slice(axis, where, render=False)
    scene.layout_legend()
    scene.plotter.renderer.ResetCameraClippingRange(*scene.bounds)
