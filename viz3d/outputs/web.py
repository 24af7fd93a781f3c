"""The scene in a web browser: a served interactive view (trame) and a self-contained HTML file.

`serve` shows a `viz3d.scene.scene.Scene` in a browser through trame (the framework behind PyVista's
browser and notebook views): the server renders the very same VTK scene off screen (same
meshes, colours, CT slices, window/level, legend and orientation cube) and streams the frames
to the page; mouse drags rotate, pan and zoom the camera. A side panel has the controls of the
desktop window: window presets and centre/width, the three slice positions, show/hide bone,
labels and slices, and the camera presets. It listens on 127.0.0.1 unless told otherwise, so
from a laptop it is reached through an SSH tunnel (`ssh_hint`).

`write_html` writes one HTML file that shows the scene with vtk.js, with no server and no
network: the page embeds the vtk.js viewer (trame-vtk's offline viewer) and the scene's data.
vtk.js cannot draw VTK's image slices, so the file gets the three CT planes as flat polygon
grids coloured with the windowed grey values, a legend written in HTML (vtk.js cannot draw
VTK's legend either) and an orientation marker drawn by the page beside the view, and the page
frames the surfaces as the scene does, in the view's own size (`html_frame`).

Importing this module is cheap: trame, PyVista and VTK are imported where they are used.
"""
from __future__ import annotations

import base64
import html as _html
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_path, check_output_file
from ..errors import Viz3dError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
VIEW_LABELS = {
    "anterior": "Anterior", "posterior": "Posterior", "left": "Left", "right": "Right",
    "superior": "Superior", "inferior": "Inferior", "iso": "Iso",
}
# most samples per side of a CT plane in the HTML file (keeps the file small for 0.5 mm CTs)
HTML_SLICE_MAX_SAMPLES = 384
# most points the HTML page frames the surfaces by (the corners of their convex hull)
HTML_FRAME_MAX_POINTS = 4000
# the HTML page's orientation marker: its side in CSS pixels
HTML_MARKER_PX = 112


def missing_web_packages() -> list[str]:
    """Names of the packages `serve` / `write_html` need that are not installed (empty: all there)."""
    from importlib.util import find_spec

    return [name for name, module in (("trame", "trame"), ("trame-vtk", "trame_vtk"), ("trame-vuetify", "trame_vuetify"))
            if find_spec(module) is None]


def _require_web_packages(what: str) -> None:
    missing = missing_web_packages()
    if missing:
        raise Viz3dError(f"{what} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def ssh_hint(port: int, host: str = DEFAULT_HOST) -> str:
    """The command a laptop user runs to reach a server's ``host:port`` as ``localhost:port``."""
    target = "localhost" if host in _LOOPBACK + ("0.0.0.0", "::", "") else host
    return f"ssh -L {port}:{target}:{port} user@server"


# --------------------------------------------------------------------------- the served view
def serve(
    scene,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    title: str | None = None,
    announce=None,
    quiet: bool = False,
) -> int:
    """Serve ``scene`` to web browsers at ``http://host:port/`` until Ctrl-C or SIGTERM.

    While the browser drags the camera or a slider, the scene draws cheaply
    (`Scene.begin_interaction`) and the full frame follows on release. Blocks in the calling
    thread, which also does the rendering; SIGINT and SIGTERM stop the server and return
    normally.

    Parameters
    ----------
    scene : Scene
        A scene built off screen, best with ``interactive=False`` (the page has its own
        controls).
    host : str, optional
        The address to listen on (default ``127.0.0.1``: reach it from a laptop through an
        SSH tunnel, `ssh_hint`).
    port : int, optional
        The port, 0 to 65535 (default 8080); 0 picks a free port.
    title : str or None, optional
        The page's title and heading (default ``viz3d — <case name>``, `page_title`).
    announce : callable or None, optional
        Called as ``announce(url, port)`` once the server listens (default: print the URL on
        stdout and, unless ``quiet``, the SSH tunnel hint on stderr).
    quiet : bool, optional
        Leave out the SSH tunnel hint.

    Returns
    -------
    int
        The port the server listened on.

    Raises
    ------
    Viz3dError
        When the web packages (trame) are missing, ``port`` is out of range, the scene's
        window was closed, or the server cannot listen on ``host:port``.

    See Also
    --------
    write_html : The scene as one HTML file, without a server.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> scene = viz3d.build_scene(meshes, off_screen=True, interactive=False)
    >>> port = serve(scene, port=0, quiet=True)  # doctest: +SKIP
    viz3d: serving the scene at http://127.0.0.1:41795/  (Ctrl-C stops it)
    >>> serve(scene, port=70000)  # refused before the server starts
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: port must be between 0 and 65535, got 70000
    >>> scene.close()
    """
    _require_web_packages("the web view")
    title = page_title(scene) if title is None else str(title)
    if not (0 <= int(port) <= 65535):
        raise Viz3dError(f"port must be between 0 and 65535, got {port}")
    if scene.plotter.render_window is None:
        raise Viz3dError("this scene's window has been closed; build the scene again")
    from trame.app import get_server

    server = get_server(f"viz3d-{id(scene)}", client_type="vue3")
    server.state.trame__title = title  # the browser tab's title (trame's own default is "Trame")
    session = _WebSession(scene, server.state, server.controller)
    session.view_widget = _page(server, session, title)
    server.controller.on_server_ready.add(
        lambda **_: (_announce(int(server.port), host, announce, quiet), session.push()))

    from ..runtime import plain_argv

    try:
        with plain_argv():  # trame's own command line would read ours
            server.start(port=int(port), host=host, open_browser=False, show_connection_info=False,
                         disable_logging=True, timeout=0, exec_mode="main")
    except OSError as exc:
        raise Viz3dError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); try another --port") from None
    return int(server.port or port)


