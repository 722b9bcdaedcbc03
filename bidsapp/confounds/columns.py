"""Column selection per confound family: motion, WM/CSF, global signal, CompCor, ICA-AROMA.

Which columns of an fMRIPrep confounds table each component asks for, with its expansion
level (derivatives, squares), CompCor components read from the JSON sidecar, and the
motion measures and non-steady-state columns (fMRIPrep >= 1.2 names and 1.0/1.1
camel-case ones). Part of the numerical core, confounds layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bidsapp.confounds.files import ConfoundsError, sidecar_path

#: Expansion levels of motion, wm_csf and global_signal, and the column suffixes they add.
EXPANSION_SUFFIXES: dict[str, tuple[str, ...]] = {
    "basic": (),
    "power2": ("power2",),
    "derivatives": ("derivative1",),
    "full": ("derivative1", "power2", "derivative1_power2"),
}


# Each CompCor variant is a list of (column prefix, anatomical mask) groups; n_compcor is
# applied to every group.  A mask of None means the prefix alone identifies the group.
COMPCOR_GROUPS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "anat_combined": (("a", "combined"),),
    "anat_separated": (("a", "WM"), ("a", "CSF"), ("w", None), ("c", None)),
    "temporal": (("t", None),),
    "temporal_anat_combined": (("t", None), ("a", "combined")),
    "temporal_anat_separated": (
        ("t", None),
        ("a", "WM"),
        ("a", "CSF"),
        ("w", None),
        ("c", None),
    ),
}


#: Names of the motion measures used for censoring, in fMRIPrep >= 1.2 and in fMRIPrep
#: 1.0/1.1 files (camel-case headers).
MOTION_MEASURES: dict[str, tuple[str, ...]] = {
    "framewise_displacement": ("framewise_displacement", "FramewiseDisplacement"),
    "std_dvars": ("std_dvars", "stdDVARS"),
}


#: Name parts of the non-steady-state outlier columns (fMRIPrep >= 1.2, then 1.0/1.1).
NON_STEADY_STATE_MARKERS = ("non_steady_state", "NonSteadyStateOutlier")


_MOTION_BASES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


OUTLIER_MARKERS = ("motion_outlier", "non_steady_state")


def motion_measure_columns(columns: Sequence[str]) -> dict[str, str | None]:
    """Find the framewise displacement and standardized DVARS columns of a confounds table.

    fMRIPrep >= 1.2 names them ``framewise_displacement`` and ``std_dvars``; fMRIPrep 1.0
    and 1.1 (camel-case headers) ``FramewiseDisplacement`` and ``stdDVARS``. Scrubbing
    thresholds (``fd_threshold``, ``std_dvars_threshold``) apply to these columns.

    Parameters
    ----------
    columns : sequence of str
        Header of the confounds TSV.

    Returns
    -------
    dict
        ``{"framewise_displacement": name or None, "std_dvars": name or None}``: the
        column holding each measure (the fMRIPrep >= 1.2 name when both are present), or
        None when the table has neither name.
    """
    present = set(columns)
    return {
        measure: next((name for name in names if name in present), None)
        for measure, names in MOTION_MEASURES.items()
    }


def non_steady_state_columns(columns: Sequence[str]) -> list[str]:
    """List the non-steady-state outlier columns of a confounds table.

    Parameters
    ----------
    columns : sequence of str
        Header of the confounds TSV.

    Returns
    -------
    list of str
        Columns named ``non_steady_state_outlier*`` (fMRIPrep >= 1.2) or
        ``NonSteadyStateOutlier*`` (fMRIPrep 1.0/1.1), in table order.
    """
    return [str(c) for c in columns if any(m in str(c) for m in NON_STEADY_STATE_MARKERS)]


EMPTY_DESCRIPTIONS = {
    "compcor": "CompCor component columns (none listed in the JSON sidecar for this choice)",
    "ica_aroma": "ICA-AROMA noise columns (names containing 'aroma')",
}


def required_nonempty(component: str, params: dict[str, Any]) -> bool:
    """Whether finding no column for ``component`` is an error rather than a no-op."""
    if component == "ica_aroma":
        return params["ica_aroma"] == "basic"
    return component == "compcor"


def component_columns(
    component: str,
    raw: pd.DataFrame,
    meta: dict[str, Any],
    params: dict[str, Any],
    confounds_file: Path,
) -> list[str]:
    """Names of the columns a noise component asks for (present in the file or not)."""
    if component == "motion":
        return _expand(_MOTION_BASES, params["motion"])
    if component == "wm_csf":
        return _expand(("csf", "white_matter"), params["wm_csf"])
    if component == "global_signal":
        return _expand(("global_signal",), params["global_signal"])
    if component == "high_pass":
        return [column for column in raw.columns if "cosine" in column]
    if component == "non_steady_state":
        return non_steady_state_columns(raw.columns)
    if component == "ica_aroma":
        if params["ica_aroma"] == "full":
            return []
        return [column for column in raw.columns if "aroma" in column]
    if component == "compcor":
        return _compcor_columns(meta, params["compcor"], params["n_compcor"], confounds_file)
    raise ValueError(f"{component} is not a supported type of confounds.")


def _expand(bases: Sequence[str], level: str) -> list[str]:
    """List the base columns, then their suffixed versions for an expansion level."""
    return [*bases] + [f"{base}_{suffix}" for base in bases for suffix in EXPANSION_SUFFIXES[level]]


def _compcor_columns(
    meta: dict[str, Any], compcor: str, n_compcor: int | str, confounds_file: Path
) -> list[str]:
    """CompCor column names chosen from the JSON sidecar, ``n_compcor`` per group.

    fMRIPrep numbers the components of each prefix (``a_comp_cor_00`` ...) in decreasing
    order of explained variance and lists the discarded ones under other names
    (``dropped_<k>``, ``"Retained": false``).  Components are taken from the sidecar's
    ``<prefix>_comp_cor_<k>`` entries in the order of ``k``; an entry marked
    ``"Retained": false`` is never selected, whatever its name (nilearn 0.12.1 ignores
    ``Retained``; fMRIPrep's own sidecars, including those shipped with nilearn, never mark
    a ``*_comp_cor_*`` entry so, so the selection is nilearn's on them).
    """
    columns: list[str] = []
    for prefix, mask in COMPCOR_GROUPS[compcor]:
        numbered = []
        for key in meta:
            found = re.fullmatch(rf"{prefix}_comp_cor_(\d+)", str(key))
            if found and _retained(meta, key, confounds_file):
                numbered.append((int(found.group(1)), key))
        names = [key for _, key in sorted(numbered)]
        if mask is not None:
            names = [name for name in names if _sidecar_mask(meta, name, confounds_file) == mask]
        if n_compcor != "all":
            names = names[:n_compcor]
        columns += names
    return columns


def _retained(meta: dict[str, Any], column: str, confounds_file: Path) -> bool:
    """Whether the sidecar keeps a CompCor component (``Retained`` absent or true)."""
    entry = meta.get(column)
    if not isinstance(entry, dict) or "Retained" not in entry:
        return True
    retained = entry["Retained"]
    if not isinstance(retained, bool):
        raise ConfoundsError(
            f"JSON sidecar {sidecar_path(confounds_file)} has a non-boolean 'Retained' "
            f"value {retained!r} for CompCor column '{column}' (expected true or false)."
        )
    return retained


def _sidecar_mask(meta: dict[str, Any], column: str, confounds_file: Path) -> Any:
    entry = meta.get(column)
    if not isinstance(entry, dict) or "Mask" not in entry:
        raise ConfoundsError(
            f"JSON sidecar {sidecar_path(confounds_file)} has no 'Mask' entry for "
            f"CompCor column '{column}'."
        )
    return entry["Mask"]


def missing_message(confounds_file: Path, missing: dict[str, list[str]]) -> str:
    """Say which columns each component lacks in a confounds file."""
    details = "; ".join(f"{component}: {columns}" for component, columns in missing.items())
    return (
        f"Confounds file {confounds_file} lacks column(s) needed by the strategy "
        f"(missing keywords {list(missing)}) -- {details}. You may want to try a different "
        f"denoising strategy."
    )


def check_numeric(raw: pd.DataFrame, columns: list[str], confounds_file: Path) -> None:
    """Raise ConfoundsError if a needed column holds text that is not a number."""
    bad = []
    for column in columns:
        series = raw[column]
        if pd.api.types.is_numeric_dtype(series):
            continue
        coerced = pd.to_numeric(series, errors="coerce")
        rows = np.flatnonzero(coerced.isna().to_numpy() & series.notna().to_numpy())
        example = f"{series.iloc[rows[0]]!r} on data row {rows[0] + 1}" if rows.size else ""
        bad.append(f"'{column}' ({example})" if example else f"'{column}'")
    if bad:
        raise ConfoundsError(
            f"Confounds file {confounds_file} has non-numeric values in column(s) {', '.join(bad)}."
        )
