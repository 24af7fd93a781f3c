"""Tests for viz3d.io.labels: built-in tables, the three file formats, errors, default colours."""
from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from viz3d.errors import Viz3dError
from viz3d.io.labels import (
    BUILTIN_TABLES,
    LabelTable,
    builtin_table,
    default_color,
    load_label_table,
)

ITKSNAP_REAL = "ctspinopelvic1k_v4_itksnap.txt"


# ------------------------------------------------------------------ helpers


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _luma(rgb):
    """Rec. 709 luma of RGB in 0..1 (the same weights a greyscale conversion uses)."""
    r, g, b = rgb
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _lab(rgb):
    """sRGB (0..1, shape (..., 3)) -> CIELAB (D65); written out here, independent of viz3d."""
    c = np.asarray(rgb, dtype=float)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    d = 6 / 29
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d**2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _assert_error(path_or_spec, *fragments):
    """load_label_table must raise Viz3dError, one line, containing every fragment."""
    with pytest.raises(Viz3dError) as info:
        load_label_table(path_or_spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# ------------------------------------------------------------------ LabelTable


def test_label_table_fallbacks():
    table = LabelTable("t", {1: "L1"}, {1: (0.1, 0.2, 0.3)})
    assert table.name_of(1) == "L1"
    assert table.name_of(42) == "label_42"
    assert table.name_of(np.int16(1)) == "L1"  # numpy integers from a label map work
    assert table.color_of(1) == (0.1, 0.2, 0.3)
    assert table.color_of(42) == default_color(42)


# ------------------------------------------------------------------ built-ins


def test_builtin_names_are_listed():
    assert BUILTIN_TABLES == ("spinopelvic10", "totalsegmentator")
    for name in BUILTIN_TABLES:
        assert builtin_table(name).name == name
        assert load_label_table(name).name == name


def test_default_is_spinopelvic10():
    table = load_label_table(None)
    assert table.name == "spinopelvic10"
    expected = {0: "background", 1: "L1", 2: "L2", 3: "L3", 4: "L4", 5: "L5", 6: "L6",
                7: "sacrum", 8: "left_hip", 9: "right_hip"}
    assert table.names == expected
    assert set(table.colors) == set(range(1, 10))
    assert table.name_of(10) == "label_10"


def test_spinopelvic10_colours_distinct_and_readable():
    table = builtin_table("spinopelvic10")
    colors = np.array([table.color_of(v) for v in range(1, 10)])
    assert ((colors >= 0) & (colors <= 1)).all()
    assert all(_luma(c) > 0.25 for c in colors)
    lab = _lab(colors)
    # Every pair of the nine classes clearly different: CIELAB Delta-E 76 > 30 (a
    # just-noticeable difference is about 2.3; > 30 reads as a different colour).
    for i, j in itertools.combinations(range(9), 2):
        assert np.linalg.norm(lab[i] - lab[j]) > 30, (i + 1, j + 1)
    # Neighbouring vertebrae (L1..L6) differ strongly in RGB too.
    for v in range(1, 6):
        assert np.linalg.norm(colors[v - 1] - colors[v]) > 0.4, (v, v + 1)


def test_totalsegmentator_matches_shipped_json(tables_dir):
    table = builtin_table("totalsegmentator")
    # The package's copy must agree with the real TotalSegmentator table beside the project.
    real = json.loads((tables_dir / "totalsegmentator_total.json").read_text())
    assert len(real) == 117
    for key, name in real.items():
        assert table.name_of(int(key)) == name
    assert table.name_of(1) == "spleen"
    assert table.name_of(0) == "background"
    assert table.colors == {}  # no colours in the source: all fall back to default_color
    assert table.color_of(27) == default_color(27)


def test_builtin_case_insensitive_and_unknown():
    assert builtin_table("SpinoPelvic10").name == "spinopelvic10"
    with pytest.raises(Viz3dError) as info:
        builtin_table("verse")
    assert "verse" in str(info.value)
    for name in BUILTIN_TABLES:
        assert name in str(info.value)


# ------------------------------------------------------------------ ITK-SNAP


def _real_itksnap_entries(path):
    """Parse the real file with an independent regex: value -> (name, (r, g, b))."""
    pattern = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\S+\s+\d+\s+\d+\s+"([^"]*)"\s*$')
    entries = {}
    for line in path.read_text().splitlines():
        m = pattern.match(line)
        if m:
            entries[int(m[1])] = (m[5], (int(m[2]), int(m[3]), int(m[4])))
    return entries


