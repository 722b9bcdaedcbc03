"""Select fMRIPrep confound regressors for a denoising strategy.

The behaviour follows ``nilearn.interfaces.fmriprep`` 0.12.1 (``load_confounds`` and
``load_confounds_strategy``) without depending on nilearn. Denoising presets (``simple``,
``scrubbing``, ``compcor``, ``ica_aroma``) are JSON files in ``bidsapp/data/presets``; a
user may pass the path of a JSON file in the same format. Part of the numerical core.

Modules: :mod:`.loading` (:func:`load_confounds`),
:mod:`.presets` (presets and :func:`load_confounds_strategy`), :mod:`.custom` (user censoring
thresholds over a preset, :func:`load_confounds_columns`), :mod:`.checks` (argument
checks), :mod:`.columns` (column selection per confound family), :mod:`.scrubbing`
(censoring defaults and motion outliers), :mod:`.files` (the fMRIPrep file-naming rule,
reading the TSV and its sidecar).
"""

from bidsapp.confounds.checks import COMPONENTS, ICA_AROMA_CHOICES, ImageInput
from bidsapp.confounds.columns import (
    COMPCOR_GROUPS,
    EXPANSION_SUFFIXES,
    MOTION_MEASURES,
    NON_STEADY_STATE_MARKERS,
    motion_measure_columns,
    non_steady_state_columns,
)
from bidsapp.confounds.custom import apply_censoring_overrides, load_confounds_columns
from bidsapp.confounds.files import (
    ConfoundsError,
    PathType,
    find_confounds_file,
    is_legacy_header,
)
from bidsapp.confounds.loading import ConfoundsOutput, SampleMaskOutput, load_confounds
from bidsapp.confounds.presets import (
    PRESET_PARAMETERS,
    UnknownPresetError,
    list_presets,
    load_confounds_strategy,
    load_preset,
)
from bidsapp.confounds.scrubbing import (
    CENSORING_DEFAULTS,
    DEFAULT_FD_THRESHOLD,
    DEFAULT_SCRUB,
    DEFAULT_STD_DVARS_THRESHOLD,
    censoring_thresholds,
    motion_outliers,
)

__all__ = [
    "CENSORING_DEFAULTS",
    "COMPCOR_GROUPS",
    "COMPONENTS",
    "DEFAULT_FD_THRESHOLD",
    "DEFAULT_SCRUB",
    "DEFAULT_STD_DVARS_THRESHOLD",
    "EXPANSION_SUFFIXES",
    "ICA_AROMA_CHOICES",
    "MOTION_MEASURES",
    "NON_STEADY_STATE_MARKERS",
    "PRESET_PARAMETERS",
    "ConfoundsError",
    "ConfoundsOutput",
    "ImageInput",
    "PathType",
    "SampleMaskOutput",
    "UnknownPresetError",
    "apply_censoring_overrides",
    "censoring_thresholds",
    "find_confounds_file",
    "is_legacy_header",
    "list_presets",
    "load_confounds",
    "load_confounds_columns",
    "load_confounds_strategy",
    "load_preset",
    "motion_measure_columns",
    "motion_outliers",
    "non_steady_state_columns",
]
