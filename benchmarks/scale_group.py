"""Issue 12: the group level's cost per run and its peak memory, for many runs.

One participant-level output dataset is built with the real CLI on a tiny synthetic fMRIPrep
dataset (four subjects, one run each, the default 400-region atlas drawn into a synthetic
TemplateFlow home, ``--denoise-strategy simple``). It is then cloned to N subjects: the
participant files are hard-linked under the new subject's names (their bytes hold no subject
label), and the files that name the subject are rewritten: the JSON sidecars (``Sources``
URIs) and the status table (``subject`` and ``outputs`` cells). The timeseries sidecar's
``OutputFiles`` record is rebuilt with the new names and the SHA-256 of the new bytes, so the
group level accepts every clone as the participant level's own output. Clone ``k`` copies base
subject ``k mod 4``; the first four clones are the base subjects themselves, so the group
level's check against BIDS_DIR (four runs) finds every run done.

Then ``bidsapp BIDS_DIR OUT group --work-dir WORK`` runs in a fresh child process per size
(the pybids index of BIDS_DIR in WORK was built by the participant level), and its wall time,
milliseconds per run and peak RSS (``os.wait4``'s ``ru_maxrss`` of that child) are reported.

Usage::

    python benchmarks/scale_group.py --runs 200 2000 --regions 400

Data under ``/tmp/bidsapp-bench/scale-group`` (``--workdir``); the base dataset and the clones
are kept and reused. The cloned TSVs are hard links of four files, so they are read from the
page cache: this measures the group level's CPU and memory, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_WORKDIR = Path("/tmp/bidsapp-bench/scale-group")
BASE_SUBJECTS = ("01", "02", "03", "04")
#: Atlases of the default TemplateFlow home, by number of regions.
ATLASES = {
    100: ("Schaefer2018", "100Parcels7Networks"),
    200: ("Schaefer2018", "200Parcels7Networks"),
    400: ("Schaefer2018", "400Parcels7Networks"),
}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _cli_argv(*argv: object) -> list[str]:
    code = "import sys; from bidsapp.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *(str(a) for a in argv)]


def _child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def build_base(workdir: Path, regions: int = 400, volumes: int = 60) -> dict[str, Path]:
    """Write (or reuse) the synthetic inputs and their participant outputs (real CLI).

    Parameters
    ----------
    workdir : Path
        Benchmark folder.
    regions : int
        Atlas size: 100, 200 or 400 regions (Schaefer 2018, 7 networks).
    volumes : int
        Volumes per synthetic run (the first two are non-steady-state).

    Returns
    -------
    dict
        ``root``, ``bids_dir``, ``output_dir``, ``work_dir``, ``templateflow``.
    """
    from bidsapp import synthetic

    atlas, desc = ATLASES[regions]
    root = workdir / f"base_{regions}regions_{volumes}vols"
    paths = {
        "root": root,
        "templateflow": root / "templateflow",
        "bids_dir": root / "fmriprep",
        "output_dir": root / "derivatives",
        "work_dir": root / "work",
    }
    if (root / "done").exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    synthetic.make_templateflow_home(paths["templateflow"], atlases=[(atlas, desc)])
    synthetic.make_fmriprep_dataset(
        paths["bids_dir"],
        subjects=BASE_SUBJECTS,
        runs=(1,),
        n_volumes=volumes,
        templateflow_home=paths["templateflow"],
    )
    argv = _cli_argv(
        paths["bids_dir"],
        paths["output_dir"],
        "participant",
        "--atlas",
        f"{atlas}:{desc}",
        "--denoise-strategy",
        "simple",
        "--work-dir",
        paths["work_dir"],
        "--no-reports",
    )
    env = _child_env(TEMPLATEFLOW_HOME=str(paths["templateflow"]))
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    (root / "done").write_text("")
    return paths


def _subject_re(label: str) -> re.Pattern[str]:
    """``sub-<label>`` as a whole label (followed by ``/``, ``_``, ``.`` or the end)."""
    return re.compile(rf"sub-{re.escape(label)}(?=[/_.]|$)")


def _clone_sidecar_text(text: str, source: str, target: str) -> str:
    return _subject_re(source).sub(f"sub-{target}", text)


def _clone_status(text: str, source: str, target: str) -> str:
    """The status table of ``source`` made the status table of ``target``."""
    lines = text.split("\n")
    header = lines[0].split("\t")
    subject, outputs = header.index("subject"), header.index("outputs")
    out = [lines[0]]
    for line in lines[1:]:
        if not line:
            out.append(line)
            continue
        cells = line.split("\t")
        if cells[subject] != source:
            raise ValueError(f"status row of subject {cells[subject]!r} in sub-{source}'s table")
        cells[subject] = target
        cells[outputs] = _subject_re(source).sub(f"sub-{target}", cells[outputs])
        out.append("\t".join(cells))
    return "\n".join(out)


def _clone_subject(base_out: Path, out: Path, source: str, target: str) -> None:
    """Clone ``sub-<source>``'s participant outputs into ``out`` as ``sub-<target>``."""
    from bidsapp.dataset import fileio, jsonio, run_outputs

    pattern = _subject_re(source)

    def renamed(name: str) -> str:
        return pattern.sub(f"sub-{target}", name)

    src_func = base_out / f"sub-{source}" / "func"
    dst_func = out / f"sub-{target}" / "func"
    dst_func.mkdir(parents=True)
    sidecars = []
    for path in sorted(src_func.iterdir()):
        dest = dst_func / renamed(path.name)
        if path.name.endswith("_timeseries.json"):
            sidecars.append((path, dest))
        elif path.suffix == ".json":
            dest.write_text(_clone_sidecar_text(path.read_text(), source, target))
        else:  # TSVs: no subject label inside, the same bytes
            os.link(path, dest)
    for path, dest in sidecars:  # after its members: it records their hashes
        sidecar = json.loads(_clone_sidecar_text(path.read_text(), source, target))
        members = sidecar[run_outputs.OUTPUT_FILES_KEY]
        sidecar[run_outputs.OUTPUT_FILES_KEY] = {
            renamed(name): fileio.sha256_digest((dst_func / renamed(name)).read_bytes())
            for name in members
        }
        dest.write_text(jsonio.json_text(sidecar))
    logs = base_out / "logs"
    status = logs / f"sub-{source}_status.tsv"
    (out / "logs" / status.name.replace(f"sub-{source}_", f"sub-{target}_")).write_text(
        _clone_status(status.read_text(), source, target)
    )
    for path in sorted((logs / "report").glob(f"sub-{source}_*")):
        os.link(path, out / "logs" / "report" / renamed(path.name))


