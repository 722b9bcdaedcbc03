"""Denoising presets: JSON files of :func:`load_confounds` parameters.

The built-in presets live in ``bidsapp/data/presets``: nilearn's four (``simple``,
``scrubbing``, ``compcor``, ``ica_aroma``), their global-signal variants (``simple+gsr``,
``scrubbing+gsr``, ``compcor+gsr``), giga_connectome's (``scrubbing.2``, ``scrubbing.5``,
their ``+gsr`` variants, ``acompcor50``) and XCP-D's (``24P``, ``36P``, ``acompcor``,
``acompcor+gsr``); a user may pass the path of a JSON file in the same format.
:func:`load_confounds_strategy` loads confounds with one, as nilearn 0.12.1's function of
the same name. Part of the numerical core, confounds layer.
"""

from __future__ import annotations

import inspect
import json
from importlib import resources
from pathlib import Path
from typing import Any

from bidsapp.confounds.checks import ImageInput, check_components, check_parameters
from bidsapp.confounds.files import ConfoundsError, PathType
from bidsapp.confounds.loading import ConfoundsOutput, SampleMaskOutput, load_confounds
from bidsapp.errors import ParameterWarning, warn

#: Keyword parameters of :func:`load_confounds` a preset may set (besides ``strategy``).
PRESET_PARAMETERS = (
    "motion",
    "scrub",
    "fd_threshold",
    "std_dvars_threshold",
    "wm_csf",
    "global_signal",
    "compcor",
    "n_compcor",
    "ica_aroma",
    "demean",
)


_PRESET_KEYS = ("name", "description", "parameters", "overrides")


_PRESET_DIR = ("data", "presets")


class UnknownPresetError(ConfoundsError, KeyError):
    """A denoising preset is neither a built-in name nor an existing JSON file.

    It is also a :class:`KeyError`, the exception nilearn raises for an unknown preset.
    """

    def __str__(self) -> str:
        # KeyError would print the message quoted; read it as the plain sentence it is.
        return str(self.args[0]) if self.args else ""


def load_confounds_strategy(
    img_files: ImageInput, denoise_strategy: PathType = "simple", **kwargs: Any
) -> tuple[ConfoundsOutput, SampleMaskOutput]:
    """Load fMRIPrep confounds with a denoising preset.

    Parameters
    ----------
    img_files : str, os.PathLike or list
        Preprocessed image(s); see :func:`load_confounds`.
    denoise_strategy : str or os.PathLike, default="simple"
        A built-in preset name (see :func:`list_presets`: ``simple``, ``scrubbing``,
        ``compcor``, ``ica_aroma``, ``36P``, ...) or the path of a JSON preset file
        (format described in :func:`load_preset`).
    **kwargs
        Overrides of the preset's :func:`load_confounds` parameters.  Only the parameters
        the preset lists in ``overrides`` are applied; a value of None keeps the preset's
        value.  Giving a string ``global_signal`` to a preset that accepts it adds the
        ``global_signal`` component to the strategy.

    Returns
    -------
    confounds : pandas.DataFrame, None or list
        See :func:`load_confounds`.
    sample_mask : numpy.ndarray, None or list
        See :func:`load_confounds`.

    Raises
    ------
    UnknownPresetError
        If ``denoise_strategy`` is neither a preset name nor an existing file.
    ConfoundsError
        If the preset file is malformed, or for the reasons given in
        :func:`load_confounds`.

    Warns
    -----
    UserWarning
        If a keyword argument is not accepted by the preset (it is ignored).

    """
    preset = load_preset(denoise_strategy)
    parameters = dict(preset["parameters"])
    strategy = list(parameters.pop("strategy"))
    accepted = list(preset["overrides"])

    not_needed = [key for key in kwargs if key not in accepted]
    if not_needed:
        warn(
            f"The following parameters are not needed for the selected strategy "
            f"'{preset['name']}': {not_needed}; parameters accepted: {accepted}",
            ParameterWarning,
        )
    for key in accepted:
        value = kwargs.get(key)
        if value is not None:
            parameters[key] = value
    # The built-in presets leave the global signal out unless the user names a level.
    if (
        "global_signal" in accepted
        and isinstance(kwargs.get("global_signal"), str)
        and "global_signal" not in strategy
    ):
        strategy.append("global_signal")
    return load_confounds(img_files, strategy=tuple(strategy), **parameters)


