"""The mesh and CT cache: reuse on a second run, rebuild on any change or corruption."""
import json
import os
import time

import numpy as np
import nibabel as nib
import pytest
from shapes import write_box_case

import viz3d.api as api
from viz3d import cache
from viz3d.errors import Viz3dWarning


@pytest.fixture
def case(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(tmp_path / "cache"))
    return write_box_case(tmp_path, shape=(30, 30, 20), bone=np.s_[8:20, 8:20, 5:15], label=np.s_[9:19, 9:19, 6:14],
                          value=3, affine=np.diag([-1.5, 1.2, 2.0, 1.0]))


def counting(monkeypatch):
    calls = []
    real = api._build_meshes

    def wrapped(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "_build_meshes", wrapped)
    return calls


def test_second_run_reuses_meshes_and_ct(case, monkeypatch):
    calls = counting(monkeypatch)
    ct1, first = api.load_and_mesh(*case)
    ct2, second = api.load_and_mesh(*case)
    assert len(calls) == 1
    assert [(m.name, m.kind, m.label, m.color) for m in first] == [(m.name, m.kind, m.label, m.color) for m in second]
    for a, b in zip(first, second):
        assert np.array_equal(a.faces, b.faces) and np.array_equal(a.vertices, b.vertices)
    assert np.array_equal(ct1.array, ct2.array) and np.allclose(ct1.affine, ct2.affine)
    assert isinstance(ct2.array, np.memmap)  # decoded CT read straight from the cache


def test_changed_parameters_or_content_rebuild(case, monkeypatch, tmp_path):
    calls = counting(monkeypatch)
    api.load_and_mesh(*case)
    api.load_and_mesh(*case, bone_hu=300)
    api.load_and_mesh(*case, smooth=False)
    label = np.asarray(nib.load(case[1]).dataobj)
    label[2:4, 2:4, 2:4] = 5
    nib.save(nib.Nifti1Image(label, nib.load(case[1]).affine), case[1])
    _, meshes = api.load_and_mesh(*case)
    assert len(calls) == 4
    assert [m.label for m in meshes if m.kind == "label"] == [3, 5]


def test_corrupt_entries_are_rebuilt(case, monkeypatch):
    calls = counting(monkeypatch)
    _, first = api.load_and_mesh(*case)
    cache.flush()
    for entry in cache.cache_dir().iterdir():
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # truncated by a crash or full disk
    ct, again = api.load_and_mesh(*case)
    assert len(calls) == 2 and len(again) == len(first)
    assert ct.array.min() == -1000 and ct.array.max() == 800


def test_a_partly_evicted_entry_is_rebuilt(case, monkeypatch):
    calls = counting(monkeypatch)
    api.load_and_mesh(*case)
    cache.flush()
    (faces,) = cache.cache_dir().glob("meshes-*.faces.npy")
    faces.unlink()  # the size limit removed one file of the entry
    _, meshes = api.load_and_mesh(*case)
    assert len(calls) == 2 and [m.label for m in meshes] == [3, None]
    cache.flush()
    assert len(list(cache.cache_dir().glob("meshes-*"))) == 3  # the entry is whole again
    _, again = api.load_and_mesh(*case)
    assert len(calls) == 2 and all(np.array_equal(a.faces, b.faces) for a, b in zip(meshes, again))


def test_no_cache_switch(case, monkeypatch):
    calls = counting(monkeypatch)
    api.load_and_mesh(*case, use_cache=False)
    api.load_and_mesh(*case, use_cache=False)
    assert len(calls) == 2 and not cache.cache_dir().exists()


