"""Issue 12: a participant's cost does not grow with the dataset; the group level stays cheap.

Times, in fresh child processes (imports included, so that each peak RSS is its own):

- the command line for **one participant** (``--participant-label 0001 --no-reports``) on
  fMRIPrep-23-shaped trees of 100, 1,000 and 5,000 subjects (``scale_trees.py``: 107 files per
  subject, one real small run in the first), without and with a shared pre-built index
  (``--bids-database-dir``);
- the **query for all participants** (:func:`bidsapp.dataset.query.find_runs`) on each tree;
- the **group level** on 200 and 2,000 cloned participant outputs (``scale_group.py``).

Targets: one participant <= 1.5x from 100 to 5,000 subjects and <= 10 s at 5,000; all
participants of 1,000 subjects <= 60 s; group <= 40 ms per run, peak RSS flat.

``python benchmarks/bench_scale.py --subjects 100 1000 5000 --repeats 3 --group-runs 200 2000``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

QUERY_ALL = """
import sys, time
start = time.perf_counter()
from bidsapp.dataset.query import find_runs
runs = find_runs(sys.argv[1])
print(len(runs), time.perf_counter() - start)
"""


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``argv`` in a child; return (wall seconds, peak RSS MB, stdout)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def _median_row(label: str, runs: list[tuple[float, float, str]]) -> dict:
    return {
        "label": label,
        "seconds": statistics.median(r[0] for r in runs),
        "rss": max(r[1] for r in runs),
        "runs": [round(r[0], 2) for r in runs],
    }


def one_participant(tree: Path, work: Path, repeats: int, shared: Path | None) -> dict:
    """Median wall time of the CLI for sub-0001 (outputs removed between repeats)."""
    bidsapp = str(Path(sys.executable).with_name("bidsapp"))
    results = []
    for repeat in range(repeats):
        out = work / f"out-{tree.name}-{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        argv = [bidsapp, str(tree), str(out), "participant", "--participant-label", "0001"]
        argv += ["--no-reports"] + (["--bids-database-dir", str(shared)] if shared else [])
        results.append(timed(argv))
        shutil.rmtree(out, ignore_errors=True)
    return _median_row("shared index" if shared else "own index", results)


def query_all(tree: Path) -> dict:
    """Wall time of the query for every participant (one child, imports included)."""
    seconds, rss, output = timed([sys.executable, "-c", QUERY_ALL, str(tree)])
    n_runs, query_seconds = output.split()[-2:]
    return {"seconds": seconds, "query": float(query_seconds), "runs": int(n_runs), "rss": rss}


def build_shared_index(tree: Path, shared: Path) -> float:
    """Seconds to build the shared index of the whole tree (the first job's cost)."""
    shutil.rmtree(shared, ignore_errors=True)
    code = "import sys; from bidsapp.dataset.query import find_runs; "
    code += "find_runs(sys.argv[1], participant_labels='0001', bids_database_dir=sys.argv[2])"
    return timed([sys.executable, "-c", code, str(tree), str(shared)])[0]


def main() -> None:
    """Run the benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-runs", type=int, nargs="*", default=[200, 2000])
    parser.add_argument("--regions", type=int, default=400)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bidsapp-bench/scale"))
    parser.add_argument("--skip-query-all-above", type=int, default=5000)
    args = parser.parse_args()

    from scale_trees import make_scale_tree

    from bidsapp import synthetic

    os.environ["TEMPLATEFLOW_AUTOUPDATE"] = "0"
    args.workdir.mkdir(parents=True, exist_ok=True)
    home = synthetic.make_templateflow_home(args.workdir / "templateflow")
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    work = args.workdir / "runs"
    work.mkdir(exist_ok=True)

    print(f"Measured {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for n in args.subjects:
        start = time.perf_counter()
        tree = make_scale_tree(args.workdir / f"tree-{n}", n, home)
        made = time.perf_counter() - start
        own = one_participant(tree, work, args.repeats, None)
        shared = args.workdir / f"shared-index-{n}"
        build = build_shared_index(tree, shared)
        reader = one_participant(tree, work, args.repeats, shared)
        every = query_all(tree) if n <= args.skip_query_all_above else None
        rows.append((n, own, build, reader, every))
        print(f"  {n} subjects ready (tree {made:.0f} s)", flush=True)

    print(
        "\n| subjects | one participant, CLI s | peak RSS MB | shared index: build s "
        "| one participant with it, CLI s | all participants: query s | runs | peak RSS MB |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, own, build, reader, every in rows:
        all_cells = (
            f"{every['query']:.1f} | {every['runs']} | {every['rss']:.0f}" if every else "- | - | -"
        )
        print(
            f"| {n} | {own['seconds']:.2f} {own['runs']} | {own['rss']:.0f} | {build:.1f} "
            f"| {reader['seconds']:.2f} {reader['runs']} | {all_cells} |"
        )
    first, last = rows[0], rows[-1]
    ratio = last[1]["seconds"] / first[1]["seconds"]
    print(
        f"\nOne participant, {last[0]} / {first[0]} subjects: **{ratio:.2f}x** [<= 1.5]; "
        f"at {last[0]}: **{last[1]['seconds']:.2f} s** [<= 10]; with the shared index "
        f"{last[3]['seconds'] / first[3]['seconds']:.2f}x."
    )
    for n, _, _, _, every in rows:
        if n == 1000 and every:
            print(f"All participants of 1,000 subjects: **{every['query']:.1f} s** [<= 60].")

    if args.group_runs:
        from scale_group import run_group_benchmark

        results = run_group_benchmark(args.group_runs, args.regions, args.workdir / "group")
        print(f"\nGroup level, {args.regions} regions, 60 volumes per run, reports on:")
        print("| runs | group level s | ms per run | peak RSS MB | exit |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for row in results:
            print(
                f"| {row['runs']} | {row['seconds']:.1f} | {row['ms_per_run']:.1f} "
                f"| {row['peak_rss_mb']:.0f} | {row['exit_code']} |"
            )
        if len(results) >= 2:
            first, last = results[0], results[-1]
            slope = 1000 * (last["seconds"] - first["seconds"]) / (last["runs"] - first["runs"])
            print(
                f"Each run beyond {first['runs']}: **{slope:.1f} ms** [<= 40]; ms per run at "
                f"{last['runs']}: **{last['ms_per_run']:.1f}** [<= 40]; peak RSS "
                f"{last['runs']} / {first['runs']} runs: "
                f"**{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}x** [flat]."
            )


if __name__ == "__main__":
    main()
