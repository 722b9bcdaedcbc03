"""Time and peak memory of bidsapp's labels masker against nilearn's, in one run.

Synthetic data on TemplateFlow's 2 mm MNI152NLin2009cAsym grid (97 x 115 x 97): a float32
BOLD series written as fMRIPrep does (gzip level 1, one member), a brain mask, a
400-parcel atlas and 36 confounds. Every measurement runs in a fresh child process so that
its peak RSS is its own; each is repeated and the median reported.

Usage::

    python benchmarks/bench_masker.py --volumes 300 --repeats 3 \
        --nilearn-python /path/to/venv-with-newest-nilearn/bin/python

The nilearn side runs under ``--nilearn-python`` (an environment with the newest nilearn:
0.12.1 inflates a ``.nii.gz`` several times per call, so a ratio against it would flatter
us). This file must stay importable without bidsapp so that interpreter can run it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHAPE = (97, 115, 97)
AFFINE = np.array(
    [[2.0, 0, 0, -96.5], [0, 2.0, 0, -132.5], [0, 0, 2.0, -78.5], [0, 0, 0, 1]], dtype=float
)
T_R = 2.0
N_REGIONS = 400
N_CONFOUNDS = 36


def _brain(shape: tuple[int, int, int]) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    centre = [(s - 1) / 2 for s in shape]
    radii = [s * 0.42 for s in shape]
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    return dist <= 1.0


def _atlas(brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.spatial import cKDTree

    voxels = np.argwhere(brain)
    seeds = voxels[rng.choice(len(voxels), N_REGIONS, replace=False)]
    _, nearest = cKDTree(seeds).query(voxels)
    labels = np.zeros(brain.shape, dtype=np.int16)
    labels[tuple(voxels.T)] = nearest + 1
    return labels


def make_data(directory: Path, n_volumes: int, seed: int = 0) -> dict[str, Path]:
    """Write (or reuse) the synthetic BOLD (.nii.gz and .nii), mask, atlas and confounds."""
    import nibabel as nib

    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "bold_gz": directory / f"bold_{n_volumes}.nii.gz",
        "bold_nii": directory / f"bold_{n_volumes}.nii",
        "mask": directory / "mask.nii.gz",
        "atlas": directory / "atlas.nii.gz",
        "confounds": directory / f"confounds_{n_volumes}.tsv",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    rng = np.random.default_rng(seed)
    brain = _brain(SHAPE)
    labels = _atlas(brain, rng)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), AFFINE), paths["mask"])
    nib.save(nib.Nifti1Image(labels, AFFINE), paths["atlas"])
    confounds = rng.standard_normal((n_volumes, N_CONFOUNDS))
    header = "\t".join(f"c{i:02d}" for i in range(N_CONFOUNDS))
    np.savetxt(paths["confounds"], confounds, delimiter="\t", header=header, comments="")

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((*SHAPE, n_volumes))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(AFFINE, code=4)
    hdr.set_sform(AFFINE, code=4)
    hdr.set_xyzt_units("mm", "sec")
    hdr["pixdim"][4] = T_R
    hdr.set_data_offset(352)
    head = hdr.binaryblock + b"\x00" * (352 - len(hdr.binaryblock))
    region_signal = rng.standard_normal((n_volumes, N_REGIONS + 1)).astype(np.float32)
    inside = brain.ravel(order="F")
    flat_labels = labels.ravel(order="F")[inside]
    with (
        gzip.open(paths["bold_gz"], "wb", compresslevel=1) as gz,
        open(paths["bold_nii"], "wb") as raw,
    ):
        gz.write(head)
        raw.write(head)
        volume = np.zeros(inside.size, dtype=np.float32)
        for t in range(n_volumes):
            noise = rng.standard_normal(flat_labels.size, dtype=np.float32)
            volume[inside] = 1000 + 20 * region_signal[t, flat_labels] + 10 * noise
            block = volume.tobytes()
            gz.write(block)
            raw.write(block)
    return paths


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_one(kind: str, paths: dict[str, str], bold_key: str, out: str | None) -> dict:
    """Do one measured task in this (fresh) process; return seconds and peak RSS."""
    started = time.perf_counter()
    signals = None
    if kind == "inflate-zlib":
        with gzip.open(paths[bold_key], "rb") as stream:
            while stream.read(1 << 24):
                pass
    else:
        if kind == "nilearn":
            from nilearn.maskers import NiftiLabelsMasker
        else:
            from bidsapp.maskers import NiftiLabelsMasker
        masker = NiftiLabelsMasker(
            labels_img=paths["atlas"],
            mask_img=paths["mask"],
            standardize="zscore_sample",
            t_r=T_R,
        )
        signals = masker.fit_transform(paths[bold_key], confounds=paths["confounds"])
    seconds = time.perf_counter() - started
    if out and signals is not None:
        np.save(out, signals)
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb()}


def _measure(python: str, kind: str, paths: dict, bold_key: str, out: str | None) -> dict:
    cmd = [python, __file__, "--run-one", kind, "--bold-key", bold_key]
    cmd += ["--paths", json.dumps({k: str(v) for k, v in paths.items()})]
    if out:
        cmd += ["--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(python: str, kind: str, paths: dict, bold_key: str, repeats: int, out: str | None):
    runs = [_measure(python, kind, paths, bold_key, out) for _ in range(repeats)]
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table of times, peak RSS and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bidsapp-bench"))
    parser.add_argument("--nilearn-python", default=sys.executable)
    parser.add_argument("--uncompressed", action="store_true", help="also time the .nii file")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--bold-key", default="bold_gz", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.run_one:
        print(json.dumps(_run_one(args.run_one, json.loads(args.paths), args.bold_key, args.out)))
        return 0

    paths = make_data(args.data_dir, args.volumes)
    size_mb = os.path.getsize(paths["bold_gz"]) / 1e6
    print(f"data: {paths['bold_gz']} ({size_mb:.0f} MB), {args.volumes} volumes")
    version = subprocess.run(
        [args.nilearn_python, "-c", "import nilearn; print(nilearn.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    keys = ["bold_gz"] + (["bold_nii"] if args.uncompressed else [])
    rows = []
    for key in keys:
        ours_out = str(args.data_dir / f"ours_{key}.npy")
        theirs_out = str(args.data_dir / f"nilearn_{key}.npy")
        ours = _median(sys.executable, "bidsapp", paths, key, args.repeats, ours_out)
        theirs = _median(args.nilearn_python, "nilearn", paths, key, args.repeats, theirs_out)
        diff = float(np.max(np.abs(np.load(ours_out) - np.load(theirs_out))))
        rows.append((key, ours, theirs, diff))
    inflate = _median(sys.executable, "inflate-zlib", paths, "bold_gz", args.repeats, None)

    print(f"{'file':9} {'tool':16} {'seconds':>8} {'peak MB':>8}")
    print(
        f"{'.nii.gz':9} {'inflate (zlib)':16} {inflate['seconds']:8.2f} "
        f"{inflate['peak_rss_mb']:8.0f}"
    )
    for key, ours, theirs, diff in rows:
        name = ".nii.gz" if key == "bold_gz" else ".nii"
        print(
            f"{name:9} {'nilearn ' + version:16} {theirs['seconds']:8.2f} "
            f"{theirs['peak_rss_mb']:8.0f}"
        )
        print(f"{name:9} {'bidsapp':16} {ours['seconds']:8.2f} {ours['peak_rss_mb']:8.0f}")
        print(
            f"{name:9} ratio nilearn/bidsapp: time {theirs['seconds'] / ours['seconds']:.2f}x, "
            f"peak RSS {theirs['peak_rss_mb'] / ours['peak_rss_mb']:.2f}x; "
            f"max |difference| {diff:.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