def list_presets() -> list[str]:
    """List the names of the built-in denoising presets.

    Returns
    -------
    list of str
        Sorted preset names, e.g. ``["24P", "36P", "acompcor", ..., "simple+gsr"]``.

    """
    folder = resources.files("bidsapp").joinpath(*_PRESET_DIR)
    return sorted(
        entry.name[: -len(".json")] for entry in folder.iterdir() if entry.name.endswith(".json")
    )


def load_preset(name_or_path: PathType) -> dict[str, Any]:
    """Read a denoising preset, built-in or from a user's JSON file.

    A preset file holds a JSON object with the keys ``parameters`` (required: the
    :func:`load_confounds` keyword arguments, including the ``strategy`` list),
    ``overrides`` (the parameter names a user may change through
    :func:`load_confounds_strategy`; default none), and optional ``name`` and
    ``description`` strings.  Parameters a preset leaves out take
    :func:`load_confounds`'s defaults.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A built-in preset name (see :func:`list_presets`) or the path of a JSON file.

    Returns
    -------
    dict
        ``{"name": str, "description": str, "parameters": dict, "overrides": list}``;
        ``parameters["strategy"]`` is a list.  A fresh copy on each call.

    Raises
    ------
    UnknownPresetError
        If ``name_or_path`` is neither a built-in name nor an existing file.
    ConfoundsError
        If the file cannot be read, is not valid JSON, or holds unknown keys, unknown
        parameters or invalid parameter values.

    """
    builtin = list_presets()
    if isinstance(name_or_path, str) and name_or_path in builtin:
        resource = resources.files("bidsapp").joinpath(*_PRESET_DIR, f"{name_or_path}.json")
        text = resource.read_text(encoding="utf-8")
        return _parse_preset(text, origin=f"built-in preset '{name_or_path}'", name=name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise UnknownPresetError(
            f"Provided strategy '{name_or_path}' is not a preset strategy nor an existing "
            f"JSON preset file. Valid strategy: {builtin}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfoundsError(f"Cannot read preset file {path}: {err}") from err
    return _parse_preset(text, origin=f"preset file {path}", name=path.stem)


def _parse_preset(text: str, origin: str, name: str) -> dict[str, Any]:
    """Validate the text of a preset file and return it as a dict."""
    try:
        preset = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfoundsError(
            f"Malformed {origin}: {err.msg} (line {err.lineno}, column {err.colno})."
        ) from err
    if not isinstance(preset, dict):
        raise ConfoundsError(f"Malformed {origin}: expected a JSON object.")
    unknown = sorted(set(preset) - set(_PRESET_KEYS))
    if unknown:
        raise ConfoundsError(f"{origin} has unknown key(s) {unknown}; allowed: {_PRESET_KEYS}.")
    parameters = preset.get("parameters")
    if not isinstance(parameters, dict) or "strategy" not in parameters:
        raise ConfoundsError(
            f"{origin} needs a 'parameters' object with a 'strategy' list of noise components."
        )
    strategy = parameters["strategy"]
    if not isinstance(strategy, list) or not all(isinstance(c, str) for c in strategy):
        raise ConfoundsError(f"{origin}: 'strategy' must be a list of strings, got {strategy!r}.")
    unknown = sorted(set(parameters) - {"strategy", *PRESET_PARAMETERS})
    if unknown:
        raise ConfoundsError(
            f"{origin} sets unknown parameter(s) {unknown}; allowed: {PRESET_PARAMETERS}."
        )
    overrides = preset.get("overrides", [])
    if not isinstance(overrides, list) or not set(overrides) <= set(PRESET_PARAMETERS):
        raise ConfoundsError(
            f"{origin}: 'overrides' must be a list of parameter names among "
            f"{PRESET_PARAMETERS}, got {overrides!r}."
        )
    _check_preset_values(origin, parameters)
    return {
        "name": str(preset.get("name", name)),
        "description": str(preset.get("description", "")),
        "parameters": dict(parameters),
        "overrides": list(overrides),
    }


def _check_preset_values(origin: str, parameters: dict[str, Any]) -> None:
    """Check a preset's strategy and values as :func:`load_confounds` would."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(load_confounds).parameters.items()
        if name in PRESET_PARAMETERS
    }
    merged = defaults | {k: v for k, v in parameters.items() if v is not None}
    try:
        check_components(parameters["strategy"])
        check_parameters(parameters["strategy"], merged)
    except ValueError as err:
        raise ConfoundsError(f"Invalid {origin}: {err}") from err
