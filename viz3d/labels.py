"""Label tables: names and colours for the integer classes of a label map.

A :class:`LabelTable` maps label values to names and, where the source gives them, to RGB
colours in 0..1. Tables come from a built-in scheme (:func:`builtin_table`) or from a file
(:func:`load_label_table`) in one of three formats, detected from the content:

* JSON: ``{"1": "L1"}`` or ``{"1": {"name": "L1", "color": [r, g, b]}}``;
* an ITK-SNAP label description file: ``IDX R G B A VIS MSH "LABEL"`` per line;
* a 3D Slicer colour table (``.ctbl`` / ``.txt``): ``value name r g b a`` per line.

Values missing from a table are named ``label_<value>`` and coloured by
:func:`default_color`, so any label map can be drawn with any table.
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import Viz3dError, check_regular_file

__all__ = [
    "BUILTIN_TABLES",
    "LabelTable",
    "builtin_table",
    "default_color",
    "load_label_table",
]

RGB = tuple[float, float, float]

BUILTIN_TABLES: tuple[str, ...] = ("spinopelvic10", "totalsegmentator")
"""Names accepted by :func:`builtin_table` and :func:`load_label_table`."""

_DEFAULT_TABLE = "spinopelvic10"
MAX_TABLE_BYTES = 16 * 2**20
"""Largest label-table file read: the biggest real tables (a few thousand classes) are ~200 kB."""


@dataclass(frozen=True)
class LabelTable:
    """Names and colours of label values.

    Parameters
    ----------
    name : str
        What the table is called: a built-in name such as ``"spinopelvic10"`` or the file
        name it was read from.
    names : dict of int to str
        Label value -> class name. Value 0 (background) may be present; callers never mesh
        it.
    colors : dict of int to tuple of float
        Label value -> RGB in 0..1, only for the values whose source gives a colour.

    Examples
    --------
    >>> table = LabelTable("demo", {1: "L1"}, {1: (1.0, 0.0, 0.0)})
    >>> table.name_of(1), table.name_of(7)
    ('L1', 'label_7')
    >>> table.color_of(1)
    (1.0, 0.0, 0.0)
    >>> table.color_of(7) == default_color(7)
    True
    """

    name: str
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, RGB] = field(default_factory=dict)

    def name_of(self, value: int) -> str:
        """Return the name of ``value``: the table's name, else ``f"label_{value}"``."""
        value = int(value)
        return self.names.get(value, f"label_{value}")

    def color_of(self, value: int) -> RGB:
        """Return the RGB colour (0..1) of ``value``: the table's, else :func:`default_color`."""
        value = int(value)
        color = self.colors.get(value)
        return color if color is not None else default_color(value)


# --------------------------------------------------------------------------------------
# Default colours
# --------------------------------------------------------------------------------------

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...: successive hues ~137.5 degrees apart
# (lightness, saturation) in HLS, cycled by value so that even colours whose hues happen to
# be close (values 21 apart, a Fibonacci number) differ in lightness too.
_LEVELS = ((0.50, 0.85), (0.64, 0.75), (0.42, 0.90))
_MIN_LUMA = 0.34  # blues and purples are lifted until they read against dark CT
_MAX_LIGHTNESS = 0.74  # never near-white


def _luma(rgb: RGB) -> float:
    """Rec. 709 luma of an RGB triple in 0..1."""
    return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]


def default_color(value: int) -> RGB:
    """Return a deterministic, readable RGB colour (0..1) for a label value.

    Hues step by the golden ratio (about 137.5 degrees), so consecutive values -- adjacent
    vertebrae in most schemes -- get clearly different colours; lightness and saturation
    cycle through three levels. Every colour is saturated (never grey or near-white) and
    light enough to stand out over a greyscale CT: dark hues such as blue are lightened
    until their luma is at least 0.34.

    Parameters
    ----------
    value : int
        Label value, ``>= 0`` (meant for 1..65535; 0 is background and gets a colour only
        so that the function is total).

    Returns
    -------
    tuple of float
        ``(r, g, b)`` in 0..1, rounded to 4 decimals.

    Raises
    ------
    Viz3dError
        If ``value`` is negative.

    Examples
    --------
    >>> default_color(3) == default_color(3)
    True
    >>> default_color(3) != default_color(4)
    True
    >>> all(0.0 <= c <= 1.0 for c in default_color(65535))
    True
    """
    value = int(value)
    if value < 0:
        raise Viz3dError(f"label value must be >= 0, got {value}")
    hue = (value * _GOLDEN) % 1.0
    lightness, saturation = _LEVELS[value % len(_LEVELS)]
    rgb = colorsys.hls_to_rgb(hue, lightness, saturation)
    while _luma(rgb) < _MIN_LUMA and lightness < _MAX_LIGHTNESS:
        lightness = min(lightness + 0.02, _MAX_LIGHTNESS)
        rgb = colorsys.hls_to_rgb(hue, lightness, saturation)
    return (round(rgb[0], 4), round(rgb[1], 4), round(rgb[2], 4))