def test_warnings_are_repeated_once_from_the_cache(tmp_path, monkeypatch):
    """A grid mismatch warns on the first run and, from the cache, exactly once on the second."""
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(tmp_path / "cache"))
    ct = np.full((30, 30, 20), -1000, np.int16)
    ct[8:20, 8:20, 5:15] = 800
    label = np.zeros((30, 30, 20), np.uint8)
    label[9:19, 9:19, 6:14] = 3
    nib.save(nib.Nifti1Image(ct, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 2.5, 1.0])), tmp_path / "label.nii.gz")
    for _ in range(2):
        with pytest.warns(Viz3dWarning) as caught:
            api.load_and_mesh(tmp_path / "ct.nii.gz", tmp_path / "label.nii.gz")
        grids = [str(w.message) for w in caught if "different grids" in str(w.message)]
        assert len(grids) == 1, [str(w.message) for w in caught]


def test_collected_warnings_belong_to_their_thread():
    """A CT read in the background keeps its notes apart from the meshes built meanwhile."""
    import threading

    from viz3d.errors import collecting_warnings, warn

    seen = {}
    inside = threading.Barrier(2, timeout=5)

    def worker(name):
        with collecting_warnings() as notes:
            inside.wait()  # both blocks open at once
            warn(f"note from {name}")
            inside.wait()
        seen[name] = notes

    with pytest.warns(Viz3dWarning):
        threads = [threading.Thread(target=worker, args=(n,)) for n in ("ct", "meshes")]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert seen == {"ct": ["note from ct"], "meshes": ["note from meshes"]}


def test_eviction_skips_files_that_vanish_meanwhile(tmp_path, monkeypatch):
    """Another writer's temporary file may be renamed or removed while the cache is scanned (here:
    a link to nothing, whose stat fails the same way): the entry is still written."""
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / ".array-x.npy.tmp").symlink_to(tmp_path / "gone")
    cache.save_array("k", np.arange(6, dtype=np.int16).reshape(1, 2, 3), {"affine": np.eye(4).tolist()})
    array, meta = cache.load_array("k")
    assert array.tolist() == [[[0, 1, 2], [3, 4, 5]]] and meta["affine"] == np.eye(4).tolist()


def test_meshes_cached_says_what_load_and_mesh_will_do(case, monkeypatch, tmp_path):
    assert not api.meshes_cached(*case)
    api.load_and_mesh(*case)
    assert api.meshes_cached(*case)
    assert not api.meshes_cached(*case, bone_hu=300) and not api.meshes_cached(*case, labels=[3])
    calls = counting(monkeypatch)
    api.load_and_mesh(*case)
    assert calls == []  # it did take them from the cache
    monkeypatch.setenv("VIZ3D_NO_CACHE", "1")
    assert not api.meshes_cached(*case)
    with pytest.raises(api.Viz3dError, match="no such file"):
        api.meshes_cached(tmp_path / "missing.nii.gz")


def test_scene_commands_import_pyvista_first_only_when_meshes_are_cached(case, monkeypatch):
    """A first run imports what loading and meshing need before PyVista (whose VTK libraries
    hold other threads' imports up while they load); a cached run starts with PyVista."""
    import argparse

    import viz3d.cli.main as cli
    import viz3d.runtime as runtime

    firsts = []
    monkeypatch.setattr(runtime, "import_pyvista_soon", lambda first=(): firsts.append(first))
    args = argparse.Namespace(ct=str(case[0]), label=str(case[1]), label_table=None, labels=None, no_bone=False,
                              bone_hu=200.0, no_smooth=False, no_cache=False)
    console = cli._Console(quiet=True)
    for _ in range(2):
        cli._inputs_and_meshes(args, console)
    cli._inputs_and_meshes(argparse.Namespace(**{**vars(args), "no_cache": True}), console)
    assert firsts == [api.MESHING_MODULES, (), api.MESHING_MODULES]
    assert {"nibabel", "scipy.ndimage", "vtkmodules.vtkFiltersCore"} <= set(api.MESHING_MODULES)


