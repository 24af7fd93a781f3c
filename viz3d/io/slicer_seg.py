"""3D Slicer segmentations (``.seg.nrrd``): a NRRD label map, or a stack of them (layers), whose
header names every segment.

Slicer (``vtkMRMLSegmentationStorageNode``) writes, per segment ``N`` (0, 1, ...)::

    Segment0_ID:=Segment_1
    Segment0_Name:=liver
    Segment0_Color:=0.86 0.55 0.4
    Segment0_LabelValue:=1
    Segment0_Layer:=0

Segments that overlap go to different layers: the data then has a fourth, non-spatial axis (the
first, kind ``list``), one label map per layer, and a label value means one segment within its
layer only. Files from Slicer before 4.11 have no ``_LabelValue`` / ``_Layer``: one binary
layer per segment. Each segment keeps its label value when those are distinct across layers;
otherwise the segments are numbered 1, 2, ... in header order, so that every value names one
segment in whichever layer holds it (see `viz3d.io.segmentation.Segmentation`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Viz3dError, warn
from .segmentation import Segmentation
from .labels import LabelTable
from .nrrd import nrrd_affine, read_nrrd, spatial_axes
from .volume import Volume, label_values

SOURCE = "Slicer segmentation header"
_SEGMENT_KEY = re.compile(r"Segment(\d+)_(\w+)$")


@dataclass(frozen=True)
class SlicerSegment:
    """One segment of a ``.seg.nrrd`` header: its place in the data and the value viz3d gives it."""

    index: int
    name: str
    color: tuple[float, float, float] | None
    layer: int
    label_value: int
    value: int


def is_slicer_header(header: dict) -> bool:
    """Whether a NRRD header describes 3D Slicer segments (``Segment0_...`` fields).

    >>> is_slicer_header({"Segment0_ID": "Segment_1"}), is_slicer_header({"space": "RAS"})
    (True, False)
    """
    return any(_SEGMENT_KEY.match(str(key)) for key in header)


def slicer_segments(path, header: dict) -> list[SlicerSegment]:
    """Every segment a ``.seg.nrrd`` header describes, checked against each other and the data's size.

    Raises
    ------
    Viz3dError
        One line naming the first inconsistency: segment numbers with gaps, a label value or
        layer that is not a whole number (or a layer the data does not have), two segments on
        one value of one layer, a colour that is not three numbers in 0..1.

    Examples
    --------
    >>> header = {"dimension": 3, "sizes": [4, 4, 4], "Segment0_Name": "liver", "Segment0_LabelValue": "3",
    ...           "Segment0_Layer": "0", "Segment0_Color": "1 0 0"}
    >>> slicer_segments("a.seg.nrrd", header)[0]
    SlicerSegment(index=0, name='liver', color=(1.0, 0.0, 0.0), layer=0, label_value=3, value=3)
    >>> header["Segment0_Layer"] = "2"
    >>> slicer_segments("a.seg.nrrd", header)
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: a.seg.nrrd: inconsistent Slicer segmentation header: Segment0_Layer is 2 but the data has 1 layer
    """
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        match = _SEGMENT_KEY.match(str(key))
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = str(value).strip()
    count = len(fields)
    if sorted(fields) != list(range(count)):
        missing = sorted(set(range(max(fields) + 1)) - set(fields))
        raise _inconsistent(path, f"segments are numbered {_numbers(sorted(fields))}: Segment{missing[0]} is missing")
    n_layers = _layer_count(path, header)
    old_style = all("LabelValue" not in f and "Layer" not in f for f in fields.values())
    if old_style and n_layers not in (1, count):
        raise _inconsistent(path, f"{count} segments without _Layer fields but the data has {n_layers} layers")
    rows = []
    for index in range(count):
        field = fields[index]
        name = field.get("Name") or field.get("ID")
        if not name:
            raise _inconsistent(path, f"Segment{index} has neither _Name nor _ID")
        if old_style:
            layer, label_value = (index if n_layers > 1 else 0), (1 if n_layers > 1 else index + 1)
        else:
            layer = _whole(path, index, field, "Layer")
            label_value = _whole(path, index, field, "LabelValue")
        if not 0 <= layer < n_layers:
            raise _inconsistent(path, f"Segment{index}_Layer is {layer} but the data has {n_layers} "
                                      f"layer{'s' if n_layers != 1 else ''}")
        if label_value < 1:
            raise _inconsistent(path, f"Segment{index}_LabelValue is {label_value}: label values start at 1")
        rows.append((index, name, _color(path, index, field.get("Color")), layer, label_value))
    seen = {}
    for index, _, _, layer, label_value in rows:
        if (layer, label_value) in seen:
            raise _inconsistent(path, f"Segment{seen[layer, label_value]} and Segment{index} both have label value "
                                      f"{label_value} in layer {layer}")
        seen[layer, label_value] = index
    distinct = len({row[4] for row in rows}) == len(rows)
    return [SlicerSegment(index, name, color, layer, label_value, label_value if distinct else index + 1)
            for index, name, color, layer, label_value in rows]


def slicer_table(path, header: dict) -> LabelTable:
    """The names and colours of a ``.seg.nrrd``'s segments, by the values viz3d gives them."""
    segments = slicer_segments(path, header)
    return LabelTable(Path(path).name, {s.value: s.name for s in segments},
                      {s.value: s.color for s in segments if s.color is not None}, SOURCE)


