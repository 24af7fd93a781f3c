"""A cache of built meshes and decoded CT arrays, keyed by input file content and parameters.

A second run on the same inputs with the same parameters skips decoding and meshing. Entries
live under ``$VIZ3D_CACHE_DIR``, else ``$XDG_CACHE_HOME/viz3d``, else ``~/.cache/viz3d``; each
file is written under a temporary name and renamed, a mesh entry's description last, so a crash
never leaves an entry that loads wrong (at worst array files without a description, which age
out), and an entry that fails to load for any reason is deleted and rebuilt. The oldest entries are evicted
when the cache grows beyond ``VIZ3D_CACHE_MAX_GB`` (default 4 GB).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .meshing import Mesh

FORMAT_VERSION = 2
_CHUNK = 1 << 22


def cache_dir() -> Path:
    """The folder that holds the cache (not created here)."""
    if os.environ.get("VIZ3D_CACHE_DIR"):
        return Path(os.environ["VIZ3D_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "viz3d"


def enabled() -> bool:
    """False when ``VIZ3D_NO_CACHE`` is set."""
    return not os.environ.get("VIZ3D_NO_CACHE")


def content_key(paths: list[str | Path | None], params: dict) -> str:
    """A digest of the files' bytes (all files of a folder, in name order) and the parameters.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.nii"
    >>> _ = f.write_bytes(b"abc")
    >>> content_key([f], {"x": 1}) == content_key([f], {"x": 1}) != content_key([f], {"x": 2})
    True
    """
    digest = hashlib.sha256()  # hardware-accelerated on current CPUs: ~3x blake2b here
    digest.update(json.dumps({"v": FORMAT_VERSION, "params": params}, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(b"\0path\0")
        if path is not None:
            digest.update(_path_digest(Path(path)))
    _remember_digests()
    return digest.hexdigest()[:40]


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
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
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


def _fresh_stat(file: Path) -> os.stat_result:
    """The file's status as of now: taken from an opened file, which makes a network file system
    (NFS) check with its server instead of answering from an attribute cache up to a minute old."""
    with open(file, "rb") as handle:
        return os.fstat(handle.fileno())


def _file_digest(file: Path) -> bytes:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
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


def has_meshes(key: str) -> bool:
    """Whether meshes are stored under ``key`` (`load_meshes` may still find the entry unreadable)."""
    flush()  # an entry this process is still writing
    return _mesh_files(key)["info"].exists()


def load_meshes(key: str) -> tuple[list[Mesh], list[str]] | None:
    """The meshes and notes (warnings given when they were built) stored under ``key``, or None.

    A missing or unreadable entry gives None; an unreadable one is removed.
    """
    flush()
    paths = _mesh_files(key)
    if not paths["info"].exists():
        return None
    try:
        info = json.loads(paths["info"].read_text())
        if info.get("v") != FORMAT_VERSION:
            raise ValueError("old cache format")
        # two plain .npy reads (one allocation each): much faster than an .npz, whose zip
        # layer checksums every byte on the way in
        vertices = np.load(paths["vertices"], allow_pickle=False)
        faces = np.load(paths["faces"], allow_pickle=False)
        if vertices.dtype != np.float64 or faces.dtype != np.int64 or len(vertices) != info["vertex_count"] \
                or len(faces) != info["face_count"]:
            raise ValueError("arrays do not match their description")
        meshes = [
            Mesh(m["name"], m["kind"], m["label"], tuple(m["color"]),
                 vertices[slice(*m["vertices"])], faces[slice(*m["faces"])])
            for m in info["meshes"]
        ]
        for path in paths.values():
            os.utime(path)  # most recently used
        return meshes, list(info.get("notes", []))
    except Exception:  # corrupt, partly evicted or foreign files: never trust them
        for path in paths.values():
            path.unlink(missing_ok=True)
        return None


def save_meshes(key: str, meshes: list[Mesh], notes: list[str] = (), folder: Path | None = None) -> None:
    """Store meshes and notes under ``key``: all vertices (float64, exact) in one array, all faces
    (int64, each mesh's own numbering) in another, and a JSON description written last.

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
    _store(paths["vertices"].name, lambda handle: _write_stacked(handle, [m.vertices for m in meshes], np.float64), folder)
    _store(paths["faces"].name, lambda handle: _write_stacked(handle, [m.faces for m in meshes], np.int64), folder)
    _store(paths["info"].name, lambda handle: handle.write(json.dumps(info).encode()), folder)  # the entry exists from here


_pending: list[threading.Thread] = []


def save_meshes_soon(key: str, meshes: list[Mesh], notes: list[str] = ()) -> None:
    """`save_meshes` in a background thread, so the caller goes on at once; see `flush`.

    The thread is not a daemon: the interpreter waits for it before it exits.
    """
    writer = threading.Thread(target=_save_quietly, args=(key, list(meshes), list(notes), cache_dir()),
                              name="viz3d-cache-write")
    _pending.append(writer)
    writer.start()


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
        handle.write(np.ascontiguousarray(array, dtype=dtype).reshape(-1, 3).data)


def _mesh_files(key: str, folder: Path | None = None) -> dict[str, Path]:
    folder = folder or cache_dir()
    return {"info": folder / f"meshes-{key}.json", "vertices": folder / f"meshes-{key}.vertices.npy",
            "faces": folder / f"meshes-{key}.faces.npy"}


def _array_files(key: str) -> tuple[Path, Path]:
    """The array's .npy file and its JSON description."""
    return cache_dir() / f"array-{key}.npy", cache_dir() / f"array-{key}.json"


def has_array(key: str) -> bool:
    """Whether an array is stored under ``key`` (`load_array` may still find it unreadable)."""
    return all(path.exists() for path in _array_files(key))


def load_array(key: str) -> tuple[np.ndarray, dict] | None:
    """A cached array (memory-mapped, read-only) and its metadata, or None."""
    path, meta_path = _array_files(key)
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
            raise ValueError("shape or dtype mismatch")
        os.utime(path)
        return array, meta
    except Exception:
        path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return None


def save_array(key: str, array: np.ndarray, meta: dict) -> None:
    """Store an array (Fortran order kept) and JSON metadata under ``key``; errors are ignored."""
    meta = dict(meta, shape=list(array.shape), dtype=str(array.dtype))
    path, meta_path = _array_files(key)
    _store(path.name, lambda handle: np.save(handle, array, allow_pickle=False))
    _store(meta_path.name, lambda handle: handle.write(json.dumps(meta, default=str).encode()))


def _store(name: str, write, folder: Path | None = None) -> None:
    folder = folder or cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _evict(folder)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
            os.replace(tmp, folder / name)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # a cache that cannot be written only costs time


def _evict(folder: Path) -> None:
    limit = float(os.environ.get("VIZ3D_CACHE_MAX_GB", "4")) * 2**30
    entries = []
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:  # another writer's temporary file, renamed or removed meanwhile
            continue
        if path.is_file():
            entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size


def clear() -> None:
    """Remove the whole cache folder (after any pending write)."""
    flush()
    shutil.rmtree(cache_dir(), ignore_errors=True)
