"""Checks of the arguments of :func:`~bidsapp.confounds.load_confounds`.

The noise components a strategy may name, the choices of each parameter, and the image
inputs (a path, a GIfTI pair, or a list of those), as nilearn 0.12.1 checks them. Part of
the numerical core, confounds layer.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from os import PathLike
from typing import Any, TypeAlias

from bidsapp.confounds.columns import COMPCOR_GROUPS, EXPANSION_SUFFIXES

logger = logging.getLogger(__name__)


ImageInput: TypeAlias = (
    "str | PathLike[str] | Sequence[str | PathLike[str] | Sequence[str | PathLike[str]]]"
)


#: Noise components a strategy may name.
COMPONENTS = (
    "motion",
    "high_pass",
    "wm_csf",
    "global_signal",
    "compcor",
    "ica_aroma",
    "scrub",
    "non_steady_state",
)


ICA_AROMA_CHOICES = ("full", "basic")


def check_components(strategy: Any) -> None:
    """Raise ValueError unless ``strategy`` is a valid list of noise components."""
    if not isinstance(strategy, (tuple, list)):
        raise ValueError(
            f"strategy needs to be a tuple or list of strings; a {type(strategy)} was "
            f"provided instead."
        )
    for component in strategy:
        if component not in COMPONENTS:
            raise ValueError(
                f"{component} is not a supported type of confounds; choose among {COMPONENTS}."
            )
    # fMRIPrep computes CompCor after its own cosine high-pass filter, so the cosine
    # regressors must be removed as well.
    if "compcor" in strategy and "high_pass" not in strategy:
        raise ValueError(
            f"When using compcor, `high_pass` must be included in strategy. "
            f"Current strategy: '{strategy}'"
        )
    if "compcor" in strategy and "ica_aroma" in strategy:
        logger.warning(
            "Strategy %s combines CompCor with ICA-AROMA; fMRIPrep estimates CompCor on "
            "data not denoised by ICA-AROMA.",
            strategy,
        )


def check_parameters(components: Sequence[str], params: dict[str, Any]) -> None:
    """Raise ValueError if a parameter of a component in ``components`` is invalid."""
    for name in ("motion", "wm_csf", "global_signal"):
        if name in components:
            _check_choice(name, params[name], tuple(EXPANSION_SUFFIXES))
    if "compcor" in components:
        _check_choice("compcor", params["compcor"], tuple(COMPCOR_GROUPS))
        n_compcor = params["n_compcor"]
        if n_compcor != "all" and not (_is_int(n_compcor) and n_compcor > 0):
            raise ValueError(f"n_compcor must be 'all' or a positive integer, got {n_compcor!r}.")
    if "ica_aroma" in components and params["ica_aroma"] not in ICA_AROMA_CHOICES:
        raise ValueError(
            f"Please select an option when using ICA-AROMA strategy ({ICA_AROMA_CHOICES}). "
            f"Current input: {params['ica_aroma']}"
        )
    if "scrub" in components:
        if not (_is_int(params["scrub"]) and params["scrub"] >= 0):
            raise ValueError(
                f"scrub (minimum segment length, in volumes) must be an integer >= 0, "
                f"got {params['scrub']!r}."
            )
        for name in ("fd_threshold", "std_dvars_threshold"):
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number, got {value!r}.")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_image_list(img_files: ImageInput) -> tuple[list[Any], bool]:
    """Return the inputs as a list, and whether a single input was given."""
    if isinstance(img_files, (str, PathLike)):
        return [img_files], True
    if isinstance(img_files, (list, tuple)):
        if _is_gifti_pair(img_files):
            return [img_files], True
        return list(img_files), False
    raise TypeError(
        f"img_files must be a path, a pair of GIfTI paths or a list of those, "
        f"got {type(img_files)}."
    )


def _is_gifti_pair(item: Any) -> bool:
    return (
        isinstance(item, (list, tuple))
        and len(item) == 2
        and all(isinstance(p, (str, PathLike)) and str(p).endswith(".func.gii") for p in item)
    )
