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
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from ..errors import Viz3dError, check_regular_file

__all__ = [
    "BUILTIN_TABLES",
    "DEFAULT_SOURCE",
    "LabelTable",
    "builtin_table",
    "check_coverage",
    "default_color",
    "load_label_table",
    "resolve_label_table",
    "select_labels",
]

RGB = tuple[float, float, float]

BUILTIN_TABLES: tuple[str, ...] = ("spinopelvic10", "totalsegmentator")
"""Names accepted by :func:`builtin_table` and :func:`load_label_table`."""

_DEFAULT_TABLE = "spinopelvic10"
DEFAULT_SOURCE = f"default ({_DEFAULT_TABLE})"
"""The `LabelTable.source` of the default table, used when nothing names a label map's values."""
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
    source : str
        Where the names came from, in words, for ``info``, the legend and the export
        manifest: ``"--label-table x.txt"``, ``"NIfTI header (TotalSegmentator)"``,
        ``"sidecar label.json"``, ``"nnU-Net dataset.json"``, ``"default (spinopelvic10)"``
        (see :func:`resolve_label_table`); empty when the caller built the table itself.

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
    source: str = ""

    @property
    def is_default(self) -> bool:
        """Whether nobody chose this table: the built-in default, used for want of any other."""
        return self.source == DEFAULT_SOURCE

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

# viz3d's default palette for label values 1-120 (scripts/make_palette.py made it; 0xRRGGBB):
# colours that read over a dark CT and are never grey or bone-like, every pair >= 8.5 CIEDE2000
# apart (about the most such colours allow for 120: a search finds only ~85 colours 10 apart),
# and neighbours >= 25 apart: values up to 3 apart (adjacent vertebrae, ribs, lobes in most
# schemes: T11 and L2 are 3 apart) and the TotalSegmentator classes that touch each other.
PALETTE = (
    0x00d900, 0x808cd9, 0xb35966, 0x998040, 0xccf200, 0xbf8cf2, 0x26ffd9, 0x009933,
    0x996640, 0xbf66b3, 0x268cff, 0x99a633, 0xd98c73, 0x008080, 0xb3a6ff, 0x8ce6d9,
    0xbf9959, 0xcc1a80, 0x0073b3, 0xff331a, 0x73a64d, 0xd980b3, 0x0073f2, 0xbf8c66,
    0x009980, 0xd94073, 0x9980ff, 0xd98c26, 0x8cbf26, 0x26ccff, 0x5966b3, 0xff80ff,
    0x8c8c00, 0xa6594d, 0x008ca6, 0xd966e6, 0xa6f259, 0xff804d, 0x99d9ff, 0xa64d99,
    0xb3bf00, 0x008066, 0x99f2ff, 0xcc7380, 0xa6994d, 0x7359e6, 0x4da6b3, 0x00ff59,
    0xcc264d, 0x991aff, 0x1aa6ff, 0x8c6600, 0xff7366, 0x00bf66, 0x4d8cb3, 0xd90df2,
    0xb38c0d, 0xd9594d, 0x00d9bf, 0x26738c, 0xd9d966, 0xa6bfff, 0xff80a6, 0x8059b3,
    0x4db399, 0x807300, 0xd9591a, 0xff4099, 0xccf299, 0x6673ff, 0x0dd9f2, 0xff800d,
    0xffa6b3, 0x8073cc, 0x80cc73, 0xd9a633, 0xd92600, 0xa673cc, 0x4dcc99, 0xffbf00,
    0xa65900, 0xe68c8c, 0x00b300, 0x009999, 0xb37300, 0xffb3a6, 0xcc3333, 0x4da673,
    0xffd966, 0x73a6ff, 0xbf668c, 0x008000, 0x00f2a6, 0xffa680, 0xccb300, 0xe61ab3,
    0x338c59, 0xb34d1a, 0x99ff99, 0xffa626, 0xffa6d9, 0xb326bf, 0x66bfbf, 0xf2264d,
    0xf2a666, 0xe6a6ff, 0x738c33, 0xa64d73, 0xf2e600, 0xcc7326, 0x66731a, 0xa659ff,
    0x4dffff, 0xff5973, 0xb3cc73, 0x1a59ff, 0x00a6d9, 0xb37359, 0x99f2bf, 0xff59cc,
)

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

    Values 1-120 take `PALETTE`: perceptually distinct colours (every pair at least 8.5
    CIEDE2000 apart; values up to 3 apart and touching TotalSegmentator classes at least 25),
    so a table without colours (TotalSegmentator's 117 classes, an nnU-Net ``dataset.json``)
    is drawn in colours that can be told apart, the same in every picture. Beyond 120, hues
    step by the golden ratio (about 137.5 degrees), so consecutive values still differ
    clearly; lightness and saturation cycle through three levels. Every colour is saturated
    (never grey or near-white) and light enough to stand out over a greyscale CT.

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
    >>> default_color(5)  # TotalSegmentator's liver
    (0.8, 0.949, 0.0)
    """
    value = int(value)
    if value < 0:
        raise Viz3dError(f"label value must be >= 0, got {value}")
    if 1 <= value <= len(PALETTE):
        code = PALETTE[value - 1]
        return tuple(round(((code >> shift) & 0xFF) / 255.0, 4) for shift in (16, 8, 0))
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
            package, plus 0 background; colours are :func:`default_color`'s, from the
            perceptually distinct `PALETTE`.

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
# Where a label map's names come from
# --------------------------------------------------------------------------------------

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SIDECAR_SUFFIXES = (".json", ".txt", ".ctbl")
"""Suffixes of a label table beside a label map, tried in this order (same stem as the map)."""
DATASET_JSON_LEVELS = 3
"""How many folders above the label map's own an nnU-Net ``dataset.json`` is looked for."""

# TotalSegmentator's save_multilabel_nifti colours label k with _TOTALSEG_CYCLE[k % 12]: a
# fixed cycle with no meaning (neighbours share pure reds and greens), so a table written with
# it gets viz3d's colours, as the built-in "totalsegmentator" table does.
_TOTALSEG_CYCLE = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
                   (255, 128, 0), (255, 0, 128), (128, 255, 128), (0, 128, 255), (128, 128, 128), (185, 170, 155))