def test_itksnap_real_file(tables_dir):
    path = tables_dir / ITKSNAP_REAL
    table = load_label_table(path)
    assert table.name == ITKSNAP_REAL
    entries = _real_itksnap_entries(path)
    assert len(entries) > 10
    assert set(table.names) == set(entries)
    for value, (name, rgb) in entries.items():
        assert table.name_of(value) == name
        assert table.color_of(value) == pytest.approx(tuple(c / 255 for c in rgb))
    # Spot-check a few real entries by value, including background 0.
    for value in (0, 1, max(entries)):
        assert table.name_of(value) == entries[value][0]
    assert 0 in table.names  # "Clear Label" is kept; the caller skips 0 when meshing
    lumbar = [v for v, (name, _) in entries.items() if name == "L1"]
    assert lumbar and table.name_of(lumbar[0]) == "L1"


def test_itksnap_written(tmp_path):
    path = _write(tmp_path, "labels.txt", (
        "################################################\n"
        "# ITK-SnAP Label Description File\n"
        "# IDX -R- -G- -B- -A-- VIS MSH  LABEL\n"
        "################################################\n"
        '    0    0    0    0  0.00  0  0    "Clear Label"\n'
        "\n"
        '    1  255    0    0  1.00  1  1    "L1"\n'
        '   12    0  128  255  0.50  1  0    "left hip bone"\n'
    ))
    table = load_label_table(path)
    assert table.name == "labels.txt"
    assert table.names == {0: "Clear Label", 1: "L1", 12: "left hip bone"}
    assert table.color_of(1) == (1.0, 0.0, 0.0)
    assert table.color_of(12) == pytest.approx((0.0, 128 / 255, 1.0))
    assert table.name_of(2) == "label_2"
    assert table.color_of(2) == default_color(2)


def test_itksnap_detected_by_content_not_suffix(tmp_path):
    path = _write(tmp_path, "scheme.ctbl", '1 10 20 30 1 1 1 "L1"\n')
    assert load_label_table(path).names == {1: "L1"}
    path = _write(tmp_path, "scheme.json", '1 10 20 30 1 1 1 "L1"\n')
    assert load_label_table(path).names == {1: "L1"}


# ------------------------------------------------------------------ Slicer


def test_slicer_colour_table(tmp_path):
    path = _write(tmp_path, "GenericColors.ctbl", (
        "# Color table file /tmp/GenericColors.ctbl\n"
        "# 3 values\n"
        "0 background 0 0 0 0\n"
        "1 L1 128 174 128 255\n"
        "\n"
        "7 sacrum 241 214 145 255\n"
    ))
    table = load_label_table(path)
    assert table.name == "GenericColors.ctbl"
    assert table.names == {0: "background", 1: "L1", 7: "sacrum"}
    assert table.color_of(1) == pytest.approx((128 / 255, 174 / 255, 128 / 255))
    assert table.color_of(7) == pytest.approx((241 / 255, 214 / 255, 145 / 255))
    assert table.name_of(3) == "label_3"


def test_slicer_txt_suffix(tmp_path):
    path = _write(tmp_path, "colors.txt", "5 L5 0 255 0 255\n")
    table = load_label_table(str(path))
    assert table.names == {5: "L5"}
    assert table.color_of(5) == (0.0, 1.0, 0.0)


# ------------------------------------------------------------------ JSON


def test_json_names_only(tmp_path):
    path = _write(tmp_path, "t.json", json.dumps({"1": "L1", "2": "L2", "20": "sacrum"}))
    table = load_label_table(path)
    assert table.name == "t.json"
    assert table.names == {1: "L1", 2: "L2", 20: "sacrum"}
    assert table.colors == {}
    assert table.color_of(2) == default_color(2)
    assert table.name_of(3) == "label_3"


def test_json_objects_with_255_colours(tmp_path):
    data = {"1": {"name": "L1", "color": [255, 0, 0]}, "2": {"name": "L2", "color": [1, 1, 0]},
            "3": {"name": "L3"}}
    table = load_label_table(_write(tmp_path, "t.json", json.dumps(data)))
    assert table.names == {1: "L1", 2: "L2", 3: "L3"}
    assert table.color_of(1) == (1.0, 0.0, 0.0)
    # The file is 0..255 (a value > 1 exists), so [1, 1, 0] is nearly black, not yellow.
    assert table.color_of(2) == pytest.approx((1 / 255, 1 / 255, 0.0))
    assert 3 not in table.colors and table.color_of(3) == default_color(3)


