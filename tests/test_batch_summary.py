"""`viz3d batch`'s dataset summary (summary.csv / .json), its quality flags and index.html."""
import csv
import html.parser
import json

from viz3d.batch.driver import run_dataset
from viz3d.batch.options import BatchOptions
from viz3d.batch.sample import make_dataset
from viz3d.batch.summary import quality_flags


def structure(name, volume, components=1, printable=True, kind="label"):
    return {"kind": kind, "label": 1, "name": name, "volume_ml": volume, "area_mm2": 1.0, "triangles": 10,
            "components": components, "closed": printable, "printable": printable,
            "problems": "" if printable else "open: 4 boundary edges", "centroid": [0, 0, 0], "bbox": [[0] * 3, [1] * 3]}


def record(case, *structures, status="done", grid=False):
    return {"key": "k", "case": {"case": case, "status": status, "error": "", "grid_mismatch": grid},
            "structures": list(structures)}


def test_a_structure_most_cases_have_is_flagged_missing_where_it_is_absent():
    records = [record(f"s{i}", structure("L1", 10), structure("L2", 5)) for i in range(4)]
    records.append(record("s9", structure("L1", 10)))
    flags, _ = quality_flags(records)
    assert flags["s9"] == ["missing: L2"]
    assert all(flags[f"s{i}"] == [] for i in range(4))


def test_a_volume_far_from_the_datasets_is_flagged_with_its_robust_z_score():
    records = [record(f"s{i}", structure("liver", v)) for i, v in enumerate([1500, 1550, 1450, 1520, 4800])]
    case_flags, structure_flags = quality_flags(records)
    assert list(structure_flags) == [("s4", "liver")]
    assert structure_flags["s4", "liver"][0].startswith("volume: 4800 mL, median 1520 mL (robust z +")
    assert case_flags["s4"][0].startswith("liver volume: 4800 mL")


def test_many_pieces_unprintable_surfaces_and_grid_mismatch_are_flagged_but_not_the_bones_pieces():
    records = [record("a", structure("L1", 10, components=7), structure("bone", 900, components=40, kind="bone"),
                      structure("L2", 5, printable=False), grid=True)]
    flags, _ = quality_flags(records)
    assert flags["a"] == ["grid: CT and label map on different grids", "L1 pieces: 7",
                          "L2 unprintable: open: 4 boundary edges"]


def test_failed_cases_get_no_flags_and_stay_out_of_the_statistics():
    records = [record(f"s{i}", structure("L1", 10)) for i in range(3)] + [record("bad", status="failed")]
    flags, _ = quality_flags(records)
    assert flags["bad"] == []


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("a", "img"):
            self.targets.append(attrs.get("href") or attrs.get("src"))
        if tag in ("script", "link") and (attrs.get("src") or attrs.get("href")):
            self.targets.append("EXTERNAL " + (attrs.get("src") or attrs.get("href")))


def test_a_dataset_run_writes_a_summary_row_per_case_and_structure_and_an_offline_index(tmp_path):
    make_dataset(tmp_path / "data", "manifest", n=3, broken=True, other_grid=True)
    out = tmp_path / "out"
    run = run_dataset(tmp_path / "data" / "cases.csv", out, BatchOptions(screenshot=("anterior",), size=(96, 72)),
                      engine="inline")
    rows = list(csv.DictReader(open(out / "summary.csv")))
    cases = {row["case"]: row for row in rows if row["level"] == "case"}
    assert {case: row["status"] for case, row in cases.items()} == {
        "broken": "failed", "s01": "done", "s02": "done", "s03": "done", "shifted": "done"}
    assert "truncated" in cases["broken"]["error"] and cases["s01"]["error"] == ""
    assert cases["s01"]["site"] == "site-1"  # the manifest's own column is carried
    assert cases["shifted"]["flags"].startswith("grid: CT and label map on different grids")
    assert float(cases["s01"]["peak_memory_mb"]) > 0 and len(cases["s01"]["ct_digest"]) == 40
    structures = [row for row in rows if row["level"] == "structure" and row["case"] == "s01"]
    assert sorted(row["name"] for row in structures) == ["L1", "L2", "bone"]
    l1 = next(row for row in structures if row["name"] == "L1")
    assert float(l1["volume_ml"]) > 0 and l1["closed"] == "True" and l1["printable"] == "True"
    assert float(l1["bbox_min_x"]) < float(l1["centroid_x"]) < float(l1["bbox_max_x"])
    document = json.loads((out / "summary.json").read_text())
    assert document["counts"] == {"cases": 5, "failed": 1, "flagged": 1, "skipped": 0}
    assert document["layout"] == "manifest" and run.summary == document
    links = Links()
    links.feed((out / "index.html").read_text())
    assert not [t for t in links.targets if t.startswith("EXTERNAL") or "://" in t]
    assert "s01/thumbnail.png" in links.targets and "s01/screenshot-anterior.png" in links.targets
    assert all((out / target).exists() for target in links.targets)
