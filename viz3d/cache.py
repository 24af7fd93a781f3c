"""A cache of built meshes and decoded CT arrays, keyed by input file content and parameters.

A second run on the same inputs with the same parameters skips decoding and meshing. Entries
live under ``$VIZ3D_CACHE_DIR``, else ``$XDG_CACHE_HOME/viz3d``, else ``~/.cache/viz3d``; each
file is written under a temporary name and renamed, an entry's description last, so a crash
never leaves an entry that loads wrong (at worst array files without a description, which age
out). The description holds a CRC-32 of each of the entry's files and of itself, checked on
every read: an entry that fails to load or to match for any reason is deleted and rebuilt
(with a warning when it was damaged), never trusted.

The cache folder is viz3d's own: viz3d marks a folder it creates with a ``CACHEDIR.TAG``, and a
configured folder that already holds other files gets a ``viz3d`` subfolder instead. Whole
entries, oldest first, are evicted when the cache grows beyond ``VIZ3D_CACHE_MAX_GB`` (default
4 GB); eviction and `clear` delete only files named as viz3d names its entries, never others.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import mmap
import os
import re
import stat
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from .errors import Viz3dError, warn
from .surfaces.meshing import Mesh

FORMAT_VERSION = 3  # 3: every entry carries CRC-32 checksums
_CHUNK = 1 << 22
DEFAULT_MAX_GB = 4.0


def cache_dir() -> Path:
    """The folder that holds the cache (not created here): the configured folder, or its ``viz3d``
    subfolder when the configured one holds files that are not viz3d's (see `_own_folder`)."""
    if os.environ.get("VIZ3D_CACHE_DIR"):
        return _own_folder(Path(os.environ["VIZ3D_CACHE_DIR"]))
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return _own_folder(Path(base) / "viz3d")


def enabled() -> bool:
    """False when ``VIZ3D_NO_CACHE`` is set."""
    return not os.environ.get("VIZ3D_NO_CACHE")


def max_bytes() -> float:
    """The cache's size limit in bytes, from ``VIZ3D_CACHE_MAX_GB`` (gigabytes, default 4).

    Raises
    ------
    Viz3dError
        When the variable is not a finite number of 0 or more (``abc``, ``-1``, ``nan``, ``inf``).
    """
    text = os.environ.get("VIZ3D_CACHE_MAX_GB", "").strip()
    if not text:
        return DEFAULT_MAX_GB * 2**30
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < math.inf:
        raise Viz3dError(f"VIZ3D_CACHE_MAX_GB={os.environ['VIZ3D_CACHE_MAX_GB']!r} is not a size: give the cache's "
                         f"limit in gigabytes, a number of 0 or more (default {DEFAULT_MAX_GB:g}), or unset it")
    return value * 2**30


