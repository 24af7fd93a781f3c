"""The few functions notebooks, scripts and the command line use: load -> meshes -> scene -> outputs.

Example::

    import viz3d
    ct, label = viz3d.load_ct("ct.nii.gz"), viz3d.load_label("label.nii.gz")
    meshes = viz3d.build_meshes(ct, label, table="totalsegmentator")
    viz3d.export_meshes(meshes, "meshes/")                          # STL + manifest.json
    viz3d.screenshot(viz3d.build_scene(meshes, ct, off_screen=True), "scene.png")
"""
from __future__ import annotations

import concurrent.futures

import numpy as np

from .errors import Viz3dError, collecting_warnings, warn
from .surfaces.meshing import (DEFAULT_BONE_HU, DEFAULT_METHOD, DEFAULT_MIN_BONE_COMPONENT_MM3, DEFAULT_SMOOTHING,
                               SURFACES_REVISION, Mesh, label_boxes, smoothing_factor, surfaces)
from .io.formats import load_label
from .io.volume import Volume, forget_inflated, inflate_soon


# what loading and meshing import (DICOM's pydicom comes with nibabel)
MESHING_MODULES = ("nibabel", "isal.isal_zlib", "scipy.ndimage", "vtkmodules.vtkFiltersCore", "scipy.sparse.csgraph")


def load_ct(path, series=None, progress=None) -> Volume:
    """Load a CT in Hounsfield units from a file or a DICOM folder.

    A NIfTI, NRRD or MetaImage file, or a DICOM folder or any file of a series (see
    `viz3d.io.formats`).

    Parameters
    ----------
    path : str or path-like
        The image file, a DICOM folder (searched recursively) or one file of a DICOM series.
    series : int, str or None, optional
        Picks one of several DICOM series: an index, a SeriesInstanceUID, ``"number:N"`` or
        ``"index:N"`` (see `viz3d.io.dicom.load_dicom`); None: the series with the most slices.
    progress : callable or None, optional
        If given, called as ``progress(done, total)`` as a DICOM series' slices are decoded.

    Returns
    -------
    Volume
        The CT: its voxel array and voxel-to-RAS affine (mm); ``source`` is ``path``.

    Raises
    ------
    Viz3dError
        When ``path`` does not exist, is not an image viz3d reads, has a broken header (an
        affine no scanner writes, scaling beyond +-1e9), or ``series`` names no series.

    See Also
    --------
    load_label : The label map that goes with it.
    viz3d.io.dicom.list_series : The series a DICOM folder holds.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import nibabel as nib, numpy as np
    >>> import viz3d
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "ct.nii.gz"
    ...     nib.save(nib.Nifti1Image(np.full((20, 20, 10), -1000, np.int16), np.diag([0.5, 0.5, 2.0, 1.0])), path)
    ...     ct = viz3d.load_ct(path)
    >>> ct.shape, ct.voxel_sizes, ct.axcodes
    ((20, 20, 10), (0.5, 0.5, 2.0), ('R', 'A', 'S'))
    >>> viz3d.load_ct("missing.nii.gz")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: missing.nii.gz: no such file or folder
    """
    from .io.formats import load_ct as read_ct  # the format registry: NIfTI, DICOM, NRRD, MetaImage

    return read_ct(path, series=series, progress=progress)


