"""Fuzzing the inputs: no wrong answer, no hang, no unbounded memory, no traceback (issue #19).

A seeded mutator corrupts the header of a small NIfTI cut from the real sample CT (dims,
datatype, pixdim, vox_offset, qform/sform, scl_slope/scl_inter, magic, truncation) and the
tags of a few real DICOM slices (Rows, Columns, bits, rescale values, geometry, frames, pixel
data, transfer syntax). Every mutated input goes through ``viz3d info`` in one child process
(`viz3d.cli.main.main` per case) under an address-space limit and a time limit, which reports per
case its exit status, stderr and time. Each must be loaded (exit 0, with finite HU values) or
refused (exit 2, one ``viz3d: error:`` line, nothing but ``viz3d:`` lines on stderr): never an
internal error, a traceback, an out-of-memory refusal (the header must be refused before
anything that big is allocated) or a hang.
"""
from __future__ import annotations

import copy
import gzip
import json
import math
import os
import random
import re
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.uid import ExplicitVRLittleEndian

SEED = 19
NIFTI_CASES = 400
DICOM_CASES = 240
CASE_LIMIT_S = 10.0  # one case; a real 6-slice info takes ~0.1 s
BATCH_LIMIT_S = 150  # the whole child process (a hang shows as the case it was on)
ADDRESS_SPACE = 3 * 2**30  # the child's RLIMIT_AS: a header promising gigabytes must be refused, not allocated
PEAK_RSS_LIMIT_KB = 1_000_000

ODD_FLOATS = [0.0, -0.0, -1.0, 1e-30, 1e-6, 1e6, 1e30, 1e38, 3.4e38, float("nan"), float("inf"), float("-inf")]
ODD_INTS = [0, -1, 1, 2, 3, 7, 255, 32767, -32768]


# ---------------------------------------------------------------------------------------------
# NIfTI: a 20 x 16 x 6 int16 crop of the real CT, header fields patched as raw bytes

# NIfTI-1 header: field -> (byte offset, struct format of one value, count)
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "i", 1), "dim": (40, "h", 8), "intent_p1": (56, "f", 1), "datatype": (70, "h", 1),
    "bitpix": (72, "h", 1), "pixdim": (76, "f", 8), "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1),
    "scl_inter": (116, "f", 1), "slice_end": (120, "h", 1), "xyzt_units": (123, "b", 1),
    "qform_code": (252, "h", 1), "sform_code": (254, "h", 1), "quatern": (256, "f", 3), "qoffset": (268, "f", 3),
    "srow": (280, "f", 12), "magic": (344, "4s", 1),
}


@pytest.fixture(scope="module")
def small_nifti(sample_dir, tmp_path_factory) -> bytes:
    """The bytes of an uncompressed .nii: a crop of the real CT with its real affine."""
    img = nib.load(str(sample_dir / "ct.nii.gz"))
    crop = np.asanyarray(img.dataobj)[50:70, 40:56, 12:18].astype(np.int16)
    path = tmp_path_factory.mktemp("nifti") / "crop.nii"
    small = nib.Nifti1Image(crop, img.affine)
    small.header.set_qform(img.affine, code=1)
    nib.save(small, str(path))
    return path.read_bytes()