def content_key(paths: list[str | Path | None], params: dict) -> str:
    """A digest of the files' bytes (all files of a folder, in name order) and the parameters.

    The cache's settings are checked first (`max_bytes`), so a bad one is refused before any work.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.nii"
    >>> _ = f.write_bytes(b"abc")
    >>> content_key([f], {"x": 1}) == content_key([f], {"x": 1}) != content_key([f], {"x": 2})
    True
    """
    max_bytes()
    digest = hashlib.sha256()  # hardware-accelerated on current CPUs: ~3x blake2b here
    digest.update(json.dumps({"v": FORMAT_VERSION, "params": params}, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(b"\0path\0")
        if path is not None:
            digest.update(_path_digest(Path(path)))
    _remember_digests()
    return digest.hexdigest()[:40]


# ------------------------------------------------------------------ the cache folder is viz3d's own

_MARKER = "CACHEDIR.TAG"  # the Cache Directory Tagging convention: backup tools skip the folder
_MARKER_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This folder is viz3d's cache (https://bford.info/cachedir/).\n"
                "# viz3d deletes only its own entries here, never other files.\n")
_KEY = "[0-9a-f]{40}"
# The names of viz3d's files in its cache folder, and of their temporary files (mkstemp's
# ".NAME." prefix and 8 random characters); nothing else is ever deleted there.
_OWN_NAME = re.compile(rf"(meshes-{_KEY}\.(json|vertices\.npy|faces\.npy)|array-{_KEY}\.(npy|json)|digests\.json)")
_TEMPORARY_NAME = re.compile(rf"\.(?P<name>{_OWN_NAME.pattern})\.[a-z0-9_]{{8}}")


def _own_folder(base: Path) -> Path:
    """``base`` if viz3d owns it, else the first ``viz3d`` subfolder below it that viz3d owns or can.

    viz3d owns a folder that carries its marker, and may take one that does not exist yet or
    holds nothing but viz3d's own files (a cache from before the marker); a folder holding other
    files (a ``VIZ3D_CACHE_DIR`` pointed at the user's documents) is never used for entries.
    """
    folder = base
    for _ in range(3):
        if _is_marked(folder) or not _holds_other_files(folder):
            return folder
        folder = folder / "viz3d"
    return folder


def _is_marked(folder: Path) -> bool:
    try:
        return "viz3d" in (folder / _MARKER).read_text(errors="replace")
    except OSError:
        return False


def _holds_other_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything viz3d did not name (a folder that is a file: yes; none: no)."""
    try:
        with os.scandir(folder) as entries:
            return any(not _is_own_name(entry.name) and entry.name != _MARKER for entry in entries)
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _is_own_name(name: str) -> bool:
    return bool(_OWN_NAME.fullmatch(name) or _TEMPORARY_NAME.fullmatch(name))


def _make_own(folder: Path) -> None:
    """Create ``folder`` if needed and mark it as viz3d's cache (`_own_folder` chose it).

    The marker is written in place (not renamed into place: a temporary name would be a file
    of no known name to another viz3d looking meanwhile); writers write the same bytes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not _is_marked(folder):
        (folder / _MARKER).write_text(_MARKER_TEXT)


_DIGESTS_FILE = "digests.json"
_HEX_DIGEST = re.compile("[0-9a-f]{64}")
_DIGESTS_KEPT = 256
# A file changed this recently may change again within the same timestamp tick (a few ms on
# Linux, 2 s on FAT) without its signature changing: its digest is not remembered across runs.
SETTLED_S = 5.0

_digests: dict[str, bytes] = {}  # signature -> digest, this process
_stored: dict[str, str] | None = None  # signature -> hex digest, as read from the cache folder
_new: dict[str, str] = {}  # digests to add to the cache folder's file


def _path_digest(path: Path) -> bytes:
    """The digest of a file's bytes, or of a folder's files (relative names and bytes, in name order).

    Hashing a clinical CT reads 100-300 MB (0.1-0.3 s). Digests are therefore remembered by the
    files' signature: name, size, inode, modification and change times. On Linux file systems a
    write, a copy over the file or a replacement changes the change time, which programs cannot
    set back, so a matching signature means the same bytes (mounts without a change time of their
    own leave size and modification time). They are remembered in this process, and across runs
    in the cache folder.
    """
    files = input_files(path)
    signature, settled = _signature(path, files)
    if signature in _digests:
        return _digests[signature]
    stored = _stored_digests().get(signature)
    if stored is not None:
        _digests[signature] = bytes.fromhex(stored)
        return _digests[signature]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else "").encode() + b"\0")
        digest.update(_file_digest(file))
    _digests[signature] = digest.digest()
    if settled and _signature(path, files) == (signature, True) and enabled():  # unchanged while read
        _new[signature] = digest.hexdigest()
    return _digests[signature]


def _signature(path: Path, files: list[Path]) -> tuple[str, bool]:
    """A digest of what the file system says about ``files``, and whether they have all settled."""
    stats = [_fresh_stat(file) for file in files]
    described = [str(path.resolve())] + [
        [str(file.relative_to(path)) if path.is_dir() else "", s.st_size, s.st_ino, s.st_dev, s.st_mtime_ns,
         s.st_ctime_ns] for file, s in zip(files, stats)]
    newest = max((max(s.st_mtime_ns, s.st_ctime_ns) for s in stats), default=0)
    settled = time.time_ns() - newest > SETTLED_S * 1e9
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:40], settled


