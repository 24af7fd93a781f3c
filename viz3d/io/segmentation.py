"""Segmentations: label-map layers on one grid and the table their file carries.

What every label reader in `viz3d.io.formats` returns; overlapping segments go to different
layers (`layered`), and each layer is meshed on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import Viz3dError
from .labels import LabelTable
from .volume import Volume


@dataclass(frozen=True)
class Segmentation:
    """Segments on one grid: label-map layers and, where the file carries one, the table naming them.

    Segments that overlap cannot share one label map, so a file may hold several layers (3D
    Slicer's ``.seg.nrrd``; overlapping masks, SEG segments or RTSTRUCT ROIs, put in layers by
    `layered`); each is a label map `Volume` on
    the same grid, and a value means one segment in whichever layer holds it (values are
    distinct across layers), so each layer is meshed on its own and the surfaces keep apart.

    Parameters
    ----------
    layers : tuple of Volume
        One or more label maps on the same grid.
    table : LabelTable or None
        The names and colours the file carries (with its `LabelTable.source`), or None: then
        they are found as for any label map (`viz3d.io.labels.resolve_label_table`).

    Examples
    --------
    >>> a = Volume(np.array([[[0, 1]]], np.uint8), np.eye(4), "seg")
    >>> b = Volume(np.array([[[2, 2]]], np.uint8), np.eye(4), "seg")
    >>> seg = Segmentation((a, b))
    >>> len(label_layers(seg.label)), seg.label.array.tolist()
    (2, [[[2, 2]]])
    """

    layers: tuple[Volume, ...]
    table: LabelTable | None = None

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise Viz3dError("a segmentation needs at least one layer")
        first = layers[0]
        for index, layer in enumerate(layers[1:], start=1):
            if layer.shape != first.shape or not np.allclose(layer.affine, first.affine, atol=1e-4):
                raise Viz3dError(f"{first.source or 'segmentation'}: layer {index} is not on the grid of layer 0")
        object.__setattr__(self, "layers", layers)

    @property
    def label(self) -> Volume:
        """The segmentation as one label map `Volume`: the only layer, or the layers painted one
        over the other (what a slice picture shows), carrying them all in ``meta["layers"]``:
        surfaces and voxel counts come from those (see `label_layers`)."""
        first = self.layers[0]
        if len(self.layers) == 1:
            return first
        dtype = np.result_type(*[layer.array.dtype for layer in self.layers])
        painted = first.array.astype(dtype, copy=True)
        for layer in self.layers[1:]:
            inside = layer.array != 0
            painted[inside] = layer.array[inside]
        return Volume(painted, first.affine, first.source, {**first.meta, "layers": self.layers})


def label_layers(label: Volume) -> tuple[Volume, ...]:
    """Every layer of a label map `Volume` (itself alone, unless it came from a layered file):
    what is meshed and counted, each layer on its own.

    >>> label_layers(Volume(np.zeros((1, 1, 1), np.uint8), np.eye(4)))[0].shape
    (1, 1, 1)
    """
    return tuple(label.meta.get("layers") or (label,))


def reference_ct(reference) -> Volume | None:
    """The CT a segmentation is read against: ``reference`` itself, or what it returns when it is
    a function (a CT still being read in the background), or None.

    >>> reference_ct(None) is None, reference_ct(lambda: None) is None
    (True, True)
    """
    return reference() if callable(reference) else reference


def layered(masks, shape, dtype=np.uint8) -> list[np.ndarray]:
    """Label-map layers holding ``masks``: each ``(value, boolean mask)`` is painted into the first
    layer none of whose voxels it overlaps, else into a new layer (as 3D Slicer stores segments).

    >>> a, b = np.array([[[1, 1, 0]]], bool), np.array([[[0, 1, 1]]], bool)
    >>> [layer.tolist() for layer in layered([(1, a), (2, b)], (1, 1, 3))]
    [[[[1, 1, 0]]], [[[0, 2, 2]]]]
    """
    layers: list[np.ndarray] = []
    for value, mask in masks:
        if not mask.any():
            continue
        for layer in layers:
            if not layer[mask].any():
                layer[mask] = value
                break
        else:
            layers.append(np.zeros(shape, dtype))
            layers[-1][mask] = value
    return layers or [np.zeros(shape, dtype)]
