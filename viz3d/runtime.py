"""Everything viz3d does to the process as a whole, in one place.

Library functions (``viz3d.build_meshes`` from a notebook, say) change nothing global: no
environment variable, signal handler, garbage-collector setting, output stream or library-wide
thread setting, and no thread that outlives the call. The speed-ups below are opt-in: the
command line switches them on with `enable` (and `enter_command_line`, which also takes over
the process's exit); a notebook that wants them calls ``viz3d.runtime.enable()``.

What each one does and why:

- `start_thread`: every background thread viz3d starts (the gzip read-ahead of an input, the
  mesh-cache writer, PyVista's import, the DICOM workers' parent watch) is started here, named.
- `one_blas_thread`: OpenBLAS on one thread while viz3d's own pool fills the cores; its threads
  only busy-waited beside the pool (10-12 % of an export's CPU time on two cores).
- `vtk_threads`: VTK's threaded filters on one thread per meshing job (the jobs fill the cores)
  or on every core (one big job); PyPI's VTK defaults to one thread.
- `decode_in_processes`: compressed DICOM slices decoded by forked processes (pydicom's
  decoders hold the GIL): 180 JPEG 2000 slices in 2.5 s on two cores instead of 4.1 s.
- `configure_offscreen`: without a display, VTK must render through EGL; this is not a speed-up
  but the only way to draw at all, so the scene does it whether or not `enable` was called.
- `enter_command_line`: OpenBLAS's thread count before numpy loads, the cycle collector off
  while modules import (2-4 % of a cached screenshot), Ctrl-C stopping a DICOM load at its
  next slice, warnings as ``viz3d: warning:`` lines, and an exit that skips tearing down
  ~1 GB of arrays (0.25-0.35 s) once every output is in place.
- `plain_argv`: trame's server parses ``sys.argv`` and installs a SIGTERM handler; both are
  put back when it stops.
"""
from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import warnings
from contextlib import contextmanager

_enabled = False
STOP = threading.Event()  # set by the command line's Ctrl-C: a DICOM load in any thread stops at its next slice


def enable() -> None:
    """Switch the speed-ups on for this process (the command line does; see the module's text).

    Until `disable`: OpenBLAS on one thread inside viz3d's pool, VTK's threaded filters per
    meshing job, gzip read-ahead of the inputs, background mesh-cache writes, PyVista imported
    in the background and compressed DICOM slices decoded by forked processes. Nothing
    changes at the call itself; each takes effect when viz3d next does that work.

    See Also
    --------
    disable : Back to the library's default.
    enabled : Whether they are on.

    Examples
    --------
    >>> from viz3d import runtime
    >>> runtime.enable()
    >>> runtime.enabled()
    True
    >>> runtime.disable()
    """
    global _enabled
    _enabled = True


def disable() -> None:
    """Switch the speed-ups off again (the library's default).

    Library calls then change nothing global and start no thread that outlives them.

    See Also
    --------
    enable : Switch them on.

    Examples
    --------
    >>> from viz3d import runtime
    >>> runtime.enable()
    >>> runtime.disable()
    >>> runtime.enabled()
    False
    """
    global _enabled
    _enabled = False


def enabled() -> bool:
    """Whether `enable` was called (and `disable` not since).

    >>> enabled()
    False
    """
    return _enabled


def start_thread(target, *, name: str, args=(), daemon: bool = False) -> threading.Thread:
    """Start ``target(*args)`` in a background thread named ``viz3d-<name>`` and return it.

    >>> thread = start_thread(print, name="example", args=("hello",)); thread.join()
    hello
    >>> thread.name
    'viz3d-example'
    """
    thread = threading.Thread(target=target, args=args, name=f"viz3d-{name}", daemon=daemon)
    thread.start()
    return thread


def decode_in_processes() -> bool:
    """Whether DICOM slices may be decoded by forked worker processes (only with `enable`:
    forking a notebook kernel that runs other threads is not the library's call to make)."""
    return _enabled and sys.platform.startswith("linux")