def read_slicer_segmentation(path) -> Segmentation:
    """A ``.seg.nrrd`` as a `Segmentation`: one label-map layer per layer of the file, its
    values those `slicer_segments` gives, placed from the NRRD space fields."""
    path = Path(path)
    array, header = read_nrrd(path)
    segments = slicer_segments(path, header)
    affine = nrrd_affine(path, header)
    axes = spatial_axes(path, header)
    extra = [axis for axis in range(array.ndim) if axis not in axes]
    array = np.moveaxis(array, extra + axes, range(array.ndim)).reshape((-1, *[array.shape[a] for a in axes]))
    layers = []
    for layer in range(array.shape[0]):
        data = label_values(path, array[layer])
        mine = [s for s in segments if s.layer == layer]
        layers.append(Volume(_relabelled(path, layer, data, mine), affine, str(path),
                             {"path": str(path), "format": "3D Slicer segmentation", "layer": layer}))
    table = LabelTable(path.name, {s.value: s.name for s in segments},
                       {s.value: s.color for s in segments if s.color is not None}, SOURCE)
    return Segmentation(tuple(layers), table)


def _relabelled(path: Path, layer: int, data: np.ndarray, segments: list[SlicerSegment]) -> np.ndarray:
    """A layer's voxels with each segment's label value replaced by its viz3d value; values of
    no segment become background, with a warning."""
    from .labels import values_present

    own = {s.label_value: s.value for s in segments}
    unknown = [v for v in values_present(data) if v not in own]
    if unknown:
        warn(f"{path}: layer {layer} holds value(s) {unknown[:8]} that no segment names: drawn as background",
             stacklevel=4)
    elif all(old == new for old, new in own.items()):
        return data
    lookup = np.zeros(max([int(data.max()) if data.size else 0, *own]) + 1, np.uint32)
    for old, new in own.items():
        lookup[old] = new
    out = lookup[data]
    top = int(out.max()) if out.size else 0
    return out.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)


def _layer_count(path, header: dict) -> int:
    sizes = [int(n) for n in np.atleast_1d(header.get("sizes", ()))]
    extra = [size for axis, size in enumerate(sizes) if axis not in spatial_axes(path, header)]
    if len(extra) > 1:
        raise _inconsistent(path, f"{len(extra)} non-spatial axes (sizes {sizes}): expected at most one, the layers")
    return extra[0] if extra else 1


def _whole(path, index: int, field: dict, key: str) -> int:
    text = field.get(key)
    if text is None:
        raise _inconsistent(path, f"Segment{index}_{key} is missing (other segments have it)")
    try:
        return int(text)
    except ValueError:
        raise _inconsistent(path, f"Segment{index}_{key} is '{text}': expected a whole number") from None


def _color(path, index: int, text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        rgb = tuple(float(x) for x in text.replace(",", " ").split())
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise _inconsistent(path, f"Segment{index}_Color is '{text}': expected three numbers in 0..1")
    return rgb


def _numbers(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")


def _inconsistent(path, what: str) -> Viz3dError:
    return Viz3dError(f"{path}: inconsistent Slicer segmentation header: {what}")