def alignment_warnings(ct: Volume, label: Volume) -> list[str]:
    """Say when a CT and a label map are not on one grid, and loudly when they do not overlap.

    Each surface is placed with its own file's affine, so the overlay stays right in world
    space even when the grids differ; this only tells the user that they differ.

    Parameters
    ----------
    ct : Volume
        The CT.
    label : Volume
        The label map.

    Returns
    -------
    list of str
        Empty when both sample the same voxel centres (`Volume.same_grid`); else one message
        that the grids differ, and a second one when their world boxes do not overlap at all
        (probably not the same patient or scan).

    Examples
    --------
    >>> import numpy as np
    >>> import viz3d
    >>> ct = viz3d.Volume(np.zeros((20, 20, 20), np.int16), np.eye(4))
    >>> viz3d.alignment_warnings(ct, viz3d.Volume(np.zeros((20, 20, 20), np.uint8), np.eye(4)))
    []
    >>> far = np.eye(4)
    >>> far[0, 3] = 500.0  # half a metre to the patient's left
    >>> len(viz3d.alignment_warnings(ct, viz3d.Volume(np.zeros((20, 20, 20), np.uint8), far)))
    2
    """
    if ct.same_grid(label):
        return []
    messages = [
        f"CT {ct.source or ''} {ct.shape} and label {label.source or ''} {label.shape} are on different grids; "
        "each is placed in world space with its own affine (no resampling)"
    ]
    a, b = ct.world_bounds(), label.world_bounds()
    if np.any(a[1] < b[0]) or np.any(b[1] < a[0]):
        messages.append(
            "CT and label DO NOT OVERLAP in world space (CT box "
            f"{np.round(a, 1).tolist()} mm, label box {np.round(b, 1).tolist()} mm): "
            "they are probably not the same patient or scan"
        )
    return messages


def build_meshes(
    ct: Volume | None = None,
    label: Volume | None = None,
    *,
    table=None,
    labels: list[int] | str | None = None,
    bone: bool = True,
    bone_hu: float | None = None,
    smooth: bool = True,
    smoothing: float = DEFAULT_SMOOTHING,
    method: str = DEFAULT_METHOD,
    progress=None,
) -> list[Mesh]:
    """Build the label surfaces (from ``label``) followed by the bone surface (from ``ct``), in RAS mm.

    Grid mismatches between ``ct`` and ``label`` are reported with `Viz3dWarning` (see
    `alignment_warnings`), and so are selected values absent from the label map and a CT in
    which nothing reaches the bone threshold.

    Parameters
    ----------
    ct : Volume or None, optional
        The CT, for the bone surface; None: no bone surface.
    label : Volume or None, optional
        The label map, for one surface per class; None: the bone surface only.
    table : LabelTable, str, path-like or None, optional
        A `LabelTable`, a built-in table name or a label-table file (default: the table the
        label map's file carries or has beside it, else the workshop's ``spinopelvic10``; see
        `label_table_for`).
    labels : list of int, str or None, optional
        Selects structures: values (``[1, 2, 7]``) or a selection such as ``"L1-L5,sacrum"``
        or ``"1,3-5"`` (see `viz3d.io.labels.select_labels`); None: every class present.
    bone : bool, optional
        Build the bone surface from ``ct`` (default True).
    bone_hu : float or None, optional
        The bone threshold in HU (default 200). A series whose values are not Hounsfield units
        (MR, PET) gets no bone surface unless a threshold is given.
    smooth : bool, optional
        False is the same as ``smoothing=0``.
    smoothing : float, optional
        0-1, 3D Slicer's smoothing factor, as in `viz3d.surfaces.meshing.label_meshes`.
    method : {"flying-edges", "surface-nets", "lewiner"}, optional
        The surface extractor, as in `viz3d.surfaces.meshing.label_meshes`.
    progress : callable or None, optional
        If given, called as ``progress(stage, done, total, item)`` as each stage starts,
        advances and ends.

    Returns
    -------
    list of Mesh
        The label surfaces in increasing label value, then the bone surface (``kind="bone"``)
        if any.

    Raises
    ------
    Viz3dError
        When neither ``ct`` nor ``label`` is given, ``table`` cannot be loaded, ``labels``
        names no structure of the table, ``method`` is unknown, or ``smoothing`` is not a
        number from 0 to 1.

    See Also
    --------
    viz3d.surfaces.meshing.label_meshes : The label surfaces alone.
    viz3d.surfaces.meshing.bone_mesh : The bone surface alone.

    Examples
    --------
    >>> import numpy as np
    >>> import viz3d
    >>> ball = (np.linalg.norm(np.indices((20, 20, 20)) - 9.5, axis=0) < 7).astype(np.uint8)
    >>> label = viz3d.Volume(ball, np.diag([0.8, 0.8, 0.8, 1.0]))
    >>> ct = viz3d.Volume(np.where(ball, 700, -1000).astype(np.int16), label.affine)
    >>> meshes = viz3d.build_meshes(ct, label, table="spinopelvic10")
    >>> [(mesh.name, mesh.kind, mesh.label) for mesh in meshes]
    [('L1', 'label', 1), ('bone', 'bone', None)]
    >>> viz3d.build_meshes()
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: nothing to mesh: give a CT, a label map, or both
    """
    if ct is None and label is None:
        raise Viz3dError("nothing to mesh: give a CT, a label map, or both")
    return _build_meshes(ct, label, table=table, labels=labels, bone=bone, bone_hu=bone_hu, smooth=smooth,
                         smoothing=smoothing, method=method,
                         progress=progress)