# ----------------------------------------------------------------------- threads of other libraries
_blas_lock = threading.Lock()
_blas_limit = None  # the threadpoolctl limiter while any block below runs
_blas_blocks = 0


@contextmanager
def one_blas_thread():
    """BLAS (OpenBLAS, numpy's and SciPy's) on one thread inside the block, with `enable`.

    The setting is process-wide, so blocks are counted: the first to start sets it and the last
    to end puts back what was there before, however blocks in several threads overlap. Without
    `enable` the block changes nothing.
    """
    global _blas_limit, _blas_blocks
    if not _enabled:
        yield
        return
    with _blas_lock:
        if _blas_blocks == 0:
            from threadpoolctl import threadpool_limits

            _blas_limit = threadpool_limits(limits=1, user_api="blas")
        _blas_blocks += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_blocks -= 1
            if _blas_blocks == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


_vtk_lock = threading.Lock()


@contextmanager
def vtk_threads(count: int | None):
    """VTK's threaded filters on one thread (``count=1``) or on every core (None) inside the
    block, with `enable`; without it the block changes nothing.

    The setting is process-wide: blocks hold a lock, so two never switch it under each other's
    filters, and VTK's backend is put back afterwards.
    """
    if not _enabled:
        yield
        return
    from vtkmodules.vtkCommonCore import vtkSMPTools

    with _vtk_lock:
        before = vtkSMPTools.GetBackend()
        vtkSMPTools.SetBackend("Sequential" if count == 1 else "STDThread")
        try:
            yield
        finally:
            vtkSMPTools.SetBackend(before)