def clone_outputs(base: dict[str, Path], n_runs: int) -> Path:
    """Write (or reuse) the base outputs cloned to ``n_runs`` subjects of one run each.

    Parameters
    ----------
    base : dict
        From :func:`build_base`.
    n_runs : int
        Subjects (one run each) of the clone.

    Returns
    -------
    Path
        The cloned output dataset.
    """
    out = base["root"] / f"derivatives_{n_runs}runs"
    if (out / "group").exists():  # written by the group level run on a complete clone
        shutil.rmtree(out / "group")
    if (out.parent / f"{out.name}.done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    base_out = base["output_dir"]
    out.mkdir()
    for entry in base_out.iterdir():
        if entry.name.startswith("sub-") or entry.name in ("logs", "group", "group.html"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, out / entry.name)
        else:
            shutil.copy2(entry, out / entry.name)
    (out / "logs" / "report").mkdir(parents=True)
    for k in range(n_runs):
        target = f"{k + 1:02d}"
        _clone_subject(base_out, out, BASE_SUBJECTS[k % len(BASE_SUBJECTS)], target)
    (out.parent / f"{out.name}.done").write_text("")
    return out


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------


def time_group(
    base: dict[str, Path], output_dir: Path, *, reports: bool = True, log: Path | None = None
) -> dict:
    """Run the group level CLI in a fresh child process; wall time and peak RSS."""
    argv = _cli_argv(base["bids_dir"], output_dir, "group", "--work-dir", base["work_dir"])
    if not reports:
        argv.append("--no-reports")
    env = _child_env(TEMPLATEFLOW_HOME=str(base["templateflow"]))
    log = log or output_dir.with_name(output_dir.name + "_group.log")
    with open(log, "wb") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "exit_code": proc.returncode,
        "log": str(log),
    }


def run_group_benchmark(
    runs: list[int],
    regions: int = 400,
    workdir: Path = DEFAULT_WORKDIR,
    *,
    volumes: int = 60,
    reports: bool = True,
) -> list[dict]:
    """Time the group level CLI on ``runs`` cloned runs each (one child process per size).

    Parameters
    ----------
    runs : list of int
        Numbers of runs (one subject each) to measure.
    regions : int
        Atlas size (100, 200 or 400).
    workdir : Path
        Benchmark folder (data kept and reused).
    volumes : int
        Volumes per synthetic run.
    reports : bool
        Also draw the group report (the CLI's default).

    Returns
    -------
    list of dict
        One per size: ``runs``, ``regions``, ``volumes``, ``seconds``, ``ms_per_run``,
        ``peak_rss_mb``, ``exit_code``, ``log`` (the group level's output), ``timeseries_kb``
        and ``relmat_kb`` (sizes of one run's TSVs).
    """
    workdir = Path(workdir)
    base = build_base(workdir, regions, volumes)
    func = base["output_dir"] / f"sub-{BASE_SUBJECTS[0]}" / "func"
    sizes = {
        kind: next(func.glob(f"*_{kind}.tsv")).stat().st_size / 1024
        for kind in ("timeseries", "relmat")
    }
    results = []
    for n in runs:
        output_dir = clone_outputs(base, n)
        measured = time_group(base, output_dir, reports=reports)
        results.append(
            {
                "runs": n,
                "regions": regions,
                "volumes": volumes,
                **measured,
                "ms_per_run": 1000 * measured["seconds"] / n,
                "timeseries_kb": sizes["timeseries"],
                "relmat_kb": sizes["relmat"],
            }
        )
    return results


def format_results(results: list[dict]) -> str:
    """A Markdown table of :func:`run_group_benchmark`'s results."""
    lines = [
        "| runs | regions | volumes | seconds | ms per run | peak RSS MB | exit |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['runs']} | {r['regions']} | {r['volumes']} | {r['seconds']:.2f} | "
            f"{r['ms_per_run']:.1f} | {r['peak_rss_mb']:.0f} | {r['exit_code']} |"
        )
    if results:
        r = results[0]
        lines.append(
            f"\none run: timeseries TSV {r['timeseries_kb']:.0f} kB, relmat TSV "
            f"{r['relmat_kb']:.0f} kB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--regions", type=int, choices=sorted(ATLASES), default=400)
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--no-reports", action="store_true", help="group level --no-reports")
    args = parser.parse_args(argv)
    results = run_group_benchmark(
        args.runs, args.regions, args.workdir, volumes=args.volumes, reports=not args.no_reports
    )
    print(format_results(results))
    if len(results) >= 2:
        first, last = results[0], results[-1]
        print(
            f"\n{last['runs']} / {first['runs']} runs: "
            f"time x{last['seconds'] / first['seconds']:.2f}"
            f", ms per run x{last['ms_per_run'] / first['ms_per_run']:.2f}, peak RSS "
            f"x{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}"
        )
    return 0 if all(r["exit_code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
