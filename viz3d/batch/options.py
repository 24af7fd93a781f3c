"""What `viz3d batch` makes for every case: `BatchOptions`, checked once, and its fingerprint.

The defaults are the single-case commands': the meshes of ``viz3d export`` (smoothing 0.5,
flying edges, bone at 200 HU), screenshots of 1024x768 with the soft window, a sheet of the
anterior, left, posterior and right views in 640x480 panels, a turntable of 72 frames at 24
frames per second in 640x480, the HTML page seen from ``iso``, a slice mosaic of 256x256 panels.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ..errors import Viz3dError
from ..scene.views import SHEET_VIEWS, VIEWS

EXPORT_FORMATS = ("stl", "obj", "ply", "vtp", "glb")
TURNTABLE_FORMATS = ("gif", "mp4")
METHODS = ("flying-edges", "surface-nets", "lewiner")
WINDOWS = ("soft", "bone", "lung", "brain")


@dataclass(frozen=True)
class BatchOptions:
    """The meshing options and the outputs wanted for every case (see the module docstring).

    ``screenshot`` is a tuple of views (one PNG each), empty for none; ``export`` a mesh format
    or None; ``turntable`` ``"gif"``, ``"mp4"`` or None; ``mosaic`` a number of slices or None.

    Examples
    --------
    >>> options = BatchOptions(export="stl", screenshot=("anterior",))
    >>> options.wants_scene, options.outputs()
    (True, ['export stl', 'screenshot anterior'])
    >>> BatchOptions(export="stl").fingerprint() == BatchOptions(export="stl", smoothing=0.0).fingerprint()
    False
    """

    # meshing, as `viz3d.api.load_and_mesh`
    label_table: str | None = None
    labels: str | None = None
    bone: bool = True
    bone_hu: float | None = None
    smoothing: float = 0.5
    method: str = "flying-edges"
    # outputs
    export: str | None = None
    coords: str = "ras"
    combine: bool = False
    max_triangles: int | None = None
    decimate: float | None = None
    largest_component: bool = False
    screenshot: tuple[str, ...] = ()
    size: tuple[int, int] = (1024, 768)
    sheet: bool = False
    sheet_views: tuple[str, ...] = SHEET_VIEWS
    sheet_size: tuple[int, int] = (640, 480)
    turntable: str | None = None
    frames: int = 72
    fps: float = 24.0
    turntable_size: tuple[int, int] = (640, 480)
    html: bool = False
    mosaic: int | None = None
    # the scene of every picture
    window: str | tuple[float, float] = "soft"
    colors: str = "table"
    show_slices: bool = True
    slices: str | None = None

    def __post_init__(self):
        _check_choice("--method", self.method, METHODS)
        if self.export is not None:
            _check_choice("--export", self.export, EXPORT_FORMATS)
        if self.turntable is not None:
            _check_choice("--turntable", self.turntable, TURNTABLE_FORMATS)
        _check_choice("--coords", self.coords, ("ras", "lps"))
        _check_choice("--colors", self.colors, ("table", "distinct"))
        for view in self.screenshot + self.sheet_views:
            _check_choice("view", view, VIEWS)
        if isinstance(self.window, str):
            _check_choice("--window", self.window, WINDOWS)
        if not 0.0 <= self.smoothing <= 1.0:
            raise Viz3dError(f"--smoothing must be from 0 to 1, got {self.smoothing:g}")
        if self.mosaic is not None and not 1 <= self.mosaic <= 100:
            raise Viz3dError(f"--mosaic must be from 1 to 100 slices, got {self.mosaic}")
        if not 2 <= self.frames <= 3600:
            raise Viz3dError(f"--frames must be between 2 and 3600, got {self.frames}")
        if self.turntable == "mp4" and any(side % 2 for side in self.turntable_size):
            raise Viz3dError(f"an MP4 (H.264) needs an even width and height, got "
                             f"{self.turntable_size[0]}x{self.turntable_size[1]}")
        if self.max_triangles is not None and self.max_triangles < 4:
            raise Viz3dError(f"--max-triangles must be at least 4, got {self.max_triangles}")
        if self.decimate is not None and not 0.0 < self.decimate <= 1.0:
            raise Viz3dError(f"--decimate is the fraction of triangles to keep, from 0 (exclusive) to 1, got {self.decimate}")

    @property
    def wants_scene(self) -> bool:
        """Whether a 3-D scene is rendered (screenshots, sheet, turntable)."""
        return bool(self.screenshot or self.sheet or self.turntable)

    @property
    def wants_meshes(self) -> bool:
        """Whether the case's surfaces are built (every output but the 2-D mosaic needs them)."""
        return bool(self.export or self.wants_scene or self.html)

    @property
    def window_values(self) -> tuple[float, float]:
        """The CT window as (centre, width) in HU."""
        presets = {"soft": (40.0, 400.0), "bone": (400.0, 1800.0), "lung": (-600.0, 1500.0), "brain": (40.0, 80.0)}
        return presets[self.window] if isinstance(self.window, str) else tuple(float(v) for v in self.window)

    def outputs(self) -> list[str]:
        """The outputs asked for, in words (empty: only the summary's measurements)."""
        out = [f"export {self.export}"] if self.export else []
        out += [f"screenshot {view}" for view in self.screenshot]
        out += ["sheet"] * self.sheet + ([f"turntable {self.turntable}"] if self.turntable else [])
        out += ["html"] * self.html + ([f"mosaic {self.mosaic}"] if self.mosaic else [])
        return out

    def fingerprint(self) -> str:
        """A digest of every option and viz3d's version: a case made with other options is redone."""
        from .. import __version__

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        text = json.dumps({"viz3d": __version__, "options": values}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        """The options as JSON values (tuples as lists), for the summary."""
        return json.loads(json.dumps({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}))


def _check_choice(what: str, value, choices) -> None:
    if value not in choices:
        raise Viz3dError(f"{what}: expected one of {', '.join(choices)}, got {value!r}")
