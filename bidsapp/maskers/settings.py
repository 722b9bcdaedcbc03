"""The maskers' parameters, checked once, as one extraction uses them.

nilearn 0.12.1 checks its maskers' parameters in ``fit``; :func:`check_settings` (labels)
and :func:`check_maps_settings` (maps) do the same checks (with clearer messages) on a
mapping of parameters and return a frozen :class:`LabelsSettings` or :class:`MapsSettings`,
which the estimators (:mod:`.labels`, :mod:`.maps`, :mod:`.multi`) and the one-pass
function (:mod:`.extraction`) hand to the same extraction functions (:mod:`.pipeline`).
Part of the numerical core, maskers layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Memory

from bidsapp import regions
from bidsapp.errors import ParameterDeprecationWarning, ParameterWarning, warn
from bidsapp.maskers.base import memory_from_parameter

__all__ = [
    "LabelsSettings",
    "MapsSettings",
    "check_maps_parameters",
    "check_maps_settings",
    "check_parameters",
    "check_settings",
]

_NUMBER = (int, float, np.integer, np.floating)
_BOOL = (bool, np.bool_)

# Parameters whose type nilearn checks in ``fit`` (nilearn._utils.param_validation).
_PARAM_TYPES: dict[str, tuple[tuple[type, ...], bool, str]] = {
    # name: (accepted types, None allowed, description)
    "detrend": (_BOOL, False, "bool"),
    "standardize_confounds": (_BOOL, False, "bool"),
    "keep_masked_labels": (_BOOL, False, "bool"),
    "keep_masked_maps": (_BOOL, False, "bool"),
    "allow_overlap": (_BOOL, False, "bool"),
    "high_pass": (_NUMBER, True, "a number (Hz) or None"),
    "low_pass": (_NUMBER, True, "a number (Hz) or None"),
    "t_r": (_NUMBER, True, "a number (seconds) or None"),
    "smoothing_fwhm": (_NUMBER, True, "a number (mm) or None"),
    "memory": ((Memory, str, Path), True, "a joblib.Memory, a cache directory path or None"),
    "memory_level": ((int, np.integer), False, "an int"),
    "verbose": ((int, np.integer), False, "an int"),
    "n_jobs": ((int, np.integer), False, "an int"),
}


@dataclass(frozen=True)
class LabelsSettings:
    """What one extraction needs from the masker parameters, checked.

    Attributes
    ----------
    background_label, strategy, keep_masked_labels, smoothing_fwhm, dtype, \
