"""bidsapp: parcel timeseries from fMRIPrep derivatives.

The public Python API mirrors nilearn's labels maskers (:mod:`bidsapp.maskers`),
signal cleaning (:mod:`bidsapp.signal`) and fMRIPrep confound loading
(:mod:`bidsapp.confounds`), without depending on nilearn.

The BIDS-App itself is reachable from Python with :func:`run`, whose keyword options are
the command-line options (``bidsapp.run(bids_dir, out, "participant", atlas=[...],
denoise_strategy="scrubbing")``), or with :func:`bidsapp.app.workflow.run` and a
:class:`RunConfig`. Importing ``bidsapp`` imports nothing else: the names below are loaded
on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DenoiseConfig",
    "ExtractionConfig",
    "RunConfig",
    "UsageProblem",
    "__version__",
    "make_config",
    "run",
]

_LAZY = {
    "ConfigError": "bidsapp.app.config",
    "DenoiseConfig": "bidsapp.app.config",
    "ExtractionConfig": "bidsapp.app.config",
    "RunConfig": "bidsapp.app.config",
    "make_config": "bidsapp.app.config",
    "UsageProblem": "bidsapp.app.checks",
}

if TYPE_CHECKING:  # pragma: no cover
    from bidsapp.app.checks import UsageProblem
    from bidsapp.app.config import (
        ConfigError,
        DenoiseConfig,
        ExtractionConfig,
        RunConfig,
        make_config,
    )


def __getattr__(name: str) -> Any:
    """Load the public names of :data:`__all__` on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bidsapp' has no attribute {name!r}")


def run(
    bids_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    analysis_level: str = "participant",
    **options: Any,
) -> int:
    """Run the BIDS-App from Python, as ``bidsapp BIDS_DIR OUTPUT_DIR LEVEL [options]``.

    Parameters
    ----------
    bids_dir : str or os.PathLike
        fMRIPrep derivatives dataset (only read).
    output_dir : str or os.PathLike
        Output derivatives dataset; must not be ``bids_dir``.
    analysis_level : {"participant", "group"}
        What to run.
    **options
        Command-line options with underscores for dashes and the same defaults, e.g.
        ``participant_label=["01"]``, ``atlas=["Schaefer2018:100Parcels7Networks"]``,
        ``denoise_strategy="scrubbing"``, ``fd_threshold=0.3``, ``strategy="median"``,
        ``standardize="psc"``, ``low_pass=0.08``, ``n_jobs=2``, ``work_dir=...``,
        ``overwrite=True``, ``reports=False`` (see :func:`bidsapp.app.config.make_config`).

    Returns
    -------
    int
        The command's exit code: 0 when every run succeeded (or was already done); 1 when a
        run failed (the others were written) or no run matched the selection.

    Raises
    ------
    bidsapp.app.config.ConfigError
        For an option value that cannot be used (the CLI exits 2).
    bidsapp.app.checks.UsageProblem
        For directories or option files that cannot be used (the CLI exits 2).
    """
    from bidsapp.app.config import make_config
    from bidsapp.app.workflow import run as run_config

    return run_config(make_config(bids_dir, output_dir, analysis_level, **options))
