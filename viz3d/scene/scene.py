"""The one scene builder: label meshes, bone, three CT slice planes, window/level, legend, cameras.

`build_scene` returns a `Scene`; the interactive window (`Scene.show`), screenshots
(`viz3d.outputs.render.screenshot`) and anything else that draws start from it. The `Scene` methods are
the whole control surface: keys and sliders call them, and so do tests and notebooks.

Coordinates are RAS millimetres throughout (+x patient's Right, +y Anterior, +z Superior).
The CT is drawn as three world-axis-aligned planes (axial: normal z, coronal: normal y,
sagittal: normal x), each one textured quad. `viz3d.scene.slices` samples the CT on the plane through
the affine (flipped, anisotropic and oblique grids land where they belong) and stores the values
as 16-bit codes in the texture; a fragment shader interpolates them and maps them to grey. A
window/level change sets two numbers of that shader: no texture is re-coloured or re-uploaded
(VTK's image slice mappers re-colour their textures on the CPU). Moving a plane re-samples only
that plane. The CT array is never copied or modified.

Composition. The camera frames what is drawn: the label surfaces (else the bone, else the CT box),
not the CT's box; each preset fits their projected outline into the part of the picture that the
legend and the orientation marker leave free (`Scene.fit_camera`). The legend is a picture of
its own at the upper right (every structure named, in columns and smaller type for large sets),
never over the surfaces. A CT plane never hides the surfaces: by default (``auto``) each plane
seen at an angle lies just behind the drawn surfaces as the camera sees them (the coronal plane at
their posterior edge for an anterior view), and a plane seen edge-on passes through the camera's
eye, so it shows as a line; `build_scene`'s ``slices`` sets positions (`parse_slices`).

Colours. Table colours closer than `MIN_COLOR_DIFFERENCE` (CIEDE2000) to another drawn structure's
are replaced by distinct ones with one warning (silently where they are viz3d's own generated ones);
``colors="distinct"`` gives every structure a colour
of a perceptually distinct palette (`viz3d.io.labels.distinct_colors`).

Camera presets (radiological convention; each one refits the camera to the drawn surfaces):

- ``anterior``: camera on the patient's anterior side (+y) looking towards -y, superior up:
  the patient's left is on the viewer's right.
- ``posterior``: camera behind the patient (-y), superior up: the patient's left on the left.
- ``left``: camera on the patient's left (-x), superior up: anterior on the viewer's left.
- ``right``: camera on the patient's right (+x), superior up: anterior on the viewer's right.
- ``superior``: camera above the head (+z) looking down, **anterior up**: the patient's left
  on the viewer's left.
- ``inferior``: camera below the feet (-z) looking up, anterior up: the patient's left on the
  viewer's right, as axial CT images are displayed.
- ``iso``: a 3/4 view from anterior-left-superior (45 degrees from anterior towards the
  patient's left, 30 degrees above the horizontal), superior up.

Key map of the interactive window (`KEYMAP`; chosen not to clash with PyVista's and VTK's
own keys q, e, b, v, w, s, r, f, p, u, m, i, j, t, c, a, 3, Up, Down, plus, minus):

- F1 / F2 / F3 / F4: window preset soft / bone / lung / brain
- 1 anterior, 2 posterior, 4 left, 5 right, 6 superior, 7 inferior, 0 iso (also on the keypad;
  3 is VTK's stereo toggle)
- o bone, l labels, x slices: show / hide
- Page Up / Page Down: move the axial slice up / down by one (smallest) voxel size
- q: close the window

Sliders: window centre (-1000..3000 HU) and width (1..4000 HU), and one per slice position
(range: the CT's extent along that world axis).
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from ..errors import Viz3dError
from ..runtime import has_display, import_pyvista
from .size import DEFAULT_SIZE, check_size
from .views import VIEWS

WINDOW_PRESETS = {
    "soft": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
    "brain": (40.0, 80.0),
}
SLICE_AXES = ("axial", "coronal", "sagittal")
GROUPS = ("bone", "labels", "slices")

# axis name -> index of the world (RAS) coordinate it moves along / its plane normal
AXIS_INDEX = {"axial": 2, "coronal": 1, "sagittal": 0}

# view -> (direction from the focal point to the camera, screen-up direction), RAS
_ISO = (-math.sin(math.radians(45)) * math.cos(math.radians(30)),
        math.cos(math.radians(45)) * math.cos(math.radians(30)),
        math.sin(math.radians(30)))
VIEW_DIRECTIONS = {
    "anterior": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "posterior": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "left": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "right": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "superior": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "inferior": ((0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "iso": (_ISO, (0.0, 0.0, 1.0)),
}

# the presets' field of view (degrees): narrower than VTK's 30, so the camera stands farther back
# and a framed structure is not distorted (near parts swollen over far ones)
VIEW_ANGLE = 20.0
WINDOW_CENTER_RANGE = (-1000.0, 3000.0)
WINDOW_WIDTH_RANGE = (1.0, 4000.0)

# keysym -> (Scene method, argument). Keysyms as X11 / VTK name them.
KEYMAP = {
    "F1": ("apply_preset", "soft"),
    "F2": ("apply_preset", "bone"),
    "F3": ("apply_preset", "lung"),
    "F4": ("apply_preset", "brain"),
    "1": ("set_view", "anterior"),
    "2": ("set_view", "posterior"),
    "4": ("set_view", "left"),
    "5": ("set_view", "right"),
    "6": ("set_view", "superior"),
    "7": ("set_view", "inferior"),
    "0": ("set_view", "iso"),
    "KP_1": ("set_view", "anterior"),
    "KP_2": ("set_view", "posterior"),
    "KP_4": ("set_view", "left"),
    "KP_5": ("set_view", "right"),
    "KP_6": ("set_view", "superior"),
    "KP_7": ("set_view", "inferior"),
    "KP_0": ("set_view", "iso"),
    "o": ("toggle", "bone"),
    "l": ("toggle", "labels"),
    "x": ("toggle", "slices"),
    "Prior": ("step_slice", ("axial", 1)),
    "Next": ("step_slice", ("axial", -1)),
}
# (VTK's text rendering drops "|", so the groups are separated by spaces)
HELP_TEXT = (
    "window: F1 soft  F2 bone  F3 lung  F4 brain      "
    "views: 1 anterior  2 posterior  4 left  5 right  6 superior  7 inferior  0 iso\n"
    "show/hide: o bone  l labels  x slices      PgUp/PgDn axial slice      "
    "drag rotate, shift-drag pan, wheel zoom      q quit"
)

BACKGROUND = (0.10, 0.11, 0.14)
TEXT_COLOR = (0.92, 0.92, 0.92)
BONE_OPACITY = 0.35
ORIENTATION_VIEWPORT = (0.8, 0.0, 1.0, 0.27)
# the legend: at most this share of the picture's width, above the orientation marker, and type
# from LEGEND_FONT_PX[0] down to [1] pixels (more columns before smaller type)
# the framed surfaces fill this share of the free area's width or height (`Scene.fit_camera`)
FIT_MARGIN = 0.92
LEGEND_MAX_WIDTH = 0.34
LEGEND_MAX_HEIGHT = 0.70
# a legend wider than this share of the picture (every name at the smallest type) is left out of it,
# with a warning: it would cover the anatomy
LEGEND_MAX_SHARE = 0.6
LEGEND_FONT_PX = (15, 8)
LEGEND_READABLE_PX = 9
LEGEND_MARGIN_PX = 6
LEGEND_BACKGROUND = (12, 12, 17)
LEGEND_BORDER = (89, 89, 102)
# two drawn structures whose colours differ by less than this (CIEDE2000) get distinct colours
MIN_COLOR_DIFFERENCE = 10.0
COLOR_MODES = ("table", "distinct")
SLICE_MODES = ("auto", "off")
# Mesa llvmpipe on two cores draws 1.5-3 M triangles/s; with the slices and the orientation
# marker this budget keeps a drag at >= 15 frames/s (scripts/bench.py, zoom 6).
LOD_TRIANGLES = 80_000
# The planes' fragment shader: bilinear interpolation of the 16-bit codes (two bytes of the RGB
# texture; linear filtering would mix the bytes), samples outside the CT (blue byte 0) left out,
# then the window as grey = code * ctScale + ctShift.
_PLANE_SHADER = """
  vec2 ctSize = vec2(textureSize(actortexture, 0));
  vec2 ctAt = clamp(tcoordVCVSOutput, 0.0, 1.0) * (ctSize - 1.0);
  ivec2 ct0 = ivec2(floor(ctAt));
  ivec2 ct1 = min(ct0 + 1, ivec2(ctSize) - 1);
  vec2 ctF = ctAt - vec2(ct0);
  vec4 t00 = texelFetch(actortexture, ct0, 0);
  vec4 t10 = texelFetch(actortexture, ivec2(ct1.x, ct0.y), 0);
  vec4 t01 = texelFetch(actortexture, ivec2(ct0.x, ct1.y), 0);
  vec4 t11 = texelFetch(actortexture, ct1, 0);
  vec4 ctW = vec4((1.0 - ctF.x) * (1.0 - ctF.y), ctF.x * (1.0 - ctF.y), (1.0 - ctF.x) * ctF.y, ctF.x * ctF.y)
    * step(0.5, vec4(t00.b, t10.b, t01.b, t11.b));
  float ctInside = dot(ctW, vec4(1.0));
  if (ctInside < 0.5) { discard; }
  vec2 bytes = vec2(65280.0, 255.0);
  vec4 ctCode = vec4(dot(t00.rg, bytes), dot(t10.rg, bytes), dot(t01.rg, bytes), dot(t11.rg, bytes));
  float grey = clamp(dot(ctW, ctCode) / ctInside * ctScale + ctShift, 0.0, 1.0);
  gl_FragData[0] = vec4(grey, grey, grey, 1.0);