resampling_target, high_variance_confounds, reports, labels, verbose
        The masker parameters of the same names.
    clean_params : dict
        The :func:`bidsapp.signal.clean` arguments named by masker parameters
        (``detrend``, ``standardize``, ``standardize_confounds``, ``t_r``, ``low_pass``,
        ``high_pass``).
    clean_args : dict
        The ``clean_args`` parameter (a copy; empty for None): the masker's ``clean_args_``.
    forwarded_kwargs : dict
        The deprecated ``clean__*`` arguments, prefix removed: the masker's ``clean_kwargs_``.
    clean_kwargs : dict
        The extra :func:`bidsapp.signal.clean` arguments in use: as nilearn, the
        deprecated ``clean__*`` arguments when given, else ``clean_args``.
    memory : joblib.Memory
        The cache (without location when there is none).
    memory_level : int
        The memory level in use (1 when a cache is given with level 0).
    """

    background_label: Any
    strategy: str
    keep_masked_labels: bool
    smoothing_fwhm: Any
    dtype: Any
    resampling_target: str | None
    high_variance_confounds: bool
    reports: bool
    labels: Any
    verbose: int
    clean_params: dict
    clean_args: dict
    forwarded_kwargs: dict
    clean_kwargs: dict
    memory: Memory
    memory_level: int


def _check_types(params: Mapping[str, Any]) -> None:
    """Raise TypeError for a parameter of the wrong type (names absent are not checked)."""
    for name, (types, none_ok, description) in _PARAM_TYPES.items():
        if name not in params:
            continue
        value = params[name]
        if (value is None and none_ok) or (value is not None and isinstance(value, types)):
            continue
        raise TypeError(
            f"'{name}' should be {description}; got {value!r} ({type(value).__name__})."
        )


def check_parameters(params: Mapping[str, Any]) -> None:
    """Validate masker parameter types and values (nilearn's checks, clearer messages).

    Parameters
    ----------
    params : mapping
        Masker parameters by name; names absent from it are not checked.

    Raises
    ------
    TypeError, ValueError
        If a parameter has a wrong type or value.
    """
    _check_types(params)
    regions.check_reduction(params["strategy"])
    if params["resampling_target"] not in ("data", "labels", None):
        raise ValueError(
            "invalid value for 'resampling_target' parameter: "
            f"{params['resampling_target']!r}; use 'data', 'labels' or None."
        )
    labels = params["labels"]
    if labels and params["lut"] is not None:
        raise ValueError("Pass either labels or a lookup table (lut) to the masker, but not both.")
    if labels:
        if not isinstance(labels, list):
            raise TypeError(f"'labels' must be a list. Got: {type(labels).__name__}")
        if not all(isinstance(x, str) for x in labels):
            kinds = sorted({type(x).__name__ for x in labels})
            raise TypeError(f"All elements of 'labels' must be a string; got types {kinds}.")


def _forwarded_clean_kwargs(kwargs: Mapping[str, Any], clean_args: Any, owner: str) -> dict:
    """Return the deprecated ``clean__*`` keyword arguments, prefix removed."""
    if not kwargs:
        return {}
    warn(
        f"You passed some kwargs to {owner}: {sorted(kwargs)}. "
        "This behavior is deprecated (as in nilearn 0.12.1): use 'clean_args' "
        "instead. Only 'clean__'-prefixed arguments are passed to signal.clean.",
        ParameterDeprecationWarning,
    )
    if clean_args:
        raise ValueError(
            "Passing arguments via 'kwargs' (clean__...) is mutually exclusive with "
            "using 'clean_args'; put them all in 'clean_args'."
        )
    return {k[len("clean__") :]: v for k, v in kwargs.items() if k.startswith("clean__")}


def _effective_memory_level(memory_level: int, memory: Memory) -> int:
    if memory_level == 0 and memory.location is not None:
        warn(
            "memory_level is currently set to 0 but a Memory object has been "
            "provided: caching as with memory_level=1.",
            ParameterWarning,
        )
        return 1
    return memory_level


def _shared_settings(params: Mapping[str, Any], kwargs: Mapping[str, Any], owner: str) -> dict:
    """Return the settings every masker has: cleaning, cache, smoothing, dtype, resampling."""
    forwarded = _forwarded_clean_kwargs(kwargs, params["clean_args"], owner)
    clean_args = {} if params["clean_args"] is None else dict(params["clean_args"])
    memory = memory_from_parameter(params["memory"])
    return {
        "smoothing_fwhm": params["smoothing_fwhm"],
        "dtype": params["dtype"],
        "resampling_target": params["resampling_target"],
        "high_variance_confounds": params["high_variance_confounds"],
        "reports": params["reports"],
        "verbose": params["verbose"],
        "clean_params": {
            "detrend": params["detrend"],
            "standardize": params["standardize"],
            "standardize_confounds": params["standardize_confounds"],
            "t_r": params["t_r"],
            "low_pass": params["low_pass"],
            "high_pass": params["high_pass"],
        },
        "clean_args": clean_args,
        "forwarded_kwargs": forwarded,
        # As nilearn: deprecated clean__ kwargs, when given, replace clean_args.
        "clean_kwargs": forwarded if kwargs else clean_args,
        "memory": memory,
        "memory_level": _effective_memory_level(params["memory_level"], memory),
    }


def check_settings(
    params: Mapping[str, Any], kwargs: Mapping[str, Any], owner: str
) -> LabelsSettings:
    """Check masker parameters and return the settings an extraction uses.

    Parameters
    ----------
    params : mapping
        Every :class:`~bidsapp.maskers.NiftiLabelsMasker` parameter by name.
    kwargs : mapping
        The extra keyword arguments given to the masker (deprecated ``clean__*``).
    owner : str
        The estimator's class name, for messages.

    Returns
    -------
    LabelsSettings
        The checked settings.

    Raises
    ------
    TypeError, ValueError
        If a parameter has a wrong type or value.
    """
    check_parameters(params)
    return LabelsSettings(
        background_label=params["background_label"],
        strategy=params["strategy"],
        keep_masked_labels=params["keep_masked_labels"],
        labels=params["labels"],
        **_shared_settings(params, kwargs, owner),
    )


@dataclass(frozen=True)
class MapsSettings:
    """What one extraction needs from the maps masker's parameters, checked.

    Attributes
    ----------
    allow_overlap, keep_masked_maps, smoothing_fwhm, dtype, resampling_target, \
high_variance_confounds, reports, verbose
        The masker parameters of the same names.
    clean_params, clean_args, forwarded_kwargs, clean_kwargs, memory, memory_level
        As :class:`LabelsSettings`.
    """

    allow_overlap: bool
    keep_masked_maps: bool
    smoothing_fwhm: Any
    dtype: Any
    resampling_target: str | None
    high_variance_confounds: bool
    reports: bool
    verbose: int
    clean_params: dict
    clean_args: dict
    forwarded_kwargs: dict
    clean_kwargs: dict
    memory: Memory
    memory_level: int


def check_maps_parameters(params: Mapping[str, Any]) -> None:
    """Validate maps masker parameter types and values (nilearn's checks, clearer messages).

    Parameters
    ----------
    params : mapping
        Masker parameters by name.

    Raises
    ------
    TypeError, ValueError
        If a parameter has a wrong type or value.
    """
    _check_types(params)
    if params["resampling_target"] not in ("data", "mask", "maps", None):
        raise ValueError(
            "invalid value for 'resampling_target' parameter: "
            f"{params['resampling_target']!r}; use 'data', 'mask', 'maps' or None."
        )
    if params["mask_img"] is None and params["resampling_target"] == "mask":
        raise ValueError(
            "resampling_target has been set to 'mask' but no mask has been provided.\n"
            "Set resampling_target to something else or provide a mask."
        )


def check_maps_settings(
    params: Mapping[str, Any], kwargs: Mapping[str, Any], owner: str
) -> MapsSettings:
    """Check maps masker parameters and return the settings an extraction uses.

    Parameters
    ----------
    params : mapping
        Every :class:`~bidsapp.maskers.NiftiMapsMasker` parameter by name.
    kwargs : mapping
        The extra keyword arguments given to the masker (deprecated ``clean__*``).
    owner : str
        The estimator's class name, for messages.

    Returns
    -------
    MapsSettings
        The checked settings.

    Raises
    ------
    TypeError, ValueError
        If a parameter has a wrong type or value.
    """
    check_maps_parameters(params)
    return MapsSettings(
        allow_overlap=params["allow_overlap"],
        keep_masked_maps=params["keep_masked_maps"],
        **_shared_settings(params, kwargs, owner),
    )