def resolve_label_table(spec=None, label_path: str | os.PathLike | None = None, carried: LabelTable | None = None) -> LabelTable:
    """The label table whose names a label map's values get, with its `LabelTable.source`.

    In this order, the first that exists wins:

    1. ``spec``: a `LabelTable` (returned as it is), a built-in name or a table file
       (source ``"--label-table <spec>"``); then ``carried``, the table a non-NIfTI input carries
       itself (a ``.seg.nrrd``'s segments, a mask folder's file names: what
       `viz3d.io.formats.resolve_label_table` passes here from `viz3d.io.formats.table_in_file`);
    2. a table carried in the label map's NIfTI header (:func:`table_from_nifti_header`:
       TotalSegmentator's ``--ml`` output), source ``"NIfTI header (TotalSegmentator)"``;
    3. a table beside the label map, same stem with ``.json`` (viz3d's JSON), ``.txt``
       (ITK-SNAP or Slicer) or ``.ctbl`` (Slicer), source ``"sidecar <file name>"``
       (:func:`sidecar_table_path`);
    4. an nnU-Net ``dataset.json`` in the label map's folder or up to three folders above
       (:func:`nnunet_dataset_json`), source ``"nnU-Net dataset.json"``;
    5. the default, spinopelvic10, source ``"default (spinopelvic10)"``.

    Whether the table names the values actually present is checked with
    :func:`check_coverage` once they are known.

    Parameters
    ----------
    spec : LabelTable, str, path-like or None
        What the user asked for (``--label-table``), or None.
    label_path : str, path-like or None
        The label map's file; None gives ``spec`` or the default.
    carried : LabelTable or None
        The table the label input carries itself, found by its format's reader, or None.

    Returns
    -------
    LabelTable

    Raises
    ------
    Viz3dError
        If ``spec`` cannot be loaded, or a table found beside the label map is broken (a
        JSON file that is no label table at all, such as a BIDS sidecar, is passed over).

    Examples
    --------
    >>> resolve_label_table().source
    'default (spinopelvic10)'
    >>> resolve_label_table("totalsegmentator").source
    '--label-table totalsegmentator'
    """
    if isinstance(spec, LabelTable):
        return spec
    if spec is not None:
        table = load_label_table(spec)
        return replace(table, source=f"--label-table {os.fspath(spec)}")
    if carried is not None:
        return carried
    if label_path is not None and is_nifti_name(label_path):
        table = table_from_nifti_header(label_path)
        if table is not None:
            return table
        table = _sidecar_table(label_path)
        if table is not None:
            return table
        dataset = nnunet_dataset_json(label_path)
        if dataset is not None:
            return _dataset_json_table(dataset)
    return replace(builtin_table(_DEFAULT_TABLE), source=DEFAULT_SOURCE)


