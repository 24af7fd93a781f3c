"""Which cases a dataset holds: its layout, each case's CT and label map, and what was skipped.

Four layouts are read (`LAYOUTS`), detected from what ROOT holds or named by the user:

- ``nnunet``: ``imagesTr/{case}_0000.nii.gz`` with ``labelsTr/{case}.nii.gz`` (and
  ``imagesTs/`` with ``labelsTs/`` when it exists); the names come from the ``dataset.json``
  beside them, which viz3d's label-table lookup finds by itself;
- ``ctspinopelvic``: the CTSpinoPelvic1K layout, ``ct/{id}_ct.nii.gz`` with
  ``labels/{id}_label.nii.gz``;
- ``folders``: a folder per case holding a CT (a NIfTI, NRRD or MetaImage file, or a DICOM
  folder) and a label: a label map in any of those formats (named ``*label*``, ``*seg*``,
  ``*mask*``...), a 3D Slicer ``.seg.nrrd``, a DICOM SEG or RTSTRUCT file (beside the CT or in
  a folder of its own), or a folder of NIfTI masks (TotalSegmentator's);
- ``manifest``: a CSV or TSV file with a case id, a CT path and a label path per row
  (pyradiomics' ``Image`` / ``Mask`` columns too), each in any format viz3d reads; its other
  columns go to the summary.

Nothing here reads an image: discovery only lists files (and reads the file meta of a few
DICOM files per case folder, to tell a SEG or RTSTRUCT from a CT slice), so ``viz3d batch ROOT
--list`` is quick on a thousand cases.
"""
from __future__ import annotations

import csv
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Viz3dError

LAYOUTS = ("nnunet", "ctspinopelvic", "folders", "manifest")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".nhdr", ".mha", ".mhd")  # a CT or a label map, one file
MANIFEST_SUFFIXES = (".csv", ".tsv")
# manifest columns, compared in lower case with spaces, dashes and dots as underscores
ID_COLUMNS = ("case", "case_id", "caseid", "id", "subject", "subject_id", "patient", "patient_id", "name")
CT_COLUMNS = ("ct", "ct_path", "image", "image_path", "img", "volume", "scan")
LABEL_COLUMNS = ("label", "label_path", "labels", "mask", "mask_path", "seg", "segmentation", "label_map")
# folder-per-case: words in a file's name that say it is the label map, or the CT
LABEL_WORDS = ("label", "labels", "seg", "segmentation", "segmentations", "mask", "gt", "annotation")
DICOM_LABEL_WORDS = LABEL_WORDS + ("rs", "rtstruct", "rtss", "struct", "structures")  # names SEG / RTSTRUCT files go by
DICOM_PEEK = 20  # a DICOM folder's first files whose file meta is read (with any named like a SEG or RTSTRUCT)
CT_WORDS = ("ct", "image", "img", "scan", "volume", "vol")


@dataclass(frozen=True)
class Case:
    """One case of a dataset: its id (the output folder's name), CT and label map.

    ``ct`` or ``label`` may be None (a test image without its label map), not both. ``extra``
    holds a manifest row's other columns, as ``(column, value)`` pairs, for the summary.
    """

    id: str
    ct: Path | None
    label: Path | None
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Skipped:
    """A file or row discovery passed over, and why, in words."""

    path: str
    why: str


@dataclass(frozen=True)
class Discovery:
    """What `discover` found: the layout, the cases in id order, and what was skipped."""

    layout: str
    root: Path
    cases: tuple[Case, ...]
    skipped: tuple[Skipped, ...] = field(default=())