def _build_meshes(ct, label, *, table, labels, bone, bone_hu, smooth, smoothing, method, progress) -> list[Mesh]:
    """`build_meshes`, where ``ct`` may be a function that waits for a CT still being read."""
    report = progress or (lambda *args: None)
    names, wanted, singles = _names_and_selection(label, table, labels)
    build_bone = ct is not None and bone
    still_loading = callable(ct)
    if not still_loading:
        _warn_alignment(ct, label)
        build_bone = build_bone and _hounsfield_or_asked(ct, bone_hu)
    bone_ct = ct
    if still_loading and build_bone and bone_hu is None:  # decided once the CT is read (said below)
        def bone_ct():
            volume = ct()
            return volume if volume.meta.get("hounsfield", True) else None

    threshold = DEFAULT_BONE_HU if bone_hu is None else bone_hu
    report("meshing", 0, 1, "")
    meshes = surfaces(_first_layer(label), bone_ct, names, labels=wanted, smooth=smooth, smoothing=smoothing, method=method,
                      bone_hu=threshold if build_bone else None,
                      progress=lambda done, total, name: report("meshing", done, total, name))
    meshes = _with_other_layers(meshes, label, names, labels=wanted, smooth=smooth, smoothing=smoothing, method=method)
    if still_loading:  # a CT read in the background: its grid is known now
        ct = ct()
        _warn_alignment(ct, label)
        build_bone = build_bone and _hounsfield_or_asked(ct, bone_hu)
    if build_bone and not any(mesh.kind == "bone" for mesh in meshes):
        if ct.array.size and np.nanmax(ct.array) >= threshold:  # voxels do: every piece was a speck
            warn(f"{ct.source or 'the CT'}: what reaches {threshold:g} HU is only in pieces under "
                 f"{DEFAULT_MIN_BONE_COMPONENT_MM3 / 1000:g} mL (specks, dropped): no bone surface", stacklevel=3)
        else:
            warn(f"no voxel of {ct.source or 'the CT'} reaches {threshold:g} HU: no bone surface", stacklevel=3)
    built = {mesh.label for mesh in meshes if mesh.kind == "label"}
    absent = sorted(set(singles) - built)
    if absent and built:  # none at all: the command says so (export refuses: nothing to export)
        from .io.labels import format_values

        warn(f"label value(s) {format_values(absent)} not in {label.source or 'the label map'}: no surface for them",
             stacklevel=3)
    return meshes


def _first_layer(label):
    """The label map meshed first: ``label`` itself, or its first layer when it has several."""
    from .io.segmentation import label_layers

    return label_layers(label)[0] if label is not None else None


