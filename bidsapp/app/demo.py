"""``bidsapp demo OUTDIR``: build the synthetic inputs, then run both levels on them.

Part of the app layer, and thin: the data comes from :mod:`bidsapp.synthetic`, each level runs
as the command line runs it (:func:`bidsapp.app.command.run_command`).
"""

from __future__ import annotations

import os
from pathlib import Path

from bidsapp import synthetic
from bidsapp.app.command import run_command
from bidsapp.app.config import DEFAULT_ATLAS, DEFAULT_SPACE, make_config
from bidsapp.app.progress import progress


def run_demo(outdir: str | os.PathLike[str]) -> int:
    """Build the demo inputs, then run the participant and group levels on them.

    Writes ``OUTDIR/templateflow`` (a TemplateFlow home with the default atlas),
    ``OUTDIR/fmriprep`` (the default synthetic dataset), and runs
    ``bidsapp OUTDIR/fmriprep OUTDIR/derivatives {participant,group}`` with
    ``--work-dir OUTDIR/work`` and ``TEMPLATEFLOW_HOME`` pointing at the demo home
    (restored afterwards). No network is needed.

    Parameters
    ----------
    outdir : str or path-like
        Folder to write into (created if missing).

    Returns
    -------
    int
        Exit code of the first level that failed, else 0.
    """
    outdir = Path(outdir).absolute()
    atlas, _, desc = DEFAULT_ATLAS.partition(":")
    home = synthetic.make_templateflow_home(
        outdir / "templateflow", atlases=[(atlas, desc or None)], template=DEFAULT_SPACE
    )
    bids_dir = synthetic.make_fmriprep_dataset(
        outdir / "fmriprep", space=DEFAULT_SPACE, templateflow_home=home
    )
    output_dir, work_dir = outdir / "derivatives", outdir / "work"
    previous = os.environ.get("TEMPLATEFLOW_HOME")
    os.environ["TEMPLATEFLOW_HOME"] = str(home)
    try:
        for level in ("participant", "group"):
            code = run_command(make_config(bids_dir, output_dir, level, work_dir=work_dir))
            if code != 0:
                return code
    finally:
        if previous is None:
            os.environ.pop("TEMPLATEFLOW_HOME", None)
        else:
            os.environ["TEMPLATEFLOW_HOME"] = previous
    progress.info(f"bidsapp demo: inputs in {bids_dir} (TemplateFlow home {home})")
    progress.info(f"bidsapp demo: outputs in {output_dir}")
    reports = sorted(output_dir.glob("*.html"))
    if reports:
        progress.info("bidsapp demo: reports (open in a browser):")
        for report in reports:
            progress.info(f"  {report}")
    return 0