def mutate_nifti(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One to three header fields set to odd values (or the file cut or extended)."""
    data = bytearray(data)
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        field = rng.choice(list(NIFTI_FIELDS) + ["truncate", "append"])
        if field == "truncate":
            cut = rng.choice((0, 100, 347, 348, 352, len(data) // 2, len(data) - 1))
            del data[cut:]
            done.append(f"truncate@{cut}")
            continue
        if field == "append":
            data += bytes(rng.getrandbits(8) for _ in range(rng.choice((1, 100, 4096))))
            done.append("append")
            continue
        offset, fmt, count = NIFTI_FIELDS[field]
        size = struct.calcsize("<" + fmt)
        index = rng.randrange(count)
        if fmt == "4s":
            value = rng.choice((b"n+2\x00", b"ni1\x00", b"\x00\x00\x00\x00", b"n+1\x00"))
        elif fmt == "f":
            value = rng.choice(ODD_FLOATS + [rng.uniform(-1e4, 1e4)])
        elif fmt == "i":
            value = rng.choice((0, 540, 347, -348, 2**31 - 1))
        elif fmt == "b":
            value = rng.choice((0, 1, 2, 3, 127, -1))
        else:
            value = rng.choice(ODD_INTS + [rng.randrange(-32768, 32768)])
            if field == "datatype":
                value = rng.choice((0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 99))
        if len(data) >= offset + (index + 1) * size:
            struct.pack_into("<" + fmt, data, offset + index * size, value)
        done.append(f"{field}[{index}]={value!r}")
    return bytes(data), ", ".join(done)


def nifti_cases(small: bytes, folder: Path) -> list[tuple[str, list[str]]]:
    rng = random.Random(SEED)
    cases = []
    for n in range(NIFTI_CASES):
        data, what = mutate_nifti(small, rng)
        gzipped = n % 3 == 0
        path = folder / f"case{n:03d}.nii{'.gz' if gzipped else ''}"
        path.write_bytes(gzip.compress(data, compresslevel=1) if gzipped else data)
        cases.append((f"nifti {path.name}: {what}", ["info", str(path)]))
    return cases


# ---------------------------------------------------------------------------------------------
# DICOM: 6 real slices (64 x 64 crops, uncompressed) plus 3 untouched JPEG 2000 slices


def odd_ds(rng: random.Random):
    return rng.choice(["nan", "inf", "-inf", "1e300", "-1e38", "1e38", "0", "-0", "1e-30", "abc", "", "3.5e38"])


def _set(ds, keyword, value):
    try:
        setattr(ds, keyword, value)
    except Exception:  # a value pydicom cannot even hold: the mutation is a no-op
        pass


def _spoil_pixels(ds, rng):
    data = bytes(ds.PixelData)
    ds.PixelData = rng.choice([data[: len(data) // 2], b"", data + bytes(17), data[:-1], bytes(len(data) * 2)])


DICOM_MUTATIONS = {
    "Rows": lambda ds, rng: _set(ds, "Rows", rng.choice([0, 1, 63, 65, 4096, 65535])),
    "Columns": lambda ds, rng: _set(ds, "Columns", rng.choice([0, 1, 63, 65, 4096, 65535])),
    "BitsAllocated": lambda ds, rng: _set(ds, "BitsAllocated", rng.choice([0, 1, 8, 12, 32, 64])),
    "BitsStored": lambda ds, rng: _set(ds, "BitsStored", rng.choice([0, 1, 8, 17, 32])),
    "HighBit": lambda ds, rng: _set(ds, "HighBit", rng.choice([0, 7, 16, 40])),
    "PixelRepresentation": lambda ds, rng: _set(ds, "PixelRepresentation", rng.choice([0, 1, 2])),
    "SamplesPerPixel": lambda ds, rng: _set(ds, "SamplesPerPixel", rng.choice([0, 3, 4])),
    "PhotometricInterpretation": lambda ds, rng: _set(ds, "PhotometricInterpretation",
                                                      rng.choice(["RGB", "PALETTE COLOR", "YBR_FULL", "", "MONOCHROME1"])),
    "RescaleSlope": lambda ds, rng: _set(ds, "RescaleSlope", odd_ds(rng)),
    "RescaleIntercept": lambda ds, rng: _set(ds, "RescaleIntercept", odd_ds(rng)),
    "ImagePositionPatient": lambda ds, rng: _set(ds, "ImagePositionPatient", rng.choice(
        [[odd_ds(rng), "0", "0"], ["1e300", "-1e300", "0"], ["0", "0"], ["1", "2", "3", "4"], ["0", "0", "1e9"]])),
    "ImageOrientationPatient": lambda ds, rng: _set(ds, "ImageOrientationPatient", rng.choice(
        [["0"] * 6, ["1", "0", "0", "1", "0", "0"], ["nan", "0", "0", "0", "1", "0"], ["2", "0", "0", "0", "2", "0"],
         ["1", "0", "0", "0", "1"], ["0.7", "0.7", "0", "0", "0", "1"], ["1e300", "0", "0", "0", "1", "0"]])),
    "PixelSpacing": lambda ds, rng: _set(ds, "PixelSpacing", rng.choice(
        [["0", "0"], ["-1", "1"], ["1e-9", "1e-9"], ["1e9", "1"], ["nan", "1"], ["1"], ["inf", "inf"]])),
    "SliceThickness": lambda ds, rng: _set(ds, "SliceThickness", odd_ds(rng)),
    "SpacingBetweenSlices": lambda ds, rng: _set(ds, "SpacingBetweenSlices", odd_ds(rng)),
    "NumberOfFrames": lambda ds, rng: _set(ds, "NumberOfFrames", rng.choice(["0", "2", "1000", "-1", "x"])),
    "PixelData": _spoil_pixels,
    "TransferSyntax": lambda ds, rng: _set(ds.file_meta, "TransferSyntaxUID", rng.choice(
        ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90",
         "1.2.840.10008.1.2.5", "1.2.3.4", "1.2.840.10008.1.2.1.99"])),
    "slice position": lambda ds, rng: _set(ds, "ImagePositionPatient", [
        ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
        float(ds.ImagePositionPatient[2]) + rng.choice([0.0, 0.5, -1.0, 3.0, 40.0, 1e4])]),
    "Modality": lambda ds, rng: _set(ds, "Modality", rng.choice(["MR", "", "PT", "OT"])),
    "ImageType": lambda ds, rng: _set(ds, "ImageType", ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]),
    "SeriesInstanceUID": lambda ds, rng: _set(ds, "SeriesInstanceUID", rng.choice(["1.2.3", "", "1.2.3.4"])),
    "delete": lambda ds, rng: ds.pop(rng.choice(["Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
                                                 "BitsAllocated", "PixelRepresentation", "RescaleSlope", "PixelData",
                                                 "SamplesPerPixel", "PhotometricInterpretation"]), None),
}


@pytest.fixture(scope="module")
def real_slices(sample_dir) -> tuple[list, list]:
    """(6 uncompressed 64 x 64 crops, 3 JPEG 2000 originals) of the real series, as datasets."""
    files = sorted((sample_dir / "ct_dicom").iterdir())
    crops = []
    for path in files[7:13]:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array[200:264, 220:284].copy()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OW"
        ds["PixelData"].is_undefined_length = False
        crops.append(ds)
    originals = [pydicom.dcmread(path) for path in files[:3]]
    return crops, originals


def write_dicom_case(slices, rng: random.Random, folder: Path) -> str:
    """The slices into ``folder``, one to three mutations applied to one slice or to all."""
    folder.mkdir()
    slices = [copy.deepcopy(ds) for ds in slices]
    done = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        name = rng.choice(list(DICOM_MUTATIONS))
        targets = slices if rng.random() < 0.4 else [rng.choice(slices)]
        state = rng.getstate()
        for ds in targets:
            rng.setstate(state)  # the same value in every slice mutated
            DICOM_MUTATIONS[name](ds, rng)
        done.append(f"{name}{'(all)' if len(targets) > 1 else ''}")
    for k, ds in enumerate(slices):
        path = folder / f"IM{k:03d}"
        try:
            ds.save_as(path, enforce_file_format=False)
        except Exception:  # pydicom cannot write this combination: write the bytes another way
            path.write_bytes(b"\x00" * 128 + b"DICM" + bytes(rng.getrandbits(8) for _ in range(300)))
            done.append(f"unwritable IM{k:03d}")
    if rng.random() < 0.15:  # cut a file at a random byte
        victim = folder / f"IM{rng.randrange(len(slices)):03d}"
        data = victim.read_bytes()
        cut = rng.randrange(len(data))
        victim.write_bytes(data[:cut])
        done.append(f"{victim.name} cut at {cut}")
    return ", ".join(done)


def dicom_cases(real_slices, folder: Path) -> list[tuple[str, list[str]]]:
    """`DICOM_CASES` mutated series; a fifth of them JPEG 2000, a third named by one file."""
    crops, originals = real_slices
    rng = random.Random(SEED + 1)
    cases = []
    before = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # write the broken values as they are
    try:
        with warnings.catch_warnings():  # and without pydicom's complaints about them, here
            warnings.simplefilter("ignore")
            for n in range(DICOM_CASES):
                source = originals if n % 5 == 4 else crops
                case = folder / f"dicom{n:03d}"
                what = write_dicom_case(source, rng, case)
                target = case / f"IM{rng.randrange(len(source)):03d}" if rng.random() < 0.3 else case
                cases.append((f"dicom {case.name} ({'JPEG 2000' if source is originals else 'native'}) "
                              f"{target.name if target != case else 'folder'}: {what}", ["info", str(target)]))
    finally:
        config.settings.writing_validation_mode = before
    return cases


# ---------------------------------------------------------------------------------------------
# the child process that runs them


RUNNER = textwrap.dedent("""
    import io, json, os, resource, sys, tempfile, time
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    import nibabel, pydicom  # now: a library handler bound to a case's sys.stderr would hide later cases' lines
    from viz3d.cli.main import main
    cases = json.load(open(sys.argv[1]))
    saved = os.dup(2)
    for number, argv in enumerate(cases):
        print(json.dumps({{"start": number}}), flush=True)
        out, err = io.StringIO(), io.StringIO()
        raw = tempfile.TemporaryFile()  # what reaches the stderr descriptor past sys.stderr (library handlers)
        os.dup2(raw.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        started = time.monotonic()
        try:
            status = main(argv)
        except BaseException as exc:  # main itself must never raise
            status = repr(exc)
        finally:
            sys.__stderr__.flush()
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            os.dup2(saved, 2)
        raw.seek(0)
        print(json.dumps({{"case": number, "status": status, "stdout": out.getvalue()[-3000:],
                          "stderr": raw.read().decode(errors="replace") + err.getvalue(),
                          "seconds": time.monotonic() - started}}), flush=True)
    # this process's own high-water mark: ru_maxrss also holds the RSS of the process that started
    # it (Linux keeps it across exec), which is the whole test session's
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) if "VmHWM:" in status else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"peak_rss_kb": peak}}), flush=True)
""")


def run_cases(cases, tmp_path) -> tuple[list[dict], int]:
    """Each case's report from one child process, and the child's peak resident memory (kB)."""
    listing = tmp_path / "cases.json"
    listing.write_text(json.dumps([argv for _, argv in cases]))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", VIZ3D_NO_CACHE="1")
    env.pop("VIZ3D_DEBUG", None)
    try:
        child = subprocess.run([sys.executable, "-c", RUNNER.format(limit=ADDRESS_SPACE), str(listing)],
                               capture_output=True, text=True, timeout=BATCH_LIMIT_S, env=env)
        lines, errors = child.stdout, child.stderr
    except subprocess.TimeoutExpired as exc:
        lines = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        started = [json.loads(line)["start"] for line in lines.splitlines() if line.startswith('{"start"')]
        pytest.fail(f"hang: no answer within {BATCH_LIMIT_S} s, stuck on {cases[started[-1]][0] if started else '?'}")
    reports = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    peak = next((r["peak_rss_kb"] for r in reports if "peak_rss_kb" in r), None)
    assert peak is not None, f"the child process died: {errors[-2000:]}"
    return [r for r in reports if "case" in r], peak


HU_RANGE = re.compile(r"HU range\s*: (\S+) to (\S+)")


def problems_of(report: dict) -> list[str]:
    """What is wrong with one case's outcome (empty when it was loaded right or refused right)."""
    status, err, out = report["status"], report["stderr"], report["stdout"]
    lines = err.splitlines()
    found = []
    if status not in (0, 2):
        found.append(f"exit status {status}")
    if "Traceback" in err or "internal error" in err:
        found.append("traceback or internal error")
    if "out of memory" in err or "not enough memory" in err:
        found.append("ran out of memory instead of refusing the header")
    if any(not line.startswith("viz3d: ") for line in lines):
        found.append("stderr lines without the viz3d: prefix")
    errors = [line for line in lines if line.startswith("viz3d: error:")]
    if status == 2 and (len(errors) != 1 or lines[-1] != errors[0]):
        found.append("not exactly one final viz3d: error: line")
    if status == 0 and errors:
        found.append("an error line with exit status 0")
    if status == 0:
        for low, high in HU_RANGE.findall(out):
            if not (math.isfinite(float(low)) and math.isfinite(float(high))):
                found.append(f"HU range {low} to {high}")
    if report["seconds"] > CASE_LIMIT_S:
        found.append(f"took {report['seconds']:.1f} s")
    return found