def _with_other_layers(meshes: list[Mesh], label, names, **options) -> list[Mesh]:
    """``meshes`` with the surfaces of ``label``'s other layers (overlapping segments, see
    `viz3d.io.segmentation.Segmentation`) among the label surfaces, by value, before the bone."""
    from .io.segmentation import label_layers

    layers = label_layers(label)[1:] if label is not None else ()
    if not layers:
        return meshes
    more = [mesh for layer in layers for mesh in surfaces(layer, None, names, bone_hu=None, **options)]
    labelled = sorted([mesh for mesh in meshes if mesh.kind == "label"] + more, key=lambda mesh: mesh.label)
    return labelled + [mesh for mesh in meshes if mesh.kind != "label"]


def label_table_for(label: Volume | None, table=None):
    """Find the `LabelTable` naming a label map's values.

    ``table`` (a `LabelTable`, built-in name or file) or else the one the label map's file
    carries or has beside it, or the default (see `viz3d.io.formats.resolve_label_table`),
    checked against the values present: one `Viz3dWarning` when it does not name them all
    (`viz3d.io.labels.check_coverage`).

    Parameters
    ----------
    label : Volume or None
        The label map; its ``source`` (the file it was read from) is where a table is looked
        for when ``table`` is None. None: the table alone, unchecked.
    table : LabelTable, str, path-like or None, optional
        A `LabelTable`, a built-in table name (``"spinopelvic10"``, ``"totalsegmentator"``)
        or a label-table file.

    Returns
    -------
    LabelTable
        The names and colours; its ``source`` says where the names came from.

    Raises
    ------
    Viz3dError
        When ``table`` cannot be loaded, or a table found beside the label map is broken.

    Examples
    --------
    >>> import numpy as np
    >>> import viz3d
    >>> label = viz3d.Volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.eye(4))
    >>> names = label_table_for(label, "totalsegmentator")
    >>> names.name_of(5), names.source
    ('liver', '--label-table totalsegmentator')
    """
    from .io.formats import resolve_label_table
    from .io.labels import check_coverage, values_present

    names = resolve_label_table(table, (label.source or None) if label is not None else None)  # "": made in memory
    if label is None:
        return names
    array = label.array
    top = int(array.max()) if array.size else 0
    # every value up to the largest named: no need to find which are present
    present = range(1, top + 1) if all(v in names.names for v in range(1, top + 1)) else values_present(array)
    return check_coverage(names, present, label.source or "the label map")


def _names_and_selection(label, table, labels):
    """(table for ``label`` as `label_table_for` gives it, label values ``labels`` selects in it or
    None for all, values selected one by one rather than by a range)."""
    from .io.labels import label_selection, parse_label_selection

    names = label_table_for(label, table)
    if labels is None or label is None:
        return names, None, []
    if isinstance(labels, str):
        terms = parse_label_selection(labels).split(",")
    else:
        terms = [labels] if isinstance(labels, (int, np.integer)) else list(labels)
    wanted, singles = label_selection(terms, names, labels.strip() if isinstance(labels, str) else None)
    return names, wanted, singles


def _hounsfield_or_asked(ct: Volume, bone_hu: float | None) -> bool:
    """Whether the bone surface is built: the CT's values are Hounsfield units, or the user gave
    a threshold. Says so when a series of another modality (MR, PET) gets none."""
    if bone_hu is not None or ct.meta.get("hounsfield", True):
        return True
    warn(f"{ct.source or 'the image'}: its values are not Hounsfield units ({ct.meta.get('Modality') or 'not CT'}): "
         "no bone surface; give --bone-hu to threshold them anyway", stacklevel=4)
    return False


def _warn_alignment(ct, label) -> None:
    if ct is not None and label is not None:
        for message in alignment_warnings(ct, label):
            warn(message, stacklevel=4)


