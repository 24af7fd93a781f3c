"""The scene inline in a Jupyter notebook: interactive where PyVista's trame backend is installed,
a static picture otherwise.

    import viz3d
    viz3d.show_in_notebook(meshes, ct)          # or viz3d.show_in_notebook(scene)

The interactive view is PyVista's notebook backend (``jupyter_backend="trame"``, from the
``trame-pyvista`` package with its Jupyter extras: ``pip install 'viz3d[notebook]'``): the
same VTK scene rendered by the kernel, turned with the mouse in the cell. Without it (or
outside a Jupyter kernel) the cell shows a PNG of the scene, rendered off screen, with a
warning that says what to install.
"""
from __future__ import annotations

import io
import warnings
from importlib.util import find_spec

from ..errors import Viz3dError

NOTEBOOK_SIZE = (900, 600)
# module -> package to install, for the interactive notebook backend
NOTEBOOK_PACKAGES = {"trame_pyvista": "trame-pyvista", "IPython": "ipython", "nest_asyncio2": "nest-asyncio2"}


class StaticPicture:
    """A rendered PNG that Jupyter shows inline (``_repr_png_``); ``data`` holds the PNG bytes."""

    def __init__(self, data: bytes, size: tuple[int, int]):
        self.data = data
        self.size = size

    def _repr_png_(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<viz3d StaticPicture {self.size[0]}x{self.size[1]} PNG, {len(self.data)} bytes>"


def missing_notebook_packages() -> list[str]:
    """Packages the interactive notebook view needs that are not installed (empty: all there)."""
    return [package for module, package in NOTEBOOK_PACKAGES.items() if find_spec(module) is None]


def show_in_notebook(scene, ct=None, *, backend: str = "trame", size=NOTEBOOK_SIZE, interactive: bool | None = None,
                     **scene_kwargs):
    """Show a scene in the notebook cell; return what the cell displays.

    The view is interactive when PyVista's trame backend is installed and this runs in a
    Jupyter kernel, and a static PNG otherwise (with a `UserWarning` saying why).

    Parameters
    ----------
    scene : Scene or list of Mesh
        A built `Scene`, or meshes: then the scene is built here from ``scene`` and ``ct``
        with ``scene_kwargs`` for `viz3d.scene.scene.build_scene` (``view="iso"`` and
        ``interactive=False`` unless given).
    ct : Volume or None, optional
        The CT, with meshes only.
    backend : str, optional
        PyVista's ``jupyter_backend`` (``"trame"``, ``"server"``, ``"client"``).
    size : (int, int), optional
        The view's (width, height) in pixels.
    interactive : bool or None, optional
        None (default): interactive where possible, as above; True insists on the interactive
        view (an error says what is missing); False always gives the picture.
    **scene_kwargs
        `viz3d.scene.scene.build_scene`'s options, with meshes only.

    Returns
    -------
    object
        The interactive viewer (PyVista's), or the picture: an ``IPython.display.Image``, or
        a `StaticPicture` (PNG bytes that notebooks display) without IPython.

    Raises
    ------
    Viz3dError
        When a built scene is given with ``ct`` or ``scene_kwargs``; ``size`` is invalid;
        ``interactive=True`` and the notebook packages are missing or this is no Jupyter
        kernel; and as `viz3d.scene.scene.build_scene` for invalid scene options.

    Examples
    --------
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> show_in_notebook(meshes, interactive=False)  # doctest: +SKIP
    <IPython.core.display.Image object>
    >>> scene = viz3d.build_scene(meshes, off_screen=True, interactive=False)
    >>> show_in_notebook(scene, view="left")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: give either a built Scene, or meshes (and a CT and scene options), not both
    >>> scene.close()
    """
    from ..scene.size import check_size
    from .render import render_image

    width, height = check_size(size)
    scene = _as_scene(scene, ct, (width, height), scene_kwargs)
    missing = missing_notebook_packages()
    in_kernel = bool(getattr(scene.plotter, "notebook", False))
    if interactive is None:
        interactive = not missing and in_kernel
        if not interactive:
            reason = (f"the interactive view needs {', '.join(missing)} (pip install 'viz3d[notebook]')" if missing
                      else "not running in a Jupyter kernel")
            warnings.warn(f"showing a static picture of the scene: {reason}", UserWarning, stacklevel=2)
    elif interactive and missing:
        raise Viz3dError(f"the interactive notebook view needs {', '.join(missing)}: pip install 'viz3d[notebook]'")
    elif interactive and not in_kernel:
        raise Viz3dError("the interactive notebook view works in a Jupyter kernel only; use interactive=False here")
    if interactive:
        import trame_pyvista  # noqa: F401  (registers PyVista's trame notebook backends)

        return scene.plotter.show(jupyter_backend=backend, return_viewer=True, window_size=(width, height))

    from PIL import Image

    image = render_image(scene, size=(width, height))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    data = buffer.getvalue()
    try:
        from IPython.display import Image as IPythonImage
    except ImportError:
        return StaticPicture(data, (width, height))
    return IPythonImage(data=data, format="png")


def _as_scene(scene, ct, size, scene_kwargs):
    from ..scene.scene import Scene

    if isinstance(scene, Scene):
        if ct is not None or scene_kwargs:
            raise Viz3dError("give either a built Scene, or meshes (and a CT and scene options), not both")
        return scene
    from .. import build_scene

    scene_kwargs.setdefault("interactive", False)
    scene_kwargs.setdefault("view", "iso")
    return build_scene(scene, ct, size=size, **scene_kwargs)