# ----------------------------------------------------------------------- rendering
def has_display() -> bool:
    """True when an X11 or Wayland display is named in the environment."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure_offscreen() -> None:
    """Prepare headless rendering when there is no display; a no-op when there is one.

    Sets ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` (unless already set) so VTK renders
    through EGL instead of trying to reach an X server, and sets ``pyvista.OFF_SCREEN = True``
    if PyVista is already imported (`import_pyvista` does it for a later import). Call it before
    VTK is imported: VTK picks its window class when the first render window is created.
    """
    if has_display():
        return
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    pv = sys.modules.get("pyvista")
    if pv is not None:
        pv.OFF_SCREEN = True


_background_import: threading.Thread | None = None


def import_pyvista():
    """Import and return :mod:`pyvista` after `configure_offscreen` (the one entry point for it)."""
    configure_offscreen()
    worker = _background_import
    if worker is not None and worker is not threading.current_thread():
        worker.join()  # PyVista's lazy modules are not safe to use while another thread imports them
    import pyvista

    if not has_display():
        pyvista.OFF_SCREEN = True
    return pyvista


def import_pyvista_soon(first: tuple[str, ...] = ()) -> None:
    """Start importing PyVista in a background thread, with `enable`; `import_pyvista` later
    finds it done. Without `enable`, nothing (the import happens when first needed).

    The import costs 1-1.5 s (PyVista pulls in matplotlib): a command that loads or meshes
    first overlaps the two. The modules named in ``first`` are imported before it: while
    VTK's libraries load, an import in another thread waits (here the whole PyVista import
    long), so a command that will load and mesh names the modules that needs. A failure here
    is left to the later import to report.
    """
    global _background_import
    if not _enabled:
        return
    configure_offscreen()
    if "pyvista.plotting" not in sys.modules and _background_import is None:
        # not a daemon: an early exit waits for it rather than tearing VTK down mid-import
        _background_import = start_thread(_import_quietly, name="import-pyvista", args=(first,))


def _import_quietly(first: tuple[str, ...] = ()) -> None:
    import importlib

    for name in first:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - reported by the import that needs it
            pass
    try:
        import_pyvista()
        import pyvista.plotting  # noqa: F401 - the Plotter: most of the cost
    except Exception:  # noqa: BLE001 - reported by the import that needs it
        pass


@contextmanager
def plain_argv():
    """Inside the block ``sys.argv`` holds only the program's name (trame's server parses it as
    its own command line); afterwards ``sys.argv`` and the SIGTERM handler are what they were."""
    saved_argv = sys.argv
    previous_term = signal.getsignal(signal.SIGTERM)
    sys.argv = saved_argv[:1]
    try:
        yield
    finally:
        sys.argv = saved_argv
        if signal.getsignal(signal.SIGTERM) is not previous_term:
            try:
                signal.signal(signal.SIGTERM, previous_term)
            except (TypeError, ValueError):  # not the main thread, or a handler Python cannot set back
                pass


# ----------------------------------------------------------------------- the command line's process
_collector_paused = False  # enter_command_line turned the cycle collector off


_entered: dict = {}  # what enter_command_line changed, for leave_command_line


def enter_command_line() -> None:
    """What the ``viz3d`` command does to its own process before anything else (see the module).

    `leave_command_line` puts it all back (for a test, or a program that runs the command line
    in its own process and goes on).
    """
    global _collector_paused
    _entered.update(openblas=os.environ.get("OPENBLAS_NUM_THREADS"), collector=gc.isenabled(),
                    sigint=signal.getsignal(signal.SIGINT), enabled=_enabled)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads
    enable()
    # Python's cycle collector scans every object again and again while PyVista, SciPy and
    # nibabel import. Loading and meshing make little cyclic garbage (peak memory is the same
    # either way); the scene commands that run on turn it back on (collect_garbage_again).
    gc.disable()
    _collector_paused = True
    signal.signal(signal.SIGINT, _interrupted)


def leave_command_line() -> None:
    """Undo `enter_command_line`: the environment, the cycle collector, the Ctrl-C handler and the
    speed-ups as they were before it."""
    global _collector_paused, _enabled
    if not _entered:
        return
    if _entered["openblas"] is None:
        os.environ.pop("OPENBLAS_NUM_THREADS", None)
    if _entered["collector"]:
        gc.enable()
    _collector_paused = False
    signal.signal(signal.SIGINT, _entered["sigint"])
    _enabled = _entered["enabled"]
    _entered.clear()


@contextmanager
def command_line_warnings():
    """Inside the block each warning is one ``viz3d: warning: ...`` line on stderr (other
    libraries' named, their deprecations dropped; see `viz3d.errors.warning_line`), and nibabel's
    log lines come out as warnings too (`viz3d.errors.route_library_logs`). Python's warning
    display is put back afterwards."""
    from .errors import route_library_logs, warning_line

    def show_warning(message, category, filename, lineno, file=None, line=None):
        text = warning_line(message, category, filename)
        if text is not None:
            print(text, file=sys.stderr)

    route_library_logs()
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        yield


def discard_stdout() -> None:
    """Send what is still printed to the null device: stdout was a pipe its reader closed
    (``viz3d info ... | head``), and a second broken pipe at exit would print a traceback."""
    sys.stdout = open(os.devnull, "w")


def _interrupted(signum, frame) -> None:
    """Ctrl-C: a DICOM series loading in another thread (beside the meshing) stops at its next
    slice instead of holding the exit until it is done; then Python's KeyboardInterrupt."""
    STOP.set()
    raise KeyboardInterrupt


def collect_garbage_again() -> None:
    """Collect once and turn the cycle collector back on if `enter_command_line` turned it off.

    What is still alive then (modules, the scene) is frozen: never scanned again.
    """
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.collect()
        gc.freeze()
        gc.enable()


def exit_at_once(status: int) -> None:
    """End the process with ``status`` after the cache writer and the output streams are done.

    Every file is complete and renamed into place before the command returns; what is left is
    freeing ~1 GB of arrays and VTK objects one by one, which took 0.25-0.35 s.
    """
    cache = sys.modules.get("viz3d.cache")
    if cache is not None:
        cache.flush()  # a mesh-cache entry still being written in the background
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the process was started with that descriptor closed
                stream.flush()
        except (OSError, ValueError):  # closed or a broken pipe: nothing more can be said there
            pass
    os._exit(status)


# ----------------------------------------------------------------------- a batch's worker processes
# The thread pools a process starts, each sized by its variable: viz3d's (`viz3d.parallel.cores`),
# VTK's filters, Mesa's llvmpipe drawing, OpenMP's.
THREAD_VARIABLES = ("VIZ3D_THREADS", "VTK_SMP_MAX_THREADS", "LP_NUM_THREADS", "OMP_NUM_THREADS")


def enter_worker(threads: int | None) -> None:
    """Set up one of a batch's worker processes: its thread pools sized to ``threads`` (its share
    of the cores; None leaves them), BLAS on one thread, the C heap kept compact
    (`compact_heap`), and the speed-ups on (`enable`), as in a command's process.

    Without the share, each of N workers started a thread per core in meshing, in VTK's filters
    and in llvmpipe's drawing: N times the cores' threads, fighting for the cores (a batch of 8
    zoom-4 cases on 2 workers: 1.21x the loop of exports, 0.90-1.01x with it). With a share of
    one core, llvmpipe draws in the calling thread (``LP_NUM_THREADS=0``: the same pixels, 18 MB
    less than a rasteriser thread of its own). A variable the user set is left as it is; VTK, if
    already loaded (a Dask worker's earlier task), is told directly.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if threads:
        for name, value in thread_settings(threads).items():
            os.environ.setdefault(name, value)
        core = sys.modules.get("vtkmodules.vtkCommonCore")
        if core is not None:
            core.vtkSMPTools.Initialize(int(os.environ["VTK_SMP_MAX_THREADS"]))
    compact_heap()
    enable()


def thread_settings(threads: int) -> dict[str, str]:
    """The value of each of `THREAD_VARIABLES` for a process given ``threads`` cores: the count,
    but llvmpipe's 0 for one (draw in the calling thread, no rasteriser thread beside it).

    >>> thread_settings(1)["LP_NUM_THREADS"], thread_settings(4)["LP_NUM_THREADS"], thread_settings(1)["VIZ3D_THREADS"]
    ('0', '4', '1')
    """
    return {name: "0" if name == "LP_NUM_THREADS" and threads == 1 else str(threads) for name in THREAD_VARIABLES}


def settle_worker() -> None:
    """After a batch worker's case: collect what it left, then freeze what survives (the modules and
    their objects the first case imported) out of the cycle collector's reach, as the command line
    does once its imports are done (`collect_garbage_again`). Each case's own collection (before
    it, `viz3d.batch.case`) then scans that case's objects only: 0 ms instead of 83-87 ms a case
    over the ~206 000 objects a drawing worker holds."""
    gc.collect()
    gc.freeze()


# glibc's malloc settings (mallopt's parameters) for a process that runs case after case.
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8
HEAP_ARENAS, HEAP_MMAP_THRESHOLD = 1, 1 << 20
HEAP_ENVIRONMENT = {"MALLOC_ARENA_MAX": str(HEAP_ARENAS), "MALLOC_MMAP_THRESHOLD_": str(HEAP_MMAP_THRESHOLD)}


def compact_heap() -> bool:
    """Keep this process's C heap from growing case after case (glibc; elsewhere nothing):
    one malloc arena for all threads, and every block of 1 MiB or more mapped on its own, so
    freeing it gives it back. The settings of `HEAP_ENVIRONMENT`, for a process already running;
    threads that have allocated already keep their arenas. Returns whether they were applied.

    Each thread that allocates gets an arena of its own (the CT loader, the meshing pool, VTK's
    and llvmpipe's threads), and glibc hands freed memory back from the main arena far better
    than from the others; and after freeing a large array it raises the size from which blocks
    are mapped (up to 32 MiB), so the next cases' arrays land in the heap and fragment it. A
    worker making 8 zoom-4 cases (STL + a screenshot) kept 200-230 MB after each, and its
    per-case peak rose 606 -> 642 -> 681 MB; with these settings 309 MB and 532-537 MB, steady,
    at the same speed (an export-only worker: 343-431 MB -> 283-302 MB, below one `viz3d export`).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, HEAP_ARENAS)) and bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc
        return False
