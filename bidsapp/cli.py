"""Command line: ``bidsapp BIDS_DIR OUTPUT_DIR {participant,group} [options]``.

This module only parses arguments into a :class:`bidsapp.app.config.RunConfig` and hands it to
:func:`bidsapp.app.command.run_command` (``bidsapp demo`` to :func:`bidsapp.app.demo.run_demo`);
nothing below it sees an ``argparse.Namespace``. It configures logging once.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from bidsapp import __version__
from bidsapp.app.config import (
    CONNECTIVITY_CHOICES,
    DEFAULT_ATLAS,
    DEFAULT_MIN_COVERAGE,
    DEFAULT_SPACE,
    PRESETS,
    REDUCTIONS,
    STANDARDIZE_CHOICES,
    ConfigError,
    RunConfig,
    make_config,
)
from bidsapp.app.status import EXIT_USAGE

# The shell's code for a process ended by SIGTERM, which is what a batch scheduler sends at
# a job's time limit (SLURM, PBS, ``docker stop``).
# Ctrl-C (SIGINT, Python's KeyboardInterrupt): the shell's code for it.

EPILOG = """\
exit codes:
  0  every run succeeded (or was already done)
  1  a run failed or was excluded (the others were written; see the summary), or no run matched
  2  usage error (bad option or label, unreadable BIDS_DIR, OUTPUT_DIR equal to BIDS_DIR)
  130  stopped by SIGINT (Ctrl-C) (finished runs are kept; the same command does the rest)
  143  stopped by SIGTERM (finished runs are kept; the same command does the rest)

Run `bidsapp demo OUTDIR` to build a small synthetic fMRIPrep dataset and process it.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _dummy_scans(text: str) -> int | None:
    if text == "auto":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 0, got {text!r}")
    return value


