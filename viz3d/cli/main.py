"""The `viz3d` command line: parses arguments and calls the API; errors become one line and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ..errors import Viz3dError
from . import arguments
from .arguments import DEFAULT_METHOD, DEFAULT_SMOOTHING, VIEWS
from .batch import add_batch_parser, cmd_batch

def make_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    parser = arguments.Parser(prog="viz3d", description="A CT and its segmentation in 3-D: surfaces, slices, screenshots, STL.")
    parser.add_argument("--version", action="version", version=f"viz3d {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=arguments.Parser)
    commands.required = True

    info = commands.add_parser("info", help="shape, voxel size, orientation, HU range, label volumes")
    arguments.add_inputs(info)

    view = commands.add_parser("view", help="the interactive 3-D window, or --web: the same scene in a web browser")
    arguments.add_inputs(view)
    arguments.add_mesh_options(view)
    arguments.add_scene_options(view)
    view.add_argument("--web", action="store_true",
                      help="serve the interactive scene to a web browser instead of opening a window (no display needed)")
    view.add_argument("--port", type=arguments.port, default=8080, metavar="N",
                      help="with --web: port to listen on (default 8080; 0: any free port)")
    view.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                      help="with --web: address to listen on (default 127.0.0.1, this machine only: reach it through "
                      "an SSH tunnel)")

    shot = commands.add_parser("screenshot", help="render the scene offscreen to a PNG")
    arguments.add_inputs(shot)
    arguments.add_mesh_options(shot)
    arguments.add_scene_options(shot)
    shot.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    shot.add_argument("--size", type=arguments.size, default=None, metavar="WxH",
                      help="image size (default 1024x768); with --views, the size of each panel (default 640x480)")
    shot.add_argument("--views", type=arguments.view_list, default=None, metavar="V1,V2,...",
                      help="a labelled multi-view sheet: one panel per camera preset, e.g. anterior,left,posterior,right")

    spin = commands.add_parser("turntable", help="a movie (MP4 or GIF) of the scene turning about the patient's S-I axis")
    arguments.add_inputs(spin)
    arguments.add_mesh_options(spin)
    arguments.add_scene_options(spin)
    spin.add_argument("--out", required=True, metavar="FILE", help="output .mp4 (H.264) or .gif")
    spin.add_argument("--frames", type=int, default=72, metavar="N", help="frames in one full turn (default 72)")
    spin.add_argument("--fps", type=float, default=24.0, metavar="N", help="frames per second (default 24)")
    spin.add_argument("--size", type=arguments.size, default=(640, 480), metavar="WxH",
                      help="frame size (default 640x480; even for MP4)")
    spin.add_argument("--axis", choices=("si", "ap", "lr"), default="si",
                      help="world axis to turn about: si (patient's superior-inferior, default), ap or lr")
    spin.add_argument("--no-legend", action="store_true", help="no label legend in the frames")

    export = commands.add_parser(
        "export", help="print-ready surfaces per structure (STL, OBJ, PLY, VTP or GLB) + manifest.json",
        description="Write every structure's surface, checked (closed, 2-manifold, outward, no degenerate faces) and "
        "repaired where needed, with manifest.json saying per surface whether it is printable.",
    )
    arguments.add_inputs(export)
    arguments.add_mesh_options(export)
    export.add_argument("--out", required=True, metavar="DIR", help="output folder")
    export.add_argument("--format", type=str.lower, choices=("stl", "obj", "ply", "vtp", "glb", "html"), default="stl",
                        help="file format (default stl); glb and ply carry the class colours, obj has a material per structure; "
                        "html: the whole scene as one self-contained web page (--out scene.html) that opens offline")
    export.add_argument("--combine", action="store_true",
                        help="one file for the whole scene (scene.<format>) with each structure as a named part")
    export.add_argument("--coords", type=str.lower, choices=("ras", "lps"), default="ras",
                        help="coordinates of the vertices, in mm: ras (default) or lps (DICOM's and 3D Slicer's)")
    export.add_argument("--max-triangles", type=int, default=None, metavar="N",
                        help="at most N triangles per structure (quadric decimation, then smoothing)")
    export.add_argument("--decimate", type=float, default=None, metavar="F",
                        help="keep this fraction of each structure's triangles, 0 < F <= 1 (0.25 keeps a quarter)")
    export.add_argument("--bone-only", action="store_true", help="only the bone surface (needs a CT), no label surfaces")
    export.add_argument("--largest-component", action="store_true",
                        help="keep only each surface's largest piece (drops specks and the scanner table from the bone)")
    page = export.add_argument_group("with --format html: the page's scene, as for screenshot")
    page.add_argument("--window", type=arguments.window, default=None, metavar="PRESET|C,W", help="CT window (default soft)")
    page.add_argument("--view", choices=VIEWS, default=None, help="camera preset (default iso)")
    page.add_argument("--no-slices", action="store_true", help="hide the three CT slice planes")
    page.add_argument("--slices", default=None, metavar="AXIS=POS,...", help="where the CT planes go (see screenshot --help)")
    page.add_argument("--colors", choices=("table", "distinct"), default=None, help="table (default) or distinct")
    export.add_argument("--force", action="store_true", help="replace a different export already in the output folder")

    demo = commands.add_parser("demo", help="the shipped real sample: window, or viz3d-demo.png without a display")
    demo.add_argument("--out", default="viz3d-demo.png", metavar="PNG", help="PNG written when there is no display")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress or status lines")
    _add_slice_parser(commands)
    add_batch_parser(commands)
    return parser


def _add_slice_parser(commands) -> None:
    """`viz3d slice`: the tutorial's 2-D picture (see `viz3d.outputs.slice2d`)."""
    sheet = commands.add_parser(
        "slice", help="a 2-D picture: the windowed CT slice with the labels on top, a legend and orientation letters",
        description="The CT slice at its true aspect ratio in the radiological convention (axial: the patient's right "
        "on your left, anterior up; coronal: superior up, right on your left; sagittal: superior up, anterior on your "
        "left), the labels in the table's colours, a legend of the structures on the slice, and a caption.",
    )
    arguments.add_inputs(sheet, ct_required=True)
    sheet.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    sheet.add_argument("--plane", type=str.lower, choices=("axial", "coronal", "sagittal"), default="axial",
                       help="slice plane (default axial)")
    sheet.add_argument("--at", default=None, metavar="MM|iN|NAME",
                       help="where: mm along the plane's normal (RAS z for axial, y coronal, x sagittal), iN a voxel "
                       "index of the file's array, or a structure name (the slice through its centre); default the middle "
                       "of the labelled extent")
    sheet.add_argument("--window", type=arguments.window, default="soft", metavar="PRESET|C,W",
                       help="soft (40,400, default), bone, lung, brain, or CENTER,WIDTH")
    sheet.add_argument("--opacity", type=float, default=0.5, metavar="A", help="opacity of the filled labels, 0..1 (default 0.5)")
    sheet.add_argument("--outline", action="store_true", help="outline each structure instead of filling it")
    sheet.add_argument("--size", type=arguments.size, default=None, metavar="WxH",
                       help="box the slice is fitted into, true aspect kept (default 512x512; with --mosaic each "
                       "panel's, 256x256)")
    sheet.add_argument("--mosaic", type=int, default=None, metavar="N",
                       help="a QC sheet of N slices evenly through the labelled extent, one shared legend")


