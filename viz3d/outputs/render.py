"""Headless plumbing and picture output for a `viz3d.scene.scene.Scene`.

Importing this module is cheap: PyVista and VTK are imported inside the functions that use them.

Without a display (no ``DISPLAY`` and no ``WAYLAND_DISPLAY``), `configure_offscreen` must run
before VTK is first imported: it selects VTK's EGL render window (Mesa EGL, no X server needed,
no "bad X server connection" warning) and makes PyVista plot off screen. `viz3d.scene.scene` calls it
before its own imports, so code that only goes through `build_scene` / `screenshot` needs
nothing else.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from ..errors import Viz3dError

DEFAULT_SIZE = (1024, 768)


def has_display() -> bool:
    """True when an X11 or Wayland display is named in the environment."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure_offscreen() -> None:
    """Prepare headless rendering when there is no display; a no-op when there is one.

    Sets ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` (unless already set) so VTK renders
    through EGL instead of trying to reach an X server, and sets ``pyvista.OFF_SCREEN = True``
    if PyVista is already imported (`import_pyvista` does it for a later import). Call it before
    VTK is imported: VTK picks its window class when the first render window is created.
    """
    if has_display():
        return
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    pv = sys.modules.get("pyvista")
    if pv is not None:
        pv.OFF_SCREEN = True


_background_import: threading.Thread | None = None


def import_pyvista():
    """Import and return :mod:`pyvista` after `configure_offscreen` (the one entry point for it)."""
    configure_offscreen()
    worker = _background_import
    if worker is not None and worker is not threading.current_thread():
        worker.join()  # PyVista's lazy modules are not safe to use while another thread imports them
    import pyvista

    if not has_display():
        pyvista.OFF_SCREEN = True
    return pyvista


def import_pyvista_soon(first: tuple[str, ...] = ()) -> None:
    """Start importing PyVista in a background thread; `import_pyvista` later finds it done.

    The import costs 1-1.5 s (PyVista pulls in matplotlib): a command that loads or meshes
    first overlaps the two. The modules named in ``first`` are imported before it: while
    VTK's libraries load, an import in another thread waits (here the whole PyVista import
    long), so a command that will load and mesh names the modules that needs. A failure here
    is left to the later import to report.
    """
    global _background_import
    configure_offscreen()
    if "pyvista.plotting" not in sys.modules and _background_import is None:
        # not a daemon: an early exit waits for it rather than tearing VTK down mid-import
        _background_import = threading.Thread(target=_import_quietly, args=(first,), name="viz3d-import-pyvista")
        _background_import.start()


def _import_quietly(first: tuple[str, ...] = ()) -> None:
    import importlib

    for name in first:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported by the import that needs it
            pass
    try:
        import_pyvista()
        import pyvista.plotting  # noqa: F401 - the Plotter: most of the cost
    except Exception:  # noqa: BLE001 - reported by the import that needs it
        pass


def render_image(scene, *, size=DEFAULT_SIZE):
    """Render ``scene`` at ``size`` (width, height) and return the RGB pixels, ``(height, width, 3)`` uint8.

    Works before the window is shown (off screen: nothing appears). The window size is
    restored afterwards, so an interactive window keeps its size.
    """
    width, height = _check_size(size)
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    window = scene.plotter.render_window
    if window is None:
        raise Viz3dError("this scene's window has been closed; build the scene again")
    old_size = tuple(window.GetSize())
    try:
        window.SetSize(width, height)
        window.Render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()  # the frame just drawn (off-screen windows have no front buffer)
        grab.ShouldRerenderOff()  # it was drawn just above: a second draw doubles the time to the picture
        grab.Update()
        output = grab.GetOutput()
        w, h, _ = output.GetDimensions()
        image = vtk_to_numpy(output.GetPointData().GetScalars()).reshape(h, w, -1)[::-1, :, :3]
    finally:
        if old_size != (width, height) and old_size != (0, 0):
            window.SetSize(*old_size)
    if image.shape[:2] != (height, width):
        raise RuntimeError(f"renderer returned a {(image.shape[1], image.shape[0])} image, expected {(width, height)}")
    return np.ascontiguousarray(image)


def screenshot(scene, out_path, *, size=DEFAULT_SIZE) -> Path:
    """Render ``scene`` off screen and write it as a PNG at ``out_path``; return the path.

    The file is written atomically: the picture goes to a hidden temporary file in the same
    folder (``.NAME.tmp-XXXX.png``) which then replaces ``out_path``, so a failure at any point
    leaves neither a partial PNG nor the temporary file behind. A missing or unwritable folder,
    or an ``out_path`` that is not a ``.png`` file, raises `Viz3dError` naming it.

    The camera is not moved: `build_scene` fitted it to the scene's own window size, so build
    the scene with the same ``size`` (or call ``scene.set_view(scene.view)`` after resizing)
    when the picture's aspect ratio differs much.
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise Viz3dError(f"{out_path}: screenshots are written as PNG; use a .png file name")
    if out_path.is_dir():
        raise Viz3dError(f"{out_path}: is a folder, expected a .png file name")
    folder = out_path.parent
    if not folder.is_dir():
        raise Viz3dError(f"{folder}: output folder does not exist (or is not a folder)")
    width, height = _check_size(size)

    with atomic_path(out_path) as tmp:
        image = render_image(scene, size=(width, height))
        from PIL import Image  # a dependency of PyVista

        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    return out_path


def _check_size(size) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise Viz3dError(f"image size must be (width, height) in pixels, got {size!r}") from None
    if not (16 <= width <= 16384 and 16 <= height <= 16384):
        raise Viz3dError(f"image size must be between 16 and 16384 pixels per side, got {width}x{height}")
    return width, height