def test_json_objects_with_unit_colours(tmp_path):
    data = {"4": {"name": "L4", "color": [0.5, 0.25, 1.0]}, "5": {"name": "L5", "color": [1, 0, 0]}}
    table = load_label_table(_write(tmp_path, "t.json", json.dumps(data)))
    assert table.color_of(4) == (0.5, 0.25, 1.0)
    assert table.color_of(5) == (1.0, 0.0, 0.0)


def test_json_detected_by_content(tmp_path):
    path = _write(tmp_path, "table.txt", '\n  {"3": "L3"}\n')
    assert load_label_table(path).names == {3: "L3"}


# ------------------------------------------------------------------ errors


def test_error_unknown_builtin_lists_builtins():
    _assert_error("spinopelvic", "spinopelvic", *BUILTIN_TABLES)


def test_error_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    _assert_error(path, "nope.json")


def test_error_folder(tmp_path):
    _assert_error(tmp_path, str(tmp_path), "folder")


@pytest.mark.parametrize("text", ["", "   \n\n", "# only a comment\n\n# another\n"])
def test_error_empty_file(tmp_path, text):
    path = _write(tmp_path, "empty.txt", text)
    _assert_error(path, "empty.txt")


def test_error_binary_file(tmp_path):
    path = tmp_path / "label.nii"
    path.write_bytes(b"\x5c\x01\x00\x00" + bytes(100))
    _assert_error(path, "label.nii")


def _in_a_child(code: str, memory_bytes: int = 2**30, timeout: float = 60):
    """Run ``code`` in a Python child limited to ``memory_bytes`` of address space and ``timeout`` s."""
    import subprocess
    import sys

    limited = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_bytes}, {memory_bytes}))\n{code}"
    return subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True, timeout=timeout)


def test_error_device_is_refused_before_reading_it():
    """/dev/zero never ends: reading it grew to 8 GB. Refused by what it is, in a memory-capped child."""
    run = _in_a_child("from viz3d.io.labels import load_label_table\n"
                      "from viz3d.errors import Viz3dError\n"
                      "try:\n    load_label_table('/dev/zero')\nexcept Viz3dError as exc:\n    print(exc)\n")
    assert run.stdout == ("/dev/zero: is a character device, not a regular file; expected a label table file "
                          "(JSON, ITK-SNAP or Slicer) (copy the data into a file first)\n"), run.stderr[-500:]


def test_error_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    import os

    fifo = tmp_path / "table.json"
    os.mkfifo(fifo)
    try:
        run = _in_a_child(f"from viz3d.cli.main import main\nraise SystemExit(main(['info', '--label-table', {str(fifo)!r}, "
                          f"{str(tmp_path / 'missing.nii.gz')!r}]))\n", timeout=30)
    finally:
        try:  # a reader stuck opening it (a regression) is let go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert run.returncode == 2 and run.stderr == (
        f"viz3d: error: {fifo}: is a FIFO (named pipe), not a regular file; expected a label table file "
        "(JSON, ITK-SNAP or Slicer) (copy the data into a file first)\n")


def test_error_file_over_the_size_limit_is_refused_unread(tmp_path):
    from viz3d.io.labels import MAX_TABLE_BYTES

    path = tmp_path / "huge.json"
    with open(path, "wb") as f:
        f.truncate(MAX_TABLE_BYTES + 1)  # sparse: refused by its size, never read
    _assert_error(path, "huge.json", "larger than 16 MB")
    ok = _write(tmp_path, "padded.json", '{"1": "L1"}' + " " * (MAX_TABLE_BYTES - 20))
    assert load_label_table(ok).name_of(1) == "L1"


ITK_HEAD = '0 0 0 0 0 0 0 "Clear Label"\n'