def label_table_file(spec=None, label_path: str | os.PathLike | None = None) -> Path | None:
    """The file :func:`resolve_label_table` would read names from, other than the label map itself.

    For cache keys: a table file's content decides the names as much as the label map's.
    None for a built-in table, a `LabelTable`, or names from the label map's own header.
    """
    if isinstance(spec, LabelTable):
        return None
    if spec is not None:
        if isinstance(spec, str) and spec.strip().lower() in BUILTIN_TABLES:
            return None
        return Path(os.fspath(spec))
    if label_path is None or not is_nifti_name(label_path) or table_from_nifti_header(label_path) is not None:
        return None
    return sidecar_table_path(label_path) or nnunet_dataset_json(label_path)


def is_nifti_name(path) -> bool:
    """Whether a file name ends as a NIfTI file's does (only those are looked at for tables)."""
    return Path(os.fspath(path)).name.lower().endswith(NIFTI_SUFFIXES)


def table_from_nifti_header(path: str | os.PathLike) -> LabelTable | None:
    """The label table a NIfTI label map carries in a header extension, or None.

    TotalSegmentator (``--ml``; ``totalsegmentator/nifti_ext_header.py``,
    ``add_label_map_to_nifti``) appends a NIfTI-1 extension with code 0 whose content is
    Caret XML::

        <CaretExtension> ... <LabelTable>
        <Label Key="1" Red="0.0" Green="1.0" Blue="0.0" Alpha="1"><![CDATA[spleen]]></Label>
        ... </LabelTable> ... </CaretExtension>

    Any extension holding XML with ``<Label Key=..>name</Label>`` elements is read (also the
    variant with ``<Key>``/``<Name>`` child elements). Colours (``Red``, ``Green``,
    ``Blue`` in 0..1) are kept, except TotalSegmentator's fixed 12-colour cycle, which
    carries no meaning: those labels get :func:`default_color` as with the built-in table.

    Parameters
    ----------
    path : str or path-like
        A NIfTI file. Anything that is not a readable regular NIfTI file gives None: the
        label map's loader says what is wrong with it.

    Returns
    -------
    LabelTable or None
        Named after the file, with source ``"NIfTI header (TotalSegmentator)"`` for
        TotalSegmentator's extension, ``"NIfTI header"`` for another.

    Raises
    ------
    Viz3dError
        If a label table in the header is malformed (a key that is not an integer, an
        empty name, a repeated key).
    """
    path = Path(os.fspath(path))
    if not path.name.lower().endswith(NIFTI_SUFFIXES) or not path.is_file():
        return None
    try:
        import nibabel as nib

        extensions = list(nib.load(str(path)).header.extensions)
    except Exception:  # not NIfTI, or unreadable: load_label says what is wrong
        return None
    for extension in extensions:
        content = extension.get_content()
        if isinstance(content, (bytes, bytearray)) and b"<Label" in content:
            return _parse_label_xml(bytes(content), f"{path.name}: NIfTI header extension")
    return None


