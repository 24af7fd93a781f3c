"""Shared test fixtures: paths to the real sample data beside the project."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (shapes.py), under --import-mode=importlib

# Tests never read or fill the user's mesh cache.
os.environ["VIZ3D_CACHE_DIR"] = tempfile.mkdtemp(prefix="viz3d-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "data" / "totalseg_example"
TABLES = SHARED / "data" / "label_tables"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real TotalSegmentator sample (CT, label map, DICOM series)."""
    assert SAMPLE.is_dir(), f"real sample data missing: {SAMPLE}"
    return SAMPLE


@pytest.fixture(scope="session")
def tables_dir() -> Path:
    """Real label-table files (ITK-SNAP, TotalSegmentator JSON)."""
    assert TABLES.is_dir(), f"real label tables missing: {TABLES}"
    return TABLES


@pytest.fixture
def scenes():
    """Collects built scenes and closes them after the test."""
    made = []
    yield made
    for scene in made:
        scene.close()


@pytest.fixture
def speedups():
    """The command line's speed-ups (`viz3d.runtime.enable`) on for one test, off again after."""
    from viz3d import runtime

    runtime.enable()
    yield
    runtime.disable()