"""


class Scene:
    """A built scene: the `pyvista.Plotter` (``plotter``), its actors and the controls.

    Made by `build_scene`. Attributes: ``plotter``; ``ct`` (the `Volume` or None);
    ``label_actors`` / ``bone_actors`` (name -> actor); ``slice_actors`` / ``slice_planes``
    (axis -> textured quad actor / world `vtkPlane`); ``slice_images`` (axis -> the
    `vtkImageData` of codes the quad's texture shows); ``legend`` (the legend's `vtkActor2D`, a
    picture drawn by `legend_picture`, or None), ``legend_labels`` (the names it lists: every label
    drawn) and ``legend_entries`` ((name, colour) pairs); ``sliders`` (name -> `vtkSliderWidget`,
    only when interactive); ``slice_ranges`` (axis -> (lo, hi) mm); ``view`` (last camera preset);
    ``bounds`` (everything drawn, CT box included) and ``focus_bounds`` (what the camera frames:
    the label surfaces, else the bone, else the CT box); ``auto_slices`` (the planes placed by
    the camera, see `place_auto_slices`); ``color_changes`` (name -> (table colour, drawn colour));
    ``slice_step`` (mm between CT slices: the planes' step); ``legend_left_out`` (the legend does
    not fit the window's size and is not drawn, see `layout_legend`).
    """

    def __init__(self, plotter, ct):
        self.plotter = plotter
        self.ct = ct
        self.label_actors: dict = {}
        self.bone_actors: dict = {}
        self.slice_actors: dict = {}
        self.slice_planes: dict = {}
        self.slice_images: dict = {}
        self.slice_ranges: dict = {}
        self.sliders: dict = {}
        self.legend = None
        self.legend_labels: list[str] = []
        self.legend_entries: list = []
        self.legend_title: str | None = None  # "names: <where they came from>", the legend's first line
        self._legend_layout_size = None  # (window size, controls, shown) the legend picture was drawn for
        self._legend_px = (0, 0)
        self.legend_left_out = False  # the names do not fit beside the surfaces at this size (see layout_legend)
        self._legend_warned = False
        self._marker_viewport = ORIENTATION_VIEWPORT
        self._fit_area = None  # the free rectangle the last camera fit used
        self._fitted = None  # the window size and camera of the last fit (see _on_render_start)
        self.help_actor = None
        self.orientation_widget = None
        self.view = "anterior"
        self.bounds = np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
        self.focus_bounds = self.bounds.copy()
        self._focus_points = _box_corners(self.bounds)
        self.auto_slices: set = set()
        self.color_changes: dict = {}
        self.case_name = "scene"
        self._window = (40.0, 400.0)
        self._positions: dict = {}
        self._visible = {group: True for group in GROUPS}
        self.slice_step = 1.0
        self._syncing = False
        self._lod: list = []  # (actor, full-resolution mapper, interaction mapper)
        self._plane_grids: dict = {}  # axis -> viz3d.scene.slices.PlaneGrid
        self._codes = (0.0, 1.0)  # CT value = offset + scale * texture code
        self._oit = True  # the renderer's order-independent transparency, off while dragging
        self._culling: list = []  # each _lod actor's face culling, restored after a drag
        self.interacting = False

    # ----------------------------------------------------------------- window / level
    @property
    def window(self) -> tuple[float, float]:
        """Current CT display window as ``(center, width)`` in HU."""
        return self._window

    def set_window(self, center: float, width: float) -> None:
        """Show CT values ``center - width/2 .. center + width/2`` as black .. white.

        Only two numbers of the planes' shader change (no array is touched, no texture is
        re-uploaded). ``width`` must be positive.
        """
        center, width = _check_window(center, width)
        self._window = (center, width)
        offset, scale = self._codes
        for actor in self.slice_actors.values():
            uniforms = actor.GetShaderProperty().GetFragmentCustomUniforms()
            uniforms.SetUniformf("ctScale", scale / width)
            uniforms.SetUniformf("ctShift", (offset - (center - width / 2.0)) / width)
        self._sync_slider("window_center", center)
        self._sync_slider("window_width", width)
        self._render()

    def apply_preset(self, name: str) -> None:
        """Set the window from `WINDOW_PRESETS` (``soft``, ``bone``, ``lung``, ``brain``)."""
        if name not in WINDOW_PRESETS:
            raise Viz3dError(f"unknown window preset {name!r}; choose one of {', '.join(WINDOW_PRESETS)}")
        self.set_window(*WINDOW_PRESETS[name])

    # ----------------------------------------------------------------- slices
    @property
    def slice_positions(self) -> dict[str, float]:
        """World positions of the planes in mm: ``{"axial": z, "coronal": y, "sagittal": x}``."""
        return dict(self._positions)

    def set_slice(self, axis: str, position_mm: float) -> float:
        """Move one CT plane to a world position and return where it went.

        ``axis`` is ``"axial"`` (position along S, RAS z), ``"coronal"`` (along A, y) or
        ``"sagittal"`` (along R, x). Positions outside the CT's extent along that axis
        (``slice_ranges``) are clamped to it.
        """
        if axis not in AXIS_INDEX:
            raise Viz3dError(f"unknown slice axis {axis!r}; choose one of {', '.join(SLICE_AXES)}")
        if not self.slice_planes:
            raise Viz3dError("this scene has no CT, so it has no slices to move")
        if axis not in self.slice_planes:
            raise Viz3dError(f"the {axis} plane is off in this scene")
        self.auto_slices.discard(axis)  # placed by hand from now on
        return self.move_slice(axis, position_mm)

    def move_slice(self, axis: str, position_mm, render: bool = True) -> float:
        """Move a plane to ``position_mm`` (clamped to its range) as `set_slice` does, but an
        ``auto`` plane stays auto (a picture's camera put back); returns where it went."""
        try:
            position = float(position_mm)
        except (TypeError, ValueError):
            raise Viz3dError(f"slice position must be a number of mm, got {position_mm!r}") from None
        if not math.isfinite(position):
            raise Viz3dError(f"slice position must be finite, got {position}")
        lo, hi = self.slice_ranges[axis]
        position = min(max(position, lo), hi)
        if position == self._positions.get(axis):
            return position
        plane = self.slice_planes[axis]
        origin = list(plane.GetOrigin())
        origin[AXIS_INDEX[axis]] = position
        plane.SetOrigin(origin)
        _show_plane(self, axis, position)
        self._positions[axis] = position
        self._sync_slider(axis, position)
        if render:
            self._render()
        return position

    def place_auto_slices(self) -> dict[str, float]:
        """Put each ``auto`` plane where it hides none of the drawn surfaces from the camera.

        A plane the camera sees at an angle goes just beyond the far side of `focus_bounds` (for
        an anterior view the coronal plane at the surfaces' posterior edge); one seen edge-on goes
        through the camera's eye, inside the surfaces' extent, so it shows as a line. Without
        surfaces the planes stay through the CT's centre. Called by `set_view` and after each
        camera drag; a plane is re-sampled only when it moves. Returns the new positions.
        """
        if not self.auto_slices or not self._has_focus:
            return {}
        camera = self.plotter.renderer.GetActiveCamera()
        eye = np.array(camera.GetPosition())
        focal = np.array(camera.GetFocalPoint())
        direction = eye - focal
        direction /= max(float(np.linalg.norm(direction)), 1e-12)
        placed = {}
        for axis in sorted(self.auto_slices):
            k = AXIS_INDEX[axis]
            lo, hi = self.focus_bounds[2 * k], self.focus_bounds[2 * k + 1]
            gap = max(self.slice_step, 1.0)
            if abs(direction[k]) < 0.02:  # edge-on: through the eye, so it covers nothing
                position = min(max(float(eye[k]), lo), hi)
            elif direction[k] > 0:  # the camera on the + side: the plane beyond the - side
                position = lo - gap
            else:
                position = hi + gap
            placed[axis] = self.move_slice(axis, position, render=False)
        return placed

    def step_slice(self, axis: str, steps: int = 1) -> float:
        """Move a plane by ``steps`` times the CT's smallest voxel size (negative: backwards)."""
        if axis not in AXIS_INDEX:
            raise Viz3dError(f"unknown slice axis {axis!r}; choose one of {', '.join(SLICE_AXES)}")
        if not self.slice_planes:
            return float("nan")
        return self.set_slice(axis, self._positions[axis] + steps * self.slice_step)

    # ----------------------------------------------------------------- visibility
    def set_visible(self, group: str, visible: bool) -> None:
        """Show or hide a group: ``"bone"``, ``"labels"`` (with the legend) or ``"slices"``."""
        actors = self._group_actors(group)
        self._visible[group] = bool(visible)
        for actor in actors:
            actor.SetVisibility(bool(visible))
        if group == "labels" and self.legend is not None:
            self.legend.SetVisibility(bool(visible))
        self._render()

    def toggle(self, group: str) -> bool:
        """Flip a group's visibility; return the new state."""
        self.set_visible(group, not self.is_visible(group))
        return self._visible[group]

    def is_visible(self, group: str) -> bool:
        """Whether the group is shown (a group without actors keeps its requested state)."""
        self._group_actors(group)
        return self._visible[group]

    def _group_actors(self, group):
        if group == "bone":
            return list(self.bone_actors.values())
        if group == "labels":
            return list(self.label_actors.values())
        if group == "slices":
            return list(self.slice_actors.values())
        raise Viz3dError(f"unknown group {group!r}; choose one of {', '.join(GROUPS)}")

    # ----------------------------------------------------------------- camera
    def set_view(self, name: str) -> None:
        """Point the camera from a preset direction (see `VIEW_DIRECTIONS`) and fit the whole scene."""
        if name not in VIEW_DIRECTIONS:
            raise Viz3dError(f"unknown view {name!r}; choose one of {', '.join(VIEWS)}")
        direction, up = (np.asarray(v, dtype=float) for v in VIEW_DIRECTIONS[name])
        center, b = self._focus_center(), self.focus_bounds
        distance = max(float(np.linalg.norm(b[1::2] - b[0::2])), 1.0)
        renderer = self.plotter.renderer
        camera = renderer.GetActiveCamera()
        self.plotter.renderer.camera.is_set = True  # keep PyVista from replacing it at the first render
        camera.SetViewAngle(VIEW_ANGLE)
        camera.SetFocalPoint(*center)
        camera.SetPosition(*(center + direction / np.linalg.norm(direction) * distance))
        camera.SetViewUp(*up)
        camera.OrthogonalizeViewUp()
        self.fit_camera(camera, center)
        self.view = name
        self.place_auto_slices()
        renderer.ResetCameraClippingRange(*self.bounds)
        self._fitted = self._camera_now()
        self._render()

    @property
    def focus_points(self) -> np.ndarray:
        """What the camera frames, (n, 3) world mm: a sample of the label surfaces' points (else the
        bone's), or the corners of the CT box; `focus_bounds` is their box."""
        return self._focus_points

    def _focus_center(self) -> np.ndarray:
        b = self.focus_bounds
        return np.array([(b[0] + b[1]) / 2, (b[2] + b[3]) / 2, (b[4] + b[5]) / 2])

    def _camera_now(self) -> tuple:
        """The window size and camera, to tell whether anything moved it since the last fit."""
        camera = self.plotter.renderer.GetActiveCamera()
        return (tuple(self.plotter.render_window.GetSize()), camera.GetPosition(), camera.GetFocalPoint(),
                camera.GetViewUp(), camera.GetWindowCenter())

    def _on_render_start(self, *_) -> None:
        """Before each frame: when the window has a new size (the web view's page, a picture of
        another size), lay the legend and the orientation marker out again for it, and frame the
        surfaces again for it unless the camera was moved since the last fit (a user's drag stays)."""
        window = self.plotter.render_window
        if window is None or self._fitted is None or tuple(window.GetSize()) == self._fitted[0]:
            return
        if self._camera_now()[1:] == self._fitted[1:]:
            camera = self.plotter.renderer.GetActiveCamera()
            direction = np.subtract(camera.GetPosition(), camera.GetFocalPoint())
            center = self._focus_center()
            camera.SetFocalPoint(*center)
            camera.SetPosition(*(center + direction))
            self.fit_camera(camera, center)
            self.plotter.renderer.ResetCameraClippingRange(*self.bounds)
        else:
            self.layout_legend()
        self._fitted = self._camera_now()

    def fit_camera(self, camera, center, margin=FIT_MARGIN, shift: bool = True, areas=None) -> float:
        """Place the camera so the drawn surfaces fill the part of the window that overlays leave free.

        The free area is a rectangle beside or above the legend and the orientation marker and,
        with the interactive controls, between the slider rows (`free_areas`); of the candidate
        rectangles (or ``areas``), the one in which the surfaces come out largest. The camera's
        window centre moves the focal point to the middle of that area. The fit uses the
        surfaces' points (`focus_bounds`), not the CT box; with ``shift`` the focal point moves to
        the middle of their projected outline, so they fill the area whatever their shape (a
        turntable keeps its axis: ``shift=False``). Returns the camera's distance to the focal point.
        """
        self.layout_legend()
        forward = np.array(camera.GetDirectionOfProjection())  # from camera to focal point
        up = np.array(camera.GetViewUp())
        right = np.cross(forward, up)
        corners = self._focus_points - center
        if shift:
            x, y = corners @ right, corners @ up
            offset = right * (x.min() + x.max()) / 2 + up * (y.min() + y.max()) / 2
            center = center + offset
            corners = corners - offset
            camera.SetFocalPoint(*center)
        x, y, toward = corners @ right, corners @ up, -(corners @ forward)
        width, height = self.plotter.window_size
        tan_half = math.tan(math.radians(camera.GetViewAngle()) / 2)

        def distance_in(area):
            x0, x1, y0, y1 = area
            tan_v = tan_half * margin * (y1 - y0)
            tan_h = tan_half * margin * (x1 - x0) * width / max(height, 1)
            return float(np.max(np.maximum(toward + np.abs(x) / tan_h, toward + np.abs(y) / tan_v)))

        distance, area = min(((distance_in(a), a) for a in (areas or self.free_areas())), key=lambda da: da[0])
        x0, x1, y0, y1 = self._fit_area = area
        camera.SetWindowCenter(-(x0 + x1 - 1.0), -(y0 + y1 - 1.0))
        camera.SetPosition(*(center - forward * max(distance, 1e-3)))
        return distance

    def free_areas(self) -> list[tuple[float, float, float, float]]:
        """Rectangles (x0, x1, y0, y1) of the window, normalised, that no overlay covers.

        Left of the legend (when shown) and, with the controls, between the slider rows; then
        clear of the orientation marker's corner: beside it or above it (two candidates when the
        marker lies in the rectangle). The marker never covers a surface, even with the legend
        hidden or in a full-height column (the marker then at the lower left).
        """
        x1 = 1.0
        if self.legend is not None and self.legend.GetVisibility() and not self.legend_left_out:
            width = max(self.plotter.window_size[0], 1)
            legend = (self._legend_px[0] + 2 * LEGEND_MARGIN_PX) / width
            x1 = 1.0 - legend - 0.01  # >= 0.39: a wider legend is left out
        y0, y1 = (0.17, 0.86) if self.sliders else (0.0, 1.0)
        mx0, my0, mx1, my1 = self._marker_viewport
        if mx0 >= x1 or mx1 <= 0.0 or my0 >= y1 or my1 <= y0:
            return [(0.0, x1, y0, y1)]
        beside = (0.0, min(x1, mx0 - 0.01), y0, y1) if mx0 > 0.0 else (mx1 + 0.01, x1, y0, y1)
        return [beside, (0.0, x1, max(y0, my1 + 0.01), y1)]

    def _free_area(self) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of the window, normalised, that the last fit used (see `free_areas`)."""
        return self._fit_area or self.free_areas()[0]

    # ----------------------------------------------------------------- window
    def show(self, *, title: str = "viz3d") -> None:
        """Open the interactive window and block until it is closed (``q`` or the close button)."""
        if self.plotter.off_screen:
            if not has_display():
                raise Viz3dError("no display to open a window on (DISPLAY is not set); write a screenshot instead")
            raise Viz3dError("this scene was built off screen; build it with off_screen=False to show it")
        self.plotter.show(title=title)

    def close(self) -> None:
        """Release the window and its graphics resources."""
        for widget in self.sliders.values():
            widget.Off()
        self.sliders.clear()
        self.plotter.close()

    def render(self) -> None:
        """Draw a frame now (PyVista's own ``plotter.render()`` does nothing before ``show()``)."""
        self.plotter.render_window.Render()

    def build_lod(self, max_triangles: int | None = None) -> int:
        """Prepare coarse copies to draw while the camera moves; returns the meshes' triangles.

        Software OpenGL on two cores draws 1.5-3 M triangles/s, so a clinical-size scene (5 M
        triangles) turns at about 1 frame/s. When the scene has more than ``max_triangles``,
        each mesh gets a copy simplified by quadric clustering to about ``max_triangles`` in all
        (default `LOD_TRIANGLES`); a copy of a back-face-culled surface has the few triangles
        clustering flips turned back, so it is culled too (half the fragments of a drag once the
        surfaces fill the picture). They are shown only between `begin_interaction` and
        `end_interaction`; still frames, screenshots and exports always use the full meshes.
        The CT planes need no copy: each is one textured quad. Built once; cheap to call again.
        """
        max_triangles = LOD_TRIANGLES if max_triangles is None else max_triangles
        if self._lod:
            return sum(lod.GetInput().GetNumberOfPolys() for _, _, lod in self._lod)
        actors = list(self.label_actors.values()) + list(self.bone_actors.values())
        total = sum(actor.GetMapper().GetInput().GetNumberOfPolys() for actor in actors)
        if total <= max_triangles:
            return total
        cell = _clustering_cell(actors, total, max_triangles)
        count = 0
        for actor in actors:
            full = actor.GetMapper()
            coarse = type(full)()
            simplified = _clustered(full.GetInput(), cell)
            if actor.prop.culling == "back":  # a culled surface: no coarse triangle may face inward
                simplified = _consistently_wound(simplified)
            coarse.SetInputData(simplified)
            coarse.ScalarVisibilityOff()
            self._lod.append((actor, full, coarse))
            count += coarse.GetInput().GetNumberOfPolys()
        return count

    def begin_interaction(self) -> None:
        """Switch to cheap drawing while the mouse drags the camera or a slider.

        The meshes draw their coarse copies (see `build_lod`) and translucent bone is blended in
        one pass instead of the order-independent pass. `end_interaction` restores the
        still-frame quality.
        """
        if self.interacting:
            return
        self.interacting = True
        self._culling = [actor.prop.culling for actor, _, _ in self._lod]
        for actor, _, coarse in self._lod:
            actor.SetMapper(coarse)  # culled surfaces stay culled: their copies face outward (_consistently_wound)
        self._oit = self.plotter.renderer.GetUseOIT()
        self.plotter.renderer.SetUseOIT(False)

    def end_interaction(self) -> None:
        """Back to the full meshes and full-quality planes, the ``auto`` planes placed for the
        new camera (`place_auto_slices`), and draw the still frame."""
        if not self.interacting:
            return
        self.interacting = False
        for (actor, full, _), culling in zip(self._lod, self._culling):
            actor.SetMapper(full)
            actor.prop.culling = culling
        self.plotter.renderer.SetUseOIT(self._oit)
        self.place_auto_slices()
        self._render()

    def legend_box(self, size=None) -> tuple[int, int, int, int] | None:
        """The legend's pixel box, (row0, row1, col0, col1) from the top left, in the window or in a
        picture of ``size`` (width, height) rendered from it; None without a legend (or one left out)."""
        if self.legend is None or self.legend_left_out:
            return None
        width, height = self.plotter.window_size if size is None else size
        w, h = self._legend_px
        col1, row0 = width - LEGEND_MARGIN_PX, LEGEND_MARGIN_PX
        return row0, row0 + h, col1 - w, col1

    def layout_legend(self) -> None:
        """Draw the legend picture again for the window's size (controls, visibility) when they have changed."""
        if self.legend is None:
            return
        size = tuple(self.plotter.window_size)
        shown = bool(self.legend.GetVisibility())
        if (size, bool(self.sliders), shown) == self._legend_layout_size:
            return
        self._legend_layout_size = (size, bool(self.sliders), shown)
        max_width = LEGEND_MAX_WIDTH * size[0] - 2 * LEGEND_MARGIN_PX
        image = legend_picture(self.legend_entries, max_width, LEGEND_MAX_HEIGHT * size[1] - LEGEND_MARGIN_PX,
                               title=self.legend_title)
        marker = ORIENTATION_VIEWPORT
        # in columns: the whole height in one column is narrower (not with the window's sliders and
        # help line, which the marker would then cover)
        if image.width > max_width / 2 and not self.sliders and shown:  # a hidden legend leaves the marker be
            tall = legend_picture(self.legend_entries, max_width, size[1] - 2 * LEGEND_MARGIN_PX, title=self.legend_title)
            if tall.width < image.width:
                image = tall  # and the orientation marker goes to the lower left
                marker = (0.0, ORIENTATION_VIEWPORT[1], ORIENTATION_VIEWPORT[2] - ORIENTATION_VIEWPORT[0],
                          ORIENTATION_VIEWPORT[3])
        self.legend_left_out = image.width + 2 * LEGEND_MARGIN_PX > LEGEND_MAX_SHARE * size[0]
        if self.legend_left_out:  # drawn transparent (the actor's visibility stays the user's)
            marker = ORIENTATION_VIEWPORT
            if shown:  # a hidden one (a QC sheet's panels) is missed by nobody
                self._warn_legend_left_out(size)
        self.legend.GetProperty().SetOpacity(0.0 if self.legend_left_out else 1.0)
        _set_legend_image(self.legend, image)
        self._legend_px = (0, 0) if self.legend_left_out else image.size
        if self.orientation_widget is not None:
            self.orientation_widget.SetViewport(*marker)
        self._marker_viewport = marker

    def _warn_legend_left_out(self, size) -> None:
        if self._legend_warned:
            return
        import warnings

        from ..errors import Viz3dWarning

        self._legend_warned = True
        count = len(self.legend_entries)
        warnings.warn(f"the legend's {count} name{'s do' if count != 1 else ' does'} not fit beside the surfaces in a "
                      f"{size[0]}x{size[1]} picture, so it is left out; a larger --size shows it (a QC sheet "
                      f"gives the names a column of their own)", Viz3dWarning, stacklevel=4)

    @property
    def orientation_viewport(self) -> tuple[float, float, float, float]:
        """Where the orientation marker is, (x0, y0, x1, y1) normalised: `ORIENTATION_VIEWPORT`, or
        the lower left corner when a tall legend takes the right-hand column."""
        return self._marker_viewport

    @property
    def _has_focus(self) -> bool:
        return bool(self.label_actors or self.bone_actors)

    def state(self) -> dict:
        """The control state as plain data: window, slice positions, visibility, view."""
        return {
            "window": list(self._window),
            "slices": self.slice_positions,
            "visible": dict(self._visible),
            "view": self.view,
        }

    # ----------------------------------------------------------------- helpers
    def _render(self) -> None:
        # PyVista's render() is a no-op until the window is shown, so building stays cheap.
        self.plotter.render()

    def _sync_slider(self, name, value) -> None:
        widget = self.sliders.get(name)
        if widget is None or self._syncing:
            return
        rep = widget.GetRepresentation()
        if value < rep.GetMinimumValue():
            rep.SetMinimumValue(value)
        if value > rep.GetMaximumValue():
            rep.SetMaximumValue(value)
        rep.SetValue(value)

    def _on_slider(self, name, value) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            if name == "window_center":
                self.set_window(value, self._window[1])
            elif name == "window_width":
                self.set_window(self._window[0], max(value, WINDOW_WIDTH_RANGE[0]))
            else:
                self.set_slice(name, value)
        finally:
            self._syncing = False

    def _on_key(self, method, argument) -> None:
        if method == "step_slice":
            getattr(self, method)(*argument)
        else:
            getattr(self, method)(argument)  # each method renders the change


def build_scene(
    meshes,
    ct=None,
    *,
    window=(40.0, 400.0),
    show_slices: bool = True,
    show_bone: bool = True,
    view: str = "anterior",
    off_screen: bool = False,
    size=DEFAULT_SIZE,
    interactive: bool = True,
    cull_back_faces: bool = True,
    slices=None,
    colors: str = "table",
    name: str | None = None,
    names_source: str | None = None,
    centres=None,
) -> Scene:
    """Build the scene for a list of `Mesh` and an optional CT `Volume`.

    Label meshes (``kind="label"``) are drawn opaque in their colours and listed in a legend;
    bone meshes (``kind="bone"``) semi-transparent (opacity 0.35) in their colour, both sides
    blended. Label meshes are closed and face outward (the `Mesh` contract; viz3d's own always
    are), so their back faces are culled, which halves what the rasterizer draws. With a CT,
    three orthogonal planes show it in greyscale. The camera frames the label surfaces (else
    the bone, else the CT). An orientation cube labelled with patient directions (R/L, A/P,
    S/I) is always drawn. Anti-aliasing is off (it costs about 4x per frame on software
    OpenGL). Nothing is rendered until the scene is shown or pictured.

    Parameters
    ----------
    meshes : list of Mesh
        The surfaces (may be empty).
    ct : Volume or None, optional
        The CT for the three planes; None: no planes.
    window : (float, float), optional
        The planes' ``(center, width)`` in HU (default 40/400, soft tissue).
    show_slices : bool, optional
        Whether the CT planes are visible at first (hidden groups are still built, so they
        can be toggled on).
    show_bone : bool, optional
        Whether the bone surface is visible at first.
    view : str, optional
        The camera preset, one of `VIEWS` (default ``"anterior"``).
    off_screen : bool, optional
        Render without a window (forced when there is no display).
    size : (int, int), optional
        The window's (width, height) in pixels.
    interactive : bool, optional
        Give the window sliders, the `KEYMAP` keys and a help line (default True).
    cull_back_faces : bool, optional
        False draws both sides of label surfaces, for open or inward-facing surfaces from
        elsewhere.
    slices : str, dict or None, optional
        Where the CT planes go, as `parse_slices` reads it (``"axial=120,coronal=off,
        sagittal=i40"`` or a dict); each plane not named is ``auto``: placed for each view so
        it hides none of the surfaces (see `Scene.place_auto_slices`).
    colors : {"table", "distinct"}, optional
        ``"table"`` (the meshes' own colours; a structure whose colour is within
        `MIN_COLOR_DIFFERENCE` CIEDE2000 of an earlier one's is given a distinct colour, with
        one `Viz3dWarning` naming them) or ``"distinct"`` (every label surface coloured from
        `viz3d.io.labels.distinct_colors`).
    name : str or None, optional
        The case's name (web page titles); default: from the CT's file name.
    names_source : str or None, optional
        Where the names came from (`viz3d.io.labels.LabelTable.source`): the legend's first
        line is then ``names: <names_source>``. The legend names every label surface drawn.
    centres : dict or None, optional
        Name -> world centre (RAS mm) of structures of the label map that are not drawn
        (`structure_centres`): a plane ``slices`` places at such a name goes through it.

    Returns
    -------
    Scene
        The scene: its PyVista plotter, the CT planes, window/level, legend and camera presets.
        Close it with ``scene.close()`` when done.

    Raises
    ------
    Viz3dError
        When ``view``, ``window``, ``size``, ``slices`` or ``colors`` is invalid, a mesh is not
        a valid `Mesh`, ``ct`` is not a `Volume`, or plane positions are given without a CT.

    See Also
    --------
    viz3d.outputs.render.screenshot : A PNG of the scene.
    viz3d.outputs.web.serve : The scene in web browsers.

    Examples
    --------
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> label = viz3d.Volume(ball, np.diag([0.8, 0.8, 0.8, 1.0]))
    >>> ct = viz3d.Volume(np.where(ball, 700, -1000).astype(np.int16), label.affine)
    >>> meshes = viz3d.build_meshes(ct, label, table="spinopelvic10")
    >>> scene = build_scene(meshes, ct, off_screen=True, interactive=False)
    >>> scene.view, scene.window, [name for name, color in scene.legend_entries]
    ('anterior', (40.0, 400.0), ['L1'])
    >>> scene.close()
    >>> build_scene(meshes, view="top", off_screen=True)
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: unknown view 'top'; choose one of anterior, posterior, left, right, superior, inferior, iso
    """
    meshes = list(meshes or [])
    width_px, height_px = check_size(size)
    if view not in VIEW_DIRECTIONS:
        raise Viz3dError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    try:
        window = _check_window(*window)
    except TypeError:
        raise Viz3dError(f"window must be (center, width) in HU, got {window!r}") from None
    for mesh in meshes:
        _check_mesh(mesh)
    if ct is not None and (getattr(ct, "array", None) is None or getattr(ct, "affine", None) is None):
        raise Viz3dError("ct must be a viz3d Volume (array + affine) or None")
    slice_specs = parse_slices(slices)
    meshes, changes, message = assign_colors(meshes, colors)
    if message:
        import warnings

        from ..errors import Viz3dWarning

        warnings.warn(message, Viz3dWarning, stacklevel=2)

    pv = import_pyvista()
    if not has_display():
        off_screen = True
    plotter = pv.Plotter(off_screen=bool(off_screen), window_size=(width_px, height_px))
    plotter.disable_anti_aliasing()
    plotter.set_background(BACKGROUND)
    scene = Scene(plotter, ct)
    scene.color_changes = changes
    scene.case_name = name or case_name(ct)
    scene.legend_title = f"names: {names_source}" if names_source else None
    try:
        scene._syncing = True  # no slider callbacks while building
        bounds = []
        _add_meshes(pv, scene, meshes, bounds, cull_back_faces)
        _set_focus(scene, meshes)
        if ct is not None:
            _add_slices(pv, scene, ct, bounds, slice_specs, meshes, centres)
        elif any(spec not in ("auto", "off") for spec in slice_specs.values()):
            raise Viz3dError("slice positions were given but there is no CT to slice")
        if bounds:
            b = np.array(bounds)
            scene.bounds = np.array([b[:, 0].min(), b[:, 1].max(), b[:, 2].min(),
                                     b[:, 3].max(), b[:, 4].min(), b[:, 5].max()])
        if not scene._has_focus:
            scene.focus_bounds = scene.bounds.copy()
            scene._focus_points = _box_corners(scene.bounds)
        _add_orientation_cube(plotter, scene)
        _add_legend(pv, scene, [m for m in meshes if m.kind != "bone" and len(m.faces)])
        if interactive:
            _add_controls(scene)
            scene.build_lod()
        scene._syncing = False
        scene.set_window(*window)
        scene.set_visible("bone", show_bone)
        scene.set_visible("slices", show_slices)
        scene.set_visible("labels", True)
        scene.set_view(view)
        plotter.renderer.AddObserver("StartEvent", scene._on_render_start)
    except BaseException:
        plotter.close()
        raise
    return scene


# --------------------------------------------------------------------------- building blocks
def _check_window(center, width) -> tuple[float, float]:
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        raise Viz3dError(f"window centre and width must be numbers, got {center!r}, {width!r}") from None
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise Viz3dError(f"window width must be a positive number of HU and centre finite, got ({center}, {width})")
    return center, width


def _box_corners(b) -> np.ndarray:
    """The 8 corners of an (x0, x1, y0, y1, z0, z1) box, (8, 3)."""
    b = np.asarray(b, float)
    return np.array(np.meshgrid(b[0:2], b[2:4], b[4:6], indexing="ij")).reshape(3, -1).T


FOCUS_POINTS = 30_000  # at most this many surface points for the camera's fit


def _set_focus(scene, meshes) -> None:
    """What the camera frames: the label surfaces, else the bone (a sample of their points)."""
    drawn = [m for m in meshes if len(m.faces)]
    focus = [m for m in drawn if m.kind == "label"] or [m for m in drawn if m.kind == "bone"]
    if not focus:
        return
    total = sum(len(m.vertices) for m in focus)
    step = max(1, total // FOCUS_POINTS)
    points = [np.asarray(m.vertices, float)[::step] for m in focus]
    lo = np.min([np.asarray(m.vertices).min(axis=0) for m in focus], axis=0)
    hi = np.max([np.asarray(m.vertices).max(axis=0) for m in focus], axis=0)
    scene.focus_bounds = np.array([lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]], float)
    scene._focus_points = np.concatenate(points)


def parse_slices(spec) -> dict:
    """Read where the CT planes go: ``"axial=120,coronal=off,sagittal=i40"`` or a dict.

    Per axis (``axial``, ``coronal``, ``sagittal``): a world position in mm (RAS; axial along
    z, coronal along y, sagittal along x), ``iN`` (the plane through voxel index N along the
    CT's voxel axis nearest that world axis), ``off`` (no plane), ``auto`` (placed for each view
    so it hides none of the surfaces: the default), or the name of a structure (the plane
    through its centre, as ``viz3d slice --at``; ``L3`` finds ``vertebrae_L3``): a drawn one's
    `mesh_centroid`, else its voxels' centroid in the label map (`build_scene`'s ``centres``).
    Returns ``{axis: float | ("index", N) |
    "off" | "auto" | name}``; axes not named are left out (``auto``).

    >>> parse_slices("axial=120, coronal=off,sagittal=i40")
    {'axial': 120.0, 'coronal': 'off', 'sagittal': ('index', 40)}
    """
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise Viz3dError("slices: expected AXIS=POSITION such as axial=120, coronal=off, sagittal=i40 or auto, "
                                 f"got {part.strip()!r}")
            axis, value = part.split("=", 1)
            items.append((axis, value))
    out = {}
    for axis, value in items:
        axis = str(axis).strip().lower()
        if axis not in AXIS_INDEX:
            raise Viz3dError(f"slices: unknown plane {axis!r}; choose from {', '.join(SLICE_AXES)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value).strip()
            if text.lower() in SLICE_MODES:
                out[axis] = text.lower()
                continue
            if len(text) > 1 and text[0] in "iI" and text[1:].lstrip("-").isdigit():
                out[axis] = ("index", int(text[1:]))
                continue
            try:
                number = float(text)
            except ValueError:
                if not text:
                    raise Viz3dError(f"slices: no position given for {axis}") from None
                out[axis] = text  # a structure's name, resolved against the drawn surfaces
                continue
        if not math.isfinite(number):
            raise Viz3dError(f"slices: {axis} position must be finite, got {value!r}")
        out[axis] = number
    return out


def _slice_position(axis, spec, ct, meshes, default, centres=None) -> float:
    """The world position (mm) of a plane for a `parse_slices` value (``auto``: ``default``; a
    name: the drawn structure's centre, else its centre in ``centres``)."""
    k = AXIS_INDEX[axis]
    if spec == "auto":
        return default
    if isinstance(spec, float):
        return spec
    if isinstance(spec, tuple):
        index = spec[1]
        shape = np.array(ct.array.shape)
        voxel_axis = int(np.argmax(np.abs(ct.affine[k, :3])))
        if not 0 <= index < shape[voxel_axis]:
            raise Viz3dError(f"slices: {axis}=i{index} is outside the CT (voxel indices 0..{shape[voxel_axis] - 1} "
                             f"along its axis {voxel_axis})")
        ijk = (shape - 1) / 2.0
        ijk[voxel_axis] = index
        return float(ct.affine[k, :3] @ ijk + ct.affine[k, 3])
    found = _drawn_named(meshes, spec)
    if not found and spec in (centres or {}):
        return float(centres[spec][k])
    if len(found) != 1:
        what = "no drawn structure is named" if not found else "several drawn structures match"
        raise Viz3dError(f"slices: {what} {spec!r} (for {axis}={spec}); give a position in mm, iN, off or auto")
    return float(mesh_centroid(found[0])[k])


def _drawn_named(meshes, name) -> list:
    """The drawn label surfaces ``name`` means: named so (any case), else whose name ends ``_name``."""
    wanted = str(name).lower()
    labels = [m for m in meshes if m.kind == "label" and len(m.faces)]
    return [m for m in labels if m.name.lower() == wanted] or [m for m in labels if m.name.lower().endswith("_" + wanted)]


def undrawn_plane_names(slices, meshes=()) -> list[str]:
    """The structure names ``slices`` (as `parse_slices` reads it) places planes at that name no
    drawn surface: their centres come from the label map (`structure_centres`).

    >>> undrawn_plane_names("axial=L1,coronal=liver,sagittal=i3", [])
    ['L1', 'liver']
    """
    names = [spec for spec in parse_slices(slices).values() if isinstance(spec, str) and spec not in SLICE_MODES]
    return [name for name in dict.fromkeys(names) if not _drawn_named(meshes, name)]


def structure_centres(label, table, names) -> dict[str, np.ndarray]:
    """The centre (world RAS mm) of each named structure in a label map: the centroid of its
    voxels, as ``viz3d slice --at NAME`` takes it, for a plane at a structure that is not drawn.

    Names are matched as ``--labels`` matches them: the table's name in any case, or its last
    word when no other name ends so (``L1`` for ``vertebrae_L1``), or ``label_N``.

    Parameters
    ----------
    label : Volume or Segmentation
        The label map (every layer of a layered segmentation is looked in).
    table : LabelTable
        The names of its values.
    names : iterable of str
        The structures.

    Returns
    -------
    dict of str to numpy.ndarray
        Name -> (3,) centre in mm.

    Raises
    ------
    Viz3dError
        When the table has no such name, or the structure has no voxel in the label map.

    Examples
    --------
    >>> from viz3d.io.labels import builtin_table
    >>> from viz3d.io.volume import Volume
    >>> array = np.zeros((4, 4, 4), np.uint8)
    >>> array[0:2, 0:2, 2:4] = 1  # L1
    >>> label = Volume(array, np.diag([2.0, 2.0, 2.0, 1.0]))
    >>> structure_centres(label, builtin_table("spinopelvic10"), ["l1"])["l1"].tolist()
    [1.0, 1.0, 5.0]
    >>> structure_centres(label, builtin_table("spinopelvic10"), ["L2"])
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: slices: L2 (label 2) is not in the label map
    """
    return {name: _structure_centre(label, table, name) for name in names}


def _structure_centre(label, table, name: str) -> np.ndarray:
    from nibabel.affines import apply_affine

    from ..io.segmentation import label_layers

    value = _table_value(table, name)
    total, count = np.zeros(3), 0
    for layer in label_layers(label):
        ijk = np.nonzero(np.asarray(layer.array) == value)
        if len(ijk[0]):
            total += apply_affine(layer.affine, np.mean(ijk, axis=1)) * len(ijk[0])
            count += len(ijk[0])
    if not count:
        where = getattr(label, "source", None) or "the label map"
        raise Viz3dError(f"slices: {name} (label {value}) is not in {where}")
    return total / count


def _table_value(table, name: str) -> int:
    """The value ``name`` means in ``table`` (as `_structure_centre` matches names)."""
    import difflib
    import re

    from ..io.labels import short_names

    by_name: dict[str, int] = {}
    for value, known in sorted(table.names.items()):
        if value != 0:
            by_name.setdefault(known.strip().casefold(), value)
    by_name = {**short_names(by_name), **by_name}
    key = name.strip().casefold()
    match = re.fullmatch(r"label_(\d+)", key)
    if key in by_name or match:
        return by_name[key] if key in by_name else int(match.group(1))
    close = difflib.get_close_matches(key, list(by_name), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise Viz3dError(f"slices: no drawn structure is named {name!r} and the {table.name} label table has no such "
                     f"name{hint} (give a position in mm, iN, off or auto)")


def mesh_centroid(mesh) -> np.ndarray:
    """The centre (world mm) of the solid a closed surface encloses: its centroid, as `viz3d slice
    --at NAME` takes the centroid of the structure's voxels; the middle of its points' box when
    the surface encloses no volume (open).

    >>> from viz3d.surfaces.meshing import Mesh
    >>> v = np.array([[0, 0, 0], [3, 0, 0], [0, 3, 0], [0, 0, 3]], float)  # a corner of a cube
    >>> f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    >>> mesh_centroid(Mesh("t", "label", 1, (1, 0, 0), v, f)).tolist()  # not the box's middle, 1.5
    [0.75, 0.75, 0.75]
    """
    vertices = np.asarray(mesh.vertices, float)
    a, b, c = (vertices[np.asarray(mesh.faces)[:, i]] for i in range(3))
    volumes = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0  # signed tetrahedra with the origin
    total = float(volumes.sum())
    if len(volumes) and abs(total) > 1e-9 * max(float(np.abs(volumes).sum()), 1e-300):
        return (volumes[:, None] * (a + b + c)).sum(axis=0) / (4.0 * total)
    return (vertices.min(axis=0) + vertices.max(axis=0)) / 2


def assign_colors(meshes, mode: str = "table", threshold: float = MIN_COLOR_DIFFERENCE):
    """The meshes to draw, with colours that can be told apart: (meshes, changes, warning or None).

    ``mode="table"``: each label surface keeps its colour unless it lies within ``threshold``
    (CIEDE2000) of an earlier surface's; such a surface gets the candidate colour nearest its
    own that is at least twice the threshold from every other one (else the farthest). The
    warning names the close pairs whose second colour was chosen by a table; viz3d's own
    generated colours (`viz3d.io.labels.default_color`, the built-in TotalSegmentator table's) are
    replaced without a word. ``mode="distinct"``: every label
    surface gets a colour of `viz3d.io.labels.distinct_colors`, in order. ``changes`` maps a
    recoloured surface's name to (old, new) RGB. Bone surfaces are left as they are; the meshes
    given are not modified (changed ones are copies).
    """
    import dataclasses

    from ..io.labels import palette_candidates, default_color, delta_e_ciede2000, distinct_colors, srgb_to_lab

    if mode not in COLOR_MODES:
        raise Viz3dError(f"unknown colour mode {mode!r}; choose one of {', '.join(COLOR_MODES)}")
    meshes = list(meshes)
    index = [i for i, m in enumerate(meshes) if m.kind == "label" and len(m.faces)]
    if not index:
        return meshes, {}, None
    old = [tuple(float(c) for c in meshes[i].color) for i in index]
    if mode == "distinct":
        new = distinct_colors(len(index), avoid=(BACKGROUND,))
        changes = {meshes[i].name: (o, n) for i, o, n in zip(index, old, new)}
        for i, color in zip(index, new):
            meshes[i] = dataclasses.replace(meshes[i], color=color)
        return meshes, changes, None
    lab = srgb_to_lab(np.clip(np.array(old), 0.0, 1.0))
    current = lab.copy()
    candidates, candidate_lab = palette_candidates()
    pairs, changes = [], {}
    to_candidates = None  # (candidates, structures) colour differences, computed when first needed
    for j in range(1, len(index)):
        near = delta_e_ciede2000(current[:j], current[j])
        close = np.flatnonzero(near < threshold)
        if not len(close):
            continue
        pairs.extend((index[i], index[j], float(near[i])) for i in close)
        if to_candidates is None:
            to_candidates = delta_e_ciede2000(candidate_lab[:, None, :], current[None, :, :])
        distance = np.min(np.delete(to_candidates, j, axis=1), axis=1)
        ok = np.flatnonzero(distance >= 2 * threshold)
        if len(ok):
            pick = int(ok[np.argmin(delta_e_ciede2000(candidate_lab[ok], lab[j]))])
        else:
            pick = int(np.argmax(distance))
        current[j] = candidate_lab[pick]
        to_candidates[:, j] = delta_e_ciede2000(candidate_lab, current[j])
        color = tuple(float(c) for c in candidates[pick])
        changes[meshes[index[j]].name] = (old[j], color)
        meshes[index[j]] = dataclasses.replace(meshes[index[j]], color=color)
    if not changes:
        return meshes, {}, None
    # viz3d's own generated colours (labels.default_color: the built-in TotalSegmentator table's)
    # are nobody's choice: replacing them needs no word; a table's chosen colours do
    chosen = {i for i, color in zip(index, old) if tuple(round(c, 4) for c in color) != default_color(meshes[i].label or 0)}
    pairs = [(a, b, d) for a, b, d in pairs if b in chosen]
    if not pairs:
        return meshes, changes, None
    names = {i: meshes[i].name for i in index}
    listed = ", ".join(f"{names[a]} ~ {names[b]} ({d:.1f})" for a, b, d in pairs[:6])
    if len(pairs) > 6:
        listed += f" and {len(pairs) - 6} more"
    message = (f"colours too close to tell apart (CIEDE2000 < {threshold:g}): {listed}; {len({b for _, b, _ in pairs})} "
               f"structure(s) drawn in distinct colours instead (--colors distinct recolours every structure)")
    return meshes, changes, message


def case_name(ct) -> str:
    """A short name for the case: the CT's file name without its extension, or its folder's name
    when the file name says nothing (``ct.nii.gz``, ``image.nii``), or ``scene``."""
    from pathlib import Path

    source = str(getattr(ct, "source", "") or "").rstrip("/\\")
    if not source:
        return "scene"
    path = Path(source)
    stem = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    if stem.lower() in ("ct", "image", "img", "volume", "scan", "data", "series", "dicom", "ct_dicom", "") and path.parent.name:
        return path.parent.name
    return stem


def _check_mesh(mesh) -> None:
    name = getattr(mesh, "name", "?")
    vertices = np.asarray(mesh.vertices)
    faces = np.asarray(mesh.faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise Viz3dError(f"mesh {name!r}: vertices must be an (N, 3) array, got shape {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise Viz3dError(f"mesh {name!r}: faces must be an (M, 3) integer array, got {faces.dtype} {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise Viz3dError(f"mesh {name!r}: face indices out of range for {len(vertices)} vertices")
    if mesh.kind not in ("label", "bone"):
        raise Viz3dError(f"mesh {name!r}: kind must be 'label' or 'bone', got {mesh.kind!r}")


def _add_meshes(pv, scene, meshes, bounds, cull_back_faces: bool) -> None:
    for index, mesh in enumerate(meshes):
        if not len(mesh.faces):
            continue
        poly = pv.PolyData.from_regular_faces(
            np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int64)
        )
        is_bone = mesh.kind == "bone"
        key = mesh.name
        target = scene.bone_actors if is_bone else scene.label_actors
        if key in target:
            key = f"{mesh.name} #{index}"
        actor = scene.plotter.add_mesh(
            poly,
            color=tuple(float(c) for c in mesh.color),
            opacity=BONE_OPACITY if is_bone else 1.0,
            name=f"{mesh.kind}-{index}",
            pickable=False,
            reset_camera=False,
            show_scalar_bar=False,
        )
        if is_bone:
            actor.prop.specular = 0.1
        elif cull_back_faces:
            # closed and outward: back faces are never seen from outside, and culling them
            # (3D Slicer's default for models) draws a full-mesh frame 1.5-1.7x faster
            actor.prop.culling = "back"
        target[key] = actor
        bounds.append(poly.bounds)


def _add_slices(pv, scene, ct, bounds, specs=None, meshes=(), centres=None) -> None:
    from .slices import plane_grid, value_codes
    from nibabel.affines import apply_affine, voxel_sizes

    from ..io.volume import grid_box

    vtk = _vtk()
    specs = specs or {}
    shape = np.array(ct.array.shape)
    lo, hi = grid_box(ct.affine, shape)
    center = apply_affine(ct.affine, (shape - 1) / 2.0)
    scene.slice_step = float(min(voxel_sizes(ct.affine)))
    scene._codes = value_codes(ct.array)
    for axis in SLICE_AXES:
        k = AXIS_INDEX[axis]
        spec = specs.get(axis, "auto")
        if spec == "off":
            continue
        position = _slice_position(axis, spec, ct, meshes, float(center[k]), centres)
        position = min(max(position, float(lo[k])), float(hi[k]))
        if spec == "auto":
            scene.auto_slices.add(axis)
        normal = [0.0, 0.0, 0.0]
        normal[k] = 1.0
        plane = vtk.vtkPlane()
        origin = center.copy()
        origin[k] = position
        plane.SetOrigin(*origin)
        plane.SetNormal(*normal)
        grid = plane_grid(ct.affine, ct.array.shape, k)
        quad = pv.PolyData(np.zeros((4, 3)), faces=[4, 0, 1, 2, 3])
        quad.active_texture_coordinates = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
        image = vtk.vtkImageData()
        image.SetDimensions(grid.shape[0], grid.shape[1], 1)
        texture = vtk.vtkTexture()
        texture.SetInputData(image)
        texture.InterpolateOff()  # the shader interpolates the decoded values
        texture.SetColorModeToDirectScalars()
        actor = scene.plotter.add_mesh(quad, lighting=False, name=f"slice-{axis}", pickable=False,
                                       reset_camera=False, show_scalar_bar=False)
        actor.SetTexture(texture)
        actor.GetShaderProperty().AddFragmentShaderReplacement("//VTK::TCoord::Impl", True, _PLANE_SHADER, False)
        scene.slice_actors[axis] = actor
        scene.slice_planes[axis] = plane
        scene.slice_images[axis] = image
        scene._plane_grids[axis] = grid
        scene.slice_ranges[axis] = (float(lo[k]), float(hi[k]))
        scene._positions[axis] = position
        _show_plane(scene, axis, position)
    bounds.append(tuple(ct.world_bounds().T.ravel()))


def _show_plane(scene, axis: str, position: float) -> None:
    """Sample the CT on ``axis``'s plane at ``position`` into its texture and move its quad there."""
    from vtkmodules.util.numpy_support import numpy_to_vtk

    from .slices import encode_plane, plane_corners, sample_plane

    grid = scene._plane_grids[axis]
    values, inside = sample_plane(scene.ct.array, scene.ct.affine, grid, position)
    codes = numpy_to_vtk(encode_plane(values, inside, *scene._codes).reshape(-1, 3), deep=True)
    codes.SetName("CT codes")
    image = scene.slice_images[axis]
    image.GetPointData().SetScalars(codes)
    image.Modified()
    quad = scene.slice_actors[axis].GetMapper().GetInput()
    quad.GetPoints().SetData(numpy_to_vtk(plane_corners(grid, position), deep=True))
    quad.Modified()


def _add_legend(pv, scene, label_meshes) -> None:
    """A picture naming every label with its colour, at the upper right (see `legend_picture`)."""
    from vtkmodules.vtkRenderingCore import vtkActor2D, vtkCoordinate, vtkImageMapper

    if not label_meshes:
        return
    scene.legend_entries = [(m.name, tuple(float(c) for c in m.color)) for m in label_meshes]
    scene.legend_labels = [name for name, _ in scene.legend_entries]
    mapper = vtkImageMapper()
    mapper.SetColorWindow(255.0)
    mapper.SetColorLevel(127.5)
    legend = vtkActor2D()
    legend.SetMapper(mapper)
    # anchored to the window's upper right corner: its lower left at (-w, -h) pixels from there
    corner = vtkCoordinate()
    corner.SetCoordinateSystemToNormalizedViewport()
    corner.SetValue(1.0, 1.0)
    legend.GetPositionCoordinate().SetCoordinateSystemToDisplay()
    legend.GetPositionCoordinate().SetReferenceCoordinate(corner)
    legend.PickableOff()
    scene.legend = legend
    scene._legend_corner = corner  # kept alive with the actor
    scene.layout_legend()
    scene.plotter.add_actor(legend, reset_camera=False, name="legend", pickable=False)


def _set_legend_image(actor, image) -> None:
    """Show a Pillow RGB picture in the legend's actor, its upper right corner at the window's."""
    from vtkmodules.util.numpy_support import numpy_to_vtk

    vtk = _vtk()
    pixels = np.asarray(image.convert("RGB"))[::-1]  # VTK's rows go up
    h, w = pixels.shape[:2]
    data = vtk.vtkImageData()
    data.SetDimensions(w, h, 1)
    scalars = numpy_to_vtk(pixels.reshape(-1, 3).copy(), deep=True)
    scalars.SetName("legend")
    data.GetPointData().SetScalars(scalars)
    actor.GetMapper().SetInputData(data)
    actor.GetPositionCoordinate().SetValue(-(w + LEGEND_MARGIN_PX), -(h + LEGEND_MARGIN_PX))


def legend_picture(entries, max_width: float, max_height: float, title: str | None = None):
    """A Pillow RGB picture of the legend: a swatch and the name of every ``(name, rgb)`` entry,
    after ``title`` (a line without swatch, e.g. where the names came from) when given.

    It fits ``max_height`` pixels when it can: the largest type from `LEGEND_FONT_PX` for which
    the entries, in as many columns as needed (column by column), are no wider than ``max_width``;
    when none is, the narrowest layout at the smallest type. Every entry is named.
    """
    from PIL import Image, ImageDraw

    entries = ([(title, None)] if title else []) + list(entries)
    layouts = []
    for px in range(LEGEND_FONT_PX[0], LEGEND_FONT_PX[1] - 1, -1):
        font = _legend_font(px)
        row = int(math.ceil(px * 1.3))
        pad = max(3, px // 3)
        names = [font.getlength(name) for name, _ in entries]
        for columns in range(1, max(len(entries), 1) + 1):  # the fewest columns that fit the height
            rows = math.ceil(len(entries) / columns)
            height = rows * row + 2 * pad
            if height <= max_height or rows == 1:
                break
        widths = [max(names[c * rows:(c + 1) * rows], default=0) + row + pad for c in range(columns)]
        layouts.append((px, font, row, pad, rows, widths, int(math.ceil(sum(widths) + pad * (columns + 1))), height))
    # as few columns as readable type needs, in the largest type that keeps to max_width;
    # else the narrowest layout
    fewest = min(len(layout[5]) for layout in layouts if layout[0] >= LEGEND_READABLE_PX)
    fitting = [layout for layout in layouts if len(layout[5]) == fewest and layout[6] <= max_width]
    best = fitting[0] if fitting else min(layouts, key=lambda layout: (layout[6], -layout[0]))
    px, font, row, pad, rows, widths, width, height = best
    image = Image.new("RGB", (max(width, 8), max(height, 8)), LEGEND_BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, image.width - 1, image.height - 1], outline=LEGEND_BORDER)
    text = tuple(int(round(c * 255)) for c in TEXT_COLOR)
    swatch = max(4, int(row * 0.62))
    x = pad
    for column, column_width in enumerate(widths):
        for i, (name, color) in enumerate(entries[column * rows:(column + 1) * rows]):
            y = pad + i * row
            if color is None:  # the title line: no swatch, dimmer
                draw.text((x, y + row / 2), name, fill=tuple(int(0.7 * c) for c in text), font=font, anchor="lm")
                continue
            rgb = tuple(int(round(c * 255)) for c in color)
            top = y + (row - swatch) // 2
            draw.rectangle([x, top, x + swatch - 1, top + swatch - 1], fill=rgb)
            draw.text((x + swatch + max(3, px // 3), y + row / 2), name, fill=text, font=font, anchor="lm")
        x += int(column_width) + pad
    return image


_FONTS: dict = {}


def _legend_font(px: int):
    font = _FONTS.get(px)
    if font is None:
        from PIL import ImageFont

        try:
            font = ImageFont.load_default(size=px)  # Pillow >= 10.1 with FreeType
        except (TypeError, OSError, ImportError):
            font = ImageFont.load_default()
        _FONTS[px] = font
    return font


def _add_orientation_cube(plotter, scene) -> None:
    """A cube labelled with patient directions plus arrows towards R, A and S, in a corner."""
    vtk = _vtk()

    cube = vtk.vtkAnnotatedCubeActor()
    # RAS+: the +x face is the patient's Right, +y Anterior, +z Superior.
    for face, text in (("XPlus", "R"), ("XMinus", "L"), ("YPlus", "A"),
                       ("YMinus", "P"), ("ZPlus", "S"), ("ZMinus", "I")):
        getattr(cube, f"Set{face}FaceText")(text)
        prop = getattr(cube, f"Get{face}FaceProperty")()
        prop.SetColor(0.1, 0.1, 0.1)
        prop.SetInterpolationToFlat()
    cube.SetFaceTextScale(0.65)
    cube.SetZFaceTextRotation(90)  # "S" upright when seen from above with anterior up
    cube.GetCubeProperty().SetColor(0.80, 0.80, 0.76)
    cube.SetTextEdgesVisibility(False)  # outlined letters cost ~4 ms a frame in software OpenGL

    axes = vtk.vtkAxesActor()
    axes.SetTotalLength(1.0, 1.0, 1.0)
    axes.SetShaftTypeToCylinder()
    axes.SetCylinderRadius(0.03)
    axes.SetConeRadius(0.25)
    axes.SetXAxisLabelText("R")
    axes.SetYAxisLabelText("A")
    axes.SetZAxisLabelText("S")
    # muted colours, so the marker is never mistaken for (or by a test, for) a label colour
    for arrow, color in (("X", (0.85, 0.45, 0.45)), ("Y", (0.45, 0.78, 0.45)), ("Z", (0.5, 0.6, 0.95))):
        getattr(axes, f"Get{arrow}AxisShaftProperty")().SetColor(*color)
        getattr(axes, f"Get{arrow}AxisTipProperty")().SetColor(*color)
        caption = getattr(axes, f"Get{arrow}AxisCaptionActor2D")()
        caption.GetCaptionTextProperty().SetColor(*TEXT_COLOR)
        caption.GetCaptionTextProperty().ShadowOff()
        caption.GetCaptionTextProperty().ItalicOff()

    marker = vtk.vtkPropAssembly()
    marker.AddPart(cube)
    marker.AddPart(axes)
    scene.orientation_widget = plotter.add_orientation_widget(
        marker, interactive=False, viewport=ORIENTATION_VIEWPORT
    )


def _add_controls(scene) -> None:
    plotter = scene.plotter
    style = dict(style="modern", interaction_event="always", color=TEXT_COLOR,
                 title_height=0.022, slider_width=0.025, tube_width=0.004)
    center, width = scene.window
    scene.sliders["window_center"] = plotter.add_slider_widget(
        partial(scene._on_slider, "window_center"), _range_with(WINDOW_CENTER_RANGE, center), value=center,
        title="window centre (HU)", pointa=(0.03, 0.13), pointb=(0.27, 0.13), fmt="%.0f", **style,
    )
    scene.sliders["window_width"] = plotter.add_slider_widget(
        partial(scene._on_slider, "window_width"), _range_with(WINDOW_WIDTH_RANGE, width), value=width,
        title="window width (HU)", pointa=(0.32, 0.13), pointb=(0.56, 0.13), fmt="%.0f", **style,
    )
    for i, axis in enumerate(SLICE_AXES):
        if axis not in scene.slice_ranges:
            continue
        lo, hi = scene.slice_ranges[axis]
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        letter = "SAR"[i]
        x0 = 0.03 + i * 0.21
        scene.sliders[axis] = plotter.add_slider_widget(
            partial(scene._on_slider, axis), (lo, hi), value=scene.slice_positions[axis],
            title=f"{axis} ({letter} mm)", pointa=(x0, 0.9), pointb=(x0 + 0.17, 0.9), fmt="%.1f", **style,
        )
    for key, (method, argument) in KEYMAP.items():
        plotter.add_key_event(key, partial(scene._on_key, method, argument))
    # cheap drawing while the camera or a slider is dragged (see Scene.begin_interaction)
    if plotter.iren is not None:
        plotter.iren.add_observer("StartInteractionEvent", lambda *_: scene.begin_interaction())
        plotter.iren.add_observer("EndInteractionEvent", lambda *_: scene.end_interaction())
    for widget in scene.sliders.values():
        widget.AddObserver("StartInteractionEvent", lambda *_: scene.begin_interaction())
        widget.AddObserver("EndInteractionEvent", lambda *_: scene.end_interaction())
    vtk = _vtk()

    help_actor = vtk.vtkTextActor()
    help_actor.SetInput(HELP_TEXT)
    help_actor.GetTextProperty().SetFontSize(13)
    help_actor.GetTextProperty().SetColor(*TEXT_COLOR)
    help_actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    help_actor.GetPositionCoordinate().SetValue(0.01, 0.012)
    help_actor.PickableOff()
    plotter.add_actor(help_actor, reset_camera=False, name="help", pickable=False)
    scene.help_actor = help_actor


def _clustering_cell(actors, total: int, target: int) -> float:
    """Cell size (mm) for quadric clustering that leaves about ``target`` of ``total`` triangles.

    Clustering keeps about 2.8 triangles per cell crossed by the surface (measured on the zoom-6
    case), so the cell area is that many times the surface area over the target; the area is
    estimated from a sample of triangles.
    """
    from ..surfaces.polydata import polydata_arrays

    area = 0.0
    for actor in actors:
        points, faces = polydata_arrays(actor.GetMapper().GetInput())
        sample = faces[:: max(1, len(faces) // 2000)]
        a, b, c = (points[sample[:, i]].astype(np.float64) for i in range(3))
        area += np.linalg.norm(np.cross(b - a, c - a), axis=1).mean() / 2 * len(faces)
    return max(float(np.sqrt(2.8 * area / target)), 1e-3)


def _consistently_wound(coarse):
    """``coarse`` with its triangles that are wound against their neighbours turned over.

    Quadric clustering flips a few small triangles; drawn with back faces culled they were holes
    while the camera moved (culling halves the fragments a drag draws once the surfaces fill the
    picture). In a consistently wound surface each edge shared by two triangles is walked in
    opposite directions; a triangle that walks two or three of its edges the same way as the
    neighbour across them is turned over.
    """
    from ..surfaces.polydata import polydata_arrays, to_polydata

    points, faces = polydata_arrays(coarse)
    if len(faces) < 2:
        return coarse
    n = int(points.shape[0])
    edges = np.stack([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], axis=1).reshape(-1, 2).astype(np.int64)
    directed = edges[:, 0] * n + edges[:, 1]
    unique, counts = np.unique(directed, return_counts=True)
    same_way = counts[np.searchsorted(unique, directed)] > 1  # another triangle walks this edge this way too
    flipped = same_way.reshape(-1, 3).sum(axis=1) >= 2
    if not flipped.any():
        return coarse
    faces = faces.copy()
    faces[flipped] = faces[flipped][:, ::-1]
    return to_polydata(points, faces, dtype=None)


def _clustered(poly, cell: float):
    """A quadric-clustering simplification of ``poly`` on a grid of ``cell``-mm bins."""
    from vtkmodules.vtkFiltersCore import vtkQuadricClustering

    x0, x1, y0, y1, z0, z1 = poly.GetBounds()
    clustering = vtkQuadricClustering()
    clustering.SetInputData(poly)
    clustering.AutoAdjustNumberOfDivisionsOff()
    clustering.SetNumberOfDivisions(*(max(2, int(np.ceil((hi - lo) / cell)) + 1) for lo, hi in ((x0, x1), (y0, y1), (z0, z1))))
    clustering.Update()
    return clustering.GetOutput()


def _vtk():
    """The few VTK classes used here (importing the whole ``vtk`` package costs ~0.9 s)."""
    from types import SimpleNamespace

    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (its vtkTexture: the one that draws)
    from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPlane
    from vtkmodules.vtkRenderingAnnotation import vtkAnnotatedCubeActor, vtkAxesActor, vtkLegendBoxActor
    from vtkmodules.vtkRenderingCore import vtkPropAssembly, vtkTextActor, vtkTexture

    return SimpleNamespace(
        vtkPlane=vtkPlane, vtkAnnotatedCubeActor=vtkAnnotatedCubeActor, vtkAxesActor=vtkAxesActor,
        vtkLegendBoxActor=vtkLegendBoxActor, vtkImageData=vtkImageData, vtkTexture=vtkTexture,
        vtkPropAssembly=vtkPropAssembly, vtkTextActor=vtkTextActor,
    )


def _range_with(rng, value):
    return (min(rng[0], value), max(rng[1], value))