def test_files_decompressed_early_are_all_taken(case, monkeypatch, speedups):
    """The label map (on a mesh-cache miss) and the CT (unless its decoded array is cached) start
    decompressing early; every buffer started is used, none is left behind (a CT whose array is
    in the cache is not decompressed at all)."""
    import viz3d.io.volume as volume

    started = []
    real = volume.inflate_soon
    monkeypatch.setattr(api, "inflate_soon", lambda path: (started.append(str(path)), real(path)))
    ct, label = map(str, case)
    api.load_and_mesh(ct, label)  # nothing cached
    assert started == [label, ct] and not volume._inflating
    started.clear()
    api.load_and_mesh(ct, label, bone_hu=300)  # new meshes; the CT's array comes from the cache
    assert started == [label] and not volume._inflating
    started.clear()
    api.load_and_mesh(ct, label, bone_hu=300)  # all cached
    assert started == [] and not volume._inflating
    api.load_and_mesh(ct, label, bone_hu=400, cache_ct=False)  # as export: the CT first, at once
    assert started == [ct, label] and not volume._inflating


def test_nothing_decompressed_early_is_left_behind(case, monkeypatch, speedups):
    """A CT whose cached array turns up after the check (another run wrote it meanwhile), and a
    label map whose load an error pre-empts, leave no decompressed buffer held."""
    import viz3d.io.volume as volume

    api.load_and_mesh(*case)  # the CT's array is cached now
    monkeypatch.setattr(cache, "has_array", lambda key: False)  # as if written just after the check
    api.load_and_mesh(*case, bone_hu=300)
    assert not volume._inflating

    def fail(stage, *args):
        if stage == "loading CT":
            raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        api.load_and_mesh(*case, bone_hu=400, progress=fail)
    assert not volume._inflating


@pytest.fixture
def digests(tmp_path, monkeypatch):
    """A fresh cache folder and fresh digest memory, files counted as settled at once."""
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "SETTLED_S", 0.0)
    new_process(monkeypatch)
    return tmp_path


def new_process(monkeypatch):
    """Forget the digests held in memory, as a new run starts."""
    monkeypatch.setattr(cache, "_digests", {})
    monkeypatch.setattr(cache, "_stored", None)
    monkeypatch.setattr(cache, "_new", {})


def unread(file):
    raise AssertionError(f"{file} was read again")


def test_unchanged_inputs_are_not_read_again_on_the_next_run(digests, monkeypatch):
    a, folder = digests / "a.nii", digests / "series"
    a.write_bytes(b"abc")
    folder.mkdir()
    for name in ("1.dcm", "2.dcm"):
        (folder / name).write_bytes(name.encode())
    first = cache.content_key([a, folder], {})
    new_process(monkeypatch)
    monkeypatch.setattr(cache, "_file_digest", unread)
    assert cache.content_key([a, folder], {}) == first


def test_a_rewrite_with_the_same_size_and_times_changes_the_key(digests, monkeypatch):
    a = digests / "a.nii"
    a.write_bytes(b"abc")
    first = cache.content_key([a], {})
    before = a.stat()
    time.sleep(0.05)  # the change time moves on in ticks of a few ms
    with open(a, "r+b") as handle:  # same inode, same size
        handle.write(b"abd")
    os.utime(a, ns=(before.st_atime_ns, before.st_mtime_ns))  # the modification time set back
    new_process(monkeypatch)
    # the key of the new bytes, as a fresh copy of them (never seen before) gets it
    assert cache.content_key([a], {}) == cache.content_key([_copy(a, digests / "b.nii")], {}) != first


def _copy(source, target):
    target.write_bytes(source.read_bytes())
    return target


def test_a_folder_with_a_file_added_gets_a_new_key(digests, monkeypatch):
    folder = digests / "series"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(b"one")
    first = cache.content_key([folder], {})
    (folder / "2.dcm").write_bytes(b"two")
    new_process(monkeypatch)
    assert cache.content_key([folder], {}) != first


