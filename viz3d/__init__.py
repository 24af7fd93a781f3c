"""viz3d: a CT and its segmentation in 3-D — per-label and bone surfaces in RAS millimetres,
a PyVista scene with orthogonal CT slices and live window/level, screenshots and STL files.

The public API, in the order the data flows::

    ct = viz3d.load_ct("ct.nii.gz")                  # Volume: array + voxel->RAS affine
    label = viz3d.load_label("label.nii.gz")
    meshes = viz3d.build_meshes(ct, label, table="spinopelvic10")
    viz3d.export_meshes(meshes, "out/")               # binary STL per mesh + manifest.json
    scene = viz3d.build_scene(meshes, ct, off_screen=True)
    viz3d.screenshot(scene, "scene.png")
    viz3d.save_slice("slice.png", ct, label, plane="axial", at="L3")   # the 2-D picture: viz3d.outputs.slice2d
"""
from importlib import import_module

__version__ = "0.1.0"

# Names imported from their modules when used (PEP 562): `import viz3d` and the command line's
# start stay cheap, and the command line can configure the process before numpy loads.
_LAZY = {
    "Viz3dWarning": "errors", "alignment_warnings": "api", "build_meshes": "api", "label_statistics": "api",
    "load_ct": "api", "list_series": "io.dicom", "load_dicom": "io.dicom", "Viz3dError": "errors",
    "export_meshes": "outputs.export", "Mesh": "surfaces.meshing", "bone_mesh": "surfaces.meshing",
    "label_meshes": "surfaces.meshing", "Volume": "io.volume", "load_label": "io.formats",
    "slice_image": "outputs.slice2d", "mosaic_image": "outputs.slice2d", "save_slice": "outputs.slice2d",
}
# The stages of the flow, as subpackages: viz3d.io -> viz3d.surfaces -> viz3d.scene -> viz3d.outputs (see
# docs/architecture.md); viz3d.cli calls viz3d.api.
_SUBMODULES = {"api", "cache", "cli", "errors", "io", "outputs", "parallel", "scene", "surfaces"}


def __getattr__(name):
    """The public names above, looked up in their modules at each use (so they always are those
    modules' own), and the subpackages (``viz3d.surfaces``), imported when first used."""
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)  # the import binds it here too
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    """The module's names, the lazily imported ones included (for completion in notebooks)."""
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


def build_scene(*args, **kwargs):
    """Build the PyVista scene (see `viz3d.scene.scene.build_scene`); imports PyVista on first use."""
    from .runtime import configure_offscreen
    from .scene.scene import build_scene as _build_scene

    configure_offscreen()
    return _build_scene(*args, **kwargs)


def screenshot(scene, out_path, **kwargs):
    """Render a scene offscreen to a PNG, atomically (see `viz3d.outputs.render.screenshot`)."""
    from .outputs.render import screenshot as _screenshot

    return _screenshot(scene, out_path, **kwargs)


def show_in_notebook(scene, ct=None, **kwargs):
    """Show a scene (or meshes + CT) inline in Jupyter; a static picture without the trame backend
    (see `viz3d.outputs.notebook.show_in_notebook`)."""
    from .outputs.notebook import show_in_notebook as _show

    return _show(scene, ct, **kwargs)


def write_html(meshes, ct, path, **kwargs):
    """Write the scene as one self-contained HTML file that opens offline (see `viz3d.outputs.web.write_html`)."""
    from .outputs.web import write_html as _write_html

    return _write_html(meshes, ct, path, **kwargs)


def turntable(scene, out_path, **kwargs):
    """Write one turn of the camera about the S-I axis as MP4 or GIF (see `viz3d.outputs.motion.turntable`)."""
    from .outputs.motion import turntable as _turntable

    return _turntable(scene, out_path, **kwargs)


def view_sheet(scene, out_path, **kwargs):
    """Write a labelled multi-view PNG sheet (see `viz3d.outputs.motion.view_sheet`)."""
    from .outputs.motion import view_sheet as _view_sheet

    return _view_sheet(scene, out_path, **kwargs)


def serve(scene, **kwargs):
    """Serve the scene to web browsers until Ctrl-C (see `viz3d.outputs.web.serve`)."""
    from .outputs.web import serve as _serve

    return _serve(scene, **kwargs)


__all__ = [
    "Mesh", "Viz3dError", "Viz3dWarning", "Volume", "alignment_warnings", "bone_mesh", "build_meshes",
    "build_scene", "export_meshes", "label_meshes", "label_statistics", "list_series", "load_ct", "load_dicom",
    "load_label", "mosaic_image",
    "save_slice", "screenshot", "serve", "slice_image", "show_in_notebook", "turntable", "view_sheet", "write_html",
]