def input_files(path: str | Path) -> list[Path]:
    """The files an input consists of: the file itself, or a folder's files in name order.

    Only regular files are ever opened: a named pipe would block the reader forever and a
    device such as ``/dev/zero`` never ends, so they are refused from their status alone.
    A folder (a DICOM series) may hold subfolders; links are followed, and links to nothing
    are not files (as before).

    Raises
    ------
    Viz3dError
        When ``path`` or a file in the folder is not a regular file, or cannot be read.
    """
    path = Path(path)
    mode = _mode(path, path)
    if not stat.S_ISDIR(mode):
        _require_regular(path, mode)
        return [path]
    files = []
    for member in sorted(path.rglob("*")):
        try:
            member_mode = os.stat(member).st_mode
        except OSError:
            continue  # a link to nothing, or gone meanwhile: not one of the series' files
        if not stat.S_ISDIR(member_mode):
            _require_regular(member, member_mode, folder=path)
            files.append(member)
    return files


def _mode(path: Path, shown: Path) -> int:
    try:
        return os.stat(path).st_mode
    except OSError as exc:
        raise Viz3dError(f"{shown}: cannot read it ({exc.strerror or exc})") from None


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _require_regular(file: Path, mode: int, folder: Path | None = None) -> None:
    """Refuse anything but a regular file, saying what it is (`Viz3dError`)."""
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    if folder is None:
        raise Viz3dError(f"{file}: is {kind}, not a regular file: give a NIfTI file or a DICOM folder")
    raise Viz3dError(f"{folder}: holds {file.relative_to(folder)}, which is {kind}, not a regular file: "
                     "a DICOM folder must hold only files and folders")


def _open_regular(file: Path):
    """``file`` opened for reading without blocking on a pipe, refused unless it is a regular file
    (it may have been replaced since `input_files` looked)."""
    try:
        handle = open(file, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK))
    except OSError as exc:
        raise Viz3dError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    mode = os.fstat(handle.fileno()).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        _require_regular(file, mode)
    return handle


def _fresh_stat(file: Path) -> os.stat_result:
    """The file's status as of now: taken from an opened file, which makes a network file system
    (NFS) check with its server instead of answering from an attribute cache up to a minute old."""
    with _open_regular(file) as handle:
        return os.fstat(handle.fileno())


def _file_digest(file: Path) -> bytes:
    digest = hashlib.sha256()
    with _open_regular(file) as handle:
        try:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        except OSError as exc:
            raise Viz3dError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    return digest.digest()


def _stored_digests() -> dict[str, str]:
    """The digests remembered in the cache folder (read once per process; unreadable: none)."""
    global _stored
    if _stored is None:
        _stored = {}
        if enabled():
            try:
                stored = json.loads((cache_dir() / _DIGESTS_FILE).read_text())
                _stored = {k: v for k, v in stored.items() if isinstance(v, str) and _HEX_DIGEST.fullmatch(v)}
            except (OSError, ValueError, AttributeError):
                pass  # none yet, or damaged: digests are computed again
    return _stored


def _remember_digests() -> None:
    """Add the digests computed since the last call to the cache folder's file (newest kept)."""
    if not _new:
        return
    new = dict(_new)
    _new.clear()
    global _stored
    _stored = None  # another process may have added some meanwhile
    merged = {**_stored_digests(), **new}
    merged = dict(list(merged.items())[-_DIGESTS_KEPT:])
    _stored = merged
    _store(_DIGESTS_FILE, lambda handle: handle.write(json.dumps(merged).encode()))


# ------------------------------------------------------------------ entries, checked on every read


class _Damaged(Exception):
    """An entry whose files do not match its description (reason in the message)."""


class _Outdated(Exception):
    """An entry of an older format: replaced without a warning."""


def has_meshes(key: str) -> bool:
    """Whether meshes are stored under ``key`` (`load_meshes` may still find the entry unreadable)."""
    flush()  # an entry this process is still writing
    return _mesh_files(key)["info"].exists()


