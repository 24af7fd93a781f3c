"""The single exception type viz3d raises for bad input, its warnings, the check every reader of a
user-named file makes first, and how other libraries' warnings and log lines reach the user."""
from __future__ import annotations

import logging
import os
import stat
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path


class Viz3dError(ValueError):
    """Bad input: a missing, unreadable or inconsistent file, or an invalid option.

    The one exception type viz3d raises for what the user can fix, with one argument: the
    message, which says what is wrong and with which file. The command line prints it as one
    line ``viz3d: error: <message>`` and exits with status 2. A `ValueError`, so code that
    already catches those catches it too.

    See Also
    --------
    Viz3dWarning : What does not stop the work.

    Examples
    --------
    >>> import viz3d
    >>> try:
    ...     viz3d.load_label("missing.nii.gz")
    ... except viz3d.Viz3dError as error:
    ...     print(f"viz3d: error: {error}")
    viz3d: error: missing.nii.gz: no such file or folder
    >>> issubclass(viz3d.Viz3dError, ValueError)
    True
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


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words: ``'a regular file'``, ``'a folder'``, ``'a FIFO (named pipe)'``...

    >>> file_kind(stat.S_IFIFO | 0o644)
    'a FIFO (named pipe)'
    """
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a folder"
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def check_regular_file(path, what: str) -> os.stat_result:
    """Refuse anything but an existing, regular file (symlinks followed) before it is opened.

    Opening a FIFO waits for a writer and reading a device such as ``/dev/zero`` never ends,
    so every reader of user-named files calls this first.

    Parameters
    ----------
    path : str or path-like
        The file the user named.
    what : str
        What it should be, for the message, e.g. ``"a NIfTI file (.nii or .nii.gz)"``.

    Returns
    -------
    os.stat_result
        The file's status (size, times), from the one ``stat`` call.

    Raises
    ------
    Viz3dError
        When ``path`` does not exist, cannot be examined, or is a folder, FIFO, device or
        socket; the message names the path and what it is.
    """
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise Viz3dError(f"{path}: no such file or folder") from None
    except PermissionError:
        raise Viz3dError(f"{path}: permission denied; expected {what} you can read") from None
    except OSError as exc:
        raise Viz3dError(f"{path}: cannot examine the file ({exc.strerror or exc}); expected {what}") from None
    if stat.S_ISDIR(status.st_mode):
        raise Viz3dError(f"{path}: is a folder, expected {what}")
    if not stat.S_ISREG(status.st_mode):
        raise Viz3dError(
            f"{path}: is {file_kind(status.st_mode)}, not a regular file; expected {what} "
            "(copy the data into a file first)")
    return status


# ---------------------------------------------------------------------------------------------
# other libraries' warnings and log lines, as the command line shows them

_SILENT_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)
_LIBRARY_LOGGERS = {"nibabel.global": True, "pydicom": False}  # logger -> whether its lines are worth showing


def warning_line(message, category, filename: str = "") -> str | None:
    """The one line the command line prints for a warning (``viz3d: warning: ...``), or None.

    viz3d's own warnings are shown as they are; another library's get its name in front
    (``pydicom: Invalid value for VR DS ...``); its deprecation and future warnings, which
    concern viz3d's code and not the user's inputs, are not shown, nor numpy's floating-point
    RuntimeWarnings (viz3d checks what comes out and says what is wrong with the input).
    Line breaks inside a message are folded, so every warning is one line.

    >>> warning_line("gap of 4 mm", Viz3dWarning)
    'viz3d: warning: gap of 4 mm'
    >>> warning_line("Invalid value\\n for DS", UserWarning, "/x/site-packages/pydicom/valuerep.py")
    'viz3d: warning: pydicom: Invalid value for DS'
    >>> warning_line("old API", DeprecationWarning, "/x/site-packages/vtk/x.py") is None
    True
    >>> warning_line("overflow encountered in dot", RuntimeWarning, "/x/site-packages/numpy/linalg.py") is None
    True
    """
    library = _library_of(filename)
    if library and issubclass(category, _SILENT_CATEGORIES):
        return None
    if library == "numpy" and issubclass(category, RuntimeWarning):
        return None  # "overflow encountered in dot": arithmetic inside a library, whose outcome viz3d checks
    text = " ".join(str(message).split())
    return f"viz3d: warning: {library + ': ' if library and not text.startswith(library) else ''}{text}"


def _library_of(filename: str) -> str:
    """The top-level package a warning came from when it is not viz3d ('' for viz3d's own)."""
    parts = Path(filename or "").parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts[:-1]:
            name = parts[parts.index(marker) + 1]
            name = name[:-3] if name.endswith(".py") else name
            return "" if name == "viz3d" else name
    return ""


class LibraryWarning(UserWarning):
    """A warning another library logged (nibabel's header fixes), passed on to the user."""


class _LogAsWarning(logging.Filter):
    """Turns a library logger's records into Python warnings (shown as ``viz3d: warning:``
    lines by the command line), or drops them; either way its own handlers print nothing."""

    def __init__(self, show: bool):
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        if self.show and record.levelno >= logging.WARNING:
            library = record.name.split(".")[0]
            warnings.warn(f"{library}: {record.getMessage()}", LibraryWarning, stacklevel=2)
        return False


def route_library_logs() -> None:
    """Send nibabel's log lines through Python's warnings and silence pydicom's logger.

    nibabel logs header fixes ("pixdim[1,2,3] should be non-zero; setting 0 dims to 1") to
    stderr through a handler of its own, bare and unprefixed; pydicom logs every warning it
    also issues as a Python warning. A filter on the logger (which stays when nibabel adds
    its handler at import, after this call) turns each nibabel record into a warning, which
    the command line prints as one ``viz3d: warning:`` line, and drops pydicom's copies.
    Calling it again changes nothing.
    """
    for name, show in _LIBRARY_LOGGERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LogAsWarning) for f in logger.filters):
            logger.addFilter(_LogAsWarning(show))
