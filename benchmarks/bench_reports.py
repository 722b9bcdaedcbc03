"""Issue 12: what the participant report adds to a participant-level invocation.

Data (written once under ``--data-dir``, default ``/tmp/bidsapp-bench/reports``): a one-run
fMRIPrep-shaped dataset on TemplateFlow's res-02 MNI152NLin2009cAsym grid (97 x 115 x 97,
2 mm, origin (-96.5, -132.5, -78.5)), 200 volumes, float32, gzip level 1, one member, as
fMRIPrep writes its preprocessed BOLD: the brain from :mod:`bidsapp.synthetic` (network
signals, physiological noise, motion), and scalp and air noise in the rest of the acquisition
field of view (no voxel of it is zero; zeros outside it, as in ``bench_speed.py``). Beside
it the brain mask, the sidecar and fMRIPrep's confounds TSV (+ JSON) computed from the
data (``bidsapp.synthetic.confounds``), and no
``_boldref`` (so the report's mean image comes from the extraction's pass). The atlas is
Schaefer2018 400Parcels7Networks from an offline TemplateFlow home in the data folder (a
synthetic 400-region dseg on the res-02 grid with the real look-up table, networks and
colours included).

Measured, each in a fresh child process, ``--repeats`` times (medians):

- the CLI ``bidsapp BIDS OUT participant --atlas Schaefer2018:400Parcels7Networks`` with
  reports (the default) and with ``--no-reports``; "seconds" is ``cli.main`` (imports
  excluded), "process s" the child's wall time;
- the participant report alone, rebuilt on the outputs of a with-reports run, with the time
  of each figure (and of reading the inputs each needs), the matplotlib import, the Agg
  drawing and PNG encoding inside the figures, and the rest. As in the CLI, the modules the
  participant level has already imported (``bidsapp.cli``, ``bidsapp.image``) are imported
  first, untimed, and matplotlib's font list is in its cache folder (the CLI builds it in a
  child process while the runs are extracted).

The children import bidsapp from the checkout holding this script (``PYTHONPATH``), not
whichever one the environment has installed.

Usage::

    python benchmarks/bench_reports.py --repeats 3

Target (issue 12): with / without reports <= 1.25.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

N_VOLUMES = 200
T_R = 2.0
SPACE = "MNI152NLin2009cAsym"
ATLAS = "Schaefer2018:400Parcels7Networks"
SUBJECT = "01"
STEM = f"sub-{SUBJECT}_task-rest"
DEFAULT_DIR = Path("/tmp/bidsapp-bench/reports")
TARGET_RATIO = 1.25
#: The checkout measured: the one this script belongs to.
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _bold_header(shape: tuple[int, ...], affine: np.ndarray) -> bytes:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    hdr["pixdim"][4] = T_R
    hdr.set_data_offset(352)
    return hdr.binaryblock + b"\x00" * (352 - len(hdr.binaryblock))


def _ellipsoid(shape: tuple[int, int, int], fraction: float) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    centre = [(s - 1) / 2 for s in shape]
    dist = sum(((g - c) / (s * fraction)) ** 2 for g, c, s in zip(grid, centre, shape, strict=True))
    return dist <= 1.0


def _write_bold(path: Path, data: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> None:
    """Stream the 4D float32 image volume by volume (gzip level 1, one member)."""
    rng = np.random.default_rng(1)
    shape = brain.shape
    order = "F"  # NIfTI voxel order
    inside = brain.ravel(order=order)
    scalp = _ellipsoid(shape, 0.48) & ~brain
    head = scalp.ravel(order=order)
    # The rest of the acquisition field of view: low noise, never zero; zeros outside it.
    air = (_ellipsoid(shape, 0.50) & ~scalp & ~brain).ravel(order=order)
    partial = path.with_name(path.name + ".part")
    with (
        open(partial, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as sink,
    ):
        sink.write(_bold_header((*shape, data.shape[1]), affine))
        volume = np.zeros(inside.size, dtype=np.float32)
        # ``data`` holds the brain voxels in C order (numpy boolean indexing).
        c_to_f = np.flatnonzero(brain.ravel(order="C"))
        f_index = np.ravel_multi_index(np.unravel_index(c_to_f, shape), shape, order="F")
        for t in range(data.shape[1]):
            volume[f_index] = data[:, t]
            volume[head] = 300 + 30 * rng.standard_normal(int(head.sum()), dtype=np.float32)
            volume[air] = 1 + np.abs(8 * rng.standard_normal(int(air.sum()), dtype=np.float32))
            sink.write(volume.tobytes())
    partial.rename(path)


def make_reports_data(directory: Path, seed: int = 0) -> dict[str, Path]:
    """Write (or reuse) the fMRIPrep dataset and the TemplateFlow home of the benchmark.

    Parameters
    ----------
    directory : Path
        Folder of the data (reused when complete).
    seed : int, default=0
        Seed of every random draw.

    Returns
    -------
    dict of str to Path
        ``bids`` (the fMRIPrep dataset), ``templateflow`` (``TEMPLATEFLOW_HOME``), ``bold``.
    """
    from bidsapp.synthetic.anatomy import template_grid
    from bidsapp.synthetic.bold import render_bold, run_signals
    from bidsapp.synthetic.confounds import confounds_table
    from bidsapp.synthetic.files import save_nifti, write_json, write_tsv
    from bidsapp.synthetic.fmriprep import _dataset_description
    from bidsapp.synthetic.templateflow_home import make_templateflow_home

    directory = Path(directory)
    bids = directory / "fmriprep"
    home = directory / "templateflow"
    func = bids / f"sub-{SUBJECT}" / "func"
    base = f"{STEM}_space-{SPACE}_res-2"
    paths = {"bids": bids, "templateflow": home, "bold": func / f"{base}_desc-preproc_bold.nii.gz"}
    done = directory / ".complete"
    if done.is_file():
        return paths
    shutil.rmtree(bids, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    make_templateflow_home(home, atlases=(("Schaefer2018", "400Parcels7Networks"),), seed=seed)
    shape, affine = template_grid(SPACE, 2, home)
    rng = np.random.default_rng([seed, zlib.crc32(STEM.encode())])
    n_dummy = 2
    spikes = (int(0.4 * N_VOLUMES), int(0.4 * N_VOLUMES) + 1, int(0.75 * N_VOLUMES))
    signals = run_signals(rng, N_VOLUMES, T_R, spikes, n_dummy)
    data, masks = render_bold((shape, affine), signals, rng, seed=seed, with_motion=True)
    write_json(bids / "dataset_description.json", _dataset_description("23.2.3"))
    func.mkdir(parents=True, exist_ok=True)
    _write_bold(paths["bold"], data.astype(np.float32), masks["brain"], affine)
    write_json(
        func / f"{base}_desc-preproc_bold.json",
        {"RepetitionTime": T_R, "SkullStripped": False, "TaskName": "rest"},
    )
    save_nifti(masks["brain"].astype(np.uint8), affine, func / f"{base}_desc-brain_mask.nii.gz")
    write_json(func / f"{base}_desc-brain_mask.json", {"Type": "Brain"})
    frame, metadata = confounds_table(data, masks, signals, T_R, rng, aroma=False)
    write_tsv(func / f"{STEM}_desc-confounds_timeseries.tsv", frame)
    write_json(func / f"{STEM}_desc-confounds_timeseries.json", metadata)
    done.write_text("ok\n")
    return paths


# ---------------------------------------------------------------------------
# Measured tasks (each in a fresh process)
# ---------------------------------------------------------------------------


def _cli_args(bids: str, output: str, reports: bool) -> list[str]:
    return [bids, output, "participant", "--atlas", ATLAS] + ([] if reports else ["--no-reports"])


def _timed(table: dict[str, float], key: str, function: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            table[key] = table.get(key, 0.0) + time.perf_counter() - started

    return wrapper


def _report_breakdown(output: str, bids: str) -> dict[str, float]:
    """Rebuild the participant report, timing its parts (run in a fresh process)."""
    import bidsapp.cli  # noqa: F401 - imported by the participant level before its report
    import bidsapp.image  # noqa: F401 - idem (the extraction)
    from bidsapp.report import contours, figures, participant

    table: dict[str, float] = {}
    started = time.perf_counter()
    import matplotlib.figure  # noqa: F401 - the first figure's import, timed on its own

    table["import matplotlib"] = time.perf_counter() - started
    for module, name, key in [
        (participant, "_load_grids", "contours: read images"),
        (participant, "plot_atlas_contours", "contours: draw"),
        (figures, "plot_coverage", "coverage"),
        (figures, "plot_framewise_displacement", "framewise displacement"),
        (figures, "plot_carpet", "carpet"),
        (participant, "_read_relmat", "connectivity: read relmat"),
        (figures, "plot_connectivity", "connectivity: draw"),
        (participant, "read_timeseries", "read timeseries"),
        (participant, "collect_runs", "read status and sidecars"),
        (participant, "read_report_data", "read reportdata npz"),
    ]:
        setattr(module, name, _timed(table, key, getattr(module, name)))
    figures._to_data_uri = _timed(table, "(of which Agg draw + PNG)", figures._to_data_uri)
    encode = _timed(table, "(of which PNG encoding)", figures._png_data_uri)
    figures._png_data_uri = encode
    contours._png_data_uri = encode
    started = time.perf_counter()
    participant.write_participant_report(Path(output), SUBJECT, Path(bids))
    table["whole report"] = time.perf_counter() - started + table["import matplotlib"]
    parts = [k for k in table if k != "whole report" and not k.startswith("(of which")]
    table["other (HTML, writing)"] = table["whole report"] - sum(table[k] for k in parts)
    return table


def _run_one(task: dict) -> dict:
    """Do one measured task in this (fresh) process."""
    if task["kind"] == "report":
        started = time.perf_counter()
        parts = _report_breakdown(task["output"], task["bids"])
        return {"seconds": time.perf_counter() - started, "parts": parts}
    from bidsapp.cli import main  # imports are not timed

    shutil.rmtree(task["output"], ignore_errors=True)
    started = time.perf_counter()
    code = main(_cli_args(task["bids"], task["output"], task["kind"] == "reports"))
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"bidsapp exited with {code}")
    return {"seconds": seconds}


def _measure(task: dict, env: dict[str, str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(task)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{task['kind']} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def run_reports_benchmark(workdir: Path = DEFAULT_DIR, repeats: int = 3) -> dict:
    """Time the participant level with and without reports, and the report's parts.

    Parameters
    ----------
    workdir : Path, default=/tmp/bidsapp-bench/reports
        Data folder (made once) and outputs.
    repeats : int, default=3
        Runs of each measurement (medians reported); with and without reports alternate.

    Returns
    -------
    dict
        ``reports`` and ``no_reports`` (median ``seconds``, ``process_seconds``, ``runs``),
        ``ratio`` (with / without, in-process seconds), ``process_ratio``, and ``breakdown``
        (median seconds of each part of the report, rebuilt alone).
    """
    workdir = Path(workdir)
    paths = make_reports_data(workdir)
    env = dict(os.environ, TEMPLATEFLOW_HOME=str(paths["templateflow"]))
    env["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    out = workdir / "out"
    runs: dict[str, list[dict]] = {"reports": [], "no_reports": []}
    for _ in range(repeats):  # alternate, so that a change of load hits both
        for kind in ("no_reports", "reports"):
            task = {"kind": kind, "bids": str(paths["bids"]), "output": str(out / kind)}
            runs[kind].append(_measure(task, env))
    result: dict[str, Any] = {}
    for kind, measured in runs.items():
        result[kind] = {
            "seconds": statistics.median(r["seconds"] for r in measured),
            "process_seconds": statistics.median(r["process_seconds"] for r in measured),
            "runs": [round(r["seconds"], 2) for r in measured],
        }
    result["ratio"] = result["reports"]["seconds"] / result["no_reports"]["seconds"]
    result["process_ratio"] = (
        result["reports"]["process_seconds"] / result["no_reports"]["process_seconds"]
    )
    task = {"kind": "report", "bids": str(paths["bids"]), "output": str(out / "reports")}
    fonts = workdir / "matplotlib"  # a cache holding the font list, as the CLI's has
    shutil.rmtree(fonts, ignore_errors=True)
    fonts.mkdir()
    report_env = dict(env, MPLCONFIGDIR=str(fonts))
    cmd = [sys.executable, "-c", "import matplotlib.font_manager"]
    subprocess.run(cmd, env=report_env, check=True)
    parts = [_measure(task, report_env)["parts"] for _ in range(repeats)]
    result["breakdown"] = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    report = out / "reports" / f"sub-{SUBJECT}.html"
    result["report_kb"] = report.stat().st_size / 1024
    result["bold_mb"] = paths["bold"].stat().st_size / 2**20
    result["bidsapp"] = str(ROOT)
    return result


def _print(result: dict) -> None:
    print(f"bidsapp from {result['bidsapp']}")
    print(f"BOLD {result['bold_mb']:.0f} MB gzipped; report {result['report_kb']:.0f} kB")
    print(f"| {'participant level':22} | seconds | process s | runs (s) |")
    print(f"| {'-' * 22} | ------: | --------: | --- |")
    for kind, label in (("no_reports", "--no-reports"), ("reports", "with reports")):
        r = result[kind]
        print(f"| {label:22} | {r['seconds']:7.2f} | {r['process_seconds']:9.2f} | {r['runs']} |")
    print(
        f"\nwith / without reports: {result['ratio']:.3f} (process {result['process_ratio']:.3f})"
        f" [target <= {TARGET_RATIO}]"
    )
    print(f"\n| {'report part (rebuilt alone)':32} | seconds |")
    print(f"| {'-' * 32} | ------: |")
    for key, seconds in result["breakdown"].items():
        print(f"| {key:32} | {seconds:7.3f} |")


def main(argv: list[str] | None = None) -> int:
    """Generate the data, run the measurements, print the tables and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # the data, too, from this checkout's bidsapp.synthetic
        sys.path.insert(0, str(ROOT))
    if args.run_one:
        print(json.dumps(_run_one(json.loads(args.run_one))))
        return 0
    result = run_reports_benchmark(args.data_dir, args.repeats)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ratio"] <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