def nifti_stem(name: str) -> str | None:
    """A NIfTI file name without ``.nii`` / ``.nii.gz``, or None for another file.

    >>> nifti_stem("case_001_0000.nii.gz"), nifti_stem("notes.txt")
    ('case_001_0000', None)
    """
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def image_stem(name: str) -> str | None:
    """A one-file image's name (NIfTI, NRRD, MetaImage) without its suffix, or None for another file.

    >>> image_stem("ct.mha"), image_stem("Segmentation.seg.nrrd"), image_stem("raw.zraw")
    ('ct', 'Segmentation.seg', None)
    """
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def safe_case_id(text: str) -> str:
    """A case id usable as a folder name: letters, digits, ``.``, ``_`` and ``-``, no ``..``.

    >>> safe_case_id("patient 7/scan"), safe_case_id("../x")
    ('patient_7_scan', 'x')
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text).strip())
    stem = re.sub(r"\.{2,}", "_", stem)
    return re.sub(r"_+", "_", stem).strip("._-")[:120]


def detect_layout(root: str | os.PathLike) -> str:
    """The layout of ``root``, from what it holds (see the module's docstring).

    Raises
    ------
    Viz3dError
        When ``root`` does not exist or matches no layout; the message says what was looked for.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "imagesTr").mkdir()
    >>> detect_layout(root)
    'nnunet'
    """
    root = Path(root)
    if root.is_file():
        if root.name.lower().endswith(MANIFEST_SUFFIXES):
            return "manifest"
        raise Viz3dError(f"{root}: a file that is not a .csv or .tsv manifest; give a dataset folder or a manifest")
    if not root.is_dir():
        raise Viz3dError(f"{root}: no such file or folder")
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
        return "nnunet"
    if (root / "ct").is_dir() and (root / "labels").is_dir():
        return "ctspinopelvic"
    if any(entry.is_dir() and not entry.name.startswith(".") for entry in root.iterdir()):
        return "folders"
    raise Viz3dError(
        f"{root}: cannot tell the dataset's layout (no imagesTr/ or imagesTs/ (nnU-Net), no ct/ + labels/ "
        "(CTSpinoPelvic1K), no case folders); name it with --layout, or give a CSV/TSV manifest")


def discover(root: str | os.PathLike, layout: str | None = None) -> Discovery:
    """The cases in ``root`` and the files skipped, with why; ``layout`` None: `detect_layout`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for folder in ("ct", "labels"):
    ...     (root / folder).mkdir()
    >>> _ = (root / "ct" / "s01_ct.nii.gz").write_bytes(b"")
    >>> _ = (root / "labels" / "s01_label.nii.gz").write_bytes(b"")
    >>> _ = (root / "ct" / "s02_ct.nii.gz").write_bytes(b"")
    >>> found = discover(root)
    >>> found.layout, [case.id for case in found.cases]
    ('ctspinopelvic', ['s01'])
    >>> found.skipped[0].why
    'no label map labels/s02_label.nii.gz'
    """
    root = Path(root)
    chosen = detect_layout(root) if layout is None else str(layout).lower()
    if chosen not in LAYOUTS:
        raise Viz3dError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if chosen == "manifest":
        if not root.is_file():
            raise Viz3dError(f"{root}: --layout manifest needs a .csv or .tsv file")
    elif not root.is_dir():
        raise Viz3dError(f"{root}: --layout {chosen} needs a dataset folder" if root.exists()
                         else f"{root}: no such file or folder")
    needed = {"nnunet": ("imagesTr", "imagesTs"), "ctspinopelvic": ("ct",)}.get(chosen, ())
    if needed and not any((root / name).is_dir() for name in needed):
        raise Viz3dError(f"{root}: no {' or '.join(name + '/' for name in needed)} folder, as the {chosen} layout has")
    reader = {"nnunet": _nnunet, "ctspinopelvic": _ctspinopelvic, "folders": _folders, "manifest": _manifest}[chosen]
    cases, skipped = reader(root)
    cases, clashes = _unique(cases)
    return Discovery(chosen, root, tuple(sorted(cases, key=lambda c: c.id)), tuple(skipped + clashes))


def select_cases(cases, patterns: str | None) -> list[Case]:
    """The cases whose id matches one of ``patterns`` (comma-separated ids or shell globs).

    Raises
    ------
    Viz3dError
        When a pattern matches no case (a typo should not silently run nothing).

    Examples
    --------
    >>> cases = [Case(name, None, Path(name)) for name in ("s01", "s02", "t01")]
    >>> [c.id for c in select_cases(cases, "s*")]
    ['s01', 's02']
    >>> [c.id for c in select_cases(cases, "t01,s02")]
    ['s02', 't01']
    """
    cases = list(cases)
    if patterns is None:
        return cases
    terms = [term.strip() for term in str(patterns).split(",") if term.strip()]
    if not terms:
        raise Viz3dError(f"--cases {patterns!r}: give case ids or patterns such as s01,s1*")
    unmatched = [term for term in terms if not any(fnmatch.fnmatchcase(case.id, term) for case in cases)]
    if unmatched:
        known = ", ".join(case.id for case in cases[:5]) + (", ..." if len(cases) > 5 else "")
        raise Viz3dError(f"--cases: no case matches {', '.join(unmatched)} (cases: {known or 'none'})")
    return [case for case in cases if any(fnmatch.fnmatchcase(case.id, term) for term in terms)]


# --------------------------------------------------------------------------- the layouts


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _visible_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _nnunet(root: Path) -> tuple[list[Case], list[Skipped]]:
    cases, skipped = [], []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        label_dir = root / labels
        used = set()
        for path in _visible_files(root / images):
            stem = nifti_stem(path.name)
            where = _relative(path, root)
            match = re.fullmatch(r"(.+)_(\d{4})", stem or "")
            if stem is None or path.is_dir():
                skipped.append(Skipped(where, "not a NIfTI file (.nii or .nii.gz)"))
            elif match is None:
                skipped.append(Skipped(where, "not named {case}_0000.nii.gz (nnU-Net's channel suffix missing)"))
            elif match.group(2) != "0000":
                skipped.append(Skipped(where, f"channel {match.group(2)}: viz3d meshes channel 0000, the CT"))
            else:
                case = match.group(1)
                label = _nifti_named(label_dir, case)
                if label is None and label_dir.is_dir():
                    skipped.append(Skipped(where, f"no label map {labels}/{case}.nii.gz"))
                    continue
                used.add(label.name if label else None)
                cases.append(Case(case, path, label))  # imagesTs without labelsTs: the CT alone
        for path in _visible_files(label_dir):
            if path.name not in used:
                stem = nifti_stem(path.name)
                skipped.append(Skipped(_relative(path, root), f"no image {images}/{stem}_0000.nii.gz" if stem
                                       else "not a NIfTI file (.nii or .nii.gz)"))
    return cases, skipped


def _nifti_named(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _ctspinopelvic(root: Path) -> tuple[list[Case], list[Skipped]]:
    cases, skipped, used = [], [], set()
    for path in _visible_files(root / "ct"):
        stem = nifti_stem(path.name)
        where = _relative(path, root)
        if stem is None or path.is_dir():
            skipped.append(Skipped(where, "not a NIfTI file (.nii or .nii.gz)"))
        elif not stem.endswith("_ct"):
            skipped.append(Skipped(where, "not named {id}_ct.nii.gz"))
        else:
            case = stem[: -len("_ct")]
            label = _nifti_named(root / "labels", f"{case}_label")
            if label is None:
                skipped.append(Skipped(where, f"no label map labels/{case}_label.nii.gz"))
            else:
                used.add(label.name)
                cases.append(Case(case, path, label))
    for path in _visible_files(root / "labels"):
        if path.name not in used:
            stem = nifti_stem(path.name) or path.name
            why = (f"no CT ct/{stem[: -len('_label')]}_ct.nii.gz" if stem.endswith("_label")
                   else "not named {id}_label.nii.gz")
            skipped.append(Skipped(_relative(path, root), why))
    return cases, skipped


def _words(stem: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", stem.lower())) - {""}


def _dicom_kind(path: Path) -> str | None:
    """``"segmentation"`` for a DICOM SEG or RTSTRUCT file, ``"image"`` for another DICOM file
    (``.dcm`` or the 'DICM' preamble), None for anything else (only its file meta is read)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    if head[128:132] != b"DICM":
        return "image" if path.name.lower().endswith(".dcm") else None
    from ..io.dicom_seg import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASS, sop_class_of

    return "segmentation" if sop_class_of(path, head) in (SEG_SOP_CLASS, RTSTRUCT_SOP_CLASS) else "image"