def load_and_mesh(
    ct_path=None,
    label_path=None,
    *,
    series=None,
    table=None,
    labels: list[int] | str | None = None,
    bone: bool = True,
    bone_hu: float | None = None,
    smooth: bool = True,
    smoothing: float = DEFAULT_SMOOTHING,
    method: str = DEFAULT_METHOD,
    use_cache: bool = True,
    cache_ct: bool = True,
    progress=None,
) -> tuple[Volume | None, list[Mesh]]:
    """Load the inputs and build their meshes, reusing the user's cache when nothing changed.

    Returns the CT (or None) and the meshes. Meshes are cached by the content of the input
    files and of a label-table file and by every parameter; the decoded CT array is cached too,
    so a second run goes straight to rendering (``cache_ct=False`` leaves it out: an export
    does not need it). The CT is read in the background while the label map is read and
    meshed (ISA-L and VTK release the GIL); only the bone surface waits for it, and a grid
    mismatch is reported once it is in.
    Warnings from the first run are repeated. ``progress`` is called as in `build_meshes`.
    """
    from . import cache

    _check_inputs(ct_path, label_path)
    use_cache = use_cache and cache.enabled() and not _grid_found_beside(ct_path, label_path)
    report = progress or (lambda *args: None)
    # A CT decoded from its file either way starts before the inputs are hashed. (No thread of
    # ours imports modules meanwhile: imports in two threads wait for each other, and the cores
    # are busy from here on. A scene command imports PyVista in the background; see cli.)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            ct_job = None
            ct_progress = (lambda done, total: report("loading CT", done, total, "")) if progress else None
            if ct_path is not None:
                report("loading CT", 0, 1, "")  # a DICOM series then counts its slices
            if ct_path is not None and not (use_cache and cache_ct):
                _read_ahead(ct_path)  # decompressed (GIL released) while the inputs are hashed and nibabel imported
                ct_job = pool.submit(load_ct, ct_path, series=series, progress=ct_progress)
            mesh_key = _mesh_key(ct_path, label_path, series=series, table=table, labels=labels, bone=bone,
                                 bone_hu=bone_hu, smooth=smooth, smoothing=smoothing, method=method) if use_cache else None
            hit = cache.load_meshes(mesh_key) if use_cache else None
            if hit is None and label_path is not None:
                _read_ahead(label_path)  # while nibabel imports and the CT loads
            if ct_path is not None:
                if ct_job is None:
                    if not (use_cache and cache_ct and cache.has_array(_ct_key(ct_path, series))):
                        _read_ahead(ct_path)
                    ct_job = pool.submit(_load_ct_cached, ct_path, series, use_cache and cache_ct, ct_progress)
            if hit is not None:
                ct = ct_job.result() if ct_job is not None else None
                meshes, notes = hit
                for note in notes:
                    warn(note, stacklevel=2)
            else:
                label = load_label(label_path, reference=ct_job.result if ct_job is not None else None) \
                    if label_path is not None else None  # the CT: an RTSTRUCT is filled onto its grid
                with collecting_warnings() as notes:
                    meshes = _build_meshes(ct_job.result if ct_job is not None else None, label, table=table,
                                           labels=labels, bone=bone, bone_hu=bone_hu, smooth=smooth,
                                           smoothing=smoothing, method=method,
                                           progress=progress)
                ct = ct_job.result() if ct_job is not None else None
            if ct_job is not None:
                report("loading CT", 1, 1, "")
    finally:
        forget_inflated(ct_path, label_path)  # started early and not taken: an error, or a cache hit meanwhile
    if use_cache and hit is None:
        cache.save_meshes_soon(mesh_key, meshes, notes)  # written while the caller goes on
    return ct, meshes


def _read_ahead(path) -> None:
    """`viz3d.io.volume.inflate_soon` with `viz3d.runtime.enable` (a background thread that
    outlives the call is the command line's choice, not the library's)."""
    from . import runtime

    if runtime.enabled():
        inflate_soon(path)