@pytest.mark.parametrize(
    ("name", "text", "fragments"),
    [
        # ITK-SNAP
        ("itk_malformed.txt", ITK_HEAD + '1 255 0 0 1 1 "L1"\n', ["line 2", "malformed"]),
        ("itk_noint.txt", ITK_HEAD + '1.5 255 0 0 1 1 1 "L1"\n', ["line 2", "1.5", "integer"]),
        ("itk_word.txt", ITK_HEAD + 'one 255 0 0 1 1 1 "L1"\n', ["line 2", "integer"]),
        ("itk_negative.txt", ITK_HEAD + '-3 255 0 0 1 1 1 "L1"\n', ["line 2", "-3", "negative"]),
        ("itk_colour.txt", ITK_HEAD + '1 256 0 0 1 1 1 "L1"\n', ["line 2", "256", "range"]),
        ("itk_colour_neg.txt", ITK_HEAD + '1 0 -1 0 1 1 1 "L1"\n', ["line 2", "range"]),
        ("itk_colour_nan.txt", ITK_HEAD + '1 0 red 0 1 1 1 "L1"\n', ["line 2", "red"]),
        ("itk_alpha.txt", ITK_HEAD + '1 0 0 0 2.5 1 1 "L1"\n', ["line 2", "alpha", "range"]),
        ("itk_dup.txt", ITK_HEAD + '1 1 1 1 1 1 1 "L1"\n# c\n1 2 2 2 1 1 1 "L1b"\n',
         ["line 4", "duplicate", "line 2"]),
        ("itk_mixed.txt", ITK_HEAD + "1 L1 255 0 0 255\n", ["line 2", "malformed"]),
        # Slicer
        ("sl_short.ctbl", "1 L1 255 0 0 255\n2 L2 255 0\n", ["line 2", "malformed"]),
        ("sl_noint.ctbl", "x L1 255 0 0 255\n", ["line 1", "integer"]),
        ("sl_negative.ctbl", "-1 L1 255 0 0 255\n", ["line 1", "negative"]),
        ("sl_colour.ctbl", "# head\n1 L1 255 300 0 255\n", ["line 2", "300", "range"]),
        ("sl_alpha.ctbl", "1 L1 255 0 0 999\n", ["line 1", "alpha"]),
        ("sl_dup.ctbl", "1 L1 255 0 0 255\n2 L2 0 0 255 255\n1 L1 0 255 0 255\n",
         ["line 3", "duplicate", "line 1"]),
        # JSON
        ("js_syntax.json", '{\n"1": "L1",\n"2" "L2"\n}', ["line 3", "JSON"]),
        ("js_list.json", '["L1", "L2"]', ["object"]),
        ("js_empty.json", "{}", ["no entries"]),
        ("js_noint.json", '{"L1": "first lumbar"}', ["'L1'", "integer"]),
        ("js_float.json", '{"1.5": "L1"}', ["1.5", "integer"]),
        ("js_negative.json", '{"-2": "L1"}', ["negative"]),
        ("js_dup.json", '{"1": "L1", "1": "L1 again"}', ["duplicate", "'1'"]),
        ("js_dup_norm.json", '{"1": "L1", "01": "L1 again"}', ["duplicate"]),
        ("js_colour.json", '{"1": {"name": "L1", "color": [300, 0, 0]}}', ["range"]),
        ("js_colour_neg.json", '{"1": {"name": "L1", "color": [-0.1, 0, 0]}}', ["range"]),
        ("js_colour_len.json", '{"1": {"name": "L1", "color": [1, 0]}}', ["colour"]),
        ("js_colour_str.json", '{"1": {"name": "L1", "color": "red"}}', ["colour"]),
        ("js_noname.json", '{"1": {"color": [1, 0, 0]}}', ["name"]),
        ("js_badentry.json", '{"1": 5}', ["'1'"]),
        ("js_emptyname.json", '{"1": "  "}', ["empty"]),
    ],
)
def test_error_malformed(tmp_path, name, text, fragments):
    path = _write(tmp_path, name, text)
    _assert_error(path, name, *fragments)


# ------------------------------------------------------------------ default colours


def test_default_color_deterministic_and_in_range():
    for v in (1, 2, 117, 255, 1000, 65535):
        c = default_color(v)
        assert c == default_color(v)
        assert len(c) == 3 and all(isinstance(x, float) and 0.0 <= x <= 1.0 for x in c)
    with pytest.raises(Viz3dError):
        default_color(-1)


def test_default_color_consecutive_values_distinct():
    colors = np.array([default_color(v) for v in range(1, 61)])
    # Measured in a perceptual space (an RGB distance is not one; CIEDE2000 >= 25 between values
    # up to 3 apart is checked below): CIELAB Delta-E 76 > 40 between neighbours (about 17x the
    # just-noticeable difference), so e.g. TotalSegmentator L1..L5 never look alike.
    lab_step = np.linalg.norm(np.diff(_lab(colors), axis=0), axis=1)
    assert lab_step.min() > 40, lab_step.argmin() + 1


