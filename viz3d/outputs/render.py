"""Pictures of a `viz3d.scene.scene.Scene`: its pixels and PNG screenshots.

Importing this module is cheap: PyVista and VTK are imported inside the functions that use them.
Headless rendering (VTK's EGL window without a display) is set up by
`viz3d.runtime.configure_offscreen`, which `viz3d.scene.scene` calls before its own imports.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path, check_output_file
from ..errors import Viz3dError
from ..scene.size import DEFAULT_SIZE, check_size


def render_image(scene, *, size=DEFAULT_SIZE):
    """Render ``scene`` at ``size`` (width, height) and return the RGB pixels, ``(height, width, 3)`` uint8.

    Works before the window is shown (off screen: nothing appears). The window size is
    restored afterwards, so an interactive window keeps its size.
    """
    width, height = check_size(size)
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
    """Render ``scene`` off screen and write it as a PNG at ``out_path``.

    The file is written atomically: the picture goes to a hidden temporary file in the same
    folder (``.NAME.tmp-XXXX.png``) which then replaces ``out_path``, so a failure at any point
    leaves neither a partial PNG nor the temporary file behind.

    The camera is not moved: `build_scene` fitted it to the scene's own window size, so build
    the scene with the same ``size`` (or call ``scene.set_view(scene.view)`` after resizing)
    when the picture's aspect ratio differs much.

    Parameters
    ----------
    scene : Scene
        A scene from `viz3d.scene.scene.build_scene`.
    out_path : str or path-like
        The ``.png`` file to write (replaced if it exists).
    size : (int, int), optional
        The picture's (width, height) in pixels, each from 16 to 16384.

    Returns
    -------
    pathlib.Path
        ``out_path``.

    Raises
    ------
    Viz3dError
        Naming it, when ``out_path`` is not a ``.png`` file name, is a folder, or its folder
        is missing or unwritable; when ``size`` is invalid or the scene's window was closed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> scene = viz3d.build_scene(meshes, off_screen=True, interactive=False)
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     path = screenshot(scene, pathlib.Path(folder) / "scene.png")  # renders: needs OpenGL (EGL)
    ...     print(path.name, path.read_bytes()[:4])
    scene.png b'\\x89PNG'
    >>> screenshot(scene, "scene.jpg")  # refused before anything is drawn
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: scene.jpg: screenshots are written as PNG; use a .png file name
    >>> scene.close()
    """
    out_path = check_output_file(out_path, (".png",), "screenshots are written as PNG")
    width, height = check_size(size)

    with atomic_path(out_path) as tmp:
        image = render_image(scene, size=(width, height))
        from PIL import Image  # a dependency of PyVista

        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(tmp, format="PNG")
    return out_path