def _denoise_preset(text: str) -> str:
    if text in PRESETS or text.endswith(".json"):
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(PRESETS)} or a path to a JSON preset, got {text!r}"
    )


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the BIDS-App.

    Returns
    -------
    argparse.ArgumentParser
        The parser; ``bidsapp --help`` prints its help.
    """
    parser = argparse.ArgumentParser(
        prog="bidsapp",
        description=(
            "Extract denoised parcel timeseries from an fMRIPrep derivatives dataset and write "
            "them as BIDS derivatives (XCP-D-compatible names)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="fMRIPrep derivatives dataset (read-only).")
    parser.add_argument("output_dir", type=Path, help="Output directory for the derivatives.")
    parser.add_argument(
        "analysis_level",
        choices=("participant", "group"),
        help="participant: extract timeseries per run; group: summarise participant outputs.",
    )
    parser.add_argument("--version", action="version", version=f"bidsapp {__version__}")

    sel = parser.add_argument_group("selecting runs")
    sel.add_argument(
        "--participant-label",
        "--participant_label",
        dest="participant_label",
        action="extend",
        nargs="+",
        metavar="LABEL",
        default=None,
        help="Participants to process, with or without 'sub-'; repeat to add more (default: all).",
    )
    sel.add_argument(
        "--session-label",
        "--session_label",
        dest="session_label",
        action="extend",
        nargs="+",
        metavar="LABEL",
        default=None,
        help="Sessions to process, with or without 'ses-'; repeat to add more (default: all).",
    )
    sel.add_argument(
        "--task",
        "--task-id",
        dest="task",
        action="extend",
        nargs="+",
        metavar="TASK",
        default=None,
        help="Tasks to process; repeat to add more (default: all).",
    )
    sel.add_argument(
        "--bids-filter-file",
        type=Path,
        metavar="FILE",
        default=None,
        help="JSON file of pybids filters in fMRIPrep's format, e.g. "
        '{"bold": {"run": 1}} (default: none).',
    )
    sel.add_argument(
        "--space",
        default=DEFAULT_SPACE,
        help=f"Template space of the preprocessed BOLD (default: {DEFAULT_SPACE}).",
    )

    atl = parser.add_argument_group("atlases")
    atl.add_argument(
        "--atlas",
        action="append",
        metavar="ATLAS",
        default=None,
        help="TemplateFlow atlas as NAME[:DESC] or a path to a local *_dseg.nii[.gz]; "
        f"repeat for several (default: {DEFAULT_ATLAS}).",
    )
    atl.add_argument(
        "--atlas-lut",
        type=Path,
        metavar="FILE",
        default=None,
        help="dseg.tsv look-up table (index, name) for a local atlas without a sibling "
        "*_dseg.tsv (default: the sibling file).",
    )
    atl.add_argument(
        "--atlas-space",
        metavar="SPACE",
        default=None,
        help="Template space of the local atlas(es) when their file name has no 'space-' "
        "entity; it must be the space of the runs (default: the file name's space-).",
    )

    den = parser.add_argument_group("denoising")
    den.add_argument(
        "--denoise-strategy",
        type=_denoise_preset,
        default="simple",
        metavar="{" + ",".join(PRESETS) + "} or FILE.json",
        help="Confound preset (nilearn's load_confounds_strategy presets, giga_connectome's and "
        "XCP-D's; columns in the README) or a JSON file of load_confounds parameters "
        "(default: simple).",
    )
    den.add_argument(
        "--confounds-columns",
        nargs="+",
        metavar="REGEX",
        default=None,
        help="Explicit confound columns (full-match regular expressions, e.g. "
        "'trans_.*' 'a_comp_cor_0[0-4]'), replacing the preset's selection (default: none).",
    )
    den.add_argument(
        "--fd-threshold",
        type=_non_negative_float,
        metavar="MM",
        default=None,
        help="Censor volumes with framewise displacement above this (mm); 0 disables "
        "(default: the preset's value).",
    )
    den.add_argument(
        "--std-dvars-threshold",
        type=_non_negative_float,
        metavar="VALUE",
        default=None,
        help="Censor volumes with standardized DVARS above this; 0 disables "
        "(default: the preset's value).",
    )
    den.add_argument(
        "--dummy-scans",
        type=_dummy_scans,
        metavar="{auto,N}",
        default=None,
        help="Initial volumes to drop; 'auto' drops fMRIPrep's non-steady-state volumes, "
        "a number replaces them (default: auto).",
    )
    den.add_argument(
        "--min-time",
        type=_non_negative_float,
        metavar="SECONDS",
        default=0.0,
        help="Exclude runs with less than this many seconds of data left after censoring "
        "(XCP-D's --min-time); runs without residual degrees of freedom are always "
        "excluded (default: 0.0).",
    )

    ext = parser.add_argument_group("extraction and cleaning")
    ext.add_argument(
        "--strategy",
        choices=REDUCTIONS,
        default="mean",
        help="How a region's voxels are summarised at each volume (default: mean).",
    )
    ext.add_argument(
        "--standardize",
        choices=STANDARDIZE_CHOICES,
        default="zscore_sample",
        help="Standardization of each region signal (default: zscore_sample).",
    )
    ext.add_argument(
        "--detrend",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Remove linear trends (default: off; the presets carry cosine regressors).",
    )
    ext.add_argument(
        "--low-pass",
        type=_non_negative_float,
        metavar="HZ",
        default=None,
        help="Low-pass cutoff in Hz (default: none).",
    )
    ext.add_argument(
        "--high-pass",
        type=_non_negative_float,
        metavar="HZ",
        default=None,
        help="High-pass cutoff in Hz (default: none).",
    )
    ext.add_argument(
        "--smoothing-fwhm",
        type=_non_negative_float,
        metavar="MM",
        default=None,
        help="Gaussian smoothing FWHM in mm before extraction (default: none).",
    )
    ext.add_argument(
        "--min-coverage",
        type=_fraction,
        default=DEFAULT_MIN_COVERAGE,
        help="Regions with a smaller fraction of voxels inside the brain mask are n/a "
        f"(default: {DEFAULT_MIN_COVERAGE}).",
    )

    con = parser.add_argument_group("connectivity")
    con.add_argument(
        "--connectivity",
        action="extend",
        nargs="+",
        choices=CONNECTIVITY_CHOICES,
        metavar="MEASURE",
        default=None,
        help="Connectivity matrices to write, of: "
        f"{', '.join(CONNECTIVITY_CHOICES)}. correlation is Pearson's r; partialcorrelation, "
        "covariance and precision use a Ledoit-Wolf covariance (as nilearn's "
        "ConnectivityMeasure); tangent is group level only: the geometric mean of the runs' "
        "covariances (default: correlation).",
    )
    con.add_argument(
        "--fisher-z",
        action="store_true",
        help="Also write the Fisher z-transform (arctanh) of the correlation and partial "
        "correlation matrices, with 'Fisherz' added to their desc- label.",
    )
    con.add_argument(
        "--concatenate-runs",
        action="store_true",
        help="Also write per-subject matrices of each task (and session) from the "
        "timeseries of its runs concatenated, as written (participant level).",
    )

    run = parser.add_argument_group("running")
    run.add_argument(
        "--n-jobs",
        "--nprocs",
        dest="n_jobs",
        type=_positive_int,
        default=1,
        help="Runs processed in parallel (default: 1).",
    )
    run.add_argument(
        "--work-dir",
        "-w",
        type=Path,
        default=None,
        help="Scratch directory for the pybids database and caches, reused by later runs "
        "(default: none; the pybids index is kept in memory).",
    )
    run.add_argument(
        "--bids-database-dir",
        type=Path,
        default=None,
        help="Folder of one pybids index of the whole dataset, read by every job at once "
        "(as fMRIPrep's option): the first job that finds none builds it, the others wait; "
        "a job whose participants' files changed since indexes them itself. Remove the "
        "folder to rebuild it (default: none; each job indexes only its participants).",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="Recompute outputs that already exist with the same parameters.",
    )
    run.add_argument(
        "--no-reports",
        dest="reports",
        action="store_false",
        help="Do not write HTML reports.",
    )
    run.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        default=None,
        help="Run jobs on an existing Dask cluster (needs the 'dask' extra) (default: none).",
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="More messages; repeat for debug output.",
    )
    return parser


def build_demo_parser() -> argparse.ArgumentParser:
    """Build the parser of ``bidsapp demo``.

    Returns
    -------
    argparse.ArgumentParser
        The demo sub-command's parser.
    """
    parser = argparse.ArgumentParser(
        prog="bidsapp demo",
        description=(
            "Build a small synthetic fMRIPrep derivatives dataset and a TemplateFlow home "
            "(offline), then run the participant and group levels on it."
        ),
    )
    parser.add_argument("outdir", type=Path, help="Directory to create the demo in.")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="More messages; repeat for debug."
    )
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Turn parsed arguments into a :class:`~bidsapp.app.config.RunConfig`.

    Parameters
    ----------
    args : argparse.Namespace
        Result of :func:`build_parser` ``.parse_args``; its attribute names are the keyword
        options of :func:`bidsapp.app.config.make_config`.

    Returns
    -------
    RunConfig
        The settings of this invocation.

    Raises
    ------
    ConfigError
        When an option's value cannot be used (e.g. a label such as ``../x``).
    """
    return make_config(**vars(args))