def test_default_color_small_sets_all_distinct():
    # A typical scan has a dozen or two classes: the first 20 must all differ from each
    # other, not just from their neighbours (Delta-E 76 > 10 is unmistakable side by side).
    lab = _lab([default_color(v) for v in range(1, 21)])
    for i, j in itertools.combinations(range(20), 2):
        assert np.linalg.norm(lab[i] - lab[j]) > 10, (i + 1, j + 1)


def test_default_color_readable_over_ct():
    values = list(range(1, 61)) + [117, 255, 256, 1000, 4095, 65534, 65535]
    for v in values:
        c = np.array(default_color(v))
        # Not too dark against air / soft tissue in the CT slices.
        assert _luma(c) > 0.25, v
        # Not grey (would vanish in the CT) and not near-white (would look like bone).
        assert c.max() - c.min() > 0.3, v
        assert c.min() < 0.8, v


def _ciede2000(rgb):
    """Pairwise CIEDE2000 differences of RGB colours (scikit-image's, independent of viz3d), diagonal inf."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = rgb2lab(np.asarray(rgb, dtype=float)[None])[0]
    d = deltaE_ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    return d


def test_built_in_palette_tells_totalsegmentators_117_classes_apart():
    """Every pair of the first 120 default colours (TotalSegmentator's 117 classes and a margin) is
    at least 8.5 CIEDE2000 apart, about the most readable colours allow (a search finds only about 85
    of them 10 apart), and values up to 3 apart (adjacent vertebrae, ribs, lobes; TotalSegmentator's
    T11 and L2) at least 25. Before, 595 pairs of the 120 were closer than 10 (the closest 0.5
    apart) and values 3 apart as close as 10.2."""
    table = builtin_table("totalsegmentator")
    colours = [table.color_of(v) for v in range(1, 121)]
    assert colours == [default_color(v) for v in range(1, 121)]
    d = _ciede2000(colours)
    assert d.min() >= 8.5, np.unravel_index(np.argmin(d), d.shape)
    for step in (1, 2, 3):
        assert min(d[i, i + step] for i in range(120 - step)) >= 25, step
    assert len(set(colours)) == 120


def test_built_in_palette_gives_touching_structures_of_the_real_sample_very_different_colours(sample_dir):
    """The 94 pairs of the sample's 41 TotalSegmentator classes that touch (within two voxels: liver
    and the right ribs, vertebrae and the autochthon muscles, colon and small bowel) are at least 25
    CIEDE2000 apart, and no two of the 41 are closer than 10: the scene draws them in their table
    colours (nothing to recolour), so a structure has the same colour in every picture."""
    import nibabel as nib
    from scipy import ndimage

    labels = np.asarray(nib.load(sample_dir / "label.nii.gz").dataobj).astype(int)
    present = [int(v) for v in np.unique(labels) if v]
    table = builtin_table("totalsegmentator")
    d = _ciede2000([table.color_of(v) for v in range(1, 121)])
    touching = set()
    for v in present:
        around = np.unique(labels[ndimage.binary_dilation(labels == v, iterations=2)])
        touching |= {tuple(sorted((v, int(w)))) for w in around if w and w != v}
    assert len(present) == 41 and len(touching) > 80
    worst = min(touching, key=lambda p: d[p[0] - 1, p[1] - 1])
    assert d[worst[0] - 1, worst[1] - 1] >= 25, [table.name_of(v) for v in worst]
    index = np.array(present) - 1
    assert d[np.ix_(index, index)].min() >= 10


def test_short_vertebra_names_select_totalsegmentators_vertebrae():
    """``--labels L1-L5,sacrum`` (the issue's example) on a TotalSegmentator label map: a name's
    last word stands for it when no other name ends so. Before, "no structure named 'L1'"."""
    from viz3d.io.labels import select_labels

    table = builtin_table("totalsegmentator")
    assert [table.name_of(v) for v in select_labels("L1-L5,sacrum", table)] == [
        "sacrum", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1"]
    assert select_labels("t11-L2", table) == select_labels("vertebrae_T11-vertebrae_L2", table) == [30, 31, 32, 33]
    assert select_labels("bladder,liver", table) == [5, 21]
    with pytest.raises(Viz3dError, match="no structure named 'left'.*did you mean hip_left"):
        select_labels("left", table)  # the last word of many names: no shorthand
    with pytest.raises(Viz3dError, match="did you mean left_hip, right_hip"):
        select_labels("hip", builtin_table("spinopelvic10"))  # left_hip and right_hip both end so
