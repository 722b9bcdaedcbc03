"""Issue 6: one streaming pass per run, against inflating alone and against the newest nilearn.

Synthetic data on TemplateFlow's 2 mm MNI152NLin2009cAsym grid (97 x 115 x 97), written as
fMRIPrep writes its preprocessed BOLD (float32, gzip level 1, one member) and made to look like
it: not zero outside the brain (scalp and air noise everywhere in the acquisition field of
view, zeros only outside it), ~0.5 GB gzipped for 300 volumes. A 400-region atlas covering a
brain mask, and 36 confounds.

In one run it measures, each in a fresh child process (median of ``--repeats`` runs; peak RSS
from ``resource.getrusage`` and, when present, ``/usr/bin/time -v``):

a. inflating the ``.nii.gz`` alone: the inflater bidsapp uses, the standard library's zlib,
   and every other inflater installed (python-isal, zlib-ng, libdeflate, indexed_gzip; those
   missing are skipped with a note, or measured with ``--extra-inflate-python`` when that
   interpreter has them, so that the default install, ``pip install .``, is enough);
b. the newest nilearn's ``NiftiLabelsMasker.fit_transform`` (``--nilearn-python``);
c. bidsapp's ``NiftiLabelsMasker.fit_transform`` (the streaming engine);
d. the ``bidsapp`` CLI on a one-run fMRIPrep dataset, and ``--n-jobs 1`` vs ``2`` on two runs;
e. (b) and (c) on the same data uncompressed (``.nii``, 300 volumes only);

for 300 and 1200 volumes; checks that (b) and (c) agree to 1e-5 and prints ratios, among
them (c) against the fastest single-stream inflate of (a) (libdeflate inflates whole buffers
only, so it is not one). The repeats of (a) and (c) are interleaved, so that a change in the
machine's load between them does not bias their ratio.

Usage (issue 12: the default install, ``pip install .``)::

    python benchmarks/bench_speed.py --volumes 300 --repeats 5 --nilearn-repeats 1 \\
        --nilearn-python /work/venv-nilearn-new/bin/python \\
        --extra-inflate-python /work/venv-main/bin/python

Seconds are those of the measured call (imports excluded; the "process" column includes
them). This file must stay importable without bidsapp so that the nilearn interpreter can run
it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
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
SPACE = "MNI152NLin2009cAsym"
TOLERANCE = 1e-5
INFLATERS = ("isal", "zlib-ng", "zlib", "libdeflate", "indexed_gzip")
#: Inflaters that read a gzip stream piece by piece (libdeflate needs the whole file).
STREAMING = ("isal", "zlib-ng", "zlib", "indexed_gzip")
#: Targets of issue 12 (the default install): masker / fastest single-stream inflate,
#: nilearn / bidsapp time, nilearn / bidsapp peak RSS.
TARGET_INFLATE = 1.15
TARGET_TIME = 4.0
TARGET_RSS = 8.0


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _ellipsoid(shape: tuple[int, int, int], fraction: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    centre = [(s - 1) / 2 for s in shape]
    dist = sum(((g - c) / (s * fraction)) ** 2 for g, c, s in zip(grid, centre, shape, strict=True))
    return dist <= 1.0


def _atlas(brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.spatial import cKDTree

    voxels = np.argwhere(brain)
    seeds = voxels[rng.choice(len(voxels), N_REGIONS, replace=False)]
    _, nearest = cKDTree(seeds).query(voxels)
    labels = np.zeros(brain.shape, dtype=np.int16)
    labels[tuple(voxels.T)] = nearest + 1
    return labels


def _header(n_volumes: int):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((*SHAPE, n_volumes))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(AFFINE, code=4)
    hdr.set_sform(AFFINE, code=4)
    hdr.set_xyzt_units("mm", "sec")
    hdr["pixdim"][4] = T_R
    hdr.set_data_offset(352)
    return hdr.binaryblock + b"\x00" * (352 - len(hdr.binaryblock))


def make_data(directory: Path, n_volumes: int, uncompressed: bool, seed: int = 0) -> dict:
    """Write (or reuse) the synthetic BOLD, mask, atlas (+ LUT) and confounds."""
    import nibabel as nib
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "bold_gz": directory / f"bold_{n_volumes}.nii.gz",
        "mask": directory / "mask.nii.gz",
        "atlas": directory / "atlas400_dseg.nii.gz",
        "lut": directory / "atlas400_dseg.tsv",
        "confounds": directory / f"confounds_{n_volumes}.tsv",
    }
    if uncompressed:
        paths["bold_nii"] = directory / f"bold_{n_volumes}.nii"
    rng = np.random.default_rng(seed)
    brain = _ellipsoid(SHAPE, 0.42)
    if not (paths["mask"].exists() and paths["atlas"].exists()):
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), AFFINE), paths["mask"])
        nib.save(nib.Nifti1Image(_atlas(brain, rng), AFFINE), paths["atlas"])
        pd.DataFrame(
            {"index": range(1, N_REGIONS + 1), "name": [f"R{i}" for i in range(N_REGIONS)]}
        ).to_csv(paths["lut"], sep="\t", index=False)
    if not paths["confounds"].exists():
        confounds = np.random.default_rng(seed + 1).standard_normal((n_volumes, N_CONFOUNDS))
        names = [f"c{i:02d}" for i in range(N_CONFOUNDS)]
        pd.DataFrame(confounds, columns=names).to_csv(paths["confounds"], sep="\t", index=False)
    wanted = [paths["bold_gz"]] + ([paths["bold_nii"]] if uncompressed else [])
    if all(p.exists() for p in wanted):
        return paths
    labels = np.asarray(nib.load(paths["atlas"]).dataobj)
    head = _ellipsoid(SHAPE, 0.48)
    fov = _ellipsoid(SHAPE, 0.50)  # acquisition field of view: zeros outside it
    order = "F"
    inside = brain.ravel(order=order)
    scalp = (head & ~brain).ravel(order=order)
    air = (fov & ~head).ravel(order=order)
    flat_labels = labels.ravel(order=order)[inside]
    region_signal = rng.standard_normal((n_volumes, N_REGIONS + 1)).astype(np.float32)
    partial = {p: p.with_name(p.name + ".part") for p in wanted}
    files = [open(partial[p], "wb") for p in wanted]  # noqa: SIM115 - closed below
    try:
        sinks = [
            gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0)
            if p.name.endswith(".gz")
            else f
            for p, f in zip(wanted, files, strict=True)
        ]
        for sink in sinks:
            sink.write(_header(n_volumes))
        volume = np.zeros(inside.size, dtype=np.float32)
        for t in range(n_volumes):
            volume[inside] = (
                1000
                + 20 * region_signal[t, flat_labels]
                + 10 * rng.standard_normal(flat_labels.size, dtype=np.float32)
            )
            volume[scalp] = 300 + 30 * rng.standard_normal(int(scalp.sum()), dtype=np.float32)
            volume[air] = np.abs(8 * rng.standard_normal(int(air.sum()), dtype=np.float32))
            block = volume.tobytes()
            for sink in sinks:
                sink.write(block)
        for sink in sinks:
            if sink not in files:
                sink.close()
    finally:
        for f in files:
            f.close()
    for path in wanted:
        partial[path].rename(path)
    return paths


def make_dataset(root: Path, paths: dict, n_runs: int) -> Path:
    """A minimal fMRIPrep derivatives dataset whose runs link to the synthetic files."""
    dataset = root / f"fmriprep_{paths['bold_gz'].name.split('.')[0]}_{n_runs}runs"
    if dataset.exists():
        return dataset
    tmp = dataset.with_name(dataset.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "bench",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep", "Version": "23.2.0"}],
            }
        )
    )
    for run in range(1, n_runs + 1):
        func = tmp / f"sub-{run:02d}" / "func"
        func.mkdir(parents=True)
        stem = f"sub-{run:02d}_task-rest"
        base = f"{stem}_space-{SPACE}_res-2"
        (func / f"{base}_desc-preproc_bold.nii.gz").symlink_to(paths["bold_gz"])
        (func / f"{base}_desc-brain_mask.nii.gz").symlink_to(paths["mask"])
        (func / f"{base}_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": T_R, "SkullStripped": False})
        )
        (func / f"{stem}_desc-confounds_timeseries.tsv").symlink_to(paths["confounds"])
    tmp.rename(dataset)
    return dataset


# ---------------------------------------------------------------------------
# Measured tasks (each in a fresh process)
# ---------------------------------------------------------------------------


def _inflate(path: str, inflater: str) -> int:
    """Read the whole stream in 8 MiB pieces; return the bytes read."""
    size = 8 * 2**20
    if inflater == "libdeflate":
        import deflate

        # libdeflate inflates whole buffers only: the compressed file and the whole output
        # are in memory at once (not usable for streaming, measured for reference).
        with open(path, "rb") as f:
            return len(deflate.gzip_decompress(f.read()))
    if inflater == "indexed_gzip":
        import indexed_gzip

        stream = indexed_gzip.IndexedGzipFile(path, readbuf_size=size, buffer_size=size)
    elif inflater == "isal":
        from isal import igzip

        stream = igzip.open(path, "rb")
    elif inflater == "zlib-ng":
        from zlib_ng import gzip_ng

        stream = gzip_ng.open(path, "rb")
    else:
        stream = gzip.open(path, "rb")
    total = 0
    buffer = bytearray(size)
    with stream:
        while got := stream.readinto(buffer):
            total += got
    return total


def _masker(kind: str, paths: dict, bold_key: str) -> np.ndarray:
    if kind == "nilearn":
        from nilearn.maskers import NiftiLabelsMasker
    else:
        from bidsapp.maskers import NiftiLabelsMasker
    masker = NiftiLabelsMasker(
        labels_img=paths["atlas"],
        mask_img=paths["mask"],
        standardize="zscore_sample",
        t_r=T_R,
        keep_masked_labels=False,
    )
    return masker.fit_transform(paths[bold_key], confounds=paths["confounds"])


def _cli(paths: dict, dataset: str, output: str, n_jobs: int) -> None:
    from bidsapp.cli import main

    code = main(
        [
            dataset,
            output,
            "participant",
            "--atlas",
            paths["atlas"],
            "--atlas-space",
            SPACE,
            "--denoise-strategy",
            "none",
            "--confounds-columns",
            "c[0-9]+",
            "--n-jobs",
            str(n_jobs),
            "--no-reports",
        ]
    )
    if code != 0:
        raise RuntimeError(f"bidsapp exited with {code}")


def _run_one(task: dict) -> dict:
    """Do one measured task in this (fresh) process; return seconds and peak RSS."""
    kind = task["kind"]
    paths = task["paths"]
    if kind.startswith("inflate:"):
        started = time.perf_counter()
        _inflate(paths["bold_gz"], kind.split(":", 1)[1])
    elif kind.startswith("cli:"):
        import bidsapp.cli  # noqa: F401 - imports are not timed

        shutil.rmtree(task["output"], ignore_errors=True)
        started = time.perf_counter()
        _cli(paths, task["dataset"], task["output"], int(kind.split(":", 1)[1]))
    else:
        if kind == "nilearn":
            import nilearn.maskers  # noqa: F401
        else:
            import bidsapp.maskers  # noqa: F401
        started = time.perf_counter()
        signals = _masker(kind, paths, task["bold_key"])
        if task.get("out"):
            np.save(task["out"], signals)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _measure(python: str, task: dict) -> dict:
    cmd = [python, __file__, "--run-one", json.dumps(task)]
    time_v = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if time_v:
        cmd = [time_v, "-v", *cmd]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{task['kind']} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:  # /usr/bin/time -v, in KiB; children included
            result["time_v_mb"] = int(line.split(":")[-1]) / 1024
    return result


def _summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["runs"] = [round(r["seconds"], 2) for r in runs]
    return out


def _median(python: str, task: dict, repeats: int) -> dict:
    return _summarise([_measure(python, task) for _ in range(repeats)])


def _medians_interleaved(jobs: dict, repeats: int) -> dict:
    """``{key: (python, task)}`` measured round-robin ``repeats`` times; medians by key."""
    runs: dict = {key: [] for key in jobs}
    for _ in range(repeats):
        for key, (python, task) in jobs.items():
            runs[key].append(_measure(python, task))
    return {key: _summarise(r) for key, r in runs.items()}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


#: Inflater: (module, distribution whose version is reported; None: the zlib library).
_INFLATER_MODULES = {
    "isal": ("isal.igzip", "isal"),
    "zlib-ng": ("zlib_ng.gzip_ng", "zlib-ng"),
    "zlib": ("zlib", None),
    "libdeflate": ("deflate", "deflate"),
    "indexed_gzip": ("indexed_gzip", "indexed_gzip"),
}


def _probe_inflaters() -> dict[str, str]:
    """``{inflater: version}`` for the inflaters this interpreter can import."""
    import importlib
    import zlib
    from importlib.metadata import version

    found = {}
    for name in INFLATERS:
        module, dist = _INFLATER_MODULES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        found[name] = (
            f"zlib {zlib.ZLIB_RUNTIME_VERSION}" if dist is None else f"{dist} {version(dist)}"
        )
    return found


def _inflater_versions(python: str) -> dict[str, str]:
    """:func:`_probe_inflaters` run by ``python``."""
    probe = subprocess.run(
        [python, __file__, "--probe-inflaters"], capture_output=True, text=True, check=True
    )
    return json.loads(probe.stdout.strip().splitlines()[-1])


def _row(rows: list, label: str, result: dict) -> None:
    rows.append((label, result))


def _print_table(title: str, rows: list) -> None:
    print(f"\n{title}")
    print(
        f"| {'measurement':52} | {'seconds':>7} | {'process s':>9} | {'peak RSS MB':>11} | "
        f"{'time -v MB':>10} | runs (s) |"
    )
    print(f"| {'-' * 52} | {'-' * 7}: | {'-' * 9}: | {'-' * 11}: | {'-' * 10}: | --- |")
    for label, r in rows:
        tv = f"{r['time_v_mb']:10.0f}" if "time_v_mb" in r else f"{'n/a':>10}"
        print(
            f"| {label:52} | {r['seconds']:7.2f} | {r['process_seconds']:9.2f} | "
            f"{r['peak_rss_mb']:11.0f} | {tv} | {r['runs']} |"
        )


def main(argv: list[str] | None = None) -> int:
    """Generate data, run every measurement, print tables and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, nargs="+", default=[300, 1200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--nilearn-repeats",
        type=int,
        default=None,
        help="repeats of each nilearn measurement (default: --repeats)",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bidsapp-bench/issue6"))
    parser.add_argument("--nilearn-python", default=sys.executable)
    parser.add_argument(
        "--extra-inflate-python",
        help="another interpreter to measure the inflaters missing here with (reference rows)",
    )
    parser.add_argument("--skip-cli", action="store_true", help="skip the CLI rows (d)")
    parser.add_argument("--only-cli", action="store_true", help="only the CLI rows (d)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    parser.add_argument("--probe-inflaters", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe_inflaters:
        print(json.dumps(_probe_inflaters()))
        return 0

    if args.run_one:
        print(json.dumps(_run_one(json.loads(args.run_one))))
        return 0

    from bidsapp.stream import available_inflater

    in_use = available_inflater()
    version = subprocess.run(
        [args.nilearn_python, "-c", "import nilearn; print(nilearn.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    installed = _inflater_versions(sys.executable)
    inflaters = list(installed)
    print(f"bidsapp inflater in use: {in_use} ({installed.get(in_use, '?')}), {sys.executable}")
    print(f"installed here: {', '.join(f'{k} ({v})' for k, v in installed.items())}")
    extra: dict[str, str] = {}
    missing = [name for name in INFLATERS if name not in installed]
    if args.extra_inflate_python and missing:
        found = _inflater_versions(args.extra_inflate_python)
        extra = {name: found[name] for name in missing if name in found}
        if extra:
            print(
                f"measured with {args.extra_inflate_python} (not installed here): "
                + ", ".join(f"{k} ({v})" for k, v in extra.items())
            )
    skipped = [name for name in missing if name not in extra]
    if skipped:
        print(f"skipped (module not installed): {', '.join(skipped)}")
    print(f"nilearn {version} ({args.nilearn_python}); cores: {os.cpu_count()}")
    print(f"load average at start: {os.getloadavg()}")
    summary: dict = {}
    smallest = min(args.volumes)
    for n_volumes in args.volumes:
        paths = make_data(args.data_dir, n_volumes, uncompressed=n_volumes == smallest)
        str_paths = {k: str(v) for k, v in paths.items()}
        gz_mb = os.path.getsize(paths["bold_gz"]) / 1e6
        raw_mb = (352 + np.prod(SHAPE) * n_volumes * 4) / 1e6
        print(
            f"\n=== {n_volumes} volumes: {paths['bold_gz']} {gz_mb:.0f} MB gz, "
            f"{raw_mb:.0f} MB raw ===",
            flush=True,
        )
        rows: list = []
        res: dict = {}
        # (a) and (c) on the .nii.gz, their repeats interleaved.
        jobs: dict = {}
        labels: dict = {}
        names = [in_use] + [i for i in inflaters if i != in_use] + list(extra)
        for name in [] if args.only_cli else names:
            if name == "libdeflate" and n_volumes > smallest:
                continue  # whole-buffer: ~gz + raw in memory
            python = sys.executable if name in installed else args.extra_inflate_python
            jobs[f"inflate:{name}"] = (python, {"kind": f"inflate:{name}", "paths": str_paths})
            tag = " (in use)" if name == in_use else ""
            tag += " (not in this install)" if name in extra else ""
            labels[f"inflate:{name}"] = f"(a) inflate .nii.gz, {name}{tag}"
        keys = ["bold_gz"] + (["bold_nii"] if "bold_nii" in paths else [])
        outs = {
            (who, key): str(args.data_dir / f"{who}_{n_volumes}_{key}.npy")
            for who in ("ours", "nilearn")
            for key in keys
        }
        if not args.only_cli:
            base = {"paths": str_paths, "bold_key": "bold_gz", "kind": "bidsapp"}
            jobs["bidsapp:bold_gz"] = (sys.executable, {**base, "out": outs["ours", "bold_gz"]})
        res.update(_medians_interleaved(jobs, args.repeats))
        for key, label in labels.items():
            _row(rows, label, res[key])
        for key in [] if args.only_cli else keys:
            label = ".nii.gz" if key == "bold_gz" else ".nii"
            ours_out, theirs_out = outs["ours", key], outs["nilearn", key]
            base = {"paths": str_paths, "bold_key": key}
            n_rep = args.repeats if args.nilearn_repeats is None else args.nilearn_repeats
            res[f"nilearn:{key}"] = _median(
                args.nilearn_python, {**base, "kind": "nilearn", "out": theirs_out}, n_rep
            )
            if key != "bold_gz":
                res[f"bidsapp:{key}"] = _median(
                    sys.executable, {**base, "kind": "bidsapp", "out": ours_out}, args.repeats
                )
            ours, theirs = np.load(ours_out), np.load(theirs_out)
            res[f"diff:{key}"] = float(np.max(np.abs(ours - theirs)))
            prefix = "(b)" if key == "bold_gz" else "(e)"
            _row(rows, f"{prefix} nilearn {version} masker, {label}", res[f"nilearn:{key}"])
            prefix = "(c)" if key == "bold_gz" else "(e)"
            tag = f" ({in_use})" if key == "bold_gz" else ""
            _row(rows, f"{prefix} bidsapp masker, {label}{tag}", res[f"bidsapp:{key}"])
        if not args.skip_cli:
            one = make_dataset(args.data_dir, paths, 1)
            two = make_dataset(args.data_dir, paths, 2)
            out_dir = str(args.data_dir / "out")
            for label, dataset, jobs in (
                ("(d) CLI, 1 run, --n-jobs 1", one, 1),
                ("(d) CLI, 2 runs, --n-jobs 1", two, 1),
                ("(d) CLI, 2 runs, --n-jobs 2", two, 2),
            ):
                task = {
                    "kind": f"cli:{jobs}",
                    "paths": str_paths,
                    "dataset": str(dataset),
                    "output": out_dir,
                }
                res[label] = _median(sys.executable, task, args.repeats)
                _row(rows, label, res[label])
        _print_table(f"{n_volumes} volumes ({gz_mb:.0f} MB .nii.gz, {raw_mb:.0f} MB raw)", rows)
        summary[n_volumes] = res
        if not args.only_cli:
            _print_ratios(n_volumes, res, in_use)
            print(f"  bidsapp.engine.memory_bound: {_bound_mb(n_volumes):.0f} MB (peak RSS above)")
        _print_cli_ratio(res)
    _print_scaling(summary)
    print(f"\nload average at end: {os.getloadavg()}")
    return 0


def _print_ratios(n_volumes: int, res: dict, in_use: str) -> None:
    ours = res["bidsapp:bold_gz"]
    theirs = res["nilearn:bold_gz"]
    inflate = res[f"inflate:{in_use}"]
    streams = {k.split(":", 1)[1]: r for k, r in res.items() if k.startswith("inflate:")}
    fastest = min((n for n in streams if n in STREAMING), key=lambda n: streams[n]["seconds"])
    zlib_ = res.get("inflate:zlib")
    print(f"\nratios, {n_volumes} volumes (targets in brackets):")
    print(
        f"  bidsapp masker / fastest single-stream inflate ({fastest}) time: "
        f"{ours['seconds'] / streams[fastest]['seconds']:.2f} [<= {TARGET_INFLATE}]"
    )
    print(
        f"  bidsapp masker / inflate-only ({in_use}, in use) time: "
        f"{ours['seconds'] / inflate['seconds']:.2f}"
    )
    if zlib_:
        print(f"  inflate zlib / {in_use} time: {zlib_['seconds'] / inflate['seconds']:.2f}")
    print(
        f"  nilearn / bidsapp time, .nii.gz: {theirs['seconds'] / ours['seconds']:.2f} "
        f"[>= {TARGET_TIME:g}]"
    )
    print(
        f"  nilearn / bidsapp peak RSS, .nii.gz: "
        f"{theirs['peak_rss_mb'] / ours['peak_rss_mb']:.2f} [>= {TARGET_RSS:g}]"
    )
    print(f"  max |bidsapp - nilearn|, .nii.gz: {res['diff:bold_gz']:.2e} [<= {TOLERANCE:g}]")
    if "bidsapp:bold_nii" in res:
        o, t = res["bidsapp:bold_nii"], res["nilearn:bold_nii"]
        print(f"  nilearn / bidsapp time, .nii: {t['seconds'] / o['seconds']:.2f} [>= 5]")
        print(f"  nilearn / bidsapp peak RSS, .nii: {t['peak_rss_mb'] / o['peak_rss_mb']:.2f}")
        print(f"  max |bidsapp - nilearn|, .nii: {res['diff:bold_nii']:.2e} [<= {TOLERANCE:g}]")
    for key, value in res.items():
        if key.startswith("diff:") and value > TOLERANCE:
            print(f"  WARNING: {key} exceeds {TOLERANCE:g}")


def _print_cli_ratio(res: dict) -> None:
    one = res.get("(d) CLI, 2 runs, --n-jobs 1")
    two = res.get("(d) CLI, 2 runs, --n-jobs 2")
    if one and two:
        print(
            f"  CLI 2 runs, --n-jobs 2 / --n-jobs 1 time: {two['seconds'] / one['seconds']:.2f} "
            f"[<= 0.7]; process wall: {two['process_seconds'] / one['process_seconds']:.2f}"
        )


def _bound_mb(n_volumes: int) -> float:
    from bidsapp.engine import memory_bound

    return memory_bound((*SHAPE, n_volumes), np.float32, n_atlases=1, n_regions=N_REGIONS) / 2**20


def _print_scaling(summary: dict) -> None:
    if len(summary) < 2 or any("bidsapp:bold_gz" not in r for r in summary.values()):
        return
    print("\nscaling (peak RSS MB of the bidsapp masker / nilearn, by number of volumes):")
    for n_volumes, res in summary.items():
        print(
            f"  {n_volumes:5d} volumes: bidsapp {res['bidsapp:bold_gz']['peak_rss_mb']:.0f}, "
            f"nilearn {res['nilearn:bold_gz']['peak_rss_mb']:.0f}"
        )


if __name__ == "__main__":
    sys.exit(main())
