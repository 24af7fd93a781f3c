"""The dataset's summary: OUT/summary.csv and OUT/summary.json, with quality flags across cases.

A row per case (status, the one-line error of a failed case, time, peak memory, the inputs'
content digests, the manifest's other columns, its flags) and a row per case and structure
(volume, area, triangles, pieces, closed, printable, centroid and bounding box in RAS mm, its
flags). The CSV holds both, told apart by its first column ``level`` (``case`` or
``structure``); the JSON has ``cases``, ``structures``, ``skipped`` and the options.

The flags compare each case with the dataset (`quality_flags`):

- ``missing``: a structure present in most cases (`MISSING_SHARE` of those that succeeded,
  at least `MIN_CASES_FOR_STATISTICS` of them) is absent from this one;
- ``pieces``: a labelled structure in `MANY_PIECES` or more pieces (the bone surface is always
  in many);
- ``volume``: a structure's volume far from the dataset's: a robust z-score (median and
  median absolute deviation) above `OUTLIER_Z`;
- ``grid``: the CT and the label map are on different grids;
- ``unprintable``: a surface that is not a closed, outward 2-manifold.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from pathlib import Path

MISSING_SHARE = 0.6
MIN_CASES_FOR_STATISTICS = 3
MANY_PIECES = 5
OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
CASE_COLUMNS = ("case", "status", "error", "flags", "seconds", "peak_memory_mb", "structures", "warnings",
                "ct", "label", "ct_digest", "label_digest", "table_digest")
STRUCTURE_COLUMNS = ("kind", "label_value", "name", "volume_ml", "area_mm2", "triangles", "components", "closed",
                     "printable", "problems", "centroid_x", "centroid_y", "centroid_z", "bbox_min_x", "bbox_min_y",
                     "bbox_min_z", "bbox_max_x", "bbox_max_y", "bbox_max_z")


def robust_z(values: list[float]) -> list[float]:
    """Modified z-scores: ``0.6745 (x - median) / MAD``; with a MAD of 0, the mean absolute
    deviation times 1.2533 stands in; all 0 when the values do not vary.

    >>> [round(z, 1) for z in robust_z([10, 11, 9, 10, 30])]
    [0.0, 0.7, -0.7, 0.0, 13.5]
    >>> [round(z, 2) for z in robust_z([5, 5, 5, 9])]
    [0.0, 0.0, 0.0, 3.19]
    """
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    mad = statistics.median(deviations)
    if mad > 0:
        return [0.6745 * (v - median) / mad for v in values]
    mean_deviation = sum(deviations) / len(values)
    if mean_deviation == 0:
        return [0.0] * len(values)
    return [(v - median) / (1.2533 * mean_deviation) for v in values]


def quality_flags(records) -> tuple[dict[str, list[str]], dict[tuple[str, str], list[str]]]:
    """The flags of each case (by id) and of each structure (by (case id, structure name)).

    ``records`` are `viz3d.batch.case.run_case`'s; failed cases get no flags but are left out
    of the dataset's statistics.
    """
    ok = [r for r in records if r["case"]["status"] != "failed"]
    case_flags: dict[str, list[str]] = {r["case"]["case"]: [] for r in records}
    structure_flags: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in ok:
        case = record["case"]["case"]
        if record["case"].get("grid_mismatch"):
            case_flags[case].append("grid: CT and label map on different grids")
        for s in record["structures"]:
            if s["kind"] == "label" and s["components"] >= MANY_PIECES:
                structure_flags[case, s["name"]].append(f"pieces: {s['components']}")
            if not s["printable"]:
                structure_flags[case, s["name"]].append("unprintable" + (f": {s['problems']}" if s["problems"] else ""))
    _missing(ok, case_flags)
    _outliers(ok, structure_flags)
    for (case, name), flags in structure_flags.items():
        case_flags[case].extend(f"{name} {flag}" for flag in flags)
    return case_flags, dict(structure_flags)


def _missing(ok, case_flags) -> None:
    if len(ok) < MIN_CASES_FOR_STATISTICS:
        return
    present = defaultdict(set)
    for record in ok:
        for s in record["structures"]:
            if s["kind"] == "label":
                present[s["name"]].add(record["case"]["case"])
    for record in ok:
        case = record["case"]["case"]
        missing = sorted(name for name, cases in present.items()
                         if case not in cases and len(cases) >= MISSING_SHARE * len(ok))
        if missing:
            case_flags[case].append(f"missing: {', '.join(missing)}")


def _outliers(ok, structure_flags) -> None:
    volumes = defaultdict(list)
    for record in ok:
        for s in record["structures"]:
            volumes[s["name"]].append((record["case"]["case"], float(s["volume_ml"])))
    for name, pairs in volumes.items():
        if len(pairs) < max(MIN_CASES_FOR_STATISTICS, 4):
            continue
        median = statistics.median(v for _, v in pairs)
        for (case, volume), z in zip(pairs, robust_z([v for _, v in pairs]), strict=True):
            if abs(z) > OUTLIER_Z:
                structure_flags[case, name].append(f"volume: {volume:.4g} mL, median {median:.4g} mL (robust z {z:+.1f})")


def summary_rows(records) -> tuple[list[dict], list[dict]]:
    """(a row per case, a row per case and structure), flags included, as the CSV has them."""
    case_flags, structure_flags = quality_flags(records)
    cases, structures = [], []
    for record in records:
        row = dict(record["case"])
        case = row["case"]
        row["flags"] = "; ".join(case_flags.get(case, []))
        row["warnings"] = " | ".join(row.get("warnings") or [])
        row["structures"] = row.get("structures", 0 if row["status"] == "failed" else "")
        row.pop("outputs", None)
        row.pop("grid_mismatch", None)
        cases.append(row)
        for s in record["structures"]:
            (x0, y0, z0), (x1, y1, z1) = s["bbox"]
            cx, cy, cz = s["centroid"]
            structures.append({
                "case": case, "kind": s["kind"], "label_value": s["label"] if s["label"] is not None else "",
                "name": s["name"], "volume_ml": s["volume_ml"], "area_mm2": s["area_mm2"], "triangles": s["triangles"],
                "components": s["components"], "closed": s["closed"], "printable": s["printable"],
                "problems": s["problems"], "centroid_x": cx, "centroid_y": cy, "centroid_z": cz,
                "bbox_min_x": x0, "bbox_min_y": y0, "bbox_min_z": z0, "bbox_max_x": x1, "bbox_max_y": y1,
                "bbox_max_z": z1, "flags": "; ".join(structure_flags.get((case, s["name"]), []))})
    return cases, structures


def summary_csv(cases: list[dict], structures: list[dict]) -> str:
    """The CSV text: case rows then structure rows, one header for both (``level`` first).

    >>> text = summary_csv([{"case": "s01", "status": "done", "site": "A"}], [{"case": "s01", "name": "L1"}])
    >>> text.splitlines()[0].split(",")[:4], text.splitlines()[1].split(",")[:3]
    (['level', 'case', 'status', 'error'], ['case', 's01', 'done'])
    """
    extra = [key for row in cases for key in row if key not in CASE_COLUMNS]
    extra = list(dict.fromkeys(extra))
    header = ["level", *CASE_COLUMNS, *extra, *STRUCTURE_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in cases:
        writer.writerow({"level": "case", **row})
    for row in structures:
        writer.writerow({"level": "structure", **row})
    return buffer.getvalue()


def write_summary(out, records, *, skipped=(), options: dict | None = None, layout: str = "", root: str = "") -> dict:
    """Write ``out/summary.csv`` and ``out/summary.json`` atomically; return the JSON's content."""
    from ..outputs.atomic import atomic_path

    out = Path(out)
    cases, structures = summary_rows(records)
    document = {
        "root": str(root), "layout": layout, "options": options or {},
        "counts": {"cases": len(cases), "failed": sum(c["status"] == "failed" for c in cases),
                   "flagged": sum(bool(c["flags"]) for c in cases), "skipped": len(skipped)},
        "cases": cases, "structures": structures,
        "skipped": [{"path": s.path, "why": s.why} for s in skipped],
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(document, indent=1, default=str) + "\n")
    with atomic_path(out / "summary.csv") as tmp:
        tmp.write_text(summary_csv(cases, structures))
    return document
