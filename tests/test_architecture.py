"""The shape of the code: the flow's direction, no private names across modules, no import cycle,
and library calls that leave the process as they found it (issue #18)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "viz3d"
# The flow, one way: a module may import from its own stage and the stages before it, never after.
STAGES = ["io", "surfaces", "scene", "outputs"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def absolute(package: str, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` in ``package`` names, relative dots resolved."""
    base = node.module or ""
    if not node.level:
        return base
    anchor = package.split(".")
    anchor = anchor[:len(anchor) - node.level + 1]
    return ".".join(anchor + ([base] if base else []))


def imports_of(name: str, path: Path) -> list[tuple[str, str | None, int]]:
    """``(module imported, name imported from it or None, line)`` for every import in the file,
    those inside functions too, resolved to absolute module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(package, node)
            for alias in node.names:
                found.append((base, alias.name, node.lineno))
    return found


def resolved(target: str, imported: str | None, known: dict[str, Path]) -> tuple[str, str | None]:
    """``from target import imported``: the module it reaches and the name taken from it (None
    when ``imported`` is itself a module)."""
    if imported is not None and f"{target}.{imported}" in known:
        return f"{target}.{imported}", None
    return target, imported


def internal_edges() -> list[tuple[str, str, str | None, int]]:
    known = modules()
    edges = []
    for name, path in known.items():
        for target, imported, line in imports_of(name, path):
            module, taken = resolved(target, imported, known)
            if module in known and module != name:
                edges.append((name, module, taken, line))
    return edges


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in STAGES else None


def module_aliases(name: str, path: Path, known: dict[str, Path]) -> dict[str, str]:
    """Names bound to viz3d modules in the file (``import viz3d.io.dicom as dicom``,
    ``from . import main as cli``): alias -> module."""
    aliases = {}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = absolute(package, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def test_no_module_uses_a_private_name_of_another():
    """Neither ``from m import _name``, nor ``m._name`` on an imported viz3d module, nor a
    `Scene`'s private members (``scene._x``) outside `viz3d.scene`."""
    known = modules()
    found = [f"{source}:{line} takes {taken} from {module}" for source, module, taken, line in internal_edges()
             if taken is not None and taken.startswith("_") and not taken.startswith("__")]
    for name, path in known.items():
        aliases = module_aliases(name, path, known)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value.id
                if owner in aliases or (owner == "scene" and stage_of(name) != "scene"):
                    found.append(f"{name}:{node.lineno} uses {owner}.{node.attr}")
    assert found == []


def test_the_modules_import_each_other_without_a_cycle():
    """Imports inside functions count too: a cycle there is a tangle of responsibilities all the same."""
    graph: dict[str, set[str]] = {}
    for source, module, _, _ in internal_edges():
        if module != "viz3d":  # the package's own lazy table names everything
            graph.setdefault(source, set()).add(module)
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_stage_imports_a_later_stage():
    backwards = [f"{source}:{line} imports {module}" for source, module, _, line in internal_edges()
                 if stage_of(source) and stage_of(module)
                 and STAGES.index(stage_of(module)) > STAGES.index(stage_of(source))]
    assert backwards == []


def test_the_first_stages_never_import_rendering():
    """Loading and surfaces are testable without a GL context: no PyVista, no VTK rendering module."""
    rendering = [f"{name}:{line} imports {target}" for name, path in modules().items()
                 if stage_of(name) in ("io", "surfaces")
                 for target, _, line in imports_of(name, path)
                 if target.startswith(("pyvista", "vtkmodules.vtkRendering", "trame"))]
    assert rendering == []


@pytest.mark.parametrize("command", ["build_meshes", "load_and_mesh"])
def test_a_library_call_leaves_the_process_as_it_found_it(sample_dir, command):
    """From a notebook, viz3d changes nothing global: the cycle collector, the signal handlers,
    sys.stdout, the environment, VTK's thread backend, and no thread left running."""
    ct, label = sample_dir / "ct.nii.gz", sample_dir / "label.nii.gz"
    call = {"build_meshes": f"viz3d.build_meshes(viz3d.load_ct({str(ct)!r}), viz3d.load_label({str(label)!r}))",
            "load_and_mesh": f"viz3d.api.load_and_mesh({str(ct)!r}, {str(label)!r}, use_cache=False)"}[command]
    code = f"""
import gc, os, signal, sys, threading
import viz3d, viz3d.api
from vtkmodules.vtkCommonCore import vtkSMPTools
def state():
    return (gc.isenabled(), gc.get_threshold(), {{s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}},
            sys.stdout, sys.stderr, dict(os.environ), vtkSMPTools.GetBackend(), sys.argv[:],
            sorted(t.name for t in threading.enumerate()))
before = state()
meshes = {call}
meshes = meshes[-1] if isinstance(meshes, tuple) else meshes  # load_and_mesh: (ct, meshes)
assert len(meshes) > 10, len(meshes)
after = state()
print("same" if after == before else f"changed: {{[i for i, (a, b) in enumerate(zip(before, after)) if a != b]}} {{after}}")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "VIZ3D_NO_CACHE": "1",
                              **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "same", run.stdout


def test_the_command_line_puts_back_what_it_changed():
    """`enter_command_line` changes the process (speed-ups, collector, Ctrl-C); `leave_command_line`
    puts every one of them back."""
    import gc
    import os
    import signal

    from viz3d import runtime

    before = (gc.isenabled(), signal.getsignal(signal.SIGINT), os.environ.get("OPENBLAS_NUM_THREADS"), runtime.enabled())
    runtime.enter_command_line()
    try:
        assert runtime.enabled() and not gc.isenabled() and signal.getsignal(signal.SIGINT) is not before[1]
    finally:
        runtime.leave_command_line()
    assert (gc.isenabled(), signal.getsignal(signal.SIGINT), os.environ.get("OPENBLAS_NUM_THREADS"),
            runtime.enabled()) == before
