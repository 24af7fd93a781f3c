"""Tests for the per-mesh thread pool: order of results, order of starts, errors."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import viz3d.parallel as parallel
from viz3d.surfaces.meshing import surfaces
from viz3d.io.volume import Volume


def test_results_come_in_input_order_whatever_finishes_first():
    def slow_for_small(x):
        time.sleep(0.02 * (5 - x))
        return x * 10

    assert list(parallel.ordered_map(slow_for_small, [1, 4, 2, 3], size=lambda x: x)) == [10, 40, 20, 30]


def test_largest_items_start_first(monkeypatch):
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 1)  # one worker: the start order is visible
    started = []
    list(parallel.ordered_map(started.append, [3, 9, 1, 5], size=lambda x: x))
    assert started == [9, 5, 3, 1]


def test_an_error_surfaces_at_its_item_and_stops_the_rest(monkeypatch):
    """The error is raised after running items finish; queued ones never start."""
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 1)
    done = []

    def work(x):
        if x == 2:
            raise ValueError("item 2 failed")
        if x == 3:
            time.sleep(1.0)  # still running when item 2's error reaches the caller
        done.append(x)
        return x

    results = parallel.ordered_map(work, [1, 2, 3, 4])
    assert next(results) == 1
    with pytest.raises(ValueError, match="item 2"):
        next(results)
    assert done == [1, 3]


def test_work_runs_on_several_threads_at_once():
    if parallel.worker_count(4) < 2:
        pytest.skip("one core")
    barrier = threading.Barrier(2, timeout=5)
    # each item waits for another to be running at the same time: a serial map would time out
    assert list(parallel.ordered_map(lambda x: barrier.wait() * 0 + x, [1, 2])) == [1, 2]


def test_labels_and_bone_come_out_in_order_with_progress():
    label = np.zeros((40, 30, 20), np.uint8)
    label[5:15, 5:15, 5:15] = 7
    label[20:35, 10:25, 3:17] = 2
    ct = np.full(label.shape, -1000, np.int16)
    ct[10:30, 5:25, 4:16] = 700
    affine = np.diag([0.8, 1.0, 2.0, 1.0])
    calls = []
    meshes = surfaces(Volume(label, affine), Volume(ct, affine), bone_hu=200,
                      progress=lambda done, total, name: calls.append((done, total, name)))
    assert [(m.kind, m.label) for m in meshes] == [("label", 2), ("label", 7), ("bone", None)]
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)] and calls[-1][2] == "bone"
    assert meshes[-1].vertices[:, 0].min() == pytest.approx(10 * 0.8 - 0.4, abs=0.3)


def test_nested_collections_keep_their_own_lists():
    from viz3d.errors import collecting_warnings, warn

    with pytest.warns(UserWarning):
        with collecting_warnings() as outer:
            with collecting_warnings() as inner:
                pass  # an empty inner list equals the empty outer one: closing it must not drop the outer
            warn("after the inner block")
    assert outer == ["after the inner block"] and inner == []


def test_blas_runs_on_one_thread_inside_the_pool_with_the_speedups(speedups):
    """The pool fills the cores itself: OpenBLAS's threads only busy-wait beside it."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        np.ones((64, 64)) @ np.ones((64, 64))  # BLAS loaded and used
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before = blas_threads()
    if not before or max(before.values()) < 2:
        pytest.skip("BLAS runs on one thread here anyway")
    inside = list(parallel.ordered_map(lambda _: blas_threads(), [0, 1]))
    assert all(set(threads.values()) == {1} for threads in inside)
    assert blas_threads() == before  # restored for the caller afterwards


def test_overlapping_pools_put_blas_back_when_the_last_ends(speedups):
    """The BLAS setting is process-wide: pools that overlap (A starts, B starts, A ends, B ends)
    must leave it as it was, not as B found it."""
    from threadpoolctl import threadpool_info

    np.ones((8, 8)) @ np.ones((8, 8))
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not before or max(before) < 2:
        pytest.skip("BLAS runs on one thread here anyway")
    first = parallel.ordered_map(lambda x: x, [1, 2])
    second = parallel.ordered_map(lambda x: x, [3, 4])
    assert next(first) == 1 and next(second) == 3  # both pools running
    first.close()
    assert {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"} == {1}  # B still runs
    second.close()
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == before
