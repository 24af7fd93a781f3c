"""A whole dataset in one call: discover, select, run every case, write the summary and the index.

With ``shard=(i, n)`` a run makes only its stable share of the cases (`in_shard`) and writes
its records to ``OUT/shards/shard-<i>-of-<n>.json`` instead of the summary; `merge_shards`
assembles the summary and index once every shard is in (SLURM array jobs: one shard a task).

>>> import tempfile
>>> from viz3d.batch.sample import make_dataset
>>> root, out = (Path(tempfile.mkdtemp()) for _ in range(2))
>>> _ = make_dataset(root, "folders", n=2)
>>> done = run_dataset(root, out, BatchOptions(), engine="inline")
>>> [row["status"] for row in done.summary["cases"]], sorted(p.name for p in out.iterdir() if p.is_file())
(['done', 'done'], ['.viz3d-batch.lock', 'index.html', 'summary.csv', 'summary.json'])
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import Viz3dError
from .layouts import Discovery, discover, select_cases
from .options import BatchOptions
from .run import LOCK_NAME, BatchResult, run_batch

SHARDS = "shards"


@dataclass(frozen=True)
class DatasetRun:
    """What `run_dataset` did: the discovery, the cases' records, the summary document, the index page."""

    discovery: Discovery
    result: BatchResult
    summary: dict
    index: Path | None  # None for a shard: `merge_shards` writes the page


def run_dataset(root, out, options: BatchOptions, *, layout: str | None = None, cases: str | None = None,
                engine: str = "local", workers: int | None = None, scheduler: str = "local", force: bool = False,
                progress=None, shard: tuple[int, int] | None = None, slurm=None) -> DatasetRun:
    """Every case of ``root`` (or those ``cases`` selects) into ``out``, then ``summary.csv``,
    ``summary.json`` and ``index.html`` there. Arguments as `viz3d.batch.layouts.discover`,
    `viz3d.batch.layouts.select_cases` and `viz3d.batch.run.run_batch` (``slurm``: the
    `viz3d.batch.slurm.SlurmSpec` of ``engine="slurm"``); ``shard`` ``(i, n)``:
    only shard ``i`` of ``n`` (from 1), whose records go to ``out/shards/`` (see `merge_shards`).
    """
    from .gallery import write_index
    from .summary import write_summary

    found = discover(root, layout)
    chosen = select_cases(found.cases, cases)
    if shard is not None:
        index, count = check_shard(shard)
        chosen = [case for case in chosen if in_shard(case.id, index, count)]
    lock = LOCK_NAME if shard is None else f".viz3d-batch-shard-{shard[0]}-of-{shard[1]}.lock"
    result = run_batch(chosen, options, out, engine=engine, workers=workers, scheduler=scheduler, force=force,
                       progress=progress, lock=lock, slurm=slurm)
    context = dict(skipped=found.skipped, options=options.as_dict(), layout=found.layout, root=str(root))
    if shard is not None:
        summary = _shard_summary(result.records, context)
        _write_shard(Path(out), shard, result.records, context)
        return DatasetRun(found, result, summary, None)
    summary = write_summary(out, result.records, **context)
    return DatasetRun(found, result, summary, write_index(out, summary))


def check_shard(shard) -> tuple[int, int]:
    """``(i, n)`` checked: 1 <= i <= n.

    >>> check_shard((2, 4))
    (2, 4)
    """
    try:
        index, count = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise Viz3dError(f"--shard: expected I/N such as 2/8, got {shard!r}") from None
    if not 1 <= index <= count:
        raise Viz3dError(f"--shard {index}/{count}: I must be from 1 to N")
    return index, count


def in_shard(case_id: str, index: int, count: int) -> bool:
    """Whether a case belongs to shard ``index`` of ``count`` (from 1): by a checksum of its id,
    so a case stays in its shard whatever other cases the dataset gains or loses.

    >>> ids = [f"s{i:03d}" for i in range(100)]
    >>> shares = [[i for i in ids if in_shard(i, k, 4)] for k in (1, 2, 3, 4)]
    >>> sum(len(share) for share in shares), min(len(share) for share in shares) > 15
    (100, True)
    """
    return zlib.crc32(case_id.encode()) % count == index - 1


def shard_from_environment(environ=None) -> tuple[int, int]:
    """``(i, n)`` of a SLURM array task: ``SLURM_ARRAY_TASK_ID`` counted from
    ``SLURM_ARRAY_TASK_MIN`` (``--array=0-7`` and ``--array=1-8`` alike) of ``SLURM_ARRAY_TASK_COUNT``.

    >>> shard_from_environment({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "8"})
    (1, 8)
    """
    environ = os.environ if environ is None else environ
    try:
        task, count = int(environ["SLURM_ARRAY_TASK_ID"]), int(environ["SLURM_ARRAY_TASK_COUNT"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
    except (KeyError, ValueError):
        raise Viz3dError("--shard slurm: SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT are not set "
                         "(not inside an sbatch --array job); give --shard I/N") from None
    return check_shard((task - first + 1, count))


def _shard_summary(records, context) -> dict:
    from .summary import summary_rows

    cases, structures = summary_rows(records)
    return {**context, "skipped": [{"path": s.path, "why": s.why} for s in context["skipped"]],
            "cases": cases, "structures": structures,
            "counts": {"cases": len(cases), "failed": sum(c["status"] == "failed" for c in cases)}}


def _write_shard(out: Path, shard, records, context) -> Path:
    from ..outputs.atomic import atomic_path

    folder = out / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"shard-{shard[0]}-of-{shard[1]}.json"
    document = {"shard": list(shard), "records": list(records), "root": context["root"], "layout": context["layout"],
                "options": context["options"], "skipped": [{"path": s.path, "why": s.why} for s in context["skipped"]]}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(document, default=str) + "\n")
    return path


def merge_shards(out) -> tuple[dict, Path]:
    """Assemble ``out/summary.csv``, ``summary.json`` and ``index.html`` from the shards' records.

    Raises
    ------
    Viz3dError
        When there are no shards, shards of different counts or options, or shards missing.
    """
    from .gallery import write_index
    from .layouts import Skipped
    from .summary import write_summary

    out = Path(out)
    paths = sorted((out / SHARDS).glob("shard-*-of-*.json"))
    if not paths:
        raise Viz3dError(f"{out}: no shard results in {out / SHARDS} (run viz3d batch ... --shard I/N first)")
    documents = []
    for path in paths:
        try:
            documents.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise Viz3dError(f"{path}: cannot read the shard's results ({exc})") from None
    counts = {doc["shard"][1] for doc in documents}
    if len(counts) != 1:
        raise Viz3dError(f"{out / SHARDS}: shards of different counts ({', '.join(map(str, sorted(counts)))}); "
                         "remove the old ones and merge one batch")
    (count,) = counts
    if len({json.dumps(doc["options"], sort_keys=True) for doc in documents}) != 1:
        raise Viz3dError(f"{out / SHARDS}: the shards were run with different options; rerun them with the same ones")
    missing = sorted(set(range(1, count + 1)) - {doc["shard"][0] for doc in documents})
    if missing:
        raise Viz3dError(f"shard{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} of {count} "
                         f"not in {out / SHARDS} yet (still running, or failed: rerun it with --shard I/{count})")
    records = sorted((r for doc in documents for r in doc["records"]), key=lambda r: r["case"]["case"])
    first = documents[0]
    summary = write_summary(out, records, skipped=[Skipped(**s) for s in first["skipped"]], options=first["options"],
                            layout=first["layout"], root=first["root"])
    return summary, write_index(out, summary)