def _grid_found_beside(ct_path, label_path) -> bool:
    """Whether the label map's grid comes from a CT series found beside it (a DICOM SEG or
    RTSTRUCT given without its CT): its surfaces then depend on files the mesh-cache key does
    not hold, so they are built afresh each time.

    >>> _grid_found_beside("ct.nii.gz", "rs.dcm"), _grid_found_beside(None, None)
    (False, False)
    """
    if ct_path is not None or label_path is None:
        return False
    from .io.formats import format_of

    return format_of(label_path, "label").name in ("DICOM SEG", "DICOM RTSTRUCT")


def meshes_cached(ct_path=None, label_path=None, *, series=None, table=None, labels: list[int] | str | None = None,
                  bone: bool = True, bone_hu: float | None = None, smooth: bool = True,
                  smoothing: float = DEFAULT_SMOOTHING, method: str = DEFAULT_METHOD) -> bool:
    """Whether `load_and_mesh` with these arguments would take its meshes from the cache.

    The inputs are hashed (once per process: `load_and_mesh` reuses the digests). A command
    uses it to decide what to import first: PyVista at once when only the scene is left to
    build, the loading and meshing modules first otherwise.
    """
    from . import cache

    _check_inputs(ct_path, label_path)
    if not cache.enabled():
        return False
    return cache.has_meshes(_mesh_key(ct_path, label_path, series=series, table=table, labels=labels, bone=bone,
                                      bone_hu=bone_hu, smooth=smooth, smoothing=smoothing, method=method))


def _check_inputs(ct_path, label_path) -> None:
    from pathlib import Path

    if ct_path is None and label_path is None:
        raise Viz3dError("give a CT, a label map (--label), or both")
    from .cache import input_files

    for path in (ct_path, label_path):
        if path is not None and not Path(path).exists():
            raise Viz3dError(f"{path}: no such file or folder")
        if path is not None:
            input_files(path)  # a pipe or a device (/dev/zero) would block or never end: refused before any read


def _mesh_key(ct_path, label_path, *, series, table, labels, bone, bone_hu, smooth, smoothing, method) -> str:
    """The mesh-cache key of `load_and_mesh`'s inputs and options."""

    from . import cache, __version__

    from .io.labels import label_table_file

    table_file = label_table_file(table, label_path)  # --label-table's file, or one found beside the label map
    table_file = table_file if table_file is not None and table_file.is_file() else None
    params = dict(version=__version__, series=series, table=str(table), labels=labels, bone=bone and ct_path is not None,
                  bone_hu=bone_hu, smoothing=smoothing_factor(smoothing, smooth), method=method, surfaces=SURFACES_REVISION,
                  names=table_digest(table, label_path) if label_path is not None else None)
    return cache.content_key([ct_path, label_path, table_file], params)


def table_digest(table=None, label_path=None) -> str:
    """A digest of the names and colours the label map's values get: the resolved table's (value,
    name, colour) rows and the default palette (values the table does not name). A table that a
    non-NIfTI input carries itself is in that file's content, which the key holds already: the
    digest then covers the default table and the palette.

    Part of the mesh-cache key, so that a changed built-in table or palette (a new viz3d, an
    edited package) never serves meshes with the old names or colours.

    Parameters
    ----------
    table : LabelTable, str, path-like or None, optional
        As `load_and_mesh` takes it (``--label-table``).
    label_path : str, path-like or None, optional
        The label map, for a table it carries or has beside it.

    Returns
    -------
    str
        A hex SHA-256 digest.

    Examples
    --------
    >>> from viz3d.io.labels import LabelTable
    >>> red = LabelTable("t", {1: "liver"}, {1: (1.0, 0.0, 0.0)})
    >>> blue = LabelTable("t", {1: "liver"}, {1: (0.0, 0.0, 1.0)})
    >>> table_digest(red) == table_digest(red), table_digest(red) == table_digest(blue)
    (True, False)
    """
    import hashlib
    import json

    from .io.labels import PALETTE, resolve_label_table

    names = resolve_label_table(table, label_path)
    rows = [[int(value), str(name), [round(float(c), 6) for c in names.color_of(value)]]
            for value, name in sorted(names.names.items())]
    return hashlib.sha256(json.dumps([rows, list(PALETTE)]).encode("utf-8")).hexdigest()


