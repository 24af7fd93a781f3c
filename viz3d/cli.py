"""The `viz3d` command line: parses arguments and calls the API; errors become one line and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .errors import Viz3dError

VIEWS = ("anterior", "posterior", "left", "right", "superior", "inferior", "iso")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other viz3d error."""

    def error(self, message):
        raise Viz3dError(message)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated label values such as 1,2,7, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"label values must be positive integers, got {text!r}")
    return values


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 1024x768, got {text!r}") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"size must be between 16 and 8192 pixels per side, got {text!r}")
    return width, height


def _window(text: str):
    if "," in text:
        try:
            center, width = (float(part) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a window as CENTER,WIDTH such as 40,400, got {text!r}") from None
        if width <= 0:
            raise argparse.ArgumentTypeError(f"window width must be positive, got {text!r}")
        return center, width
    return text.lower()


def _add_inputs(parser, *, ct_required=False):
    parser.add_argument("ct", nargs=None if ct_required else "?", metavar="CT", help="CT as NIfTI (.nii / .nii.gz) or a DICOM folder / file")
    parser.add_argument(
        "--series", metavar="S", default=None,
        help="DICOM folder with several series: index (as `info` lists them), SeriesInstanceUID, number:N or index:N "
        "(default: the one with most slices)",
    )
    parser.add_argument("--label", metavar="LABEL", help="label map (NIfTI of integer class values)")
    parser.add_argument(
        "--label-table", metavar="T", default=None,
        help="names and colours: spinopelvic10 (default), totalsegmentator, or a JSON / ITK-SNAP / Slicer colour-table file",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress or status lines")


def _add_mesh_options(parser, *, bone_switch=True):
    parser.add_argument("--labels", type=_int_list, metavar="1,2,7", help="only these label values")
    parser.add_argument("--bone-hu", type=float, default=200.0, metavar="N", help="bone threshold in HU (default 200)")
    if bone_switch:
        parser.add_argument("--no-bone", action="store_true", help="no bone surface")
    parser.add_argument("--no-smooth", action="store_true", help="raw marching-cubes surfaces, no smoothing")


def _add_scene_options(parser):
    parser.add_argument("--window", type=_window, default="soft", metavar="PRESET|C,W", help="soft (40,400, default), bone, lung, brain, or CENTER,WIDTH")
    parser.add_argument("--view", choices=VIEWS, default="anterior", help="camera preset (default anterior)")
    parser.add_argument("--no-slices", action="store_true", help="hide the three CT slice planes")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser for all sub-commands."""
    parser = _Parser(prog="viz3d", description="A CT and its segmentation in 3-D: surfaces, slices, screenshots, STL.")
    parser.add_argument("--version", action="version", version=f"viz3d {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    info = commands.add_parser("info", help="shape, voxel size, orientation, HU range, label volumes")
    _add_inputs(info)

    view = commands.add_parser("view", help="the interactive 3-D window")
    _add_inputs(view)
    _add_mesh_options(view)
    _add_scene_options(view)

    shot = commands.add_parser("screenshot", help="render the scene offscreen to a PNG")
    _add_inputs(shot)
    _add_mesh_options(shot)
    _add_scene_options(shot)
    shot.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    shot.add_argument("--size", type=_size, default=(1024, 768), metavar="WxH", help="image size (default 1024x768)")

    export = commands.add_parser("export", help="binary STL per structure + manifest.json")
    _add_inputs(export)
    _add_mesh_options(export)
    export.add_argument("--out", required=True, metavar="DIR", help="output folder")

    demo = commands.add_parser("demo", help="the shipped real sample: window, or viz3d-demo.png without a display")
    demo.add_argument("--out", default="viz3d-demo.png", metavar="PNG", help="PNG written when there is no display")
    demo.add_argument("--quiet", "-q", action="store_true", help="no progress or status lines")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


class _Console:
    """Status lines and progress bars on stderr; silent with --quiet or when not a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"viz3d: {text}", file=sys.stderr)

    def progress(self, description: str):
        if self.quiet or not self.tty:
            return None
        from tqdm import tqdm

        bar = tqdm(desc=description, unit="mesh", file=sys.stderr, leave=False)

        def update(done, total, name):
            bar.total = total
            bar.set_postfix_str(name[:30], refresh=False)
            bar.update(done - bar.n)
            if done == total:
                bar.close()

        return update


def _load_inputs(args):
    from .api import load_ct, load_label

    if args.ct is None and args.label is None:
        raise Viz3dError("give a CT, --label LABEL, or both")
    ct = load_ct(args.ct, series=getattr(args, "series", None)) if args.ct else None
    label = load_label(args.label) if args.label else None
    return ct, label


def _meshes(args, console, ct, label, table):
    from .api import build_meshes

    return build_meshes(
        ct, label, table=table, labels=args.labels, bone=not args.no_bone, bone_hu=args.bone_hu,
        smooth=not args.no_smooth, progress=console.progress("meshing"),
    )


def cmd_info(args, console) -> None:
    """Print what the tutorial prints by hand, for the CT and the label map."""
    import numpy as np

    from .api import alignment_warnings, label_statistics
    from .labels import load_label_table

    table = load_label_table(args.label_table)
    ct, label = _load_inputs(args)
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
        rows = label_statistics(label, table)
        print(f"labels ({len(rows)} present, table {table.name}):")
        print(f"  {'value':>5}  {'name':<28} {'voxels':>10} {'volume mL':>10}")
        for row in rows:
            print(f"  {row['value']:>5}  {row['name']:<28} {row['voxels']:>10} {row['volume_ml']:>10.2f}")
    if ct is not None and label is not None:
        for message in alignment_warnings(ct, label):
            warnings.warn(message, UserWarning)


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


def _scene_for(args, console, meshes, ct, *, off_screen, interactive, size=(1024, 768)):
    from .scene import WINDOW_PRESETS, build_scene

    window = args.window
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise Viz3dError(f"unknown window preset {window!r}; choose one of {', '.join(WINDOW_PRESETS)} or give CENTER,WIDTH")
        window = WINDOW_PRESETS[window]
    return build_scene(
        meshes, ct, window=window, show_slices=not args.no_slices, show_bone=not getattr(args, "no_bone", False),
        view=args.view, off_screen=off_screen, size=size, interactive=interactive,
    )


def cmd_view(args, console) -> None:
    """Open the interactive window (needs a display)."""
    from .render import has_display

    if not has_display():
        raise Viz3dError("no display here (DISPLAY is not set); use `viz3d screenshot ... --out scene.png` on a headless server")
    ct, label = _load_inputs(args)
    meshes = _meshes(args, console, ct, label, args.label_table)
    scene = _scene_for(args, console, meshes, ct, off_screen=False, interactive=True)
    scene.show()


def cmd_screenshot(args, console) -> None:
    """Render the scene offscreen and write a PNG."""
    from .export import check_writable_dir
    from .render import configure_offscreen, screenshot

    configure_offscreen()
    check_writable_dir(Path(args.out).parent if Path(args.out).parent != Path("") else Path("."))
    ct, label = _load_inputs(args)
    meshes = _meshes(args, console, ct, label, args.label_table)
    scene = _scene_for(args, console, meshes, ct, off_screen=True, interactive=False, size=args.size)
    path = screenshot(scene, args.out, size=args.size)
    console.say(f"wrote {path}")


def cmd_export(args, console) -> None:
    """Write one binary STL per structure and manifest.json."""
    from .export import check_writable_dir, export_meshes

    check_writable_dir(args.out)
    ct, label = _load_inputs(args)
    meshes = _meshes(args, console, ct, label, args.label_table)
    if not meshes:
        raise Viz3dError("nothing to export: no label of the selection is present and no bone surface")
    manifest = export_meshes(meshes, args.out)
    console.say(f"wrote {len(manifest['meshes'])} meshes and manifest.json to {args.out}")


def demo_paths() -> tuple[Path, Path]:
    """The shipped real sample: (CT, label map)."""
    from importlib.resources import files

    folder = files("viz3d") / "data" / "demo"
    return Path(str(folder / "ct.nii.gz")), Path(str(folder / "label.nii.gz"))


def cmd_demo(args, console) -> None:
    """The shipped sample with TotalSegmentator names: the window, or a PNG without a display."""
    from .render import has_display

    ct_path, label_path = demo_paths()
    scene_args = argparse.Namespace(
        ct=str(ct_path), label=str(label_path), label_table="totalsegmentator", labels=None, bone_hu=200.0,
        no_bone=False, no_smooth=False, window="soft", view="iso", no_slices=False, quiet=True,
    )
    if has_display():
        cmd_view(scene_args, console)
        return
    scene_args.out, scene_args.size = args.out, (1024, 768)
    cmd_screenshot(scene_args, _Console(quiet=True))
    if not args.quiet:
        print(f"viz3d: no display here, so the demo (a real CT with 41 labelled structures and bone) was rendered "
              f"offscreen to {args.out}; copy it to your laptop to look at it, or try `viz3d view --help`")


COMMANDS = {"info": cmd_info, "view": cmd_view, "screenshot": cmd_screenshot, "export": cmd_export, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 1 internal error)."""
    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"viz3d: warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning
    try:
        args = make_parser().parse_args(argv)
        COMMANDS[args.command](args, _Console(getattr(args, "quiet", False)))
    except Viz3dError as exc:
        print(f"viz3d: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")
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
        print(f"viz3d: error: internal error: {type(exc).__name__}: {exc} (set VIZ3D_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
