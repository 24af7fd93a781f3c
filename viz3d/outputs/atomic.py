"""Atomic file writing: a file appears complete at its name, or not at all.

`atomic_path` hands out a hidden temporary file in the target's folder; the caller writes it
(by path, so any writer or encoder works), and it replaces the target with one rename when the
block succeeds. On any failure the temporary file is removed and the target is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..errors import Viz3dError


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Write to the yielded temporary path; it replaces ``path`` only if the block succeeds.

    The temporary file is ``.NAME.tmp-XXXXXXXX<suffix>`` beside ``path``, created empty with
    mode 0666 less the umask (the finished file's mode), with the same suffix as ``path`` so
    writers that go by the suffix pick the right format. Any `OSError` (creating, writing or
    renaming) becomes a `Viz3dError` naming the folder and the file; every failure removes the
    temporary file.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    folder = path.parent
    tmp = _create_temporary(folder, path.name, path.suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise Viz3dError(f"{folder}: cannot write {path.name} ({exc.strerror or exc})") from None
    except BaseException:
        _discard(tmp)
        raise


def _create_temporary(folder: Path, name: str, suffix: str) -> Path:
    """Create an empty hidden ``.NAME.tmp-XXXXXXXX<suffix>`` in ``folder`` (mode 0666 less the umask)."""
    for _ in range(100):
        tmp = folder / f".{name}.tmp-{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as exc:
            raise Viz3dError(f"{folder}: cannot write to the output folder ({exc.strerror or exc})") from None
    raise Viz3dError(f"{folder}: cannot create a temporary file for {name}")


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def output_folder(path: str | Path) -> Path:
    """The existing folder a file ``path`` is to be written in, or `Viz3dError` when ``path`` is a
    folder itself or its folder does not exist: the one check every picture and page writer makes
    before any work.

    >>> output_folder("picture.png")
    PosixPath('.')
    >>> output_folder("/no/such/folder/picture.png")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: /no/such/folder: output folder does not exist (or is not a folder)
    """
    path = Path(path)
    if path.is_dir():
        raise Viz3dError(f"{path}: is a folder, expected a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise Viz3dError(f"{folder}: output folder does not exist (or is not a folder)")
    return folder


def check_output_file(path: str | Path, suffixes: tuple[str, ...], what: str) -> Path:
    """``path`` as a `Path` when it is a file name ending in one of ``suffixes`` (any case) in an
    existing folder (`output_folder`); else `Viz3dError`, saying ``what`` is written for a wrong
    suffix.

    >>> check_output_file("scene.PNG", (".png",), "screenshots are written as PNG").name
    'scene.PNG'
    >>> check_output_file("scene.jpg", (".png",), "screenshots are written as PNG")
    Traceback (most recent call last):
    ...
    viz3d.errors.Viz3dError: scene.jpg: screenshots are written as PNG; use a .png file name
    """
    path = Path(path)
    if not path.name.lower().endswith(tuple(suffixes)):
        raise Viz3dError(f"{path}: {what}; use a {suffixes[0]} file name")
    output_folder(path)
    return path