class _WebSession:
    """The page's state (trame's ``state``) and the scene kept in step: each control's change
    moves the scene, and what the scene moves by itself (auto planes) goes back to the page."""

    def __init__(self, scene, state, ctrl):
        from ..scene.scene import SLICE_AXES, WINDOW_PRESETS

        self.scene, self.state, self.ctrl, self.view_widget = scene, state, ctrl, None
        center, width = scene.window
        state.update({
            "window_center": center, "window_width": width, "preset": _preset_of(scene.window, WINDOW_PRESETS),
            "show_bone": scene.is_visible("bone"), "show_labels": scene.is_visible("labels"),
            "show_slices": scene.is_visible("slices"), "view": scene.view, "drawing": "full",
        })
        self.axes = [axis for axis in SLICE_AXES if axis in scene.slice_ranges]
        for axis in self.axes:
            state[f"slice_{axis}"] = scene.slice_positions[axis]
        state.change("window_center", "window_width")(self.on_window)
        state.change("show_bone", "show_labels", "show_slices")(self.on_visibility)
        for axis in self.axes:
            state.change(f"slice_{axis}")(lambda _axis=axis, **kw: self.on_slice(_axis, kw[f"slice_{_axis}"]))
        scene.build_lod()  # cheap drawing while the browser drags the camera or a slider (Scene.begin_interaction)
        ctrl.apply_preset, ctrl.set_view = self.apply_preset, self.set_view
        ctrl.begin_interaction, ctrl.end_interaction = self.begin_interaction, self.end_interaction

    def push(self):
        if self.view_widget is not None:
            self.view_widget.update()

    def on_window(self, window_center, window_width, **_):
        from ..scene.scene import WINDOW_PRESETS, WINDOW_WIDTH_RANGE

        try:
            c, w = float(window_center), max(float(window_width), WINDOW_WIDTH_RANGE[0])
        except (TypeError, ValueError):
            return
        if (c, w) != self.scene.window:
            self.scene.set_window(c, w)
            self.state.preset = _preset_of(self.scene.window, WINDOW_PRESETS)
            self.push()

    def apply_preset(self, name):
        self.scene.apply_preset(name)
        self.state.window_center, self.state.window_width = self.scene.window
        self.state.preset = name
        self.push()

    def on_slice(self, axis, value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if abs(value - self.scene.slice_positions.get(axis, value + 1)) < 1e-6:
            return  # the page showing where the scene put the plane (auto placement), not a move
        self.scene.set_slice(axis, value)
        self.push()

    def sync_slices(self):
        for axis, where in self.scene.slice_positions.items():
            if self.state[f"slice_{axis}"] != where:
                self.state[f"slice_{axis}"] = where

    def on_visibility(self, show_bone, show_labels, show_slices, **_):
        for group, flag in (("bone", show_bone), ("labels", show_labels), ("slices", show_slices)):
            if self.scene.is_visible(group) != bool(flag):
                self.scene.set_visible(group, bool(flag))
        self.push()

    def set_view(self, name):
        self.scene.set_view(name)
        self.state.view = name
        self.sync_slices()  # the auto planes moved for the new camera
        self.push()

    def begin_interaction(self, *_, **__):
        self.scene.begin_interaction()
        self.state.drawing = "coarse"

    def end_interaction(self, *_, **__):
        self.scene.end_interaction()
        self.state.drawing = "full"
        self.sync_slices()
        self.push()


def _page(server, session, title):
    """The page: the controls on the left, the remote view filling the rest; returns the view."""
    from trame.ui.vuetify3 import VAppLayout
    from trame.widgets import html, vtk as vtk_widgets

    ctrl = session.ctrl
    with VAppLayout(server, full_height=True, theme="dark") as layout:
        layout.title = title
        with html.Div(style="display: flex; height: 100vh; width: 100vw; overflow: hidden;"):
            with html.Div(classes="pa-3", id="viz3d-controls", style="width: 300px; min-width: 300px; overflow-y: auto; "
                                                 "font-size: 0.85rem; background: #1c1e24;"):
                html.Div(title, classes="text-h6 mb-2")
                _window_controls(session)
                _slice_controls(session)
                _group_and_camera_controls(session)
            with html.Div(style="flex: 1 1 auto; position: relative; min-width: 0;", id="viz3d-view"):
                view_widget = vtk_widgets.VtkRemoteView(
                    session.scene.plotter.render_window, ref="viz3d_view", interactive_ratio=1,
                    interactive_quality=70, still_quality=98,
                    # vtk.js animates the view from button/wheel down to up: that is the drag
                    interactor_events=("viz3d_interactor_events", ["StartAnimation", "EndAnimation"]),
                    StartAnimation=ctrl.begin_interaction, EndAnimation=ctrl.end_interaction,
                )
                ctrl.view_update = view_widget.update
    return view_widget


def _drag_events(ctrl) -> dict:
    """A slider's drag: cheap drawing from its start to its end."""
    return {"start": ctrl.begin_interaction, "end": ctrl.end_interaction}


def _window_controls(session) -> None:
    from trame.widgets import html, vuetify3 as v

    from ..scene.scene import WINDOW_CENTER_RANGE, WINDOW_PRESETS, WINDOW_WIDTH_RANGE

    ctrl, (center, width) = session.ctrl, session.scene.window
    html.Div("Window", classes="text-subtitle-2 mt-2")
    with html.Div(classes="d-flex flex-wrap", style="gap: 4px;"):
        for name in WINDOW_PRESETS:
            v.VBtn(name, size="small", click=(ctrl.apply_preset, f"['{name}']"),
                   color=(f"preset === '{name}' ? 'primary' : undefined",), id=f"preset-{name}")
    v.VSlider(v_model=("window_center",), min=min(WINDOW_CENTER_RANGE[0], center),
              max=max(WINDOW_CENTER_RANGE[1], center), step=1, label="centre", hide_details=True,
              density="compact", id="window-center", **_drag_events(ctrl))
    v.VSlider(v_model=("window_width",), min=WINDOW_WIDTH_RANGE[0], max=max(WINDOW_WIDTH_RANGE[1], width),
              step=1, label="width", hide_details=True, density="compact", id="window-width",
              **_drag_events(ctrl))
    html.Div("{{ Math.round(window_center) }} / {{ Math.round(window_width) }} HU", classes="text-caption")


def _slice_controls(session) -> None:
    from trame.widgets import html, vuetify3 as v

    from ..scene.scene import SLICE_AXES

    scene = session.scene
    if not scene.slice_ranges:
        return
    html.Div("Slices (mm)", classes="text-subtitle-2 mt-3")
    for axis, letter in zip(SLICE_AXES, "SAR"):
        if axis not in scene.slice_ranges:
            continue
        lo, hi = scene.slice_ranges[axis]
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        v.VSlider(v_model=(f"slice_{axis}",), min=lo, max=hi, step=scene.slice_step,
                  label=f"{axis} ({letter})", hide_details=True, density="compact",
                  id=f"slice-{axis}", **_drag_events(session.ctrl))
    html.Div(" · ".join(f"{letter} {{{{ Number(slice_{axis}).toFixed(1) }}}}"
                        for axis, letter in zip(SLICE_AXES, "SAR") if axis in scene.slice_ranges)
             + " mm", classes="text-caption")


def _group_and_camera_controls(session) -> None:
    from trame.widgets import html, vuetify3 as v

    from ..scene.scene import VIEWS

    scene = session.scene
    html.Div("Show", classes="text-subtitle-2 mt-3")
    for group, present in (("bone", scene.bone_actors), ("labels", scene.label_actors),
                           ("slices", scene.slice_actors)):
        if present:  # a group the scene does not have gets no switch
            v.VSwitch(v_model=(f"show_{group}",), label=group, hide_details=True, density="compact",
                      color="primary", id=f"show-{group}")
    html.Div("Camera", classes="text-subtitle-2 mt-3")
    with html.Div(classes="d-flex flex-wrap", style="gap: 4px;"):
        for name in VIEWS:
            v.VBtn(VIEW_LABELS.get(name, name), size="small", click=(session.ctrl.set_view, f"['{name}']"),
                   color=(f"view === '{name}' ? 'primary' : undefined",), id=f"view-{name}")
    html.Div("drag: rotate · shift-drag: pan · wheel: zoom", classes="text-caption mt-3")


def _announce(port: int, host: str, announce, quiet: bool) -> None:
    """Say where the scene is served: ``announce(url, port)``, or the URL on stdout and (unless
    ``quiet``) the SSH tunnel hint and, off the loopback, the no-password warning on stderr."""
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    if announce is not None:
        announce(url, port)
        return
    print(f"viz3d: serving the scene at {url}  (Ctrl-C stops it)", flush=True)
    if not quiet:
        print(f"viz3d: from a laptop, open a tunnel to this server:\n"
              f"    {ssh_hint(port, host)}\n"
              f"  then browse to http://localhost:{port}/ on the laptop", file=sys.stderr, flush=True)
        if host not in _LOOPBACK:
            print(f"viz3d: warning: listening on {host}: anyone who can reach this machine on port {port} "
                  "sees the scene (there is no password)", file=sys.stderr, flush=True)


def _preset_of(window, presets) -> str | None:
    for name, value in presets.items():
        if tuple(float(x) for x in value) == tuple(float(x) for x in window):
            return name
    return None


# --------------------------------------------------------------------------- the HTML file
def write_html(meshes, ct, path, *, window=(40.0, 400.0), show_slices: bool = True, show_bone: bool = True,
               view: str = "iso", size=(1024, 768), title: str | None = None, slices=None,
               colors: str = "table", names_source: str | None = None, centres=None) -> Path:
    """Build the scene for ``meshes`` / ``ct`` and write it as one self-contained HTML file at ``path``.

    The page shows the scene with vtk.js, offline (see `scene_to_html`): the planes are
    ``auto``-placed for ``view`` and the camera frames the surfaces. The file is written
    atomically.

    Parameters
    ----------
    meshes : list of Mesh
        The surfaces.
    ct : Volume or None
        The CT for the three planes; None: no planes.
    path : str or path-like
        The ``.html`` file to write.
    window : (float, float), optional
        The planes' ``(center, width)`` in HU, as in `viz3d.scene.scene.build_scene`.
    show_slices : bool, optional
        Whether the CT planes are shown.
    show_bone : bool, optional
        Whether the bone surface is shown.
    view : str, optional
        The camera preset (default ``"iso"``), one of `viz3d.scene.scene.VIEWS`.
    size : (int, int), optional
        The scene's (width, height) in pixels, for the camera's framing.
    title : str or None, optional
        The page's title (default ``viz3d — <case name>``, `page_title`).
    slices : str, dict or None, optional
        Where the CT planes go, as in `viz3d.scene.scene.build_scene`.
    colors : {"table", "distinct"}, optional
        The surfaces' colours, as in `viz3d.scene.scene.build_scene`.
    names_source : str or None, optional
        Where the names came from: the legend's first line (as in `build_scene`).
    centres : dict or None, optional
        Centres of structures that are not drawn, for planes placed at them (as in `build_scene`).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    Viz3dError
        As `viz3d.scene.scene.build_scene` for invalid arguments; when ``path`` is not an
        ``.html`` file name, is a folder or its folder is missing; the web packages (trame)
        are missing; or the scene holds nothing vtk.js can draw.

    See Also
    --------
    serve : The scene in web browsers, live.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     path = write_html(meshes, None, pathlib.Path(folder) / "scene.html")  # renders: needs OpenGL (EGL)
    ...     print(path.name, path.read_text()[:15])
    scene.html <!doctype html>
    >>> write_html(meshes, None, "scene.txt")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: scene.txt: the HTML export writes an .html file; use a .html file name
    """
    from ..runtime import configure_offscreen

    configure_offscreen()
    from ..scene.scene import build_scene

    scene = build_scene(meshes, ct, window=window, show_slices=show_slices, show_bone=show_bone, view=view,
                        off_screen=True, size=size, interactive=False, slices=slices, colors=colors,
                        names_source=names_source, centres=centres)
    try:
        return scene_to_html(scene, path, title=title)
    finally:
        scene.close()


def page_title(scene) -> str:
    """``viz3d — <case name>``: the title of the web view and of the HTML export."""
    return f"viz3d — {getattr(scene, 'case_name', None) or 'scene'}"


def scene_to_html(scene, path, *, title: str | None = None) -> Path:
    """Write ``scene`` as one HTML file that shows it in a browser with vtk.js, offline.

    What shows: every mesh in its colour and opacity, the camera of the scene, and (when the
    slices are visible) the three CT planes at their positions with the scene's window, as
    polygon grids coloured with the windowed grey values (one sample per voxel, as the window
    draws them, at most `HTML_SLICE_MAX_SAMPLES` per side). The legend (names and colours) is an
    HTML box beside the view, with the orientation marker below it; the page frames the surfaces
    from the scene's camera direction in the view's own size (`html_frame`). Hidden groups are
    left out. The file is written atomically.
    """
    _require_web_packages("the HTML export")
    title = page_title(scene) if title is None else str(title)
    path = check_output_file(path, (".html", ".htm"), "the HTML export writes an .html file")

    added = _add_html_slices(scene) if scene.slice_planes and scene.is_visible("slices") else []
    hidden = []
    try:
        # vtk.js cannot run the planes' shader (the grids above stand in) nor draw the legend's picture
        for actor in list(scene.slice_actors.values()) + ([scene.legend] if scene.legend is not None else []):
            if actor.GetVisibility():
                actor.SetVisibility(False)
                hidden.append(actor)
        data = _vtksz(scene.plotter.render_window)
    finally:
        for actor in hidden:
            actor.SetVisibility(True)
        for actor in added:
            scene.plotter.remove_actor(actor, reset_camera=False, render=False)

    legend = []
    if scene.is_visible("labels"):
        for name, actor in scene.label_actors.items():
            legend.append((name, actor.prop.color.float_rgb))
    if scene.is_visible("bone"):
        for name, actor in scene.bone_actors.items():
            legend.append((name, actor.prop.color.float_rgb))
    page = _html_page(data, title=title, legend=legend, window=scene.window if scene.is_visible("slices") and added else None,
                      names=getattr(scene, "legend_title", None) if legend else None, frame=html_frame(scene))

    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def html_frame(scene, max_points: int = HTML_FRAME_MAX_POINTS) -> dict:
    """What the HTML page needs to frame the surfaces as the scene does, for any size of the view.

    The scene's camera direction, screen-up and view angle, the fit's margin and the centre of
    what it frames, the camera's position (how the page knows the scene's camera once vtk.js
    has it), and the framed points: the corners of their convex hull, which frame as all of
    them do from every direction (at most ``max_points``, else an even sample of the points).
    The page's script fits the camera to these points in the view's own width and height, as
    `viz3d.scene.scene.Scene.fit_camera` does in a picture's.

    Parameters
    ----------
    scene : Scene
        A built scene (`viz3d.scene.scene.build_scene`).
    max_points : int, optional
        The most points sent to the page.

    Returns
    -------
    dict
        ``direction``, ``up``, ``angle``, ``margin``, ``center``, ``position`` and ``points``
        (lists of numbers, world RAS mm), ready for JSON.

    Examples
    --------
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> meshes = viz3d.build_meshes(label=viz3d.Volume(ball, np.eye(4)), table="spinopelvic10")
    >>> scene = viz3d.build_scene(meshes, view="anterior", off_screen=True, interactive=False)
    >>> frame = html_frame(scene)
    >>> frame["direction"], frame["up"], frame["angle"], frame["margin"]
    ([0.0, -1.0, 0.0], [0.0, 0.0, 1.0], 20.0, 0.92)
    >>> 8 <= len(frame["points"]) <= HTML_FRAME_MAX_POINTS
    True
    >>> scene.close()
    """
    from ..scene.scene import FIT_MARGIN

    camera = scene.plotter.renderer.GetActiveCamera()
    b = np.asarray(scene.focus_bounds, float)
    return {
        "direction": _rounded(camera.GetDirectionOfProjection(), 6), "up": _rounded(camera.GetViewUp(), 6),
        "angle": round(float(camera.GetViewAngle()), 3), "margin": FIT_MARGIN,
        "center": _rounded((b[0::2] + b[1::2]) / 2, 3), "position": _rounded(camera.GetPosition(), 3),
        "points": [_rounded(p, 2) for p in _hull_points(np.asarray(scene.focus_points, float), max_points)],
    }


def _hull_points(points: np.ndarray, max_points: int) -> np.ndarray:
    """The corners of the points' convex hull (all points when they are few or flat), at most ``max_points``."""
    if len(points) > 8:
        from scipy.spatial import ConvexHull, QhullError

        try:
            points = points[ConvexHull(points).vertices]
        except (QhullError, ValueError):  # flat or degenerate: the points themselves
            pass
    step = max(1, int(np.ceil(len(points) / max_points)))
    return points[::step]


def _rounded(values, digits: int) -> list:
    return [round(float(v), digits) + 0.0 for v in values]  # + 0.0: no -0.0


def _add_html_slices(scene) -> list:
    """Add the CT planes as RGB-coloured polygon grids; return the actors added."""
    import pyvista as pv

    from ..scene.scene import AXIS_INDEX, SLICE_AXES
    from ..scene.slices import plane_grid, plane_points, sample_plane

    ct = scene.ct
    center, width = scene.window
    actors = []
    positions = scene.slice_positions  # the planes turned off (--slices axial=off) are not in it
    for axis in (axis for axis in SLICE_AXES if axis in positions):
        grid = plane_grid(ct.affine, ct.array.shape, AXIS_INDEX[axis], max_samples=HTML_SLICE_MAX_SAMPLES)
        position = positions[axis]
        points = plane_points(grid, position)
        hu, inside = (values.ravel() for values in sample_plane(ct.array, ct.affine, grid, position))
        grey = np.clip((hu - (center - width / 2.0)) / width, 0.0, 1.0)
        rgb = np.round(grey * 255).astype(np.uint8)
        # quads between neighbouring samples, kept where all four corners lie in the CT
        n0, n1 = grid.shape
        corner = (np.arange(n1 - 1)[:, None] * n0 + np.arange(n0 - 1)[None, :]).ravel()
        quads = np.stack([corner, corner + 1, corner + 1 + n0, corner + n0], axis=1)
        quads = quads[inside[quads].all(axis=1)]
        if not len(quads):
            continue
        surface = pv.PolyData.from_regular_faces(points, quads)
        surface.point_data["rgb"] = np.repeat(rgb[:, None], 3, axis=1)
        actor = scene.plotter.add_mesh(
            surface, scalars="rgb", rgb=True, lighting=False, name=f"html-slice-{axis}", reset_camera=False,
            pickable=False, show_scalar_bar=False,
        )
        actors.append(actor)
    return actors


def _vtksz(render_window) -> bytes:
    """The scene as trame-vtk's offline-viewer archive (zip with index.json), without a server."""
    from trame_vtk.modules.vtk.serializers import (
        SynchronizationContext,
        extract_array_hash,
        initialize_serializers,
        reference_id,
        serialize,
    )

    initialize_serializers()
    render_window.Render()
    context = SynchronizationContext()
    context.set_ignore_last_dependencies(True)
    renderer = render_window.GetRenderers().GetFirstRenderer()
    camera = renderer.GetActiveCamera()
    window_id = reference_id(render_window)
    description = serialize(None, render_window, window_id, context, 1)
    if description is None:
        raise Viz3dError("the scene has nothing vtk.js can draw")
    description["extra"] = {
        "vtkRefId": window_id,
        "centerOfRotation": camera.GetFocalPoint(),
        "camera": reference_id(camera),
    }
    hashes = {}
    for entry in extract_array_hash(description):
        key = entry.get("hash")
        hashes[key] = dict(**entry, content=context.get_cached_data_array(key, False))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.json", json.dumps({"hashes": hashes, "scene": description}))
    return buffer.getvalue()


def _html_page(data: bytes, *, title: str, legend, window, names: str | None = None, frame: dict | None = None) -> str:
    """trame-vtk's offline vtk.js viewer with the scene embedded, a title, an HTML legend and an
    orientation marker, the camera framing the surfaces.

    The legend names every structure without scrolling: its rows fill columns as tall as the page
    allows, in type from 12 down to 8 px, as the scene's legend does; ``names`` (where the names
    came from) is its first line. Below it, the orientation marker (`HTML_MARKER_PX` square): the
    patient's axes, R/L, A/P and S/I, as the camera sees them, redrawn whenever the camera moves.
    The 3-D view lies left of both and above the caption, never under them, so neither covers a
    surface (a script lays them out again when the page is resized). Once vtk.js has the scene's
    camera, the script fits it to ``frame`` (`html_frame`) in the view's own width and height, as
    the scene fits a picture's: the surfaces fill the view; a resized page is framed again
    unless the camera was moved meanwhile."""
    from trame_vtk.tools.vtksz2html import HTML_VIEWER_PATH

    viewer = Path(HTML_VIEWER_PATH).read_text(encoding="utf-8")
    # the viewer's script points the page icon at the web: make it a data URL, so that opening the
    # file asks the network for nothing
    viewer = viewer.replace("https://kitware.github.io/vtk-js/icon/favicon-", "data:,favicon-")
    if "<title>" in viewer:
        start, end = viewer.index("<title>"), viewer.index("</title>") + len("</title>")
        viewer = viewer[:start] + f"<title>{_html.escape(title)}</title>" + viewer[end:]
    overlay = _html_overlay(title, legend, window, names, frame)
    out = io.StringIO()
    encoded = base64.b64encode(data).decode("ascii")
    for line in viewer.split("\n"):
        if "</body>" in line:
            out.write(overlay)
            out.write("<script>\nfunction loadDataSet() {\n")
            out.write("  const container = document.querySelector('.content') || document.querySelector('body');\n")
            out.write(f'  const base64Str = "{encoded}";\n')
            out.write("  OfflineLocalView.load(container, { base64Str });\n}\n</script>\n")
        out.write(line + "\n")
    return out.getvalue()


def _html_overlay(title: str, legend, window, names: str | None, frame: dict | None) -> str:
    """The page's own elements: style, the view's box, legend, marker, caption and the script."""
    rows = "".join(
        f'<div class="viz3d-row"><span class="viz3d-swatch" style="background: rgb({int(round(r * 255))},'
        f'{int(round(g * 255))},{int(round(b * 255))})"></span>{_html.escape(name)}</div>'
        for name, (r, g, b) in legend
    )
    if names:
        rows = f'<div class="viz3d-row viz3d-names">{_html.escape(names)}</div>' + rows
    caption = f"{_html.escape(title)}"
    if window is not None:
        caption += f" &middot; CT window {window[0]:g}/{window[1]:g} HU"
    frame_json = json.dumps(frame).replace("</", "<\\/")
    return (_HTML_STYLE.replace("MARKER_PX", str(HTML_MARKER_PX))
            + f'<div class="content" style="position: fixed; inset: 0 0 24px 0;"></div>\n'
            f'<div id="viz3d-legend"{"" if rows else " hidden"}>{rows}</div>\n'
            f'<canvas id="viz3d-marker" title="patient directions: R/L, A/P, S/I"></canvas>\n'
            f'<div id="viz3d-caption">{caption} &middot; drag: rotate, shift-drag: pan, wheel: zoom &middot; RAS mm</div>\n'
            f"<script>\nconst VIZ3D_FRAME = {frame_json};\n{_HTML_SCRIPT}</script>\n")


_HTML_STYLE = """
<style>
  html, body { background: rgb(26, 28, 36); }
  #viz3d-legend { position: fixed; top: 8px; right: 8px; z-index: 10; display: grid; grid-auto-flow: column;
    column-gap: 12px; background: rgba(10, 10, 15, 0.72); color: #ebebeb; font: 12px/1.35 sans-serif;
    padding: 6px 8px; border: 1px solid #59596a; border-radius: 3px; }
  #viz3d-legend[hidden] { display: none; }
  #viz3d-legend .viz3d-row { white-space: nowrap; }
  #viz3d-legend .viz3d-names { color: #a8a8a8; }
  #viz3d-legend .viz3d-swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px;
    border: 1px solid #222; vertical-align: -1px; }
  #viz3d-marker { position: fixed; right: 8px; bottom: 8px; z-index: 10; width: MARKER_PXpx; height: MARKER_PXpx;
    background: rgba(10, 10, 15, 0.72); border: 1px solid #59596a; border-radius: 3px; box-sizing: border-box; }
  #viz3d-caption { position: fixed; left: 8px; bottom: 6px; z-index: 10; color: #d0d0d0;
    font: 12px sans-serif; pointer-events: none; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
</style>
"""

# The page's script: lays out the legend, the marker and the view; fits vtk.js's camera to the
# surfaces (VIZ3D_FRAME, see html_frame) once the viewer has the scene; draws the marker.
_HTML_SCRIPT = r"""
const viz3d = { fitted: null, renderer: null, camera: null };
function viz3dDot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
function viz3dCross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }

function viz3dPose(camera) {  // what a user's drag or wheel changes
  return JSON.stringify([camera.getPosition(), camera.getFocalPoint(), camera.getViewUp(), camera.getViewAngle()]);
}

function viz3dLayout() {  // every name shown: columns as tall as the page, type from 12 down to 8 px
  const box = document.getElementById("viz3d-legend"), rows = box.children;
  const marker = document.getElementById("viz3d-marker").getBoundingClientRect();
  let side = marker.width;
  if (rows.length) {
    for (let px = 12; px >= 8; px--) {
      box.style.fontSize = px + "px";
      const free = window.innerHeight - 40 - marker.height - 8;
      const fit = Math.max(1, Math.floor(free / rows[0].getBoundingClientRect().height));
      box.style.gridTemplateRows = "repeat(" + Math.min(fit, rows.length) + ", auto)";
      if (box.getBoundingClientRect().width <= 0.4 * window.innerWidth) break;
    }
    side = Math.max(side, box.getBoundingClientRect().width);
  }
  // the 3-D view left of the legend and the marker, so that neither covers a surface
  document.querySelector(".content").style.right = (side + 16) + "px";
  document.getElementById("viz3d-caption").style.maxWidth = Math.max(0, window.innerWidth - side - 32) + "px";
}

function viz3dFit() {  // the surfaces fill the view, as Scene.fit_camera fits a picture
  const f = VIZ3D_FRAME, d = f.direction, u = f.up, r = viz3dCross(d, u);
  const view = (document.querySelector(".content canvas") || document.querySelector(".content")).getBoundingClientRect();
  const tanV = Math.tan(f.angle * Math.PI / 360) * f.margin;
  const tanH = tanV * Math.max(view.width, 1) / Math.max(view.height, 1);
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const p of f.points) {
    const x = viz3dDot(p, r), y = viz3dDot(p, u);
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2, cz = viz3dDot(f.center, d);
  let distance = 1e-3;
  for (const p of f.points) {
    const toward = cz - viz3dDot(p, d);
    distance = Math.max(distance, toward + Math.max(Math.abs(viz3dDot(p, r) - cx) / tanH,
                                                    Math.abs(viz3dDot(p, u) - cy) / tanV));
  }
  const focal = [0, 1, 2].map(i => r[i] * cx + u[i] * cy + d[i] * cz);
  const camera = viz3d.camera;
  camera.setViewAngle(f.angle);
  camera.setFocalPoint(...focal);
  camera.setPosition(...focal.map((v, i) => v - d[i] * distance));
  camera.setViewUp(...u);
  viz3d.renderer.resetCameraClippingRange();
  viz3d.fitted = viz3dPose(camera);
  window.global.renderWindow.render();
}

function viz3dMarker(d, u) {  // the patient's axes as the camera sees them, each end lettered
  const canvas = document.getElementById("viz3d-marker"), side = canvas.clientWidth, scale = window.devicePixelRatio || 1;
  canvas.width = canvas.height = Math.round(side * scale);
  const ctx = canvas.getContext("2d"), r = viz3dCross(d, u), c = side / 2, arm = side * 0.28, letters = {};
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  const ends = [];
  for (const [plus, minus, axis, colour] of [["R", "L", [1, 0, 0], "rgb(217, 115, 115)"],
                                             ["A", "P", [0, 1, 0], "rgb(115, 199, 115)"],
                                             ["S", "I", [0, 0, 1], "rgb(128, 153, 242)"]]) {
    for (const sign of [1, -1]) {
      ends.push({ letter: sign > 0 ? plus : minus, sign, colour,
                  x: sign * viz3dDot(axis, r), y: sign * viz3dDot(axis, u), z: -sign * viz3dDot(axis, d) });
    }
  }
  ends.sort((a, b) => a.z - b.z);  // far ends first, near ones over them
  ctx.font = "bold 13px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle"; ctx.lineCap = "round";
  for (const end of ends) {
    const x = c + end.x * arm, y = c - end.y * arm, lx = c + end.x * arm * 1.45, ly = c - end.y * arm * 1.45;
    ctx.globalAlpha = end.sign > 0 ? 1.0 : 0.55;
    ctx.strokeStyle = end.colour; ctx.lineWidth = end.sign > 0 ? 3 : 1.5;
    ctx.beginPath(); ctx.moveTo(c, c); ctx.lineTo(x, y); ctx.stroke();
    if (Math.hypot(end.x, end.y) < 0.4) {  // an axis towards the viewer: its letter on a disc at the middle
      ctx.globalAlpha = 1.0; ctx.fillStyle = "rgb(16, 16, 22)";
      ctx.beginPath(); ctx.arc(lx, ly, 9, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.fillStyle = end.colour; ctx.fillText(end.letter, lx, ly);
    letters[end.letter] = [lx / side, ly / side];
  }
  canvas.dataset.letters = JSON.stringify(letters);
}

function viz3dFindCamera() {  // the renderer holding the scene's camera, once vtk.js has it
  const rw = window.global && window.global.renderWindow, f = VIZ3D_FRAME;
  if (!rw) return false;
  for (const renderer of rw.getRenderers()) {
    const camera = renderer.getActiveCamera(), p = camera.getPosition();
    if (Math.hypot(p[0] - f.position[0], p[1] - f.position[1], p[2] - f.position[2]) < 1e-3 * (1 + Math.hypot(...f.position))) {
      viz3d.renderer = renderer; viz3d.camera = camera;
      camera.onModified(() => viz3dMarker(camera.getDirectionOfProjection(), camera.getViewUp()));
      return true;
    }
  }
  return false;
}

function viz3dStart() {  // wait (at most a minute) for the viewer's scene, frame it, and watch a while
  const started = Date.now();
  const timer = setInterval(() => {
    if (!viz3d.camera && viz3dFindCamera()) { viz3dFit(); viz3d.framedAt = Date.now(); }
    else if (viz3d.camera && viz3d.fitted === null) viz3dFit();
    else if (viz3d.camera) {  // the viewer's own late camera update (if any) undone
      const p = viz3d.camera.getPosition(), f = VIZ3D_FRAME.position;
      if (Math.hypot(p[0] - f[0], p[1] - f[1], p[2] - f[2]) < 1e-3 * (1 + Math.hypot(...f))) viz3dFit();
      if (Date.now() - viz3d.framedAt > 3000) clearInterval(timer);
    }
    if (Date.now() - started > 60000) clearInterval(timer);
  }, 50);
}

window.addEventListener("resize", () => {
  viz3dLayout();
  requestAnimationFrame(() => {  // after the viewer took the new size: framed again, unless the camera was moved
    const camera = viz3d.camera;
    if (camera && viz3d.fitted === viz3dPose(camera)) viz3dFit();
  });
});
viz3dLayout();
if (VIZ3D_FRAME) { viz3dMarker(VIZ3D_FRAME.direction, VIZ3D_FRAME.up); viz3dStart(); }
"""