def _folder_contents(folder: Path) -> tuple[bool, bool, list[Path]]:
    """What a folder in a case folder holds: (DICOM image slices, NIfTI masks only, the SEG and
    RTSTRUCT files in it). Its first `DICOM_PEEK` files are looked at, and any file named like a
    SEG or RTSTRUCT (``RS*.dcm``, ``*seg*``: a PACS export puts the RTSTRUCT beside the slices)."""
    files = [path for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(".")]
    named = [path for path in files[DICOM_PEEK:] if _words(path.name) & set(DICOM_LABEL_WORDS)]
    images, segmentations = False, []
    for path in files[:DICOM_PEEK] + named:
        kind = None if nifti_stem(path.name) else _dicom_kind(path)
        if kind == "segmentation":
            segmentations.append(path)
        elif kind == "image":
            images = True
    masks = bool(files) and all(nifti_stem(path.name) for path in files)  # TotalSegmentator: 117 of them
    return images, masks, segmentations


def _folders(root: Path) -> tuple[list[Case], list[Skipped]]:
    cases, skipped = [], []
    for folder in _visible_files(root):
        where = _relative(folder, root)
        if not folder.is_dir():
            skipped.append(Skipped(where, "a file beside the case folders (each case is a folder)"))
            continue
        ct, label, why = _case_files(folder)
        if why:
            skipped.append(Skipped(where, why))
        else:
            cases.append(Case(folder.name, ct, label))
    return cases, skipped


