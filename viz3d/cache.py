"""A cache of built meshes and decoded CT arrays, keyed by input file content and parameters.

A second run on the same inputs with the same parameters skips decoding and meshing. Entries
live under ``$VIZ3D_CACHE_DIR``, else ``$XDG_CACHE_HOME/viz3d``, else ``~/.cache/viz3d``; they
are written under a temporary name and renamed, so a crash never leaves a half entry, and an
entry that fails to load for any reason is deleted and rebuilt. The oldest entries are evicted
when the cache grows beyond ``VIZ3D_CACHE_MAX_GB`` (default 4 GB).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .meshing import Mesh

FORMAT_VERSION = 1
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
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps({"v": FORMAT_VERSION, "params": params}, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(b"\0path\0")
        if path is None:
            continue
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(path) if path.is_dir() else "").encode() + b"\0")
            with open(file, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
    return digest.hexdigest()


def load_meshes(key: str) -> tuple[list[Mesh], list[str]] | None:
    """The meshes and notes (warnings given when they were built) stored under ``key``, or None.

    A missing or unreadable entry gives None; an unreadable one is removed.
    """
    path = cache_dir() / f"meshes-{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info"]))
            meshes = [
                Mesh(m["name"], m["kind"], m["label"], tuple(m["color"]),
                     data[f"v{i}"], data[f"f{i}"].astype(np.int64))
                for i, m in enumerate(info["meshes"])
            ]
        if info.get("v") != FORMAT_VERSION:
            raise ValueError("old cache format")
        os.utime(path)  # most recently used
        return meshes, list(info.get("notes", []))
    except Exception:  # corrupt or foreign file: never trust it
        path.unlink(missing_ok=True)
        return None


def save_meshes(key: str, meshes: list[Mesh], notes: list[str] = ()) -> None:
    """Store meshes and notes under ``key`` (vertices as they are, int32 faces where they fit).

    Errors are ignored: a cache that cannot be written only costs time.
    """
    arrays = {}
    for i, mesh in enumerate(meshes):
        arrays[f"v{i}"] = np.asarray(mesh.vertices, dtype=np.float64)  # exact: cached == rebuilt
        arrays[f"f{i}"] = mesh.faces.astype(np.int32 if len(mesh.vertices) < 2**31 else np.int64)
    info = {"v": FORMAT_VERSION, "notes": list(notes), "meshes": [
        {"name": m.name, "kind": m.kind, "label": m.label, "color": [float(c) for c in m.color]} for m in meshes]}
    _store(f"meshes-{key}.npz", lambda handle: np.savez(handle, info=np.array(json.dumps(info)), **arrays))


def load_array(key: str) -> tuple[np.ndarray, dict] | None:
    """A cached array (memory-mapped, read-only) and its metadata, or None."""
    path, meta_path = cache_dir() / f"array-{key}.npy", cache_dir() / f"array-{key}.json"
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
    _store(f"array-{key}.npy", lambda handle: np.save(handle, array, allow_pickle=False))
    _store(f"array-{key}.json", lambda handle: handle.write(json.dumps(meta, default=str).encode()))


def _store(name: str, write) -> None:
    folder = cache_dir()
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
    entries = [(p.stat().st_mtime, p.stat().st_size, p) for p in folder.iterdir() if p.is_file()]
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= size


def clear() -> None:
    """Remove the whole cache folder."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