def _parse_label_xml(content: bytes, where: str) -> LabelTable | None:
    """``<Label Key="k" Red=.. Green=.. Blue=..>name</Label>`` elements -> LabelTable (None if none)."""
    import xml.etree.ElementTree as ElementTree

    text = content.rstrip(b"\x00 \t\r\n")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise Viz3dError(f"{where}: label table XML is malformed ({exc})") from None
    names: dict[int, str] = {}
    colors: dict[int, RGB] = {}
    cycle = True  # every colour is TotalSegmentator's cycle colour for its key
    for element in root.iter("Label"):
        key = element.get("Key", element.findtext("Key"))
        name = element.findtext("Name") if element.find("Name") is not None else element.text
        if key is None:
            raise Viz3dError(f"{where}: <Label> without a Key")
        value = _parse_int(key, f"{where}: <Label Key={key!r}>")
        name = (name or "").strip()
        if not name:
            raise Viz3dError(f"{where}: <Label Key=\"{value}\"> has an empty name")
        if value in names:
            raise Viz3dError(f"{where}: duplicate label value {value}")
        names[value] = name
        try:
            rgb = tuple(float(element.get(c)) for c in ("Red", "Green", "Blue"))
        except (TypeError, ValueError):
            cycle = False
            continue
        if all(math.isfinite(c) and 0.0 <= c <= 1.0 for c in rgb):
            colors[value] = rgb
            cycle = cycle and all(round(c * 255) == t for c, t in zip(rgb, _TOTALSEG_CYCLE[value % 12]))
        else:
            cycle = False
    if not names:
        return None
    totalseg = cycle and len(colors) == len(names) and b"CaretExtension" in text
    source = "NIfTI header (TotalSegmentator)" if totalseg else "NIfTI header"
    return LabelTable(where.split(":")[0], names, {} if totalseg else colors, source)