class _ConsoleHandler(logging.StreamHandler):
    """Writes the product's lines as they are, to the stream ``sys`` has when each is emitted.

    Resolved at emit time, so that a replaced ``sys.stdout`` (a test's capture, the app's
    guard against a reader that leaves) receives them; flushed after every line.
    """

    def __init__(self, stream_name: str, below: int | None = None, from_: int = 0) -> None:
        super().__init__()
        self._stream_name = stream_name
        self.setFormatter(logging.Formatter("%(message)s"))
        self.setLevel(from_)
        if below is not None:
            self.addFilter(lambda record: record.levelno < below)

    @property
    def stream(self):  # type: ignore[override]
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; always resolved instead
        pass


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _attach_console()


def _attach_console() -> None:
    """Show the ``bidsapp.progress`` lines as they are: INFO on stdout, problems on stderr.

    Progress lines are the product's own output: always shown. Done once, however often
    :func:`main` runs in one process.
    """
    progress = logging.getLogger("bidsapp.progress")
    progress.setLevel(logging.INFO)
    if not any(isinstance(h, _ConsoleHandler) for h in progress.handlers):
        progress.addHandler(_ConsoleHandler("stdout", below=logging.WARNING))
        progress.addHandler(_ConsoleHandler("stderr", from_=logging.WARNING))
        progress.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line interface.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        The exit code (0 success, 1 some run failed, 2 usage error, 130 stopped by
        SIGINT, 143 stopped by SIGTERM).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":
        demo_args = build_demo_parser().parse_args(argv[1:])
        _configure_logging(demo_args.verbose)
        from bidsapp.app.demo import run_demo

        return run_demo(demo_args.outdir)

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help/--version
        return int(exc.code or 0)
    _configure_logging(args.verbose)
    try:
        config = config_from_args(args)
    except ConfigError as err:
        parser.print_usage(sys.stderr)
        print(f"bidsapp: error: {err}", file=sys.stderr)
        return EXIT_USAGE

    from bidsapp.app.command import run_command

    return run_command(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