def _version() -> str:
    from .. import __version__

    return __version__


class _Console:
    """Status lines and progress bars on stderr; silent with --quiet or when not a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"viz3d: {text}", file=sys.stderr)

    def progress(self):
        """A ``progress(stage, done, total, item)`` callback drawing one bar per stage, or None."""
        if self.quiet or not self.tty:
            return None
        from tqdm import tqdm

        bars: dict = {}

        def update(stage, done, total, item=""):
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(desc=stage, total=total, file=sys.stderr, leave=False,
                                         bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
                                         "{postfix} [{elapsed}]")
            bar.total = total
            if item:
                bar.set_postfix_str(item[:30], refresh=False)
            bar.update(done - bar.n)
            if done >= total and total:
                bar.close()

        return update


def _load_inputs(args, console):
    from ..api import load_ct, load_label

    if args.ct is None and args.label is None:
        raise Viz3dError("give a CT, --label LABEL, or both")
    bar = console.progress()
    loading = (lambda done, total: bar("loading CT", done, total)) if bar else None
    ct = load_ct(args.ct, series=getattr(args, "series", None), progress=loading) if args.ct else None
    label = load_label(args.label, reference=ct) if args.label else None  # an RTSTRUCT is filled onto the CT's grid
    return ct, label


def _inputs_and_meshes(args, console, for_scene=True):
    """Load the inputs and build (or fetch from the cache) their meshes: (CT or None, meshes).

    For a scene, PyVista is imported meanwhile and the decoded CT is cached for the next run;
    ``for_scene=False`` (export) does neither.
    """
    from ..api import MESHING_MODULES, load_and_mesh, meshes_cached

    options = dict(series=getattr(args, "series", None), table=args.label_table, labels=args.labels,
                   bone=arguments.bone_wanted(args), bone_hu=args.bone_hu, smooth=not args.no_smooth,
                   smoothing=getattr(args, "smoothing", DEFAULT_SMOOTHING), method=getattr(args, "method", DEFAULT_METHOD))
    use_cache = not getattr(args, "no_cache", False)
    if for_scene:
        from ..runtime import import_pyvista_soon

        # cached meshes leave only the scene to build: PyVista first; otherwise what meshing uses
        cached = use_cache and meshes_cached(args.ct, args.label, **options)
        import_pyvista_soon(first=() if cached else MESHING_MODULES)
    return load_and_mesh(args.ct, args.label, **options, use_cache=use_cache, cache_ct=for_scene,
                         progress=console.progress())


def cmd_info(args, console) -> None:
    """Print what the tutorial prints by hand, for the CT and the label map."""
    import numpy as np

    from ..api import alignment_warnings, label_statistics, label_table_for
    from ..io.formats import resolve_label_table

    resolve_label_table(args.label_table)  # a bad --label-table is refused before loading
    ct, label = _load_inputs(args, console)
    for title, volume in (("CT", ct), ("label", label)):
        if volume is None:
            continue
        print(f"{title}: {volume.source}")
        print(f"  shape (voxels) : {volume.shape}")
        print(f"  dtype          : {volume.array.dtype}")
        print(f"  voxel size (mm): {tuple(round(s, 4) for s in volume.voxel_sizes)}")
        print(f"  orientation    : {''.join(volume.axcodes)}")
        print("  affine (voxel -> RAS mm):")
        for row in np.round(volume.affine, 3):
            print("    " + "  ".join(f"{x:10.3f}" for x in row))
        if volume is ct:
            print(f"  HU range       : {ct.array.min():g} to {ct.array.max():g}")
            if "series_list" in ct.meta:
                _print_dicom_info(ct.meta)
    if label is not None:
        table = label_table_for(label, args.label_table)
        rows = label_statistics(label, table)
        print(f"labels ({len(rows)} present, table {table.name}):")
        print(f"  names from     : {table.source}")
        print(f"  {'value':>5}  {'name':<28} {'voxels':>10} {'volume mL':>10}   bounding box RAS mm (x, y, z: min..max)"
              "   colour")
        for row in rows:
            (x0, y0, z0), (x1, y1, z1) = row["bbox_mm"]
            box = f"{x0:.1f}..{x1:.1f}  {y0:.1f}..{y1:.1f}  {z0:.1f}..{z1:.1f}"
            colour = "#" + "".join(f"{round(255 * c):02x}" for c in row["color"])
            print(f"  {row['value']:>5}  {row['name']:<28} {row['voxels']:>10} {row['volume_ml']:>10.2f}   {box:<44}"
                  f"   {colour}")
    if ct is not None and label is not None:
        for message in alignment_warnings(ct, label):
            warnings.warn(message, UserWarning, stacklevel=2)


DICOM_FIELDS = ("PatientID", "StudyDate", "Modality", "SeriesInstanceUID", "SeriesDescription", "n_slices",
                "slice_spacing", "slice_thickness", "transfer_syntax")


def _print_dicom_info(meta: dict) -> None:
    """The DICOM identity of a series; empty tags are shown as empty (PatientID groups masks by
    patient, SeriesInstanceUID is what conversion loses)."""
    for key in DICOM_FIELDS:
        value = meta.get(key, "")
        print(f"  {key:<17}: {value if value != '' else '(empty)'}")
    print(f"  series found ({len(meta['series_list'])}; pick one with --series INDEX):")
    for entry in meta["series_list"]:
        mark = "*" if entry["index"] == meta.get("series_index") else " "
        print(f"   {mark}[{entry['index']}] {entry['n_slices']:>4} slices  {entry['rows']}x{entry['columns']}  "
              f"{entry['modality'] or '-':<3} number {entry['number'] if entry['number'] is not None else '-':<4} "
              f"{entry['description'] or '(no description)'}  uid {entry['uid'] or '(empty)'}")


def _scene_for(args, console, meshes, ct, *, off_screen, interactive, size=(1024, 768), runs_on=True):
    """The scene of the command's options; ``runs_on``: the command goes on with it (a window,
    the web view, a turntable) and collects garbage again from here, unlike a screenshot."""
    from ..scene.scene import WINDOW_PRESETS, build_scene

    window = args.window
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise Viz3dError(f"unknown window preset {window!r}; choose one of {', '.join(WINDOW_PRESETS)} or give CENTER,WIDTH")
        window = WINDOW_PRESETS[window]
    scene = build_scene(
        meshes, ct, window=window, show_slices=not args.no_slices, show_bone=not getattr(args, "no_bone", False),
        view=args.view, off_screen=off_screen, size=size, interactive=interactive,
        slices=getattr(args, "slices", None), colors=getattr(args, "colors", "table"),
        names_source=_names_source(args) if any(mesh.kind == "label" for mesh in meshes) else None,
        centres=_plane_centres(args, ct, meshes),
    )
    if runs_on:
        from ..runtime import collect_garbage_again

        collect_garbage_again()
    return scene


def _plane_centres(args, ct, meshes) -> dict | None:
    """Where the structures that ``--slices`` names but that are not drawn lie: their centres in
    the label map (read again: only for such a name), or None (nothing to look up)."""
    from ..scene.scene import structure_centres, undrawn_plane_names

    names = undrawn_plane_names(getattr(args, "slices", None), meshes)
    if not names or ct is None or getattr(args, "label", None) is None:
        return None
    from ..api import load_label
    from ..io.formats import resolve_label_table

    label = load_label(args.label, reference=ct)
    return structure_centres(label, resolve_label_table(args.label_table, label.source or args.label), names)


def _names_source(args) -> str | None:
    """Where the label names came from, for the legend (`viz3d.io.labels.resolve_label_table`'s source)."""
    from ..io.formats import resolve_label_table

    if getattr(args, "label", None) is None:
        return None
    return resolve_label_table(args.label_table, args.label).source


def cmd_view(args, console) -> None:
    """Open the interactive window (needs a display), or with --web serve the scene to a browser."""
    from ..runtime import has_display

    if getattr(args, "web", False):
        cmd_view_web(args, console)
        return
    if not has_display():
        raise Viz3dError(
            "no display here (DISPLAY is not set); on a server, run `viz3d view ... --web` and open it in your "
            "laptop's browser through an SSH tunnel, or write a picture with `viz3d screenshot ... --out scene.png`"
        )
    ct, meshes = _inputs_and_meshes(args, console)
    scene = _scene_for(args, console, meshes, ct, off_screen=False, interactive=True)
    scene.show()


def cmd_screenshot(args, console) -> None:
    """Render the scene offscreen and write a PNG (with --views: a labelled multi-view sheet)."""
    from ..outputs.export import check_writable_dir
    from ..outputs.render import screenshot
    from ..runtime import configure_offscreen

    configure_offscreen()
    check_writable_dir(Path(args.out).parent if Path(args.out).parent != Path("") else Path("."))
    views = getattr(args, "views", None)
    if not str(args.out).lower().endswith(".png"):
        raise Viz3dError(f"{args.out}: screenshots are written as PNG; use a .png file name")
    size = args.size or ((640, 480) if views else (1024, 768))
    ct, meshes = _inputs_and_meshes(args, console)
    scene = _scene_for(args, console, meshes, ct, off_screen=True, interactive=False, size=size, runs_on=False)
    if views:
        from ..outputs.motion import view_sheet

        path = view_sheet(scene, args.out, views=views, size=size)
        console.say(f"wrote {path} ({len(views)} views: {', '.join(views)})")
        return
    path = screenshot(scene, args.out, size=size)
    console.say(f"wrote {path}")


def cmd_view_web(args, console) -> None:
    """Serve the interactive scene to web browsers (trame) until Ctrl-C or SIGTERM."""
    from ..runtime import configure_offscreen
    from ..outputs.web import missing_web_packages, serve

    missing = missing_web_packages()
    if missing:
        raise Viz3dError(f"the web view needs {', '.join(missing)}: pip install {' '.join(missing)}")
    configure_offscreen()
    ct, meshes = _inputs_and_meshes(args, console)
    scene = _scene_for(args, console, meshes, ct, off_screen=True, interactive=False)
    try:
        serve(scene, host=args.host, port=args.port, quiet=args.quiet)
    finally:
        scene.close()
    console.say("web view stopped")


def cmd_turntable(args, console) -> None:
    """Render one turn of the camera about a world axis and write an MP4 or GIF."""
    from ..outputs.export import check_writable_dir
    from ..outputs.motion import check_turntable, turntable
    from ..runtime import configure_offscreen

    out = Path(args.out)
    _, _, (width, height) = check_turntable(out, frames=args.frames, fps=args.fps, size=args.size,
                                            axis=args.axis)  # before any loading
    configure_offscreen()
    check_writable_dir(out.parent if out.parent != Path("") else Path("."))
    ct, meshes = _inputs_and_meshes(args, console)
    scene = _scene_for(args, console, meshes, ct, off_screen=True, interactive=False, size=args.size)
    if args.no_legend and scene.legend is not None:
        scene.legend.SetVisibility(False)
        scene.set_view(scene.view)  # refit without the legend's room
    bar = console.progress()
    try:
        path = turntable(scene, out, frames=args.frames, size=args.size, axis=args.axis, fps=args.fps,
                         progress=(lambda done, total: bar("rendering frames", done, total)) if bar else None)
    finally:
        scene.close()
    console.say(f"wrote {path} ({args.frames} frames, {width}x{height}, one turn about the {args.axis.upper()} axis)")


def cmd_export_html(args, console) -> None:
    """`export --format html`: the scene as one self-contained HTML file (vtk.js, opens offline)."""
    from ..outputs.export import check_output_folder, check_writable_dir
    from ..runtime import configure_offscreen
    from ..scene.scene import WINDOW_PRESETS
    from ..outputs.web import write_html

    unsupported = [flag for flag, given in (("--combine", args.combine), ("--coords lps", args.coords != "ras"),
                                            ("--max-triangles", args.max_triangles is not None),
                                            ("--decimate", args.decimate is not None), ("--bone-only", args.bone_only),
                                            ("--largest-component", args.largest_component)) if given]
    if unsupported:
        raise Viz3dError(f"{', '.join(unsupported)}: not for --format html (the page shows the scene as viz3d draws it)")
    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        out = check_output_folder(args.out) / "scene.html"  # --out names a folder (not '' nor /): the page goes in it
    folder = out.parent if out.parent != Path("") else Path(".")
    check_writable_dir(folder)
    window = getattr(args, "window", None) or "soft"
    if isinstance(window, str):
        window = WINDOW_PRESETS.get(window, WINDOW_PRESETS["soft"])
    configure_offscreen()
    ct, meshes = _inputs_and_meshes(args, console)
    if not meshes and ct is None:
        raise Viz3dError("nothing to export: no label of the selection is present and no CT")
    folder.mkdir(parents=True, exist_ok=True)
    path = write_html(meshes, ct, out, window=window, view=getattr(args, "view", None) or "iso",
                      show_slices=not getattr(args, "no_slices", False), slices=getattr(args, "slices", None),
                      colors=getattr(args, "colors", None) or "table", centres=_plane_centres(args, ct, meshes),
                      names_source=_names_source(args) if any(mesh.kind == "label" for mesh in meshes) else None)
    console.say(f"wrote {path} ({len(meshes)} surfaces{', CT planes' if ct is not None else ''}; opens offline in a browser)")


def cmd_export(args, console) -> None:
    """Write each structure's checked, repaired surface (or one combined file) and manifest.json."""
    from ..outputs.export import check_existing_export, check_writable_dir, export_meshes, export_settings

    if args.format == "html":
        cmd_export_html(args, console)
        return
    page_only = [flag for flag, given in (("--window", args.window is not None), ("--view", args.view is not None),
                                          ("--no-slices", args.no_slices), ("--slices", args.slices is not None),
                                          ("--colors", args.colors is not None)) if given]
    if page_only:
        raise Viz3dError(f"{', '.join(page_only)}: only for --format html (mesh files carry no view, window or planes)")
    if args.bone_only:
        if args.no_bone:
            raise Viz3dError("--bone-only and --no-bone exclude each other")
        if args.labels:
            raise Viz3dError("--bone-only exports no label surfaces: leave out --labels")
        if args.ct is None:
            raise Viz3dError("--bone-only needs a CT: the bone surface comes from the CT's Hounsfield units")
        args.label = None  # not loaded: no label surface is wanted
    from ..io.formats import resolve_label_table
    from ..surfaces.meshing import DEFAULT_BONE_HU

    meshing = {"labels": args.labels, "bone": arguments.bone_wanted(args), "bone_only": args.bone_only,
               "bone_hu": DEFAULT_BONE_HU if args.bone_hu is None else args.bone_hu,
               "label_table": args.label_table, "smoothing": 0.0 if args.no_smooth else args.smoothing,
               "method": args.method, "label_table_source": resolve_label_table(args.label_table, args.label).source}
    options = dict(format=args.format, coords=args.coords, combine=args.combine, max_triangles=args.max_triangles,
                   decimate=args.decimate, smooth=not args.no_smooth, largest_component=args.largest_component)
    settings = export_settings(**options, extra=meshing)
    check_writable_dir(args.out)
    check_existing_export(args.out, settings, force=args.force)  # before the (long) meshing
    _, meshes = _inputs_and_meshes(args, console, for_scene=False)
    if not meshes:
        raise Viz3dError("nothing to export: no label of the selection is present and no bone surface")
    manifest = export_meshes(meshes, args.out, **options, settings=meshing, force=args.force, progress=console.progress())
    for entry in manifest["meshes"]:
        if entry["repairs"]:
            console.say(f"{entry['name']}: repaired ({'; '.join(entry['repairs'])})")
        if not entry["printable"]:
            warnings.warn(f"{entry['name']} ({entry['file']}) is NOT printable: {'; '.join(entry['problems'])}",
                          UserWarning, stacklevel=2)
    files = sorted({entry["file"] for entry in manifest["meshes"]})
    what = f"{files[0]} ({len(manifest['meshes'])} parts)" if args.combine else f"{len(files)} {args.format.upper()} files"
    console.say(f"wrote {what} and manifest.json to {args.out} ({manifest['coordinate_system']} mm)")


def cmd_slice(args, console) -> None:
    """Write the 2-D slice picture (or with --mosaic a sheet of slices) as a PNG."""
    from ..outputs.slice2d import check_output, save_slice_summary

    check_output(args.out)  # before loading
    ct, label = _load_inputs(args, console)
    path, summary = save_slice_summary(args.out, ct, label, args.label_table, mosaic=args.mosaic, plane=args.plane,
                                       at=args.at, window=args.window, opacity=args.opacity, outline=args.outline,
                                       size=args.size)
    console.say(f"wrote {path} ({summary})")


def demo_paths() -> tuple[Path, Path]:
    """The shipped real sample: (CT, label map)."""
    from importlib.resources import files

    folder = files("viz3d") / "data" / "demo"
    return Path(str(folder / "ct.nii.gz")), Path(str(folder / "label.nii.gz"))


def cmd_demo(args, console) -> None:
    """The shipped sample with TotalSegmentator names: the window, or a PNG without a display."""
    from ..runtime import has_display

    ct_path, label_path = demo_paths()
    scene_args = argparse.Namespace(
        ct=str(ct_path), label=str(label_path), label_table="totalsegmentator", labels=None, bone_hu=200.0,
        no_bone=False, no_smooth=False, smoothing=DEFAULT_SMOOTHING, method=DEFAULT_METHOD, window="soft", view="iso",
        no_slices=False,
        quiet=True,
    )
    if has_display():
        cmd_view(scene_args, console)
        return
    scene_args.out, scene_args.size = args.out, (1024, 768)
    cmd_screenshot(scene_args, _Console(quiet=True))
    if not args.quiet:
        print(f"viz3d: no display here, so the demo (a real CT with 41 labelled structures and bone) was rendered "
              f"offscreen to {args.out}; copy it to your laptop to look at it, or serve the interactive scene to your "
              "browser with "
              f"`viz3d view --web` (see `viz3d view --help`)")


COMMANDS = {"info": cmd_info, "view": cmd_view, "screenshot": cmd_screenshot, "export": cmd_export, "demo": cmd_demo,
            "turntable": cmd_turntable, "slice": cmd_slice, "batch": cmd_batch}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 internal error)."""
    from ..runtime import command_line_warnings, discard_stdout

    with command_line_warnings():
        try:
            args = make_parser().parse_args(argv)
            COMMANDS[args.command](args, _Console(getattr(args, "quiet", False)))
        except Viz3dError as exc:
            print(f"viz3d: error: {exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # output piped into `head` and closed early: not an error
            discard_stdout()
            return 0
        except KeyboardInterrupt:
            print("viz3d: interrupted", file=sys.stderr)
            return 130
        except MemoryError:
            print("viz3d: error: out of memory", file=sys.stderr)
            return 2
        except Exception as exc:  # a bug, not bad input: still one line unless asked for the traceback
            if os.environ.get("VIZ3D_DEBUG"):
                raise
            print(f"viz3d: error: internal error: {type(exc).__name__}: {exc} (set VIZ3D_DEBUG=1 for the traceback)",
                  file=sys.stderr)
            return 1
    return 0


def main_entry() -> None:
    """Console-script entry point (and ``python -m viz3d``): `main` in a process of its own, with
    `viz3d.runtime`'s process settings and speed-ups (`viz3d.runtime.enter_command_line`).

    The process ends without tearing itself down once every output is in place.
    """
    # before numpy loads: `import viz3d.cli.main` imports no numpy (the package imports lazily)
    from ..runtime import enter_command_line, exit_at_once

    enter_command_line()
    exit_at_once(main())
