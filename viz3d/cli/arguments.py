"""The command line's argument types and shared option groups: each checks its text and turns it
into a value, or raises argparse's usage error, which `Parser` makes one `viz3d: error:` line.

Cheap to import (no numpy): the command line's ``--help`` stays fast.
"""
from __future__ import annotations

import argparse

from ..errors import Viz3dError
from ..scene.views import VIEWS

DEFAULT_SMOOTHING, DEFAULT_METHOD = 0.5, "flying-edges"  # as viz3d.surfaces.meshing's (not imported here: --help stays fast)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, like every other viz3d error."""

    def error(self, message):
        raise Viz3dError(message)


def label_selection(text: str) -> str:
    """--labels: values, ranges and names (``1,3-5``, ``L1-L5,sacrum``), checked here, resolved
    with the label table once it is known (`viz3d.io.labels.select_labels`)."""
    from ..io.labels import parse_label_selection

    try:
        return parse_label_selection(text)
    except Viz3dError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bone_wanted(args) -> bool:
    """Whether the command builds the bone surface: not with --no-bone, and with a --labels
    selection only if --bone asks for it. Refuses --bone with --no-bone, and --labels without a label map."""
    bone, no_bone, labels = getattr(args, "bone", False), getattr(args, "no_bone", False), getattr(args, "labels", None)
    if bone and no_bone:
        raise Viz3dError("--bone and --no-bone exclude each other")
    if labels and getattr(args, "label", None) is None and not getattr(args, "bone_only", False):
        raise Viz3dError(f"--labels {labels}: selects label surfaces, but no label map is given (--label LABEL)")
    return not no_bone and (not labels or bone)


def size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 1024x768, got {text!r}") from None
    if not (16 <= width <= 8192 and 16 <= height <= 8192):
        raise argparse.ArgumentTypeError(f"size must be between 16 and 8192 pixels per side, got {text!r}")
    return width, height


def port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number such as 8080, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 0 and 65535 (0: any free port), got {text!r}")
    return port


def bounded(text: str, what: str, example: str, low: float, high: float, inclusive: bool = True) -> float:
    """``text`` as a number from ``low`` to ``high`` (NaN never is), or a usage error naming ``what``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} such as {example}, got {text!r}") from None
    inside = low <= value <= high if inclusive else low < value < high
    if not inside:
        raise argparse.ArgumentTypeError(f"{what} must be from {low:g} to {high:g}, got {text!r}")
    return value


def hu(text: str) -> float:
    return bounded(text, "a bone threshold in HU", "200", -1e6, 1e6, inclusive=False)


def smoothing(text: str) -> float:
    return bounded(text, "a smoothing factor (0: raw marching cubes, 1: strongest)", "0.5", 0.0, 1.0)


def view_list(text: str) -> list[str]:
    views = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [v for v in views if v not in VIEWS]
    if not views or unknown:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated views from {','.join(VIEWS)}, got {text!r}")
    return views


def window(text: str):
    """--window: a preset name in any case (soft, BONE) or CENTER,WIDTH / CENTER/WIDTH (40,400 or 40/400)."""
    separator = "," if "," in text else "/" if "/" in text else None
    if separator:
        try:
            center, width = (float(part) for part in text.split(separator))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a window as CENTER,WIDTH or CENTER/WIDTH such as 40,400 or 40/400, "
                                             f"got {text!r}") from None
        if not width > 0:  # NaN too
            raise argparse.ArgumentTypeError(f"window width must be positive, got {text!r}")
        if not (-1e6 < center < 1e6 and width < 1e6):
            raise argparse.ArgumentTypeError(f"window centre and width must be finite numbers of HU, got {text!r}")
        return center, width
    return text.strip().lower()


def add_inputs(parser, *, ct_required=False):
    parser.add_argument("ct", nargs=None if ct_required else "?", metavar="CT",
                        help="CT as NIfTI (.nii / .nii.gz), NRRD, MetaImage, or a DICOM folder / file")
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


def add_mesh_options(parser, *, bone_switch=True):
    parser.add_argument("--labels", type=label_selection, metavar="1,3-5,L1-L5,liver",
                        help="only these structures: values, ranges and names of the label table (any case; a range of "
                        "names holds the table's values between them); leaves out the bone surface unless --bone")
    parser.add_argument("--bone-hu", type=hu, default=None, metavar="N",
                        help="bone threshold in HU (default 200; a series that is not CT, e.g. MR, gets no bone surface "
                        "unless this is given)")
    if bone_switch:
        parser.add_argument("--no-bone", action="store_true", help="no bone surface")
        parser.add_argument("--bone", action="store_true", help="the bone surface too with a --labels selection")
    parser.add_argument("--smoothing", type=smoothing, default=DEFAULT_SMOOTHING, metavar="F",
                        help="surface smoothing from 0 (raw marching cubes) to 1, 3D Slicer's factor (default 0.5: "
                        "pass band 0.01, 40 iterations); the voxel volume is kept")
    parser.add_argument("--method", choices=("flying-edges", "surface-nets", "lewiner"), default=DEFAULT_METHOD,
                        help="surface extractor: VTK flying edges with shape-based interpolation between thick slices "
                        "(default), VTK surface nets, or scikit-image's Lewiner marching cubes")
    parser.add_argument("--no-smooth", action="store_true", help="raw marching-cubes surfaces: the same as --smoothing 0")
    parser.add_argument("--no-cache", action="store_true", help="rebuild meshes even if this input was meshed before")


def add_scene_options(parser):
    parser.add_argument("--window", type=window, default="soft", metavar="PRESET|C,W",
                        help="soft (40,400, default), bone, lung, brain, or CENTER,WIDTH")
    parser.add_argument("--view", choices=VIEWS, default="anterior", help="camera preset (default anterior)")
    parser.add_argument("--no-slices", action="store_true", help="hide the three CT slice planes")
    parser.add_argument("--slices", default=None, metavar="AXIS=POS,...",
                        help="where the CT planes go, e.g. axial=120,coronal=off,sagittal=i40: mm (RAS), iN (voxel index), "
                        "off, auto (default: behind the drawn surfaces as the camera sees them, or edge-on through them) "
                        "or a structure's name (axial=L3: through its centre, drawn or not)")
    parser.add_argument("--colors", choices=("table", "distinct"), default="table",
                        help="table (default: the table's colours; ones too close to tell apart are replaced, with a "
                        "warning unless they are viz3d's generated ones) or distinct (a perceptually distinct palette "
                        "for every structure)")
