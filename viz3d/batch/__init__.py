"""`viz3d batch`: a whole dataset of CTs and label maps in one command.

The pieces, each usable on its own:

- `viz3d.batch.layouts`: which cases a folder or manifest holds (nnU-Net, CTSpinoPelvic1K,
  a folder per case, a CSV/TSV manifest) and which files were skipped, with why;
- `viz3d.batch.options`: what to make for every case (`BatchOptions`) and its fingerprint;
- `viz3d.batch.case`: one case's outputs, written into a staging folder and renamed into
  place whole, with a done-marker keyed by the inputs' content and the options;
- `viz3d.batch.run`: every case on a pool of local worker processes or a Dask cluster;
- `viz3d.batch.slurm`: Dask workers started as SLURM jobs (dask-jobqueue) for ``--slurm``;
- `viz3d.batch.summary`: the dataset's summary.csv / summary.json and its quality flags;
- `viz3d.batch.gallery`: the offline index.html;
- `viz3d.batch.driver`: all of it in one call (`run_dataset`), shards and their merge;
- `viz3d.batch.sample`: small synthetic datasets in each layout (tests, examples).

The command line is ``viz3d batch`` (`viz3d.cli.batch`).
"""
