"""`viz3d batch`: a whole dataset in one command (see `viz3d.batch`).

The parser reuses the single-case commands' option types and defaults (`viz3d.cli.arguments`), so a
batch's ``--export``, ``--screenshot``, ``--window`` or ``--smoothing`` mean what they mean
for one case. The command ends with one ``viz3d: error:`` line and exit status 2 when any case
failed, naming how many.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import Viz3dError

LAYOUTS = ("nnunet", "ctspinopelvic", "folders", "manifest")


def add_batch_parser(commands) -> None:
    """Add the ``batch`` sub-command to ``commands`` (an argparse subparsers object)."""
    from . import arguments

    batch = commands.add_parser(
        "batch", help="a whole dataset: every case's outputs under OUT/<case>/, summary.csv and index.html",
        description="Run a dataset (nnU-Net, CTSpinoPelvic1K, a folder per case, or a CSV/TSV manifest) into OUT: "
        "per case the outputs asked for, made from meshes built once; OUT/summary.csv and summary.json (a row per "
        "case and per structure, quality flags across the dataset) and OUT/index.html. A failed case says why in "
        "its row and the others complete; a rerun skips the cases done with the same inputs and options.")
    batch.add_argument("root", metavar="ROOT", nargs="?", help="dataset folder, or a .csv / .tsv manifest")
    batch.add_argument("--out", metavar="OUT", help="output folder (one folder per case in it)")
    batch.add_argument("--layout", type=str.lower, choices=LAYOUTS, default=None, help="the dataset's layout (default: detected)")
    batch.add_argument("--list", action="store_true", help="print the cases found and every file skipped, with why; run nothing")
    batch.add_argument("--cases", metavar="ID,PATTERN", default=None, help="only these cases: ids or shell patterns (s01,s1*)")
    batch.add_argument("--label-table", metavar="T", default=None,
                       help="names and colours for every case (default: each label map's own, else spinopelvic10)")
    arguments.add_mesh_options(batch)
    for action in batch._actions:
        if action.dest == "no_cache":  # accepted, and moot: a batch never reads nor fills the mesh cache
            action.help = argparse.SUPPRESS
    outputs = batch.add_argument_group("outputs per case (any combination; the meshes are built once)")
    outputs.add_argument("--export", type=str.lower, choices=("stl", "obj", "ply", "vtp", "glb"), default=None,
                         metavar="FORMAT", help="meshes/ with one file per structure and manifest.json (stl, obj, ply, vtp, glb)")
    outputs.add_argument("--coords", type=str.lower, choices=("ras", "lps"), default="ras", help="with --export (default ras)")
    outputs.add_argument("--combine", action="store_true", help="with --export: one scene file per case")
    outputs.add_argument("--max-triangles", type=int, default=None, metavar="N",
                         help="with --export: at most N triangles per structure")
    outputs.add_argument("--decimate", type=float, default=None, metavar="F",
                         help="with --export: keep this fraction of triangles")
    outputs.add_argument("--largest-component", action="store_true", help="with --export: each surface's largest piece only")
    outputs.add_argument("--screenshot", type=arguments.view_list, default=None, metavar="V1,V2",
                         help="one PNG per view (screenshot-<view>.png), e.g. anterior,left")
    outputs.add_argument("--size", type=arguments.size, default=(1024, 768), metavar="WxH",
                         help="screenshot size (default 1024x768)")
    outputs.add_argument("--sheet", action="store_true", help="sheet.png: the anterior, left, posterior and right views")
    outputs.add_argument("--turntable", type=str.lower, choices=("gif", "mp4"), default=None,
                         help="turntable.gif or .mp4 (72 frames, 640x480)")
    outputs.add_argument("--frames", type=int, default=72, metavar="N", help="with --turntable: frames in one turn (default 72)")
    outputs.add_argument("--html", action="store_true", help="scene.html: the self-contained viewer")
    outputs.add_argument("--mosaic", type=int, default=None, metavar="N", help="mosaic.png: N axial slices with the labels")
    outputs.add_argument("--window", type=arguments.window, default="soft", metavar="PRESET|C,W",
                         help="CT window of every picture (default soft)")
    outputs.add_argument("--colors", choices=("table", "distinct"), default="table", help="structure colours (default table)")
    outputs.add_argument("--no-slices", action="store_true", help="no CT planes in the 3-D pictures")
    outputs.add_argument("--slices", default=None, metavar="AXIS=POS,...", help="where the CT planes go (see screenshot --help)")
    engine = batch.add_argument_group("running")
    engine.add_argument("--workers", "--jobs", type=int, default=None, metavar="N",
                        help="worker processes (default: as many as the cores and the memory allow)")
    engine.add_argument("--dask", metavar="ADDRESS", default=None,
                        help="run on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' for a LocalCluster")
    engine.add_argument("--slurm", action="store_true",
                        help="run on Dask workers started as SLURM jobs (dask-jobqueue), sized by the --slurm-* options")
    engine.add_argument("--slurm-jobs", type=int, default=None, metavar="N",
                        help="with --slurm: SLURM jobs to queue (default: one per case to do, at most 4)")
    engine.add_argument("--slurm-cores", type=int, default=1, metavar="C",
                        help="with --slurm: cores per job, one worker process each (default 1)")
    engine.add_argument("--slurm-memory", default=None, metavar="AMOUNT",
                        help="with --slurm: memory per job, e.g. 8GB (default: the cores times the largest case's estimate)")
    engine.add_argument("--slurm-walltime", default="01:00:00", metavar="TIME",
                        help="with --slurm: each job's time limit, as sbatch -t (default 01:00:00)")
    engine.add_argument("--slurm-partition", default=None, metavar="NAME",
                        help="with --slurm: the partition (default: the cluster's default)")
    engine.add_argument("--slurm-wait", type=float, default=600.0, metavar="SECONDS",
                        help="with --slurm: give up when no job has started a worker within this time (default 600)")
    engine.add_argument("--shard", metavar="I/N|slurm", default=None,
                        help="only shard I of N of the cases (a stable share; 'slurm': from SLURM_ARRAY_TASK_ID and "
                        "SLURM_ARRAY_TASK_COUNT), its results in OUT/shards/; then viz3d batch --merge OUT")
    engine.add_argument("--merge", metavar="OUT", default=None,
                        help="assemble OUT/summary.csv, summary.json and index.html from the shards' results")
    engine.add_argument("--force", action="store_true", help="redo every case, also those done with the same inputs and options")
    batch.add_argument("--quiet", "-q", action="store_true", help="no progress bar or status lines")


def options_from_args(args):
    """The `viz3d.batch.options.BatchOptions` of the parsed arguments (checked there)."""
    from ..batch.options import BatchOptions

    if args.bone and args.no_bone:
        raise Viz3dError("--bone and --no-bone exclude each other")
    return BatchOptions(
        label_table=args.label_table, labels=args.labels, bone=not args.no_bone and (not args.labels or args.bone),
        bone_hu=args.bone_hu, smoothing=0.0 if args.no_smooth else args.smoothing, method=args.method,
        export=args.export, coords=args.coords, combine=args.combine, max_triangles=args.max_triangles,
        decimate=args.decimate, largest_component=args.largest_component, screenshot=tuple(args.screenshot or ()),
        size=tuple(args.size), sheet=args.sheet, turntable=args.turntable, frames=args.frames, html=args.html,
        mosaic=args.mosaic, window=args.window, colors=args.colors, show_slices=not args.no_slices, slices=args.slices)


def print_listing(found, selected) -> None:
    """``--list``: the layout, every case with its files, and every file skipped with why."""
    root = Path(found.root)
    base = root.parent if root.is_file() else root

    def shown(path):
        if path is None:
            return "-"
        try:
            return str(Path(path).relative_to(base))
        except ValueError:
            return str(path)

    print(f"{root}: layout {found.layout}, {len(selected)} case{'s' * (len(selected) != 1)}"
          + (f" (of {len(found.cases)})" if len(selected) != len(found.cases) else "")
          + f", {len(found.skipped)} skipped")
    width = max((len(case.id) for case in selected), default=4)
    for case in selected:
        extra = "  " + " ".join(f"{k}={v}" for k, v in case.extra) if case.extra else ""
        print(f"  {case.id:<{width}}  CT {shown(case.ct)}  label {shown(case.label)}{extra}")
    if found.skipped:
        print("skipped:")
        for item in found.skipped:
            print(f"  {item.path}: {item.why}")


def cmd_batch(args, console) -> None:
    """Run the dataset, or with --list say what it holds."""
    from ..batch.layouts import discover, select_cases

    if args.merge:
        _merge(args, console)
        return
    if not args.root:
        raise Viz3dError("give ROOT, the dataset folder or a .csv / .tsv manifest (or --merge OUT)")
    options = options_from_args(args)
    shard = _shard(args.shard)
    if args.list:
        found = discover(args.root, args.layout)
        selected = select_cases(found.cases, args.cases)
        if shard is not None:
            from ..batch.driver import in_shard

            selected = [case for case in selected if in_shard(case.id, *shard)]
        print_listing(found, selected)
        return
    if not args.out:
        raise Viz3dError("--out OUT is required (or --list to see the cases)")
    from ..outputs.export import check_output_folder

    out = check_output_folder(args.out, "the batch")  # not empty, not the root folder, a writable folder
    if args.workers is not None and args.workers < 1:
        raise Viz3dError(f"--workers must be at least 1, got {args.workers}")
    engine, slurm = _engine(args)
    from ..batch.driver import run_dataset

    bar = _case_bar(console)
    try:
        done = run_dataset(args.root, out, options, layout=args.layout, cases=args.cases,
                           engine=engine, workers=args.workers, scheduler=args.dask or "local", force=args.force,
                           progress=bar, shard=shard, slurm=slurm)
    finally:
        if bar is not None:
            bar.close()
    rows = done.summary["cases"]
    failed = [row for row in rows if row["status"] == "failed"]
    for row in failed:
        console.say(f"{row['case']}: failed: {row['error']}")
    counts = {status: sum(row["status"] == status for row in rows) for status in ("done", "reused", "failed")}
    line = (f"{len(rows)} case{'s' * (len(rows) != 1)}: {counts['done']} done, {counts['reused']} already done, "
            f"{counts['failed']} failed")
    if shard is not None:
        console.say(f"shard {shard[0]}/{shard[1]}: {line}; wrote {out / 'shards'}/shard-{shard[0]}-of-{shard[1]}.json "
                    f"(once every shard is done: viz3d batch --merge {out})")
    else:
        console.say(f"{line}, {done.summary['counts']['flagged']} flagged; wrote {out / 'summary.csv'} and {done.index}")
    _fail_if_any(failed, len(rows), out / "summary.csv" if shard is None
                 else out / "shards" / f"shard-{shard[0]}-of-{shard[1]}.json")


def _engine(args):
    """``(engine, SlurmSpec or None)`` from --dask, --slurm and the --slurm-* options."""
    given = [flag for flag in ("slurm_jobs", "slurm_memory", "slurm_partition") if getattr(args, flag) is not None]
    if not args.slurm:
        if given:
            raise Viz3dError(f"--{given[0].replace('_', '-')} goes with --slurm")
        return ("dask" if args.dask else "local"), None
    if args.dask:
        raise Viz3dError("--slurm and --dask exclude each other: --slurm starts its own Dask workers")
    if args.workers is not None:
        raise Viz3dError("--workers is for the local pool and --dask local; with --slurm give --slurm-jobs and --slurm-cores")
    from ..batch.slurm import SlurmSpec

    spec = SlurmSpec(jobs=args.slurm_jobs, cores=args.slurm_cores, memory=args.slurm_memory, walltime=args.slurm_walltime,
                     partition=args.slurm_partition, wait=args.slurm_wait)
    return "slurm", spec.check()


def _fail_if_any(failed, total, where: Path) -> None:
    if failed:
        raise Viz3dError(f"{len(failed)} of {total} case{'s' * (total != 1)} failed "
                         f"({', '.join(row['case'] for row in failed[:5])}{', ...' if len(failed) > 5 else ''}); "
                         f"see {where}")


def _shard(text):
    """--shard: ``I/N`` or ``slurm`` (the array task's), or None."""
    from ..batch.driver import check_shard, shard_from_environment

    if text is None:
        return None
    if text.strip().lower() == "slurm":
        return shard_from_environment()
    parts = text.split("/")
    if len(parts) != 2:
        raise Viz3dError(f"--shard: expected I/N such as 2/8, or slurm, got {text!r}")
    return check_shard(parts)


def _merge(args, console) -> None:
    """--merge OUT: the summary and index of a batch run in shards."""
    from ..batch.driver import merge_shards

    if args.root:
        raise Viz3dError("--merge OUT assembles shards already run: give no ROOT")
    summary, index = merge_shards(args.merge)
    rows = summary["cases"]
    failed = [row for row in rows if row["status"] == "failed"]
    console.say(f"merged {len(rows)} cases ({len(failed)} failed, {summary['counts']['flagged']} flagged); "
                f"wrote {Path(args.merge) / 'summary.csv'} and {index}")
    _fail_if_any(failed, len(rows), Path(args.merge) / "summary.csv")


class _CaseBar:
    """One progress bar over the cases with the time left (tqdm's estimate)."""

    def __init__(self):
        from tqdm import tqdm

        self.bar = None
        self.tqdm = tqdm

    def __call__(self, done, total, record):
        if self.bar is None:
            self.bar = self.tqdm(total=total, desc="cases", unit="case", file=sys.stderr, leave=False,
                                 bar_format="{desc}: {n_fmt}/{total_fmt} |{bar:20}| {elapsed}<{remaining} {postfix}")
        self.bar.set_postfix_str(f"{record['case']['case']} {record['case']['status']}"[:40], refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _case_bar(console):
    """The bar, or None with --quiet or off a terminal."""
    return None if console.quiet or not console.tty else _CaseBar()