# --------------------------------------------------------------------------------------
# Built-in tables
# --------------------------------------------------------------------------------------

# The workshop's 10-class lumbar-pelvic scheme. Vertebrae alternate warm / cool hues so
# that neighbours differ strongly; sacrum and hips have hues of their own. All nine classes
# are at least 40 CIELAB Delta-E apart from each other.
_SPINOPELVIC10: tuple[tuple[int, str, tuple[int, int, int] | None], ...] = (
    (0, "background", None),
    (1, "L1", (230, 85, 75)),  # red
    (2, "L2", (60, 140, 230)),  # blue
    (3, "L3", (245, 190, 40)),  # amber
    (4, "L4", (140, 90, 220)),  # violet
    (5, "L5", (60, 185, 95)),  # green
    (6, "L6", (240, 110, 190)),  # pink (transitional vertebra)
    (7, "sacrum", (40, 200, 200)),  # teal
    (8, "left_hip", (170, 215, 55)),  # lime
    (9, "right_hip", (150, 100, 40)),  # ochre
)

_TOTALSEG_RESOURCE = "data/tables/totalsegmentator_total.json"


def builtin_table(name: str) -> LabelTable:
    """Return a built-in label table by name.

    Parameters
    ----------
    name : str
        One of :data:`BUILTIN_TABLES` (case-insensitive):

        ``"spinopelvic10"``
            The workshop scheme: 0 background, 1-5 L1-L5, 6 L6 (transitional vertebra),
            7 sacrum, 8 left_hip, 9 right_hip, each with an explicit colour.
        ``"totalsegmentator"``
            TotalSegmentator's 117-class "total" task, names from the JSON shipped in the
            package, plus 0 background; colours fall back to :func:`default_color`.

    Raises
    ------
    Viz3dError
        If ``name`` is not a built-in table; the message lists the built-ins.

    Examples
    --------
    >>> table = builtin_table("spinopelvic10")
    >>> [table.name_of(v) for v in range(1, 10)]
    ['L1', 'L2', 'L3', 'L4', 'L5', 'L6', 'sacrum', 'left_hip', 'right_hip']
    >>> builtin_table("totalsegmentator").name_of(1)
    'spleen'
    """
    key = str(name).strip().lower()
    if key == "spinopelvic10":
        names = {value: label for value, label, _ in _SPINOPELVIC10}
        colors = {value: _scale255(rgb) for value, _, rgb in _SPINOPELVIC10 if rgb is not None}
        return LabelTable("spinopelvic10", names, colors)
    if key == "totalsegmentator":
        source = resources.files("viz3d").joinpath(_TOTALSEG_RESOURCE)
        text = source.read_text(encoding="utf-8")
        parsed = _parse_json(text, f"viz3d/{_TOTALSEG_RESOURCE}")
        names = {0: "background", **parsed.names}
        return LabelTable("totalsegmentator", names, dict(parsed.colors))
    raise Viz3dError(f"unknown label table {name!r}: built-in tables are {', '.join(BUILTIN_TABLES)}")


# --------------------------------------------------------------------------------------
# Loading files
# --------------------------------------------------------------------------------------


