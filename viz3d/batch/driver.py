"""A whole dataset in one call: discover, select, run every case, write the summary and the index.

>>> import tempfile
>>> from viz3d.batch.sample import make_dataset
>>> root, out = (Path(tempfile.mkdtemp()) for _ in range(2))
>>> _ = make_dataset(root, "folders", n=2)
>>> done = run_dataset(root, out, BatchOptions(), engine="inline")
>>> [row["status"] for row in done.summary["cases"]], sorted(p.name for p in out.iterdir() if p.is_file())
(['done', 'done'], ['.viz3d-batch.lock', 'index.html', 'summary.csv', 'summary.json'])
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .layouts import Discovery, discover, select_cases
from .options import BatchOptions
from .run import BatchResult, run_batch


@dataclass(frozen=True)
class DatasetRun:
    """What `run_dataset` did: the discovery, the cases' records, the summary document, the index page."""

    discovery: Discovery
    result: BatchResult
    summary: dict
    index: Path


def run_dataset(root, out, options: BatchOptions, *, layout: str | None = None, cases: str | None = None,
                engine: str = "local", workers: int | None = None, scheduler: str = "local", force: bool = False,
                progress=None) -> DatasetRun:
    """Every case of ``root`` (or those ``cases`` selects) into ``out``, then ``summary.csv``,
    ``summary.json`` and ``index.html`` there. Arguments as `viz3d.batch.layouts.discover`,
    `viz3d.batch.layouts.select_cases` and `viz3d.batch.run.run_batch`.
    """
    from .gallery import write_index
    from .summary import write_summary

    found = discover(root, layout)
    chosen = select_cases(found.cases, cases)
    result = run_batch(chosen, options, out, engine=engine, workers=workers, scheduler=scheduler, force=force,
                       progress=progress)
    summary = write_summary(out, result.records, skipped=found.skipped, options=options.as_dict(),
                            layout=found.layout, root=str(root))
    return DatasetRun(found, result, summary, write_index(out, summary))
