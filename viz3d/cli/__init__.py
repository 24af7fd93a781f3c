"""The command line: argument parsing, progress and the one-line error contract; calls `viz3d.api`
and the outputs."""