def test_recently_changed_files_are_hashed_on_every_run(digests, monkeypatch):
    monkeypatch.setattr(cache, "SETTLED_S", 3600.0)
    a = digests / "a.nii"
    a.write_bytes(b"abc")
    first = cache.content_key([a], {})
    assert not (cache.cache_dir() / cache._DIGESTS_FILE).exists()
    new_process(monkeypatch)
    reads = []
    monkeypatch.setattr(cache, "_file_digest", lambda file, real=cache._file_digest: reads.append(file) or real(file))
    assert cache.content_key([a], {}) == first and reads == [a]


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"x": 5}', b"", b'{"KEY": "' + b"z" * 64 + b'"}'])
def test_a_damaged_digest_file_is_ignored_and_replaced(digests, monkeypatch, damage):
    a = digests / "a.nii"
    a.write_bytes(b"abc")
    first = cache.content_key([a], {})
    stored = cache.cache_dir() / cache._DIGESTS_FILE
    (key,) = json.loads(stored.read_text())
    stored.write_bytes(damage.replace(b"KEY", key.encode()))  # a 64-character value that is not hex
    new_process(monkeypatch)
    assert cache.content_key([a], {}) == first
    assert len(json.loads(stored.read_text())) == 1


def test_no_digest_file_without_the_cache(digests, monkeypatch):
    monkeypatch.setenv("VIZ3D_NO_CACHE", "1")
    a = digests / "a.nii"
    a.write_bytes(b"abc")
    cache.content_key([a], {})
    assert not cache.cache_dir().exists()


# ------------------------------------------------------------------ issue 19: settings, inputs, damage, ownership


