"""Denoising beyond the presets: user censoring thresholds, and columns chosen by pattern.

:func:`apply_censoring_overrides` says what thresholds given by a user (the CLI's
``--fd-threshold`` and ``--std-dvars-threshold``) do to a preset's parameters;
:func:`load_confounds_columns` selects confounds by regular expressions (``--confounds-columns``),
with the same loading and scrubbing rules as :func:`~bidsapp.confounds.load_confounds`.
Part of the numerical core: plain values in, regressors and kept volumes out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.confounds.columns import (
    MOTION_MEASURES,
    check_numeric,
    motion_measure_columns,
    non_steady_state_columns,
)
from bidsapp.confounds.files import (
    ConfoundsError,
    PathType,
    find_confounds_file,
    read_confounds_tsv,
)
from bidsapp.confounds.loading import finalize_confounds
from bidsapp.confounds.scrubbing import (
    DEFAULT_FD_THRESHOLD,
    DEFAULT_SCRUB,
    DEFAULT_STD_DVARS_THRESHOLD,
    scrub_regressors,
)


def apply_censoring_overrides(
    parameters: dict[str, Any],
    *,
    fd_threshold: float | None = None,
    std_dvars_threshold: float | None = None,
) -> dict[str, Any]:
    """Apply user censoring thresholds to a preset's ``load_confounds`` parameters.

    Like XCP-D's ``--fd-thresh``, a threshold given on the command line censors volumes
    whatever the preset: it adds ``scrub`` to a preset without it. A threshold of 0
    disables censoring on that measure; both at 0 remove scrubbing altogether.

    Parameters
    ----------
    parameters : dict
        A preset's ``parameters`` (see :func:`~bidsapp.confounds.load_preset`); not modified.
    fd_threshold : float, optional
        Framewise displacement threshold in mm; None keeps the preset's value.
    std_dvars_threshold : float, optional
        Standardized DVARS threshold; None keeps the preset's value.

    Returns
    -------
    dict
        New parameters for :func:`~bidsapp.confounds.load_confounds`.
    """
    updated = dict(parameters)
    if fd_threshold is None and std_dvars_threshold is None:
        return updated
    components = [c for c in updated.get("strategy", ()) if c != "scrub"]
    scrubbing = "scrub" in updated.get("strategy", ())
    fd = (
        fd_threshold
        if fd_threshold is not None
        else updated.get("fd_threshold", DEFAULT_FD_THRESHOLD)
    )
    dvars = (
        std_dvars_threshold
        if std_dvars_threshold is not None
        else updated.get("std_dvars_threshold", DEFAULT_STD_DVARS_THRESHOLD)
    )
    if not scrubbing:
        # A preset without scrubbing censors only on the measure the user named.
        fd = fd if fd_threshold is not None else 0
        dvars = dvars if std_dvars_threshold is not None else 0
    if fd == 0 and dvars == 0:
        updated["strategy"] = components
        return updated
    updated["strategy"] = [*components, "scrub"]
    updated["scrub"] = updated.get("scrub", DEFAULT_SCRUB)
    updated["fd_threshold"] = float(fd) if fd else float("inf")
    updated["std_dvars_threshold"] = float(dvars) if dvars else float("inf")
    return updated


def load_confounds_columns(
    img_file: PathType,
    patterns: Sequence[str],
    *,
    fd_threshold: float | None = None,
    std_dvars_threshold: float | None = None,
    scrub: int = DEFAULT_SCRUB,
    demean: bool = True,
) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Load an explicit list of confound columns, selected by regular expressions.

    The ``--confounds-columns`` option. Non-steady-state volumes are censored as in
    :func:`~bidsapp.confounds.load_confounds`; volumes above the
    given motion thresholds are censored with the same minimum-segment rule.

    Parameters
    ----------
    img_file : str or os.PathLike
        Preprocessed BOLD image; its confounds TSV is found beside it.
    patterns : sequence of str
        Regular expressions matched against whole column names (``re.fullmatch``), e.g.
        ``"trans_[xyz]"`` or ``"a_comp_cor_0[0-4]"``. Each must match at least one column.
    fd_threshold : float, optional
        Framewise displacement threshold in mm; None or 0 disables it.
    std_dvars_threshold : float, optional
        Standardized DVARS threshold; None or 0 disables it.
    scrub : int, default=5
        Kept segments shorter than this many volumes are censored too.
    demean : bool, default=True
        Subtract each regressor's mean over the kept volumes.

    Returns
    -------
    confounds : pandas.DataFrame
        The selected regressors, in the order the patterns match them.
    sample_mask : numpy.ndarray or None
        Indices of the kept volumes, or None when none is censored.

    Raises
    ------
    ConfoundsError
        When the confounds file is missing or malformed, or a pattern matches no column;
        the message names the file.
    """
    confounds_file = find_confounds_file(img_file)
    raw = read_confounds_tsv(confounds_file)
    non_steady = non_steady_state_columns(raw.columns)
    selected: list[str] = []
    for pattern in patterns:
        matched = [column for column in raw.columns if re.fullmatch(pattern, column)]
        if not matched:
            raise ConfoundsError(
                f"Confounds file {confounds_file} has no column matching {pattern!r}."
            )
        # Non-steady-state columns censor their volumes (as with presets), never regress.
        selected.extend(c for c in matched if c not in selected and c not in non_steady)
    check_numeric(raw, selected + non_steady, confounds_file)
    # finalize_confounds recognises outlier columns by their fMRIPrep >= 1.2 names.
    renamed = {c: c if "non_steady_state" in c else f"non_steady_state_{c}" for c in non_steady}
    frames = [raw[selected], raw[non_steady].rename(columns=renamed)]
    if fd_threshold or std_dvars_threshold:
        measures = motion_measure_columns(raw.columns)
        wanted = {"framewise_displacement": fd_threshold, "std_dvars": std_dvars_threshold}
        absent = [
            " or ".join(repr(n) for n in MOTION_MEASURES[measure])
            for measure, threshold in wanted.items()
            if threshold and measures[measure] is None
        ]
        if absent:
            raise ConfoundsError(
                f"Confounds file {confounds_file} has no column {' and no column '.join(absent)}"
                f", needed by the censoring threshold(s) given."
            )
        present = [c for c in measures.values() if c is not None]
        check_numeric(raw, present, confounds_file)
        params = {
            "scrub": scrub,
            "fd_threshold": fd_threshold or float("inf"),
            "std_dvars_threshold": std_dvars_threshold or float("inf"),
        }
        frames.append(scrub_regressors(raw, confounds_file, params, measures))
    confounds, sample_mask = finalize_confounds(pd.concat(frames, axis=1), demean, confounds_file)
    # finalize_confounds sorts columns like nilearn; an explicit list keeps the user's order.
    return confounds.loc[:, [c for c in selected if c in confounds.columns]], sample_mask
