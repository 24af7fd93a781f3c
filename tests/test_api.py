"""The library API called as a notebook calls it: on arrays made in memory, not files."""
import numpy as np

import viz3d
from viz3d.io.volume import Volume


def box_label() -> Volume:
    array = np.zeros((12, 12, 12), np.uint8)
    array[2:6, 2:6, 2:6] = 1
    array[7:10, 7:10, 7:10] = 7
    return Volume(array, np.diag([0.8, 0.8, 2.0, 1.0]))


def test_a_label_map_made_in_memory_gets_the_default_names_not_a_folder_lookup():
    """A Volume built from an array has no file (its source is empty): no table is looked for beside it."""
    names = viz3d.api.label_table_for(box_label())
    assert (names.name_of(1), names.name_of(7)) == ("L1", "sacrum")


def test_meshes_and_statistics_of_a_label_map_made_in_memory():
    label = box_label()
    meshes = viz3d.build_meshes(None, label)
    assert [(mesh.name, mesh.label) for mesh in meshes] == [("L1", 1), ("sacrum", 7)]
    rows = viz3d.label_statistics(label)
    assert [(row["name"], row["voxels"]) for row in rows] == [("L1", 64), ("sacrum", 27)]
    assert abs(rows[0]["volume_ml"] - 64 * 0.8 * 0.8 * 2.0 / 1000) < 1e-9
