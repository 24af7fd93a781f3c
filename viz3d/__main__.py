"""``python -m viz3d``: the same command line as ``viz3d``."""
from .cli.main import main_entry

main_entry()
