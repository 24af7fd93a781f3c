"""The single exception type viz3d raises for bad input, and its warnings."""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager


class Viz3dError(ValueError):
    """Bad input: a missing, unreadable or inconsistent file, or an invalid option.

    The message says what is wrong and with which file; the command line prints it as one
    line ``viz3d: error: <message>`` and exits with status 2.
    """


class Viz3dWarning(UserWarning):
    """Something the user should know about their inputs that does not stop the work."""


_open_notes = threading.local()


def warn(message: str, stacklevel: int = 2) -> None:
    """Issue ``message`` as a `Viz3dWarning` and add it to this thread's `collecting_warnings` blocks."""
    for notes in getattr(_open_notes, "stack", ()):
        notes.append(message)
    warnings.warn(message, Viz3dWarning, stacklevel=stacklevel + 1)


@contextmanager
def collecting_warnings():
    """The messages `warn` issues in this thread inside the block (e.g. to cache them with a result).

    Per thread, unlike ``warnings.catch_warnings``: a CT read in the background and meshes
    built meanwhile each keep their own notes.
    """
    stack = _open_notes.__dict__.setdefault("stack", [])
    notes: list[str] = []
    stack.append(notes)
    try:
        yield notes
    finally:
        del stack[next(i for i, open_notes in enumerate(stack) if open_notes is notes)]  # this list, not an equal one