def load_meshes(key: str) -> tuple[list[Mesh], list[str]] | None:
    """The meshes and notes (warnings given when they were built) stored under ``key``, or None.

    A missing entry gives None. An entry whose description or files do not match their CRC-32
    checksums (a flipped byte, a truncated file) or that fails to load for any other reason is
    removed and gives None, with a warning when it was damaged: the caller rebuilds it.
    """
    flush()
    paths = _mesh_files(key)
    if not paths["info"].exists():
        return None
    try:
        info = _read_description(paths["info"])
        vertices = _read_checked(paths["vertices"], info["checksums"]["vertices"], np.float64,
                                 (info["vertex_count"], 3))
        faces = _read_checked(paths["faces"], info["checksums"]["faces"], np.int64, (info["face_count"], 3))
        meshes = [
            Mesh(m["name"], m["kind"], m["label"], tuple(m["color"]),
                 vertices[slice(*m["vertices"])], faces[slice(*m["faces"])])
            for m in info["meshes"]
        ]
        for path in paths.values():
            os.utime(path)  # most recently used
        return meshes, list(info.get("notes", []))
    except Exception as exc:  # corrupt, partly evicted or foreign files: never trust them
        _discard(paths["info"].name[:-len(".json")], paths.values(), exc)
        return None


def save_meshes(key: str, meshes: list[Mesh], notes: list[str] = (), folder: Path | None = None) -> None:
    """Store meshes and notes under ``key``: all vertices (float64, exact) in one array, all faces
    (int64, each mesh's own numbering) in another, and a JSON description written last that
    holds both files' CRC-32 checksums and its own.

    Errors are ignored: a cache that cannot be written only costs time.
    """
    vertex_ends = np.cumsum([0] + [len(m.vertices) for m in meshes])
    face_ends = np.cumsum([0] + [len(m.faces) for m in meshes])
    info = {"v": FORMAT_VERSION, "notes": list(notes), "vertex_count": int(vertex_ends[-1]),
            "face_count": int(face_ends[-1]), "meshes": [
                {"name": m.name, "kind": m.kind, "label": m.label, "color": [float(c) for c in m.color],
                 "vertices": [int(vertex_ends[i]), int(vertex_ends[i + 1])],
                 "faces": [int(face_ends[i]), int(face_ends[i + 1])]}
                for i, m in enumerate(meshes)]}
    paths = _mesh_files(key, folder)
    info["checksums"] = {
        "vertices": _store(paths["vertices"].name,
                           lambda handle: _write_stacked(handle, [m.vertices for m in meshes], np.float64), folder),
        "faces": _store(paths["faces"].name,
                        lambda handle: _write_stacked(handle, [m.faces for m in meshes], np.int64), folder)}
    if None not in info["checksums"].values():
        _store(paths["info"].name, lambda handle: handle.write(_described(info)), folder)  # the entry exists from here


_pending: list[threading.Thread] = []


def save_meshes_soon(key: str, meshes: list[Mesh], notes: list[str] = ()) -> None:
    """`save_meshes` in a background thread with `viz3d.runtime.enable`, so the caller goes on at
    once (see `flush`); without it, before returning.

    The thread is not a daemon: the interpreter waits for it before it exits.
    """
    from . import runtime

    if not runtime.enabled():
        _save_quietly(key, list(meshes), list(notes), cache_dir())
        return
    _pending.append(runtime.start_thread(_save_quietly, name="cache-write",
                                         args=(key, list(meshes), list(notes), cache_dir())))


def _save_quietly(*args) -> None:
    try:
        save_meshes(*args)
    except Exception:  # noqa: BLE001 - a cache that cannot be written only costs time
        pass


def flush() -> None:
    """Wait until the cache writes started by `save_meshes_soon` are complete."""
    while True:
        try:
            writer = _pending.pop()
        except IndexError:
            return
        writer.join()


