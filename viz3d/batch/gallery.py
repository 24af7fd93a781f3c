"""OUT/index.html: one page, opened offline, with a row per case.

Each row shows the case's thumbnail, status (and the error of a failed case), its quality
flags, the number of structures, time and peak memory, and links to the case's files (the
HTML viewer, pictures, turntable, meshes' manifest). Clicking a column's header sorts by it.
Everything is in the page (styles and the sorting script); the pictures and files are the
case folders' own, linked by relative paths, so the OUT folder can be copied anywhere.
"""
from __future__ import annotations

import html
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; background: #1a1c24; color: #e8e8e8; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ padding: 6px 8px; border-bottom: 1px solid #3a3c48; vertical-align: top; text-align: left; }}
th {{ cursor: pointer; position: sticky; top: 0; background: #262834; user-select: none; }}
th.sorted-up::after {{ content: " \\25B2"; }} th.sorted-down::after {{ content: " \\25BC"; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
img {{ max-width: 240px; max-height: 180px; display: block; }}
.failed {{ color: #ff8a80; }} .flag {{ color: #ffd180; }} a {{ color: #82b1ff; }}
.muted {{ color: #9a9cab; }}
</style></head><body>
<h1>{title}</h1>
<p class="muted">{counts}</p>
<table id="cases"><thead><tr>
<th data-type="text">picture</th><th data-type="text">case</th><th data-type="text">status</th>
<th data-type="text">flags</th><th data-type="num">structures</th><th data-type="num">seconds</th>
<th data-type="num">peak MB</th><th data-type="text">files</th>
</tr></thead><tbody>
{rows}
</tbody></table>
{skipped}
<script>
document.querySelectorAll("#cases th").forEach((th, column) => th.addEventListener("click", () => {{
  const body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
  const up = !th.classList.contains("sorted-up");
  th.parentNode.querySelectorAll("th").forEach(h => h.classList.remove("sorted-up", "sorted-down"));
  th.classList.add(up ? "sorted-up" : "sorted-down");
  const key = r => r.cells[column].dataset.sort ?? r.cells[column].textContent.trim();
  const numeric = th.dataset.type === "num";
  rows.sort((a, b) => {{
    const x = key(a), y = key(b);
    const order = numeric ? (parseFloat(x) || 0) - (parseFloat(y) || 0) : x.localeCompare(y, undefined, {{numeric: true}});
    return up ? order : -order;
  }});
  rows.forEach(r => body.appendChild(r));
}}));
</script>
</body></html>
"""

LINKS = (("scene.html", "viewer"), ("sheet.png", "sheet"), ("mosaic.png", "mosaic"), ("turntable.mp4", "turntable"),
         ("turntable.gif", "turntable"), ("meshes/manifest.json", "meshes"), ("case.json", "record"))


def index_html(summary: dict, out: str | Path = ".") -> str:
    """The page's text for a summary document (`viz3d.batch.summary.write_summary`'s).

    ``out`` is the folder the page goes in: links are made to the files present there.

    >>> page = index_html({"cases": [{"case": "s01", "status": "failed", "error": "bad <file>", "flags": ""}],
    ...                    "counts": {"cases": 1, "failed": 1, "flagged": 0, "skipped": 0}})
    >>> "bad &lt;file&gt;" in page and page.count("<tr>") == 2
    True
    """
    out = Path(out)
    counts = summary.get("counts", {})
    text = (f"{counts.get('cases', 0)} cases, {counts.get('failed', 0)} failed, {counts.get('flagged', 0)} flagged, "
            f"{counts.get('skipped', 0)} files skipped" + (f" &middot; {html.escape(str(summary['root']))}"
                                                             if summary.get("root") else ""))
    rows = "\n".join(_row(case, out) for case in summary.get("cases", []))
    skipped = summary.get("skipped") or []
    skipped_html = ("<h2>Skipped</h2><ul>" + "".join(f"<li>{html.escape(s['path'])}: {html.escape(s['why'])}</li>"
                                                     for s in skipped) + "</ul>") if skipped else ""
    return PAGE.format(title="viz3d batch", counts=text, rows=rows, skipped=skipped_html)


def _row(case: dict, out: Path) -> str:
    name = str(case["case"])
    folder = out / name
    quoted = html.escape(name, quote=True)
    picture = (f'<img src="{quoted}/thumbnail.png" alt="{quoted}" loading="lazy">'
               if (folder / "thumbnail.png").is_file() else "")
    failed = case["status"] == "failed"
    status = (f'<span class="failed">failed: {html.escape(str(case.get("error", "")))}</span>' if failed
              else html.escape(str(case["status"])))
    flags = "<br>".join(f'<span class="flag">{html.escape(flag)}</span>'
                        for flag in str(case.get("flags") or "").split("; ") if flag)
    links = [f'<a href="{quoted}/{target}">{label}</a>' for target, label in LINKS if (folder / target).is_file()]
    links += [f'<a href="{quoted}/{p.name}">{html.escape(p.stem.removeprefix("screenshot-"))}</a>'
              for p in sorted(folder.glob("screenshot-*.png"))]
    cells = [picture, f"<b>{quoted}</b>", status, flags]
    numbers = [case.get("structures", ""), case.get("seconds", ""), case.get("peak_memory_mb", "")]
    return ("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells)
            + "".join(f'<td class="num">{html.escape(str("" if n is None else n))}</td>' for n in numbers)
            + f"<td>{' '.join(links)}</td></tr>")


def write_index(out, summary: dict) -> Path:
    """Write ``out/index.html`` atomically; return its path."""
    from ..outputs.atomic import atomic_path

    path = Path(out) / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(index_html(summary, out))
    return path