def sidecar_table_path(label_path: str | os.PathLike) -> Path | None:
    """A label table beside the label map: same stem with ``.json``, ``.txt`` or ``.ctbl``.

    ``label.nii.gz`` -> ``label.json``, ``label.txt``, ``label.ctbl``, the first that is a
    regular file. None if there is none, or the label map's name is not a NIfTI file's.
    """
    path = Path(os.fspath(label_path))
    lower = path.name.lower()
    suffix = next((s for s in NIFTI_SUFFIXES if lower.endswith(s)), None)
    if suffix is None:  # not a NIfTI file name: no stem to share
        return None
    stem = path.name[: -len(suffix)]
    for suffix in SIDECAR_SUFFIXES:
        candidate = path.with_name(stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def _sidecar_table(label_path) -> LabelTable | None:
    """The sidecar table of ``label_path``, or None; a JSON sidecar that is no label table
    (a BIDS sidecar: its keys are not label values) is passed over."""
    path = sidecar_table_path(label_path)
    if path is None:
        return None
    if path.suffix.lower() == ".json":
        data = _json_object(path)
        if data is None or not data or not all(re.fullmatch(r"\s*\d+\s*", str(k)) for k in data):
            return None
    try:
        table = load_label_table(path)
    except Viz3dError as exc:
        raise Viz3dError(f"{exc} (a label table beside the label map; fix it or give --label-table)") from None
    return replace(table, source=f"sidecar {path.name}")


def _json_object(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is not one (unreadable, not JSON, a list)."""
    try:
        data = json.loads(_read_table_bytes(path).decode("utf-8-sig"))
    except (Viz3dError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def nnunet_dataset_json(label_path: str | os.PathLike) -> Path | None:
    """An nnU-Net ``dataset.json`` with a ``"labels"`` object in the label map's folder or up to
    three folders above (``Dataset001_X/labelsTr/case.nii.gz``; a prediction folder holds a
    copy), nearest first; None if there is none."""
    folder = Path(os.path.abspath(os.fspath(label_path))).parent
    for candidate in [folder, *folder.parents][: DATASET_JSON_LEVELS + 1]:
        path = candidate / "dataset.json"
        if path.is_file():
            data = _json_object(path)
            if data is not None and isinstance(data.get("labels"), dict) and data["labels"]:
                return path
    return None


def _dataset_json_table(path: Path) -> LabelTable:
    """The label table of an nnU-Net ``dataset.json``: ``"labels"`` maps name -> value (v2) or
    value -> name (v1). Region-based entries (a list of values) name no single value and are left out."""
    labels = _json_object(path)["labels"]
    names: dict[int, str] = {}
    for key, entry in labels.items():
        if re.fullmatch(r"\s*\d+\s*", str(key)) and isinstance(entry, str):  # v1: "1": "liver"
            value, name = int(key), entry
        elif isinstance(entry, int) and not isinstance(entry, bool):  # v2: "liver": 1
            value, name = entry, str(key)
        elif isinstance(entry, str) and re.fullmatch(r"\s*\d+\s*", entry):  # v2 written with strings
            value, name = int(entry), str(key)
        elif isinstance(entry, list):  # v2 region: {"tumor": [2, 3]}, not one value
            continue
        else:
            raise Viz3dError(f"{path}: \"labels\" entry {key!r}: {entry!r} is neither a label value nor a name")
        if value < 0:
            raise Viz3dError(f"{path}: \"labels\" entry {key!r}: label value {value} is negative")
        if value in names:
            raise Viz3dError(f"{path}: \"labels\": label value {value} is given twice ({names[value]!r}, {name!r})")
        names[value] = name.strip()
    if not names:
        raise Viz3dError(f"{path}: \"labels\" names no single label value (only regions)")
    return LabelTable(path.name, names, {}, "nnU-Net dataset.json")


# --------------------------------------------------------------------------------------
# Whether a table names the values present
# --------------------------------------------------------------------------------------


def values_present(array) -> list[int]:
    """The non-zero values of an integer label array, increasing.

    Counted in slabs of 4 M voxels (no copy of the whole map); on an 80 M-voxel uint8 map it
    takes about as long as reading its maximum twice.

    >>> import numpy as np
    >>> values_present(np.array([[[0, 3], [3, 7]]], np.uint8))
    [3, 7]
    """
    import numpy as np

    flat = np.asarray(array).reshape(-1, order="A")
    if flat.size == 0:
        return []
    top = int(flat.max())
    if top == 0:
        return []
    step = 1 << 22
    if flat.dtype.kind in "ub" and top < 1 << 17:
        counts = np.zeros(top + 1, dtype=np.int64)
        for start in range(0, flat.size, step):
            counts += np.bincount(flat[start:start + step], minlength=top + 1)
        return [int(v) for v in np.flatnonzero(counts[1:]) + 1]
    seen: set[int] = set()
    for start in range(0, flat.size, step):
        seen.update(int(v) for v in np.unique(flat[start:start + step]))
    seen.discard(0)
    return sorted(seen)


def format_values(values) -> str:
    """Label values as short text, runs as ranges.

    >>> format_values([1, 2, 3, 5, 7, 8])
    '1-3, 5, 7-8'
    """
    values = sorted(set(int(v) for v in values))
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def covering_tables(values) -> list[str]:
    """The built-in tables that name every one of ``values``.

    >>> covering_tables([1, 5, 117])
    ['totalsegmentator']
    """
    values = [int(v) for v in values if int(v) != 0]
    return [name for name in BUILTIN_TABLES if all(v in builtin_table(name).names for v in values)]


def check_coverage(table: LabelTable, present, where: str = "the label map") -> LabelTable:
    """The table to name ``present`` values with, after saying once if it does not name them all.

    A table "does not cover" a label map when some non-zero value present has no name in it.
    Then one `Viz3dWarning` names those values and the built-in tables that name every value
    present. The values it does not name are called ``label_<N>``. A table somebody chose
    (``--label-table``, the file's header, a sidecar, ``dataset.json``) keeps its names for the
    values it does name; the default table, which nobody chose, is then evidently the wrong
    scheme and gives no names at all (``L5`` on TotalSegmentator's liver would be wrong):
    every value is ``label_<N>`` with a default colour.

    Parameters
    ----------
    table : LabelTable
        The table in use (:func:`resolve_label_table`).
    present : iterable of int
        The values in the label map (0 is ignored), e.g. :func:`values_present`.
    where : str
        The label map, as the warning names it.

    Returns
    -------
    LabelTable
        ``table`` itself when it covers the values. Otherwise a copy in which the values it
        does not name are named ``label_<N>`` explicitly, so that checking it again says
        nothing more; for the default table, a table naming every value ``label_<N>``, whose
        source says why.
    """
    from ..errors import warn

    present = sorted({int(v) for v in present} - {0})
    missing = [v for v in present if v not in table.names]
    if not missing:
        return table
    fits = [name for name in covering_tables(present) if name != table.name]
    hint = (f"built-in table(s) naming every value present: {', '.join(fits)} (--label-table {fits[0]})" if fits
            else "no built-in table names every value present; give a table with --label-table")
    if table.is_default:
        warn(f"{where}: no label table was given or found with it, and the default ({_DEFAULT_TABLE}) does not name "
             f"label value(s) {format_values(missing)}: its names are not used, every structure is named label_<N>; "
             f"{hint}", stacklevel=3)
        names = {0: "background", **{v: f"label_{v}" for v in present}}
        return LabelTable("none", names, {}, f"none (the default table, {_DEFAULT_TABLE}, does not fit this label map)")
    warn(f"{where}: label table from {table.source or table.name} does not name label value(s) "
         f"{format_values(missing)}: they are named label_<N>; {hint}", stacklevel=3)
    return replace(table, names={**table.names, **{v: f"label_{v}" for v in missing}})


# --------------------------------------------------------------------------------------
# Selecting structures by value, range and name
# --------------------------------------------------------------------------------------

MAX_RANGE_VALUES = 1 << 16
"""Most values one numeric range of a selection may hold (``1-65536``)."""


def parse_label_selection(text: str) -> str:
    """Check the syntax of a ``--labels`` selection; return it stripped (names are resolved later).

    A selection is comma-separated terms: a value (``7``), a name (``sacrum``, any case) or a
    range of values or names (``1-5``, ``L1-L5``). Names need the label table, known only
    once the label map is found, so :func:`select_labels` resolves them.

    Raises
    ------
    Viz3dError
        If the selection is empty, has an empty term, or a value that is 0 or negative.

    Examples
    --------
    >>> parse_label_selection(" L1-L5, sacrum ")
    'L1-L5, sacrum'
    """
    text = str(text).strip()
    terms = [term.strip() for term in text.split(",")]
    if not text or not all(terms):
        raise Viz3dError(f"expected comma-separated label values, ranges or names such as 1,3-5,sacrum, got {text!r}")
    for term in terms:
        if re.fullmatch(r"[+-]?\d+", term) and int(term) < 1 or term.startswith("-"):
            raise Viz3dError(f"label values must be positive integers (0 is the background), got {text!r}")
    return text


def select_labels(spec, table: LabelTable) -> list[int] | None:
    """The label values a selection means in ``table``, increasing; None selects everything.

    Parameters
    ----------
    spec : None, str, int or iterable of int and str
        ``"1,3-5"``, ``"L1-L5,sacrum"``, ``"liver"``, ``[1, 2, 7]`` or ``["L1", 7]``. Names
        are matched without regard to case; a name's last word stands for it when no other
        name ends so (``L1`` for TotalSegmentator's ``vertebrae_L1``, ``bladder`` for
        ``urinary_bladder``; not ``left``). A range of two values holds every value between
        them; a range of names (or a name and a value) holds the table's values between
        theirs, inclusive, whichever comes first.
    table : LabelTable
        The table in use for the label map.

    Returns
    -------
    list of int or None

    Raises
    ------
    Viz3dError
        On a name the table does not hold (the message offers close matches), a value that
        is 0 or negative, or a range of more than 65536 values.

    Examples
    --------
    >>> spine = builtin_table("spinopelvic10")
    >>> select_labels("L1-L3,sacrum", spine)
    [1, 2, 3, 7]
    >>> select_labels("RIGHT_HIP,1-2", spine)
    [1, 2, 9]
    >>> select_labels("L1-L3", builtin_table("totalsegmentator"))  # vertebrae_L3 .. vertebrae_L1
    [29, 30, 31]
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        terms = [t.strip() for t in parse_label_selection(spec).split(",")]
        shown = spec.strip()
    else:
        items = [spec] if isinstance(spec, int) else list(spec)
        terms = [str(t).strip() for t in items]
        shown = ",".join(terms)
    return label_selection(terms, table, shown)[0]


def label_selection(terms, table: LabelTable, shown: str | None = None) -> tuple[list[int], list[int]]:
    """``(values, singles)`` of selection terms in ``table``: every value selected, and those
    selected one by one (not by a range), which a caller may warn about when absent.

    ``terms`` is a list of strings as `select_labels` splits them; ``shown`` is the selection
    as the user wrote it, for messages.
    """
    terms = [str(t).strip() for t in terms]
    shown = ",".join(terms) if shown is None else shown
    by_name: dict[str, int] = {}
    for value, name in sorted(table.names.items()):
        if value != 0:
            by_name.setdefault(name.strip().casefold(), value)
    by_name = {**short_names(by_name), **by_name}
    chosen: set[int] = set()
    singles: set[int] = set()
    for term in terms:
        values, is_range = _select_term(term, table, by_name, shown)
        chosen.update(values)
        if not is_range:
            singles.update(values)
    return sorted(chosen), sorted(singles)


def short_names(by_name: dict[str, int]) -> dict[str, int]:
    """Shorthands for names: each name's last word (after ``_``) that no other name ends with.

    ``by_name`` maps names (as the caller folds them) to values; the result maps last words to
    the value of the one name ending so. Numbers are no shorthand (``rib_left_1``).

    >>> short_names({"vertebrae_l1": 31, "vertebrae_l2": 30, "kidney_left": 3, "hip_left": 77, "rib_left_1": 92})
    {'l1': 31, 'l2': 30}
    """
    ends: dict[str, set[int]] = {}
    for key, value in by_name.items():
        head, _, last = key.rpartition("_")
        if head and last and not last.isdigit():
            ends.setdefault(last, set()).add(value)
    return {last: next(iter(values)) for last, values in ends.items() if len(values) == 1}


def _endpoint(text: str, by_name: dict[str, int]) -> tuple[int, bool] | None:
    """A range end: ``(value, is_a_name)``, or None when it is neither a value nor a name."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text), False
    value = by_name.get(text.casefold())
    return None if value is None else (value, True)


def _select_term(term: str, table: LabelTable, by_name: dict[str, int], shown: str) -> tuple[list[int], bool]:
    if re.fullmatch(r"[+-]?\d+", term):
        value = int(term)
        if value < 1:
            raise Viz3dError(f"--labels {shown}: label values must be positive integers (0 is the background), got {term}")
        return [value], False
    if term.casefold() in by_name:
        return [by_name[term.casefold()]], False
    for cut in (i for i, c in enumerate(term) if c == "-"):
        left, right = _endpoint(term[:cut], by_name), _endpoint(term[cut + 1:], by_name)
        if left is None or right is None:
            continue
        lo, hi = sorted((left[0], right[0]))
        if lo < 1:
            raise Viz3dError(f"--labels {shown}: label values must be positive integers (0 is the background), got {term}")
        if left[1] or right[1]:  # names: the table's values between them
            return sorted(v for v in table.names if lo <= v <= hi and v != 0), True
        if hi - lo >= MAX_RANGE_VALUES:
            raise Viz3dError(f"--labels {shown}: range {term} holds {hi - lo + 1} values, more than {MAX_RANGE_VALUES}")
        return list(range(lo, hi + 1)), True
    unknown, within = term, ""
    if "-" in term:  # a range: name the end that is not known
        left, right = (part.strip() for part in term.split("-", 1))
        unknown, within = (right if _endpoint(left, by_name) else left), f" (in the range {term!r})"
    raise Viz3dError(f"--labels {shown}: no structure named {unknown!r}{within} in the label table "
                     f"({table.source or table.name}); {_suggestions(unknown, table, by_name)}")


def _suggestions(term: str, table: LabelTable, by_name: dict[str, int]) -> str:
    """'did you mean a, b?' from difflib and from names holding ``term`` as a word, else some names."""
    import difflib

    if not by_name:
        return "it names no structure (give a table with --label-table, or select by value)"
    folded = term.casefold()
    close = difflib.get_close_matches(folded, list(by_name), n=5, cutoff=0.6)
    words = [key for key in by_name if folded in re.split(r"[\s_.]+", key)]
    picks = list(dict.fromkeys(close + words))[:6]
    if picks:
        return "did you mean " + ", ".join(table.names[by_name[key]] for key in picks) + "?"
    some = [table.names[v] for v in sorted(set(by_name.values()))[:8]]
    return f"it names {len(set(by_name.values()))} structures, e.g. {', '.join(some)}"


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


# --------------------------------------------------------------------------- distinct colours
def distinct_colors(n: int, avoid=()) -> list[RGB]:
    """``n`` colours (RGB 0..1) that are far apart for the eye: a deterministic palette for any number of classes.

    Farthest-point sampling in CIELAB under the CIEDE2000 colour difference: from a grid of
    sRGB candidates (bright enough to read on a dark background, not grey, so never mistaken
    for the CT or the bone), each next colour is the candidate farthest from all chosen ones
    and from ``avoid`` (RGB colours to stay away from). The first colours are the most
    distinct; the same ``n`` always gives the same palette.

    >>> palette = distinct_colors(3)
    >>> len(palette), palette == distinct_colors(3)
    (3, True)
    """
    import numpy as np

    n = int(n)
    if n <= 0:
        return []
    candidates, lab = palette_candidates()
    nearest = np.full(len(candidates), np.inf)
    for rgb in avoid:
        nearest = np.minimum(nearest, delta_e_ciede2000(lab, srgb_to_lab(rgb)))
    chosen: list[int] = []
    pick = int(np.argmin(np.linalg.norm(candidates - (0.90, 0.30, 0.25), axis=1)))  # a warm red to begin
    for _ in range(n):
        if chosen:
            pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, delta_e_ciede2000(lab, lab[pick]))
        nearest[pick] = -1.0  # never picked twice (for n beyond the candidates, repeats are spread out)
        if len(chosen) % len(candidates) == 0:
            nearest[:] = np.inf
    return [tuple(float(c) for c in candidates[i]) for i in chosen]


_PALETTE_CANDIDATES = None


def palette_candidates():
    """The colours `distinct_colors` and the scene's recolouring pick from: an sRGB grid (17 levels
    a channel) without dark or greyish colours, ``(rgb, lab)`` arrays of shape ``(N, 3)``."""
    global _PALETTE_CANDIDATES
    if _PALETTE_CANDIDATES is None:
        import numpy as np

        levels = np.linspace(0.0, 1.0, 17)
        rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
        lab = srgb_to_lab(rgb)
        chroma = np.hypot(lab[:, 1], lab[:, 2])
        keep = (lab[:, 0] >= 45) & (lab[:, 0] <= 92) & (chroma >= 25)
        _PALETTE_CANDIDATES = (rgb[keep], lab[keep])
    return _PALETTE_CANDIDATES


def srgb_to_lab(rgb):
    """CIELAB (D65) of sRGB colours in 0..1, shape ``(..., 3)`` (as scikit-image's ``rgb2lab``)."""
    import numpy as np

    rgb = np.asarray(rgb, dtype=float)
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def delta_e_ciede2000(lab1, lab2):
    """CIEDE2000 colour difference of CIELAB colours (broadcast; kL = kC = kH = 1), as scikit-image's.

    About 1 is just noticeable side by side; below about 10 two colours of small, shaded
    surfaces are hard to tell apart.

    >>> round(float(delta_e_ciede2000([50.0, 2.6772, -79.7751], [50.0, 0.0, -82.7485])), 4)
    2.0425
    """
    import numpy as np

    lab1, lab2 = np.asarray(lab1, dtype=float), np.asarray(lab2, dtype=float)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    g = 0.5 * (1.0 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = a1 * (1.0 + g), a2 * (1.0 + g)
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    dl, dc = l2 - l1, c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(c1p * c2p == 0, 0.0, dh)
    dH = 2.0 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2.0)
    l_bar, c_barp = (l1 + l2) / 2.0, (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) > 180.0, np.where(h_sum < 360.0, h_sum + 360.0, h_sum - 360.0), h_sum) / 2.0
    h_bar = np.where(c1p * c2p == 0, h_sum, h_bar)
    t = (1.0 - 0.17 * np.cos(np.radians(h_bar - 30.0)) + 0.24 * np.cos(np.radians(2.0 * h_bar))
         + 0.32 * np.cos(np.radians(3.0 * h_bar + 6.0)) - 0.20 * np.cos(np.radians(4.0 * h_bar - 63.0)))
    s_l = 1.0 + 0.015 * (l_bar - 50.0) ** 2 / np.sqrt(20.0 + (l_bar - 50.0) ** 2)
    s_c = 1.0 + 0.045 * c_barp
    s_h = 1.0 + 0.015 * c_barp * t
    r_t = (-2.0 * np.sqrt(c_barp**7 / (c_barp**7 + 25.0**7))
           * np.sin(np.radians(60.0 * np.exp(-(((h_bar - 275.0) / 25.0) ** 2)))))
    return np.sqrt((dl / s_l) ** 2 + (dc / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dc / s_c) * (dH / s_h))