def _write_stacked(handle, arrays, dtype) -> None:
    """One .npy of (N, 3) ``arrays`` stacked in order, written piece by piece (no stacked copy)."""
    total = sum(len(a) for a in arrays)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (total, 3)}
    np.lib.format.write_array_header_1_0(handle, header)
    for array in arrays:
        handle.write(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8).data)


def _write_array(handle, array: np.ndarray) -> None:
    """One .npy of ``array`` in its own memory order (a Fortran-ordered CT stays so), 16 MB at a time."""
    fortran = array.flags.f_contiguous and not array.flags.c_contiguous
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": bool(fortran),
              "shape": tuple(array.shape)}
    np.lib.format.write_array_header_2_0(handle, header) if len(repr(header)) > 60000 else \
        np.lib.format.write_array_header_1_0(handle, header)
    flat = (array.T if fortran else np.ascontiguousarray(array)).reshape(-1).view(np.uint8)
    for start in range(0, len(flat), _CHUNK * 4):
        handle.write(flat[start:start + _CHUNK * 4].data)


def _described(description: dict) -> bytes:
    """A JSON description with the CRC-32 of its own content added (``checksum``)."""
    body = json.loads(json.dumps(description, default=str))  # as it will read back
    return json.dumps({**body, "checksum": _text_checksum(body)}).encode()


def _text_checksum(body: dict) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def _read_description(path: Path) -> dict:
    """A description written by `_described`, of this format, whose content matches its checksum."""
    body = json.loads(path.read_bytes())
    if not isinstance(body, dict) or body.get("v") != FORMAT_VERSION:
        raise _Outdated()
    if body.pop("checksum", None) != _text_checksum(body):
        raise _Damaged("its description does not match its checksum")
    return body


def _read_checked(path: Path, checksum: int, dtype, shape: tuple) -> np.ndarray:
    """A (writable) array read from a .npy file whose bytes match ``checksum`` and whose header
    gives ``dtype`` and ``shape`` in C order: one read into one buffer, the array a view of it."""
    with open(path, "rb") as handle:
        buffer = np.empty(os.fstat(handle.fileno()).st_size, np.uint8)
        if handle.readinto(buffer.data) != len(buffer):
            raise _Damaged(f"{path.name} changed while read")
    if zlib.crc32(buffer.data) != checksum:
        raise _Damaged(f"{path.name} does not match its checksum")
    header = io.BytesIO(buffer[:4096].tobytes())
    version = np.lib.format.read_magic(header)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    stored_shape, fortran, stored_dtype = read_header(header)
    if stored_shape != tuple(shape) or fortran or stored_dtype != np.dtype(dtype):
        raise _Damaged(f"{path.name} does not match its description")
    return buffer[header.tell():].view(dtype).reshape(shape)


def _discard(entry: str, paths, error: Exception) -> None:
    """Remove an entry that failed to load; warn unless it was merely of an older format or
    removed meanwhile (another run's eviction)."""
    for path in paths:
        path.unlink(missing_ok=True)
    if not isinstance(error, (_Outdated, FileNotFoundError)):
        reason = str(error) if isinstance(error, _Damaged) else f"unreadable: {type(error).__name__}: {error}"
        warn(f"cache entry {entry} damaged ({reason}), rebuilt", stacklevel=4)


def _mesh_files(key: str, folder: Path | None = None) -> dict[str, Path]:
    folder = folder or cache_dir()
    return {"info": folder / f"meshes-{key}.json", "vertices": folder / f"meshes-{key}.vertices.npy",
            "faces": folder / f"meshes-{key}.faces.npy"}


def _array_files(key: str) -> tuple[Path, Path]:
    """The array's .npy file and its JSON description."""
    folder = cache_dir()
    return folder / f"array-{key}.npy", folder / f"array-{key}.json"


def has_array(key: str) -> bool:
    """Whether an array is stored under ``key`` (`load_array` may still find it unreadable)."""
    return all(path.exists() for path in _array_files(key))