def _case_files(folder: Path) -> tuple[Path | None, Path | None, str]:
    """(CT, label, '') of one case folder, or (None, None, why)."""
    entries = _visible_files(folder)
    files = [p for p in entries if p.is_file() and image_stem(p.name)]
    labels = [p for p in files if _words(image_stem(p.name)) & set(LABEL_WORDS)]
    labels += [p for p in entries if p.is_file() and not image_stem(p.name) and _dicom_kind(p) == "segmentation"]
    images = [p for p in files if p not in labels]
    dicoms = []
    for sub in (p for p in entries if p.is_dir()):
        slices, masks, segmentations = _folder_contents(sub)
        dicoms += [sub] if slices else []
        labels += [sub] if masks else segmentations
    if len(labels) > 1:
        return None, None, f"several label maps ({', '.join(_relative(p, folder) for p in labels)}): keep one per case folder"
    if not labels and len(images) == 2 and not dicoms:  # no name says which: one named like a CT
        cts = [p for p in images if _words(image_stem(p.name)) & set(CT_WORDS)]
        if len(cts) == 1:
            labels, images = [p for p in images if p is not cts[0]], cts
    if not labels:
        return None, None, ("no label map (an image named *label*, *seg*, *mask*..., a SEG or RTSTRUCT, "
                             "a mask folder)" if files or dicoms else "no image file (NIfTI, NRRD, MetaImage) or DICOM folder")
    candidates = images + dicoms
    if not candidates:  # (an RTSTRUCT's series is not looked for in the other cases' folders)
        return None, None, f"no CT beside {labels[0].name} (a NIfTI, NRRD or MetaImage file, or a DICOM folder)"
    if len(candidates) > 1:
        return None, None, f"several CTs ({', '.join(p.name for p in candidates)}): keep one per case folder"
    return candidates[0], labels[0], ""


def _column(names: dict[str, str], wanted: tuple[str, ...]) -> str | None:
    return next((names[key] for key in wanted if key in names), None)


def _manifest(path: Path) -> tuple[list[Case], list[Skipped]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Viz3dError(f"{path}: cannot read the manifest ({getattr(exc, 'strerror', None) or exc})") from None
    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    header = [column for column in (rows[0].keys() if rows else next(csv.reader(text.splitlines()[:1], delimiter=delimiter), []))
              if column is not None]
    names = {re.sub(r"[\s.-]+", "_", column.strip().lower()): column for column in header}
    id_col, ct_col, label_col = (_column(names, wanted) for wanted in (ID_COLUMNS, CT_COLUMNS, LABEL_COLUMNS))
    if ct_col is None and label_col is None:
        raise Viz3dError(f"{path}: no CT column ({', '.join(CT_COLUMNS[:3])}, Image) nor label column "
                         f"({', '.join(LABEL_COLUMNS[:3])}, Mask) in the header {header}")
    cases, skipped = [], []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"{path.name} line {number}"
        ct, label = (_manifest_path(path, row.get(col)) if col else None for col in (ct_col, label_col))
        missing = [f"{what} {p} does not exist" for what, p in (("CT", ct), ("label map", label))
                   if p is not None and not p.exists()]
        if ct is None and label is None:
            skipped.append(Skipped(where, "no CT and no label map path"))
        elif missing:
            skipped.append(Skipped(where, "; ".join(missing)))
        else:
            given = (row.get(id_col) or "").strip() if id_col else ""
            case = safe_case_id(given or _id_from_file(ct or label))
            if not case:
                skipped.append(Skipped(where, f"case id {given!r} has no letter or digit"))
                continue
            extra = tuple((column, (row.get(column) or "").strip()) for column in header
                          if column not in (id_col, ct_col, label_col))
            cases.append(Case(case, ct, label, extra))
    return cases, skipped


def _manifest_path(manifest: Path, text: str | None) -> Path | None:
    """A manifest cell as a path, relative to the manifest's folder; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    path = Path(os.path.expanduser(text))
    return path if path.is_absolute() else manifest.parent / path


def _id_from_file(path: Path) -> str:
    """A case id from a file name: ``s01_ct.nii.gz`` and ``s01_0000.nii.gz`` give ``s01``.

    >>> _id_from_file(Path("data/s01_0000.nii.gz")), _id_from_file(Path("scans/s02")), _id_from_file(Path("s03_ct.mha"))
    ('s01', 's02', 's03')
    """
    stem = image_stem(path.name) or path.name
    return re.sub(r"(_0000|[_-](ct|image|img))$", "", stem, flags=re.IGNORECASE)


def _unique(cases: list[Case]) -> tuple[list[Case], list[Skipped]]:
    """Cases with distinct ids (the output folders); a later case with a taken id is skipped."""
    seen: dict[str, Case] = {}
    skipped = []
    for case in cases:
        key = case.id.lower()  # case-insensitive file systems would merge OUT/S01 and OUT/s01
        if key in seen:
            taken = seen[key].ct or seen[key].label
            skipped.append(Skipped(str(case.ct or case.label), f"case id {case.id!r} is taken by {taken}"))
        else:
            seen[key] = case
    return list(seen.values()), skipped
