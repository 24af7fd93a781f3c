"""``python -m viz3d``: the same command line as ``viz3d``."""
import sys

from .cli import main

sys.exit(main())
