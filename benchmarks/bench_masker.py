"""Time and peak memory of bidsapp's labels masker against nilearn's, in one run.

Synthetic data from ``bench_speed.make_data`` on TemplateFlow's 2 mm MNI152NLin2009cAsym grid
(97 x 115 x 97): a float32 BOLD series written as fMRIPrep does (gzip level 1, one member,
noise outside the brain), a brain mask, a 400-parcel atlas and 36 confounds. Every
measurement runs in a fresh child process so that its peak RSS is its own; each is repeated
and the median reported.

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
        # The same masker call as bench_speed.py's (c)/(e) rows.
        from bench_speed import _masker

        signals = _masker(kind, paths, bold_key)
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
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bidsapp-bench/issue6"))
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

    # One data generator for all benchmarks (realistic fMRIPrep-like files, cached).
    from bench_speed import make_data

    paths = make_data(args.data_dir, args.volumes, uncompressed=args.uncompressed)
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
