"""Regenerate viz3d's default palette (`viz3d.io.labels.PALETTE`): 120 colours for label values 1-120.

What it guarantees (tests/test_labels.py checks the stored palette, not this script):

* every colour reads over a dark CT and is never grey or bone-like: CIELAB lightness 45-92,
  chroma >= 25, luma > 0.27, channel spread >= 0.33, CIEDE2000 >= 20 from the bone colour;
* every pair of the 120 colours is as far apart as the gamut allows: a maximum independent set
  of the "closer than T" graph on a 21-level sRGB grid, T raised by bisection while 120 colours
  still fit (8.6 CIEDE2000), then a max-min polish. The same search finds only about 85 such
  colours 10 apart (the scene's threshold, ``MIN_COLOR_DIFFERENCE``), so 117+ colours all 10
  apart are out of reach; the pairs that must be told apart are neighbours, and those are far apart:
* neighbours get very different colours (>= 25 CIEDE2000; the search aims at 30): values up to
  3 apart (adjacent vertebrae, ribs, lung lobes in most schemes; T11 and L2 are 3 apart in
  TotalSegmentator's), the TotalSegmentator classes that touch in the real sample (label map
  dilated by two voxels), ribs and their vertebrae, costal cartilages and sternum, and a few
  known contacts (heart-aorta, sacrum-hips, ...); and no two of the sample's 41 classes closer
  than 10 (so the scene keeps their colours). Simulated annealing over swaps of the colours.

Run: ``python scripts/make_palette.py`` (about 40 s); it prints the ``PALETTE`` constant.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from viz3d.io.labels import delta_e_ciede2000, srgb_to_lab  # noqa: E402

SIZE = 120
SAMPLE_LABELS = ROOT.parent / "shared" / "data" / "totalseg_example" / "label.nii.gz"
BONE = (0.89, 0.85, 0.79)
NEIGHBOUR_TARGET = 30.0  # CIEDE2000; the search stops improving the neighbours beyond it


def candidates():
    levels = np.round(np.linspace(0.0, 1.0, 21) * 255) / 255  # 8 bits a channel, as stored
    rgb = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    lab = srgb_to_lab(rgb)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    luma = rgb @ np.array([0.2126, 0.7152, 0.0722])
    keep = ((lab[:, 0] >= 45) & (lab[:, 0] <= 92) & (chroma >= 25) & (luma > 0.27)
            & (rgb.max(1) - rgb.min(1) >= 0.33) & (rgb.min(1) < 0.8)
            & (delta_e_ciede2000(lab, srgb_to_lab(BONE)) >= 20))
    return rgb[keep], lab[keep]


def independent_set(close):
    """Greedy maximum independent set (fewest conflicts first) of a boolean conflict matrix."""
    alive = np.ones(len(close), bool)
    degree = close.sum(1).astype(float)
    chosen = []
    while alive.any():
        idx = np.flatnonzero(alive)
        i = idx[np.argmin(degree[idx])]
        chosen.append(i)
        gone = alive & close[i]
        gone[i] = True
        alive &= ~gone
        degree -= close[:, gone].sum(1)
    return chosen


def pick_colours(lab):
    d = np.empty((len(lab), len(lab)), np.float32)
    for s in range(0, len(lab), 500):
        d[s:s + 500] = delta_e_ciede2000(lab[s:s + 500, None, :], lab[None, :, :])
    np.fill_diagonal(d, np.inf)
    lo, hi, best = 8.0, 10.0, None
    for _ in range(8):
        mid = (lo + hi) / 2
        chosen = independent_set(d < mid)
        if len(chosen) >= SIZE:
            lo, best = mid, chosen
        else:
            hi = mid
    chosen = np.array(best[:SIZE])
    while True:  # move the closest colours to the candidate farthest from the others
        mins = d[np.ix_(chosen, chosen)].min(1)
        moved = False
        for k in np.flatnonzero(mins < mins.min() + 1e-6):
            score = d[:, np.delete(chosen, k)].min(1)
            score[chosen] = -1
            b = int(np.argmax(score))
            if score[b] > mins[k] + 1e-6:
                chosen[k], moved = b, True
        if not moved:
            return chosen


def neighbours():
    import nibabel as nib
    from scipy import ndimage

    labels = np.asarray(nib.load(SAMPLE_LABELS).dataobj).astype(int)
    pairs = {(v, v + k) for v in range(1, SIZE + 1) for k in (1, 2, 3) if v + k <= SIZE}
    present = [int(v) for v in np.unique(labels) if v]
    for v in present:
        around = np.unique(labels[ndimage.binary_dilation(labels == v, iterations=2)])
        pairs |= {tuple(sorted((v, int(w)))) for w in around if w and w != v}
    for k in range(1, 13):  # TotalSegmentator: vertebrae_T<k> = 44 - k, rib_left_<k> = 91 + k, rib_right_<k> = 103 + k
        pairs |= {(44 - k, 91 + k), (44 - k, 103 + k)}
        pairs |= {(91 + k, 117), (103 + k, 117)} if k <= 10 else set()  # the costal cartilages
        pairs |= {(91 + k, 116), (103 + k, 116)} if k <= 7 else set()  # the sternum
    pairs |= {(51, 52), (51, 53), (52, 53), (25, 26), (25, 77), (25, 78), (75, 77), (76, 78), (77, 80), (78, 81),
              (77, 88), (78, 89), (86, 87), (79, 86), (79, 87), (116, 117)}
    return np.array(sorted(pairs)) - 1, np.array(present) - 1


def assign(lab, pairs, present):
    """Value -> colour by simulated annealing over swaps: the penalty counts neighbours closer than
    the target, consecutive values closer than 45 in CIELAB, and close pairs (< 10) among the
    sample's classes, each by how far it falls short."""
    d = delta_e_ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    e76 = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    consecutive = np.array([(v, v + 1) for v in range(SIZE - 1)])
    among = np.array([(a, b) for i, a in enumerate(present) for b in present[i + 1:]])

    def penalty(perm):
        near = d[perm[pairs[:, 0]], perm[pairs[:, 1]]]
        step = e76[perm[consecutive[:, 0]], perm[consecutive[:, 1]]]
        close = d[perm[among[:, 0]], perm[among[:, 1]]]
        return (np.square(np.maximum(NEIGHBOUR_TARGET - near, 0)).sum() + np.square(np.maximum(45.0 - step, 0)).sum()
                + 50 * np.square(np.maximum(10.5 - close, 0)).sum())

    rng = np.random.default_rng(1)
    best = None
    for _ in range(3):
        perm = rng.permutation(SIZE)
        current = penalty(perm)
        steps = 150000
        for n in range(steps):
            temperature = 50.0 * (1 - n / steps) ** 3
            i, j = rng.integers(SIZE, size=2)
            perm[i], perm[j] = perm[j], perm[i]
            new = penalty(perm)
            if new <= current or rng.random() < np.exp(-(new - current) / max(temperature, 1e-9)):
                current = new
            else:
                perm[i], perm[j] = perm[j], perm[i]
        if best is None or current < best[0]:
            best = (current, perm.copy())
    return best[1]


def main():
    rgb, lab = candidates()
    chosen = pick_colours(lab)
    pairs, present = neighbours()
    perm = assign(lab[chosen], pairs, present)
    palette = np.round(rgb[chosen][perm] * 255).astype(int)
    rows = [", ".join(f"0x{r:02x}{g:02x}{b:02x}" for r, g, b in palette[i:i + 8]) for i in range(0, SIZE, 8)]
    print("PALETTE = (\n" + "".join(f"    {row},\n" for row in rows) + ")")


if __name__ == "__main__":
    main()