def load_array(key: str) -> tuple[np.ndarray, dict] | None:
    """A cached array (memory-mapped, read-only) and its metadata, or None.

    The file's bytes are checked against the CRC-32 in its description (through the same
    mapping, so the check reads them once); a damaged entry is removed, with a warning.
    """
    path, meta_path = _array_files(key)
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        meta = _read_description(meta_path)
        with open(path, "rb") as handle:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as whole:
                if zlib.crc32(whole) != meta["checksum_npy"]:
                    raise _Damaged(f"{path.name} does not match its checksum")
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            if list(shape) != meta["shape"] or str(dtype) != meta["dtype"]:
                raise _Damaged(f"{path.name} does not match its description")
            array = np.memmap(handle, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C",
                              offset=handle.tell())
        os.utime(path)
        os.utime(meta_path)
        return array, meta
    except Exception as exc:
        _discard(path.name[:-len(".npy")], (meta_path, path), exc)
        return None


def save_array(key: str, array: np.ndarray, meta: dict) -> None:
    """Store an array (Fortran order kept) and JSON metadata under ``key``, the description (with
    the array file's CRC-32) last; errors are ignored."""
    meta = dict(meta, shape=list(array.shape), dtype=str(array.dtype))
    path, meta_path = _array_files(key)
    checksum = _store(path.name, lambda handle: _write_array(handle, array))
    if checksum is not None:
        _store(meta_path.name, lambda handle: handle.write(_described(dict(meta, v=FORMAT_VERSION,
                                                                             checksum_npy=checksum))))


class _Checksummed:
    """A binary file that keeps the CRC-32 of what is written through it."""

    def __init__(self, handle):
        self.handle, self.crc = handle, 0

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.handle.write(data)


def _store(name: str, write, folder: Path | None = None) -> int | None:
    """Write a file of the cache under a temporary name, then rename it; its CRC-32, or None when
    it could not be written (a cache that cannot be written only costs time)."""
    folder = folder or cache_dir()
    try:
        _make_own(folder)
        _evict(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                checksummed = _Checksummed(handle)
                write(checksummed)
            os.replace(tmp, folder / name)
            return checksummed.crc
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, Viz3dError):
        return None


def _entries(folder: Path) -> list[tuple[float, int, list[Path]]]:
    """viz3d's entries in ``folder``: (last use, bytes, files: description first), by name alone.

    A mesh entry's three files and an array's two go together; a temporary file of a writer
    (possibly dead) is an entry of its own. The digest memory and the marker are not entries.
    """
    groups: dict[str, list] = {}
    with os.scandir(folder) as found:
        for entry in found:
            if not _is_own_name(entry.name) or entry.name == _DIGESTS_FILE:
                continue
            try:
                status = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # another writer's temporary file, renamed or removed meanwhile
                continue
            if not stat.S_ISREG(status.st_mode):
                continue
            group = entry.name if entry.name.startswith(".") else entry.name.split(".")[0]
            groups.setdefault(group, []).append((status.st_mtime, status.st_size, folder / entry.name))
    return [(max(t for t, _, _ in files), sum(size for _, size, _ in files),
             sorted((path for _, _, path in files), key=lambda path: not path.name.endswith(".json")))
            for files in groups.values()]


def _evict(folder: Path) -> None:
    """Remove whole entries, least recently used first, until the cache fits `max_bytes`."""
    limit = max_bytes()
    entries = _entries(folder)
    total = sum(size for _, size, _ in entries)
    for _, size, files in sorted(entries, key=lambda entry: entry[0]):
        if total <= limit:
            break
        for path in files:  # the description first: the entry is gone at once
            path.unlink(missing_ok=True)
        total -= size


def clear() -> None:
    """Remove viz3d's cache entries (after any pending write), then its marker and the folder if
    nothing else is left in it; files viz3d did not write are never touched."""
    flush()
    folder = cache_dir()
    try:
        with os.scandir(folder) as found:
            names = [entry.name for entry in found]
    except OSError:
        return
    for name in names:
        if _is_own_name(name) and not (folder / name).is_dir():
            (folder / name).unlink(missing_ok=True)
    if _is_marked(folder) and set(os.listdir(folder)) <= {_MARKER}:
        (folder / _MARKER).unlink(missing_ok=True)
        folder.rmdir()