def test_mutated_nifti_and_dicom_inputs_are_loaded_or_refused_in_one_line(small_nifti, real_slices, tmp_path):
    cases = nifti_cases(small_nifti, tmp_path) + dicom_cases(real_slices, tmp_path)
    reports, peak = run_cases(cases, tmp_path)
    assert len(reports) == len(cases)
    bad = [f"{cases[r['case']][0]} -> {'; '.join(p)}: {r['stderr'].strip()[-400:]!r}"
           for r in reports if (p := problems_of(r))]
    assert not bad, f"{len(bad)} of {len(cases)} mutated inputs mishandled:\n" + "\n".join(bad[:15])
    assert peak < PEAK_RSS_LIMIT_KB, f"peak resident memory {peak} kB"
    # the fuzzing reaches both outcomes, so the assertions above check something
    statuses = [r["status"] for r in reports]
    assert statuses.count(0) > 20 and statuses.count(2) > 50


def test_the_fuzz_checks_catch_what_they_are_meant_to():
    ok = {"status": 0, "stderr": "", "stdout": "  HU range       : -1024 to 3071\n", "seconds": 0.1}
    assert problems_of(ok) == []
    assert problems_of({**ok, "stdout": "  HU range       : nan to nan\n"}) == ["HU range nan to nan"]
    refused = {"status": 2, "stderr": "viz3d: warning: x\nviz3d: error: bad\n", "stdout": "", "seconds": 0.1}
    assert problems_of(refused) == []
    assert problems_of({**refused, "status": 1, "stderr": "viz3d: error: internal error: TypeError\n"}) == [
        "exit status 1", "traceback or internal error"]
    assert "stderr lines without the viz3d: prefix" in problems_of({**refused, "stderr": "pixdim bad\nviz3d: error: x\n"})
    assert problems_of({**refused, "stderr": "viz3d: error: a\nviz3d: error: b\n"}) == [
        "not exactly one final viz3d: error: line"]
    assert problems_of({**refused, "seconds": 30.0}) == ["took 30.0 s"]