def run_cli(capsys, *args):
    from viz3d.cli.main import main

    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def one_error_line(err: str, *fragments: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("viz3d: error: ") and "internal error" not in lines[0], lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e400"])
def test_a_cache_size_limit_that_is_not_a_size_is_refused_naming_the_variable(case, monkeypatch, capsys, tmp_path, value):
    monkeypatch.setenv("VIZ3D_CACHE_MAX_GB", value)
    with pytest.raises(api.Viz3dError, match="VIZ3D_CACHE_MAX_GB"):
        api.load_and_mesh(*case)
    status, err = run_cli(capsys, "export", case[0], "--label", case[1], "--out", tmp_path / "out")
    assert status == 2
    one_error_line(err, f"VIZ3D_CACHE_MAX_GB={value!r}", "gigabytes")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("VIZ3D_NO_CACHE", "1")  # without the cache the setting does not matter
    api.load_and_mesh(*case)


def test_cache_size_limits_that_are_sizes_are_taken(monkeypatch):
    for value, expected in (("0", 0.0), ("2.5", 2.5 * 2**30), (" 4 ", 4.0 * 2**30), ("", 4.0 * 2**30)):
        monkeypatch.setenv("VIZ3D_CACHE_MAX_GB", value)
        assert cache.max_bytes() == expected


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_pipe_or_a_device_as_input_is_refused_at_once(tmp_path, kind):
    """A named pipe blocked the cache's hashing (and the loader) forever; /dev/zero never ended."""
    import subprocess
    import sys

    if kind == "fifo":
        source = tmp_path / "label.nii.gz"
        os.mkfifo(source)
        expected = "is a named pipe (FIFO), not a regular file"
    else:
        source = "/dev/zero"
        expected = "is a character device, not a regular file"
    env = dict(os.environ, VIZ3D_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "viz3d", "export", source, "--label", source, "--out",
                           tmp_path / "out"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    one_error_line(done.stderr, f"{source}: {expected}")


def test_a_dicom_folder_holding_a_pipe_is_refused_naming_it(digests):
    series = digests / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"one")
    os.mkfifo(series / "2.dcm")
    with pytest.raises(api.Viz3dError, match=r"series: holds 2\.dcm, which is a named pipe \(FIFO\), not a regular file"):
        cache.content_key([series], {})


def flip_byte(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def only(folder, pattern):
    (path,) = folder.glob(pattern)
    return path


DAMAGES = {
    "a flipped vertex byte": lambda folder: flip_byte(only(folder, "meshes-*.vertices.npy"), -100),
    "a flipped face byte": lambda folder: flip_byte(only(folder, "meshes-*.faces.npy"), -3),
    "truncated vertices": lambda folder: only(folder, "meshes-*.vertices.npy").write_bytes(
        only(folder, "meshes-*.vertices.npy").read_bytes()[:-24]),
    "a changed range in the description": lambda folder: only(folder, "meshes-*.json").write_text(
        only(folder, "meshes-*.json").read_text().replace('"vertices": [0, ', '"vertices": [1, ', 1)),
    "an empty faces file": lambda folder: only(folder, "meshes-*.faces.npy").write_bytes(b""),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_mesh_entry_is_rebuilt_with_a_warning_never_trusted(case, monkeypatch, damage):
    calls = counting(monkeypatch)
    _, first = api.load_and_mesh(*case)
    cache.flush()
    DAMAGES[damage](cache.cache_dir())
    with pytest.warns(Viz3dWarning, match=r"cache entry meshes-[0-9a-f]{40} damaged \(.+\), rebuilt"):
        _, again = api.load_and_mesh(*case)
    assert len(calls) == 2
    assert [(m.name, m.label) for m in again] == [(m.name, m.label) for m in first]
    for a, b in zip(first, again):
        assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    cache.flush()
    _, third = api.load_and_mesh(*case)  # the rebuilt entry is whole and trusted again
    assert len(calls) == 2 and all(np.array_equal(a.vertices, b.vertices) for a, b in zip(first, third))


@pytest.mark.parametrize("where", ["data", "description"])
def test_a_damaged_ct_entry_is_rebuilt_with_a_warning_never_trusted(case, where):
    ct1, _ = api.load_and_mesh(*case)
    expected = np.array(ct1.array)
    folder = cache.cache_dir()
    if where == "data":
        flip_byte(only(folder, "array-*.npy"), -7)
    else:
        path = only(folder, "array-*.json")
        path.write_text(path.read_text().replace('"affine": [[-1.5', '"affine": [[-2.5', 1))
    with pytest.warns(Viz3dWarning, match=r"cache entry array-[0-9a-f]{40} damaged \(.+\), rebuilt"):
        ct2, _ = api.load_and_mesh(*case, bone_hu=300)
    assert np.array_equal(ct2.array, expected) and np.allclose(ct2.affine, ct1.affine)
    ct3, _ = api.load_and_mesh(*case, bone_hu=400)
    assert isinstance(ct3.array, np.memmap) and np.array_equal(ct3.array, expected)


def test_entries_of_the_older_format_are_replaced_quietly(case, monkeypatch, recwarn):
    monkeypatch.setattr(cache, "FORMAT_VERSION", 2)
    api.load_and_mesh(*case)
    cache.flush()
    monkeypatch.undo()
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(cache.cache_dir()))
    api.load_and_mesh(*case)
    assert not [w for w in recwarn if "damaged" in str(w.message)]


def test_eviction_and_clear_never_touch_files_viz3d_did_not_write(case, tmp_path, monkeypatch):
    """VIZ3D_CACHE_DIR pointed at a folder of the user's: eviction deleted their thesis."""
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.txt").write_text("four years of work\n")
    (documents / "array-notes.npy").write_bytes(b"not viz3d's either")
    monkeypatch.setenv("VIZ3D_CACHE_DIR", str(documents))
    calls = counting(monkeypatch)
    api.load_and_mesh(*case)
    api.load_and_mesh(*case)
    cache.flush()
    assert len(calls) == 1  # the cache works, in a folder of its own
    assert cache.cache_dir() == documents / "viz3d" and (documents / "viz3d" / "CACHEDIR.TAG").is_file()
    monkeypatch.setenv("VIZ3D_CACHE_MAX_GB", "0")  # every entry evicted at the next write
    api.load_and_mesh(*case, bone_hu=300)
    cache.flush()
    assert sorted(p.name for p in documents.iterdir()) == ["array-notes.npy", "thesis.txt", "viz3d"]
    cache.clear()
    assert sorted(p.name for p in documents.iterdir()) == ["array-notes.npy", "thesis.txt"]
    assert (documents / "thesis.txt").read_text() == "four years of work\n"


def test_in_its_own_folder_the_cache_deletes_only_its_own_entries(case, monkeypatch):
    """A file put into the marked cache folder later is no entry: never evicted, kept by clear."""
    api.load_and_mesh(*case)
    cache.flush()
    folder = cache.cache_dir()
    (folder / "readme.txt").write_text("mine")
    (folder / "meshes-mine.json").write_text("{}")  # a viz3d-like name, but not one viz3d writes
    monkeypatch.setenv("VIZ3D_CACHE_MAX_GB", "0")
    api.load_and_mesh(*case, bone_hu=300)
    cache.flush()
    assert cache.cache_dir() == folder
    assert {p.name for p in folder.iterdir()} >= {"readme.txt", "meshes-mine.json"}
    cache.clear()
    assert sorted(p.name for p in folder.iterdir()) == ["CACHEDIR.TAG", "meshes-mine.json", "readme.txt"]


def test_eviction_removes_whole_entries_least_recently_used_first(digests, monkeypatch):
    rows = np.zeros((40_000, 3))
    def mesh(label):
        return cache.Mesh(f"m{label}", "label", label, (1.0, 0.0, 0.0), rows + label, rows.astype(np.int64))
    keys = [f"{i:040x}" for i in range(3)]
    for key, label in zip(keys, range(3)):
        cache.save_meshes(key, [mesh(label)])
        for path in cache.cache_dir().glob(f"meshes-{key}*"):
            os.utime(path, (1e9 + label, 1e9 + label))  # used in this order, long ago
    assert cache.load_meshes(keys[0]) is not None  # used: now the most recent
    size = sum(p.stat().st_size for p in cache.cache_dir().glob("meshes-*"))
    monkeypatch.setenv("VIZ3D_CACHE_MAX_GB", str(size * 0.9 / 2**30))
    cache.save_array("f" * 40, np.zeros(3, np.int16), {})
    names = {p.name for p in cache.cache_dir().iterdir()}
    assert not any(keys[1] in name for name in names)  # the least recently used, all three files
    assert sum(keys[0] in name for name in names) == 3 and sum(keys[2] in name for name in names) == 3


def test_an_older_unmarked_cache_folder_is_adopted(case, monkeypatch, tmp_path):
    api.load_and_mesh(*case)
    cache.flush()
    folder = cache.cache_dir()
    (folder / "CACHEDIR.TAG").unlink()  # as a cache from before the marker
    assert cache.cache_dir() == folder


@pytest.mark.parametrize("change", ["colour", "name"])
def test_a_changed_built_in_table_is_never_served_from_the_cache(case, monkeypatch, change):
    """The key holds a digest of the resolved table's names and colours: a built-in table changed
    (by a new viz3d, an edited package) rebuilds the meshes, which carry the new colour or name."""
    import dataclasses

    from viz3d.io import labels

    _, first = api.load_and_mesh(*case)
    real = labels.builtin_table

    def changed(name):
        table = real(name)
        if change == "colour":
            return dataclasses.replace(table, colors={**table.colors, 3: (0.1, 0.2, 0.3)})
        return dataclasses.replace(table, names={**table.names, 3: "renamed"})

    monkeypatch.setattr(labels, "builtin_table", changed)
    calls = counting(monkeypatch)
    _, second = api.load_and_mesh(*case)
    assert calls == [1]
    (before,), (after,) = ([m for m in meshes if m.kind == "label"] for meshes in (first, second))
    if change == "colour":
        assert before.color != (0.1, 0.2, 0.3) and after.color == (0.1, 0.2, 0.3)
    else:
        assert before.name != "renamed" and after.name == "renamed"
    _, third = api.load_and_mesh(*case)  # the changed table's meshes are cached in turn
    assert calls == [1] and [m.color for m in third] == [m.color for m in second]