def _ct_key(path, series) -> str:
    """The cache key of a CT's decoded array: its files' content and the series chosen."""
    from . import cache

    return cache.content_key([path], {"ct": True, "series": series})


def _load_ct_cached(path, series, use_cache: bool, progress=None) -> Volume:
    """The CT, from the decoded-array cache when its file content was seen before."""
    from . import cache

    if not use_cache:
        return load_ct(path, series=series, progress=progress)
    key = _ct_key(path, series)
    hit = cache.load_array(key)
    if hit is not None:
        array, meta = hit
        for note in meta.get("notes", []):
            warn(note, stacklevel=3)
        return Volume(array, np.array(meta["affine"]), str(path), meta.get("meta", {}))
    with collecting_warnings() as notes:
        ct = load_ct(path, series=series, progress=progress)
    cache.save_array(key, ct.array, {"affine": ct.affine.tolist(), "meta": ct.meta, "notes": notes})
    return ct


def label_statistics(label: Volume, table=None) -> list[dict]:
    """Count each class present: value, name, colour, voxels, volume in mL and box in RAS mm.

    Every layer of a layered segmentation is counted (each value lies in one of them).

    Parameters
    ----------
    label : Volume
        The label map.
    table : LabelTable, str, path-like or None, optional
        Names and colours, as in `label_table_for`.

    Returns
    -------
    list of dict
        One row per class, in increasing value: ``value``, ``name``, ``color`` (RGB 0..1),
        ``voxels``, ``volume_ml`` and ``bbox_mm``, which is ``[[x0, y0, z0], [x1, y1, z1]]``:
        the world extent of the class's voxels (their outer faces, as the surfaces enclose
        them, not their centres); counts are made inside each class's box.

    Raises
    ------
    Viz3dError
        When ``table`` cannot be loaded, or a table found beside the label map is broken.

    Examples
    --------
    >>> import numpy as np
    >>> import viz3d
    >>> array = np.zeros((20, 20, 20), np.uint8)
    >>> array[2:6, 2:6, 2:6] = 1
    >>> (row,) = viz3d.label_statistics(viz3d.Volume(array, np.diag([2.0, 2.0, 2.0, 1.0])), "spinopelvic10")
    >>> row["name"], row["voxels"], round(row["volume_ml"], 3), row["bbox_mm"]
    ('L1', 64, 0.512, [[3.0, 3.0, 3.0], [11.0, 11.0, 11.0]])
    """
    from .io.segmentation import label_layers

    names = label_table_for(label, table)
    rows = []
    for layer in label_layers(label):  # one, or a segmentation's layers (each value in one of them)
        for value, box in label_boxes(layer.array):
            count = int(np.count_nonzero(layer.array[box] == value))
            rows.append({"value": value, "name": names.name_of(value), "color": names.color_of(value), "voxels": count,
                         "volume_ml": count * layer.voxel_volume_mm3 / 1000.0, "bbox_mm": _box_in_world(box, layer.affine)})
    return sorted(rows, key=lambda row: row["value"])


def _box_in_world(box, affine) -> list[list[float]]:
    """World (RAS mm) extent of the voxels in an index box, from the 8 corners of its outer faces."""
    from nibabel.affines import apply_affine

    corners = np.array(np.meshgrid(*[(s.start - 0.5, s.stop - 0.5) for s in box], indexing="ij")).reshape(3, -1).T
    world = apply_affine(affine, corners)
    return [[round(float(x), 3) for x in world.min(axis=0)], [round(float(x), 3) for x in world.max(axis=0)]]