def load_label_table(spec: str | os.PathLike | None) -> LabelTable:
    """Load a label table from a built-in name or a file.

    Parameters
    ----------
    spec : str, path-like or None
        ``None`` gives the default table, ``"spinopelvic10"``. A built-in name (see
        :data:`BUILTIN_TABLES`) gives that table; a string equal to a built-in name always
        means the built-in (write ``./totalsegmentator`` for a file of that name). Anything
        else is a path to a label-table file in one of these formats, detected from the
        content rather than the suffix:

        * JSON object ``{"1": "L1"}`` or ``{"1": {"name": "L1", "color": [r, g, b]}}``;
          colours are 0..255 if any colour component in the file is above 1, else 0..1.
        * ITK-SNAP label description: ``IDX R G B A VIS MSH "LABEL"`` per line (the label
          is the quoted last field), ``#`` comments; colours 0..255. Value 0 ("Clear
          Label") is kept as background.
        * 3D Slicer colour table: ``value name r g b a`` per line (0..255), ``#`` comments.

    Returns
    -------
    LabelTable
        For a file, ``name`` is the file name.

    Raises
    ------
    Viz3dError
        On any problem, naming the file and, for text tables, the line: missing file,
        folder, empty file, unknown built-in name, malformed line, non-integer or negative
        value, colour out of range, duplicate value, invalid JSON.

    Examples
    --------
    >>> load_label_table(None).name
    'spinopelvic10'
    >>> load_label_table("totalsegmentator").name_of(2)
    'kidney_right'
    """
    if spec is None:
        return builtin_table(_DEFAULT_TABLE)
    if isinstance(spec, str) and spec.strip().lower() in BUILTIN_TABLES:
        return builtin_table(spec)

    path = Path(os.fspath(spec))
    if not os.path.lexists(path):
        raw = os.fspath(spec)
        if isinstance(raw, str) and not re.search(r"[\\/.]", raw):
            # A bare word: most likely a mistyped built-in name.
            raise Viz3dError(
                f"unknown label table {raw!r}: not a file, and built-in tables are "
                f"{', '.join(BUILTIN_TABLES)}"
            )
        raise Viz3dError(f"{path}: no such label table file (built-in tables are {', '.join(BUILTIN_TABLES)})")
    data = _read_table_bytes(path)
    if b"\x00" in data:
        raise Viz3dError(f"{path}: binary file, expected a text label table (JSON, ITK-SNAP or Slicer)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # ITK-SNAP files written on Windows
    if not text.strip():
        raise Viz3dError(f"{path}: label table file is empty")

    if text.lstrip().startswith(("{", "[")):
        table = _parse_json(text, str(path))
    else:
        table = _parse_text_table(text, str(path))
    return LabelTable(path.name, table.names, table.colors)


def _read_table_bytes(path: Path) -> bytes:
    """The bytes of a label-table file: a regular file of at most `MAX_TABLE_BYTES`.

    FIFOs and devices are refused before they are opened (``/dev/zero`` would never end),
    and no more than the limit is read even from a file that grows meanwhile.
    """
    status = check_regular_file(path, "a label table file (JSON, ITK-SNAP or Slicer)")
    too_big = f"{path}: label table file is larger than {MAX_TABLE_BYTES // 2**20} MB: not a label table"
    if status.st_size > MAX_TABLE_BYTES:
        raise Viz3dError(too_big)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise Viz3dError(f"{path}: cannot read label table ({exc.strerror or exc})") from None
    if len(data) > MAX_TABLE_BYTES:
        raise Viz3dError(too_big)
    return data


# --------------------------------------------------------------------------------------
# Parsers (private): each returns a LabelTable named after its source
# --------------------------------------------------------------------------------------


def _scale255(rgb) -> RGB:
    """RGB in 0..255 -> RGB in 0..1."""
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs):
    """``object_pairs_hook`` for json.loads that rejects repeated keys."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _parse_int(token: str, where: str) -> int:
    """Parse a label value: a non-negative decimal integer."""
    text = token.strip()
    if not re.fullmatch(r"[+-]?\d+", text):
        raise Viz3dError(f"{where}: label value {token!r} is not an integer")
    value = int(text)
    if value < 0:
        raise Viz3dError(f"{where}: label value {value} is negative; labels must be >= 0")
    return value


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_json(text: str, source: str) -> LabelTable:
    """Parse a JSON label table: ``{"1": "L1"}`` or ``{"1": {"name": ..., "color": [...]}}``."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise Viz3dError(f"{source}: duplicate label value {exc.args[0]!r} in JSON") from None
    except json.JSONDecodeError as exc:
        raise Viz3dError(f"{source}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise Viz3dError(f"{source}: JSON label table must be an object mapping values to names, got {type(data).__name__}")
    if not data:
        raise Viz3dError(f"{source}: label table has no entries")

    names: dict[int, str] = {}
    raw_colors: dict[int, list[float]] = {}
    for key, entry in data.items():
        where = f"{source}: entry {key!r}"
        value = _parse_int(key, where)
        if value in names:
            raise Viz3dError(f"{where}: duplicate label value {value}")
        color = None
        if isinstance(entry, str):
            name = entry
        elif isinstance(entry, dict):
            name = entry.get("name")
            color = entry.get("color", entry.get("colour"))
            if not isinstance(name, str):
                raise Viz3dError(f"{where}: expected a \"name\" string, got {name!r}")
        else:
            raise Viz3dError(f"{where}: expected a name or an object with \"name\", got {entry!r}")
        name = name.strip()
        if not name:
            raise Viz3dError(f"{where}: empty label name")
        names[value] = name
        if color is not None:
            if not (isinstance(color, list) and len(color) in (3, 4) and all(_is_number(c) for c in color)):
                raise Viz3dError(f"{where}: colour must be a list of 3 numbers [r, g, b], got {color!r}")
            if any(c < 0 for c in color[:3]):
                raise Viz3dError(f"{where}: colour {color!r} out of range (components must be >= 0)")
            raw_colors[value] = color[:3]

    # One scale for the whole file: 0..255 if any component exceeds 1, else 0..1.
    scale255 = any(c > 1 for rgb in raw_colors.values() for c in rgb)
    colors: dict[int, RGB] = {}
    for value, rgb in raw_colors.items():
        if scale255:
            if any(c > 255 for c in rgb):
                raise Viz3dError(f"{source}: entry '{value}': colour {rgb!r} out of range 0..255")
            colors[value] = _scale255(rgb)
        else:
            colors[value] = (float(rgb[0]), float(rgb[1]), float(rgb[2]))
    return LabelTable(source, names, colors)


# IDX R G B A VIS MSH "LABEL" -- the label is everything between the first and last quote.
_ITKSNAP_LINE = re.compile(r'^\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+"(.*)"\s*$')


def _data_lines(text: str):
    """Yield ``(line_number, stripped_line)`` for non-blank, non-comment lines."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _parse_text_table(text: str, source: str) -> LabelTable:
    """Parse an ITK-SNAP or Slicer table; the first data line decides which."""
    lines = list(_data_lines(text))
    if not lines:
        raise Viz3dError(f"{source}: label table has no entries (only comments or blank lines)")
    if lines[0][1].endswith('"'):
        parse_line = _parse_itksnap_line
    else:
        parse_line = _parse_slicer_line

    names: dict[int, str] = {}
    colors: dict[int, RGB] = {}
    first_line: dict[int, int] = {}
    for number, line in lines:
        where = f"{source}: line {number}"
        value, name, rgb = parse_line(line, where)
        if value in first_line:
            raise Viz3dError(f"{where}: duplicate label value {value} (first defined on line {first_line[value]})")
        first_line[value] = number
        if name:
            names[value] = name
        colors[value] = rgb
    return LabelTable(source, names, colors)


def _parse_color_component(token: str, where: str, what: str, upper: float) -> float:
    try:
        x = float(token)
    except ValueError:
        raise Viz3dError(f"{where}: {what} {token!r} is not a number") from None
    if not (math.isfinite(x) and 0 <= x <= upper):
        raise Viz3dError(f"{where}: {what} {token} out of range 0..{upper:g}")
    return x


def _parse_rgb255(tokens, where: str) -> RGB:
    rgb = [_parse_color_component(t, where, f"colour component {c}", 255) for t, c in zip(tokens, "RGB")]
    return _scale255(rgb)


def _parse_itksnap_line(line: str, where: str) -> tuple[int, str, RGB]:
    """``IDX R G B A VIS MSH "LABEL"`` -> (value, name, rgb)."""
    match = _ITKSNAP_LINE.match(line)
    if match is None:
        raise Viz3dError(f'{where}: malformed ITK-SNAP line, expected IDX R G B A VIS MSH "LABEL": {line!r}')
    idx, r, g, b, alpha, vis, msh, name = match.groups()
    value = _parse_int(idx, where)
    rgb = _parse_rgb255((r, g, b), where)
    _parse_color_component(alpha, where, "alpha", 1)
    for flag, what in ((vis, "VIS"), (msh, "MSH")):
        if not re.fullmatch(r"\d+", flag):
            raise Viz3dError(f"{where}: {what} flag {flag!r} is not a non-negative integer")
    return value, name.strip(), rgb


def _parse_slicer_line(line: str, where: str) -> tuple[int, str, RGB]:
    """``value name r g b a`` -> (value, name, rgb); a name with spaces is joined back."""
    fields = line.split()
    if len(fields) < 6:
        raise Viz3dError(f"{where}: malformed Slicer colour table line, expected 'value name r g b a': {line!r}")
    value = _parse_int(fields[0], where)
    name = " ".join(fields[1:-4])
    rgb = _parse_rgb255(fields[-4:-1], where)
    _parse_color_component(fields[-1], where, "alpha", 255)
    return value, name, rgb
